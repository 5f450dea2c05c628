//! Shutdown signalling: one [`Shutdown`] per process flips once, and every task holding a [`Stopping`] sees it.
//!
//! Built on a watch channel rather than a broadcast, so a task that subscribes after the flip still sees it.

use tokio::sync::watch;

/// The sending side: `trigger` (or dropping it) tells every [`Stopping`] to wind down.
#[derive(Debug)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

/// A task's view of the shutdown; cheap to clone.
#[derive(Clone, Debug)]
pub struct Stopping {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    pub fn new() -> (Shutdown, Stopping) {
        let (tx, rx) = watch::channel(false);
        (Shutdown { tx }, Stopping { rx })
    }

    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }

    pub fn subscribe(&self) -> Stopping {
        Stopping { rx: self.tx.subscribe() }
    }
}

impl Default for Stopping {
    /// A `Stopping` that never fires (for callers that run until the process ends).
    fn default() -> Self {
        let (tx, rx) = watch::channel(false);
        // Leaked on purpose: a dropped sender would read as a shutdown.
        std::mem::forget(tx);
        Stopping { rx }
    }
}

impl Stopping {
    /// True once shutdown was triggered.
    pub fn is_stopping(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown is triggered or its [`Shutdown`] is dropped.
    pub async fn wait(&mut self) {
        // An error means the sender is gone: that is a shutdown too.
        let _ = self.rx.wait_for(|s| *s).await;
    }

    /// `wait` as an owned future, for APIs that take `impl Future + 'static`.
    pub async fn stopped(mut self) {
        self.wait().await
    }
}

/// Resolves on the first SIGINT or SIGTERM, logs which and tells systemd the daemon is stopping. The handlers are
/// installed by this call (inside a tokio runtime), not at the first poll: a daemon that says it is ready before it
/// awaits the future must not die of a SIGTERM in between. If the handlers cannot be installed (no signal support)
/// it never resolves, so the daemon runs until killed rather than exiting at once.
pub fn signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::warn!("cannot install SIGINT/SIGTERM handlers; stop this process with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        crate::notify::notify(crate::notify::State::Stopping, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_subscriber_sees_the_trigger_even_a_late_one() {
        let (sd, mut early) = Shutdown::new();
        assert!(!early.is_stopping());
        let waiter = tokio::spawn(async move { early.wait().await });
        sd.trigger();
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        let mut late = sd.subscribe();
        assert!(late.is_stopping());
        tokio::time::timeout(Duration::from_secs(5), late.wait()).await.unwrap();
    }

    #[tokio::test]
    async fn dropping_the_sender_stops_too() {
        let (sd, st) = Shutdown::new();
        drop(sd);
        tokio::time::timeout(Duration::from_secs(5), st.stopped()).await.unwrap();
    }

    #[tokio::test]
    async fn default_never_stops() {
        let mut st = Stopping::default();
        assert!(tokio::time::timeout(Duration::from_millis(50), st.wait()).await.is_err());
    }
}
