//! lbd's control task: owns the dataplane, applies the desired state to it, answers the control API, follows real
//! servers' MACs, applies health-check results and drains, records events, renders metrics and persists every
//! change to the state file. Health probes and the metrics server run in other tasks and only send it messages.
//! Walks and purges of the connection table (millions of entries) run on the connection-table worker thread: the
//! control task only asks, and answers `list`, `stats` and scrapes when the census it asked for arrives.

use crate::api::{CountersView, RealView, Request, Response, ServiceView, StatsView};
use crate::conntable::{self, Census, Done};
use crate::dataplane::{AttachMode, Dataplane};
use crate::events::{EventKind, EventLog};
use crate::health::{CheckResult, Checker, Health, Tracker};
use crate::maglev;
use crate::metrics::{self, Family, Kind};
use crate::model::{self, CheckSpec, LbState, RealSpec, ServiceKey};
use crate::netinfo::{self, format_mac, Iface, Net};
use lb_common::{global, RealDef, REAL_F_VALID, RING_SIZE};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

/// How long add-real waits for ARP before answering (the real joins the ring whenever it resolves later).
const RESOLVE_WAIT: Duration = Duration::from_secs(3);
/// How often MACs are re-read from the neighbour table.
const NEIGH_REFRESH: Duration = Duration::from_secs(2);
/// A flow counts as active in `list` when a packet was seen this recently.
pub const ACTIVE_FLOW_SECS: u64 = 120;
/// Largest request line accepted on the control socket.
const MAX_REQUEST: usize = 64 * 1024;
/// How long a count of the connection table is reused by metrics and stats, so a burst of scrapes walks millions
/// of entries once; `lbctl list` always counts afresh.
const CENSUS_MAX_AGE: Duration = Duration::from_millis(200);
/// A walk or purge slower than this is logged.
const SLOW_WALK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Dataplane(#[from] crate::dataplane::DataplaneError),
    #[error(transparent)]
    Net(#[from] netinfo::NetError),
    #[error(transparent)]
    Model(#[from] model::ModelError),
    #[error("real {real} is not on a directly connected subnet of {iface} ({nets}): direct routing needs the LB and the real on one L2 segment")]
    OffSubnet { real: IpAddr, iface: String, nets: String },
    #[error("real {real} is an address of {iface} itself")]
    RealIsLocal { real: IpAddr, iface: String },
    #[error("the dataplane is full: at most {0} services")]
    TooManyServices(u32),
    #[error("the dataplane is full: at most {0} distinct real servers")]
    TooManyReals(u32),
    #[error("control socket {path}: {cause}")]
    Socket { path: String, cause: std::io::Error },
    #[error("state file {path}: {cause}")]
    State { path: String, cause: std::io::Error },
}

/// A real server known to the dataplane (shared by every service that lists its address).
#[derive(Clone, Debug)]
struct RealSlot {
    id: u32,
    /// Services that list this real; the slot is freed when none does.
    refs: u32,
    mac: Option<[u8; 6]>,
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
}

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
        }
    }
}

/// Health of one real in one service, as the control task tracks it.
#[derive(Clone, Debug, Default)]
struct RealHealth {
    tracker: Tracker,
    last_detail: Option<String>,
    last_latency: Option<Duration>,
    passed: u64,
    failed: u64,
}

/// A request that needs a census of the connection table, waiting for the worker's walk.
enum CensusWaiter {
    List(oneshot::Sender<Response>),
    Stats(oneshot::Sender<Response>),
    Metrics(metrics::Scrape),
}

/// What the control task needs back from a purge of a down real's flows: the event it completes.
#[derive(Debug)]
struct PurgeNote {
    service: ServiceKey,
    real: IpAddr,
    /// The real-down event's reason, to which the number of purged flows is appended.
    reason: String,
}

pub struct Daemon {
    dp: Dataplane,
    net: Net,
    iface: Iface,
    mode: AttachMode,
    state: LbState,
    state_path: Option<PathBuf>,
    manage_vips: bool,
    reals: HashMap<IpAddr, RealSlot>,
    /// Free real ids, oldest-freed first: an id is reused as late as possible, because flows pinned to a removed
    /// real keep using its slot until they end.
    free_real_ids: VecDeque<u32>,
    vip_nums: HashMap<ServiceKey, u32>,
    free_vip_nums: BTreeSet<u32>,
    checker: Checker,
    check_results: Option<mpsc::Receiver<CheckResult>>,
    health: HashMap<(ServiceKey, IpAddr), RealHealth>,
    events: EventLog,
    /// Services announced as having no usable real (so the recovery is announced once too).
    down_services: HashSet<ServiceKey>,
    /// The last census, with when it was asked for (its walk started at or after that).
    census: Option<(Instant, Census)>,
    /// The thread that walks and purges the connection table.
    conn: conntable::Worker<PurgeNote>,
    conn_done: Option<mpsc::UnboundedReceiver<Done<PurgeNote>>>,
    /// When the census being walked was asked for, if one is.
    census_asked: Option<Instant>,
    /// Requests waiting for a census asked at or after their instant.
    census_waiting: Vec<(Instant, CensusWaiter)>,
    /// When the last purge was asked for: a census asked before it is not reused afterwards.
    purge_asked: Option<Instant>,
    keep_on_exit: bool,
}

type Job = (Request, oneshot::Sender<Response>);

/// The IPv4 service of a VIPS key written by an earlier lbd.
fn service_of(k: &lb_common::VipKey) -> Option<ServiceKey> {
    if k.family != lb_common::FAMILY_V4 {
        return None;
    }
    let proto = match k.proto {
        lb_common::PROTO_TCP => model::Proto::Tcp,
        lb_common::PROTO_UDP => model::Proto::Udp,
        _ => return None,
    };
    let vip = IpAddr::V4(Ipv4Addr::new(k.addr[0], k.addr[1], k.addr[2], k.addr[3]));
    Some(ServiceKey { vip, port: u16::from_be(k.port), proto })
}

impl Daemon {
    /// Loads and attaches the dataplane and applies `initial`. Nothing is attached if `initial` cannot be applied.
    pub async fn start(opts: Options, dp: Dataplane, initial: LbState) -> Result<Self, DaemonError> {
        let net = Net::new()?;
        let iface = net.iface(&opts.iface).await?;
        let max_services = dp.limits().max_services;
        let (results_tx, results_rx) = mpsc::channel(1024);
        let conn_err = |e| DaemonError::Dataplane(crate::dataplane::DataplaneError::ConnTable(e));
        let (conn, conn_done) = conntable::Worker::spawn(dp.conn_table()?).map_err(conn_err)?;
        let mut d = Daemon {
            dp,
            net,
            iface,
            mode: opts.mode,
            state: LbState::default(),
            state_path: opts.state_path,
            manage_vips: opts.manage_vips,
            reals: HashMap::new(),
            free_real_ids: (1..lb_common::MAX_REALS).collect(),
            vip_nums: HashMap::new(),
            free_vip_nums: (0..max_services).collect(),
            checker: Checker::new(opts.check_concurrency, results_tx),
            check_results: Some(results_rx),
            health: HashMap::new(),
            events: EventLog::new(opts.event_capacity),
            down_services: HashSet::new(),
            census: None,
            conn,
            conn_done: Some(conn_done),
            census_asked: None,
            census_waiting: Vec::new(),
            purge_asked: None,
            keep_on_exit: opts.keep_on_exit,
        };
        // Validate the whole initial state against the interface before touching the dataplane further.
        for addr in initial.real_addrs() {
            d.check_real(addr)?;
        }
        if initial.services.len() as u32 > max_services {
            return Err(DaemonError::TooManyServices(max_services));
        }
        d.dp.set_src_mac(d.iface.mac)?;
        // Maps pinned by an earlier lbd keep their service indexes and real ids: the connection table refers to
        // them, so reusing them is what lets established flows survive the restart.
        let mut adopted_vips: HashMap<ServiceKey, u32> = HashMap::new();
        let mut adopted_reals: HashMap<IpAddr, (u32, Option<[u8; 6]>)> = HashMap::new();
        if d.dp.adopted_maps() {
            for (k, meta) in d.dp.read_services()? {
                match service_of(&k) {
                    Some(svc) if meta.vip_num < max_services => {
                        adopted_vips.insert(svc, meta.vip_num);
                    }
                    _ => {}
                }
            }
            for (id, def) in d.dp.read_reals()? {
                let addr = IpAddr::V4(Ipv4Addr::new(def.addr[0], def.addr[1], def.addr[2], def.addr[3]));
                let mac = (def.flags & REAL_F_VALID != 0).then_some(def.mac);
                adopted_reals.insert(addr, (id, mac));
            }
            let wanted = initial.real_addrs();
            let in_use: HashSet<u32> = adopted_reals.values().map(|(id, _)| *id).collect();
            // Ids of reals that are gone from the state keep their flows as long as possible: reused last.
            d.free_real_ids = (1..lb_common::MAX_REALS).filter(|i| !in_use.contains(i)).collect();
            for (addr, (id, _)) in &adopted_reals {
                if !wanted.contains(addr) {
                    d.free_real_ids.push_back(*id);
                }
            }
            for num in adopted_vips.values() {
                d.free_vip_nums.remove(num);
            }
            for (svc, num) in adopted_vips.clone() {
                if !initial.services.contains_key(&svc) {
                    d.dp.del_service(svc.vip_key(), num)?;
                    d.free_vip_nums.insert(num);
                    adopted_vips.remove(&svc);
                }
            }
            tracing::info!(
                services = adopted_vips.len(),
                reals = adopted_reals.len(),
                "took over the pinned maps and their connection table"
            );
        }
        let missing: Vec<IpAddr> = initial
            .real_addrs()
            .into_iter()
            .filter(|a| !adopted_reals.get(a).is_some_and(|(_, m)| m.is_some()))
            .collect();
        let macs = d.resolve(&missing, RESOLVE_WAIT).await;
        for (svc, reals) in &initial.services {
            let vip_num = adopted_vips.get(svc).copied();
            d.install_service_at(*svc, vip_num).await?;
            if let Some(n) = vip_num {
                d.dp.forget_ring(n);
            }
            d.state.set_check(*svc, initial.check(svc))?;
            for r in reals.values() {
                let adopted = adopted_reals.get(&r.addr).copied();
                let mac = macs.get(&r.addr).copied().or(adopted.and_then(|(_, m)| m));
                d.install_real_at(*svc, r.addr, r.weight, mac, adopted.map(|(id, _)| id))?;
                d.state.set_drained(*svc, r.addr, r.drained)?;
            }
            d.start_checks(svc);
            d.rebuild_ring(svc)?;
        }
        // The state file always reflects what runs, from the first moment.
        d.persist()?;
        d.mode = d.dp.attach(&opts.iface, opts.mode)?;
        let how = if d.dp.adopted_link() { "took over the pinned XDP link" } else { "attached XDP" };
        d.events.push(
            EventKind::ConfigApplied,
            None,
            None,
            format!(
                "lbd started: {how} on {} ({} mode), {} service(s), {} real(s)",
                d.iface.name,
                d.mode,
                d.state.services.len(),
                d.reals.len()
            ),
        );
        tracing::info!(iface = %d.iface.name, mode = %d.mode, services = d.state.services.len(),
            pinned = ?d.dp.pin_dir(), "XDP load balancer attached");
        Ok(d)
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    fn check_real(&self, addr: IpAddr) -> Result<(), DaemonError> {
        if self.iface.is_local(addr) {
            return Err(DaemonError::RealIsLocal { real: addr, iface: self.iface.name.clone() });
        }
        if !self.iface.on_link(addr) {
            return Err(DaemonError::OffSubnet {
                real: addr,
                iface: self.iface.name.clone(),
                nets: self.iface.subnets(),
            });
        }
        Ok(())
    }

    /// Asks the kernel for the MACs of `addrs`, triggering ARP for the missing ones, for at most `wait`.
    async fn resolve(&self, addrs: &[IpAddr], wait: Duration) -> HashMap<IpAddr, [u8; 6]> {
        let deadline = Instant::now() + wait;
        let mut triggered = false;
        loop {
            let neigh = match self.net.neighbours(self.iface.index).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the neighbour table failed");
                    HashMap::new()
                }
            };
            let found: HashMap<IpAddr, [u8; 6]> =
                addrs.iter().filter_map(|a| neigh.get(a).filter(|n| n.usable).map(|n| (*a, n.mac))).collect();
            if found.len() == addrs.len() || Instant::now() >= deadline {
                return found;
            }
            if !triggered {
                for a in addrs.iter().filter(|a| !found.contains_key(a)) {
                    if let Err(e) = netinfo::trigger_resolution(&self.iface.name, *a) {
                        tracing::warn!(real = %a, error = %e, "could not trigger neighbour resolution");
                    }
                }
                triggered = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn install_service(&mut self, key: ServiceKey) -> Result<(), DaemonError> {
        self.install_service_at(key, None).await
    }

    /// Installs a service at the given index (one an earlier lbd used) or at the lowest free one.
    async fn install_service_at(&mut self, key: ServiceKey, at: Option<u32>) -> Result<(), DaemonError> {
        let vip_num = match at {
            Some(n) => n,
            None => {
                *self.free_vip_nums.iter().next().ok_or(DaemonError::TooManyServices(self.dp.limits().max_services))?
            }
        };
        if self.manage_vips {
            if let IpAddr::V4(v4) = key.vip {
                match self.net.ensure_address(self.iface.index, v4).await {
                    Ok(true) => tracing::info!(vip = %v4, iface = %self.iface.name, "added VIP to the interface"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(vip = %v4, error = %e, "could not add VIP to the interface; configure it by hand")
                    }
                }
            }
        }
        self.dp.set_service(key.vip_key(), vip_num)?;
        self.free_vip_nums.remove(&vip_num);
        self.vip_nums.insert(key, vip_num);
        self.state.add_service(key)?;
        Ok(())
    }

    fn install_real(
        &mut self,
        svc: ServiceKey,
        addr: IpAddr,
        weight: u32,
        mac: Option<[u8; 6]>,
    ) -> Result<(), DaemonError> {
        self.install_real_at(svc, addr, weight, mac, None)
    }

    /// Installs a real under the given id (one an earlier lbd used) or the oldest free one.
    fn install_real_at(
        &mut self,
        svc: ServiceKey,
        addr: IpAddr,
        weight: u32,
        mac: Option<[u8; 6]>,
        at: Option<u32>,
    ) -> Result<(), DaemonError> {
        if let Some(slot) = self.reals.get_mut(&addr) {
            slot.refs += 1;
        } else if let Some(id) = at {
            self.write_real(id, addr, mac)?;
            self.free_real_ids.retain(|i| *i != id);
            self.reals.insert(addr, RealSlot { id, refs: 1, mac });
        } else {
            let id = *self.free_real_ids.front().ok_or(DaemonError::TooManyReals(lb_common::MAX_REALS - 1))?;
            self.write_real(id, addr, mac)?;
            self.free_real_ids.pop_front();
            self.reals.insert(addr, RealSlot { id, refs: 1, mac });
        }
        self.state.add_real(svc, addr, weight)?;
        Ok(())
    }

    fn write_real(&mut self, id: u32, addr: IpAddr, mac: Option<[u8; 6]>) -> Result<(), DaemonError> {
        let mut a = [0u8; 16];
        if let IpAddr::V4(v4) = addr {
            a[..4].copy_from_slice(&v4.octets());
        }
        let def = RealDef {
            addr: a,
            mac: mac.unwrap_or_default(),
            _pad: [0; 2],
            flags: if mac.is_some() { REAL_F_VALID } else { 0 },
            _pad2: 0,
        };
        self.dp.set_real(id, def)?;
        Ok(())
    }

    fn health_of(&self, svc: &ServiceKey, addr: IpAddr) -> Health {
        self.health.get(&(*svc, addr)).map(|h| h.tracker.health).unwrap_or(Health::Unknown)
    }

    /// Why a real takes no new flows, or None when it does.
    fn out_reason(&self, svc: &ServiceKey, r: &RealSpec) -> Option<&'static str> {
        if self.reals.get(&r.addr).is_none_or(|s| s.mac.is_none()) {
            Some("unresolved")
        } else if self.health_of(svc, r.addr) == Health::Down {
            Some("down")
        } else if r.drained {
            Some("drained")
        } else if r.weight == 0 {
            Some("weight 0")
        } else {
            None
        }
    }

    /// Recomputes a service's Maglev table from its reals that have a MAC, a weight, no drain and are not down,
    /// and writes the diff. Announces (once) when a service with reals has none left, and when it recovers.
    fn rebuild_ring(&mut self, svc: &ServiceKey) -> Result<(), DaemonError> {
        let Some(&vip_num) = self.vip_nums.get(svc) else { return Ok(()) };
        let reals = &self.state.services[svc];
        let entries: Vec<maglev::Entry> = reals
            .values()
            .filter(|r| self.out_reason(svc, r).is_none())
            .filter_map(|r| {
                let slot = self.reals.get(&r.addr)?;
                Some(maglev::Entry { id: slot.id, addr: r.addr, weight: r.weight })
            })
            .collect();
        let table = maglev::build(&entries, RING_SIZE);
        let written = self.dp.write_ring(vip_num, &table)?;
        tracing::debug!(service = %svc, reals = entries.len(), slots_written = written, "ring updated");
        if entries.is_empty() && !reals.is_empty() {
            if self.down_services.insert(*svc) {
                let why: Vec<String> =
                    reals.values().map(|r| format!("{} {}", r.addr, self.out_reason(svc, r).unwrap_or("?"))).collect();
                self.events.push(
                    EventKind::ServiceDown,
                    Some(svc.to_string()),
                    None,
                    format!(
                        "no real can take new flows ({}); packets to the VIP go to the kernel, which resets TCP",
                        why.join(", ")
                    ),
                );
            }
        } else if !entries.is_empty() && self.down_services.remove(svc) {
            self.events.push(
                EventKind::ServiceUp,
                Some(svc.to_string()),
                None,
                format!("{} real(s) take new flows again", entries.len()),
            );
        }
        Ok(())
    }

    /// Starts (or updates) the probes of every real of a service according to its check.
    fn start_checks(&mut self, svc: &ServiceKey) {
        let check = self.state.check(svc);
        let addrs: Vec<IpAddr> = self.state.services.get(svc).map(|r| r.keys().copied().collect()).unwrap_or_default();
        for addr in addrs {
            self.checker.ensure(*svc, addr, &check);
            if check.is_none() {
                self.health.remove(&(*svc, addr));
            }
        }
    }

    fn stop_checks(&mut self, svc: &ServiceKey, addr: IpAddr) {
        self.checker.remove(*svc, addr);
        self.health.remove(&(*svc, addr));
    }

    /// Applies one probe result: rise/fall, and on a change the ring, the connection table and an event.
    fn on_check(&mut self, res: CheckResult) {
        if self.checker.generation(res.service, res.real) != Some(res.generation) {
            return; // from a probe replaced or stopped since
        }
        let svc = res.service;
        let spec = self.state.check(&svc);
        let h = self.health.entry((svc, res.real)).or_default();
        h.last_detail = Some(res.detail.clone());
        h.last_latency = Some(res.latency);
        if res.ok {
            h.passed += 1;
        } else {
            h.failed += 1;
        }
        let before = h.tracker.health;
        let Some(now) = h.tracker.record(res.ok, spec.rise, spec.fall) else { return };
        match now {
            Health::Down => {
                let runs = if before == Health::Unknown { 1 } else { spec.fall };
                if let Err(e) = self.rebuild_ring(&svc) {
                    tracing::error!(service = %svc, error = %e, "ring update failed");
                }
                // The real-down event is recorded when the purge is done, with how many flows it removed.
                let reason = format!("{} check failed {runs} time(s): {}; out of the ring", spec.kind, res.detail);
                self.purge_real_flows(PurgeNote { service: svc, real: res.real, reason });
            }
            Health::Up => {
                if before == Health::Down {
                    if let Err(e) = self.rebuild_ring(&svc) {
                        tracing::error!(service = %svc, error = %e, "ring update failed");
                    }
                }
                let runs = if before == Health::Unknown { 1 } else { spec.rise };
                self.events.push(
                    EventKind::RealUp,
                    Some(svc.to_string()),
                    Some(res.real),
                    format!("{} check passed {runs} time(s): {}", spec.kind, res.detail),
                );
            }
            Health::Unknown => {}
        }
    }

    /// Drops a real's flows of one service from the connection table, so their clients fail fast (the kernel
    /// resets them, or they go to the real now chosen if they retry) instead of hanging on a dead real. The worker
    /// does it (at once, unless a walk is under way) and the real-down event follows with the count.
    fn purge_real_flows(&mut self, note: PurgeNote) {
        let ids = (self.vip_nums.get(&note.service).copied(), self.reals.get(&note.real).map(|s| s.id));
        let (Some(vip_num), Some(id)) = ids else {
            self.on_conn_done(Done::Purged { tag: note, purged: Ok(0), took: Duration::ZERO });
            return;
        };
        self.census = None;
        self.purge_asked = Some(Instant::now());
        if let Err(note) = self.conn.purge(vip_num, id, note) {
            // The worker thread is gone: purge here rather than not at all.
            let t = Instant::now();
            let purged = self
                .dp
                .conn_table()
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|t| t.purge(conntable::Method::Auto, |_, e| e.vip_num == vip_num && e.real_id == id));
            self.on_conn_done(Done::Purged { tag: note, purged, took: t.elapsed() });
        }
    }

    /// A walk or purge the worker finished.
    fn on_conn_done(&mut self, done: Done<PurgeNote>) {
        match done {
            Done::Purged { tag, purged, took } => {
                let n = purged.unwrap_or_else(|e| {
                    tracing::error!(service = %tag.service, real = %tag.real, error = %e, "purging the real's flows failed");
                    0
                });
                if took > SLOW_WALK {
                    tracing::info!(service = %tag.service, real = %tag.real, purged = n, ?took, "slow connection-table purge");
                }
                self.census = None;
                self.events.push(
                    EventKind::RealDown,
                    Some(tag.service.to_string()),
                    Some(tag.real),
                    format!("{}, {n} flow(s) purged", tag.reason),
                );
            }
            Done::Census { requested, census, took } => {
                self.census_asked = None;
                if took > SLOW_WALK {
                    tracing::info!(?took, "slow connection-table walk");
                }
                let census = match census {
                    Ok(c) => {
                        if self.purge_asked.is_none_or(|p| requested >= p) {
                            self.census = Some((requested, c.clone()));
                        }
                        c
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "walking the connection table failed");
                        Census::default()
                    }
                };
                let (ready, later): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut self.census_waiting).into_iter().partition(|(need, _)| *need <= requested);
                self.census_waiting = later;
                for (_, w) in ready {
                    self.answer(w, &census);
                }
                if !self.census_waiting.is_empty() {
                    self.ask_census();
                }
            }
        }
    }

    /// Answers `w` now if the last census was asked for at or after `need`, otherwise once one is.
    fn want_census(&mut self, need: Instant, w: CensusWaiter) {
        let need = self.purge_asked.map_or(need, |p| need.max(p));
        if let Some((at, c)) = &self.census {
            if *at >= need {
                self.answer(w, c);
                return;
            }
        }
        self.census_waiting.push((need, w));
        self.ask_census();
    }

    /// Has the worker walk the table, unless it already is (then the walk after it serves whoever came late).
    fn ask_census(&mut self) {
        if self.census_asked.is_some() {
            return;
        }
        let horizon = ACTIVE_FLOW_SECS * 1_000_000_000;
        match self.conn.census(horizon) {
            Some(at) => self.census_asked = Some(at),
            None => {
                // The worker thread is gone: walk here (blocking) rather than not answer.
                let requested = Instant::now();
                let census = self.census_in_place();
                self.on_conn_done(Done::Census { requested, census, took: requested.elapsed() });
            }
        }
    }

    /// Walks the connection table in this task (blocking it for the walk).
    fn census_in_place(&self) -> std::io::Result<Census> {
        let table = self.dp.conn_table().map_err(|e| std::io::Error::other(e.to_string()))?;
        table.census(conntable::Method::Auto, ACTIVE_FLOW_SECS * 1_000_000_000)
    }

    fn answer(&self, w: CensusWaiter, census: &Census) {
        match w {
            CensusWaiter::List(tx) => {
                let _ = tx.send(self.list(census));
            }
            CensusWaiter::Stats(tx) => {
                let _ = tx.send(self.stats(census));
            }
            CensusWaiter::Metrics(tx) => {
                let _ = tx.send(self.metrics(census));
            }
        }
    }

    fn release_real(&mut self, addr: IpAddr) {
        if let Some(slot) = self.reals.get_mut(&addr) {
            slot.refs -= 1;
            if slot.refs == 0 {
                // The REALS entry stays: flows pinned to it continue (like IPVS) until they end or the id is reused.
                let id = slot.id;
                self.reals.remove(&addr);
                self.free_real_ids.push_back(id);
            }
        }
    }

    fn persist(&self) -> Result<(), DaemonError> {
        if let Some(path) = &self.state_path {
            model::write_atomic(path, &self.state.to_toml())
                .map_err(|cause| DaemonError::State { path: path.display().to_string(), cause })?;
        }
        Ok(())
    }

    /// Applies one request; errors change nothing.
    async fn handle(&mut self, req: Request) -> Response {
        let changes = !matches!(req, Request::List | Request::Stats | Request::Events { .. });
        let res = match req {
            // The run loop answers these off the worker (want_census); this path, unused by it, walks in place.
            Request::List | Request::Stats => {
                let census = self.census_in_place().unwrap_or_default();
                return if matches!(req, Request::List) { self.list(&census) } else { self.stats(&census) };
            }
            Request::Events { last } => {
                let mut r =
                    Response::ok(format!("{} event(s) kept, {} since start", self.events.len(), self.events.total()));
                r.events = Some(self.events.last(last));
                return r;
            }
            Request::AddService { service, check } => self.add_service(service, check).await,
            Request::SetCheck { service, check } => self.set_check(service, check),
            Request::Drain { service, real } => self.drain(service, real, true),
            Request::Undrain { service, real } => self.drain(service, real, false),
            Request::DelService { service } => self.del_service(service),
            Request::AddReal { service, real, weight } => self.add_real(service, real, weight).await,
            Request::EditReal { service, real, weight } => self.edit_real(service, real, weight),
            Request::DelReal { service, real } => self.del_real(service, real),
        };
        match res {
            Ok(msg) => {
                tracing::info!("{msg}");
                if changes {
                    if let Err(e) = self.persist() {
                        tracing::error!(error = %e, "change applied but not persisted");
                        return Response::err(format!("{msg}, but it was not saved: {e}"));
                    }
                }
                Response::ok(msg)
            }
            Err(e) => {
                tracing::info!(error = %e, "request refused");
                Response::err(e.to_string())
            }
        }
    }

    async fn add_service(&mut self, svc: ServiceKey, check: CheckSpec) -> Result<String, DaemonError> {
        svc.validate()?;
        check.validate()?;
        if self.state.services.contains_key(&svc) {
            return Err(model::ModelError::DuplicateService(svc).into());
        }
        self.install_service(svc).await?;
        self.state.set_check(svc, check.clone())?;
        let msg = format!("added service {svc} (check {})", check.summary());
        self.events.push(
            EventKind::ServiceAdded,
            Some(svc.to_string()),
            None,
            format!("lbctl add-service, check {}", check.summary()),
        );
        Ok(msg)
    }

    fn set_check(&mut self, svc: ServiceKey, check: CheckSpec) -> Result<String, DaemonError> {
        check.validate()?;
        self.state.set_check(svc, check.clone())?;
        self.start_checks(&svc);
        self.rebuild_ring(&svc)?;
        self.events.push(
            EventKind::CheckChanged,
            Some(svc.to_string()),
            None,
            format!("check is now {}", check.summary()),
        );
        Ok(format!("service {svc} is now checked with {}", check.summary()))
    }

    fn drain(&mut self, svc: ServiceKey, addr: IpAddr, on: bool) -> Result<String, DaemonError> {
        let was = self.state.set_drained(svc, addr, on)?;
        if was == on {
            return Ok(format!("real {addr} of {svc} was already {}", if on { "drained" } else { "undrained" }));
        }
        if let Err(e) = self.rebuild_ring(&svc) {
            let _ = self.state.set_drained(svc, addr, was);
            return Err(e);
        }
        let weight = self.state.services[&svc][&addr].weight;
        if on {
            self.events.push(
                EventKind::RealDrained,
                Some(svc.to_string()),
                Some(addr),
                "lbctl drain: no new flows, established flows continue",
            );
            Ok(format!("drained real {addr} of {svc}: no new flows, established flows continue (weight {weight} kept for undrain)"))
        } else {
            self.events.push(
                EventKind::RealUndrained,
                Some(svc.to_string()),
                Some(addr),
                format!("lbctl undrain: takes new flows again with weight {weight}"),
            );
            Ok(format!("undrained real {addr} of {svc}: takes new flows again with weight {weight}"))
        }
    }

    fn del_service(&mut self, svc: ServiceKey) -> Result<String, DaemonError> {
        let vip_num = *self.vip_nums.get(&svc).ok_or(model::ModelError::UnknownService(svc))?;
        self.dp.del_service(svc.vip_key(), vip_num)?;
        let reals = self.state.del_service(&svc)?;
        for addr in reals.keys() {
            self.release_real(*addr);
        }
        self.vip_nums.remove(&svc);
        self.free_vip_nums.insert(vip_num);
        for addr in reals.keys() {
            self.stop_checks(&svc, *addr);
        }
        self.down_services.remove(&svc);
        self.events.push(
            EventKind::ServiceRemoved,
            Some(svc.to_string()),
            None,
            format!("lbctl del-service ({} real(s))", reals.len()),
        );
        Ok(format!("deleted service {svc} and its {} real(s)", reals.len()))
    }

    async fn add_real(&mut self, svc: ServiceKey, addr: IpAddr, weight: u32) -> Result<String, DaemonError> {
        model::check_weight(weight)?;
        let reals = self.state.services.get(&svc).ok_or(model::ModelError::UnknownService(svc))?;
        if reals.contains_key(&addr) {
            return Err(model::ModelError::DuplicateReal { service: svc, real: addr }.into());
        }
        self.check_real(addr)?;
        let mac = match self.reals.get(&addr) {
            Some(slot) if slot.mac.is_some() => slot.mac,
            _ => self.resolve(&[addr], RESOLVE_WAIT).await.get(&addr).copied(),
        };
        self.install_real(svc, addr, weight, mac)?;
        if let (Some(m), Some(slot)) = (mac, self.reals.get_mut(&addr)) {
            slot.mac = Some(m);
        }
        self.rebuild_ring(&svc)?;
        let check = self.state.check(&svc);
        self.checker.ensure(svc, addr, &check);
        self.events.push(
            EventKind::RealAdded,
            Some(svc.to_string()),
            Some(addr),
            format!("lbctl add-real, weight {weight}{}", if mac.is_none() { ", MAC not resolved yet" } else { "" }),
        );
        Ok(match mac {
            Some(m) => format!("added real {addr} ({}) to {svc} with weight {weight}", format_mac(&m)),
            None => format!(
                "added real {addr} to {svc} with weight {weight}; its MAC is not resolved yet (no ARP answer), so it takes no flows until it answers"
            ),
        })
    }

    fn edit_real(&mut self, svc: ServiceKey, addr: IpAddr, weight: u32) -> Result<String, DaemonError> {
        let old = self.state.services.get(&svc).and_then(|r| r.get(&addr)).map(|r| r.weight);
        self.state.edit_real(svc, addr, weight)?;
        self.rebuild_ring(&svc)?;
        if old != Some(weight) {
            self.events.push(
                EventKind::WeightChanged,
                Some(svc.to_string()),
                Some(addr),
                format!("lbctl edit-real: weight {} -> {weight}", old.unwrap_or(0)),
            );
        }
        Ok(format!("real {addr} of {svc} now has weight {weight}"))
    }

    fn del_real(&mut self, svc: ServiceKey, addr: IpAddr) -> Result<String, DaemonError> {
        self.state.del_real(svc, addr)?;
        self.stop_checks(&svc, addr);
        self.rebuild_ring(&svc)?;
        self.release_real(addr);
        self.events.push(
            EventKind::RealRemoved,
            Some(svc.to_string()),
            Some(addr),
            "lbctl del-real: established flows continue",
        );
        Ok(format!("deleted real {addr} from {svc}; its established flows continue, new ones go elsewhere"))
    }

    /// Re-reads MACs; a real that resolves joins its rings, one whose MAC changed is rewritten.
    async fn refresh_neighbours(&mut self) {
        let neigh = match self.net.neighbours(self.iface.index).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "reading the neighbour table failed");
                return;
            }
        };
        let mut changed_rings = BTreeSet::new();
        let addrs: Vec<IpAddr> = self.reals.keys().copied().collect();
        for addr in addrs {
            let slot = self.reals[&addr].clone();
            match neigh.get(&addr).filter(|n| n.usable) {
                Some(n) if slot.mac != Some(n.mac) => {
                    if let Err(e) = self.write_real(slot.id, addr, Some(n.mac)) {
                        tracing::error!(real = %addr, error = %e, "updating the real's MAC failed");
                        continue;
                    }
                    tracing::info!(real = %addr, mac = %format_mac(&n.mac), previous = ?slot.mac.map(|m| format_mac(&m)), "real MAC learned");
                    if slot.mac.is_none() {
                        for (svc, reals) in &self.state.services {
                            if reals.contains_key(&addr) {
                                changed_rings.insert(*svc);
                            }
                        }
                    }
                    if let Some(s) = self.reals.get_mut(&addr) {
                        s.mac = Some(n.mac);
                    }
                }
                Some(_) => {}
                None => {
                    // Keep forwarding with the last known MAC; ask the kernel to resolve it again.
                    let _ = netinfo::trigger_resolution(&self.iface.name, addr);
                }
            }
        }
        for svc in changed_rings {
            if let Err(e) = self.rebuild_ring(&svc) {
                tracing::error!(service = %svc, error = %e, "ring update failed");
            }
        }
    }

    /// The instant a census must have been asked at to serve a request that accepts one `max_age` old.
    fn fresh_since(max_age: Duration) -> Instant {
        let now = Instant::now();
        now.checked_sub(max_age).unwrap_or(now)
    }

    fn list(&self, census: &Census) -> Response {
        let mut out = Vec::new();
        for (svc, reals) in &self.state.services {
            let vip_num = self.vip_nums[svc];
            let counters: CountersView = self.dp.service_counters(vip_num).unwrap_or_default().into();
            let mut rv = Vec::new();
            let mut svc_flows = 0;
            let mut usable = 0;
            for r in reals.values() {
                let slot = self.reals.get(&r.addr);
                let mac = slot.and_then(|s| s.mac);
                let active = slot.map(|s| census.active.get(&(vip_num, s.id)).copied().unwrap_or(0)).unwrap_or(0);
                svc_flows += active;
                let out_reason = self.out_reason(svc, r);
                usable += out_reason.is_none() as usize;
                let h = self.health.get(&(*svc, r.addr));
                rv.push(RealView {
                    addr: r.addr,
                    weight: r.weight,
                    mac: mac.map(|m| format_mac(&m)),
                    state: out_reason.unwrap_or("up").into(),
                    health: self.health_of(svc, r.addr),
                    drained: r.drained,
                    last_check: h.and_then(|h| h.last_detail.clone()),
                    check_us: h.and_then(|h| h.last_latency).map(|d| d.as_micros() as u64),
                    active_flows: active,
                    counters: slot.and_then(|s| self.dp.real_counters(s.id).ok()).unwrap_or_default().into(),
                });
            }
            out.push(ServiceView {
                vip: svc.vip,
                port: svc.port,
                proto: svc.proto,
                check: self.state.check(svc).summary(),
                usable_reals: usable,
                active_flows: svc_flows,
                counters,
                reals: rv,
            });
        }
        let mut r = Response::ok(format!("{} service(s)", out.len()));
        r.list = Some(out);
        r
    }

    /// The Prometheus text of `lbd --metrics`.
    fn metrics(&self, census: &Census) -> String {
        let svc_labels = |s: &ServiceKey| {
            vec![
                ("vip", s.vip.to_string()),
                ("port", s.port.to_string()),
                ("proto", s.proto.to_string().to_lowercase()),
            ]
        };
        let mut svc_packets =
            Family::new("lbd_service_packets_total", Kind::Counter, "Packets forwarded to the service's reals.");
        let mut svc_bytes = Family::new(
            "lbd_service_bytes_total",
            Kind::Counter,
            "Bytes (whole frames) forwarded to the service's reals.",
        );
        let mut svc_flows =
            Family::new("lbd_service_new_flows_total", Kind::Counter, "Flows placed by Maglev (new connections).");
        let mut svc_usable = Family::new(
            "lbd_service_usable_reals",
            Kind::Gauge,
            "Reals taking new flows (not down, drained, weight 0 or unresolved).",
        );
        let mut svc_up = Family::new(
            "lbd_service_up",
            Kind::Gauge,
            "1 while at least one real takes new flows; 0 means the kernel resets new connections to the VIP.",
        );
        let mut real_up = Family::new("lbd_real_up", Kind::Gauge, "1 unless the real's health check has it down.");
        let mut real_usable =
            Family::new("lbd_real_usable", Kind::Gauge, "1 when the real takes new flows of the service.");
        let mut real_drained =
            Family::new("lbd_real_drained", Kind::Gauge, "1 when the real is drained (lbctl drain).");
        let mut real_weight = Family::new("lbd_real_weight", Kind::Gauge, "Configured Maglev weight.");
        let mut real_active = Family::new(
            "lbd_real_active_flows",
            Kind::Gauge,
            "Connection-table flows of the service on the real, active in the last 120 s.",
        );
        let mut check_latency =
            Family::new("lbd_real_check_duration_seconds", Kind::Gauge, "Duration of the last health check.");
        let mut checks = Family::new("lbd_real_checks_total", Kind::Counter, "Health checks run, by result.");
        let mut real_packets = Family::new(
            "lbd_real_packets_total",
            Kind::Counter,
            "Packets forwarded to the real (over all its services).",
        );
        let mut real_bytes =
            Family::new("lbd_real_bytes_total", Kind::Counter, "Bytes forwarded to the real (over all its services).");
        let mut real_flows = Family::new(
            "lbd_real_new_flows_total",
            Kind::Counter,
            "New flows placed on the real (over all its services).",
        );
        for (svc, reals) in &self.state.services {
            let vip_num = self.vip_nums[svc];
            let c = self.dp.service_counters(vip_num).unwrap_or_default();
            svc_packets.add(svc_labels(svc), c.packets as f64);
            svc_bytes.add(svc_labels(svc), c.bytes as f64);
            svc_flows.add(svc_labels(svc), c.new_flows as f64);
            let mut usable = 0;
            for r in reals.values() {
                let mut l = svc_labels(svc);
                l.push(("real", r.addr.to_string()));
                let ok = self.out_reason(svc, r).is_none();
                usable += ok as usize;
                real_up.add(l.clone(), (self.health_of(svc, r.addr) != Health::Down) as u8 as f64);
                real_usable.add(l.clone(), ok as u8 as f64);
                real_drained.add(l.clone(), r.drained as u8 as f64);
                real_weight.add(l.clone(), r.weight as f64);
                let id = self.reals.get(&r.addr).map(|s| s.id);
                real_active
                    .add(l.clone(), id.and_then(|id| census.active.get(&(vip_num, id)).copied()).unwrap_or(0) as f64);
                if let Some(h) = self.health.get(&(*svc, r.addr)) {
                    if let Some(d) = h.last_latency {
                        check_latency.add(l.clone(), d.as_secs_f64());
                    }
                    let mut pass = l.clone();
                    pass.push(("result", "pass".into()));
                    checks.add(pass, h.passed as f64);
                    let mut fail = l;
                    fail.push(("result", "fail".into()));
                    checks.add(fail, h.failed as f64);
                }
            }
            svc_usable.add(svc_labels(svc), usable as f64);
            svc_up.add(svc_labels(svc), (usable > 0) as u8 as f64);
        }
        let mut reals: Vec<(&IpAddr, &RealSlot)> = self.reals.iter().collect();
        reals.sort_by_key(|(a, _)| **a);
        for (addr, slot) in reals {
            let c = self.dp.real_counters(slot.id).unwrap_or_default();
            let l = vec![("real", addr.to_string())];
            real_packets.add(l.clone(), c.packets as f64);
            real_bytes.add(l.clone(), c.bytes as f64);
            real_flows.add(l, c.new_flows as f64);
        }
        let g = self.dp.global_counters().unwrap_or_default();
        let mut packets = Family::new(
            "lbd_packets_total",
            Kind::Counter,
            "Packets seen by the XDP program, by what it did with them.",
        );
        let mut bytes =
            Family::new("lbd_bytes_total", Kind::Counter, "Bytes seen by the XDP program, by what it did with them.");
        for (action, i) in [
            ("forwarded", global::TX),
            ("pass_not_vip", global::PASS_NOT_VIP),
            ("pass_malformed", global::PASS_MALFORMED),
            ("pass_frag_or_options", global::PASS_FRAG_OR_OPTIONS),
            ("pass_no_real", global::PASS_NO_REAL),
        ] {
            let c = g.get(i as usize).copied().unwrap_or_default();
            packets.add(vec![("action", action.into())], c.packets as f64);
            bytes.add(vec![("action", action.into())], c.bytes as f64);
        }
        let mut conn = Family::new(
            "lbd_conn_table_entries",
            Kind::Gauge,
            "Entries in the connection table (LRU; idle ones included).",
        );
        conn.add(vec![], census.entries as f64);
        let mut conn_cap = Family::new("lbd_conn_table_capacity", Kind::Gauge, "Size of the connection table.");
        conn_cap.add(vec![], self.dp.limits().conn_table_size as f64);
        let mut events =
            Family::new("lbd_events_total", Kind::Counter, "State-change events recorded since lbd started.");
        events.add(vec![], self.events.total() as f64);
        metrics::render(&[
            svc_packets,
            svc_bytes,
            svc_flows,
            svc_usable,
            svc_up,
            real_up,
            real_usable,
            real_drained,
            real_weight,
            real_active,
            check_latency,
            checks,
            real_packets,
            real_bytes,
            real_flows,
            packets,
            bytes,
            conn,
            conn_cap,
            events,
        ])
    }

    fn stats(&self, census: &Census) -> Response {
        let g = self.dp.global_counters().unwrap_or_default();
        let at = |i: u32| -> CountersView { g.get(i as usize).copied().unwrap_or_default().into() };
        let entries = census.entries;
        let mut r = Response::ok("stats");
        r.stats = Some(StatsView {
            iface: self.iface.name.clone(),
            xdp_mode: self.mode.to_string(),
            services: self.state.services.len(),
            reals: self.reals.len(),
            conn_table_entries: entries,
            conn_table_size: self.dp.limits().conn_table_size,
            forwarded: at(global::TX),
            passed_not_vip: at(global::PASS_NOT_VIP),
            passed_malformed: at(global::PASS_MALFORMED),
            passed_frag_or_options: at(global::PASS_FRAG_OR_OPTIONS),
            passed_no_real: at(global::PASS_NO_REAL),
        });
        r
    }

    /// Serves the control socket until `shutdown` resolves. Dropping the daemon afterwards detaches the program.
    pub async fn run(self, socket: &Path, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
        self.run_with(socket, None, shutdown).await
    }

    /// Serves the control socket, and metrics on `metrics` when given, until `shutdown` resolves. Then the
    /// program is detached and the pins removed, unless the daemon keeps them for the next lbd (keep_on_exit).
    pub async fn run_with(
        mut self,
        socket: &Path,
        metrics: Option<tokio::net::TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), DaemonError> {
        let listener = bind_socket(socket)?;
        let (tx, mut rx) = mpsc::channel::<Job>(64);
        let accept = tokio::spawn(accept_loop(listener, tx));
        let (scrape_tx, mut scrape_rx) = mpsc::channel::<metrics::Scrape>(16);
        let (stop_metrics, metrics_stopped) = oneshot::channel::<()>();
        let metrics_task = metrics.map(|l| {
            tokio::spawn(metrics::serve(l, scrape_tx, async move {
                let _ = metrics_stopped.await;
            }))
        });
        let mut results = self.check_results.take().expect("run is called once");
        let mut conn_done = self.conn_done.take().expect("run is called once");
        let mut tick = tokio::time::interval(NEIGH_REFRESH);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some((req, reply)) = rx.recv() => match req {
                    // Answered when a census the worker walks arrives; meanwhile this task goes on.
                    Request::List => self.want_census(Instant::now(), CensusWaiter::List(reply)),
                    Request::Stats => self.want_census(Self::fresh_since(CENSUS_MAX_AGE), CensusWaiter::Stats(reply)),
                    req => {
                        let resp = self.handle(req).await;
                        let _ = reply.send(resp);
                    }
                },
                Some(res) = results.recv() => self.on_check(res),
                Some(done) = conn_done.recv() => self.on_conn_done(done),
                Some(scrape) = scrape_rx.recv() => self.want_census(Self::fresh_since(CENSUS_MAX_AGE), CensusWaiter::Metrics(scrape)),
                _ = tick.tick() => self.refresh_neighbours().await,
            }
        }
        accept.abort();
        let _ = stop_metrics.send(());
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
        let _ = std::fs::remove_file(socket);
        match self.dp.pin_dir().map(Path::to_path_buf) {
            Some(dir) if self.keep_on_exit => {
                tracing::info!(iface = %self.iface.name, pins = %dir.display(),
                    "shutting down: XDP stays attached and pinned, forwarding with the last table (no health checks) until the next lbd takes over; `lbd --cleanup --pin-dir {}` detaches it", dir.display());
            }
            Some(dir) => {
                if let Err(e) = self.dp.unpin() {
                    tracing::error!(pins = %dir.display(), error = %e, "removing the pins failed; run `lbd --cleanup --pin-dir {}`", dir.display());
                }
                tracing::info!(iface = %self.iface.name, "shutting down: detaching XDP and removing its pins");
            }
            None => tracing::info!(iface = %self.iface.name, "shutting down: detaching XDP"),
        }
        Ok(())
    }
}

fn bind_socket(path: &Path) -> Result<UnixListener, DaemonError> {
    let err = |cause| DaemonError::Socket { path: path.display().to_string(), cause };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // A socket file left by a daemon that died is replaced; a live daemon on it is not.
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "another lbd is serving this socket")));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

async fn accept_loop(listener: UnixListener, tx: mpsc::Sender<Job>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept on control socket failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut rd = BufReader::new(rd).take(MAX_REQUEST as u64);
            let mut line = String::new();
            let resp = match rd.read_line(&mut line).await {
                Ok(0) => return,
                Ok(_) => match serde_json::from_str::<Request>(&line) {
                    Ok(req) => {
                        let (otx, orx) = oneshot::channel();
                        if tx.send((req, otx)).await.is_err() {
                            return;
                        }
                        match orx.await {
                            Ok(r) => r,
                            Err(_) => return,
                        }
                    }
                    Err(e) => Response::err(format!("malformed request: {e}")),
                },
                Err(e) => Response::err(format!("unreadable request: {e}")),
            };
            let mut out =
                serde_json::to_string(&resp).unwrap_or_else(|_| "{\"ok\":false,\"message\":\"internal\"}".into());
            out.push('\n');
            let _ = wr.write_all(out.as_bytes()).await;
        });
    }
}

use tokio::io::AsyncReadExt as _;
