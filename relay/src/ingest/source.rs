//! Origin ingest by pull: a key's sources (an encoder's or a camera's `rtmp://`/`rtsp://` URL, a slate the origin
//! plays itself) feed its stream as publishers would, each in its role (main, backup, ..., slate), reconnecting
//! with backoff for as long as they are configured, players or not. The stream forwards the best healthy one
//! (`hub::switch`). A stream manager puts a group's sources on its active member (`PUT /sources/{app}/{key}`);
//! `--source` does it by hand.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::Ingest;
use crate::hub::SwitchSettings;
use crate::ingest::edge::{pull_once, PullEnd, Upstream, UpstreamRole};
use crate::metrics::Metrics;

/// The source URL parser, its errors and the views of `GET /sources` are the contract crate's.
pub use api_types::relay::{
    SourceBody, SourceError, SourceInput, SourcePlan, SourceState as State, SourceUrl, SourceView,
};

/// One source of a key that the origin fetches itself (pulled, or a slate) and its task's view of itself.
struct Entry {
    role: String,
    input: SourceInput,
    removed: Arc<AtomicBool>,
    status: Arc<Status>,
}

/// A key's sources: the checked plan and the running tasks of its pulled ones.
struct KeyEntry {
    plan: SourcePlan,
    entries: Vec<Entry>,
}

#[derive(Default)]
struct Status {
    inner: Mutex<StatusInner>,
    connects: AtomicU64,
    failures: AtomicU64,
}

struct StatusInner {
    state: State,
    error: Option<String>,
    since: Instant,
}

impl Default for StatusInner {
    fn default() -> Self {
        StatusInner { state: State::Connecting, error: None, since: Instant::now() }
    }
}

impl Status {
    fn set(&self, state: State, error: Option<String>) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if s.state != state {
            s.since = Instant::now();
        }
        s.state = state;
        s.error = error;
    }
}

/// The sources of an origin.
#[derive(Default)]
pub struct Sources {
    map: Mutex<BTreeMap<(String, String), KeyEntry>>,
    /// Sources are an origin's: an edge's list refuses every put.
    origin: bool,
}

/// What a `put` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Put {
    Created,
    Replaced,
    Unchanged,
}

/// How a shown source reads in logs and `GET /sources`.
fn shown(input: &SourceInput) -> String {
    match input {
        SourceInput::Pushed => "pushed".into(),
        SourceInput::Pull(u) => u.shown(),
        SourceInput::Slate(api_types::relay::Slate::TestCard) => "slate:testcard".into(),
        SourceInput::Slate(api_types::relay::Slate::File(f)) => format!("slate:file:{f}"),
    }
}

impl Sources {
    /// The source list of an origin (`origin`), or the always-refusing one of an edge.
    pub fn new(origin: bool) -> Self {
        Self { origin, ..Default::default() }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), KeyEntry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts ingesting one `url` into app/key as its only (main) source (`--source`).
    pub(crate) fn put_url(&self, ctx: &Arc<Ingest>, app: &str, key: &str, url: &str) -> Result<Put, SourceError> {
        self.put(ctx, app, key, &SourceBody { url: url.to_string(), ..Default::default() })
    }

    /// Sets app/key's sources: the pulled ones and the slate start (those the key already had in the same role
    /// with the same input keep running), the others stop, and the stream ranks its sources in the new order.
    pub(crate) fn put(&self, ctx: &Arc<Ingest>, app: &str, key: &str, body: &SourceBody) -> Result<Put, SourceError> {
        if !self.origin {
            return Err(SourceError::NotOrigin);
        }
        if !crate::valid_name(app) || !crate::valid_name(key) {
            return Err(SourceError::BadName);
        }
        let plan = body.plan()?;
        let mut map = self.map();
        let k = (app.to_string(), key.to_string());
        let mut old = match map.remove(&k) {
            Some(e) if e.plan == plan => {
                map.insert(k, e);
                return Ok(Put::Unchanged);
            }
            Some(e) => Some(e.entries),
            None => None,
        };
        let how = if old.is_some() { Put::Replaced } else { Put::Created };
        let mut entries = Vec::new();
        for (role, input) in &plan.sources {
            if matches!(input, SourceInput::Pushed) {
                continue;
            }
            let kept = old.as_mut().and_then(|o| {
                let i = o.iter().position(|e| e.role == *role && e.input == *input)?;
                Some(o.remove(i))
            });
            if let Some(e) = kept {
                entries.push(e);
                continue;
            }
            let entry = Entry {
                role: role.clone(),
                input: input.clone(),
                removed: Arc::new(AtomicBool::new(false)),
                status: Default::default(),
            };
            info!(app, key, role = %role, source = %shown(input), "source added");
            let task = Task {
                ctx: ctx.clone(),
                app: app.to_string(),
                key: key.to_string(),
                role: role.clone(),
                removed: entry.removed.clone(),
                status: entry.status.clone(),
            };
            match input {
                SourceInput::Pull(url) => {
                    tokio::spawn(ingest(task, url.clone()));
                }
                SourceInput::Slate(slate) => {
                    tokio::spawn(super::slate::run(
                        task.ctx.clone(),
                        app.to_string(),
                        key.to_string(),
                        slate.clone(),
                        task.removed.clone(),
                    ));
                }
                SourceInput::Pushed => {}
            }
            entries.push(entry);
        }
        for e in old.into_iter().flatten() {
            e.removed.store(true, Ordering::Release);
            info!(app, key, role = %e.role, source = %shown(&e.input), "source removed");
        }
        let settings = SwitchSettings { order: plan.order(), timeout: plan.timeout, stable_for: plan.stable_for };
        ctx.hub.configure_sources(app, key, Some(settings));
        map.insert(k, KeyEntry { plan, entries });
        Ok(how)
    }

    /// Stops a key's sources; its stream then ends after the grace period, as when a publisher leaves.
    pub fn remove(&self, ctx: &Ingest, app: &str, key: &str) -> bool {
        match self.map().remove(&(app.to_string(), key.to_string())) {
            Some(k) => {
                for e in k.entries {
                    e.removed.store(true, Ordering::Release);
                }
                ctx.hub.configure_sources(app, key, None);
                info!(app, key, "sources removed");
                true
            }
            None => false,
        }
    }

    /// The roles a key lists, in order (empty when it has no configured sources).
    pub(crate) fn order(&self, app: &str, key: &str) -> Vec<String> {
        self.map().get(&(app.to_string(), key.to_string())).map(|k| k.plan.order()).unwrap_or_default()
    }

    /// A key's configured (source_timeout, source_stable_for).
    pub(crate) fn timings(&self, app: &str, key: &str) -> Option<(Duration, Duration)> {
        self.map().get(&(app.to_string(), key.to_string())).map(|k| (k.plan.timeout, k.plan.stable_for))
    }

    /// Every source of every key, in each key's order: pulled ones with their task's state, pushed ones with
    /// whether their encoder delivers; `live` marks the one the key forwards.
    pub(crate) fn views(&self, ctx: &Ingest) -> Vec<SourceView> {
        let map = self.map();
        let mut out = Vec::new();
        for ((app, key), k) in map.iter() {
            let stream = ctx.hub.get(app, key);
            let lanes = stream.as_ref().map(|s| s.lanes().lanes).unwrap_or_default();
            let bytes_in = stream.as_ref().map_or(0, |st| st.stats.bytes_in.load(Ordering::Relaxed));
            for (role, input) in &k.plan.sources {
                let lane = lanes.iter().find(|l| &l.role == role);
                let entry = k.entries.iter().find(|e| &e.role == role);
                // A slate's health is its lane's (its ffmpeg publishes like a pushed encoder).
                let status = entry
                    .filter(|e| matches!(e.input, SourceInput::Pull(_)))
                    .map(|e| e.status.inner.lock().unwrap_or_else(|e| e.into_inner()));
                let state = match (lane.is_some_and(|l| l.healthy), status.as_ref().map(|s| s.state)) {
                    // A pushed source delivers; a pulled one's task says so once its session has media.
                    (true, None) | (true, Some(State::Ingesting)) => State::Ingesting,
                    // Connected but silent past source_timeout: not delivering.
                    (false, Some(State::Ingesting)) | (_, None) => State::Connecting,
                    (_, Some(st)) => st,
                };
                out.push(SourceView {
                    app: app.clone(),
                    key: key.clone(),
                    role: role.clone(),
                    live: lane.is_some_and(|l| l.live),
                    source_timeout_ms: k.plan.timeout.as_millis() as u64,
                    source_stable_for_ms: k.plan.stable_for.as_millis() as u64,
                    url: shown(input),
                    state,
                    error: status.as_ref().and_then(|s| s.error.clone()),
                    since_secs: status.as_ref().map_or(0, |s| s.since.elapsed().as_secs()),
                    connects: entry.map_or(0, |e| e.status.connects.load(Ordering::Relaxed)),
                    failures: entry.map_or(0, |e| e.status.failures.load(Ordering::Relaxed)),
                    bytes_in,
                });
            }
        }
        out
    }

    /// (connecting, ingesting, failed) counts for the metrics.
    pub(crate) fn counts(&self) -> [(State, usize); 3] {
        let map = self.map();
        let n = |st: State| {
            map.values()
                .flat_map(|k| k.entries.iter())
                .filter(|e| e.status.inner.lock().map(|s| s.state == st).unwrap_or(false))
                .count()
        };
        [
            (State::Connecting, n(State::Connecting)),
            (State::Ingesting, n(State::Ingesting)),
            (State::Failed, n(State::Failed)),
        ]
    }

    /// Ends every source (shutdown).
    pub fn clear(&self) {
        for e in self.map().values().flat_map(|k| k.entries.iter()) {
            e.removed.store(true, Ordering::Release);
        }
    }
}

/// What one pull source's task works with.
struct Task {
    ctx: Arc<Ingest>,
    app: String,
    key: String,
    role: String,
    removed: Arc<AtomicBool>,
    status: Arc<Status>,
}

/// The task of one source: connect, play, feed the stream; on failure back off and again, until removed.
async fn ingest(task: Task, url: SourceUrl) {
    let Task { ctx, app, key, role, removed, status } = task;
    let mut backoff = ctx.config.backoff_min;
    let mut stop = ctx.stopping.clone();
    while !removed.load(Ordering::Acquire) {
        // A fresh stream if the last one ended (the source was away longer than the grace period).
        let stream = ctx.hub.get_or_create(&app, &key).0;
        let mut playing = false;
        status.set(State::Connecting, None);
        let watch = async {
            // Ingesting once media flows in this role (a camera relay may accept the play before it has any).
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                if stream.lanes().lanes.iter().any(|l| l.role == role && l.frames > 0) {
                    status.set(State::Ingesting, None);
                    status.connects.fetch_add(1, Ordering::Relaxed);
                    std::future::pending::<()>().await;
                }
            }
        };
        let session = async {
            match &url {
                SourceUrl::Rtmp { host, port, app: src_app, play, .. } => {
                    let up = Upstream {
                        host,
                        port: *port,
                        app: src_app,
                        tc_url: format!("rtmp://{host}:{port}/{src_app}"),
                        play,
                        kind: "pull-rtmp",
                        role: UpstreamRole::Source { removed: &removed, role: &role },
                    };
                    pull_once(&ctx, &stream, &up, &mut playing, None).await.map_err(|e| e.to_string())
                }
                SourceUrl::Rtsp { url: rtsp, .. } => {
                    super::rtsp::pull_once(&ctx, &stream, rtsp, &url.shown(), &removed, &role, &mut playing).await
                }
            }
        };
        let r = tokio::select! {
            r = session => r,
            _ = watch => unreachable!("the watch never completes"),
        };
        match r {
            Ok(PullEnd::Ended) if removed.load(Ordering::Acquire) => break,
            Ok(_) => {}
            Err(e) => {
                status.failures.fetch_add(1, Ordering::Relaxed);
                Metrics::inc(&ctx.metrics.source_failures);
                warn!(app = %app, key = %key, role = %role, url = %url.shown(), error = %e, retry_ms = backoff.as_millis() as u64, "source failed, retrying");
                status.set(State::Failed, Some(e.to_string()));
            }
        }
        if playing {
            backoff = ctx.config.backoff_min;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait() => break,
        }
        backoff = (backoff * 2).min(ctx.config.backoff_max);
    }
}
