//! SIGHUP as a reload request: installed first thing in a daemon, so a hang-up (`systemctl reload`, logrotate's
//! postrotate, a supervisor) never ends it; the daemon's reload task waits on [`Reloads::next`].

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Reload requests: one per SIGHUP received (several HUPs during one reload count once: the latest config is read
/// anyway).
#[derive(Debug, Clone)]
pub struct Reloads {
    rx: watch::Receiver<u64>,
}

/// Installs the SIGHUP handler (inside a tokio runtime). From here on SIGHUP no longer terminates the process, even
/// when nothing waits on the returned [`Reloads`]. An error means the handler could not be installed.
pub fn reloads() -> std::io::Result<Reloads> {
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            tx.send_modify(|n| *n += 1);
        }
    });
    Ok(Reloads { rx })
}

impl Reloads {
    /// Resolves at the next SIGHUP since the last call; returns false if the handler is gone (never, in practice).
    pub async fn next(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_hangup_is_a_reload_not_an_exit() {
        let mut r = reloads().unwrap();
        // Nothing pending before the first HUP.
        assert!(tokio::time::timeout(Duration::from_millis(100), r.next()).await.is_err());
        for _ in 0..2 {
            // SAFETY: kill(2) on our own pid with a signal we handle.
            assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
            let got = tokio::time::timeout(Duration::from_secs(5), r.next()).await;
            assert_eq!(got, Ok(true), "no reload seen for SIGHUP");
        }
    }
}
