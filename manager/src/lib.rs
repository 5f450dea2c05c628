//! Stream manager: keeps the map of origins and edges, runs origin groups (one active member, standbys by
//! priority, failover and failback), makes edges pull what the active origins ingest, puts edges into the load
//! balancer and drains them for maintenance, and keeps events and alarms.
//!
//! [`cluster`] decides (pure, unit-tested); [`driver`] reads the nodes and carries the decisions out; [`api`] is
//! the operator's and the nodes' HTTP interface.

pub mod api;
pub mod autoscale;
pub mod check;
pub mod cluster;
pub mod config;
pub mod console;
pub mod driver;
pub mod events;
pub mod history;
pub mod leader;
pub mod metrics;
pub mod store;

use std::future::Future;
use std::time::Instant;

use svc::auth::Bearer;
use tokio::net::TcpListener;

/// What the start needs besides the config, checked the same way by `smd --check` and by the start: the state file
/// parses and its directory can be written, the history file parses. Nothing is started.
pub fn preflight(config: &config::Config) -> anyhow::Result<(cluster::Persisted, history::History)> {
    driver::prepare_state_dir(config.state_file.as_deref())?;
    let persisted = driver::load_state(config.state_file.as_deref())?;
    let history = match &config.history_file {
        Some(p) => history::History::load(p, config.history_sample)?,
        None => history::History::new(config.history_sample),
    };
    Ok((persisted, history))
}

/// Re-reading the configuration on SIGHUP: the signal's reload requests and the function that loads and validates
/// the file again (as a start would).
pub struct Reload {
    pub reloads: svc::reload::Reloads,
    pub reread: Box<dyn FnMut() -> Result<config::Config, String> + Send>,
}

/// Runs the manager on `listener` until `shutdown` completes.
pub async fn run(listener: TcpListener, config: config::Config, shutdown: impl Future) -> anyhow::Result<()> {
    serve(listener, config, shutdown, None).await
}

/// [`run`], applying a reloaded configuration live at each of `reload`'s requests.
pub async fn serve(
    listener: TcpListener,
    config: config::Config,
    shutdown: impl Future,
    reload: Option<Reload>,
) -> anyhow::Result<()> {
    let (persisted, history) = preflight(&config)?;
    let bearer = Bearer::token(&config.token).map_err(anyhow::Error::msg)?;
    let store = match &config.store {
        config::Store::File => None,
        config::Store::Etcd(e) => Some(std::sync::Arc::new(store::Store::new(e.clone()))),
    };
    let shared = driver::Shared::with_store(cluster::Cluster::new(config, persisted, Instant::now()), history, store);
    let (stop, stopping) = svc::Shutdown::new();
    tracing::info!(addr = %listener.local_addr()?, "stream manager API listening");
    // With etcd: the session and the election beside the loop (which acts only while this smd leads).
    let election = shared.store.clone().map(|s| tokio::spawn(leader::run(shared.clone(), s, stopping.clone())));
    let http = tokio::spawn(svc::http::serve(listener, api::router(shared.clone(), bearer), stopping.clone(), "API"));
    let lp = tokio::spawn(driver::run(shared.clone(), stopping.clone()));
    if let Some(r) = reload {
        tokio::spawn(driver::watch_reloads(shared.clone(), r.reloads, r.reread, stopping.clone()));
    }
    let sampler = tokio::spawn(driver::sample(shared.clone(), stopping));
    shutdown.await;
    tracing::info!("shutting down");
    stop.trigger();
    let _ = tokio::join!(http, lp, sampler);
    if let Some(e) = election {
        let _ = e.await;
    }
    Ok(())
}
