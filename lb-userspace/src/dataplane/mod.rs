//! Owner of the XDP program and its maps: loads and attaches the object, writes services, rings and reals, reads
//! counters and the connection table. Only the daemon's control task holds one, so map writes never race; the
//! connection table is walked and purged through a second handle (`conn_table`, see conntable.rs) on a worker
//! thread, which the kernel serialises against everything else.
//!
//! With a pin directory (on a bpf filesystem) the maps and the XDP link are pinned there, so forwarding goes on
//! while no lbd runs, and the next lbd adopts them: it reuses the maps (connection table included) and swaps its
//! own program into the pinned link atomically.

use crate::conntable::{self, ConnTable};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use lb_common::{
    global, ConnEntry, Counters, FlowKey, LbConfig, RealDef, VipKey, VipMeta, DEFAULT_CONN_TABLE_SIZE,
    DEFAULT_MAX_SERVICES, RING_SIZE,
};
use std::collections::HashMap;

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
    #[error("attaching XDP to {iface} failed in native and in skb mode: native: {native}; skb: {skb}")]
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
        pins::ensure_bpffs(dir).map_err(perr)?;
        std::fs::create_dir_all(dir).map_err(|e| perr(format!("cannot create it: {e}")))?;
        let mut limits = limits;
        let adopted_maps = dir.join("CONN_TABLE").exists();
        if adopted_maps {
            // Sizes and layouts come from the pinned maps: a different layout means another lbd version wrote them.
            for (name, key, value) in pins::ADOPTED_LAYOUTS {
                let path = dir.join(name);
                let info = aya::maps::MapInfo::from_pin(&path)
                    .map_err(|e| perr(format!("cannot open pinned map {name}: {e}")))?;
                if info.key_size() as usize != key || info.value_size() as usize != value {
                    return Err(perr(format!(
                        "pinned map {name} has another layout (key {} value {} bytes, this lbd uses {key}/{value}); it was made by another lbd version: run `lbd --cleanup --pin-dir {}` first (drops established flows)",
                        info.key_size(),
                        info.value_size(),
                        dir.display()
                    )));
                }
                match name {
                    "CONN_TABLE" if info.max_entries() != limits.conn_table_size => {
                        tracing::warn!(
                            pinned = info.max_entries(),
                            asked = limits.conn_table_size,
                            "keeping the pinned connection table's size; `lbd --cleanup` first to change it"
                        );
                        limits.conn_table_size = info.max_entries();
                    }
                    "VIPS" if info.max_entries() != limits.max_services => {
                        tracing::warn!(
                            pinned = info.max_entries(),
                            asked = limits.max_services,
                            "keeping the pinned maps' service limit; `lbd --cleanup` first to change it"
                        );
                        limits.max_services = info.max_entries();
                    }
                    _ => {}
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

    /// Forgets what the ring cache says about a service, so the next write_ring writes every slot (after taking
    /// over maps whose contents this lbd did not write).
    pub fn forget_ring(&mut self, vip_num: u32) {
        self.rings.insert(vip_num, vec![u32::MAX; RING_SIZE as usize]);
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
        let mut cfg: Array<&mut MapData, LbConfig> =
            Array::try_from(map(&mut self.ebpf, "LB_CFG")?).map_err(map_err("LB_CFG"))?;
        cfg.set(0, LbConfig { src_mac: mac, _pad: [0; 2] }, 0).map_err(map_err("LB_CFG"))
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
        let old = self.rings.remove(&vip_num).unwrap_or_else(|| vec![0; RING_SIZE as usize]);
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

    pub fn real_counters(&self, id: u32) -> Result<Counters> {
        self.read_counters("REAL_STATS", id)
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

/// Loads the object and attaches only the pass-everything program to `iface`: for the peer of a veth on which a
/// native-mode XDP program transmits. Keep the returned value alive as long as the attachment should last.
pub fn attach_pass(iface: &str, wanted: AttachMode) -> Result<(Ebpf, AttachMode)> {
    let mut ebpf = EbpfLoader::new()
        // The pass program uses no maps; keep the unused ones small.
        .map_max_entries("CONN_TABLE", 16)
        .map_max_entries("CH_RINGS", RING_SIZE)
        .map_max_entries("VIPS", 1)
        .map_max_entries("SVC_STATS", 1)
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
