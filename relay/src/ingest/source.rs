//! Origin ingest by pull: a source (an encoder's or a camera's `rtmp://` URL) feeds a local stream as a publisher
//! would, reconnecting with backoff for as long as it is configured, players or not. A stream manager puts the
//! sources of an origin group on its active member (`PUT /sources/{app}/{key}`); `--source` does it by hand.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::{info, warn};

use super::Ingest;
use crate::ingest::edge::{pull_once, PullEnd, Upstream, UpstreamRole};
use crate::metrics::Metrics;

/// The source URL parser, its errors and the views of `GET /sources` are the contract crate's.
pub use api_types::relay::{SourceError, SourceState as State, SourceUrl, SourceView};

/// One configured source and its task's view of itself.
struct Entry {
    url: SourceUrl,
    removed: Arc<AtomicBool>,
    status: Arc<Status>,
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
    map: Mutex<BTreeMap<(String, String), Entry>>,
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

impl Sources {
    /// The source list of an origin (`origin`), or the always-refusing one of an edge.
    pub fn new(origin: bool) -> Self {
        Self { origin, ..Default::default() }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts ingesting `url` into app/key (replacing another URL there).
    pub(crate) fn put(&self, ctx: &Arc<Ingest>, app: &str, key: &str, url: &str) -> Result<Put, SourceError> {
        if !self.origin {
            return Err(SourceError::NotOrigin);
        }
        if !crate::valid_name(app) || !crate::valid_name(key) {
            return Err(SourceError::BadName);
        }
        let url = SourceUrl::parse(url)?;
        let mut map = self.map();
        let k = (app.to_string(), key.to_string());
        let how = match map.get(&k) {
            Some(e) if e.url == url => return Ok(Put::Unchanged),
            Some(e) => {
                e.removed.store(true, Ordering::Release);
                Put::Replaced
            }
            None => Put::Created,
        };
        let entry = Entry { url: url.clone(), removed: Arc::new(AtomicBool::new(false)), status: Default::default() };
        let (removed, status) = (entry.removed.clone(), entry.status.clone());
        map.insert(k, entry);
        drop(map);
        info!(app, key, url = %url.shown(), "source added");
        tokio::spawn(ingest(ctx.clone(), app.to_string(), key.to_string(), url, removed, status));
        Ok(how)
    }

    /// Stops a source; its stream then ends after the grace period, as when a publisher leaves.
    pub fn remove(&self, app: &str, key: &str) -> bool {
        match self.map().remove(&(app.to_string(), key.to_string())) {
            Some(e) => {
                e.removed.store(true, Ordering::Release);
                info!(app, key, "source removed");
                true
            }
            None => false,
        }
    }

    pub(crate) fn views(&self, ctx: &Ingest) -> Vec<SourceView> {
        self.map()
            .iter()
            .map(|((app, key), e)| {
                let s = e.status.inner.lock().unwrap_or_else(|e| e.into_inner());
                let bytes_in = ctx.hub.get(app, key).map_or(0, |st| st.stats.bytes_in.load(Ordering::Relaxed));
                SourceView {
                    app: app.clone(),
                    key: key.clone(),
                    url: e.url.shown(),
                    state: s.state,
                    error: s.error.clone(),
                    since_secs: s.since.elapsed().as_secs(),
                    connects: e.status.connects.load(Ordering::Relaxed),
                    failures: e.status.failures.load(Ordering::Relaxed),
                    bytes_in,
                }
            })
            .collect()
    }

    /// (connecting, ingesting, failed) counts for the metrics.
    pub(crate) fn counts(&self) -> [(State, usize); 3] {
        let map = self.map();
        let n =
            |st: State| map.values().filter(|e| e.status.inner.lock().map(|s| s.state == st).unwrap_or(false)).count();
        [
            (State::Connecting, n(State::Connecting)),
            (State::Ingesting, n(State::Ingesting)),
            (State::Failed, n(State::Failed)),
        ]
    }

    /// Ends every source (shutdown).
    pub fn clear(&self) {
        for e in self.map().values() {
            e.removed.store(true, Ordering::Release);
        }
    }
}

/// The task of one source: connect, play, feed the stream; on failure back off and again, until removed.
async fn ingest(
    ctx: Arc<Ingest>,
    app: String,
    key: String,
    url: SourceUrl,
    removed: Arc<AtomicBool>,
    status: Arc<Status>,
) {
    let mut backoff = ctx.config.backoff_min;
    let mut stop = ctx.stopping.clone();
    while !removed.load(Ordering::Acquire) {
        // A fresh stream if the last one ended (the source was away longer than the grace period).
        let stream = ctx.hub.get_or_create(&app, &key).0;
        let mut playing = false;
        status.set(State::Connecting, None);
        let before = stream.stats.bytes_in.load(Ordering::Relaxed);
        let kind = match &url {
            SourceUrl::Rtmp { .. } => "pull-rtmp",
            SourceUrl::Rtsp { .. } => "pull-rtsp",
        };
        let watch = async {
            // Ingesting once media flows (a camera relay may accept the play before it has any).
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                if stream.source().is_some_and(|s| s.kind == kind)
                    && stream.stats.bytes_in.load(Ordering::Relaxed) > before
                {
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
                        role: UpstreamRole::Source { removed: &removed },
                    };
                    pull_once(&ctx, &stream, &up, &mut playing, None).await.map_err(|e| e.to_string())
                }
                SourceUrl::Rtsp { url: rtsp, .. } => {
                    super::rtsp::pull_once(&ctx, &stream, rtsp, &url.shown(), &removed, &mut playing).await
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
                warn!(app = %app, key = %key, url = %url.shown(), error = %e, retry_ms = backoff.as_millis() as u64, "source failed, retrying");
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
