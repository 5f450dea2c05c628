//! systemd's readiness protocol (`Type=notify`): READY=1 once every listener is up, RELOADING=1/READY=1 around a
//! reload, STOPPING=1 on shutdown, sent as datagrams to `$NOTIFY_SOCKET`; a no-op when not run by systemd.

use std::os::unix::net::UnixDatagram;

/// A state change systemd is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Every listener is bound and the daemon serves: `systemctl start` returns, dependants start.
    Ready,
    /// A reload (SIGHUP) began; `Ready` follows when it is done.
    Reloading,
    /// Shutdown began.
    Stopping,
}

impl State {
    fn message(self) -> String {
        match self {
            State::Ready => "READY=1".to_string(),
            State::Stopping => "STOPPING=1".to_string(),
            // systemd 253+ wants the monotonic time of the reload with RELOADING=1 (Type=notify-reload); older
            // ones ignore the extra field.
            State::Reloading => format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()),
        }
    }
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into memory we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Tells systemd `state` (and `status`, shown by `systemctl status`, when given). Returns whether a message was
/// sent: false when `$NOTIFY_SOCKET` is unset (not run by systemd). A failure to send is logged, never fatal: a
/// daemon must not stop serving because its supervisor went away.
pub fn notify(state: State, status: Option<&str>) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let mut msg = state.message();
    if let Some(s) = status {
        msg.push_str("\nSTATUS=");
        msg.push_str(&s.replace('\n', " "));
    }
    match send(&path, msg.as_bytes()) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(socket = ?path, error = %e, "cannot notify systemd");
            false
        }
    }
}

fn send(path: &std::ffi::OsStr, msg: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    // "@name" is a socket in the abstract namespace (what systemd uses for user services and tests).
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(msg, &addr)?;
    } else {
        sock.send_to(msg, std::path::Path::new(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_notify_socket() {
        let dir = std::env::temp_dir().join(format!("svc-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        // Only this test sets the variable in this test binary.
        std::env::set_var("NOTIFY_SOCKET", &path);
        let mut buf = [0u8; 256];

        assert!(notify(State::Ready, Some("serving\non 2 ports")));
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), "READY=1\nSTATUS=serving on 2 ports");

        assert!(notify(State::Reloading, None));
        let n = rx.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        let usec: u64 = got.strip_prefix("RELOADING=1\nMONOTONIC_USEC=").expect(got).parse().unwrap();
        assert!(usec > 0 && usec <= monotonic_usec(), "{usec}");

        assert!(notify(State::Stopping, None));
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");

        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!notify(State::Ready, None), "sent without a socket");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
