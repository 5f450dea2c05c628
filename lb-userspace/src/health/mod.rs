//! Health checks: probes run by tokio tasks off the map-owning control task, bounded by a semaphore, and the
//! rise/fall state machine the control task applies to their results.
//!
//! Each (service, real) pair has one task that probes at the service's interval and sends every result to the
//! control task; only the control task changes health, rings and the connection table, so results never race.
//! A probe kind is one file implementing [`Probe`] (pingora's shape: a target in, up or down with the reason out):
//! tcp.rs, http.rs (http and https), rtmp.rs, rtsp.rs; [`probe_for`] maps a check kind to its probe.

use crate::model::{CheckKind, CheckSpec, ServiceKey};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};

mod http;
mod rtmp;
mod rtsp;
mod tcp;

pub use rtmp::{check_rtmp_s0s1, rtmp_c0c1};

/// Checks in flight at once unless `lbd --check-concurrency` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// What one probe found: Ok (up) with what passed ("200", "S0+S1"), Err (down) with why.
pub type Verdict = Result<String, String>;

/// One kind of probe. Built once per (service, real) task from the check's settings, then asked at every interval;
/// the caller bounds each call with the check's timeout.
pub trait Probe: Send + Sync {
    fn check(&self, target: SocketAddr) -> BoxFuture<'_, Verdict>;
}

/// The probe of a check (kind `none` probes like tcp: callers do not start tasks for it).
pub fn probe_for(spec: &CheckSpec) -> Box<dyn Probe> {
    match spec.kind {
        CheckKind::None | CheckKind::Tcp => Box::new(tcp::Tcp),
        CheckKind::Http => Box::new(http::Http::new(spec, false)),
        CheckKind::Https => Box::new(http::Http::new(spec, true)),
        CheckKind::Rtmp => Box::new(rtmp::Rtmp),
        CheckKind::Rtsp => Box::new(rtsp::Rtsp),
    }
}

/// What the control task believes about a real in one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not checked yet (or the service has no check): takes flows, so a restart or a new real causes no churn.
    Unknown,
    Up,
    Down,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        })
    }
}

/// Rise/fall hysteresis. The first result decides at once (a real is not kept out for `rise` intervals at start,
/// nor kept in for `fall` intervals when it never answered); after that `fall` consecutive failures take it
/// down and `rise` consecutive passes bring it back.
#[derive(Clone, Copy, Debug)]
pub struct Tracker {
    pub health: Health,
    ok_run: u32,
    fail_run: u32,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker { health: Health::Unknown, ok_run: 0, fail_run: 0 }
    }
}

impl Tracker {
    /// A real that was serving when lbd took over the dataplane: up, so it takes `fall` failures to go down.
    pub fn assumed_up() -> Self {
        Tracker { health: Health::Up, ok_run: 0, fail_run: 0 }
    }

    /// Records one result; returns the new health when it changed.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> Option<Health> {
        if ok {
            self.ok_run = self.ok_run.saturating_add(1);
            self.fail_run = 0;
        } else {
            self.fail_run = self.fail_run.saturating_add(1);
            self.ok_run = 0;
        }
        let next = match self.health {
            Health::Unknown => {
                if ok {
                    Health::Up
                } else {
                    Health::Down
                }
            }
            Health::Up if self.fail_run >= fall => Health::Down,
            Health::Down if self.ok_run >= rise => Health::Up,
            h => h,
        };
        if next != self.health {
            self.health = next;
            Some(next)
        } else {
            None
        }
    }
}

/// One probe's outcome, sent to the control task.
#[derive(Clone, Debug)]
pub struct CheckResult {
    pub service: ServiceKey,
    pub real: IpAddr,
    /// Which task sent it: results of a task replaced since are ignored.
    pub generation: u64,
    pub ok: bool,
    pub latency: Duration,
    /// Why it failed, or what passed ("200", "S0+S1").
    pub detail: String,
}

/// Starts, replaces and stops the probe tasks. Owned by the control task; the tasks themselves never touch maps.
pub struct Checker {
    permits: Arc<Semaphore>,
    results: mpsc::Sender<CheckResult>,
    tasks: HashMap<(ServiceKey, IpAddr), Task>,
    next_generation: u64,
}

struct Task {
    generation: u64,
    spec: CheckSpec,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Checker {
    fn drop(&mut self) {
        for t in self.tasks.values() {
            t.handle.abort();
        }
    }
}

impl Checker {
    pub fn new(concurrency: usize, results: mpsc::Sender<CheckResult>) -> Self {
        Checker {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            results,
            tasks: HashMap::new(),
            next_generation: 1,
        }
    }

    /// Makes sure `real` of `service` is probed with `spec` (a task with another spec is replaced; kind `none` stops it).
    pub fn ensure(&mut self, service: ServiceKey, real: IpAddr, spec: &CheckSpec) {
        if spec.is_none() {
            self.remove(service, real);
            return;
        }
        if self.tasks.get(&(service, real)).is_some_and(|t| &t.spec == spec) {
            return;
        }
        self.remove(service, real);
        let generation = self.next_generation;
        self.next_generation += 1;
        let port = spec.port.unwrap_or(service.port);
        let target = SocketAddr::new(real, port);
        let handle = tokio::spawn(probe_loop(
            service,
            real,
            target,
            spec.clone(),
            generation,
            self.permits.clone(),
            self.results.clone(),
        ));
        self.tasks.insert((service, real), Task { generation, spec: spec.clone(), handle });
    }

    pub fn remove(&mut self, service: ServiceKey, real: IpAddr) {
        if let Some(t) = self.tasks.remove(&(service, real)) {
            t.handle.abort();
        }
    }

    /// The generation of the live task for the pair, if any.
    pub fn generation(&self, service: ServiceKey, real: IpAddr) -> Option<u64> {
        self.tasks.get(&(service, real)).map(|t| t.generation)
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

async fn probe_loop(
    service: ServiceKey,
    real: IpAddr,
    target: SocketAddr,
    spec: CheckSpec,
    generation: u64,
    permits: Arc<Semaphore>,
    results: mpsc::Sender<CheckResult>,
) {
    // Spread the first probes of many reals over a fraction of the interval instead of firing them together.
    let probe = probe_for(&spec);
    let spread = spec.interval.0.min(Duration::from_millis(500));
    let jitter = spread.mul_f64((u32::from_ne_bytes(addr_hash(real)) % 1000) as f64 / 1000.0);
    tokio::time::sleep(jitter).await;
    let mut tick = tokio::time::interval(spec.interval.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(permit) = permits.acquire().await else { return };
        let started = Instant::now();
        let limit = spec.effective_timeout();
        let outcome = match tokio::time::timeout(limit, probe.check(target)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
        };
        let latency = started.elapsed();
        drop(permit);
        let (ok, detail) = match outcome {
            Ok(d) => (true, d),
            Err(e) => (false, e),
        };
        if results.send(CheckResult { service, real, generation, ok, latency, detail }).await.is_err() {
            return;
        }
    }
}

fn addr_hash(a: IpAddr) -> [u8; 4] {
    match a {
        IpAddr::V4(v) => lb_common::flow_hash(0, u32::from(v), 0, 0, 0).to_ne_bytes(),
        IpAddr::V6(v) => lb_common::flow_hash(0, v.to_bits() as u32, 0, 0, 0).to_ne_bytes(),
    }
}

/// Runs one probe of `spec` (without its timeout).
pub async fn probe(spec: &CheckSpec, target: SocketAddr) -> Verdict {
    probe_for(spec).check(target).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn first_result_decides_then_rise_and_fall_apply() {
        let mut t = Tracker::default();
        assert_eq!(t.record(true, 2, 3), Some(Health::Up));
        assert_eq!(t.record(false, 2, 3), None);
        assert_eq!(t.record(false, 2, 3), None);
        assert_eq!(t.record(true, 2, 3), None, "a pass resets the failure run");
        assert_eq!(t.record(false, 2, 3), None);
        assert_eq!(t.record(false, 2, 3), None);
        assert_eq!(t.record(false, 2, 3), Some(Health::Down));
        assert_eq!(t.record(false, 2, 3), None, "logged once per change, not per check");
        assert_eq!(t.record(true, 2, 3), None);
        assert_eq!(t.record(false, 2, 3), None, "a failure resets the pass run");
        assert_eq!(t.record(true, 2, 3), None);
        assert_eq!(t.record(true, 2, 3), Some(Health::Up));
        let mut fresh = Tracker::default();
        assert_eq!(fresh.record(false, 2, 3), Some(Health::Down), "a real that never answered is not kept in");
        let mut one = Tracker::default();
        one.record(true, 1, 1);
        assert_eq!(one.record(false, 1, 1), Some(Health::Down));
        assert_eq!(one.record(true, 1, 1), Some(Health::Up));
    }

    #[tokio::test]
    async fn probes_talk_to_local_servers() {
        use tokio::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut b = [0u8; 2048];
                    let n = s.read(&mut b).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&b[..n]).to_string();
                    let reply = if req.starts_with("GET /ok ") {
                        "HTTP/1.0 200 OK\r\n\r\n".to_string()
                    } else if req.starts_with("GET ") {
                        "HTTP/1.0 404 Not Found\r\n\r\n".to_string()
                    } else {
                        "RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n".to_string()
                    };
                    let _ = s.write_all(reply.as_bytes()).await;
                });
            }
        });
        let mut spec = CheckSpec { kind: CheckKind::Http, path: "/ok".into(), ..CheckSpec::default() };
        assert_eq!(probe(&spec, addr).await, Ok("200".into()));
        spec.path = "/missing".into();
        assert!(probe(&spec, addr).await.unwrap_err().contains("status 404"));
        spec.kind = CheckKind::Rtsp;
        assert!(probe(&spec, addr).await.is_ok());
        spec.kind = CheckKind::Tcp;
        assert!(probe(&spec, addr).await.is_ok());
        // A closed port fails with the reason.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        assert!(probe(&spec, closed).await.unwrap_err().contains("connect"));
    }

    /// Hundreds of reals are probed with at most `concurrency` probes in flight, and every one gets results.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hundreds_of_reals_are_checked_within_the_concurrency_bound() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::net::TcpListener;
        const REALS: usize = 300;
        const CONCURRENCY: usize = 8;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        // One HTTP server per real address on loopback (127.0.1.x, 127.0.2.x), all on one port, answering after
        // 20 ms so that probes overlap if the bound does not hold.
        let first = TcpListener::bind("127.0.1.1:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        let addr_of = |i: usize| IpAddr::from([127, 0, 1 + (i / 200) as u8, 1 + (i % 200) as u8]);
        let mut listeners = vec![first];
        for i in 1..REALS {
            listeners.push(TcpListener::bind(SocketAddr::new(addr_of(i), port)).await.unwrap());
        }
        for l in listeners {
            let (in_flight, peak) = (in_flight.clone(), peak.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut s, _)) = l.accept().await else { return };
                    let (in_flight, peak) = (in_flight.clone(), peak.clone());
                    tokio::spawn(async move {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        let mut b = [0u8; 512];
                        let _ = s.read(&mut b).await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await;
                    });
                }
            });
        }
        let (tx, mut rx) = mpsc::channel(4096);
        let mut checker = Checker::new(CONCURRENCY, tx);
        let service = ServiceKey::parse("10.0.0.100:80", crate::model::Proto::Tcp).unwrap();
        let spec = CheckSpec {
            kind: CheckKind::Http,
            port: Some(port),
            interval: crate::model::Dur(Duration::from_secs(1)),
            timeout: crate::model::Dur(Duration::from_millis(900)),
            ..CheckSpec::default()
        };
        for i in 0..REALS {
            checker.ensure(service, addr_of(i), &spec);
        }
        assert_eq!(checker.len(), REALS);
        let mut passed = std::collections::HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while passed.len() < REALS {
            let r =
                tokio::time::timeout_at(deadline.into(), rx.recv()).await.expect("every real gets a result").unwrap();
            assert!(r.ok, "{}: {}", r.real, r.detail);
            passed.insert(r.real);
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= CONCURRENCY, "{peak} probes in flight with a bound of {CONCURRENCY}");
        assert!(peak >= 2, "probes never overlapped (peak {peak}): not concurrent");
    }
}
