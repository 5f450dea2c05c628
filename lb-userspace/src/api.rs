//! The control API between lbctl and lbd: one JSON request and one JSON response per line on a unix socket. The
//! requests, answers and views are the contract crate's ([`api_types::lb`]), re-exported here; this module adds the
//! socket client and lbd's own flag types.

pub use api_types::lb::{CountersView, RealView, Request, Response, ServiceView, StatsView};

use serde::{Deserialize, Serialize};
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The view of a dataplane counter.
pub fn counters_view(c: lb_common::Counters) -> CountersView {
    CountersView { packets: c.packets, bytes: c.bytes, new_flows: c.new_flows }
}

/// Where lbd listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/lbd/lbd.sock";

/// How lbd decides that a VIP may be announced (`--announce-when`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnounceWhen {
    /// At least one service of the VIP has a usable real.
    #[default]
    Any,
    /// Every service of the VIP has a usable real.
    All,
}

impl std::str::FromStr for AnnounceWhen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "any" => Ok(AnnounceWhen::Any),
            "all" => Ok(AnnounceWhen::All),
            _ => Err(format!("unknown --announce-when {s:?}: expected any or all")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach lbd at {path}: {cause} (is lbd running? start it with `lbd --iface IFACE`, or pass --socket)"
    )]
    Connect { path: String, cause: std::io::Error },
    #[error("talking to lbd at {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("lbd at {path} closed the connection without an answer")]
    NoAnswer { path: String },
    #[error("lbd sent an answer this lbctl cannot read: {0}")]
    Decode(serde_json::Error),
}

/// Sends one request and waits for its answer.
pub async fn call(socket: &Path, req: &Request) -> Result<Response, ClientError> {
    let path = socket.display().to_string();
    let stream =
        UnixStream::connect(socket).await.map_err(|cause| ClientError::Connect { path: path.clone(), cause })?;
    let (rd, mut wr) = stream.into_split();
    let mut line = serde_json::to_string(req).map_err(ClientError::Decode)?;
    line.push('\n');
    wr.write_all(line.as_bytes()).await.map_err(|cause| ClientError::Io { path: path.clone(), cause })?;
    let mut answer = String::new();
    let n = BufReader::new(rd)
        .read_line(&mut answer)
        .await
        .map_err(|cause| ClientError::Io { path: path.clone(), cause })?;
    if n == 0 {
        return Err(ClientError::NoAnswer { path });
    }
    serde_json::from_str(&answer).map_err(ClientError::Decode)
}
