//! `relay` binary: parses arguments, binds sockets, installs logging and signal handling, then runs the library.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use relay::{ChunkLimits, Config, OriginUrl, Role};

#[derive(Parser)]
#[command(about = "RTMP origin/edge relay with GOP cache, on-demand pull and fan-out")]
struct Cli {
    #[command(subcommand)]
    role: RoleCmd,
}

#[derive(Subcommand)]
enum RoleCmd {
    /// Accept publishers and players.
    Origin {
        #[command(flatten)]
        common: Common,
        /// Require ?token=TOKEN on the publish stream key or tcUrl.
        #[arg(long)]
        publish_token: Option<String>,
    },
    /// Serve players by pulling streams from origins on demand.
    Edge {
        #[command(flatten)]
        common: Common,
        /// rtmp://HOST:PORT/APP; repeat for failover, tried in turn.
        #[arg(long = "origin", required = true)]
        origins: Vec<String>,
        /// Stop pulling a stream this many seconds after its last player left.
        #[arg(long, default_value_t = 30.0)]
        idle_timeout: f64,
        /// Reconnect backoff bounds in milliseconds.
        #[arg(long, default_value_t = 250)]
        backoff_min_ms: u64,
        #[arg(long, default_value_t = 5000)]
        backoff_max_ms: u64,
    },
}

#[derive(Args)]
struct Common {
    /// RTMP listen address, e.g. 0.0.0.0:1935.
    #[arg(long)]
    listen: SocketAddr,
    /// HTTP API listen address (GET /streams, GET /metrics, POST /streams/{app}/{key}/pull).
    #[arg(long)]
    api: Option<SocketAddr>,
    /// Seconds players stay attached while a stream has no publisher/upstream.
    #[arg(long, default_value_t = 10.0)]
    grace_period: f64,
    /// Seconds a player may accept no data before it is disconnected.
    #[arg(long, default_value_t = 10.0)]
    player_timeout: f64,
    /// Seconds a publisher/upstream may send nothing before it is dropped.
    #[arg(long, default_value_t = 10.0)]
    source_timeout: f64,
    /// Largest chunk size a peer may set.
    #[arg(long, default_value_t = 65_536)]
    max_chunk_size: u32,
    /// Largest RTMP message a peer may send, in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    max_message_size: u32,
    /// Most RTMP connections open at once.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Messages a player may fall behind before skipping to the next keyframe.
    #[arg(long, default_value_t = 512)]
    player_queue: usize,
    /// Milliseconds audio and metadata may wait for the next video frame, so players get them in one socket
    /// write (less CPU per player, at most this much added audio latency); 0 sends each message at once. The
    /// default holds audio about one video frame, like SRS's merged writes but far shorter.
    #[arg(long, default_value_t = 50)]
    coalesce_ms: u64,
}

fn secs(v: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("--{what} must be a non-negative number of seconds"))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Validate everything before binding anything.
    let (common, role, idle, backoff) = match cli.role {
        RoleCmd::Origin { common, publish_token } => (common, Role::Origin { publish_token }, None, None),
        RoleCmd::Edge { common, origins, idle_timeout, backoff_min_ms, backoff_max_ms } => {
            let origins = origins.iter().map(|u| OriginUrl::parse(u)).collect::<Result<Vec<_>, _>>()?;
            (common, Role::Edge { origins }, Some(idle_timeout), Some((backoff_min_ms, backoff_max_ms)))
        }
    };
    let mut config = Config::new(role);
    config.limits = ChunkLimits { max_chunk_size: common.max_chunk_size, max_message_size: common.max_message_size };
    config.max_connections = common.max_connections;
    config.grace_period = secs(common.grace_period, "grace-period")?;
    config.player_timeout = secs(common.player_timeout, "player-timeout")?;
    config.source_timeout = secs(common.source_timeout, "source-timeout")?;
    config.player_queue = common.player_queue.max(8);
    config.coalesce = Duration::from_millis(common.coalesce_ms);
    if let Some(idle) = idle {
        config.idle_timeout = secs(idle, "idle-timeout")?;
    }
    if let Some((lo, hi)) = backoff {
        config.backoff_min = Duration::from_millis(lo.max(1));
        config.backoff_max = Duration::from_millis(hi.max(lo));
    }
    config.validate()?;

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(common.listen)
            .await
            .with_context(|| format!("binding RTMP listener {}", common.listen))?;
        let api = match common.api {
            Some(a) => {
                Some(tokio::net::TcpListener::bind(a).await.with_context(|| format!("binding API listener {a}"))?)
            }
            None => None,
        };
        relay::run(listener, api, config, shutdown_signal()).await?;
        Ok(())
    })
}

/// SIGINT or SIGTERM: drain and exit.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
