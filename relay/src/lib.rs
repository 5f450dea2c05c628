//! RTMP origin/edge relay: configuration, the `run` entry point and module wiring.
//!
//! Shaped like mini-redis: binaries parse arguments and bind sockets, then call [`run`] with a shutdown
//! future, so tests can bind port 0 and stop the relay without signals.

pub mod config;
pub mod control;
pub mod egress;
#[cfg(feature = "test-support")]
pub mod fuzz;
#[cfg(feature = "test-support")]
pub mod hlsload;
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

pub use config::{Config, OriginUrl, RelayError, Role};
pub use control::{callback, managed};
pub use ingest::{rtsp, source};
pub use wire::chunk::ChunkLimits;
pub use wire::names::{shown, valid_name, MAX_NAME_LEN, MAX_QUERY_LEN, MAX_TC_URL_LEN};
/// The wire modules under their old paths, for the binaries, tests and fuzzers that name them.
pub use wire::{chunk, proto};

/// The parts of a running relay, one per layer, each holding only what its layer needs. The role decides here,
/// once, which parts exist: an edge gets its pulls as the players' opener and refuses publishes; an origin's
/// players open the hub's own streams and its publishers take publishes.
pub(crate) struct Parts {
    pub hub: Arc<hub::Hub>,
    pub ingest: Arc<ingest::Ingest>,
    pub egress: Arc<egress::Egress>,
    pub control: Arc<control::Control>,
}

impl Parts {
    pub(crate) fn build(config: Config, stopping: Stopping) -> Self {
        // The reloadable settings start as the configured ones.
        config.live.set(config::Reloadable::of(&config));
        let config = Arc::new(config);
        let metrics = Arc::new(metrics::Metrics::default());
        let hub = Arc::new(hub::Hub::new(hub::Budget {
            queue: config.player_queue * 2,
            gop_max_bytes: config.gop_max_bytes,
            stream_bytes: config.stream_buffer_bytes,
            coalesce: config.coalesce,
            merge: config.merge,
        }));
        let hooks: Arc<dyn hub::Hooks> =
            Arc::new(control::callback::CallbackHooks { live: config.live.clone(), metrics: metrics.clone() });
        let ingest = Arc::new(ingest::Ingest {
            config: config.clone(),
            hub: hub.clone(),
            metrics: metrics.clone(),
            stopping: stopping.clone(),
            rtmp_addr: Default::default(),
        });
        let (edge, opener, publish): (_, Arc<dyn hub::Opener>, Arc<dyn hub::PublishDoor>) = match &config.role {
            Role::Edge { origins } => {
                let edge = Arc::new(ingest::edge::Edge::new(ingest.clone(), origins.clone()));
                (Some(edge.clone()), Arc::new(edge), Arc::new(ingest::publish::EdgeRefusesPublish))
            }
            Role::Origin { .. } => {
                let live = config.live.clone();
                let publishers = ingest::publish::Publishers { hub: hub.clone(), hooks: hooks.clone(), live };
                (None, hub.clone(), Arc::new(publishers))
            }
        };
        let sources = Arc::new(ingest::source::Sources::new(edge.is_none()));
        let egress =
            Arc::new(egress::Egress::new(config.clone(), metrics.clone(), stopping.clone(), opener, publish, hooks));
        // Every stream is packaged as HLS from its first frame (egress's packagers tap the hub).
        hub.set_taps(egress.hls.clone());
        let control = Arc::new(control::Control {
            config,
            hub: hub.clone(),
            metrics,
            stopping,
            ingest: ingest.clone(),
            maintenance: egress.maintenance.clone(),
            egress: egress.clone(),
            edge,
            sources,
            fence: Arc::new(svc::fence::Fence::new()),
            started: std::time::Instant::now(),
        });
        Self { hub, ingest, egress, control }
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
    // The media listeners close first when the relay drains (SIGTERM with --drain-timeout), then everything.
    let (close_doors, accepting) = Shutdown::new();
    let Parts { hub, ingest, egress, control } = Parts::build(config, stopping.clone());
    let config = control.config.clone();
    tracing::info!(role = config.role.name(), rtmp = %listener.local_addr()?, "relay listening");
    // A slate publishes to this listener from this host: a wildcard address is reached on loopback.
    let mut local = listener.local_addr()?;
    if local.ip().is_unspecified() {
        local.set_ip(if local.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let _ = ingest.rtmp_addr.set(local);
    let mut tasks = JoinSet::new();
    if let Some(api) = api {
        tracing::info!(addr = %api.local_addr()?, "HTTP API listening");
        tasks.spawn(svc::http::serve(api, control::api::router(control.clone()), stopping.clone(), "API"));
    }
    {
        let (hub, egress, grace, mut stop) = (hub.clone(), egress.clone(), config.grace_period, stopping.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        hub.tick(grace);
                        egress.hls.tick(&egress);
                    }
                    _ = stop.wait() => break,
                }
            }
        });
    }
    tasks.spawn(egress::rtmp::accept_loop(egress.clone(), listener, accepting.clone()));
    if let Some(http) = http {
        tracing::info!(addr = %http.local_addr()?, "HTTP media listening (HLS, HTTP-FLV, RTMPT)");
        tasks.spawn(egress::http::accept_loop(egress.clone(), http, accepting.clone()));
    }
    if let Some(link) = config.manager.clone() {
        tasks.spawn(control::managed::run(control.clone(), link));
    }
    for (app, key, url) in &config.sources {
        if let Err(e) = control.sources.put_url(&ingest, app, key, url) {
            tracing::error!(app, key, error = %e, "--source refused");
        }
    }
    shutdown.await;
    drain(&control, &config, &close_doors).await;
    tracing::info!("shutting down");
    close_doors.trigger();
    stop.trigger();
    control.sources.clear();
    for s in hub.all() {
        hub.remove(&s);
    }
    // Connection tasks see the flag and close; give them a moment to flush, then abort the rest.
    let _ = tokio::time::timeout(Duration::from_secs(2), async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    Ok(())
}

/// A stop with a drain (`--drain-timeout` above 0): the media listeners close (new connections are refused), new
/// plays on open connections are refused (maintenance), the manager is told the node is leaving (with
/// `--manager`), and the players already connected are served until they are gone or the timeout passes. A
/// second SIGTERM (or SIGINT) ends the drain at once.
async fn drain(control: &Arc<control::Control>, config: &Config, close_doors: &Shutdown) {
    let timeout = config.drain_timeout;
    if timeout.is_zero() {
        return;
    }
    close_doors.trigger();
    control.maintenance.store(true, std::sync::atomic::Ordering::Relaxed);
    let players = || control::api::players(control);
    tracing::info!(
        players = players(),
        drain_timeout = ?timeout,
        "draining: listeners closed, serving the players connected until they leave or the drain timeout"
    );
    let deadline = tokio::time::Instant::now() + timeout;
    let mut again = (
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok(),
    );
    let signalled = async {
        match &mut again {
            (Some(t), Some(i)) => tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} },
            _ => std::future::pending().await,
        }
    };
    if let Some(link) = config.manager.clone() {
        let control = control.clone();
        tokio::spawn(async move { control::managed::leaving(&control, &link).await });
    }
    let leaving = async {
        loop {
            let n = players();
            if n == 0 {
                tracing::info!("drained: no player left");
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(players = n, "drain timeout passed with players still connected: stopping");
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = leaving => {}
        _ = tokio::time::sleep_until(deadline + Duration::from_millis(500)) => {
            tracing::warn!(players = players(), "drain timeout passed: stopping");
        }
        _ = signalled => tracing::warn!(players = players(), "signalled again while draining: stopping now"),
    }
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
