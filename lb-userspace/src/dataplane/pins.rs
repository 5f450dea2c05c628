//! The pin directory on a bpf filesystem where lbd pins its maps and XDP link, so forwarding survives lbd and the
//! next lbd takes over: mounting bpffs where systemd would, checking pinned maps' layouts, and removing pins.

use aya::maps::MapType;
use lb_common::{ConnEntry, Counters, FlowKey, LbConfig, RealDef, ServiceCfg, VipKey, VipMeta, MAX_DESTS, MAX_REALS};
use nix::sys::statfs::{statfs, BPF_FS_MAGIC};
use std::path::Path;

/// Every map of the object, by the name it is pinned under.
pub const MAP_NAMES: [&str; 12] = [
    "VIPS",
    "CH_RINGS",
    "REALS",
    "CONN_TABLE",
    "LB_CFG",
    "SVC_CFG",
    "SVC_STATS",
    "REAL_STATS",
    "DEST_IDX",
    "DEST_STATS",
    "GLOBAL_STATS",
    "NEW_FLOWS",
];
/// Name of the pinned XDP link in the pin directory.
pub const LINK_PIN: &str = "link";

/// How many entries a map has, from the limits lbd runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entries {
    Fixed(u32),
    /// `max_services`.
    Services,
    /// `max_services * RING_SIZE`.
    Rings,
    /// `max_services * MAX_REALS`.
    Dests,
    /// `conn_table_size`.
    ConnTable,
}

impl Entries {
    pub fn count(self, limits: &super::Limits) -> u32 {
        match self {
            Entries::Fixed(n) => n,
            Entries::Services => limits.max_services,
            Entries::Rings => limits.max_services.saturating_mul(lb_common::RING_SIZE),
            Entries::Dests => limits.max_services.saturating_mul(MAX_REALS),
            Entries::ConnTable => limits.conn_table_size,
        }
    }
}

/// What a pinned map must be for this lbd to use it.
#[derive(Clone, Copy, Debug)]
pub struct MapSpec {
    pub name: &'static str,
    pub kind: MapType,
    pub key: usize,
    pub value: usize,
    pub entries: Entries,
    /// Its contents are taken over (flows, and the services, rings and reals they refer to): a pin that does not
    /// match stops lbd. The other maps (counters, settings) are rewritten by lbd, so a mismatched pin is replaced.
    pub adopted: bool,
}

const fn spec(name: &'static str, kind: MapType, key: usize, value: usize, entries: Entries, adopted: bool) -> MapSpec {
    MapSpec { name, kind, key, value, entries, adopted }
}

/// Every map's type, key and value sizes and size, as this lbd's program declares them. Flags are 0 for all.
pub const MAP_SPECS: [MapSpec; 12] = [
    spec("VIPS", MapType::Hash, size_of::<VipKey>(), size_of::<VipMeta>(), Entries::Services, true),
    spec("CH_RINGS", MapType::Array, 4, 4, Entries::Rings, true),
    spec("REALS", MapType::Array, 4, size_of::<RealDef>(), Entries::Fixed(MAX_REALS), true),
    spec("CONN_TABLE", MapType::LruHash, size_of::<FlowKey>(), size_of::<ConnEntry>(), Entries::ConnTable, true),
    spec("LB_CFG", MapType::Array, 4, size_of::<LbConfig>(), Entries::Fixed(1), false),
    spec("SVC_CFG", MapType::Array, 4, size_of::<ServiceCfg>(), Entries::Services, false),
    spec("SVC_STATS", MapType::PerCpuArray, 4, size_of::<Counters>(), Entries::Services, false),
    spec("REAL_STATS", MapType::PerCpuArray, 4, size_of::<Counters>(), Entries::Fixed(MAX_REALS), false),
    spec("DEST_IDX", MapType::Array, 4, 4, Entries::Dests, false),
    spec("DEST_STATS", MapType::PerCpuArray, 4, size_of::<Counters>(), Entries::Fixed(MAX_DESTS), false),
    spec(
        "GLOBAL_STATS",
        MapType::PerCpuArray,
        4,
        size_of::<Counters>(),
        Entries::Fixed(lb_common::global::COUNT),
        false,
    ),
    spec("NEW_FLOWS", MapType::RingBuf, 0, 0, Entries::Fixed(lb_common::NEW_FLOWS_BYTES), false),
];

/// What is wrong with a pinned map for `spec` at `limits`, or None when it fits.
pub fn mismatch(spec: &MapSpec, info: &aya::maps::MapInfo, limits: &super::Limits) -> Option<String> {
    let kind = info.map_type().ok();
    let want = spec.entries.count(limits);
    let found = format!(
        "{:?}, key {} value {} bytes, {} entries, flags {:#x}",
        kind,
        info.key_size(),
        info.value_size(),
        info.max_entries(),
        info.map_flags()
    );
    let fits = kind == Some(spec.kind)
        && info.key_size() as usize == spec.key
        && info.value_size() as usize == spec.value
        && info.max_entries() == want
        && info.map_flags() == 0;
    (!fits).then(|| {
        format!(
            "pinned map {} is {found}; this lbd uses {:?}, key {} value {} bytes, {want} entries, flags 0",
            spec.name, spec.kind, spec.key, spec.value
        )
    })
}

/// Removes every pin lbd makes in `dir` (the link first, so the program detaches as soon as no fd holds it), then
/// the directory. Missing pins are fine.
pub fn remove_pins(dir: &Path) -> std::io::Result<()> {
    for name in std::iter::once(LINK_PIN).chain(MAP_NAMES) {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// What `lbd --cleanup` found and removed.
pub fn cleanup(dir: &Path) -> std::io::Result<Vec<String>> {
    let found = std::iter::once(LINK_PIN).chain(MAP_NAMES).filter(|n| dir.join(n).exists()).map(String::from).collect();
    remove_pins(dir)?;
    Ok(found)
}

/// Makes sure `dir` lies on a bpf filesystem. Under /sys/fs/bpf, a missing bpffs is mounted there (what systemd
/// does at boot); anywhere else the operator has to mount one.
pub fn ensure_bpffs(dir: &Path) -> Result<(), String> {
    let mut probe = dir.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    if is_bpffs(&probe) {
        return Ok(());
    }
    let std_root = Path::new("/sys/fs/bpf");
    if dir.starts_with(std_root) && !is_bpffs(std_root) {
        std::fs::create_dir_all(std_root).map_err(|e| format!("cannot create /sys/fs/bpf: {e}"))?;
        nix::mount::mount(Some("bpf"), std_root, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
            .map_err(|e| format!("/sys/fs/bpf is not a bpf filesystem and mounting one failed: {e}"))?;
        tracing::info!("mounted a bpf filesystem on /sys/fs/bpf");
        return Ok(());
    }
    Err(format!(
        "{} is not on a bpf filesystem: mount one (`mount -t bpf bpf DIR`) and put the pin directory inside it, or run lbd with --no-pin",
        probe.display()
    ))
}

fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|st| st.filesystem_type() == BPF_FS_MAGIC)
}

/// The index of a network interface, if it exists.
pub fn ifindex(iface: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(iface).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopted_layouts_are_what_earlier_lbds_pinned() {
        // The sizes lbd has always pinned: a change here breaks takeover from a running lbd, so it must be deliberate.
        let adopted: Vec<(&str, usize, usize)> =
            MAP_SPECS.iter().filter(|s| s.adopted).map(|s| (s.name, s.key, s.value)).collect();
        assert_eq!(adopted, [("VIPS", 20, 8), ("CH_RINGS", 4, 4), ("REALS", 4, 32), ("CONN_TABLE", 40, 16)]);
        let names: Vec<&str> = MAP_SPECS.iter().map(|s| s.name).collect();
        assert_eq!(names, MAP_NAMES, "every map has a spec");
    }

    #[test]
    fn a_plain_directory_is_not_bpffs_and_is_refused_outside_sys_fs_bpf() {
        let dir = std::env::temp_dir().join(format!("lbd-pins-test-{}", std::process::id()));
        let e = ensure_bpffs(&dir.join("x")).unwrap_err();
        assert!(e.contains("not on a bpf filesystem"), "{e}");
        assert!(ifindex("lo").is_some() && ifindex("no-such-if0").is_none());
    }
}
