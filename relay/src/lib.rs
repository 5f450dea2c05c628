//! RTMP origin/edge relay: configuration, the `run` entry point and module wiring.
//!
//! Shaped like mini-redis: binaries parse arguments and bind sockets, then call [`run`] with a shutdown
//! future, so tests can bind port 0 and stop the relay without signals.

mod api;
pub mod chunk;
mod edge;
#[cfg(feature = "test-support")]
pub mod fuzz;
pub mod hub;
#[cfg(feature = "test-support")]
pub mod loadgen;
pub mod metrics;
pub mod proto;
mod server;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use svc::{Shutdown, Stopping};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use chunk::ChunkLimits;

/// Errors a user can cause (bad configuration) or the relay can hit while starting.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("invalid origin URL {url:?}: {reason}; expected rtmp://HOST[:PORT]/APP")]
    BadOriginUrl { url: String, reason: &'static str },
    #[error("an edge needs at least one --origin rtmp://HOST:PORT/APP")]
    NoOrigin,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// An origin an edge pulls from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginUrl {
    pub host: String,
    pub port: u16,
    pub app: String,
}

impl OriginUrl {
    pub fn parse(url: &str) -> Result<Self, RelayError> {
        let bad = |reason| RelayError::BadOriginUrl { url: url.to_string(), reason };
        let rest = url.strip_prefix("rtmp://").ok_or_else(|| bad("scheme must be rtmp://"))?;
        let (hostport, app) = rest.split_once('/').ok_or_else(|| bad("missing /APP"))?;
        let app = app.trim_end_matches('/');
        if app.is_empty() || app.contains('/') {
            return Err(bad("APP must be one path segment"));
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad("bad port"))?),
            None => (hostport, 1935),
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        Ok(Self { host: host.to_string(), port, app: app.to_string() })
    }

    /// `rtmp://host:port/app`, the tcUrl we send when pulling.
    pub fn tc_url(&self) -> String {
        format!("rtmp://{}:{}/{}", self.host, self.port, self.app)
    }
}

impl std::fmt::Display for OriginUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.tc_url())
    }
}

/// Which side of the replication this process is.
#[derive(Debug, Clone)]
pub enum Role {
    /// Accepts publishers and players.
    Origin {
        /// When set, publishing needs `?token=` with this value on the stream key or tcUrl.
        publish_token: Option<String>,
    },
    /// Serves players by pulling from these origins (tried in turn on failure).
    Edge { origins: Vec<OriginUrl> },
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::Origin { .. } => "origin",
            Role::Edge { .. } => "edge",
        }
    }
}

/// Everything the relay needs; validated by the binary before any socket is bound.
#[derive(Debug, Clone)]
pub struct Config {
    pub role: Role,
    pub limits: ChunkLimits,
    /// RTMP connections open at once; more are closed at accept with a log line.
    pub max_connections: usize,
    /// Edge: stop pulling a stream this long after its last player left.
    pub idle_timeout: Duration,
    /// How long players stay attached to a stream whose publisher/upstream is gone.
    pub grace_period: Duration,
    /// A player whose socket accepts nothing for this long is disconnected.
    pub player_timeout: Duration,
    /// A publisher or upstream that sends nothing for this long is dropped.
    pub source_timeout: Duration,
    pub handshake_timeout: Duration,
    /// Messages a player may fall behind before it skips to the next keyframe.
    pub player_queue: usize,
    /// Bytes of the latest GOP kept for new players.
    pub gop_max_bytes: usize,
    /// Audio and data wait at most this long for the next video frame, so each player gets them in one
    /// write with it (fewer socket writes per player); zero sends every message as it comes.
    pub coalesce: Duration,
    /// Edge reconnect backoff, doubled per failure between these bounds.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Config {
    pub fn new(role: Role) -> Self {
        Self {
            role,
            limits: ChunkLimits::default(),
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(30),
            grace_period: Duration::from_secs(10),
            player_timeout: Duration::from_secs(10),
            source_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            player_queue: 512,
            gop_max_bytes: 16 << 20,
            coalesce: Duration::from_millis(50),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(5),
        }
    }

    pub fn validate(&self) -> Result<(), RelayError> {
        if let Role::Edge { origins } = &self.role {
            if origins.is_empty() {
                return Err(RelayError::NoOrigin);
            }
        }
        Ok(())
    }
}

/// Shared by every task of a running relay.
pub(crate) struct Ctx {
    pub config: Config,
    pub hub: hub::Hub,
    pub metrics: metrics::Metrics,
    /// Fires on shutdown; every task selects on it.
    pub stopping: Stopping,
}

impl Ctx {
    fn new(config: Config, stopping: Stopping) -> Self {
        Self {
            hub: hub::Hub::new(config.player_queue * 2, config.gop_max_bytes, config.coalesce),
            config,
            metrics: metrics::Metrics::default(),
            stopping,
        }
    }
}

/// Runs the relay on `listener` (RTMP) and optionally `api` (HTTP) until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    api: Option<TcpListener>,
    config: Config,
    shutdown: impl Future,
) -> Result<(), RelayError> {
    config.validate()?;
    let (stop, stopping) = Shutdown::new();
    let ctx = Arc::new(Ctx::new(config, stopping));
    tracing::info!(role = ctx.config.role.name(), rtmp = %listener.local_addr()?, "relay listening");
    let mut tasks = JoinSet::new();
    if let Some(api) = api {
        tracing::info!(addr = %api.local_addr()?, "HTTP API listening");
        tasks.spawn(svc::http::serve(api, api::router(ctx.clone()), ctx.stopping.clone(), "API"));
    }
    {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut stop = ctx.stopping.clone();
            loop {
                tokio::select! {
                    _ = tick.tick() => ctx.hub.tick(ctx.config.grace_period),
                    _ = stop.wait() => break,
                }
            }
        });
    }
    tasks.spawn(server::accept_loop(ctx.clone(), listener));
    shutdown.await;
    tracing::info!("shutting down");
    stop.trigger();
    for s in ctx.hub.all() {
        ctx.hub.remove(&s);
    }
    // Connection tasks see the flag and close; give them a moment to flush, then abort the rest.
    let _ = tokio::time::timeout(Duration::from_secs(2), async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_url_parsing() {
        assert_eq!(
            OriginUrl::parse("rtmp://10.0.0.1:1936/live").unwrap(),
            OriginUrl { host: "10.0.0.1".into(), port: 1936, app: "live".into() }
        );
        assert_eq!(OriginUrl::parse("rtmp://o.example/live/").unwrap().port, 1935);
        assert!(OriginUrl::parse("http://x/live").is_err());
        assert!(OriginUrl::parse("rtmp://x").is_err());
        assert!(OriginUrl::parse("rtmp://x:99999/live").is_err());
    }
}
