//! lbd: attaches the XDP load balancer to an interface and serves the control API until SIGINT/SIGTERM.
use anyhow::{Context, Result};
use clap::Parser;
use lb_userspace::api::DEFAULT_SOCKET;
use lb_userspace::daemon::{Daemon, Options};
use lb_userspace::dataplane::{AttachMode, Dataplane, Limits};
use lb_userspace::model::LbState;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(version, about = "XDP direct-routing (LVS-DR) load balancer daemon")]
struct Args {
    /// Interface that receives the VIPs' traffic and sends it on to the reals (one L2 segment with them).
    #[arg(long)]
    iface: String,
    /// TOML file with the services and reals to start with (ignored when --state exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Control socket (mode 0600).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// File that every runtime change is written to and that a restarted lbd restores from.
    #[arg(long)]
    state: Option<PathBuf>,
    /// XDP attach mode: native (driver; falls back to skb with a warning when the driver cannot) or skb (generic).
    #[arg(long, default_value = "native")]
    xdp_mode: AttachMode,
    /// Services the dataplane can hold (each costs 256 KiB of Maglev table).
    #[arg(long, default_value_t = lb_common::DEFAULT_MAX_SERVICES)]
    max_services: u32,
    /// Connection-table entries (LRU; about 100 bytes each).
    #[arg(long, default_value_t = lb_common::DEFAULT_CONN_TABLE_SIZE)]
    conn_table_size: u32,
    /// Add each service's VIP to --iface as a /32, so this host answers ARP for it (the IPVS way). A VIP that is
    /// already there is fine.
    #[arg(long)]
    manage_vips: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,netlink_packet_route=error".into()),
        )
        .init();
    let args = Args::parse();
    if args.max_services == 0 || args.conn_table_size == 0 {
        anyhow::bail!("--max-services and --conn-table-size must be at least 1");
    }
    // Everything the operator gave is parsed and validated before the dataplane is touched.
    let initial = match (&args.state, &args.config) {
        (Some(state), _) if state.exists() => {
            tracing::info!(state = %state.display(), "restoring from the state file");
            LbState::load(state).context("restoring the state file")?
        }
        (_, Some(config)) => LbState::load(config).context("reading the config")?,
        _ => LbState::default(),
    };
    let dp = Dataplane::load(Limits { max_services: args.max_services, conn_table_size: args.conn_table_size })
        .context("loading the XDP program (are you root?)")?;
    let daemon = Daemon::start(
        Options { iface: args.iface.clone(), mode: args.xdp_mode, state_path: args.state.clone(), manage_vips: args.manage_vips },
        dp,
        initial,
    )
    .await
    .with_context(|| format!("starting on {}", args.iface))?;
    let mode = daemon.mode();
    tracing::info!(socket = %args.socket.display(), %mode, "lbd ready");
    daemon.run(&args.socket, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
