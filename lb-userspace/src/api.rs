//! The control API between lbctl and lbd: one JSON request and one JSON response per line on a unix socket.

use crate::events::Event;
use crate::health::Health;
use crate::model::{CheckSpec, Proto, ServiceKey};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Where lbd listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/lbd/lbd.sock";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    AddService {
        service: ServiceKey,
        /// Absent in requests of older lbctls: no check.
        #[serde(default)]
        check: CheckSpec,
        /// Persistence timeout in seconds; 0 or absent: none.
        #[serde(default)]
        persistent: u32,
    },
    /// Sets a service's persistence timeout (0 turns it off).
    SetPersistence {
        service: ServiceKey,
        persistent: u32,
    },
    /// Replaces a service's health check (kind `none` removes it).
    SetCheck {
        service: ServiceKey,
        check: CheckSpec,
    },
    /// No new flows to the real; established ones continue. The weight is kept for undrain.
    Drain {
        service: ServiceKey,
        real: IpAddr,
    },
    Undrain {
        service: ServiceKey,
        real: IpAddr,
    },
    /// The last `last` events (all kept ones when absent).
    Events {
        #[serde(default)]
        last: Option<usize>,
    },
    DelService {
        service: ServiceKey,
    },
    AddReal {
        service: ServiceKey,
        real: IpAddr,
        weight: u32,
    },
    EditReal {
        service: ServiceKey,
        real: IpAddr,
        weight: u32,
    },
    DelReal {
        service: ServiceKey,
        real: IpAddr,
    },
    List,
    Stats,
    /// Maintenance of this LB node: on withdraws every VIP announcement (the routers stop sending new flows here),
    /// off announces again what is healthy. Forwarding goes on either way.
    Maintenance {
        on: bool,
    },
}

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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    /// What happened, or what was wrong and what to do.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<Vec<ServiceView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Box<StatsView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Event>>,
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Self {
        Response { ok: true, message: message.into(), list: None, stats: None, events: None }
    }
    pub fn err(message: impl Into<String>) -> Self {
        Response { ok: false, message: message.into(), list: None, stats: None, events: None }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersView {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

impl From<lb_common::Counters> for CountersView {
    fn from(c: lb_common::Counters) -> Self {
        CountersView { packets: c.packets, bytes: c.bytes, new_flows: c.new_flows }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealView {
    pub addr: IpAddr,
    pub weight: u32,
    /// The real's MAC, or None while the neighbour table has no usable entry (the real gets no flows then).
    pub mac: Option<String>,
    /// "up" when it takes new flows, or why not ("down", "drained", "weight 0", "unresolved").
    pub state: String,
    /// What the health check says ("unknown" before the first result and when the service has no check).
    pub health: Health,
    pub drained: bool,
    /// The last check's result ("200", "connect ...: Connection refused"), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
    /// Latency of the last check, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_us: Option<u64>,
    /// Flows in the connection table pinned to this real and seen in the last ACTIVE_FLOW_SECS.
    pub active_flows: u64,
    pub counters: CountersView,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    pub vip: IpAddr,
    pub port: u16,
    pub proto: Proto,
    /// The health check, as `lbctl list` shows it ("none", "http /health =200 3s/1s rise 2 fall 3").
    pub check: String,
    /// Persistence timeout in seconds (0: none).
    #[serde(default)]
    pub persistent: u32,
    /// Reals that take new flows now; 0 with reals configured means the service is down.
    pub usable_reals: usize,
    pub active_flows: u64,
    pub counters: CountersView,
    pub reals: Vec<RealView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsView {
    pub iface: String,
    pub xdp_mode: String,
    pub services: usize,
    pub reals: usize,
    /// Entries in the connection table (including idle ones the LRU has not evicted yet).
    pub conn_table_entries: u64,
    pub conn_table_size: u32,
    pub forwarded: CountersView,
    pub passed_not_vip: CountersView,
    pub passed_malformed: CountersView,
    pub passed_frag_or_options: CountersView,
    pub passed_no_real: CountersView,
    /// ICMP "fragmentation needed" / "packet too big" errors sent on to the real of their flow.
    #[serde(default)]
    pub icmp_forwarded: CountersView,
    #[serde(default)]
    pub passed_ipv6_ext_headers: CountersView,
    /// Connection-table entries the flow sweep removed (idle flows of removed reals, idle UDP flows, expired
    /// persistence templates), since lbd started.
    #[serde(default)]
    pub flows_expired: u64,
    /// This node is in maintenance (nothing announced).
    #[serde(default)]
    pub maintenance: bool,
    /// VIPs whose routes are announced to the routing daemon (route health injection; empty when it is off).
    #[serde(default)]
    pub announced: Vec<IpAddr>,
    /// Route health injection: the kernel table lbd writes, or none when off.
    #[serde(default)]
    pub announce_table: Option<u32>,
    /// Flow-state sync counters (entries sent, received, inserted, dropped by reason), when sync runs.
    #[serde(default)]
    pub sync: Option<std::collections::BTreeMap<String, u64>>,
    /// The sync peers this node sends its flows to.
    #[serde(default)]
    pub sync_peers: Vec<std::net::SocketAddr>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let service = ServiceKey::parse("10.0.0.1:80", Proto::Tcp).unwrap();
        let req = Request::AddReal { service, real: "10.0.0.2".parse().unwrap(), weight: 2 };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            text,
            r#"{"cmd":"add-real","service":{"vip":"10.0.0.1","port":80,"proto":"tcp"},"real":"10.0.0.2","weight":2}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), req);
    }
}
