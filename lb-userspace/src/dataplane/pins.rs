//! The pin directory on a bpf filesystem where lbd pins its maps and XDP link, so forwarding survives lbd and the
//! next lbd takes over: mounting bpffs where systemd would, checking pinned maps' layouts, and removing pins.

use lb_common::{ConnEntry, FlowKey, RealDef, VipKey, VipMeta};
use nix::sys::statfs::{statfs, BPF_FS_MAGIC};
use std::path::Path;

/// Every map of the object, by the name it is pinned under.
pub const MAP_NAMES: [&str; 8] =
    ["VIPS", "CH_RINGS", "REALS", "CONN_TABLE", "LB_CFG", "SVC_STATS", "REAL_STATS", "GLOBAL_STATS"];
/// Name of the pinned XDP link in the pin directory.
pub const LINK_PIN: &str = "link";

/// Key and value sizes of the maps whose contents a new lbd takes over, from the lb-common types the program and
/// lbd share: a pinned map with other sizes was made by another lbd version.
pub const ADOPTED_LAYOUTS: [(&str, usize, usize); 4] = [
    ("VIPS", size_of::<VipKey>(), size_of::<VipMeta>()),
    ("CH_RINGS", size_of::<u32>(), size_of::<u32>()),
    ("REALS", size_of::<u32>(), size_of::<RealDef>()),
    ("CONN_TABLE", size_of::<FlowKey>(), size_of::<ConnEntry>()),
];

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
        assert_eq!(ADOPTED_LAYOUTS, [("VIPS", 20, 8), ("CH_RINGS", 4, 4), ("REALS", 4, 32), ("CONN_TABLE", 40, 16)]);
    }

    #[test]
    fn a_plain_directory_is_not_bpffs_and_is_refused_outside_sys_fs_bpf() {
        let dir = std::env::temp_dir().join(format!("lbd-pins-test-{}", std::process::id()));
        let e = ensure_bpffs(&dir.join("x")).unwrap_err();
        assert!(e.contains("not on a bpf filesystem"), "{e}");
        assert!(ifindex("lo").is_some() && ifindex("no-such-if0").is_none());
    }
}
