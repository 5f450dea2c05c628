//! `smd`, the stream manager daemon: reads its TOML config, binds its API and runs until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "smd",
    version = svc::version::LONG,
    about = "Stream manager: origin groups with failover/failback, edge replication, edges in the load balancer"
)]
struct Cli {
    /// Log lines as plain text (colours only on a terminal, never with NO_COLOR) or one JSON object per line
    /// (also LOG_FORMAT).
    #[arg(long, value_name = "plain|json", value_parser = ["plain", "json"])]
    log_format: Option<String>,
    /// The TOML configuration (see README: nodes, groups, pools, [lb]).
    #[arg(long, short)]
    config: std::path::PathBuf,
    /// Check the configuration (and the state and history files) and exit: 0 and a one-line `ok: ...` summary, or
    /// 1 and the reason; binds nothing.
    #[arg(long)]
    check: bool,
}

fn main() -> anyhow::Result<()> {
    svc::docs::maybe_write(<Cli as clap::CommandFactory>::command);
    svc::logging::init("info");
    let cli = Cli::parse();
    let config = manager::config::Config::load(&cli.config)?;
    // The same checks as the start (one function): a corrupt state file or one that cannot be written is refused
    // here too, not only when smd starts.
    manager::preflight(&config)?;
    if cli.check {
        println!(
            "ok: {}: {} nodes, {} groups, {} pools{}",
            cli.config.display(),
            config.nodes.len(),
            config.groups.len(),
            config.pools.len(),
            if config.lb.is_some() { ", a load balancer" } else { "" }
        );
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        // First, before any socket: from here a SIGHUP re-reads the configuration instead of ending smd.
        let reloads = svc::reload::reloads().context("installing the SIGHUP handler")?;
        // Applied live as a diff (nodes, groups, pools, [lb], timers) once the whole file validates again.
        let path = cli.config.clone();
        let reread = move || {
            let c = manager::config::Config::load(&path).map_err(|e| format!("{e:#}"))?;
            manager::preflight(&c).map_err(|e| format!("{e:#}"))?;
            Ok(c)
        };
        let reload = manager::Reload { reloads, reread: Box::new(reread) };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding the API on {}", config.listen))?;
        let stop = svc::shutdown::signal();
        svc::notify::notify(svc::notify::State::Ready, Some(&format!("smd on {}", config.listen)));
        manager::serve(listener, config, stop, Some(reload)).await
    })
}
