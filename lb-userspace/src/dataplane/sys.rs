//! The bpf(2) commands aya 0.14 does not offer, in one place: batch lookup and delete over a map (walking and
//! purging millions of connection-table entries in a few hundred calls) and reading a pinned XDP link's
//! interface. Buffer sizes come from the Rust types passed in, so they cannot drift from the maps' layouts.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// bpf(2) commands (enum bpf_cmd in linux/bpf.h).
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// enum bpf_link_type.
const BPF_LINK_TYPE_XDP: u32 = 6;

/// The kernel's opaque position between batch calls (a u32 bucket index for hash maps); room for any key is what
/// libbpf documents as always enough.
pub type BatchToken = [u64; 8];

/// The `batch` member of union bpf_attr (linux/bpf.h, since 5.6): what BPF_MAP_*_BATCH read and write.
#[repr(C)]
#[derive(Debug, Default)]
struct BatchAttr {
    /// Where to resume (a pointer to the previous out_batch), 0 to start from the beginning.
    in_batch: u64,
    /// Where the kernel writes the position to resume from.
    out_batch: u64,
    /// Buffer of `count` keys.
    keys: u64,
    /// Buffer of `count` values (lookup only).
    values: u64,
    /// In: room in the buffers (lookup) or keys given (delete). Out: entries processed.
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The `obj_get` member of union bpf_attr.
#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// The `info` member of union bpf_attr.
#[repr(C)]
struct InfoByFdAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// struct bpf_link_info: type, id, prog_id, then an 8-aligned union whose xdp member is { ifindex }.
#[repr(C)]
struct LinkInfo {
    type_: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    ifindex: u32,
    _rest: [u32; 27],
}

/// One bpf(2) call; the kernel may write back into `attr`.
///
/// SAFETY: the caller guarantees `attr` is the bpf_attr member `cmd` expects and every pointer inside it refers to
/// memory that outlives the call and is large enough for what the kernel may write there.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// BPF_MAP_LOOKUP_BATCH: copies up to `keys.len()` entries from where `resume` says (the start when None) into
/// `keys` and `values`, and writes the next position into `next`. Returns the call's result and how many entries
/// were copied; ENOENT with a count means the end of the map was reached.
pub fn lookup_batch<K: Copy, V: Copy>(
    map: BorrowedFd<'_>,
    resume: Option<&BatchToken>,
    next: &mut BatchToken,
    keys: &mut [K],
    values: &mut [V],
) -> (io::Result<()>, usize) {
    let room = keys.len().min(values.len()).min(u32::MAX as usize);
    let mut attr = BatchAttr {
        in_batch: resume.map_or(0, |t| t.as_ptr() as u64),
        out_batch: next.as_mut_ptr() as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: room as u32,
        map_fd: map.as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: the buffers hold `room` keys and values of the map's types, and `next` is a BatchToken, larger than
    // any key; all outlive the call.
    let r = unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) }.map(drop);
    // The kernel sets count to the entries it copied, also on ENOENT; checked rather than trusted.
    (r, (attr.count as usize).min(room))
}

/// BPF_MAP_DELETE_BATCH over `keys`: the call's result and how many keys, from the start, it deleted.
pub fn delete_batch<K: Copy>(map: BorrowedFd<'_>, keys: &[K]) -> (io::Result<()>, usize) {
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        count: keys.len().min(u32::MAX as usize) as u32,
        map_fd: map.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: the kernel only reads `count` keys from the buffer.
    let r = unsafe { bpf(BPF_MAP_DELETE_BATCH, &mut attr) }.map(drop);
    (r, (attr.count as usize).min(keys.len()))
}

/// The interface index of a pinned XDP link (0 once its interface is gone). aya 0.14 does not expose the XDP part
/// of bpf_link_info.
pub fn pinned_link_ifindex(path: &Path) -> io::Result<u32> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut get = ObjGetAttr { pathname: c.as_ptr() as u64, bpf_fd: 0, file_flags: 0 };
    // SAFETY: a NUL-terminated path that outlives the call.
    let fd = unsafe { bpf(BPF_OBJ_GET, &mut get) }?;
    // SAFETY: the kernel just gave us this fd and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: plain data, all zeroes is valid.
    let mut info: LinkInfo = unsafe { std::mem::zeroed() };
    let mut attr = InfoByFdAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<LinkInfo>() as u32,
        info: &mut info as *mut LinkInfo as u64,
    };
    // SAFETY: the kernel writes at most info_len bytes into info.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    if info.type_ != BPF_LINK_TYPE_XDP {
        return Err(io::Error::other(format!("link type {} is not XDP", info.type_)));
    }
    Ok(info.ifindex)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn attrs_match_the_uapi_layouts() {
        // offsetof(union bpf_attr, batch.*) from linux/bpf.h.
        assert_eq!(size_of::<BatchAttr>(), 56);
        assert_eq!(
            [
                offset_of!(BatchAttr, in_batch),
                offset_of!(BatchAttr, out_batch),
                offset_of!(BatchAttr, keys),
                offset_of!(BatchAttr, values),
                offset_of!(BatchAttr, count),
                offset_of!(BatchAttr, map_fd),
                offset_of!(BatchAttr, elem_flags),
                offset_of!(BatchAttr, flags),
            ],
            [0, 8, 16, 24, 32, 36, 40, 48]
        );
        assert_eq!((offset_of!(ObjGetAttr, bpf_fd), size_of::<ObjGetAttr>()), (8, 16));
        assert_eq!((offset_of!(InfoByFdAttr, info_len), offset_of!(InfoByFdAttr, info)), (4, 8));
        // struct bpf_link_info: the union starts 8-aligned at 16; xdp.ifindex is its first member.
        assert_eq!(offset_of!(LinkInfo, ifindex), 16);
        const { assert!(size_of::<BatchToken>() >= size_of::<lb_common::FlowKey>()) };
    }

    #[test]
    fn errors_come_back_as_io_errors() {
        // Not a pinned object: the kernel refuses, and so do we, without panicking.
        assert!(pinned_link_ifindex(Path::new("/nonexistent/lbd/link")).is_err());
    }
}
