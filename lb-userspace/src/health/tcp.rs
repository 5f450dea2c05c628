//! The tcp probe: the real accepts a TCP connection. The other stream probes start with the same connect.

use super::{Probe, Verdict};
use futures::future::BoxFuture;
use std::net::SocketAddr;
use tokio::net::TcpStream;

pub struct Tcp;

impl Probe for Tcp {
    fn check(&self, target: SocketAddr) -> BoxFuture<'_, Verdict> {
        Box::pin(async move { connect(target).await.map(|_| "connected".to_string()) })
    }
}

/// A connection to `target`, or why there is none.
pub async fn connect(target: SocketAddr) -> Result<TcpStream, String> {
    TcpStream::connect(target).await.map_err(|e| format!("connect {target}: {e}"))
}
