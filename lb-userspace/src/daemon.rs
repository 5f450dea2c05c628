//! lbd's control task: owns the dataplane, applies the desired state to it, answers the control API, follows real
//! servers' MACs and persists every change to the state file.

use crate::api::{CountersView, RealView, Request, Response, ServiceView, StatsView};
use crate::dataplane::{AttachMode, Dataplane};
use crate::maglev;
use crate::model::{self, LbState, ServiceKey};
use crate::netinfo::{self, format_mac, Iface, Net};
use lb_common::{global, RealDef, REAL_F_VALID, RING_SIZE};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
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
}

type Job = (Request, oneshot::Sender<Response>);

impl Daemon {
    /// Loads and attaches the dataplane and applies `initial`. Nothing is attached if `initial` cannot be applied.
    pub async fn start(opts: Options, dp: Dataplane, initial: LbState) -> Result<Self, DaemonError> {
        let net = Net::new()?;
        let iface = net.iface(&opts.iface).await?;
        let max_services = dp.limits().max_services;
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
        };
        d.dp.set_src_mac(d.iface.mac)?;
        // Validate the whole initial state against the interface before touching the dataplane further.
        for addr in initial.real_addrs() {
            d.check_real(addr)?;
        }
        if initial.services.len() as u32 > max_services {
            return Err(DaemonError::TooManyServices(max_services));
        }
        let macs = d.resolve(&initial.real_addrs().into_iter().collect::<Vec<_>>(), RESOLVE_WAIT).await;
        for (svc, reals) in &initial.services {
            d.install_service(*svc).await?;
            for r in reals.values() {
                d.install_real(*svc, r.addr, r.weight, macs.get(&r.addr).copied())?;
            }
            d.rebuild_ring(svc)?;
        }
        // The state file always reflects what runs, from the first moment.
        d.persist()?;
        d.mode = d.dp.attach(&opts.iface, opts.mode)?;
        tracing::info!(iface = %d.iface.name, mode = %d.mode, services = d.state.services.len(),
            "XDP load balancer attached");
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
            return Err(DaemonError::OffSubnet { real: addr, iface: self.iface.name.clone(), nets: self.iface.subnets() });
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
        let vip_num = *self
            .free_vip_nums
            .iter()
            .next()
            .ok_or(DaemonError::TooManyServices(self.dp.limits().max_services))?;
        if self.manage_vips {
            if let IpAddr::V4(v4) = key.vip {
                match self.net.ensure_address(self.iface.index, v4).await {
                    Ok(true) => tracing::info!(vip = %v4, iface = %self.iface.name, "added VIP to the interface"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(vip = %v4, error = %e, "could not add VIP to the interface; configure it by hand"),
                }
            }
        }
        self.dp.set_service(key.vip_key(), vip_num)?;
        self.free_vip_nums.remove(&vip_num);
        self.vip_nums.insert(key, vip_num);
        self.state.add_service(key)?;
        Ok(())
    }

    fn install_real(&mut self, svc: ServiceKey, addr: IpAddr, weight: u32, mac: Option<[u8; 6]>) -> Result<(), DaemonError> {
        if let Some(slot) = self.reals.get_mut(&addr) {
            slot.refs += 1;
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
        let def = RealDef { addr: a, mac: mac.unwrap_or_default(), _pad: [0; 2], flags: if mac.is_some() { REAL_F_VALID } else { 0 }, _pad2: 0 };
        self.dp.set_real(id, def)?;
        Ok(())
    }

    /// Recomputes a service's Maglev table from its reals that have a MAC and a weight, and writes the diff.
    fn rebuild_ring(&mut self, svc: &ServiceKey) -> Result<(), DaemonError> {
        let Some(&vip_num) = self.vip_nums.get(svc) else { return Ok(()) };
        let entries: Vec<maglev::Entry> = self.state.services[svc]
            .values()
            .filter_map(|r| {
                let slot = self.reals.get(&r.addr)?;
                slot.mac?;
                Some(maglev::Entry { id: slot.id, addr: r.addr, weight: r.weight })
            })
            .collect();
        let table = maglev::build(&entries, RING_SIZE);
        let written = self.dp.write_ring(vip_num, &table)?;
        tracing::debug!(service = %svc, reals = entries.len(), slots_written = written, "ring updated");
        if entries.is_empty() && !self.state.services[svc].is_empty() {
            tracing::warn!(service = %svc, "no real of this service can take flows; its packets go to the kernel");
        }
        Ok(())
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
        let changes = !matches!(req, Request::List | Request::Stats);
        let res = match req {
            Request::List => return self.list(),
            Request::Stats => return self.stats(),
            Request::AddService { service } => self.add_service(service).await,
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

    async fn add_service(&mut self, svc: ServiceKey) -> Result<String, DaemonError> {
        svc.validate()?;
        if self.state.services.contains_key(&svc) {
            return Err(model::ModelError::DuplicateService(svc).into());
        }
        self.install_service(svc).await?;
        Ok(format!("added service {svc}"))
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
        Ok(match mac {
            Some(m) => format!("added real {addr} ({}) to {svc} with weight {weight}", format_mac(&m)),
            None => format!(
                "added real {addr} to {svc} with weight {weight}; its MAC is not resolved yet (no ARP answer), so it takes no flows until it answers"
            ),
        })
    }

    fn edit_real(&mut self, svc: ServiceKey, addr: IpAddr, weight: u32) -> Result<String, DaemonError> {
        self.state.edit_real(svc, addr, weight)?;
        self.rebuild_ring(&svc)?;
        Ok(format!("real {addr} of {svc} now has weight {weight}"))
    }

    fn del_real(&mut self, svc: ServiceKey, addr: IpAddr) -> Result<String, DaemonError> {
        self.state.del_real(svc, addr)?;
        self.rebuild_ring(&svc)?;
        self.release_real(addr);
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

    fn active_flows(&self) -> HashMap<u32, u64> {
        let mut per_real: HashMap<u32, u64> = HashMap::new();
        let now = monotonic_ns();
        let horizon = ACTIVE_FLOW_SECS * 1_000_000_000;
        let _ = self.dp.for_each_flow(|_, e| {
            if now.saturating_sub(e.atime_ns) <= horizon {
                *per_real.entry(e.real_id).or_default() += 1;
            }
        });
        per_real
    }

    fn list(&self) -> Response {
        let flows = self.active_flows();
        let mut out = Vec::new();
        for (svc, reals) in &self.state.services {
            let vip_num = self.vip_nums[svc];
            let counters: CountersView = self.dp.service_counters(vip_num).unwrap_or_default().into();
            let mut rv = Vec::new();
            let mut svc_flows = 0;
            for r in reals.values() {
                let slot = self.reals.get(&r.addr);
                let mac = slot.and_then(|s| s.mac);
                let active = slot.map(|s| flows.get(&s.id).copied().unwrap_or(0)).unwrap_or(0);
                svc_flows += active;
                rv.push(RealView {
                    addr: r.addr,
                    weight: r.weight,
                    mac: mac.map(|m| format_mac(&m)),
                    state: if mac.is_none() {
                        "unresolved".into()
                    } else if r.weight == 0 {
                        "weight 0".into()
                    } else {
                        "up".into()
                    },
                    active_flows: active,
                    counters: slot.and_then(|s| self.dp.real_counters(s.id).ok()).unwrap_or_default().into(),
                });
            }
            out.push(ServiceView { vip: svc.vip, port: svc.port, proto: svc.proto, active_flows: svc_flows, counters, reals: rv });
        }
        let mut r = Response::ok(format!("{} service(s)", out.len()));
        r.list = Some(out);
        r
    }

    fn stats(&self) -> Response {
        let g = self.dp.global_counters().unwrap_or_default();
        let at = |i: u32| -> CountersView { g.get(i as usize).copied().unwrap_or_default().into() };
        let mut entries = 0u64;
        let _ = self.dp.for_each_flow(|_, _| entries += 1);
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
    pub async fn run(mut self, socket: &Path, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
        let listener = bind_socket(socket)?;
        let (tx, mut rx) = mpsc::channel::<Job>(64);
        let accept = tokio::spawn(accept_loop(listener, tx));
        let mut tick = tokio::time::interval(NEIGH_REFRESH);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some((req, reply)) = rx.recv() => {
                    let resp = self.handle(req).await;
                    let _ = reply.send(resp);
                }
                _ = tick.tick() => self.refresh_neighbours().await,
            }
        }
        accept.abort();
        let _ = std::fs::remove_file(socket);
        tracing::info!(iface = %self.iface.name, "shutting down: detaching XDP");
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
            let mut out = serde_json::to_string(&resp).unwrap_or_else(|_| "{\"ok\":false,\"message\":\"internal\"}".into());
            out.push('\n');
            let _ = wr.write_all(out.as_bytes()).await;
        });
    }
}

use tokio::io::AsyncReadExt as _;

/// CLOCK_MONOTONIC in ns: the clock bpf_ktime_get_ns reads.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
