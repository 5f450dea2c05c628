//! Fencing of stream manager commands at the nodes it drives (relays, lbd): a command carrying a manager term
//! ([`TERM_HEADER`]) older than the highest term this node has accepted is refused with 409, so a deposed leader's
//! command that was in flight or delayed cannot land after its successor has acted here.
//!
//! The term is the etcd revision at which the sending smd became leader (a newer leader's is always larger). The
//! mark lives in memory only: a restarted node accepts any term again. That is enough, because a leader that lost
//! its lease stops acting by itself within `lease_ttl`; the fence covers what it had already sent. Commands without
//! the header (an operator's curl or lbctl, a single smd with a file store) pass unchanged.
//!
//! Accepting a command and running it happen under one lock: commands of the current term run side by side (a
//! read lock), and the first command of a newer term waits for those of older terms still running before it raises
//! the mark (the write lock). So no command of an older term is applied after one of a newer term, not only "no
//! older command is accepted after a newer one".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

pub use api_types::manager::TERM_HEADER;

/// How long the first command of a newer term waits for commands of older terms still running here; past it the
/// newer leader is told to retry (503), which it does anyway for any command that fails.
pub const RAISE_WAIT: Duration = Duration::from_secs(10);

/// The highest manager term accepted here and what the fence has let through or refused.
#[derive(Debug)]
pub struct Fence {
    /// The highest term accepted (0: none since this process started). Changed only under the write lock.
    mark: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    /// Held (shared) by every fenced command while it runs, and exclusively while the mark is raised.
    running: Arc<RwLock<()>>,
    /// [`RAISE_WAIT`] but in tests.
    raise_wait: Duration,
}

impl Default for Fence {
    fn default() -> Self {
        Fence {
            mark: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            running: Arc::default(),
            raise_wait: RAISE_WAIT,
        }
    }
}

/// A fenced command's permission to run: keep it until the command is applied (see the module's doc).
#[must_use = "the command must run while its admission is held"]
#[derive(Debug)]
pub struct Admitted(Option<OwnedRwLockReadGuard<()>>);

impl Admitted {
    /// Whether the command carried a term (false: no header, not fenced).
    pub fn fenced(&self) -> bool {
        self.0.is_some()
    }
}

/// Why a command was not admitted; [`Refusal::response`] is the JSON error to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{TERM_HEADER}: {0}")]
    Malformed(String),
    #[error("stale manager term {term}: term {mark} has acted here since (a newer smd leads); command refused")]
    Stale { term: u64, mark: u64 },
    #[error("manager term {term}: commands of an older term are still running here after {waited:?}; retry")]
    Busy { term: u64, waited: Duration },
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
            Refusal::Stale { .. } => StatusCode::CONFLICT,
            Refusal::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The answer in the shape of every refusal of our APIs (`{"error": "..."}`).
    pub fn response(&self) -> Response {
        crate::http::error(self.status(), self.to_string())
    }
}

/// The term a request carries: None without the header; a value that is not one decimal u64 above 0 is refused.
pub fn term_of(headers: &HeaderMap) -> Result<Option<u64>, Refusal> {
    let mut values = headers.get_all(TERM_HEADER).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(Refusal::Malformed("sent more than once; send one term".into()));
    }
    let text = value.to_str().unwrap_or("");
    match text.trim().parse::<u64>() {
        Ok(0) => Err(Refusal::Malformed("term 0 is not a term (terms are etcd revisions, from 1)".into())),
        Ok(t) if text.trim().bytes().all(|b| b.is_ascii_digit()) => Ok(Some(t)),
        _ => Err(Refusal::Malformed(format!("expected a decimal term (1 to {}), got {value:?}", u64::MAX))),
    }
}

impl Fence {
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest term accepted (0: none yet).
    pub fn term(&self) -> u64 {
        self.mark.load(Ordering::SeqCst)
    }

    /// Commands accepted with a term.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Commands refused as stale.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Admits a command of `term`, or refuses it as stale. The permission must be held while the command runs.
    pub async fn admit_term(&self, term: u64) -> Result<Admitted, Refusal> {
        let shared = self.running.clone().read_owned().await;
        // Under the read lock the mark cannot move.
        let mark = self.mark.load(Ordering::SeqCst);
        if term < mark {
            return Err(self.stale(term, mark));
        }
        if term == mark {
            self.accepted.fetch_add(1, Ordering::Relaxed);
            return Ok(Admitted(Some(shared)));
        }
        drop(shared);
        let Ok(exclusive) = tokio::time::timeout(self.raise_wait, self.running.clone().write_owned()).await else {
            tracing::warn!(term, mark = self.term(), "a newer manager term waited too long for older commands");
            return Err(Refusal::Busy { term, waited: self.raise_wait });
        };
        // Another newer term may have been raised while this one waited: fetch_max settles it in one step.
        let prev = self.mark.fetch_max(term, Ordering::SeqCst);
        if term < prev {
            return Err(self.stale(term, prev));
        }
        if term > prev {
            tracing::info!(term, previous = prev, "manager term {term} now commands this node");
        }
        self.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(Admitted(Some(exclusive.downgrade())))
    }

    fn stale(&self, term: u64, mark: u64) -> Refusal {
        self.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(term, mark, "command of stale manager term {term} refused: term {mark} has acted here since");
        Refusal::Stale { term, mark }
    }

    /// Admits the command of a request by its headers: without [`TERM_HEADER`] it passes unfenced.
    pub async fn admit(&self, headers: &HeaderMap) -> Result<Admitted, Refusal> {
        match term_of(headers)? {
            None => Ok(Admitted(None)),
            Some(term) => self.admit_term(term).await,
        }
    }
}

/// The axum middleware of a fenced API: state-changing methods (anything but GET, HEAD and OPTIONS) are admitted
/// by the fence and run while admitted; reads pass unchanged. Layer it inside the API's authentication, so a
/// request without the token never moves the mark:
/// `.layer(from_fn_with_state(fence, svc::fence::middleware)).layer(auth)`.
pub async fn middleware(State(fence): State<Arc<Fence>>, req: Request, next: Next) -> Response {
    if [Method::GET, Method::HEAD, Method::OPTIONS].contains(req.method()) {
        return next.run(req).await;
    }
    match fence.admit(req.headers()).await {
        Ok(admitted) => {
            let response = next.run(req).await;
            drop(admitted);
            response
        }
        Err(refusal) => refusal.response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::post;
    use std::sync::Mutex;
    use tower::ServiceExt;

    /// A router whose POST /cmd records the term it ran with, after yielding (so commands interleave).
    fn app(fence: Arc<Fence>, applied: Arc<Mutex<Vec<u64>>>) -> axum::Router {
        axum::Router::new()
            .route(
                "/cmd",
                post(move |h: HeaderMap| async move {
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    let t = term_of(&h).unwrap().unwrap_or(0);
                    applied.lock().unwrap().push(t);
                    "done"
                })
                .get(|| async { "read" }),
            )
            .layer(axum::middleware::from_fn_with_state(fence, middleware))
    }

    async fn send(app: &axum::Router, method: &str, term: Option<&str>) -> (u16, String) {
        let mut req = Request::builder().method(method).uri("/cmd");
        if let Some(t) = term {
            req = req.header(TERM_HEADER, t);
        }
        let r = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = r.status().as_u16();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8_lossy(&body).to_string())
    }

    #[tokio::test]
    async fn terms_pass_raise_or_are_refused() {
        let fence = Arc::new(Fence::new());
        let applied = Arc::new(Mutex::new(Vec::new()));
        let app = app(fence.clone(), applied.clone());
        // No header: passes, the mark stays at none.
        assert_eq!(send(&app, "POST", None).await, (200, "done".to_string()));
        assert_eq!((fence.term(), fence.accepted(), fence.refused()), (0, 0, 0));
        // Higher raises, equal passes.
        assert_eq!(send(&app, "POST", Some("5")).await.0, 200);
        assert_eq!(fence.term(), 5);
        assert_eq!(send(&app, "POST", Some("5")).await.0, 200);
        assert_eq!((fence.term(), fence.accepted(), fence.refused()), (5, 2, 0));
        // Lower: 409, both terms in the JSON error, counted, not applied.
        let (status, body) = send(&app, "POST", Some("3")).await;
        assert_eq!(status, 409);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["error"],
            "stale manager term 3: term 5 has acted here since (a newer smd leads); command refused"
        );
        assert_eq!((fence.term(), fence.accepted(), fence.refused()), (5, 2, 1));
        assert_eq!(*applied.lock().unwrap(), vec![0, 5, 5]);
        // A read is never fenced, even with a stale or malformed term.
        assert_eq!(send(&app, "GET", Some("1")).await, (200, "read".to_string()));
        assert_eq!(send(&app, "GET", Some("x")).await, (200, "read".to_string()));
        // A header without the header's value shape: 400 with the reason, nothing applied, nothing counted.
        for bad in ["abc", "-1", "+7", "0", "", "18446744073709551616", "7 8"] {
            let (status, body) = send(&app, "POST", Some(bad)).await;
            assert_eq!(status, 400, "{bad:?}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(v["error"].as_str().unwrap().starts_with("x-manager-term: "), "{bad:?}: {body}");
        }
        assert_eq!((fence.term(), fence.accepted(), fence.refused()), (5, 2, 1));
        assert_eq!(applied.lock().unwrap().len(), 3);
        // The highest term possible is a term.
        assert_eq!(send(&app, "POST", Some(&u64::MAX.to_string())).await.0, 200);
        assert_eq!(fence.term(), u64::MAX);
    }

    /// Two leaders' commands at once, in many interleavings: every command of a term below one already applied is
    /// refused, so the applied terms never go down, and each command is either applied or counted as refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_terms_never_apply_out_of_order() {
        let fence = Arc::new(Fence::new());
        let applied = Arc::new(Mutex::new(Vec::new()));
        let app = app(fence.clone(), applied.clone());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..400u64 {
            let app = app.clone();
            // Terms rising 1..=8 as leaders follow each other, every third command from the leader before.
            let newest = 1 + i / 50;
            let term = if i % 3 == 0 { (newest - 1).max(1) } else { newest };
            tasks.spawn(async move { (term, send(&app, "POST", Some(&term.to_string())).await.0) });
        }
        let mut ok = 0;
        let mut conflicts = 0;
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                (_, 200) => ok += 1,
                (_, 409) => conflicts += 1,
                (t, s) => panic!("term {t}: status {s}"),
            }
        }
        let applied = applied.lock().unwrap().clone();
        assert_eq!(applied.len(), ok);
        assert_eq!(ok + conflicts, 400);
        assert_eq!((fence.accepted(), fence.refused()), (ok as u64, conflicts as u64));
        assert!(applied.windows(2).all(|w| w[0] <= w[1]), "a stale command landed after a newer one: {applied:?}");
        assert_eq!(fence.term(), *applied.last().unwrap());
        assert_eq!(fence.term(), 8, "the newest term was sent, so it ends up commanding");
    }

    /// A newer term waits for the older term's command still running, and is told to retry (503) when that takes
    /// longer than the raise wait; it is admitted once that command is done. The mark does not move meanwhile.
    #[tokio::test]
    async fn a_newer_term_waits_for_older_commands_running() {
        let fence = Arc::new(Fence { raise_wait: Duration::from_millis(100), ..Fence::default() });
        let running = fence.admit_term(3).await.unwrap();
        let e = fence.admit_term(4).await.unwrap_err();
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            e.to_string(),
            "manager term 4: commands of an older term are still running here after 100ms; retry"
        );
        assert_eq!(fence.term(), 3);
        // Another command of the running term is not held up.
        drop(fence.admit_term(3).await.unwrap());
        let f = fence.clone();
        let mut waiting = tokio::spawn(async move { f.admit_term(4).await.map(|_| f.term()) });
        let early = tokio::time::timeout(Duration::from_millis(50), &mut waiting).await;
        assert!(early.is_err(), "term 4 ran beside a command of term 3: {early:?}");
        drop(running);
        assert_eq!(waiting.await.unwrap(), Ok(4));
        assert_eq!(fence.admit_term(3).await.unwrap_err(), Refusal::Stale { term: 3, mark: 4 });
    }

    #[tokio::test]
    async fn admit_by_headers() {
        let fence = Fence::new();
        let mut h = HeaderMap::new();
        assert!(!fence.admit(&h).await.unwrap().fenced());
        h.insert(TERM_HEADER, "9".parse().unwrap());
        assert!(fence.admit(&h).await.unwrap().fenced());
        h.append(TERM_HEADER, "10".parse().unwrap());
        let e = fence.admit(&h).await.unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.to_string(), "x-manager-term: sent more than once; send one term");
        assert_eq!(fence.admit_term(4).await.unwrap_err(), Refusal::Stale { term: 4, mark: 9 });
    }
}
