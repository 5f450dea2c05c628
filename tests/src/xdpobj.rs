//! Any build of the XDP object (today's, an older revision's, a file) loaded with aya directly: maps written by name
//! with today's lb_common values, tolerating maps one build lacks, and programs run through BPF_PROG_TEST_RUN. The
//! XDP comparison bench and the malformed-packet campaign drive both the current program and a baseline with it.
use anyhow::{bail, Context, Result};
use aya::maps::{Map, MapData};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader, Pod};
use lb_common::{LbConfig, RealDef, VipKey, VipMeta, MAX_REALS, RING_SIZE};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// Name of an XDP action, for reports.
pub fn action_name(a: u32) -> &'static str {
    match a {
        XDP_ABORTED => "ABORTED",
        XDP_DROP => "DROP",
        XDP_PASS => "PASS",
        XDP_TX => "TX",
        XDP_REDIRECT => "REDIRECT",
        _ => "?",
    }
}

/// Services the loaded maps hold: a bench needs a handful, and small rings load fast.
pub const MAX_SERVICES: u32 = 8;

pub struct XdpObject {
    ebpf: Ebpf,
    /// What the object is (for messages): "current" or the baseline's file.
    pub label: String,
}

impl XdpObject {
    /// Loads `bytes` (an ELF object) with maps sized for a bench (`conn_table` flows) and loads every XDP program in
    /// it. Map sizes are set only for maps the object has; RLIMIT_MEMLOCK failures are ignored (kernels since 5.11
    /// charge maps to the memory cgroup).
    pub fn load(bytes: &[u8], label: &str, conn_table: u32) -> Result<Self> {
        let _ = nix_free_memlock();
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries("VIPS", MAX_SERVICES)
            .map_max_entries("CH_RINGS", MAX_SERVICES * RING_SIZE)
            .map_max_entries("SVC_STATS", MAX_SERVICES)
            .map_max_entries("SVC_CFG", MAX_SERVICES)
            .map_max_entries("DEST_IDX", MAX_SERVICES * MAX_REALS)
            .map_max_entries("CONN_TABLE", conn_table);
        let mut ebpf = loader.load(bytes).with_context(|| format!("loading the XDP object {label} (as root?)"))?;
        let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
        for name in names {
            if let Some(p) = ebpf.program_mut(&name) {
                if let Ok(xdp) = <&mut Xdp>::try_from(p) {
                    xdp.load().with_context(|| format!("{label}: verifier refused program {name}"))?;
                }
            }
        }
        Ok(XdpObject { ebpf, label: label.to_string() })
    }

    pub fn has_program(&self, name: &str) -> bool {
        self.ebpf.program(name).is_some()
    }

    pub fn has_map(&self, name: &str) -> bool {
        self.ebpf.map(name).is_some()
    }

    fn map_data(&self, name: &str) -> Option<&MapData> {
        match self.ebpf.map(name)? {
            Map::HashMap(d) | Map::LruHashMap(d) | Map::Array(d) | Map::PerCpuArray(d) | Map::PerCpuHashMap(d) => {
                Some(d)
            }
            _ => None,
        }
    }

    /// Writes `value` at `key` in map `name` as raw bytes: cut or zero-padded to the map's value size (so a build
    /// whose value has fewer trailing fields takes the prefix it knows). Returns false when the object has no such map.
    pub fn update<K: Pod, V: Pod>(&self, name: &str, key: &K, value: &V) -> Result<bool> {
        let Some(data) = self.map_data(name) else { return Ok(false) };
        let info = data.info().with_context(|| format!("{}: map {name} info", self.label))?;
        if info.key_size() as usize != std::mem::size_of::<K>() {
            bail!(
                "{}: map {name} has {}-byte keys, expected {}",
                self.label,
                info.key_size(),
                std::mem::size_of::<K>()
            );
        }
        // SAFETY: K and V are Pod (plain bytes, no padding the kernel could misread).
        let kb = unsafe { std::slice::from_raw_parts(key as *const K as *const u8, std::mem::size_of::<K>()) };
        let vb = unsafe { std::slice::from_raw_parts(value as *const V as *const u8, std::mem::size_of::<V>()) };
        let mut v = vec![0u8; info.value_size() as usize];
        let n = v.len().min(vb.len());
        v[..n].copy_from_slice(&vb[..n]);
        map_update(data.fd().as_fd().as_raw_fd(), kb, &v)
            .with_context(|| format!("{}: updating map {name}", self.label))?;
        Ok(true)
    }

    /// The settings every build reads: the source MAC (LB_CFG, written whole with today's layout; older builds
    /// take its prefix).
    pub fn set_cfg(&self, cfg: LbConfig) -> Result<()> {
        if !self.update("LB_CFG", &0u32, &cfg)? {
            bail!("{}: no LB_CFG map", self.label);
        }
        Ok(())
    }

    pub fn set_real(&self, id: u32, def: RealDef) -> Result<()> {
        if !self.update("REALS", &id, &def)? {
            bail!("{}: no REALS map", self.label);
        }
        Ok(())
    }

    /// A service at index `vip_num` with Maglev table `ring` (RING_SIZE real ids).
    pub fn set_service(&self, key: VipKey, vip_num: u32, ring: &[u32]) -> Result<()> {
        assert_eq!(ring.len(), RING_SIZE as usize);
        for (slot, id) in ring.iter().enumerate() {
            self.update("CH_RINGS", &(vip_num * RING_SIZE + slot as u32), id)?;
        }
        if !self.update("VIPS", &key, &VipMeta { vip_num, flags: 0 })? {
            bail!("{}: no VIPS map", self.label);
        }
        Ok(())
    }

    /// A per-CPU Counters array's entry `index`, summed over CPUs (None when the object has no such map).
    pub fn counters(&self, name: &str, index: u32) -> Result<Option<lb_common::Counters>> {
        let Some(m) = self.ebpf.map(name) else { return Ok(None) };
        let arr: aya::maps::PerCpuArray<&MapData, lb_common::Counters> =
            aya::maps::PerCpuArray::try_from(m).with_context(|| format!("{}: map {name}", self.label))?;
        let mut total = lb_common::Counters::default();
        for v in arr.get(&index, 0).with_context(|| format!("{}: reading {name}[{index}]", self.label))?.iter() {
            total.add(v);
        }
        Ok(Some(total))
    }

    /// Runs program `prog` over `data` `repeat` times: (action, output frame, mean duration per run).
    pub fn run(&self, prog: &str, data: &[u8], repeat: u32) -> Result<(u32, Vec<u8>, Duration)> {
        let p: &Xdp = self
            .ebpf
            .program(prog)
            .and_then(|p| p.try_into().ok())
            .with_context(|| format!("{}: no XDP program {prog}", self.label))?;
        let mut out = vec![0u8; data.len() + 256];
        let res = p
            .test_run(TestRunOptions { data_in: Some(data), data_out: Some(&mut out), repeat, ..TestRunOptions::new() })
            .with_context(|| format!("{}: BPF_PROG_TEST_RUN of {prog}", self.label))?;
        out.truncate(res.data_size_out as usize);
        Ok((res.return_value, out, res.duration))
    }

    /// Runs `prog` once over `data` and returns only the action, or the kernel's errno when it refuses the frame
    /// (e.g. EINVAL for a frame shorter than an Ethernet header): the fuzz campaign counts both.
    pub fn run_once(&self, prog: &str, data: &[u8], out: &mut [u8]) -> std::result::Result<(u32, usize), i32> {
        let Some(p) = self.ebpf.program(prog).and_then(|p| <&Xdp>::try_from(p).ok()) else { return Err(-1) };
        match p.test_run(TestRunOptions {
            data_in: Some(data),
            data_out: Some(out),
            repeat: 1,
            ..TestRunOptions::new()
        }) {
            Ok(res) => Ok((res.return_value, res.data_size_out as usize)),
            Err(e) => Err(errno_of(&e)),
        }
    }
}

fn errno_of(e: &aya::programs::ProgramError) -> i32 {
    match e {
        aya::programs::ProgramError::SyscallError(s) => s.io_error.raw_os_error().unwrap_or(-1),
        _ => -1,
    }
}

/// BPF_MAP_UPDATE_ELEM on a raw fd (aya's typed maps insist on one value size; this writes any build's).
fn map_update(fd: i32, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    #[repr(C)]
    struct Attr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let attr = Attr { map_fd: fd as u32, _pad: 0, key: key.as_ptr() as u64, value: value.as_ptr() as u64, flags: 0 };
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    // SAFETY: attr points at live key/value buffers of the map's sizes for the duration of the call.
    let r =
        unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_UPDATE_ELEM, &attr as *const Attr, std::mem::size_of::<Attr>()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn nix_free_memlock() -> std::io::Result<()> {
    let lim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain setrlimit call with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
