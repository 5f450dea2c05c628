//! lbd's control API: one JSON request and one JSON answer per line on its unix socket, the same requests over
//! HTTP (`POST /api/v1/requests`), and the views `GET /api/v1/services|stats|events` answer with.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::Dur;

/// Largest weight accepted; bounds the Maglev rounds a build can take.
pub const MAX_WEIGHT: u32 = 65_535;

/// What is wrong with a value of the API (a service address, a protocol, a health check) as a user gave it.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("bad service address {0:?}: expected VIP:PORT, e.g. 10.0.0.100:80 or [fd00::100]:80")]
    BadService(String),
    #[error("unknown protocol {0:?}: expected tcp or udp")]
    BadProto(String),
    #[error("{0} is an IPv6 link-local address, which only has a meaning with an interface scope: use a global or unique-local address")]
    LinkLocal(IpAddr),
    #[error("{addr} cannot be a {role}: it is {why}")]
    Unusable { addr: IpAddr, role: &'static str, why: &'static str },
    #[error("{addr} is an IPv4-mapped IPv6 address: write the IPv4 address {v4} itself (IPv4 clients send to, and reals answer from, the IPv4 address)")]
    Mapped { addr: IpAddr, v4: std::net::Ipv4Addr },
    #[error("port 0 is not a valid service port")]
    PortZero,
    #[error("bad health check: {0}")]
    BadCheck(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    #[default]
    Tcp,
    Udp,
}

impl FromStr for Proto {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(ValueError::BadProto(s.to_string())),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        })
    }
}

/// A service: what the dataplane matches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceKey {
    pub vip: IpAddr,
    pub port: u16,
    pub proto: Proto,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.proto, SocketAddr::new(self.vip, self.port))
    }
}

impl ServiceKey {
    /// Parses `VIP:PORT` as a user typed it.
    pub fn parse(addr: &str, proto: Proto) -> Result<Self, ValueError> {
        let sa: SocketAddr = addr.trim().parse().map_err(|_| ValueError::BadService(addr.to_string()))?;
        let key = ServiceKey { vip: sa.ip(), port: sa.port(), proto };
        key.validate()?;
        Ok(key)
    }

    pub fn validate(&self) -> Result<(), ValueError> {
        check_addr(self.vip, "VIP")?;
        if self.port == 0 {
            return Err(ValueError::PortZero);
        }
        Ok(())
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(a) if a.is_unicast_link_local())
}

/// Refuses an address that cannot be a VIP or a real (`role`), whatever the interface: one no packet is sent to,
/// one that never leaves a host, one every host receives, or an IPv4 address spelt as IPv6.
pub fn check_addr(ip: IpAddr, role: &'static str) -> Result<(), ValueError> {
    if is_link_local(ip) {
        return Err(ValueError::LinkLocal(ip));
    }
    if let IpAddr::V6(v6) = ip {
        if let Some(v4) = v6.to_ipv4_mapped() {
            return Err(ValueError::Mapped { addr: ip, v4 });
        }
    }
    let why = if ip.is_unspecified() {
        "the unspecified address, which no packet is sent to"
    } else if ip.is_loopback() {
        "a loopback address, which never leaves its host"
    } else if ip.is_multicast() {
        "a multicast address: the load balancer places unicast flows"
    } else if ip == IpAddr::V4(std::net::Ipv4Addr::BROADCAST) {
        "the limited broadcast address, which every host on the link receives"
    } else {
        return Ok(());
    };
    Err(ValueError::Unusable { addr: ip, role, why })
}

/// What a health check sends and expects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// No check: a real with a MAC is up.
    #[default]
    None,
    /// A TCP connect succeeds.
    Tcp,
    /// `GET path` answers with the expected status.
    Http,
    /// As http, over TLS; the certificate is verified (system roots, or `ca_file`) unless `insecure`.
    Https,
    /// RTMP handshake: C0+C1 is answered with S0+S1 (version 3).
    Rtmp,
    /// `OPTIONS` is answered with `RTSP/1.0 200`.
    Rtsp,
}

impl FromStr for CheckKind {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(CheckKind::None),
            "tcp" => Ok(CheckKind::Tcp),
            "http" => Ok(CheckKind::Http),
            "https" => Ok(CheckKind::Https),
            "rtmp" => Ok(CheckKind::Rtmp),
            "rtsp" => Ok(CheckKind::Rtsp),
            _ => {
                Err(ValueError::BadCheck(format!("unknown kind {s:?}: expected tcp, http, https, rtmp, rtsp or none")))
            }
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckKind::None => "none",
            CheckKind::Tcp => "tcp",
            CheckKind::Http => "http",
            CheckKind::Https => "https",
            CheckKind::Rtmp => "rtmp",
            CheckKind::Rtsp => "rtsp",
        })
    }
}

/// A service's health check: `[service.check]` in the file, `--check ...` on `lbctl add-service`.
/// Defaults follow keepalived/haproxy practice: every 3 s, 1 s timeout, down after 3 failures, up after 2 passes.
/// A timeout longer than the interval is refused (probes of one real never overlap); an omitted timeout is 1 s or
/// the interval, whichever is shorter, so the timeout shown is the one probes use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "CheckFields")]
pub struct CheckSpec {
    pub kind: CheckKind,
    /// Port to check on the real; the service port when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// http: the path to GET.
    pub path: String,
    /// http: the status that means healthy.
    pub expect: u16,
    /// https: trust only the CA certificates of this PEM file (an absolute path on lbd's host), not the system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// https: accept any certificate (an explicit opt-in; the default verifies).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// https: the name to send (SNI) and verify instead of the real's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    pub interval: Dur,
    pub timeout: Dur,
    /// Consecutive passes that bring a down real back.
    pub rise: u32,
    /// Consecutive failures that take an up real out.
    pub fall: u32,
}

impl Default for CheckSpec {
    fn default() -> Self {
        CheckSpec {
            kind: CheckKind::None,
            port: None,
            path: "/".into(),
            expect: 200,
            ca_file: None,
            insecure: false,
            sni: None,
            interval: Dur::secs(3),
            timeout: Dur::secs(1),
            rise: 2,
            fall: 3,
        }
    }
}

/// Default timeout of a check whose interval is at least this long.
pub const DEFAULT_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// `[service.check]` as written, where an omitted timeout is told apart from a given one. Every key is optional
/// in the file (the defaults above), so `serde(default)` is the protocol here.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CheckFields {
    kind: CheckKind,
    port: Option<u16>,
    path: String,
    expect: u16,
    ca_file: Option<std::path::PathBuf>,
    insecure: bool,
    sni: Option<String>,
    interval: Dur,
    timeout: Option<Dur>,
    rise: u32,
    fall: u32,
}

impl Default for CheckFields {
    fn default() -> Self {
        let d = CheckSpec::default();
        CheckFields {
            kind: d.kind,
            port: d.port,
            path: d.path,
            expect: d.expect,
            ca_file: d.ca_file,
            insecure: d.insecure,
            sni: d.sni,
            interval: d.interval,
            timeout: None,
            rise: d.rise,
            fall: d.fall,
        }
    }
}

impl From<CheckFields> for CheckSpec {
    fn from(f: CheckFields) -> Self {
        CheckSpec {
            kind: f.kind,
            port: f.port,
            path: f.path,
            expect: f.expect,
            ca_file: f.ca_file,
            insecure: f.insecure,
            sni: f.sni,
            interval: f.interval,
            timeout: f.timeout.unwrap_or(Dur(CheckSpec::default_timeout(f.interval.0))),
            rise: f.rise,
            fall: f.fall,
        }
    }
}

impl CheckSpec {
    /// The timeout of a check with this interval when none is given: 1 s, or the interval when it is shorter.
    pub fn default_timeout(interval: std::time::Duration) -> std::time::Duration {
        DEFAULT_CHECK_TIMEOUT.min(interval)
    }

    pub fn is_none(&self) -> bool {
        self.kind == CheckKind::None
    }

    /// The timeout a probe gets: the configured one, which validate keeps within the interval (so probes of one
    /// real do not overlap, and what `lbctl list` shows is what is used).
    pub fn effective_timeout(&self) -> std::time::Duration {
        self.timeout.0.min(self.interval.0)
    }

    pub fn validate(&self) -> Result<(), ValueError> {
        let bad = |m: String| Err(ValueError::BadCheck(m));
        if self.is_none() {
            return Ok(());
        }
        if self.interval.0 < std::time::Duration::from_millis(50) {
            return bad(format!("interval {} is below 50ms", self.interval));
        }
        if self.timeout.0.is_zero() {
            return bad("timeout must be above 0".into());
        }
        if self.timeout.0 > self.interval.0 {
            return bad(format!(
                "timeout {} is longer than the interval {}: a probe must end before the next one starts; give a timeout up to the interval, or none (then it is 1s, or the interval when that is shorter)",
                self.timeout, self.interval
            ));
        }
        if !(1..=100).contains(&self.rise) || !(1..=100).contains(&self.fall) {
            return bad(format!("rise {} and fall {} must be within 1..=100", self.rise, self.fall));
        }
        if self.port == Some(0) {
            return bad("port 0 cannot be checked".into());
        }
        if self.kind != CheckKind::Https && (self.ca_file.is_some() || self.insecure || self.sni.is_some()) {
            return bad(format!("ca_file, insecure and sni only apply to https checks, not {}", self.kind));
        }
        if self.insecure && self.ca_file.is_some() {
            return bad("give either insecure (no verification) or ca_file (verify against it), not both".into());
        }
        if let Some(f) = &self.ca_file {
            if !f.is_absolute() {
                return bad(format!(
                    "ca_file {} must be an absolute path (lbd reads it, from its own directory)",
                    f.display()
                ));
            }
        }
        if let Some(n) = &self.sni {
            if n.is_empty() || n.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return bad(format!("sni {n:?} must be a host name or address without spaces"));
            }
        }
        if matches!(self.kind, CheckKind::Http | CheckKind::Https) {
            if !self.path.starts_with('/') || self.path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return bad(format!("http path {:?} must start with / and hold no spaces", self.path));
            }
            if !(100..=599).contains(&self.expect) {
                return bad(format!("expected status {} is not an HTTP status", self.expect));
            }
        }
        Ok(())
    }

    /// One line for `lbctl list`: `http:8080 /health =200 3s/1s rise 2 fall 3`.
    pub fn summary(&self) -> String {
        if self.is_none() {
            return "none".into();
        }
        let mut s = self.kind.to_string();
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        if matches!(self.kind, CheckKind::Http | CheckKind::Https) {
            s.push_str(&format!(" {} ={}", self.path, self.expect));
        }
        if self.insecure {
            s.push_str(" insecure");
        }
        if let Some(f) = &self.ca_file {
            s.push_str(&format!(" ca {}", f.display()));
        }
        if let Some(n) = &self.sni {
            s.push_str(&format!(" sni {n}"));
        }
        s.push_str(&format!(" {}/{} rise {} fall {}", self.interval, self.timeout, self.rise, self.fall));
        s
    }
}

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

/// lbd's answer to every request. `list`, `stats` and `events` are there only in the answer to their request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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

/// What lbd's health check says about a real.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not checked yet (or the service has no check): takes flows, so a restart or a new real causes no churn.
    Unknown,
    Up,
    Down,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        })
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
    /// The last check's result ("200", "connect ...: Connection refused"), if any: absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
    /// Latency of the last check, in microseconds; absent before the first.
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
    pub persistent: u32,
    /// Reals that take new flows now; 0 with reals configured means the service is down.
    pub usable_reals: usize,
    pub active_flows: u64,
    pub counters: CountersView,
    pub reals: Vec<RealView>,
}

impl ServiceView {
    pub fn key(&self) -> ServiceKey {
        ServiceKey { vip: self.vip, port: self.port, proto: self.proto }
    }
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
    pub icmp_forwarded: CountersView,
    pub passed_ipv6_ext_headers: CountersView,
    /// Connection-table entries the flow sweep removed (idle flows of removed reals, idle UDP flows, expired
    /// persistence templates), since lbd started.
    pub flows_expired: u64,
    /// This node is in maintenance (nothing announced).
    pub maintenance: bool,
    /// VIPs whose routes are announced to the routing daemon (route health injection; empty when it is off).
    pub announced: Vec<IpAddr>,
    /// Route health injection: the kernel table lbd writes, or none when off.
    pub announce_table: Option<u32>,
    /// Flow-state sync counters (entries sent, received, inserted, dropped by reason), when sync runs.
    pub sync: Option<std::collections::BTreeMap<String, u64>>,
    /// The sync peers this node sends its flows to.
    pub sync_peers: Vec<SocketAddr>,
    /// `0.1.0 (1a2b3c4)`: the lbd version and commit (absent from older lbds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The highest stream manager term whose commands lbd accepted over its HTTP API (0: none since it started;
    /// see [`crate::manager::TERM_HEADER`]). Only `GET /api/v1/stats` has it (the fence is on the HTTP API); absent
    /// on the control socket and from older lbds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager_term: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    RealUp,
    RealDown,
    RealDrained,
    RealUndrained,
    RealAdded,
    RealRemoved,
    WeightChanged,
    ServiceAdded,
    ServiceRemoved,
    CheckChanged,
    /// Every real of a service is out (down, drained, weight 0 or unresolved): its packets go to the kernel.
    ServiceDown,
    /// A service that had no usable real has one again.
    ServiceUp,
    ConfigApplied,
    /// The node went into maintenance (its VIPs are withdrawn) or out of it.
    Maintenance,
    /// A VIP's route was announced to the routing daemon, or withdrawn.
    VipAnnounced,
    VipWithdrawn,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RealUp => "real-up",
            EventKind::RealDown => "real-down",
            EventKind::RealDrained => "real-drained",
            EventKind::RealUndrained => "real-undrained",
            EventKind::RealAdded => "real-added",
            EventKind::RealRemoved => "real-removed",
            EventKind::WeightChanged => "weight-changed",
            EventKind::ServiceAdded => "service-added",
            EventKind::ServiceRemoved => "service-removed",
            EventKind::CheckChanged => "check-changed",
            EventKind::ServiceDown => "service-down",
            EventKind::ServiceUp => "service-up",
            EventKind::ConfigApplied => "config-applied",
            EventKind::Maintenance => "maintenance",
            EventKind::VipAnnounced => "vip-announced",
            EventKind::VipWithdrawn => "vip-withdrawn",
        }
    }
}

/// One entry of lbd's event history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Increases by one per event since lbd started, so a reader can tell what it missed.
    pub seq: u64,
    /// UTC, RFC 3339 with milliseconds.
    pub time: String,
    pub kind: EventKind,
    /// `TCP 10.0.0.1:80` style, when the event concerns a service (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// When the event concerns a real (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real: Option<IpAddr>,
    pub reason: String,
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

    #[test]
    fn an_answer_missing_a_field_the_server_always_sends_is_refused() {
        let full = r#"{"vip":"10.0.0.1","port":80,"proto":"tcp","check":"none","persistent":0,"usable_reals":0,
            "active_flows":0,"counters":{"packets":0,"bytes":0,"new_flows":0},"reals":[]}"#;
        assert_eq!(serde_json::from_str::<ServiceView>(full).unwrap().key().to_string(), "TCP 10.0.0.1:80");
        let without = full.replace(r#""persistent":0,"#, "");
        let e = serde_json::from_str::<ServiceView>(&without).unwrap_err().to_string();
        assert!(e.contains("missing field `persistent`"), "{e}");
    }

    #[test]
    fn event_kinds_are_spelt_as_on_the_wire() {
        for k in [EventKind::RealUp, EventKind::ServiceDown, EventKind::VipWithdrawn, EventKind::ConfigApplied] {
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::Value::String(k.as_str().into()));
        }
    }
}
