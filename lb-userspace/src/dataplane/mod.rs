//! Owner of the XDP program and its maps: loads and attaches the object, writes services, rings and reals, reads
//! counters and the connection table. Only the daemon's control task holds one, so map writes never race; the
//! connection table is walked and purged through a second handle (`conn_table`, see dataplane/conntable.rs) on a worker
//! thread, which the kernel serialises against everything else.
//!
//! With a pin directory (on a bpf filesystem) the maps and the XDP link are pinned there, so forwarding goes on
//! while no lbd runs, and the next lbd adopts them: it reuses the maps (connection table included) and swaps its
//! own program into the pinned link atomically.

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use conntable::ConnTable;
use lb_common::{
    global, ConnEntry, Counters, FlowKey, LbConfig, RealDef, ServiceCfg, VipKey, VipMeta, DEFAULT_CONN_TABLE_SIZE,
    DEFAULT_MAX_SERVICES, MAX_REALS, RING_SIZE,
};
use std::collections::HashMap;

pub mod conntable;
mod pins;
pub(crate) mod sys;

pub use pins::{cleanup, remove_pins, LINK_PIN, MAP_NAMES};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// The XDP object built by build.rs (aya-build), embedded so the binaries need no files beside them.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

/// Name of the balancing program in the object.
pub const LB_PROGRAM: &str = "lb";
/// Name of the pass-everything program (veth peers in native mode, benchmark floor).
pub const PASS_PROGRAM: &str = "xdp_pass";

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the XDP object failed: {0}")]
    Load(Box<aya::EbpfError>),
    #[error("XDP program {0}: {1}")]
    Program(&'static str, Box<ProgramError>),
    #[error("map {0}: {1}")]
    Map(&'static str, Box<aya::maps::MapError>),
    #[error("cannot count CPUs: {0}")]
    Cpus(std::io::Error),
    #[error("map {0} is missing from the XDP object")]
    MissingMap(&'static str),
    #[error("attaching XDP to {iface} failed in native and in skb mode: native: {native}; skb: {skb} (an interface holds one XDP program: `ip link show {iface}` or `bpftool net` shows one already attached)")]
    Attach { iface: String, native: Box<ProgramError>, skb: Box<ProgramError> },
    #[error("attaching XDP to {iface} in {mode} mode failed: {cause}")]
    AttachMode { iface: String, mode: &'static str, cause: Box<ProgramError> },
    #[error("connection table: {0}")]
    ConnTable(std::io::Error),
    #[error("pin directory {dir}: {message}")]
    Pin { dir: String, message: String },
}

// aya's errors are large; boxed here so every Result of this module stays small on the happy path.
impl From<aya::EbpfError> for DataplaneError {
    fn from(e: aya::EbpfError) -> Self {
        DataplaneError::Load(Box::new(e))
    }
}

type Result<T> = std::result::Result<T, DataplaneError>;

/// Sizes fixed when the maps are created.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Services the dataplane can hold (each costs RING_SIZE * 4 bytes of ring).
    pub max_services: u32,
    /// Connection-table entries (LRU).
    pub conn_table_size: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_services: DEFAULT_MAX_SERVICES, conn_table_size: DEFAULT_CONN_TABLE_SIZE }
    }
}

/// How the program was attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    Native,
    Skb,
}

impl std::str::FromStr for AttachMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "native" | "drv" => Ok(AttachMode::Native),
            "skb" | "generic" => Ok(AttachMode::Skb),
            _ => Err(format!("unknown XDP mode {s:?}: expected native or skb")),
        }
    }
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
        })
    }
}

pub struct Dataplane {
    ebpf: Ebpf,
    limits: Limits,
    /// Last ring written per service index, so an update writes only the slots that changed.
    rings: HashMap<u32, Vec<u32>>,
    /// Where maps and link are pinned, when they are.
    pin_dir: Option<PathBuf>,
    /// The maps were pinned by an earlier lbd and are reused as they are.
    adopted_maps: bool,
    /// The program was swapped into the link an earlier lbd pinned.
    adopted_link: bool,
    /// The link this lbd attached and pinned; dropping it only closes our fd.
    _pinned_link: Option<PinnedLink>,
    /// What LB_CFG holds (written whole).
    cfg: LbConfig,
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |e| DataplaneError::Map(name, Box::new(e))
}

impl Dataplane {
    /// Loads the object and its programs into the kernel (nothing is attached yet). RLIMIT_MEMLOCK is raised when
    /// allowed; kernels since 5.11 charge maps to the memory cgroup, so failing to raise it is not an error.
    pub fn load(limits: Limits) -> Result<Self> {
        Self::load_into(limits, None, false)
    }

    /// Like `load`, with the maps pinned in `dir` (on a bpf filesystem; /sys/fs/bpf is mounted when it is not).
    /// Maps an earlier lbd pinned there are reused with their contents and sizes.
    pub fn load_pinned(limits: Limits, dir: &Path) -> Result<Self> {
        let perr = |message: String| DataplaneError::Pin { dir: dir.display().to_string(), message };
        prepare_pin_dir(dir)?;
        let mut limits = limits;
        let adopted_maps = dir.join("CONN_TABLE").exists();
        if adopted_maps {
            limits = pinned_limits(dir, limits).map_err(perr)?;
            for spec in &pins::MAP_SPECS {
                let path = dir.join(spec.name);
                if !path.exists() {
                    continue; // a map an earlier version did not have: created fresh
                }
                let info = aya::maps::MapInfo::from_pin(&path)
                    .map_err(|e| perr(format!("cannot open pinned map {}: {e}", spec.name)))?;
                let Some(why) = pins::mismatch(spec, &info, &limits) else { continue };
                if spec.adopted {
                    return Err(perr(format!(
                        "{why}: it was made by another lbd version, whose flows this one cannot read; run `lbd --cleanup --pin-dir {}` first (drops established flows)",
                        dir.display()
                    )));
                }
                // Counters and settings lbd rewrites anyway: a fresh map replaces the pin (the running program keeps
                // the old one until our program replaces it in the link).
                tracing::warn!(map = spec.name, %why, "replacing a pinned map this lbd rewrites anyway");
                std::fs::remove_file(&path).map_err(|e| perr(format!("removing pinned map {}: {e}", spec.name)))?;
            }
            check_layout_version(dir).map_err(perr)?;
            // Per-(service, real) counter slots are this lbd's own numbering: they start afresh at each start.
            for name in ["DEST_IDX", "DEST_STATS"] {
                match std::fs::remove_file(dir.join(name)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(perr(format!("removing pinned map {name}: {e}"))),
                }
            }
        }
        Self::load_into(limits, Some(dir), adopted_maps)
    }

    /// Creates (or, with `pin_dir`, reuses the pinned) maps at `limits` and loads both programs.
    fn load_into(limits: Limits, pin_dir: Option<&Path>, adopted_maps: bool) -> Result<Self> {
        use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
        let _ = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY);
        let ring_entries = limits.max_services.saturating_mul(RING_SIZE);
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries("VIPS", limits.max_services)
            .map_max_entries("CH_RINGS", ring_entries)
            .map_max_entries("SVC_STATS", limits.max_services)
            .map_max_entries("SVC_CFG", limits.max_services)
            .map_max_entries("DEST_IDX", pins::Entries::Dests.count(&limits))
            .map_max_entries("CONN_TABLE", limits.conn_table_size);
        if let Some(dir) = pin_dir {
            for name in MAP_NAMES {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader.load(EBPF_OBJECT)?;
        for name in [LB_PROGRAM, PASS_PROGRAM] {
            let prog: &mut Xdp = program(&mut ebpf, name)?;
            prog.load().map_err(|e| DataplaneError::Program(static_name(name), Box::new(e)))?;
        }
        Ok(Dataplane {
            ebpf,
            limits,
            rings: HashMap::new(),
            pin_dir: pin_dir.map(Path::to_path_buf),
            adopted_maps,
            adopted_link: false,
            _pinned_link: None,
            cfg: LbConfig { layout: lb_common::LAYOUT_VERSION, ..LbConfig::default() },
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// True when the maps (and their flows) were taken over from an earlier lbd.
    pub fn adopted_maps(&self) -> bool {
        self.adopted_maps
    }

    /// True when the program was swapped into a link an earlier lbd pinned (forwarding never stopped).
    pub fn adopted_link(&self) -> bool {
        self.adopted_link
    }

    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    /// Attaches the balancing program. With `Native`, a driver that cannot run XDP falls back to skb mode
    /// (logged by the caller from the returned mode); with `Skb`, only skb mode is tried. With a pin directory,
    /// a live pinned link on the same interface is taken over (the program is replaced atomically, the attach
    /// mode stays what it was), and a new link is pinned.
    pub fn attach(&mut self, iface: &str, wanted: AttachMode) -> Result<AttachMode> {
        let Some(dir) = self.pin_dir.clone() else {
            return attach_program(&mut self.ebpf, LB_PROGRAM, iface, wanted).map(|(mode, _)| mode);
        };
        let perr = |message: String| DataplaneError::Pin { dir: dir.display().to_string(), message };
        let link_path = dir.join(LINK_PIN);
        if link_path.exists() {
            let ifindex = pins::ifindex(iface);
            match sys::pinned_link_ifindex(&link_path) {
                Ok(idx) if idx != 0 && Some(idx) == ifindex => {
                    let link =
                        PinnedLink::from_pin(&link_path).map_err(|e| perr(format!("opening the pinned link: {e}")))?;
                    let xdp_link = XdpLink::try_from(FdLink::from(link))
                        .map_err(|e| perr(format!("the pinned link is not an XDP link: {e}")))?;
                    let prog: &mut Xdp = program(&mut self.ebpf, LB_PROGRAM)?;
                    prog.attach_to_link(xdp_link).map_err(|e| DataplaneError::Program(LB_PROGRAM, Box::new(e)))?;
                    self.adopted_link = true;
                    tracing::info!(%iface, link = %link_path.display(), "took over the pinned XDP link: forwarding never stopped");
                    return Ok(wanted);
                }
                Ok(idx) => {
                    tracing::warn!(link = %link_path.display(), link_ifindex = idx, ?ifindex, "the pinned XDP link belongs to no live interface or to another one; replacing it");
                    let _ = std::fs::remove_file(&link_path);
                }
                Err(e) => {
                    tracing::warn!(link = %link_path.display(), error = %e, "unreadable pinned link; replacing it");
                    let _ = std::fs::remove_file(&link_path);
                }
            }
        }
        let (mode, id) = attach_program(&mut self.ebpf, LB_PROGRAM, iface, wanted)?;
        let prog: &mut Xdp = program(&mut self.ebpf, LB_PROGRAM)?;
        let link = prog.take_link(id).map_err(|e| DataplaneError::Program(LB_PROGRAM, Box::new(e)))?;
        let fd_link = FdLink::try_from(link).map_err(|e| {
            perr(format!("XDP was attached through netlink (no bpf_link support), so it cannot be pinned: {e}; run lbd with --no-pin"))
        })?;
        let pinned = fd_link.pin(&link_path).map_err(|e| perr(format!("pinning the XDP link: {e}")))?;
        self._pinned_link = Some(pinned);
        Ok(mode)
    }

    /// Removes the pins (link and maps) so the program detaches when this dataplane is dropped.
    pub fn unpin(&mut self) -> std::io::Result<()> {
        match &self.pin_dir {
            Some(dir) => remove_pins(dir),
            None => Ok(()),
        }
    }

    /// Reads a service's ring from the map (a ring an earlier lbd wrote), so the ring cache is exact and the next
    /// write only touches the slots that change. Returns the ring.
    pub fn read_ring(&mut self, vip_num: u32) -> Result<Vec<u32>> {
        let m = self.ebpf.map("CH_RINGS").ok_or(DataplaneError::MissingMap("CH_RINGS"))?;
        let rings: Array<&MapData, u32> = Array::try_from(m).map_err(map_err("CH_RINGS"))?;
        let base = vip_num * RING_SIZE;
        let ring = (0..RING_SIZE).map(|i| rings.get(&(base + i), 0)).collect::<std::result::Result<Vec<u32>, _>>();
        let ring = ring.map_err(map_err("CH_RINGS"))?;
        self.rings.insert(vip_num, ring.clone());
        Ok(ring)
    }

    /// Services in the VIPS map (to take over a pinned dataplane).
    pub fn read_services(&self) -> Result<Vec<(VipKey, VipMeta)>> {
        let m = self.ebpf.map("VIPS").ok_or(DataplaneError::MissingMap("VIPS"))?;
        let vips: BpfHashMap<&MapData, VipKey, VipMeta> = BpfHashMap::try_from(m).map_err(map_err("VIPS"))?;
        Ok(vips.iter().filter_map(|r| r.ok()).collect())
    }

    /// Used slots of the REALS map (to take over a pinned dataplane).
    pub fn read_reals(&self) -> Result<Vec<(u32, RealDef)>> {
        let m = self.ebpf.map("REALS").ok_or(DataplaneError::MissingMap("REALS"))?;
        let reals: Array<&MapData, RealDef> = Array::try_from(m).map_err(map_err("REALS"))?;
        Ok((1..reals.len())
            .filter_map(|i| reals.get(&i, 0).ok().map(|d| (i, d)))
            .filter(|(_, d)| d.addr != [0; 16])
            .collect())
    }

    /// Sets the MAC written as the source of every forwarded frame.
    pub fn set_src_mac(&mut self, mac: [u8; 6]) -> Result<()> {
        self.cfg.src_mac = mac;
        self.write_cfg()
    }

    /// Turns the reports of stored flows on NEW_FLOWS (flow-state sync) on or off.
    pub fn set_sync(&mut self, on: bool) -> Result<()> {
        self.cfg.flags =
            if on { self.cfg.flags | lb_common::LB_F_SYNC } else { self.cfg.flags & !lb_common::LB_F_SYNC };
        self.write_cfg()
    }

    /// The NEW_FLOWS ring buffer, taken out for the sync task (once).
    pub fn take_new_flows(&mut self) -> Result<aya::maps::RingBuf<MapData>> {
        let m = self.ebpf.take_map("NEW_FLOWS").ok_or(DataplaneError::MissingMap("NEW_FLOWS"))?;
        aya::maps::RingBuf::try_from(m).map_err(map_err("NEW_FLOWS"))
    }

    /// Sets the flow-hash seed (the same on every node of a cluster).
    pub fn set_hash_seed(&mut self, seed: u32) -> Result<()> {
        self.cfg.hash_seed = seed;
        self.write_cfg()
    }

    fn write_cfg(&mut self) -> Result<()> {
        let mut cfg: Array<&mut MapData, LbConfig> =
            Array::try_from(map(&mut self.ebpf, "LB_CFG")?).map_err(map_err("LB_CFG"))?;
        cfg.set(0, self.cfg, 0).map_err(map_err("LB_CFG"))
    }

    pub fn set_service(&mut self, key: VipKey, vip_num: u32) -> Result<()> {
        let mut vips: BpfHashMap<&mut MapData, VipKey, VipMeta> =
            BpfHashMap::try_from(map(&mut self.ebpf, "VIPS")?).map_err(map_err("VIPS"))?;
        vips.insert(key, VipMeta { vip_num, flags: 0 }, 0).map_err(map_err("VIPS"))
    }

    /// Removes a service: first from VIPS so no packet reads its ring, then its ring is cleared.
    pub fn del_service(&mut self, key: VipKey, vip_num: u32) -> Result<()> {
        {
            let mut vips: BpfHashMap<&mut MapData, VipKey, VipMeta> =
                BpfHashMap::try_from(map(&mut self.ebpf, "VIPS")?).map_err(map_err("VIPS"))?;
            match vips.remove(&key) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(DataplaneError::Map("VIPS", Box::new(e))),
            }
        }
        self.write_ring(vip_num, &vec![0; RING_SIZE as usize])?;
        self.rings.remove(&vip_num);
        // Fresh counters for whichever service reuses this index.
        let mut stats: PerCpuArray<&mut MapData, Counters> =
            PerCpuArray::try_from(map(&mut self.ebpf, "SVC_STATS")?).map_err(map_err("SVC_STATS"))?;
        let zeros =
            aya::maps::PerCpuValues::try_from(vec![Counters::default(); nr_cpus()]).map_err(DataplaneError::Cpus)?;
        stats.set(vip_num, zeros, 0).map_err(map_err("SVC_STATS"))
    }

    /// Writes a service's Maglev table, touching only slots that differ from what was written before.
    /// Returns how many slots were written.
    pub fn write_ring(&mut self, vip_num: u32, table: &[u32]) -> Result<usize> {
        // A ring this lbd has neither written nor read may hold anything when the maps were taken over (a slot an
        // earlier lbd used and freed): every slot is written then.
        let unknown = if self.adopted_maps { u32::MAX } else { 0 };
        let old = self.rings.remove(&vip_num).unwrap_or_else(|| vec![unknown; RING_SIZE as usize]);
        let mut rings: Array<&mut MapData, u32> =
            Array::try_from(map(&mut self.ebpf, "CH_RINGS")?).map_err(map_err("CH_RINGS"))?;
        let base = vip_num * RING_SIZE;
        let mut written = 0;
        for (slot, id) in crate::maglev::diff(&old, table) {
            if let Err(e) = rings.set(base + slot, id, 0) {
                // Keep the cache truthful about what the map holds: forget it so the next write is complete.
                return Err(DataplaneError::Map("CH_RINGS", Box::new(e)));
            }
            written += 1;
        }
        self.rings.insert(vip_num, table.to_vec());
        Ok(written)
    }

    /// Sets a service's options (persistence).
    pub fn set_service_cfg(&mut self, vip_num: u32, cfg: ServiceCfg) -> Result<()> {
        let mut m: Array<&mut MapData, ServiceCfg> =
            Array::try_from(map(&mut self.ebpf, "SVC_CFG")?).map_err(map_err("SVC_CFG"))?;
        m.set(vip_num, cfg, 0).map_err(map_err("SVC_CFG"))
    }

    /// Gives the pair (service `vip_num`, real `real_id`) the counters at `dest` (0: none), zeroed first.
    pub fn set_dest(&mut self, vip_num: u32, real_id: u32, dest: u32) -> Result<()> {
        if dest != 0 {
            let mut stats: PerCpuArray<&mut MapData, Counters> =
                PerCpuArray::try_from(map(&mut self.ebpf, "DEST_STATS")?).map_err(map_err("DEST_STATS"))?;
            let zeros = aya::maps::PerCpuValues::try_from(vec![Counters::default(); nr_cpus()])
                .map_err(DataplaneError::Cpus)?;
            stats.set(dest, zeros, 0).map_err(map_err("DEST_STATS"))?;
        }
        let mut idx: Array<&mut MapData, u32> =
            Array::try_from(map(&mut self.ebpf, "DEST_IDX")?).map_err(map_err("DEST_IDX"))?;
        idx.set(vip_num * MAX_REALS + real_id, dest, 0).map_err(map_err("DEST_IDX"))
    }

    pub fn set_real(&mut self, id: u32, def: RealDef) -> Result<()> {
        let mut reals: Array<&mut MapData, RealDef> =
            Array::try_from(map(&mut self.ebpf, "REALS")?).map_err(map_err("REALS"))?;
        reals.set(id, def, 0).map_err(map_err("REALS"))
    }

    fn read_counters(&self, name: &'static str, index: u32) -> Result<Counters> {
        let m = self.ebpf.map(name).ok_or(DataplaneError::MissingMap(name))?;
        let arr: PerCpuArray<&MapData, Counters> = PerCpuArray::try_from(m).map_err(map_err(name))?;
        let values = arr.get(&index, 0).map_err(map_err(name))?;
        let mut total = Counters::default();
        for v in values.iter() {
            total.add(v);
        }
        Ok(total)
    }

    pub fn service_counters(&self, vip_num: u32) -> Result<Counters> {
        self.read_counters("SVC_STATS", vip_num)
    }

    /// Counters of one (service, real) pair, by the DEST_STATS index `set_dest` gave it.
    pub fn dest_counters(&self, dest: u32) -> Result<Counters> {
        self.read_counters("DEST_STATS", dest)
    }

    /// GLOBAL_STATS, by lb_common::global index.
    pub fn global_counters(&self) -> Result<Vec<Counters>> {
        (0..global::COUNT).map(|i| self.read_counters("GLOBAL_STATS", i)).collect()
    }

    /// A handle of its own on the connection table (a duplicated fd), for walks and purges on another thread.
    pub fn conn_table(&self) -> Result<ConnTable> {
        let m = self.ebpf.map("CONN_TABLE").ok_or(DataplaneError::MissingMap("CONN_TABLE"))?;
        let data = match m {
            aya::maps::Map::LruHashMap(d) | aya::maps::Map::HashMap(d) => d,
            _ => {
                return Err(DataplaneError::Map(
                    "CONN_TABLE",
                    Box::new(aya::maps::MapError::InvalidMapType { map_type: 0 }),
                ))
            }
        };
        let fd = data.fd().as_fd().try_clone_to_owned().map_err(DataplaneError::ConnTable)?;
        Ok(ConnTable::new(fd))
    }

    /// Walks the connection table once (in batches where the kernel allows); `f` sees every flow. This blocks
    /// for as long as the walk takes: the daemon walks on its connection-table worker instead.
    pub fn for_each_flow(&self, mut f: impl FnMut(&FlowKey, &ConnEntry)) -> Result<()> {
        self.conn_table()?
            .walk(conntable::Method::Auto, |keys, values| keys.iter().zip(values).for_each(|(k, v)| f(k, v)))
            .map_err(DataplaneError::ConnTable)
    }

    /// Runs a program once over `data` through BPF_PROG_TEST_RUN: returns (action, output frame, mean duration).
    pub fn test_run(&self, program: &str, data: &[u8], repeat: u32) -> Result<(u32, Vec<u8>, std::time::Duration)> {
        let prog: &Xdp = self
            .ebpf
            .program(program)
            .and_then(|p| p.try_into().ok())
            .ok_or(DataplaneError::Program(static_name(program), Box::new(ProgramError::NotLoaded)))?;
        let mut out = vec![0u8; data.len() + 256];
        let res = prog
            .test_run(TestRunOptions { data_in: Some(data), data_out: Some(&mut out), repeat, ..TestRunOptions::new() })
            .map_err(|e| DataplaneError::Program(static_name(program), Box::new(e)))?;
        out.truncate(res.data_size_out as usize);
        Ok((res.return_value, out, res.duration))
    }
}

/// Makes sure the pin directory exists on a bpf filesystem (mounting /sys/fs/bpf when needed). Opens no map.
pub fn prepare_pin_dir(dir: &Path) -> Result<()> {
    let perr = |message: String| DataplaneError::Pin { dir: dir.display().to_string(), message };
    pins::ensure_bpffs(dir).map_err(perr)?;
    std::fs::create_dir_all(dir).map_err(|e| perr(format!("cannot create it: {e}")))
}

/// The limits a pinned dataplane was made with: the connection table's and the service limit are fixed when the
/// maps are created, so a takeover keeps them (and says so when they differ from what was asked).
fn pinned_limits(dir: &Path, asked: Limits) -> std::result::Result<Limits, String> {
    let entries = |name: &str| {
        aya::maps::MapInfo::from_pin(dir.join(name))
            .map(|i| i.max_entries())
            .map_err(|e| format!("cannot open pinned map {name}: {e}"))
    };
    let mut limits = asked;
    let (conn, services) = (entries("CONN_TABLE")?, entries("VIPS")?);
    if conn != asked.conn_table_size {
        tracing::warn!(
            pinned = conn,
            asked = asked.conn_table_size,
            "keeping the pinned connection table's size; `lbd --cleanup` first to change it"
        );
        limits.conn_table_size = conn;
    }
    if services != asked.max_services {
        tracing::warn!(
            pinned = services,
            asked = asked.max_services,
            "keeping the pinned maps' service limit; `lbd --cleanup` first to change it"
        );
        limits.max_services = services;
    }
    Ok(limits)
}

/// Refuses maps whose contents a newer lbd wrote (the layout version in LB_CFG): their meaning may differ.
fn check_layout_version(dir: &Path) -> std::result::Result<(), String> {
    let path = dir.join("LB_CFG");
    if !path.exists() {
        return Ok(());
    }
    let data = MapData::from_pin(&path).map_err(|e| format!("cannot open pinned map LB_CFG: {e}"))?;
    let map = aya::maps::Map::Array(data);
    let cfg: Array<&MapData, LbConfig> = Array::try_from(&map).map_err(|e| format!("pinned map LB_CFG: {e}"))?;
    let found = cfg.get(&0, 0).map_err(|e| format!("reading pinned map LB_CFG: {e}"))?.layout;
    if found > lb_common::LAYOUT_VERSION {
        return Err(format!(
            "the pinned maps were written by a newer lbd (layout version {found}, this lbd knows up to {}); run that version, or `lbd --cleanup --pin-dir {}` first (drops established flows)",
            lb_common::LAYOUT_VERSION,
            dir.display()
        ));
    }
    Ok(())
}

/// Loads the object and attaches only the pass-everything program to `iface`: for the peer of a veth on which a
/// native-mode XDP program transmits. Keep the returned value alive as long as the attachment should last.
pub fn attach_pass(iface: &str, wanted: AttachMode) -> Result<(Ebpf, AttachMode)> {
    let mut ebpf = EbpfLoader::new()
        // The pass program uses no maps; keep the unused ones small.
        .map_max_entries("CONN_TABLE", 16)
        .map_max_entries("CH_RINGS", RING_SIZE)
        .map_max_entries("VIPS", 1)
        .map_max_entries("SVC_STATS", 1)
        .map_max_entries("SVC_CFG", 1)
        .map_max_entries("DEST_IDX", 1)
        .map_max_entries("NEW_FLOWS", 4096)
        .load(EBPF_OBJECT)?;
    {
        let prog: &mut Xdp = program(&mut ebpf, PASS_PROGRAM)?;
        prog.load().map_err(|e| DataplaneError::Program(PASS_PROGRAM, Box::new(e)))?;
    }
    let (mode, _) = attach_program(&mut ebpf, PASS_PROGRAM, iface, wanted)?;
    Ok((ebpf, mode))
}

fn attach_program(
    ebpf: &mut Ebpf,
    name: &str,
    iface: &str,
    wanted: AttachMode,
) -> Result<(AttachMode, aya::programs::xdp::XdpLinkId)> {
    let prog: &mut Xdp = program(ebpf, name)?;
    match wanted {
        AttachMode::Skb => prog
            .attach(iface, XdpMode::Skb)
            .map(|id| (AttachMode::Skb, id))
            .map_err(|cause| DataplaneError::AttachMode { iface: iface.into(), mode: "skb", cause: Box::new(cause) }),
        AttachMode::Native => match prog.attach(iface, XdpMode::Driver) {
            Ok(id) => Ok((AttachMode::Native, id)),
            Err(native) => match prog.attach(iface, XdpMode::Skb) {
                Ok(id) => {
                    tracing::warn!(%iface, error = %native, "native XDP is not available; fell back to skb (generic) mode, which is slower");
                    Ok((AttachMode::Skb, id))
                }
                Err(skb) => {
                    Err(DataplaneError::Attach { iface: iface.into(), native: Box::new(native), skb: Box::new(skb) })
                }
            },
        },
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or(DataplaneError::Program(static_name(name), Box::new(ProgramError::NotLoaded)))
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name).ok_or(DataplaneError::MissingMap(name))
}

fn static_name(name: &str) -> &'static str {
    match name {
        LB_PROGRAM => LB_PROGRAM,
        PASS_PROGRAM => PASS_PROGRAM,
        _ => "unknown",
    }
}

fn nr_cpus() -> usize {
    aya::util::nr_cpus().unwrap_or(1)
}
