//! Owner of the XDP program and its maps: loads and attaches the object, writes services, rings and reals, reads
//! counters and the connection table. Only the daemon's control task holds one, so map writes never race.

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use lb_common::{
    global, ConnEntry, Counters, FlowKey, LbConfig, RealDef, VipKey, VipMeta, DEFAULT_CONN_TABLE_SIZE,
    DEFAULT_MAX_SERVICES, MAX_REALS, RING_SIZE,
};
use std::collections::HashMap;

/// The XDP object built by build.rs (aya-build), embedded so the binaries need no files beside them.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

/// Name of the balancing program in the object.
pub const LB_PROGRAM: &str = "lb";
/// Name of the pass-everything program (veth peers in native mode, benchmark floor).
pub const PASS_PROGRAM: &str = "xdp_pass";

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the XDP object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("XDP program {0}: {1}")]
    Program(&'static str, ProgramError),
    #[error("map {0}: {1}")]
    Map(&'static str, aya::maps::MapError),
    #[error("cannot count CPUs: {0}")]
    Cpus(std::io::Error),
    #[error("map {0} is missing from the XDP object")]
    MissingMap(&'static str),
    #[error("attaching XDP to {iface} failed in native and in skb mode: native: {native}; skb: {skb}")]
    Attach { iface: String, native: ProgramError, skb: ProgramError },
    #[error("attaching XDP to {iface} in {mode} mode failed: {cause}")]
    AttachMode { iface: String, mode: &'static str, cause: ProgramError },
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
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |e| DataplaneError::Map(name, e)
}

impl Dataplane {
    /// Loads the object and its programs into the kernel (nothing is attached yet). RLIMIT_MEMLOCK is raised when
    /// allowed; kernels since 5.11 charge maps to the memory cgroup, so failing to raise it is not an error.
    pub fn load(limits: Limits) -> Result<Self> {
        let rl = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
        // SAFETY: plain syscall with a valid pointer.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rl) };
        let ring_entries = limits.max_services.saturating_mul(RING_SIZE);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("VIPS", limits.max_services)
            .map_max_entries("CH_RINGS", ring_entries)
            .map_max_entries("SVC_STATS", limits.max_services)
            .map_max_entries("CONN_TABLE", limits.conn_table_size)
            .load(EBPF_OBJECT)?;
        for name in [LB_PROGRAM, PASS_PROGRAM] {
            let prog: &mut Xdp = program(&mut ebpf, name)?;
            prog.load().map_err(|e| DataplaneError::Program(static_name(name), e))?;
        }
        Ok(Dataplane { ebpf, limits, rings: HashMap::new() })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Attaches the balancing program. With `Native`, a driver that cannot run XDP falls back to skb mode
    /// (logged by the caller from the returned mode); with `Skb`, only skb mode is tried.
    pub fn attach(&mut self, iface: &str, wanted: AttachMode) -> Result<AttachMode> {
        attach_program(&mut self.ebpf, LB_PROGRAM, iface, wanted)
    }

    /// Sets the MAC written as the source of every forwarded frame.
    pub fn set_src_mac(&mut self, mac: [u8; 6]) -> Result<()> {
        let mut cfg: Array<&mut MapData, LbConfig> = Array::try_from(map(&mut self.ebpf, "LB_CFG")?)
            .map_err(map_err("LB_CFG"))?;
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
                Err(e) => return Err(DataplaneError::Map("VIPS", e)),
            }
        }
        self.write_ring(vip_num, &vec![0; RING_SIZE as usize])?;
        self.rings.remove(&vip_num);
        // Fresh counters for whichever service reuses this index.
        let mut stats: PerCpuArray<&mut MapData, Counters> =
            PerCpuArray::try_from(map(&mut self.ebpf, "SVC_STATS")?).map_err(map_err("SVC_STATS"))?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![Counters::default(); nr_cpus()])
            .map_err(DataplaneError::Cpus)?;
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
                return Err(DataplaneError::Map("CH_RINGS", e));
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

    /// Walks the connection table once; `f` sees every flow.
    pub fn for_each_flow(&self, mut f: impl FnMut(&FlowKey, &ConnEntry)) -> Result<()> {
        let m = self.ebpf.map("CONN_TABLE").ok_or(DataplaneError::MissingMap("CONN_TABLE"))?;
        let table: BpfHashMap<&MapData, FlowKey, ConnEntry> =
            BpfHashMap::try_from(m).map_err(map_err("CONN_TABLE"))?;
        for item in table.iter() {
            // An entry evicted while we walk is simply skipped.
            if let Ok((k, v)) = item {
                f(&k, &v);
            }
        }
        Ok(())
    }

    /// Removes the flows `pred` selects; returns how many.
    pub fn purge_flows(&mut self, pred: impl Fn(&FlowKey, &ConnEntry) -> bool) -> Result<usize> {
        let mut doomed = Vec::new();
        self.for_each_flow(|k, v| {
            if pred(k, v) {
                doomed.push(*k);
            }
        })?;
        let m = map(&mut self.ebpf, "CONN_TABLE")?;
        let mut table: BpfHashMap<&mut MapData, FlowKey, ConnEntry> =
            BpfHashMap::try_from(m).map_err(map_err("CONN_TABLE"))?;
        let mut n = 0;
        for k in doomed {
            if table.remove(&k).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Runs a program once over `data` through BPF_PROG_TEST_RUN: returns (action, output frame, mean duration).
    pub fn test_run(&self, program: &str, data: &[u8], repeat: u32) -> Result<(u32, Vec<u8>, std::time::Duration)> {
        let prog: &Xdp = self
            .ebpf
            .program(program)
            .and_then(|p| p.try_into().ok())
            .ok_or(DataplaneError::Program(static_name(program), ProgramError::NotLoaded))?;
        let mut out = vec![0u8; data.len() + 256];
        let res = prog
            .test_run(TestRunOptions {
                data_in: Some(data),
                data_out: Some(&mut out),
                repeat,
                ..TestRunOptions::new()
            })
            .map_err(|e| DataplaneError::Program(static_name(program), e))?;
        out.truncate(res.data_size_out as usize);
        Ok((res.return_value, out, res.duration))
    }

    /// Largest real id the REALS map holds.
    pub fn max_reals(&self) -> u32 {
        MAX_REALS
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
        prog.load().map_err(|e| DataplaneError::Program(PASS_PROGRAM, e))?;
    }
    let mode = attach_program(&mut ebpf, PASS_PROGRAM, iface, wanted)?;
    Ok((ebpf, mode))
}

fn attach_program(ebpf: &mut Ebpf, name: &str, iface: &str, wanted: AttachMode) -> Result<AttachMode> {
    let prog: &mut Xdp = program(ebpf, name)?;
    match wanted {
        AttachMode::Skb => prog
            .attach(iface, XdpMode::Skb)
            .map(|_| AttachMode::Skb)
            .map_err(|cause| DataplaneError::AttachMode { iface: iface.into(), mode: "skb", cause }),
        AttachMode::Native => match prog.attach(iface, XdpMode::Driver) {
            Ok(_) => Ok(AttachMode::Native),
            Err(native) => match prog.attach(iface, XdpMode::Skb) {
                Ok(_) => {
                    tracing::warn!(%iface, error = %native, "native XDP is not available; fell back to skb (generic) mode, which is slower");
                    Ok(AttachMode::Skb)
                }
                Err(skb) => Err(DataplaneError::Attach { iface: iface.into(), native, skb }),
            },
        },
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or(DataplaneError::Program(static_name(name), ProgramError::NotLoaded))
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
