//! The accept loop every listener of every daemon uses: the next connection, or None once shutdown is signalled.
//! Accept errors (EMFILE, ENFILE, ECONNABORTED...) are logged and retried after a pause instead of spinning.

use crate::shutdown::Stopping;
use std::future::Future;
use std::io;
use std::time::Duration;

/// Pause after a failed accept: long enough not to spin while out of file descriptors, short enough to resume
/// quickly once some are freed.
const BACKOFF: Duration = Duration::from_millis(100);

/// A listening socket: TCP or unix.
pub trait Listener {
    type Conn;
    type Peer;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Conn, Self::Peer)>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Conn = tokio::net::TcpStream;
    type Peer = std::net::SocketAddr;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Conn, Self::Peer)>> + Send {
        tokio::net::TcpListener::accept(self)
    }
}

impl Listener for tokio::net::UnixListener {
    type Conn = tokio::net::UnixStream;
    type Peer = tokio::net::unix::SocketAddr;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Conn, Self::Peer)>> + Send {
        tokio::net::UnixListener::accept(self)
    }
}

/// The next connection on `listener`, or None once `stop` fires. `what` names the listener in logs.
pub async fn next<L: Listener>(listener: &L, stop: &mut Stopping, what: &str) -> Option<(L::Conn, L::Peer)> {
    loop {
        if stop.is_stopping() {
            return None;
        }
        tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => return Some(x),
                Err(e) => {
                    tracing::warn!(error = %e, "{what}: accept failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(BACKOFF) => {}
                        _ = stop.wait() => return None,
                    }
                }
            },
            _ = stop.wait() => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shutdown;

    #[tokio::test]
    async fn yields_connections_until_shutdown() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (sd, mut st) = Shutdown::new();
        let _c = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(next(&l, &mut st, "test").await.is_some());
        sd.trigger();
        assert!(next(&l, &mut st, "test").await.is_none());
    }
}
