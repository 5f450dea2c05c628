//! A segment's bytes in an anonymous memory file (memfd): players get them with sendfile, the kernel handing the
//! file's pages to each socket instead of the relay copying them from its own memory once per player.
//!
//! The packager writes each part once, at its offset in its segment's file, and keeps no other copy; the file is
//! freed when the last part referring to it leaves the window and no answer is still being sent from it. A relay
//! that cannot make one (out of file descriptors or memory) keeps that segment's parts in memory as before.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileExt;

/// One segment's file.
#[derive(Debug)]
pub struct Spool {
    file: File,
}

impl Spool {
    pub fn create() -> io::Result<Spool> {
        // SAFETY: a NUL-terminated name; the returned descriptor is new and owned by the File below.
        let fd = unsafe { libc::memfd_create(c"relay-hls-segment".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        Ok(Spool { file: unsafe { File::from_raw_fd(fd) } })
    }

    /// Writes `data` at `offset`.
    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    /// Reads `len` bytes at `offset` (for the rare answer that is not sent with sendfile).
    pub fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_bytes_read_back_at_their_offsets() {
        let s = Spool::create().unwrap();
        s.write_at(b"hello ", 0).unwrap();
        s.write_at(b"world", 6).unwrap();
        assert_eq!(s.read_at(0, 11).unwrap(), b"hello world");
        assert_eq!(s.read_at(6, 5).unwrap(), b"world");
        assert!(s.read_at(8, 10).is_err(), "past the end");
    }
}
