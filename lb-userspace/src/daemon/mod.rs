//! lbd's control task: the one task that owns the dataplane's maps. It takes requests from the control socket,
//! scrapes, probe results, the connection-table worker's walks and purges, and the resolver's MACs, hands each to
//! the decision code ([`core`]) and sends the slow work that decides on to the tasks that do it (see
//! [`core::Effect`]). It never waits on I/O itself.
//!
//! Start-up is the exception, before the task exists: it reads the interface, what an earlier lbd pinned
//! ([`takeover`]) and the reals' MACs, applies the state, writes the state file and attaches.

mod census;
#[cfg(test)]
mod contract;
mod control;
pub mod core;
pub mod guard;
mod http;
mod ids;
mod maps;
mod persist;
mod service;
mod takeover;
mod views;

pub use control::bind as bind_socket;
pub use maps::Maps;
pub use views::ACTIVE_FLOW_SECS;

use self::core::{Effect, Handled, Lb, PurgeNote, Setup};
use crate::announce;
use crate::api::{Request, Response};
use crate::dataplane::conntable::{self, Census, Done};
use crate::dataplane::{AttachMode, Dataplane};
use crate::events::{EventKind, EventLog};
use crate::health::{CheckResult, Checker};
use crate::model::{self, LbState, ServiceKey};
use crate::neigh::{self, Command, Report};
use crate::netinfo::{self, Net};
use census::CensusCache;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use svc::Shutdown;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// How long a count of the connection table is reused by metrics and stats, so a burst of scrapes walks millions
/// of entries once; `lbctl list` always counts afresh.
const CENSUS_MAX_AGE: Duration = Duration::from_millis(200);
/// A walk or purge slower than this is logged.
const SLOW_WALK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("maintenance withdraws VIP announcements, and this lbd announces none: start it with --announce-table")]
    NoAnnounce,
    #[error("route health injection: cannot open a netlink socket: {0}")]
    Announce(std::io::Error),
    #[error("flow-state sync: {0}")]
    Sync(String),
    #[error(transparent)]
    Dataplane(#[from] crate::dataplane::DataplaneError),
    #[error(transparent)]
    Net(#[from] netinfo::NetError),
    #[error(transparent)]
    Model(#[from] model::ModelError),
    #[error(transparent)]
    Value(#[from] model::ValueError),
    #[error("real {real} is not on a directly connected subnet of {iface} ({nets}): direct routing needs the LB and the real on one L2 segment")]
    OffSubnet { real: IpAddr, iface: String, nets: String },
    #[error("real {real} is the {which} address of {net} on {iface}, which names the subnet, not a host: give the real's own address")]
    SubnetEdge { real: IpAddr, which: &'static str, net: String, iface: String },
    #[error("real {real} is an address of {iface} itself")]
    RealIsLocal { real: IpAddr, iface: String },
    #[error("the dataplane is full: at most {0} services")]
    TooManyServices(u32),
    #[error("the dataplane is full: at most {0} distinct real servers")]
    TooManyReals(u32),
    #[error("control socket {path}: {cause}")]
    Socket { path: String, cause: std::io::Error },
    #[error("{0}")]
    Guard(String),
    #[error("state file {path}: {cause}")]
    State { path: String, cause: std::io::Error },
}

pub struct Options {
    pub iface: String,
    pub mode: AttachMode,
    pub state_path: Option<PathBuf>,
    /// Add each service's VIP to the interface (so the LB answers ARP for it).
    pub manage_vips: bool,
    /// Health checks in flight at once, over all reals.
    pub check_concurrency: usize,
    /// Events kept for `lbctl events`.
    pub event_capacity: usize,
    /// On SIGTERM/SIGINT leave the program attached and pinned for the next lbd (upgrade); otherwise detach.
    pub keep_on_exit: bool,
    /// Idle time after which flows of a removed real and UDP flows are purged (zero: never).
    pub flow_idle_timeout: Duration,
    /// Flow-hash seed, shared by every LB node of a cluster (0: the hash of releases before the seed).
    pub hash_seed: u32,
    /// Route health injection: announce healthy VIPs as routes in this kernel table, when any/all of their services
    /// have a usable real (None: off).
    pub announce: Option<(crate::api::AnnounceWhen, u32)>,
    /// Flow-state sync with the other LB nodes (None: off).
    pub sync: Option<crate::sync::SyncConfig>,
}

/// Default of `--flow-idle-timeout`: below Linux's largest TCP retransmission interval (TCP_RTO_MAX, 120 s), so a
/// client retransmitting to a removed real that went dark falls idle and is re-placed within about two minutes.
pub const DEFAULT_FLOW_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Options {
    pub fn new(iface: impl Into<String>, mode: AttachMode) -> Self {
        Options {
            iface: iface.into(),
            mode,
            state_path: None,
            manage_vips: false,
            check_concurrency: crate::health::DEFAULT_CONCURRENCY,
            event_capacity: crate::events::DEFAULT_CAPACITY,
            keep_on_exit: false,
            flow_idle_timeout: DEFAULT_FLOW_IDLE_TIMEOUT,
            hash_seed: 0,
            announce: None,
            sync: None,
        }
    }
}

/// The settings a SIGHUP changes in a running lbd (the others wait for the next start).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSettings {
    /// `--flow-idle-timeout`: the sweep follows it at once.
    pub flow_idle_timeout: Duration,
    /// `--events`: the history is trimmed to it at once.
    pub event_capacity: usize,
}

/// The next reloaded settings, or never when nobody sends any.
async fn next_live(live: &mut Option<mpsc::UnboundedReceiver<LiveSettings>>) -> Option<LiveSettings> {
    match live {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A request that waits for a census of the connection table.
enum Waiter {
    List(oneshot::Sender<Response>),
    Stats(oneshot::Sender<Response>),
    Metrics(http::Scrape),
}

/// Where the control task's messages come from (held apart from the daemon so the run loop can borrow both).
struct Inputs {
    checks: mpsc::Receiver<CheckResult>,
    conn_done: mpsc::UnboundedReceiver<Done<PurgeNote>>,
    reports: mpsc::UnboundedReceiver<Report>,
}

pub struct Daemon {
    lb: Lb<Dataplane>,
    census: CensusCache<Waiter>,
    /// The thread that walks and purges the connection table.
    conn: conntable::Worker<PurgeNote>,
    checker: Checker,
    resolver: mpsc::UnboundedSender<Command>,
    persister: mpsc::UnboundedSender<persist::Write>,
    /// add-real answers waiting for their real's MAC, by address.
    awaiting_mac: HashMap<IpAddr, Vec<(ServiceKey, u32, oneshot::Sender<Response>)>>,
    inputs: Option<Inputs>,
    keep_on_exit: bool,
    flow_idle_timeout: Duration,
    /// A sweep is running on the worker (at most one at a time).
    sweeping: bool,
    /// The route-injection task, when lbd announces VIPs.
    announcer: Option<mpsc::UnboundedSender<announce::Command>>,
    /// Flow-state sync: the numbering the sync tasks translate with (replaced after every change), and counters.
    sync: Option<(Arc<RwLock<crate::sync::Names>>, Arc<crate::sync::SyncStats>)>,
    /// Reloaded settings (SIGHUP), once [`Daemon::live_settings`] has been asked for.
    live: Option<mpsc::UnboundedReceiver<LiveSettings>>,
}

impl Daemon {
    /// Loads the state into the dataplane and attaches it. Nothing is attached if `initial` cannot be applied.
    pub async fn start(opts: Options, mut dp: Dataplane, initial: LbState) -> Result<Self, DaemonError> {
        let net = Net::new()?;
        let iface = net.iface(&opts.iface).await?;
        // The whole initial state is checked against the interface before the dataplane or the network is touched
        // (Lb::new checks it again, as it checks every state it is given).
        let max_services = dp.limits().max_services;
        core::validate(&iface, &initial, max_services)?;
        dp.set_src_mac(iface.mac)?;
        dp.set_hash_seed(opts.hash_seed)?;
        // Maps pinned by an earlier lbd keep their slots and ids: the connection table refers to them.
        let pinned = match dp.adopted_maps() {
            true => {
                let services = dp.read_services()?;
                // Reading each pinned ring makes the ring cache exact (later writes touch only what changes) and
                // tells which reals were serving.
                let mut rings = std::collections::BTreeMap::new();
                for (_, meta) in &services {
                    if meta.vip_num < max_services {
                        let ring = dp.read_ring(meta.vip_num)?;
                        rings.insert(meta.vip_num, ring.into_iter().filter(|id| *id != 0).collect());
                    }
                }
                takeover::Pinned { services, reals: dp.read_reals()?, rings }
            }
            false => takeover::Pinned::default(),
        };
        let plan = takeover::plan(&pinned, &initial, max_services, lb_common::MAX_REALS);
        if dp.adopted_maps() {
            tracing::info!(
                services = plan.slots.len(),
                reals = plan.reals.len(),
                "took over the pinned maps and their connection table"
            );
        }
        let missing: Vec<IpAddr> =
            initial.real_addrs().into_iter().filter(|a| !plan.reals.get(a).is_some_and(|(_, m)| m.is_some())).collect();
        let (resolver, mut reports) = neigh::spawn(net, iface.clone())?;
        // The reals' MACs before the first ring, so a start brings no service up without its reals.
        let macs = neigh::resolve(&resolver, &mut reports, &missing).await;
        let (conn, conn_done) = conntable::Worker::spawn(dp.conn_table()?)
            .map_err(|e| DaemonError::Dataplane(crate::dataplane::DataplaneError::ConnTable(e)))?;
        let setup = Setup {
            iface,
            mode: opts.mode,
            manage_vips: opts.manage_vips,
            events: EventLog::new(opts.event_capacity),
            announce: opts.announce,
        };
        let sync = match &opts.sync {
            Some(cfg) => {
                dp.set_sync(true)?;
                Some((cfg.clone(), dp.take_new_flows()?, dp.conn_table()?))
            }
            None => None,
        };
        let mut lb = Lb::new(dp, setup, &initial, plan, &macs)?;
        let sync = match sync {
            Some((cfg, ring, table)) => {
                let names = Arc::new(RwLock::new(lb.names()));
                let stats = Arc::new(crate::sync::SyncStats::default());
                let (listen, peers) = (cfg.listen, cfg.peers.len());
                lb.sync_peers = cfg.peers.clone();
                crate::sync::spawn(cfg, ring, table, names.clone(), stats.clone())
                    .await
                    .map_err(|e| DaemonError::Sync(format!("cannot listen on {listen}: {e}")))?;
                tracing::info!(%listen, peers, "flow-state sync with the other LB nodes");
                lb.sync_stats = Some(stats.clone());
                Some((names, stats))
            }
            None => None,
        };
        // The state file reflects what runs from the first moment; a state file that cannot be written stops lbd.
        if let Some(path) = &opts.state_path {
            let text = lb.state().to_toml()?;
            model::write_atomic(path, &text)
                .map_err(|cause| DaemonError::State { path: path.display().to_string(), cause })?;
        }
        lb.mode = lb.maps.attach(&opts.iface, opts.mode)?;
        let how = if lb.maps.adopted_link() { "took over the pinned XDP link" } else { "attached XDP" };
        let summary = format!(
            "lbd started: {how} on {} ({} mode), {} service(s), {} real(s)",
            lb.iface.name,
            lb.mode,
            lb.services.len(),
            lb.reals.len()
        );
        lb.event(EventKind::ConfigApplied, None, None, summary);
        tracing::info!(iface = %lb.iface.name, mode = %lb.mode, services = lb.services.len(), pinned = ?lb.maps.pin_dir(), "XDP load balancer attached");
        let (results_tx, checks) = mpsc::channel(1024);
        let mut d = Daemon {
            lb,
            census: CensusCache::default(),
            conn,
            checker: Checker::new(opts.check_concurrency, results_tx),
            resolver,
            persister: persist::spawn(opts.state_path),
            awaiting_mac: HashMap::new(),
            inputs: Some(Inputs { checks, conn_done, reports }),
            keep_on_exit: opts.keep_on_exit,
            flow_idle_timeout: opts.flow_idle_timeout,
            sweeping: false,
            live: None,
            sync,
            announcer: match opts.announce {
                Some((_, table)) => Some(announce::spawn(table).map_err(DaemonError::Announce)?),
                None => None,
            },
        };
        // The file was just written; the rest (probes, MAC watches, VIPs) goes to its tasks.
        let effects = d.lb.take_effects().into_iter().filter(|e| *e != Effect::Persist).collect();
        d.apply(effects, None);
        Ok(d)
    }

    pub fn mode(&self) -> AttachMode {
        self.lb.mode
    }

    /// Where reloaded settings go: the running daemon applies each at once.
    pub fn live_settings(&mut self) -> mpsc::UnboundedSender<LiveSettings> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.live = Some(rx);
        tx
    }

    /// How often the connection table is swept: often enough that an expired flow goes within a quarter of the
    /// timeout (and templates within 15 s).
    fn sweep_every(idle: Duration) -> Duration {
        match idle.is_zero() {
            true => Duration::from_secs(15),
            false => (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(15)),
        }
    }

    /// Serves the control socket, and metrics on `metrics` when given, until `shutdown` resolves. Then the
    /// program is detached and the pins removed, unless the daemon keeps them for the next lbd (keep_on_exit).
    pub async fn run(
        mut self,
        (listener, socket): (tokio::net::UnixListener, &Path),
        metrics: Option<TcpListener>,
        api: Option<(TcpListener, svc::auth::Bearer)>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), DaemonError> {
        let (stop, stopping) = Shutdown::new();
        let (jobs_tx, mut jobs) = mpsc::channel::<control::Job>(64);
        let mut servers = vec![tokio::spawn(control::serve(listener, jobs_tx.clone(), stopping.clone()))];
        let (scrape_tx, mut scrapes) = mpsc::channel::<http::Scrape>(16);
        // The manager-term fence of the API, in memory: a restarted lbd accepts any term again (svc::fence).
        let fence = Arc::new(svc::fence::Fence::new());
        if let Some(l) = metrics {
            servers.push(tokio::spawn(http::serve(l, scrape_tx.clone(), None, fence.clone(), stopping.clone())));
        }
        if let Some((l, bearer)) = api {
            servers.push(tokio::spawn(http::serve(l, scrape_tx, Some((jobs_tx, bearer)), fence, stopping)));
        }
        let Some(mut inputs) = self.inputs.take() else { unreachable!("start sets the inputs and run consumes self") };
        tokio::pin!(shutdown);
        let mut sweep = tokio::time::interval(Self::sweep_every(self.flow_idle_timeout));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut live = self.live.take();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some((req, reply)) = jobs.recv() => self.on_request(req, reply),
                Some(res) = inputs.checks.recv() => {
                    // Results of a probe replaced or stopped since are dropped.
                    if self.checker.generation(res.service, res.real) == Some(res.generation) {
                        self.lb.on_check(res);
                        self.apply_effects(None);
                    }
                }
                Some(done) = inputs.conn_done.recv() => self.on_conn_done(done),
                Some(scrape) = scrapes.recv() => self.want_census(fresh_since(CENSUS_MAX_AGE), Waiter::Metrics(scrape)),
                Some(report) = inputs.reports.recv() => self.on_report(report),
                _ = sweep.tick() => self.ask_sweep(),
                Some(l) = next_live(&mut live) => {
                    if l.flow_idle_timeout != self.flow_idle_timeout {
                        self.flow_idle_timeout = l.flow_idle_timeout;
                        let every = Self::sweep_every(l.flow_idle_timeout);
                        sweep = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                    self.lb.events.set_capacity(l.event_capacity);
                }
            }
        }
        stop.trigger();
        for s in servers {
            let _ = s.await;
        }
        let _ = std::fs::remove_file(socket);
        // A deliberate stop withdraws the VIPs, so the routers send nothing more here; an upgrade (--keep-on-exit)
        // keeps them, since forwarding goes on and the next lbd takes over.
        if let (Some(a), false) = (&self.announcer, self.keep_on_exit) {
            let (tx, rx) = oneshot::channel();
            if a.send(announce::Command::WithdrawAll(tx)).is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(3), rx).await;
            }
        }
        let name = self.lb.iface.name.clone();
        match self.lb.maps.pin_dir().map(Path::to_path_buf) {
            Some(dir) if self.keep_on_exit => {
                tracing::info!(iface = %name, pins = %dir.display(),
                    "shutting down: XDP stays attached and pinned, forwarding with the last table (no health checks) until the next lbd takes over; `lbd --cleanup --pin-dir {}` detaches it", dir.display());
            }
            Some(dir) => {
                if let Err(e) = self.lb.maps.unpin() {
                    tracing::error!(pins = %dir.display(), error = %e, "removing the pins failed; run `lbd --cleanup --pin-dir {}`", dir.display());
                }
                tracing::info!(iface = %name, "shutting down: detaching XDP and removing its pins");
            }
            None => tracing::info!(iface = %name, "shutting down: detaching XDP"),
        }
        Ok(())
    }

    fn on_request(&mut self, req: Request, reply: oneshot::Sender<Response>) {
        match self.lb.handle(req) {
            Handled::Answer(resp) => return self.apply_effects(Some((reply, resp))),
            // Answered when a census the worker walks arrives; meanwhile this task goes on.
            Handled::NeedsCensus(Request::List) => self.want_census(Instant::now(), Waiter::List(reply)),
            Handled::NeedsCensus(_) => self.want_census(fresh_since(CENSUS_MAX_AGE), Waiter::Stats(reply)),
            Handled::AwaitMac { service, real, weight } => {
                self.awaiting_mac.entry(real).or_default().push((service, weight, reply))
            }
        }
        self.apply_effects(None);
    }

    fn on_report(&mut self, report: Report) {
        let addr = match report {
            Report::Mac(addr, mac) => {
                self.lb.mac_learned(addr, mac);
                addr
            }
            Report::Unresolved(addr) => addr,
        };
        for (service, weight, reply) in self.awaiting_mac.remove(&addr).unwrap_or_default() {
            let _ = reply.send(Response::ok(self.lb.added(service, addr, weight)));
        }
        self.apply_effects(None);
    }

    fn apply_effects(&mut self, answer: Option<(oneshot::Sender<Response>, Response)>) {
        if let Some((names, _)) = &self.sync {
            *names.write().unwrap_or_else(|e| e.into_inner()) = self.lb.names();
        }
        let effects = self.lb.take_effects();
        self.apply(effects, answer);
    }

    /// Hands effects to the tasks that carry them out. `answer` goes out after the state file is written when
    /// the effects changed the state, at once otherwise.
    fn apply(&mut self, effects: Vec<Effect>, answer: Option<(oneshot::Sender<Response>, Response)>) {
        let mut persist = false;
        for e in effects {
            match e {
                Effect::Watch(a) => self.resolve(Command::Watch(a)),
                Effect::Unwatch(a) => self.resolve(Command::Unwatch(a)),
                Effect::AddVip(a) => self.resolve(Command::AddVip(a)),
                Effect::Announce(set) => {
                    if let Some(a) = &self.announcer {
                        let _ = a.send(announce::Command::Set(set));
                    }
                }
                Effect::Probe { service, real, check } => self.checker.ensure(service, real, &check),
                Effect::Purge { slot, id, note } => self.purge(slot, id, note),
                Effect::Persist => persist = true,
            }
        }
        match (persist, answer) {
            (true, reply) => {
                let w = persist::Write { toml: self.lb.state().to_toml(), reply };
                if let Err(mpsc::error::SendError(w)) = self.persister.send(w) {
                    tracing::error!("the state-file writer is gone; change applied but not saved");
                    if let Some((tx, resp)) = w.reply {
                        let _ = tx.send(resp);
                    }
                }
            }
            (false, Some((tx, resp))) => {
                let _ = tx.send(resp);
            }
            (false, None) => {}
        }
    }

    fn resolve(&self, cmd: Command) {
        if self.resolver.send(cmd).is_err() {
            tracing::error!("the neighbour resolver is gone; MAC changes are no longer followed");
        }
    }

    /// Drops a real's flows of one service from the connection table, so their clients fail fast (the kernel
    /// resets them, or they go to the real now chosen if they retry) instead of hanging on a dead real.
    fn purge(&mut self, slot: u32, id: u32, note: PurgeNote) {
        self.census.purging(Instant::now());
        if let Err(note) = self.conn.purge(slot, id, note) {
            // Only a panic ends the worker; this task does not take its blocking walks over.
            let gone = std::io::Error::other("the connection-table worker thread is gone");
            self.on_conn_done(Done::Purged { tag: note, purged: Err(gone), took: Duration::ZERO });
        }
    }

    /// A walk or purge the worker finished.
    /// Has the worker remove expired entries, unless a sweep is still running.
    fn ask_sweep(&mut self) {
        if self.sweeping || !self.lb.needs_sweep() {
            return;
        }
        let rules = self.lb.sweep_rules(self.flow_idle_timeout);
        self.sweeping = self.conn.sweep(rules);
    }

    fn on_conn_done(&mut self, done: Done<PurgeNote>) {
        match done {
            Done::Swept { rules, swept, took } => {
                self.sweeping = false;
                if took > SLOW_WALK {
                    tracing::info!(?took, "slow connection-table sweep");
                }
                match swept {
                    Ok(s) => {
                        if s.removed > 0 {
                            self.census.purge_done();
                        }
                        self.lb.swept(&rules, s);
                    }
                    Err(e) => tracing::error!(error = %e, "sweeping the connection table failed"),
                }
            }
            Done::Purged { tag, purged, took } => {
                if took > SLOW_WALK {
                    tracing::info!(service = %tag.service, real = %tag.real, ?took, "slow connection-table purge");
                }
                self.census.purge_done();
                self.lb.purged(tag, purged);
            }
            Done::Census { requested, census, took } => {
                if took > SLOW_WALK {
                    tracing::info!(?took, "slow connection-table walk");
                }
                let census =
                    census.map_err(|e| tracing::error!(error = %e, "walking the connection table failed")).ok();
                let (census, ready) = self.census.walked(requested, census);
                for w in ready {
                    answer(&self.lb, w, &census);
                }
                self.ask_census();
            }
        }
    }

    /// Answers `w` from a census asked at or after `need`, at once if there is one, otherwise after a walk.
    fn want_census(&mut self, need: Instant, w: Waiter) {
        if let Ok((w, census)) = self.census.want(need, w) {
            return answer(&self.lb, w, census);
        }
        self.ask_census();
    }

    /// Has the worker walk the table if someone waits and no walk is under way.
    fn ask_census(&mut self) {
        if !self.census.needs_walk() {
            return;
        }
        let horizon = ACTIVE_FLOW_SECS * 1_000_000_000;
        match self.conn.census(horizon) {
            Some(at) => self.census.walking(at),
            None => {
                // Only a panic ends the worker; answer with what is known rather than walk here.
                let requested = Instant::now();
                self.census.walking(requested);
                let gone = std::io::Error::other("the connection-table worker thread is gone");
                self.on_conn_done(Done::Census { requested, census: Err(gone), took: Duration::ZERO });
            }
        }
    }
}

fn answer<M: Maps>(lb: &Lb<M>, w: Waiter, census: &Census) {
    match w {
        Waiter::List(tx) => {
            let _ = tx.send(lb.list(census));
        }
        Waiter::Stats(tx) => {
            let _ = tx.send(lb.stats(census));
        }
        Waiter::Metrics(tx) => {
            let _ = tx.send(lb.metrics(census));
        }
    }
}

/// The instant a census must have been asked at to serve a request that accepts one `max_age` old.
fn fresh_since(max_age: Duration) -> Instant {
    let now = Instant::now();
    now.checked_sub(max_age).unwrap_or(now)
}
