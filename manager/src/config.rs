//! The manager's TOML configuration: nodes, origin groups with their members and sources, edge pools and the load
//! balancer's services; checked whole before anything starts, every mistake named with where it is.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use api_types::lb::{Proto, ServiceKey};
use serde::{Deserialize, Serialize};
use svc::client::BaseUrl;
use svc::config::{in_range, Keys};
use svc::Dur;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Toml(PathBuf, String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Settings(#[from] svc::config::ConfigError),
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

/// A source of a stream of a group: an IP camera or an encoder the active origin pulls, an encoder that pushes, or
/// a slate. Several entries with one key are that key's redundant sources, in order of preference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The stream key it is ingested as (in the group's app).
    pub key: String,
    /// `rtmp://HOST[:PORT]/APP/KEY` or `rtsp://[USER:PASS@]HOST[:PORT]/PATH` to pull; none (or empty) for an
    /// encoder that pushes `KEY?role=ROLE` to the group's ingest address; `testcard` or `file:PATH` for the slate.
    #[serde(default)]
    pub url: String,
    /// Which of the key's sources: `main` by default for a key's first entry, `backup` for its second; `slate`
    /// last. A pushed encoder names it in its stream key (`cam1?role=backup`).
    #[serde(default)]
    pub role: Option<String>,
}

impl Group {
    /// The group's keys in the order they first appear.
    pub fn source_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for s in &self.sources {
            if !keys.contains(&s.key) {
                keys.push(s.key.clone());
            }
        }
        keys
    }

    /// The sources of `key`, each with its role (defaults filled in), in order of preference.
    pub fn key_sources(&self, key: &str) -> Vec<(String, &Source)> {
        self.sources
            .iter()
            .filter(|s| s.key == key)
            .enumerate()
            .map(|(i, s)| {
                let role = s.role.clone().unwrap_or_else(|| {
                    match i {
                        0 => api_types::relay::MAIN_ROLE,
                        1 => "backup",
                        _ => "",
                    }
                    .to_string()
                });
                (role, s)
            })
            .collect()
    }

    /// What `PUT /sources/{app}/{key}` on the active member carries for `key`: a lone pulled main as `{url}` (as
    /// before redundant sources), else the ordered list with the group's timings.
    pub fn source_body(&self, key: &str) -> api_types::relay::SourceBody {
        let list = self.key_sources(key);
        let timed = self.source_timeout.is_some() || self.source_stable_for.is_some();
        if let [(role, s)] = &list[..] {
            if role == api_types::relay::MAIN_ROLE && !s.url.is_empty() && !timed {
                return api_types::relay::SourceBody { url: s.url.clone(), ..Default::default() };
            }
        }
        api_types::relay::SourceBody {
            sources: list
                .into_iter()
                .map(|(role, s)| api_types::relay::SourceEntry {
                    role,
                    url: (!s.url.is_empty()).then(|| s.url.clone()),
                })
                .collect(),
            source_timeout: self.source_timeout,
            source_stable_for: self.source_stable_for,
            ..Default::default()
        }
    }
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
    /// A key's live source is given up after delivering nothing this long (default 1 s; 100ms to 60s).
    #[serde(default)]
    pub source_timeout: Option<api_types::Dur>,
    /// A recovered preferred source delivers this long before it is switched back to (default 5 s; 0 to 1h).
    #[serde(default)]
    pub source_stable_for: Option<api_types::Dur>,
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

/// The file as written: every top-level setting with its default (in `Default`), documented one row each in
/// manager/README.md ("Settings"; a unit test fails on a setting without its row).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct File {
    /// The API's address (required).
    pub listen: Option<SocketAddr>,
    /// This smd's name among the smd of an HA deployment (default: the host's name).
    pub name: Option<String>,
    /// The URL the other smd forward writes to (default: `http://` + `listen` unless it is a wildcard).
    pub advertise: Option<String>,
    /// Where the state lives: today's `state_file` (the default) or etcd, shared by several smd.
    pub store: Option<StoreFile>,
    /// The bearer token's file (required).
    pub token_file: Option<PathBuf>,
    pub state_file: Option<PathBuf>,
    pub keepalive: Dur,
    /// The default of the four timings below, as one setting was all four before they were split.
    pub failover_time: Dur,
    /// A node that has not answered for this long is down (default: failover_time).
    pub node_down_after: Option<Dur>,
    /// After a start no member is declared gone, no active member replaced and no pool scaled for this long, so
    /// every node has had time to answer (default: failover_time).
    pub startup_hold: Option<Dur>,
    /// A handover (failover, failback) completes when the new member ingests every source, or after this
    /// (default: failover_time).
    pub handover_timeout: Option<Dur>,
    /// A group's source missing from its active member raises `source-not-ingesting` after this (default:
    /// failover_time).
    pub source_alarm_after: Option<Dur>,
    pub drain_timeout: Dur,
    pub events_kept: usize,
    /// The console page's refresh.
    pub console_refresh: Dur,
    /// The graphs' sample interval (their finest step), independent of the page's refresh.
    pub history_sample: Dur,
    /// Where the graphs' history is kept (default: history.bin beside the state file; none without one).
    pub history_file: Option<PathBuf>,
    /// The most self-registered nodes (edges that `POST /api/v1/nodes`) kept at once; 0: no self-registration.
    pub max_registered: usize,
    /// A self-registered node that has never answered a keepalive within this is forgotten.
    pub registration_expiry: Dur,
    pub lb: Option<Lb>,
    #[serde(rename = "node")]
    pub nodes: Vec<NodeSpec>,
    #[serde(rename = "group")]
    pub groups: Vec<Group>,
    #[serde(rename = "pool")]
    pub pools: Vec<Pool>,
}

impl Default for File {
    fn default() -> Self {
        File {
            listen: None,
            name: None,
            advertise: None,
            store: None,
            token_file: None,
            state_file: None,
            keepalive: Dur::secs(3),
            failover_time: Dur::secs(10),
            node_down_after: None,
            startup_hold: None,
            handover_timeout: None,
            source_alarm_after: None,
            drain_timeout: Dur::secs(600),
            events_kept: 1000,
            console_refresh: Dur::secs(15),
            history_sample: Dur::secs(5),
            history_file: None,
            max_registered: 256,
            registration_expiry: Dur::secs(600),
            lb: None,
            nodes: Vec::new(),
            groups: Vec::new(),
            pools: Vec::new(),
        }
    }
}

/// `[store]` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    pub kind: StoreKind,
    #[serde(default)]
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub lease_ttl: Option<Dur>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// `state_file` on this machine: one smd (the single-box deployment).
    File,
    /// etcd: several smd, one elected leader acts (see manager/README.md, "High availability").
    Etcd,
}

/// The checked store.
#[derive(Debug, Clone, PartialEq)]
pub enum Store {
    File,
    Etcd(EtcdConfig),
}

/// etcd as smd uses it: endpoints, the key prefix of this deployment, the leader's lease and the credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    /// Every key smd writes starts with this (several deployments can share one etcd).
    pub prefix: String,
    /// The leader's lease: a dead leader is replaced this long after its last renewal, and a leader that cannot
    /// renew stops acting before it lapses.
    pub lease_ttl: Duration,
    /// (user, password) for etcd's authentication.
    pub user: Option<(String, String)>,
    pub tls: Option<EtcdTls>,
}

/// PEM contents, read when the config is loaded (so `--check` names a missing file).
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdTls {
    pub ca: Vec<u8>,
    /// The client certificate and its key, for etcd's `--client-cert-auth`.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/smd";
/// The default lease.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// This smd's name (see [`File::name`]).
    pub name: String,
    /// Where other smd reach this one's API.
    pub advertise: String,
    pub store: Store,
    pub token: String,
    pub state_file: Option<PathBuf>,
    pub keepalive: Duration,
    pub failover_time: Duration,
    /// See [`File`] for these four.
    pub node_down_after: Duration,
    pub startup_hold: Duration,
    pub handover_timeout: Duration,
    pub source_alarm_after: Duration,
    pub drain_timeout: Duration,
    pub events_kept: usize,
    pub console_refresh: Duration,
    pub history_sample: Duration,
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
        let file = svc::config::File::parse(text.to_string(), path)?;
        let hint = "the settings are in manager/README.md (\"Settings\")";
        let f: File = svc::config::merge(Some(&file), toml::Table::new(), File::keys(), Keys::Snake, hint)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let read = |p: &Path| -> Result<String, String> {
            let b = svc::auth::Bearer::from_file(&dir.join(p))?;
            Ok(b.value().unwrap_or_default().to_string())
        };
        let listen =
            f.listen.ok_or_else(|| invalid("listen is required: the API's address, e.g. \"10.0.0.2:9300\""))?;
        let token_file =
            f.token_file.as_ref().ok_or_else(|| invalid("token_file is required: the API token's file"))?;
        let token = read(token_file).map_err(|e| invalid(format!("token_file: {e}")))?;
        let t = f.timings()?;
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
            in_range(&format!("pool {}: min", p.name), p.min, 0, MAX_POOL, "more edges than a manager keeps alive")?;
            if let Some(m) = p.max {
                in_range(&format!("pool {}: max", p.name), m, 1, MAX_POOL, "more edges than a manager keeps alive")?;
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
                let day = Dur(svc::duration::MAX);
                let why = "a zero would start or stop edges in a loop, or give up on a provider at once";
                in_range(&format!("{at}.cooldown"), sc.cooldown, Dur::secs(1), day, why)?;
                in_range(&format!("{at}.warm_up"), sc.warm_up, Dur::secs(1), day, why)?;
                in_range(&format!("{at}.provider_timeout"), sc.provider_timeout, Dur::secs(1), day, why)?;
                in_range(
                    &format!("{at}.min_lifetime"),
                    sc.min_lifetime,
                    Dur::secs(0),
                    day,
                    "durations are at most a day",
                )?;
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
            for s in &g.sources {
                if !valid_stream_name(&s.key) {
                    return Err(invalid(format!("{at}: source key {:?} is invalid", s.key)));
                }
            }
            for key in g.source_keys() {
                let list = g.key_sources(&key);
                if list.len() == 1 && list[0].1.url.is_empty() && list[0].1.role.is_none() {
                    return Err(invalid(format!(
                        "{at}: source {key:?} has no url: give the URL to pull, or role = \"...\" for an encoder that pushes (with a backup entry of the same key)"
                    )));
                }
                if let Some((i, _)) = list.iter().enumerate().find(|(_, (role, _))| role.is_empty()) {
                    return Err(invalid(format!(
                        "{at}: source {key:?} entry {}: a key's third and later sources need a role (e.g. role = \"backup2\" or \"slate\")",
                        i + 1
                    )));
                }
                // The relay's own check (what PUT /sources would refuse): roles, order, URLs, timings.
                match g.source_body(&key).plan() {
                    Ok(_) => {}
                    // The URL that does not parse, named (redacted) with the relay's reason.
                    Err(api_types::relay::SourceError::BadUrl(_, why)) => {
                        let bad = list
                            .iter()
                            .map(|(_, s)| s)
                            .find(|s| !s.url.is_empty() && api_types::relay::SourceUrl::parse(&s.url).is_err())
                            .map_or(String::new(), |s| redact(&s.url));
                        return Err(invalid(format!("{at}: source {key:?}: URL {bad:?} does not parse: {why}")));
                    }
                    Err(e) => return Err(invalid(format!("{at}: source {key:?}: {e}"))),
                }
            }
        }
        let store = f.store_config(dir)?;
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
        if matches!(store, Store::Etcd(_)) && f.state_file.is_some() {
            return Err(invalid(
                "state_file is the file store's: with [store] kind = \"etcd\" the state lives in etcd (remove \
                 state_file, or set kind = \"file\")",
            ));
        }
        let name = match &f.name {
            Some(n) => n.clone(),
            None => host_name(),
        };
        if !valid_name(&name) {
            return Err(invalid(format!(
                "name {name:?}: use 1-64 of A-Z a-z 0-9 - _ . (default: the host's name; set `name` when it is not one)"
            )));
        }
        let advertise = match &f.advertise {
            Some(a) => {
                let u = BaseUrl::parse(a).map_err(|e| invalid(format!("advertise: {e}")))?;
                if !u.prefix.is_empty() {
                    return Err(invalid(format!("advertise {a:?}: give http://HOST:PORT without a path")));
                }
                a.trim_end_matches('/').to_string()
            }
            None if listen.ip().is_unspecified() && matches!(store, Store::Etcd(_)) => {
                return Err(invalid(format!(
                    "advertise is required when listen ({listen}) is a wildcard: the other smd forward writes to it \
                     (e.g. advertise = \"http://10.0.0.2:{}\")",
                    listen.port()
                )))
            }
            None => format!("http://{listen}"),
        };
        Ok(Config {
            listen,
            name,
            advertise,
            store,
            token,
            state_file: f.state_file.as_ref().map(|p| dir.join(p)),
            keepalive: f.keepalive.into(),
            failover_time: f.failover_time.into(),
            node_down_after: t.node_down_after,
            startup_hold: t.startup_hold,
            handover_timeout: t.handover_timeout,
            source_alarm_after: t.source_alarm_after,
            drain_timeout: f.drain_timeout.into(),
            events_kept: f.events_kept,
            console_refresh: f.console_refresh.into(),
            history_sample: f.history_sample.into(),
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

/// The four timings `failover_time` stood for, each resolved (its own setting, else `failover_time`).
struct Timings {
    node_down_after: Duration,
    startup_hold: Duration,
    handover_timeout: Duration,
    source_alarm_after: Duration,
}

/// The host's name, the default `name`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

impl File {
    /// `[store]`, checked: endpoints, prefix, lease and credentials (their files read now).
    fn store_config(&self, dir: &Path) -> Result<Store, ConfigError> {
        let Some(st) = &self.store else { return Ok(Store::File) };
        if st.kind == StoreKind::File {
            let etcd_only = !st.endpoints.is_empty()
                || st.prefix.is_some()
                || st.lease_ttl.is_some()
                || st.user.is_some()
                || st.password_file.is_some()
                || st.ca_file.is_some()
                || st.cert_file.is_some()
                || st.key_file.is_some();
            if etcd_only {
                return Err(invalid(
                    "store: endpoints, prefix, lease_ttl, user, password_file, ca_file, cert_file and key_file are \
                     etcd's; set kind = \"etcd\" or remove them",
                ));
            }
            return Ok(Store::File);
        }
        if st.endpoints.is_empty() {
            return Err(invalid(
                "store.endpoints: name the etcd members, e.g. [\"http://10.0.0.5:2379\", \"http://10.0.0.6:2379\", \
                 \"http://10.0.0.7:2379\"]",
            ));
        }
        let mut seen = BTreeSet::new();
        let mut https = 0;
        for e in &st.endpoints {
            let u = BaseUrl::parse(e).map_err(|x| invalid(format!("store.endpoints: {x}")))?;
            if !u.prefix.is_empty() {
                return Err(invalid(format!("store.endpoints: {e:?}: give http(s)://HOST:PORT without a path")));
            }
            if !seen.insert(u.to_string()) {
                return Err(invalid(format!("store.endpoints: {e:?} is listed twice")));
            }
            https += usize::from(u.tls);
        }
        if https != 0 && https != st.endpoints.len() {
            return Err(invalid("store.endpoints: use https:// for all of them or for none"));
        }
        let prefix = st.prefix.clone().unwrap_or_else(|| DEFAULT_PREFIX.to_string());
        let ok = prefix.len() >= 2
            && prefix.len() <= 128
            && prefix.starts_with('/')
            && !prefix.ends_with('/')
            && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'));
        if !ok {
            return Err(invalid(format!(
                "store.prefix {prefix:?}: give a key prefix like \"/smd\" or \"/site-a/smd\" (starts with /, no \
                 trailing /, at most 128 of A-Z a-z 0-9 / - _ .)"
            )));
        }
        let ttl = st.lease_ttl.unwrap_or(Dur(DEFAULT_LEASE_TTL));
        in_range(
            "store.lease_ttl",
            ttl,
            Dur::secs(2),
            Dur::secs(60),
            "below 2 s a lease cannot outlive etcd's own leader election; above a minute a dead smd leaves the \
             cluster unmanaged that long",
        )?;
        if ttl.0.subsec_nanos() != 0 {
            return Err(invalid(format!("store.lease_ttl {ttl}: give whole seconds (etcd's leases are)")));
        }
        let read = |what: &str, p: &Path| -> Result<Vec<u8>, ConfigError> {
            std::fs::read(dir.join(p)).map_err(|e| invalid(format!("store.{what} {}: {e}", dir.join(p).display())))
        };
        let user = match (&st.user, &st.password_file) {
            (Some(u), Some(p)) => {
                let pw = String::from_utf8(read("password_file", p)?)
                    .map_err(|_| invalid("store.password_file: not UTF-8 text"))?;
                let pw = pw.lines().next().unwrap_or("").to_string();
                if u.is_empty() || pw.is_empty() {
                    return Err(invalid("store.user and its password_file must not be empty"));
                }
                Some((u.clone(), pw))
            }
            (None, None) => None,
            _ => return Err(invalid("store.user and store.password_file go together")),
        };
        let identity = match (&st.cert_file, &st.key_file) {
            (Some(c), Some(k)) => Some((read("cert_file", c)?, read("key_file", k)?)),
            (None, None) => None,
            _ => return Err(invalid("store.cert_file and store.key_file go together")),
        };
        let tls = match &st.ca_file {
            Some(ca) if https > 0 => Some(EtcdTls { ca: read("ca_file", ca)?, identity }),
            Some(_) => return Err(invalid("store.ca_file is for https:// endpoints; these are http://")),
            None if https > 0 => {
                return Err(invalid("store.ca_file: https:// endpoints need the CA that signed etcd's certificate"))
            }
            None if identity.is_some() => {
                return Err(invalid("store.cert_file and key_file need https:// endpoints and a ca_file"))
            }
            None => None,
        };
        Ok(Store::Etcd(EtcdConfig { endpoints: st.endpoints.clone(), prefix, lease_ttl: ttl.0, user, tls }))
    }

    /// The keys the file may hold at its top.
    pub fn keys() -> &'static [&'static str] {
        svc::config::fields::<File>()
    }

    /// Checks every top-level number and duration against its range (refused, never clamped) and resolves the
    /// timings.
    fn timings(&self) -> Result<Timings, ConfigError> {
        let day = Dur(svc::duration::MAX);
        let ka = self.keepalive;
        in_range("keepalive", ka, Dur::millis(100), day, "below 100ms the manager reads every node too often")?;
        let ka_why = "at least one keepalive: a node must have had a chance to answer";
        in_range("failover_time", self.failover_time, ka, day, ka_why)?;
        let or_failover = |d: Option<Dur>| d.unwrap_or(self.failover_time);
        let t = Timings {
            node_down_after: or_failover(self.node_down_after).0,
            startup_hold: or_failover(self.startup_hold).0,
            handover_timeout: or_failover(self.handover_timeout).0,
            source_alarm_after: or_failover(self.source_alarm_after).0,
        };
        in_range("node_down_after", Dur(t.node_down_after), ka, day, ka_why)?;
        in_range("startup_hold", Dur(t.startup_hold), Dur::secs(0), day, "durations are at most a day")?;
        in_range("handover_timeout", Dur(t.handover_timeout), ka, day, ka_why)?;
        in_range("source_alarm_after", Dur(t.source_alarm_after), ka, day, ka_why)?;
        in_range(
            "registration_expiry",
            self.registration_expiry,
            Dur(t.node_down_after),
            day,
            "at least node_down_after (failover_time unless set): a registered node needs time to answer",
        )?;
        in_range("drain_timeout", self.drain_timeout, Dur::secs(0), day, "durations are at most a day")?;
        in_range("events_kept", self.events_kept, 10, 1_000_000, "fewer hides a failover's story; each costs memory")?;
        in_range(
            "console_refresh",
            self.console_refresh,
            Dur::secs(1),
            Dur::secs(3600),
            "a page reloading faster than once a second only costs; slower than an hour is no longer a live view",
        )?;
        in_range(
            "history_sample",
            self.history_sample,
            Dur::secs(1),
            Dur::secs(300),
            "the graphs keep whole seconds for a day; coarser than 5 minutes is the month tier's own step",
        )?;
        if self.history_sample.0.subsec_nanos() != 0 {
            return Err(invalid(format!(
                "history_sample {}: give whole seconds (the graphs' step)",
                self.history_sample
            )));
        }
        in_range(
            "max_registered",
            self.max_registered,
            0,
            MAX_REGISTERED,
            "each node costs memory, history and a keepalive",
        )?;
        Ok(t)
    }
}

/// The ceiling of a pool's `min` and `max`.
pub const MAX_POOL: usize = 10_000;

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
                "registration_expiry 1s is out of range 5s..=86400s: at least node_down_after",
            ),
            (GOOD.replace(r#"node = "o2", priority"#, r#"node = "e1", priority"#), "is an edge"),
            (GOOD.replace("10.0.0.100:8080/tcp", "10.0.0.100:8080/sctp"), "unknown protocol"),
            (GOOD.replace("failover_time = \"5s\"", "failover_time = \"1s\""), "at least one keepalive"),
            (GOOD.replace("token_file = \"token\"", "token_file = \"missing\""), "token_file"),
            (GOOD.replace("name = \"o2\"", "name = \"o1\""), "defined twice"),
            (GOOD.replace("[lb]", "[lb]\nbogus = 1"), "manager.toml line 5): unknown field `bogus`"),
            (GOOD.replace("listen =", "lisen ="), "manager.toml line 2: unknown key `lisen`"),
            // Formerly clamped: refused with the range and why.
            (format!("events_kept = 5\n{GOOD}"), "events_kept 5 is out of range 10..=1000000"),
            (format!("console_refresh = \"0.5s\"\n{GOOD}"), "console_refresh 500ms is out of range 1s..=3600s"),
            (format!("history_sample = \"10m\"\n{GOOD}"), "history_sample 600s is out of range 1s..=300s"),
            (format!("history_sample = \"1.5s\"\n{GOOD}"), "history_sample 1500ms: give whole seconds"),
            (format!("node_down_after = \"1s\"\n{GOOD}"), "node_down_after 1s is out of range 3s..=86400s"),
            (format!("handover_timeout = \"2s\"\n{GOOD}"), "handover_timeout 2s is out of range 3s..=86400s"),
            (format!("source_alarm_after = \"1s\"\n{GOOD}"), "source_alarm_after 1s is out of range 3s..=86400s"),
            (format!("keepalive = \"50ms\"\nfailover_time = \"5s\"\n{}", GOOD.replace("failover_time = \"5s\"", "")), "keepalive 50ms is out of range 100ms..=86400s"),
            (GOOD.replace("min = 2", "min = 2\n[pool.scale]\ncapacity = 10.0\nscale_out_at = 0.8\nscale_in_at = 0.3\nprovider = \"/bin/true\"\ncooldown = \"0s\"").replace("name = \"edges\"", "name = \"edges\"\nmax = 4"), "pool edges: scale.cooldown 0s is out of range 1s..=86400s"),
            (GOOD.replace("min = 2", "min = 20000"), "pool edges: min 20000 is out of range 0..=10000"),
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
    fn the_four_timings_default_to_failover_time_and_may_each_be_set() {
        let c = parse(GOOD).unwrap();
        let five = Duration::from_secs(5);
        assert_eq!(
            (c.node_down_after, c.startup_hold, c.handover_timeout, c.source_alarm_after),
            (five, five, five, five)
        );
        assert_eq!((c.console_refresh, c.history_sample), (Duration::from_secs(15), Duration::from_secs(5)));
        let text = format!(
            "node_down_after = \"4s\"\nstartup_hold = \"0s\"\nhandover_timeout = \"20s\"\nsource_alarm_after = \"30s\"\nhistory_sample = \"60s\"\n{GOOD}"
        );
        let c = parse(&text).unwrap();
        let s = Duration::from_secs;
        assert_eq!(
            (c.node_down_after, c.startup_hold, c.handover_timeout, c.source_alarm_after),
            (s(4), s(0), s(20), s(30))
        );
        assert_eq!((c.failover_time, c.history_sample, c.console_refresh), (s(5), s(60), s(15)));
    }

    /// Every top-level setting has its row in manager/README.md ("Settings").
    #[test]
    fn every_setting_is_in_the_readme() {
        let readme = include_str!("../README.md");
        let names: Vec<String> = File::keys().iter().map(|k| k.to_string()).collect();
        assert_eq!(names.len(), 23);
        assert_eq!(svc::config::undocumented(readme, &names), Vec::<String>::new());
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("rtsp://u:p@h:554/a/b"), "rtsp://***@h:554/a/b");
        assert_eq!(redact("rtmp://h/live/k"), "rtmp://h/live/k");
        assert_eq!(without_credentials("rtsp://u:p@h:554/a"), "rtsp://h:554/a");
        assert_eq!(without_credentials("rtsp://***@h:554/a"), "rtsp://h:554/a");
    }

    #[test]
    fn the_store_is_the_file_by_default_or_etcd_checked_whole() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.store, Store::File);
        assert_eq!(c.advertise, "http://127.0.0.1:9300");
        assert!(valid_name(&c.name), "{:?}", c.name);
        let etcd = "[store]\nkind = \"etcd\"\nendpoints = [\"http://10.0.0.5:2379\", \"http://10.0.0.6:2379\"]\n";
        let with = |extra: &str| format!("name = \"m1\"\n{GOOD}{etcd}{extra}");
        let c = parse(&with("")).unwrap();
        assert_eq!(c.name, "m1");
        let Store::Etcd(e) = &c.store else { panic!("{:?}", c.store) };
        assert_eq!((e.prefix.as_str(), e.lease_ttl, e.endpoints.len()), ("/smd", Duration::from_secs(5), 2));
        assert_eq!((e.user.clone(), e.tls.clone()), (None, None));
        let c = parse(&with("prefix = \"/site-a/smd\"\nlease_ttl = \"10s\"\n")).unwrap();
        let Store::Etcd(e) = &c.store else { panic!() };
        assert_eq!((e.prefix.as_str(), e.lease_ttl), ("/site-a/smd", Duration::from_secs(10)));
        let refused = |text: &str, says: &str| {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{e:?} should say {says:?}");
        };
        refused(&format!("state_file = \"s.json\"\n{}", with("")), "the state lives in etcd");
        refused(&with("lease_ttl = \"1s\"\n"), "store.lease_ttl 1s is out of range");
        refused(&with("lease_ttl = \"2500ms\"\n"), "whole seconds");
        refused(&with("prefix = \"smd/\"\n"), "store.prefix");
        refused(&with("user = \"smd\"\n"), "go together");
        refused(&with("bogus = 1\n"), "bogus");
        refused(&format!("{GOOD}[store]\nkind = \"etcd\"\n"), "store.endpoints: name the etcd members");
        refused(&format!("{GOOD}[store]\nkind = \"etcd\"\nendpoints = [\"https://e:2379\"]\n"), "need the CA");
        refused(&format!("{GOOD}[store]\nkind = \"etcd\"\nendpoints = [\"e:2379\"]\n"), "store.endpoints");
        refused(&format!("{GOOD}[store]\nkind = \"file\"\nendpoints = [\"http://e:2379\"]\n"), "etcd's");
        refused(&with("").replace("listen = \"127.0.0.1:9300\"", "listen = \"0.0.0.0:9300\""), "advertise is required");
        let c = parse(
            &format!("advertise = \"http://10.0.0.2:9300\"\n{}", with("")).replace("127.0.0.1:9300", "0.0.0.0:9300"),
        )
        .unwrap();
        assert_eq!(c.advertise, "http://10.0.0.2:9300");
        refused(&format!("name = \"a b\"\n{GOOD}"), "name \"a b\"");
    }
}
