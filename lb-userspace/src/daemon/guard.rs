//! Start-up guards: what makes one lbd the only owner of its control socket, pin directory and interface. They are
//! checked before any map is opened, so a second lbd is refused without changing the running one's dataplane.

use super::DaemonError;
use crate::netinfo::Net;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The exclusive lock on a pin directory (an flock on the directory itself: bpffs holds no plain files). Held for
/// the life of the process; the kernel drops it when the process dies, even by SIGKILL, so a takeover still works.
pub struct PinLock {
    _dir: std::fs::File,
}

/// Takes the lock of the pin directory (which must exist), or names the process that holds it.
pub fn lock_pin_dir(dir: &Path) -> Result<PinLock, DaemonError> {
    let err = |message: String| DaemonError::Guard(format!("pin directory {}: {message}", dir.display()));
    let file = std::fs::File::open(dir).map_err(|e| err(format!("cannot open it: {e}")))?;
    // SAFETY: a valid fd we own; flock has no memory effects.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err(format!("cannot lock it: {e}")));
        }
        let holder = file.metadata().ok().and_then(|m| flock_holder(m.dev(), m.ino()));
        let who = holder.map_or("another lbd".to_string(), |pid| format!("another lbd (pid {pid})"));
        return Err(err(format!(
            "{who} is using it; a second lbd on the same pins would rewrite the running one's dataplane. Stop that lbd first, or give this one its own --pin-dir and --socket"
        )));
    }
    Ok(PinLock { _dir: file })
}

/// The pid holding an flock on the file (dev, inode), from /proc/locks.
fn flock_holder(dev: u64, ino: u64) -> Option<u32> {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let want = format!("{major:02x}:{minor:02x}:{ino}");
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    parse_locks(&text, &want)
}

/// The pid of the FLOCK line for `file` (`MAJ:MIN:INODE`) in /proc/locks' text.
fn parse_locks(text: &str, file: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 1234 00:1f:5678 0 EOF"; a waiter's line starts "1: ->".
        (f.len() >= 6 && f[1] == "FLOCK" && f[5] == file).then(|| f[4].parse().ok()).flatten()
    })
}

/// Refuses an interface that already has an XDP program attached, unless it is the one pinned in `pin_dir` (the
/// link an earlier lbd left for this one to take over). The kernel allows one program per interface: without this
/// the attach would fail only after the maps were written.
pub async fn check_iface(iface: &str, pin_dir: Option<&Path>) -> Result<(), DaemonError> {
    let net = Net::new()?;
    let Some(id) = net.xdp_prog(iface).await? else { return Ok(()) };
    let ours = pin_dir.map(|d| d.join(crate::dataplane::LINK_PIN)).is_some_and(|link| {
        link.exists()
            && crate::dataplane::sys::pinned_link_ifindex(&link)
                .is_ok_and(|idx| idx != 0 && Some(idx) == nix::net::if_::if_nametoindex(iface).ok())
    });
    if ours {
        return Ok(());
    }
    Err(DaemonError::Guard(format!(
        "interface {iface} already has an XDP program attached (id {id}) that is not the one pinned in this lbd's pin directory: another lbd (with another --pin-dir, or --no-pin) or another tool attached it, and an interface holds one. See it with `ip link show {iface}` or `bpftool net show dev {iface}`; stop its owner first (a pinned lbd dataplane: `lbd --cleanup --pin-dir DIR`)"
    )))
}

/// The pid of the process serving the unix socket `path`, when one does (SO_PEERCRED of a connection to it).
pub fn socket_server(path: &Path) -> Option<Option<u32>> {
    let s = std::os::unix::net::UnixStream::connect(path).ok()?;
    // SAFETY: plain data, all zeroes is valid.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred is a ucred of len bytes that outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    Some((rc == 0 && cred.pid > 0).then_some(cred.pid as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_read_from_proc_locks() {
        let text = "1: FLOCK  ADVISORY  WRITE 4242 00:1f:5678 0 EOF\n1: -> FLOCK  ADVISORY  WRITE 99 00:1f:5678 0 EOF\n2: POSIX  ADVISORY  WRITE 7 00:1f:9 0 EOF\n";
        assert_eq!(parse_locks(text, "00:1f:5678"), Some(4242));
        assert_eq!(parse_locks(text, "00:1f:9"), None, "a POSIX lock is not ours");
        assert_eq!(parse_locks(text, "00:20:5678"), None);
    }

    #[test]
    fn a_second_lock_on_a_directory_is_refused_and_names_this_process() {
        // A plain directory stands in for the pin directory: flock works the same on any filesystem.
        let dir = std::env::temp_dir().join(format!("lbd-guard-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = std::fs::File::open(&dir).unwrap();
        // SAFETY: a valid fd.
        assert_eq!(unsafe { libc::flock(first.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
        let second = std::fs::File::open(&dir).unwrap();
        // SAFETY: a valid fd.
        assert_ne!(unsafe { libc::flock(second.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
        let m = second.metadata().unwrap();
        assert_eq!(flock_holder(m.dev(), m.ino()), Some(std::process::id()));
        drop(first);
        // SAFETY: a valid fd.
        assert_eq!(unsafe { libc::flock(second.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0, "freed on close");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
