//! The manager's TOML configuration: nodes, origin groups with their members and sources, edge pools and the load
//! balancer's services; checked whole before anything starts, every mistake named with where it is.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use api_types::lb::{Proto, ServiceKey};
use serde::{Deserialize, Serialize};
use svc::client::BaseUrl;
use svc::Dur;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Toml(PathBuf, String),
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Origin,
    Edge,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Origin => "origin",
            Role::Edge => "edge",
        }
    }
}

/// A relay node: from the config or self-registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    pub role: Role,
    /// The node's HTTP API (`http://HOST:PORT`): keepalives and commands go there.
    pub api: String,
    /// The node's RTMP address (`IP:PORT`): edges pull from an origin's, the LB forwards to an edge's IP.
    pub rtmp: SocketAddr,
    /// The node's HTTP media address (HTTP-FLV, RTMPT), if any.
    #[serde(default)]
    pub http: Option<SocketAddr>,
    /// Edges: the pool it belongs to (default: the first pool).
    #[serde(default)]
    pub pool: Option<String>,
}

impl NodeSpec {
    pub fn check(&self) -> Result<(), String> {
        if !valid_name(&self.name) {
            return Err(format!("node name {:?}: use 1-64 of A-Z a-z 0-9 - _ .", self.name));
        }
        BaseUrl::parse(&self.api).map_err(|e| format!("node {}: api: {e}", self.name))?;
        if self.rtmp.port() == 0 || self.rtmp.ip().is_unspecified() {
            return Err(format!("node {}: rtmp {} must be an address others reach it at", self.name, self.rtmp));
        }
        if self.rtmp.is_ipv6() {
            return Err(format!("node {}: rtmp {}: IPv6 relay addresses are not supported yet", self.name, self.rtmp));
        }
        Ok(())
    }
}

/// Names of nodes, groups, pools: the rule relays check their --node-name with too.
pub use svc::names::valid_cluster_name as valid_name;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub node: String,
    /// Higher is preferred (as in VRRP): the highest-priority healthy member is active.
    pub priority: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Replication {
    /// Every edge pulls every stream the group ingests, before any player asks (EMS's behaviour): a player's
    /// first frame comes from the edge's GOP cache.
    #[default]
    PrePull,
    /// Edges pull a stream when its first player arrives.
    OnDemand,
}

/// A stream a group's active origin pulls: an IP camera or an encoder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The stream key it is ingested as (in the group's app).
    pub key: String,
    /// `rtmp://HOST[:PORT]/APP/KEY` or `rtsp://[USER:PASS@]HOST[:PORT]/PATH`.
    pub url: String,
}

/// The URL without credentials, for logs, events and the API.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (auth, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match auth.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}{tail}"),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// The URL with any `user:pass@` removed: how a relay lists a source, so the two compare.
pub fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (auth, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
            format!("{scheme}://{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// The relay's own parser of source URLs (what `PUT /sources` on the origin runs), so nothing the manager sends is
/// refused there later.
fn check_source_url(url: &str) -> Result<(), String> {
    match api_types::relay::SourceUrl::parse(url) {
        Ok(_) => Ok(()),
        // The relay's message names the URL again; ours names it (redacted) already.
        Err(api_types::relay::SourceError::BadUrl(_, why)) => Err(why.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    /// The RTMP app its streams live in, at origins and edges (one group per app).
    pub app: String,
    pub members: Vec<Member>,
    /// Whether a returning higher-priority member takes the group back (make-before-break).
    #[serde(default)]
    pub failback: bool,
    #[serde(default)]
    pub replication: Replication,
    #[serde(default)]
    pub sources: Vec<Source>,
    /// The group's ingest address: an LB service (`VIP:PORT`) whose only real is the active member, so publishers
    /// and encoders push to one address that follows failovers.
    #[serde(default)]
    pub ingest: Option<String>,
}

impl Group {
    /// The ingest service, parsed (checked at load).
    pub fn ingest_service(&self) -> Option<ServiceKey> {
        self.ingest.as_deref().and_then(|s| parse_service(s).ok())
    }

    /// Members by preference: highest priority first.
    pub fn by_priority(&self) -> Vec<&Member> {
        let mut m: Vec<&Member> = self.members.iter().collect();
        m.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.node.cmp(&b.node)));
        m
    }

    pub fn priority_of(&self, node: &str) -> Option<u32> {
        self.members.iter().find(|m| m.node == node).map(|m| m.priority)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub name: String,
    /// An alarm is raised while fewer edges than this are in service.
    #[serde(default)]
    pub min: usize,
    /// The most edges the pool may have (autoscaling's ceiling); none: no ceiling.
    #[serde(default)]
    pub max: Option<usize>,
    /// Autoscaling: edges started and stopped through a provider on the pool's load.
    #[serde(default)]
    pub scale: Option<Scale>,
}

/// What the autoscaler measures per edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    /// Outbound bit rate (bit/s), from the edges' own counters.
    #[default]
    Bitrate,
    Players,
}

/// A pool's autoscaling policy (EvoStream's bandwidth rule, Pexip's bursting: always-on edges, started ones with a
/// minimum lifetime, an overflow pool started last and stopped first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    #[serde(default)]
    pub signal: Signal,
    /// What one edge carries: bit/s for `bitrate`, players for `players`.
    pub capacity: f64,
    /// Start an edge when the pool's in-service edges are loaded to this fraction of their capacity...
    pub scale_out_at: f64,
    /// ...and stop a started one when the load would fit under this fraction with one edge fewer.
    pub scale_in_at: f64,
    /// Between two scaling actions of the pool.
    #[serde(default = "default_cooldown")]
    pub cooldown: Dur,
    /// A started edge must register and come up within this; no second start meanwhile.
    #[serde(default = "default_warm_up")]
    pub warm_up: Dur,
    /// A started edge is not stopped before this (cloud billing granularity).
    #[serde(default = "default_lifetime")]
    pub min_lifetime: Dur,
    /// The provider executable: `PROVIDER start|stop|list NODE POOL` (see manager/README.md).
    pub provider: PathBuf,
    #[serde(default = "default_provider_timeout")]
    pub provider_timeout: Dur,
    /// Extra environment for the provider (cloud region, lab prefix...).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// This pool is the overflow of another: it starts edges only when that pool is at its max, and stops first.
    #[serde(default)]
    pub overflow_of: Option<String>,
}

fn default_cooldown() -> Dur {
    Dur::secs(60)
}
fn default_warm_up() -> Dur {
    Dur::secs(60)
}
fn default_lifetime() -> Dur {
    Dur::secs(600)
}
fn default_provider_timeout() -> Dur {
    Dur::secs(60)
}

/// One API address or several (one per LB node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMore {
    One(String),
    More(Vec<String>),
}

/// The load balancer the manager puts edges into: one lbd, or every node of an ECMP/anycast LB tier (each gets
/// the same reals, so a flow that moves between nodes finds its edge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lb {
    /// lbd's HTTP API (`lbd --api`), or a list of them.
    pub api: OneOrMore,
    /// Its bearer token (default: the manager's own token file).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The VIP services edges serve: `VIP:PORT` (TCP) or `VIP:PORT/udp`.
    pub services: Vec<String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    100
}

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: SocketAddr,
    token_file: PathBuf,
    #[serde(default)]
    state_file: Option<PathBuf>,
    #[serde(default = "default_keepalive")]
    keepalive: Dur,
    #[serde(default = "default_failover")]
    failover_time: Dur,
    #[serde(default = "default_drain")]
    drain_timeout: Dur,
    #[serde(default = "default_events")]
    events_kept: usize,
    /// The console's sample interval and page refresh.
    #[serde(default = "default_refresh")]
    console_refresh: Dur,
    /// Where the graphs' history is kept (default: history.bin beside the state file; none without one).
    #[serde(default)]
    history_file: Option<PathBuf>,
    /// The most self-registered nodes (edges that `POST /api/v1/nodes`) kept at once; 0: no self-registration.
    #[serde(default = "default_max_registered")]
    max_registered: usize,
    /// A self-registered node that has never answered a keepalive within this is forgotten.
    #[serde(default = "default_registration_expiry")]
    registration_expiry: Dur,
    #[serde(default)]
    lb: Option<Lb>,
    #[serde(default, rename = "node")]
    nodes: Vec<NodeSpec>,
    #[serde(default, rename = "group")]
    groups: Vec<Group>,
    #[serde(default, rename = "pool")]
    pools: Vec<Pool>,
}

fn default_keepalive() -> Dur {
    Dur::secs(3)
}
fn default_failover() -> Dur {
    Dur::secs(10)
}
fn default_drain() -> Dur {
    Dur::secs(600)
}
fn default_events() -> usize {
    1000
}
fn default_max_registered() -> usize {
    256
}
fn default_registration_expiry() -> Dur {
    Dur::secs(600)
}
fn default_refresh() -> Dur {
    Dur::secs(15)
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub token: String,
    pub state_file: Option<PathBuf>,
    pub keepalive: Duration,
    pub failover_time: Duration,
    pub drain_timeout: Duration,
    pub events_kept: usize,
    pub console_refresh: Duration,
    pub history_file: Option<PathBuf>,
    pub max_registered: usize,
    pub registration_expiry: Duration,
    pub lb: Option<LbConfig>,
    pub nodes: Vec<NodeSpec>,
    pub groups: Vec<Group>,
    pub pools: Vec<Pool>,
}

#[derive(Debug, Clone)]
pub struct LbConfig {
    /// Every LB node's API.
    pub apis: Vec<BaseUrl>,
    pub token: String,
    pub services: Vec<ServiceKey>,
    pub weight: u32,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.into(), e))?;
        Config::parse(&text, path)
    }

    /// Parses and checks `text`; `path` names the file in errors and anchors relative token paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let f: File = toml::from_str(text).map_err(|e| ConfigError::Toml(path.into(), e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let read = |p: &Path| -> Result<String, String> {
            let b = svc::auth::Bearer::from_file(&dir.join(p))?;
            Ok(b.value().unwrap_or_default().to_string())
        };
        let token = read(&f.token_file).map_err(|e| invalid(format!("token_file: {e}")))?;
        if f.keepalive.0 < Duration::from_millis(100) {
            return Err(invalid("keepalive must be at least 100ms"));
        }
        if f.failover_time.0 < f.keepalive.0 {
            return Err(invalid("failover_time must be at least one keepalive"));
        }
        if f.registration_expiry.0 < f.failover_time.0 {
            return Err(invalid("registration_expiry must be at least failover_time (a node needs time to answer)"));
        }
        if f.max_registered > MAX_REGISTERED {
            return Err(invalid(format!(
                "max_registered {} is above {MAX_REGISTERED} (each node costs memory, history and a keepalive)",
                f.max_registered
            )));
        }
        let mut names = BTreeSet::new();
        for n in &f.nodes {
            n.check().map_err(invalid)?;
            if !names.insert(n.name.as_str()) {
                return Err(invalid(format!("node {:?} is defined twice", n.name)));
            }
        }
        let pools: BTreeSet<&str> = f.pools.iter().map(|p| p.name.as_str()).collect();
        if pools.len() != f.pools.len() {
            return Err(invalid("a pool name is used twice"));
        }
        for p in &f.pools {
            if !valid_name(&p.name) {
                return Err(invalid(format!("pool name {:?}: use 1-64 of A-Z a-z 0-9 - _ .", p.name)));
            }
            if p.max.is_some_and(|m| m < p.min.max(1)) {
                return Err(invalid(format!("pool {}: max must be at least min and at least 1", p.name)));
            }
            if let Some(sc) = &p.scale {
                let at = format!("pool {}: scale", p.name);
                if p.max.is_none() {
                    return Err(invalid(format!("{at}: an autoscaled pool needs a max")));
                }
                if sc.capacity.is_nan() || sc.capacity <= 0.0 {
                    return Err(invalid(format!("{at}: capacity must be above 0")));
                }
                if !(0.0 < sc.scale_in_at && sc.scale_in_at < sc.scale_out_at && sc.scale_out_at <= 1.0) {
                    return Err(invalid(format!("{at}: need 0 < scale_in_at < scale_out_at <= 1")));
                }
                if let Some(o) = &sc.overflow_of {
                    if o == &p.name || !pools.contains(o.as_str()) {
                        return Err(invalid(format!("{at}: overflow_of names no other pool ({o:?})")));
                    }
                }
            }
        }
        for n in &f.nodes {
            match (&n.pool, n.role) {
                (Some(p), Role::Edge) if !pools.contains(p.as_str()) => {
                    return Err(invalid(format!("node {}: unknown pool {p:?}", n.name)))
                }
                (Some(_), Role::Origin) => return Err(invalid(format!("node {}: only edges are in pools", n.name))),
                _ => {}
            }
        }
        let mut apps = BTreeMap::new();
        let mut gnames = BTreeSet::new();
        for g in &f.groups {
            let at = format!("group {:?}", g.name);
            if !valid_name(&g.name) || !gnames.insert(g.name.as_str()) {
                return Err(invalid(format!("{at}: a group needs a unique name of A-Z a-z 0-9 - _ .")));
            }
            if !valid_stream_name(&g.app) {
                return Err(invalid(format!("{at}: app {:?} is not a valid RTMP app name", g.app)));
            }
            if let Some(other) = apps.insert(g.app.as_str(), g.name.as_str()) {
                return Err(invalid(format!("{at}: app {:?} already belongs to group {other:?}", g.app)));
            }
            if g.members.is_empty() {
                return Err(invalid(format!("{at}: no members")));
            }
            let mut prios = BTreeMap::new();
            for m in &g.members {
                let Some(node) = f.nodes.iter().find(|n| n.name == m.node) else {
                    return Err(invalid(format!("{at}: unknown node {:?} (define it in a [[node]] table)", m.node)));
                };
                if node.role != Role::Origin {
                    return Err(invalid(format!("{at}: member {:?} is an edge; members are origins", m.node)));
                }
                if let Some(other) = prios.insert(m.priority, m.node.as_str()) {
                    return Err(invalid(format!(
                        "{at}: priority {} is given to both {other:?} and {:?}; priorities must differ",
                        m.priority, m.node
                    )));
                }
            }
            if g.members.iter().map(|m| &m.node).collect::<BTreeSet<_>>().len() != g.members.len() {
                return Err(invalid(format!("{at}: a node is a member twice")));
            }
            if let Some(i) = &g.ingest {
                let svc = parse_service(i).map_err(|e| invalid(format!("{at}: ingest: {e}")))?;
                if f.lb.is_none() {
                    return Err(invalid(format!("{at}: ingest {i} needs an [lb] to put the active member into")));
                }
                if f.lb.as_ref().is_some_and(|lb| lb.services.iter().any(|s| parse_service(s).ok() == Some(svc))) {
                    return Err(invalid(format!("{at}: ingest {i} is one of the edges' services (lb.services)")));
                }
            }
            let mut keys = BTreeSet::new();
            for s in &g.sources {
                if !valid_stream_name(&s.key) || !keys.insert(s.key.as_str()) {
                    return Err(invalid(format!("{at}: source key {:?} is invalid or used twice", s.key)));
                }
                check_source_url(&s.url).map_err(|why| {
                    invalid(format!("{at}: source {:?}: URL {:?} does not parse: {why}", s.key, redact(&s.url)))
                })?;
            }
        }
        let lb = match f.lb {
            None => None,
            Some(lb) => {
                let list = match &lb.api {
                    OneOrMore::One(a) => vec![a.clone()],
                    OneOrMore::More(v) => v.clone(),
                };
                if list.is_empty() {
                    return Err(invalid("lb.api: name at least one lbd API"));
                }
                let apis = list
                    .iter()
                    .map(|a| BaseUrl::parse(a).map_err(|e| invalid(format!("lb.api: {e}"))))
                    .collect::<Result<Vec<_>, _>>()?;
                if apis.iter().map(|a| a.to_string()).collect::<BTreeSet<_>>().len() != apis.len() {
                    return Err(invalid("lb.api: an LB node is listed twice"));
                }
                let token = match &lb.token_file {
                    Some(p) => read(p).map_err(|e| invalid(format!("lb.token_file: {e}")))?,
                    None => token.clone(),
                };
                let services = lb
                    .services
                    .iter()
                    .map(|s| parse_service(s).map_err(|e| invalid(format!("lb.services: {e}"))))
                    .collect::<Result<Vec<_>, _>>()?;
                if services.is_empty() {
                    return Err(invalid("lb.services: name at least one VIP:PORT the edges serve"));
                }
                if lb.weight == 0 || lb.weight > api_types::lb::MAX_WEIGHT {
                    return Err(invalid(format!(
                        "lb.weight {} is out of range 1..={} (lbd refuses other weights)",
                        lb.weight,
                        api_types::lb::MAX_WEIGHT
                    )));
                }
                Some(LbConfig { apis, token, services, weight: lb.weight })
            }
        };
        Ok(Config {
            listen: f.listen,
            token,
            state_file: f.state_file.as_ref().map(|p| dir.join(p)),
            keepalive: f.keepalive.into(),
            failover_time: f.failover_time.into(),
            drain_timeout: f.drain_timeout.into(),
            events_kept: f.events_kept.max(10),
            console_refresh: f.console_refresh.0.max(Duration::from_secs(1)),
            history_file: f
                .history_file
                .map(|p| dir.join(p))
                .or_else(|| f.state_file.as_ref().map(|s| dir.join(s).with_file_name("history.bin"))),
            max_registered: f.max_registered,
            registration_expiry: f.registration_expiry.into(),
            lb,
            nodes: f.nodes,
            groups: f.groups,
            pools: f.pools,
        })
    }

    /// The pool an edge belongs to: its own, else the first pool.
    pub fn pool_of(&self, node: &NodeSpec) -> Option<String> {
        node.pool.clone().or_else(|| self.pools.first().map(|p| p.name.clone()))
    }
}

/// The ceiling of `max_registered`.
pub const MAX_REGISTERED: usize = 10_000;

/// The RTMP app/key rule the relay applies (so nothing we configure is refused by a relay later).
pub fn valid_stream_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// `VIP:PORT` (TCP) or `VIP:PORT/udp`.
pub fn parse_service(s: &str) -> Result<ServiceKey, String> {
    let (addr, proto) = match s.rsplit_once('/') {
        Some((a, "tcp")) => (a, Proto::Tcp),
        Some((a, "udp")) => (a, Proto::Udp),
        Some((_, p)) => return Err(format!("{s:?}: unknown protocol {p:?} (tcp or udp)")),
        None => (s, Proto::Tcp),
    };
    ServiceKey::parse(addr, proto).map_err(|e| format!("{s:?}: {e}"))
}

/// The real address the LB forwards an edge's flows to.
pub fn real_of(node: &NodeSpec) -> IpAddr {
    node.rtmp.ip()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempdir::Dir {
        tempdir::Dir::new()
    }

    mod tempdir {
        /// A directory removed on drop, holding a token file.
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let p = std::env::temp_dir().join(format!(
                    "sm-config-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                std::fs::create_dir_all(&p).unwrap();
                std::fs::write(p.join("token"), "0123456789abcdef-token\n").unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    const GOOD: &str = r#"
listen = "127.0.0.1:9300"
token_file = "token"
failover_time = "5s"
[lb]
api = "http://10.0.0.1:9400"
services = ["10.0.0.100:1935", "10.0.0.100:8080/tcp"]
[[pool]]
name = "edges"
min = 2
[[node]]
name = "o1"
role = "origin"
api = "http://10.0.0.11:8081"
rtmp = "10.0.0.11:1935"
[[node]]
name = "o2"
role = "origin"
api = "http://10.0.0.12:8081"
rtmp = "10.0.0.12:1935"
[[node]]
name = "e1"
role = "edge"
api = "http://10.0.0.21:8081"
rtmp = "10.0.0.21:1935"
[[group]]
name = "cams"
app = "live"
failback = true
members = [{ node = "o1", priority = 100 }, { node = "o2", priority = 50 }]
sources = [{ key = "cam1", url = "rtsp://user:pw@10.0.0.50:8554/cam" }, { key = "enc", url = "rtmp://10.0.0.51/live/enc" }]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let d = dir();
        Config::parse(text, &d.0.join("manager.toml"))
    }

    #[test]
    fn a_good_config() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.failover_time, Duration::from_secs(5));
        assert_eq!(c.keepalive, Duration::from_secs(3));
        assert_eq!(c.token, "0123456789abcdef-token");
        assert_eq!(c.groups[0].by_priority()[0].node, "o1");
        assert_eq!(c.lb.as_ref().unwrap().services.len(), 2);
        let two =
            parse(&GOOD.replace(
                "api = \"http://10.0.0.1:9400\"",
                "api = [\"http://10.0.0.1:9400\", \"http://10.0.0.3:9400\"]",
            ))
            .unwrap();
        assert_eq!(two.lb.unwrap().apis.len(), 2);
        assert_eq!(c.pool_of(&c.nodes[2]).as_deref(), Some("edges"));
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (GOOD.replace(r#"node = "o2", priority = 50"#, r#"node = "o9", priority = 50"#), "unknown node \"o9\""),
            (GOOD.replace("priority = 50", "priority = 100"), "priority 100 is given to both"),
            (GOOD.replace("rtsp://user:pw@10.0.0.50:8554/cam", "rtsp//10.0.0.50/cam"), "does not parse"),
            (GOOD.replace("rtmp://10.0.0.51/live/enc", "http://10.0.0.51/live/enc"), "rtmp:// or rtsp://"),
            (GOOD.replace("rtmp://10.0.0.51/live/enc", "rtmp://10.0.0.51/live"), "missing /KEY"),
            // The relay's own parser: what it would refuse at PUT /sources is refused here.
            (GOOD.replace("rtsp://user:pw@10.0.0.50:8554/cam", "rtsp://[::1:554/x"), "does not parse"),
            (GOOD.replace("services = [", "weight = 70000\nservices = ["), "lb.weight 70000 is out of range 1..=65535"),
            (GOOD.replace("services = [", "weight = 0\nservices = ["), "out of range"),
            (
                GOOD.replace("failover_time = \"5s\"", "failover_time = \"5s\"\nmax_registered = 20000"),
                "max_registered",
            ),
            (
                GOOD.replace("failover_time = \"5s\"", "failover_time = \"5s\"\nregistration_expiry = \"1s\""),
                "registration_expiry must be at least failover_time",
            ),
            (GOOD.replace(r#"node = "o2", priority"#, r#"node = "e1", priority"#), "is an edge"),
            (GOOD.replace("10.0.0.100:8080/tcp", "10.0.0.100:8080/sctp"), "unknown protocol"),
            (GOOD.replace("failover_time = \"5s\"", "failover_time = \"1s\""), "at least one keepalive"),
            (GOOD.replace("token_file = \"token\"", "token_file = \"missing\""), "token_file"),
            (GOOD.replace("name = \"o2\"", "name = \"o1\""), "defined twice"),
            (GOOD.replace("[lb]", "[lb]\nbogus = 1"), "unknown field"),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "wanted {want:?} in {e:?}");
        }
        // A password in a bad URL never reaches the error.
        let e = parse(&GOOD.replace("8554/cam", "85x4/cam")).unwrap_err().to_string();
        assert!(e.contains("***@") && !e.contains("pw"), "{e}");
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("rtsp://u:p@h:554/a/b"), "rtsp://***@h:554/a/b");
        assert_eq!(redact("rtmp://h/live/k"), "rtmp://h/live/k");
        assert_eq!(without_credentials("rtsp://u:p@h:554/a"), "rtsp://h:554/a");
        assert_eq!(without_credentials("rtsp://***@h:554/a"), "rtsp://h:554/a");
    }
}
