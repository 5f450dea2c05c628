//! lb-xdp-pass: holds a pass-everything XDP program on an interface until SIGINT/SIGTERM. Native-mode XDP_TX on a
//! veth only delivers when the peer veth runs an XDP program too; labs and tests put this one there.
use anyhow::{Context, Result};
use clap::Parser;
use lb_userspace::dataplane::{attach_pass, AttachMode};

#[derive(Parser, Debug)]
#[command(version, about = "Attach a pass-through XDP program (for the peer of a veth used in native mode)")]
struct Args {
    #[arg(long)]
    iface: String,
    #[arg(long, default_value = "native")]
    xdp_mode: AttachMode,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new("warn")).with_ansi(false).init();
    let args = Args::parse();
    let (_ebpf, mode) =
        attach_pass(&args.iface, args.xdp_mode).with_context(|| format!("attaching to {}", args.iface))?;
    println!("xdp_pass attached to {} in {mode} mode", args.iface);
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    Ok(())
}
