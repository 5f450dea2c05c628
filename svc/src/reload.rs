//! SIGHUP as a reload request: installed first thing in a daemon, so a hang-up (`systemctl reload`, logrotate's
//! postrotate, a supervisor) never ends it; the daemon's reload task waits on [`Reloads::next`], reads and checks
//! its configuration again, applies what can change live and names the rest ([`changed_keys`]).

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

/// The top-level settings whose values differ between `old` and `new` (by their serialised form), sorted: what a
/// reload reports as changed.
pub fn changed_keys(old: &impl serde::Serialize, new: &impl serde::Serialize) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    let mut keys: Vec<String> =
        a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).cloned().collect::<Vec<_>>();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn changed_keys_names_what_differs() {
        let a = serde_json::json!({"max_pulls": 10, "listen": "0.0.0.0:1935", "origin": ["a"]});
        let b = serde_json::json!({"max_pulls": 20, "listen": "0.0.0.0:1935", "origin": ["a", "b"], "new": 1});
        assert_eq!(changed_keys(&a, &b), ["max_pulls", "new", "origin"]);
        assert!(changed_keys(&a, &a).is_empty());
    }

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
