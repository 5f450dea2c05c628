//! RTMP origin/edge relay: configuration, the `run` entry point and module wiring.
//!
//! Shaped like mini-redis: binaries parse arguments and bind sockets, then call [`run`] with a shutdown
//! future, so tests can bind port 0 and stop the relay without signals.

pub mod config;
pub mod control;
pub mod egress;
#[cfg(feature = "test-support")]
pub mod fuzz;
pub mod hub;
pub mod ingest;
#[cfg(feature = "test-support")]
pub mod loadgen;
pub mod metrics;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use svc::{Shutdown, Stopping};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use wire::chunk::ChunkLimits;
/// The wire modules under their old paths, for the binaries, tests and fuzzers that name them.
pub use wire::{chunk, proto};
pub use control::{callback, managed};
pub use ingest::{rtsp, source};
pub use config::{Config, OriginUrl, RelayError, Role};
pub use wire::names::{shown, valid_name, MAX_NAME_LEN, MAX_QUERY_LEN, MAX_TC_URL_LEN};

/// Shared by every task of a running relay.
pub(crate) struct Ctx {
    pub config: Config,
    pub hub: hub::Hub,
    pub metrics: metrics::Metrics,
    /// Fires on shutdown; every task selects on it.
    pub stopping: Stopping,
    /// Open RTMP connections per client IP (only tracked with --max-connections-per-ip).
    pub per_ip: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// Edge pull tasks running now (bounded by --max-pulls).
    pub pulls: std::sync::atomic::AtomicUsize,
    /// Edge: pulls without media yet, by the client IP that started them (bounded by --max-new-pulls-per-ip).
    pub new_pulls_per_ip: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// Edge: keys the origin did not have, until when a play of them is answered "not found" without a pull.
    pub not_found: std::sync::Mutex<std::collections::HashMap<(String, String), std::time::Instant>>,
    /// Live RTMPT sessions.
    pub rtmpt: egress::rtmpt::Sessions,
    /// Edge: the origins pulled from, in order of preference; `--origin` at start, replaced by `PUT /origins`.
    pub origins: std::sync::RwLock<Vec<OriginUrl>>,
    /// Bumped on every origin-list change: running pulls check it and move to the new first origin.
    pub origins_gen: std::sync::atomic::AtomicU64,
    /// Maintenance: no new players (a clear refusal), existing ones continue.
    pub maintenance: std::sync::atomic::AtomicBool,
    pub started: std::time::Instant,
    /// Origin: the streams it pulls in itself (cameras, encoders).
    pub sources: source::Sources,
}

impl Ctx {
    fn new(config: Config, stopping: Stopping) -> Self {
        Self {
            hub: hub::Hub::new(hub::Budget {
                queue: config.player_queue * 2,
                gop_max_bytes: config.gop_max_bytes,
                stream_bytes: config.stream_buffer_bytes,
                coalesce: config.coalesce,
                merge: config.merge,
            }),
            metrics: metrics::Metrics::default(),
            stopping,
            per_ip: Default::default(),
            pulls: Default::default(),
            new_pulls_per_ip: Default::default(),
            not_found: Default::default(),
            rtmpt: Default::default(),
            origins: std::sync::RwLock::new(match &config.role {
                Role::Edge { origins } => origins.clone(),
                Role::Origin { .. } => Vec::new(),
            }),
            origins_gen: Default::default(),
            maintenance: Default::default(),
            started: std::time::Instant::now(),
            sources: Default::default(),
            config,
        }
    }

    /// Edge: the origins serving `app`, in order of preference.
    pub fn origins_for(&self, app: &str) -> Vec<OriginUrl> {
        let list = self.origins.read().unwrap_or_else(|e| e.into_inner());
        list.iter().filter(|o| o.app == app).cloned().collect()
    }

    /// Edge: replaces the origin list; pulls whose upstream is not the new first origin of its app move to it.
    pub fn set_origins(&self, origins: Vec<OriginUrl>) {
        *self.origins.write().unwrap_or_else(|e| e.into_inner()) = origins;
        self.origins_gen.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The sockets a relay serves, bound by the caller (port 0 in tests).
pub struct Listeners {
    /// RTMP players and publishers.
    pub rtmp: TcpListener,
    /// The HTTP API (streams, pulls, metrics): an operator's interface.
    pub api: Option<TcpListener>,
    /// Media over HTTP for players and publishers (HTTP-FLV): public, like `rtmp`.
    pub http: Option<TcpListener>,
}

/// Runs the relay on `listener` (RTMP) and optionally `api` (HTTP) until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    api: Option<TcpListener>,
    config: Config,
    shutdown: impl Future,
) -> Result<(), RelayError> {
    run_on(Listeners { rtmp: listener, api, http: None }, config, shutdown).await
}

/// Runs the relay on `listeners` until `shutdown` completes.
pub async fn run_on(listeners: Listeners, config: Config, shutdown: impl Future) -> Result<(), RelayError> {
    let Listeners { rtmp: listener, api, http } = listeners;
    config.validate()?;
    if let Some(api) = &api {
        config.validate_api_addr(api.local_addr()?)?;
    }
    let (stop, stopping) = Shutdown::new();
    let ctx = Arc::new(Ctx::new(config, stopping));
    tracing::info!(role = ctx.config.role.name(), rtmp = %listener.local_addr()?, "relay listening");
    let mut tasks = JoinSet::new();
    if let Some(api) = api {
        tracing::info!(addr = %api.local_addr()?, "HTTP API listening");
        tasks.spawn(svc::http::serve(api, control::api::router(ctx.clone()), ctx.stopping.clone(), "API"));
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
    tasks.spawn(egress::rtmp::accept_loop(ctx.clone(), listener));
    if let Some(http) = http {
        tracing::info!(addr = %http.local_addr()?, "HTTP media listening (HTTP-FLV, RTMPT)");
        tasks.spawn(egress::flv::accept_loop(ctx.clone(), http));
    }
    if let Some(link) = ctx.config.manager.clone() {
        tasks.spawn(managed::run(ctx.clone(), link));
    }
    for (app, key, url) in &ctx.config.sources {
        if let Err(e) = ctx.sources.put(&ctx, app, key, url) {
            tracing::error!(app, key, error = %e, "--source refused");
        }
    }
    shutdown.await;
    tracing::info!("shutting down");
    stop.trigger();
    ctx.sources.clear();
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

    #[test]
    fn api_token_is_required_off_loopback() {
        let mut c = Config::new(Role::Origin { publish_token: None });
        assert!(c.validate_api_addr("127.0.0.1:8081".parse().unwrap()).is_ok());
        assert!(c.validate_api_addr("[::1]:8081".parse().unwrap()).is_ok());
        let err = c.validate_api_addr("0.0.0.0:8081".parse().unwrap()).unwrap_err().to_string();
        assert!(err.contains("--api-token"), "{err}");
        c.api_token = Some("t".into());
        assert!(c.validate_api_addr("0.0.0.0:8081".parse().unwrap()).is_ok());
        c.api_token = Some(String::new());
        assert!(c.validate().is_err());
    }
}
