//! The manager's decisions, kept pure: what the nodes and the LB last reported goes in, the actions that bring
//! them to the wanted state come out (with events and alarms). No I/O and no clock of its own, so every failover,
//! failback, handover and drain is unit-tested with made-up times.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use api_types::lb::{ServiceKey, ServiceView};
use api_types::manager::NodeState;
use serde::{Deserialize, Serialize};

use crate::config::{self, Config, Group, NodeSpec, Replication, Role};
use crate::events::{AlarmKind, EventKind, Log};

/// What a relay's `GET /status` says, parsed with the relay's own contract type (a renamed field fails to parse
/// instead of reading as 0).
pub use api_types::relay::{SourceInfo as SourceStatus, Status as NodeStatus, StreamView as StreamStatus};

/// A pull source as an origin's `GET /sources` lists it.
pub use api_types::relay::SourceView as OriginSource;

/// A stream across the cluster and an edge pool: the API's (and the console's) views.
pub use api_types::manager::{PoolSummary, StreamSummary};

/// What one keepalive of a node brought back.
#[derive(Debug, Clone)]
pub enum Observation {
    Ok { status: NodeStatus, sources: Option<Vec<OriginSource>> },
    Failed(String),
}

/// What the manager has heard from a node (the API shows it).
pub use api_types::manager::NodeHealth as Health;

/// A node in maintenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Maintenance {
    /// Unix seconds when it began (survives a restart).
    pub since: u64,
    /// It has reported empty (no players, and for an origin no group left).
    #[serde(default)]
    pub empty: bool,
    /// drain_timeout passed before it was empty.
    #[serde(default)]
    pub timed_out: bool,
}

#[derive(Debug, Clone)]
pub struct NodeRt {
    pub spec: NodeSpec,
    pub from_config: bool,
    pub health: Health,
    pub last_ok: Option<Instant>,
    pub last_seen_unix: Option<u64>,
    pub last_error: Option<String>,
    /// Polls failed in a row since the last answer: a node is down only after two, so one poll lost right after
    /// a (re)start or one slow answer never decides a failover on its own.
    pub failed_polls: u32,
    pub status: Option<NodeStatus>,
    pub sources: Option<Vec<OriginSource>>,
    pub maintenance: Option<Maintenance>,
    /// When a self-registered node registered (or the manager started, for one from the state file): one that never
    /// answers within `registration_expiry` is forgotten.
    pub registered_at: Option<Instant>,
}

impl NodeRt {
    fn new(spec: NodeSpec, from_config: bool) -> Self {
        Self {
            spec,
            from_config,
            health: Health::Unknown,
            last_ok: None,
            last_seen_unix: None,
            last_error: None,
            failed_polls: 0,
            status: None,
            sources: None,
            maintenance: None,
            registered_at: None,
        }
    }

    /// Takes new work: up and not in maintenance.
    pub fn eligible(&self) -> bool {
        self.health == Health::Up && self.maintenance.is_none()
    }

    /// The state the API and the console show.
    pub fn node_state(&self) -> NodeState {
        match (&self.maintenance, self.health) {
            (_, Health::Down) => NodeState::Down,
            (Some(m), _) if m.empty || m.timed_out => NodeState::Maintenance,
            (Some(_), _) => NodeState::Draining,
            (None, Health::Up) => NodeState::Up,
            (None, Health::Unknown) => NodeState::Unknown,
        }
    }

    /// [`NodeRt::node_state`] as the API spells it.
    pub fn state(&self) -> &'static str {
        self.node_state().as_str()
    }

    /// Streams this node has with a live source (what it ingests, for an origin).
    pub fn ingesting(&self, app: &str) -> BTreeSet<String> {
        self.status
            .iter()
            .flat_map(|s| &s.streams)
            .filter(|s| s.app == app && s.source.is_some())
            .map(|s| s.key.clone())
            .collect()
    }
}

/// A planned move of a group to another member: it ingests first, then edges follow, then the old one stops.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Handover {
    pub to: String,
    pub reason: &'static str,
    #[serde(skip)]
    pub started: Option<Instant>,
}

#[derive(Debug, Clone, Default)]
pub struct GroupRt {
    pub active: Option<String>,
    pub active_since_unix: Option<u64>,
    pub handover: Option<Handover>,
    /// The member that was active before a handover keeps its sources until this time (edges move meanwhile).
    pub retiring: Option<(String, Instant)>,
    pub failovers: u64,
}

/// A change the driver makes on a node or the LB.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    PutSource {
        node: String,
        app: String,
        key: String,
        /// The key's sources as the relay takes them (one pull URL, or the ordered list and its timings).
        body: api_types::relay::SourceBody,
    },
    DeleteSource {
        node: String,
        app: String,
        key: String,
    },
    SetOrigins {
        node: String,
        origins: Vec<String>,
    },
    PrePull {
        node: String,
        app: String,
        key: String,
    },
    RelayMaintenance {
        node: String,
        on: bool,
    },
    LbAdd {
        lb: String,
        node: String,
        real: IpAddr,
        service: ServiceKey,
        weight: u32,
    },
    LbDrain {
        lb: String,
        node: String,
        real: IpAddr,
        service: ServiceKey,
    },
    LbUndrain {
        lb: String,
        node: String,
        real: IpAddr,
        service: ServiceKey,
    },
    LbRemove {
        lb: String,
        node: String,
        real: IpAddr,
        service: ServiceKey,
    },
    /// A reloaded `[lb] weight` for a real at the weight before.
    LbWeight {
        lb: String,
        node: String,
        real: IpAddr,
        service: ServiceKey,
        weight: u32,
    },
    /// Run the pool's provider: `start NODE POOL` / `stop NODE POOL`.
    ProviderStart {
        pool: String,
        node: String,
    },
    ProviderStop {
        pool: String,
        node: String,
    },
}

impl Action {
    pub fn node(&self) -> &str {
        match self {
            Action::PutSource { node, .. }
            | Action::DeleteSource { node, .. }
            | Action::SetOrigins { node, .. }
            | Action::PrePull { node, .. }
            | Action::RelayMaintenance { node, .. }
            | Action::LbAdd { node, .. }
            | Action::LbDrain { node, .. }
            | Action::LbUndrain { node, .. }
            | Action::LbRemove { node, .. }
            | Action::LbWeight { node, .. }
            | Action::ProviderStart { node, .. }
            | Action::ProviderStop { node, .. } => node,
        }
    }
}

/// A key's sources in words, credentials redacted: `rtsp://***@cam/x` or `main rtsp://..., backup (pushed)`.
fn describe_sources(body: &api_types::relay::SourceBody) -> String {
    if body.sources.is_empty() {
        return config::redact(&body.url);
    }
    let list: Vec<String> = body
        .sources
        .iter()
        .map(|e| match &e.url {
            Some(u) => format!("{} {}", e.role, config::redact(u)),
            None => format!("{} (pushed)", e.role),
        })
        .collect();
    list.join(", ")
}

/// What changed between two keepalives' `GET /sources` of one origin, as events: a key's live source moved to
/// another role (`source-switched`), or one of its redundant sources stopped delivering (`source-down`).
fn source_changes(old: &[OriginSource], new: &[OriginSource]) -> Vec<(EventKind, String, String)> {
    let mut out = Vec::new();
    let live = |v: &[OriginSource], app: &str, key: &str| {
        v.iter().find(|x| x.app == app && x.key == key && x.live).map(|x| x.role.clone())
    };
    for x in new {
        let subject = format!("{}/{}", x.app, x.key);
        let Some(before) = old.iter().find(|o| o.app == x.app && o.key == x.key && o.role == x.role) else { continue };
        let ingesting = api_types::relay::SourceState::Ingesting;
        if before.state == ingesting && x.state != ingesting && !x.role.is_empty() {
            out.push((
                EventKind::SourceDown,
                subject.clone(),
                format!("source {} of {subject} stopped delivering", x.role),
            ));
        }
        if x.live && !before.live {
            let from = live(old, &x.app, &x.key).unwrap_or_else(|| "none".into());
            let message = format!("{subject} switched from {from} to {}", x.role);
            out.push((EventKind::SourceSwitched, subject, message));
        }
    }
    out
}

/// Whether an origin's `GET /sources` entries of `key` (`have`) are what the group wants there: the same roles in
/// order with the same inputs and timings (URLs compared without credentials, as the relay lists them).
fn same_sources(g: &Group, key: &str, have: &[&OriginSource]) -> bool {
    let body = g.source_body(key);
    let Ok(plan) = body.plan() else { return false };
    if have.len() != plan.sources.len() {
        return false;
    }
    let timings = (plan.timeout.as_millis() as u64, plan.stable_for.as_millis() as u64);
    plan.sources.iter().zip(g.key_sources(key)).zip(have).all(|(((role, input), (_, s)), h)| {
        let url = match input {
            api_types::relay::SourceInput::Pushed => "pushed".to_string(),
            api_types::relay::SourceInput::Slate(_) => format!("slate:{}", s.url),
            api_types::relay::SourceInput::Pull(_) => config::without_credentials(&s.url),
        };
        // A relay from before redundant sources lists no role or timings: its one pulled URL is compared alone.
        let legacy = h.role.is_empty() && h.source_timeout_ms == 0;
        (legacy || (&h.role == role && (h.source_timeout_ms, h.source_stable_for_ms) == timings))
            && config::without_credentials(&h.url) == url
    })
}

impl Action {
    /// The action in words, for events and logs (never Rust's Debug text; source credentials redacted).
    pub fn describe(&self) -> String {
        match self {
            Action::PutSource { node, app, key, body } => {
                format!("ingest {app}/{key} from {} on {node}", describe_sources(body))
            }
            Action::DeleteSource { node, app, key } => format!("stop ingesting {app}/{key} on {node}"),
            Action::SetOrigins { node, origins } => format!("point {node} at origins {}", origins.join(", ")),
            Action::PrePull { node, app, key } => format!("pre-pull {app}/{key} on {node}"),
            Action::RelayMaintenance { node, on: true } => format!("maintenance on at {node}"),
            Action::RelayMaintenance { node, on: false } => format!("maintenance off at {node}"),
            Action::LbAdd { lb, node, real, service, weight } => {
                format!("add {node} ({real}) to {service} with weight {weight} at lb {lb}")
            }
            Action::LbDrain { lb, node, real, service } => format!("drain {node} ({real}) in {service} at lb {lb}"),
            Action::LbUndrain { lb, node, real, service } => {
                format!("undrain {node} ({real}) in {service} at lb {lb}")
            }
            Action::LbRemove { lb, node, real, service } => {
                format!("remove {node} ({real}) from {service} at lb {lb}")
            }
            Action::LbWeight { lb, node, real, service, weight } => {
                format!("set the weight of {node} ({real}) in {service} to {weight} at lb {lb}")
            }
            Action::ProviderStart { pool, node } => format!("provider start {node} in pool {pool}"),
            Action::ProviderStop { pool, node } => format!("provider stop {node} in pool {pool}"),
        }
    }
}

/// Why a node cannot be removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveError {
    Unknown(String),
    Refused(String),
}

/// What is persisted so a restart moves no stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    #[serde(default)]
    pub active: BTreeMap<String, String>,
    #[serde(default)]
    pub maintenance: BTreeMap<String, Maintenance>,
    #[serde(default)]
    pub registered: Vec<NodeSpec>,
    /// Edges the autoscaler started (it may stop only these).
    #[serde(default)]
    pub started: BTreeMap<String, crate::autoscale::Started>,
    #[serde(default)]
    pub start_seq: u64,
    /// The autoscaler's clocks, so a restarted or new leader neither starts a second edge while one warms up nor
    /// scales again inside a cooldown: edges being started (pool, unix seconds of the request), edges being
    /// stopped (whether the stop was sent), each pool's last scaling action (unix seconds).
    #[serde(default)]
    pub starting: BTreeMap<String, (String, u64)>,
    #[serde(default)]
    pub stopping: BTreeMap<String, bool>,
    #[serde(default)]
    pub last_action: BTreeMap<String, u64>,
}

/// An instant `unix` seconds (wall clock) corresponds to, never later than `now`.
fn instant_of(unix: u64, now: Instant) -> Instant {
    let ago = Duration::from_secs(unix_now().saturating_sub(unix));
    now.checked_sub(ago).unwrap_or(now)
}

/// The wall-clock seconds of an instant.
fn unix_of(t: Instant, now: Instant) -> u64 {
    unix_now().saturating_sub(now.saturating_duration_since(t).as_secs())
}

pub struct Cluster {
    pub config: Config,
    pub nodes: BTreeMap<String, NodeRt>,
    pub groups: BTreeMap<String, GroupRt>,
    pub log: Log,
    started: Instant,
    /// Each LB node's services as last read, by its API address (None: not read yet, or unreachable).
    pub lb: BTreeMap<String, Option<Vec<ServiceView>>>,
    /// (group, key) -> since when the active origin has not ingested this configured source.
    missing_since: BTreeMap<(String, String), Instant>,
    /// (edge, app, key) pre-pulls already reported as started, so an event is written once.
    pub replicated: BTreeSet<(String, String, String)>,
    /// Set when something persisted changed; the driver writes the state file and clears it.
    pub dirty: bool,
    pub scaling: crate::autoscale::Scaling,
    /// Edges removed (or expired) whose address may still be a real in an LB node: taken out there, then forgotten.
    pub removed: Vec<NodeSpec>,
    /// Actions that failed last time: a failure repeated every keepalive is one event until it succeeds.
    failing: BTreeSet<Action>,
    /// (node, app): a node that served a group's app until a reload took the group or its membership away; it
    /// stops that app's sources at the next plans (then the entry goes).
    pub retired_sources: BTreeSet<(String, String)>,
    /// LB services a reload took out of `[lb]`: the edges' reals leave them (then the entry goes).
    pub retired_services: BTreeSet<ServiceKey>,
    /// The `[lb] weight` before a reload changed it: the reals at that weight are moved to the new one.
    pub lb_weight_was: Option<u32>,
    /// Counts the reloads applied: the loop rebuilds its clients and keepalive timer when it changes.
    pub generation: u64,
}

/// The autoscaler's persisted part, wall-clock times back on this process's clock.
fn restore_scaling(
    s: &mut crate::autoscale::Scaling,
    started: BTreeMap<String, crate::autoscale::Started>,
    seq: u64,
    starting: BTreeMap<String, (String, u64)>,
    stopping: BTreeMap<String, bool>,
    last_action: BTreeMap<String, u64>,
    now: Instant,
) {
    s.started = started;
    s.seq = seq;
    s.starting = starting.into_iter().map(|(n, (p, t))| (n, (p, instant_of(t, now)))).collect();
    s.stopping = stopping;
    s.last_action = last_action.into_iter().map(|(p, t)| (p, instant_of(t, now))).collect();
}

fn lb_weight(c: &Config) -> u32 {
    c.lb.as_ref().map_or(100, |l| l.weight)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Cluster {
    pub fn new(config: Config, persisted: Persisted, now: Instant) -> Self {
        let mut nodes = BTreeMap::new();
        for n in &config.nodes {
            nodes.insert(n.name.clone(), NodeRt::new(n.clone(), true));
        }
        for n in persisted.registered {
            nodes.entry(n.name.clone()).or_insert_with(|| NodeRt { registered_at: Some(now), ..NodeRt::new(n, false) });
        }
        for (name, m) in persisted.maintenance {
            if let Some(n) = nodes.get_mut(&name) {
                n.maintenance = Some(m);
            }
        }
        let mut groups = BTreeMap::new();
        for g in &config.groups {
            let active = persisted.active.get(&g.name).filter(|a| g.priority_of(a).is_some()).cloned();
            groups.insert(g.name.clone(), GroupRt { active, ..Default::default() });
        }
        let log = Log::new(config.events_kept);
        let mut scaling = crate::autoscale::Scaling::default();
        restore_scaling(
            &mut scaling,
            persisted.started,
            persisted.start_seq,
            persisted.starting,
            persisted.stopping,
            persisted.last_action,
            now,
        );
        Self {
            config,
            nodes,
            groups,
            log,
            started: now,
            lb: BTreeMap::new(),
            missing_since: BTreeMap::new(),
            replicated: BTreeSet::new(),
            dirty: false,
            scaling,
            removed: Vec::new(),
            failing: BTreeSet::new(),
            retired_sources: BTreeSet::new(),
            retired_services: BTreeSet::new(),
            lb_weight_was: None,
            generation: 0,
        }
    }

    pub fn persisted(&self) -> Persisted {
        let now = Instant::now();
        Persisted {
            active: self.groups.iter().filter_map(|(g, r)| Some((g.clone(), r.active.clone()?))).collect(),
            maintenance: self.nodes.iter().filter_map(|(n, r)| Some((n.clone(), r.maintenance.clone()?))).collect(),
            registered: self.nodes.values().filter(|n| !n.from_config).map(|n| n.spec.clone()).collect(),
            started: self.scaling.started.clone(),
            start_seq: self.scaling.seq,
            starting: self
                .scaling
                .starting
                .iter()
                .map(|(n, (p, t))| (n.clone(), (p.clone(), unix_of(*t, now))))
                .collect(),
            stopping: self.scaling.stopping.clone(),
            last_action: self.scaling.last_action.iter().map(|(p, t)| (p.clone(), unix_of(*t, now))).collect(),
        }
    }

    /// A follower of an HA deployment takes the leader's stored state: active members, maintenance, registered
    /// and started edges. Its own observations of the nodes (health, status) stay: they are what it acts on if it
    /// becomes leader, so a takeover needs no startup hold.
    pub fn adopt(&mut self, p: Persisted, now: Instant) {
        let registered: BTreeSet<String> = p.registered.iter().map(|n| n.name.clone()).collect();
        self.nodes.retain(|name, n| n.from_config || registered.contains(name));
        for spec in p.registered {
            match self.nodes.get_mut(&spec.name) {
                Some(n) if !n.from_config => n.spec = spec,
                Some(_) => {}
                None => {
                    let n = NodeRt { registered_at: Some(now), ..NodeRt::new(spec.clone(), false) };
                    self.nodes.insert(spec.name, n);
                }
            }
        }
        for (name, n) in self.nodes.iter_mut() {
            n.maintenance = p.maintenance.get(name).cloned();
        }
        for g in &self.config.groups {
            if let Some(rt) = self.groups.get_mut(&g.name) {
                rt.active = p.active.get(&g.name).filter(|a| g.priority_of(a).is_some()).cloned();
            }
        }
        restore_scaling(&mut self.scaling, p.started, p.start_seq, p.starting, p.stopping, p.last_action, now);
        self.dirty = false;
    }

    /// This smd becomes the leader: the stored state and history, then its own story; node-down alarms of nodes
    /// it sees up are cleared (the old leader may have died before it saw them come back).
    pub fn take_over(&mut self, p: Persisted, events: Vec<crate::events::Event>, alarms: crate::events::StoredAlarms) {
        self.adopt(p, Instant::now());
        self.log.take_over(events, alarms);
        let seen: Vec<(String, Health)> = self.nodes.iter().map(|(k, n)| (k.clone(), n.health)).collect();
        for (name, health) in seen {
            let raised = self.log.is_raised(AlarmKind::NodeDown, &name);
            if health == Health::Up && raised {
                self.log.clear(AlarmKind::NodeDown, &name);
            }
            if health == Health::Down && !raised {
                let why = "down when this smd took over (it missed its keepalives)".to_string();
                self.log.event(EventKind::NodeDown, &name, why.clone());
                self.log.raise(AlarmKind::NodeDown, &name, why);
            }
        }
    }

    /// A node registering itself (POST /api/v1/nodes). A configured node may re-register with the same
    /// addresses; a different definition of a configured node is refused.
    pub fn register(&mut self, mut spec: NodeSpec) -> Result<bool, String> {
        spec.check()?;
        if spec.pool.is_none() {
            // An edge the autoscaler started belongs to the pool that started it.
            spec.pool = self.pool_of_started(&spec.name);
        }
        if let Some(p) = &spec.pool {
            if !self.config.pools.iter().any(|x| &x.name == p) {
                return Err(format!("unknown pool {p:?}"));
            }
        }
        let registered = self.registered();
        match self.nodes.get_mut(&spec.name) {
            Some(n) if n.spec.role != spec.role => Err(format!(
                "node {} is known as an {}, not an {}",
                spec.name,
                n.spec.role.as_str(),
                spec.role.as_str()
            )),
            Some(n) if n.from_config => {
                if n.spec.api != spec.api || n.spec.rtmp != spec.rtmp {
                    return Err(format!(
                        "node {} is configured with api {} and rtmp {}; it registered with {} and {}",
                        spec.name, n.spec.api, n.spec.rtmp, spec.api, spec.rtmp
                    ));
                }
                Ok(false)
            }
            Some(n) => {
                let changed = n.spec != spec;
                if changed {
                    self.log.event(
                        EventKind::NodeRegistered,
                        &spec.name,
                        format!("{} re-registered at {}", spec.role.as_str(), spec.api),
                    );
                    n.spec = spec;
                    self.dirty = true;
                }
                Ok(changed)
            }
            None if spec.role == Role::Edge
                && registered >= self.config.max_registered
                && !self.scaling.started.contains_key(&spec.name) =>
            {
                Err(format!(
                    "registration refused: {registered} self-registered nodes already (max_registered = {}); remove \
                 one with `smctl remove-node NAME` or raise max_registered",
                    self.config.max_registered
                ))
            }
            None => {
                if spec.role == Role::Origin {
                    // Origins matter only as group members, which the config names: refuse instead of ignoring.
                    return Err(format!(
                        "origin {} is not in the configuration; origins are configured in [[node]] tables",
                        spec.name
                    ));
                }
                self.log.event(
                    EventKind::NodeRegistered,
                    &spec.name,
                    format!("edge registered at {} (rtmp {})", spec.api, spec.rtmp),
                );
                let name = spec.name.clone();
                self.nodes.insert(name, NodeRt { registered_at: Some(Instant::now()), ..NodeRt::new(spec, false) });
                self.dirty = true;
                Ok(true)
            }
        }
    }

    /// Self-registered nodes now.
    pub fn registered(&self) -> usize {
        self.nodes.values().filter(|n| !n.from_config).count()
    }

    /// `DELETE /api/v1/nodes/NAME`: forgets a self-registered edge that is not in service. Refused for a
    /// configured node (edit the config), an edge the autoscaler started (`pool-stop` stops it) and an edge in
    /// service (put it into maintenance first, so its players are not cut by the LB). Its LB reals are removed.
    pub fn remove_node(&mut self, name: &str) -> Result<String, RemoveError> {
        let n = self.nodes.get(name).ok_or_else(|| RemoveError::Unknown(format!("unknown node {name:?}")))?;
        if n.from_config {
            return Err(RemoveError::Refused(format!(
                "node {name} is in the configuration file: remove its [[node]] table and reload smd (SIGHUP: `systemctl reload smd`)"
            )));
        }
        if self.scaling.started.contains_key(name) {
            return Err(RemoveError::Refused(format!(
                "node {name} was started by the autoscaler: stop it with `smctl pool-stop POOL {name}`"
            )));
        }
        if n.health == Health::Up && !n.maintenance.as_ref().is_some_and(|m| m.empty || m.timed_out) {
            return Err(RemoveError::Refused(format!(
                "node {name} is up and {}: put it into maintenance first (`smctl maintenance {name}`) and remove it \
                 once it is empty",
                if n.maintenance.is_some() { "still draining" } else { "in service" }
            )));
        }
        let state = n.state();
        self.forget(name, &format!("removed by the operator (it was {state})"));
        Ok(format!("node {name} removed (it was {state}); it may register again"))
    }

    fn forget(&mut self, name: &str, why: &str) {
        if let Some(n) = self.nodes.remove(name) {
            if n.spec.role == Role::Edge {
                self.removed.push(n.spec);
            }
            self.log.event(EventKind::NodeRemoved, name, why);
            for k in [AlarmKind::NodeDown, AlarmKind::DrainTimeout] {
                self.log.clear(k, name);
            }
            self.replicated.retain(|(n, _, _)| n != name);
            self.dirty = true;
        }
    }

    /// Self-registered nodes that never answered within `registration_expiry` are forgotten (a registration flood
    /// or a typo in an address must not stay forever). Edges the autoscaler started have their own `warm_up`.
    fn expire_registrations(&mut self, now: Instant) {
        let expiry = self.config.registration_expiry;
        let stale: Vec<String> = self
            .nodes
            .values()
            .filter(|n| !n.from_config && n.last_ok.is_none() && !self.scaling.started.contains_key(&n.spec.name))
            .filter(|n| n.registered_at.is_some_and(|t| now.saturating_duration_since(t) >= expiry))
            .map(|n| n.spec.name.clone())
            .collect();
        for name in stale {
            self.forget(
                &name,
                &format!("never answered within registration_expiry ({}s): forgotten", expiry.as_secs()),
            );
        }
    }

    /// Removed edges are remembered only while an LB node may still have their address as a real; a reload's
    /// retired sources and services only while a node still has them.
    fn prune_removed(&mut self) {
        let nodes = &self.nodes;
        self.retired_sources.retain(|(name, app)| {
            nodes.get(name).is_some_and(|n| {
                n.health != Health::Up || n.sources.as_ref().is_none_or(|s| s.iter().any(|x| &x.app == app))
            })
        });
        if !self.lb.values().any(Option::is_none) {
            let edges: BTreeSet<IpAddr> = nodes.values().map(|n| config::real_of(&n.spec)).collect();
            let lb = &self.lb;
            self.retired_services.retain(|svc| {
                lb.values().flatten().flatten().any(|s| {
                    s.vip == svc.vip
                        && s.port == svc.port
                        && s.proto == svc.proto
                        && s.reals.iter().any(|r| edges.contains(&r.addr))
                })
            });
        }
        if self.config.lb.is_none() {
            self.removed.clear();
            return;
        }
        if self.lb.is_empty() || self.lb.values().any(Option::is_none) {
            return;
        }
        let reals: BTreeSet<IpAddr> =
            self.lb.values().flatten().flatten().flat_map(|s| s.reals.iter().map(|r| r.addr)).collect();
        self.removed.retain(|spec| reals.contains(&config::real_of(spec)));
        let excess = self.removed.len().saturating_sub(config::MAX_REGISTERED);
        self.removed.drain(..excess);
    }

    /// A keepalive's outcome.
    pub fn observe(&mut self, name: &str, obs: Observation, now: Instant) {
        let failover = self.config.node_down_after;
        let started = self.started;
        let Some(n) = self.nodes.get_mut(name) else { return };
        match obs {
            Observation::Ok { status, sources } => {
                n.last_ok = Some(now);
                n.last_seen_unix = Some(unix_now());
                n.last_error = None;
                n.failed_polls = 0;
                n.status = Some(status);
                if let Some(new) = sources {
                    let changes = source_changes(n.sources.as_deref().unwrap_or_default(), &new);
                    n.sources = Some(new);
                    for (kind, subject, message) in changes {
                        self.log.event(kind, &subject, format!("{message} on {name}"));
                    }
                }
                if n.health != Health::Up {
                    let was = n.health;
                    n.health = Health::Up;
                    let msg = if was == Health::Down { "up again" } else { "up" };
                    self.log.event(EventKind::NodeUp, name, format!("{} {msg}", n.spec.role.as_str()));
                    self.log.clear(AlarmKind::NodeDown, name);
                }
            }
            Observation::Failed(why) => {
                n.last_error = Some(why.clone());
                n.failed_polls = n.failed_polls.saturating_add(1);
                let since = n.last_ok.unwrap_or(started);
                // Silent for node_down_after AND at least two polls failed: with a keepalive close to that delay,
                // silence alone made the first failed poll after a death decide (anywhere from 0 to 2 keepalives).
                if n.health != Health::Down && n.failed_polls >= 2 && now.saturating_duration_since(since) >= failover {
                    n.health = Health::Down;
                    n.status = None;
                    let msg = format!("{} missed keepalives for {:?}: {why}", n.spec.role.as_str(), failover);
                    self.log.event(EventKind::NodeDown, name, msg.clone());
                    self.log.raise(AlarmKind::NodeDown, name, msg);
                }
            }
        }
    }

    /// Maintenance on (POST .../maintenance): new sessions go elsewhere, existing ones continue.
    pub fn maintenance(&mut self, name: &str, on: bool) -> Result<&'static str, String> {
        let n = self.nodes.get_mut(name).ok_or_else(|| format!("unknown node {name:?}"))?;
        match (on, n.maintenance.is_some()) {
            (true, true) => Ok("already in maintenance"),
            (false, false) => Ok("not in maintenance"),
            (true, false) => {
                n.maintenance = Some(Maintenance { since: unix_now(), empty: false, timed_out: false });
                let what = match n.spec.role {
                    Role::Edge => "edge in maintenance: drained in the LB, new players refused, players continue",
                    Role::Origin => "origin in maintenance: its groups move to standbys first",
                };
                self.log.event(EventKind::MaintenanceOn, name, what);
                self.dirty = true;
                Ok("maintenance on")
            }
            (false, true) => {
                n.maintenance = None;
                self.log.event(EventKind::MaintenanceOff, name, "maintenance ended: back in service");
                self.log.clear(AlarmKind::DrainTimeout, name);
                self.dirty = true;
                Ok("maintenance off")
            }
        }
    }

    /// Whether the manager has had time to hear from every node since it started: before that, no member is
    /// declared gone and no active member is replaced.
    pub(crate) fn settled(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) >= self.config.startup_hold
    }

    fn eligible(&self, name: &str) -> bool {
        self.nodes.get(name).is_some_and(NodeRt::eligible)
    }

    /// One round of decisions: groups, then what each node and the LB should be told.
    pub fn plan(&mut self, now: Instant) -> Vec<Action> {
        self.expire_registrations(now);
        self.prune_removed();
        let groups: Vec<Group> = self.config.groups.clone();
        for g in &groups {
            self.step_group(g, now);
        }
        let mut actions = Vec::new();
        self.plan_origins(&groups, &mut actions);
        self.plan_edges(&groups, &mut actions);
        self.plan_scaling(now, &mut actions);
        self.plan_maintenance(now, &mut actions);
        self.plan_lb(&mut actions);
        self.check_alarms(&groups, now);
        actions.sort();
        actions.dedup();
        actions
    }

    fn step_group(&mut self, g: &Group, now: Instant) {
        let settled = self.settled(now);
        let best = g.by_priority().into_iter().find(|m| self.eligible(&m.node)).map(|m| m.node.clone());
        let rt = self.groups.get(&g.name).cloned().unwrap_or_default();
        let mut rt2 = rt.clone();
        match &rt.active {
            None => {
                // Before everyone answered, adopt a member that already ingests the group (a restart without
                // state moves nothing); otherwise wait for the start hold, then take the best.
                let ingesting = g.by_priority().into_iter().find(|m| {
                    self.eligible(&m.node)
                        && self.nodes.get(&m.node).is_some_and(|n| !n.ingesting(&g.app).is_empty())
                        && (g.sources.is_empty()
                            || self
                                .nodes
                                .get(&m.node)
                                .and_then(|n| n.sources.as_ref())
                                .is_some_and(|s| s.iter().any(|x| x.app == g.app)))
                });
                let all_known =
                    g.members.iter().all(|m| self.nodes.get(&m.node).is_some_and(|n| n.health != Health::Unknown));
                let pick = match ingesting {
                    Some(m) => Some(m.node.clone()),
                    None if settled || all_known => best.clone(),
                    None => None,
                };
                if let Some(p) = pick {
                    let how = if ingesting.is_some() {
                        "already ingesting: adopted"
                    } else {
                        "highest-priority healthy member"
                    };
                    self.log.event(EventKind::GroupActive, &g.name, format!("{p} is active ({how})"));
                    rt2.active = Some(p);
                    rt2.active_since_unix = Some(unix_now());
                    self.dirty = true;
                }
            }
            Some(a) => {
                let an = self.nodes.get(a);
                let down = an.is_none_or(|n| n.health == Health::Down);
                let in_maint = an.is_some_and(|n| n.maintenance.is_some());
                if down {
                    // Break before make: the active one is gone. The best healthy standby takes the sources now.
                    rt2.handover = None;
                    rt2.retiring = None;
                    match &best {
                        Some(b) => {
                            self.log.event(
                                EventKind::Failover,
                                &g.name,
                                format!(
                                    "{a} is down: {b} takes the group (priority {})",
                                    g.priority_of(b).unwrap_or(0)
                                ),
                            );
                            rt2.active = Some(b.clone());
                            rt2.failovers += 1;
                        }
                        None => {
                            self.log.event(
                                EventKind::Failover,
                                &g.name,
                                format!("{a} is down and no member is healthy: the group has no active origin"),
                            );
                            rt2.active = None;
                        }
                    }
                    rt2.active_since_unix = Some(unix_now());
                    self.dirty = true;
                } else if rt.handover.is_none() {
                    let want = if in_maint {
                        best.clone().filter(|b| b != a).map(|b| (b, "maintenance"))
                    } else if g.failback {
                        best.clone().filter(|b| b != a && g.priority_of(b) > g.priority_of(a)).map(|b| (b, "failback"))
                    } else {
                        None
                    };
                    if let Some((to, reason)) = want {
                        self.log.event(
                            EventKind::HandoverStarted,
                            &g.name,
                            format!("{reason}: {to} starts ingesting before {a} stops"),
                        );
                        rt2.handover = Some(Handover { to, reason, started: Some(now) });
                    }
                }
            }
        }
        // A handover in progress: complete it once the new member ingests every source (or a failover time passed).
        if let (Some(h), Some(a)) = (rt2.handover.clone(), rt2.active.clone()) {
            if !self.eligible(&h.to) {
                self.log.event(
                    EventKind::HandoverCancelled,
                    &g.name,
                    format!("{} is no longer healthy; {a} stays active", h.to),
                );
                rt2.handover = None;
            } else {
                let have = self.nodes.get(&h.to).map(|n| n.ingesting(&g.app)).unwrap_or_default();
                let ready = g.source_keys().iter().all(|k| have.contains(k));
                let waited =
                    h.started.is_some_and(|t| now.saturating_duration_since(t) >= self.config.handover_timeout);
                if ready || waited {
                    let kind = if h.reason == "failback" { EventKind::Failback } else { EventKind::HandoverDone };
                    let how = if ready { "ingesting every source" } else { "did not ingest every source in time" };
                    self.log.event(
                        kind,
                        &g.name,
                        format!("{} is active ({how}); edges move, {a} stops after they did", h.to),
                    );
                    rt2.retiring = Some((a, now + self.config.keepalive.max(Duration::from_secs(2))));
                    rt2.active = Some(h.to);
                    rt2.active_since_unix = Some(unix_now());
                    rt2.handover = None;
                    self.dirty = true;
                }
            }
        }
        if rt2.retiring.as_ref().is_some_and(|(_, until)| now >= *until) {
            rt2.retiring = None;
        }
        self.groups.insert(g.name.clone(), rt2);
    }

    /// Origins: the active member (and a handover's target, and a retiring one for a moment) ingest the group's
    /// sources; nobody else does.
    fn plan_origins(&self, groups: &[Group], actions: &mut Vec<Action>) {
        // A node a reload took a group's app from stops that app's sources.
        for (name, app) in &self.retired_sources {
            let Some(n) = self.nodes.get(name).filter(|n| n.health == Health::Up) else { continue };
            for x in n.sources.iter().flatten().filter(|x| &x.app == app) {
                actions.push(Action::DeleteSource { node: name.clone(), app: x.app.clone(), key: x.key.clone() });
            }
        }
        for g in groups {
            let rt = &self.groups[&g.name];
            let mut holders: BTreeSet<&str> = BTreeSet::new();
            holders.extend(rt.active.as_deref());
            holders.extend(rt.handover.as_ref().map(|h| h.to.as_str()));
            holders.extend(rt.retiring.as_ref().map(|(n, _)| n.as_str()));
            for m in &g.members {
                let Some(n) = self.nodes.get(&m.node) else { continue };
                if n.health != Health::Up {
                    continue;
                }
                let Some(have) = &n.sources else { continue };
                let wanted = holders.contains(m.node.as_str());
                for key in g.source_keys() {
                    let cur: Vec<&OriginSource> = have.iter().filter(|x| x.app == g.app && x.key == key).collect();
                    if wanted && !same_sources(g, &key, &cur) {
                        actions.push(Action::PutSource {
                            node: m.node.clone(),
                            app: g.app.clone(),
                            key: key.clone(),
                            body: g.source_body(&key),
                        });
                    }
                }
                for x in have.iter().filter(|x| x.app == g.app) {
                    if !wanted || !g.sources.iter().any(|s| s.key == x.key) {
                        actions.push(Action::DeleteSource {
                            node: m.node.clone(),
                            app: x.app.clone(),
                            key: x.key.clone(),
                        });
                    }
                }
            }
        }
    }

    /// The origin list an edge should have: per group, the active member first, then the others by priority.
    pub fn edge_origins(&self, groups: &[Group]) -> Vec<String> {
        let mut out = Vec::new();
        for g in groups {
            let rt = &self.groups[&g.name];
            let mut order: Vec<&str> = Vec::new();
            order.extend(rt.active.as_deref());
            for m in g.by_priority() {
                if !order.contains(&m.node.as_str()) {
                    order.push(&m.node);
                }
            }
            for name in order {
                if let Some(n) = self.nodes.get(name) {
                    out.push(format!("rtmp://{}/{}", n.spec.rtmp, g.app));
                }
            }
        }
        out
    }

    fn plan_edges(&mut self, groups: &[Group], actions: &mut Vec<Action>) {
        let origins = self.edge_origins(groups);
        let mut pulls = Vec::new();
        for g in groups.iter().filter(|g| g.replication == Replication::PrePull) {
            let Some(a) = self.groups[&g.name].active.as_ref().and_then(|a| self.nodes.get(a)) else { continue };
            if a.health != Health::Up {
                continue;
            }
            for key in a.ingesting(&g.app) {
                pulls.push((g.app.clone(), key));
            }
        }
        for n in self.nodes.values().filter(|n| n.spec.role == Role::Edge && n.health == Health::Up) {
            let Some(st) = &n.status else { continue };
            // An empty list would leave the edge nothing to pull from (and relays refuse it): with no group or no
            // origin known, the edge keeps the list it has.
            if !origins.is_empty() && st.origins != origins {
                actions.push(Action::SetOrigins { node: n.spec.name.clone(), origins: origins.clone() });
            }
            if n.maintenance.is_some() {
                continue;
            }
            for (app, key) in &pulls {
                if !st.streams.iter().any(|s| &s.app == app && &s.key == key) {
                    actions.push(Action::PrePull { node: n.spec.name.clone(), app: app.clone(), key: key.clone() });
                }
            }
        }
        // Forget replications of streams no longer ingested, so a new ingest of the same key is an event again.
        let live: BTreeSet<(String, String)> = pulls.into_iter().collect();
        self.replicated.retain(|(_, app, key)| live.contains(&(app.clone(), key.clone())));
    }

    fn plan_maintenance(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let busy_origins: BTreeSet<String> = self
            .groups
            .values()
            .flat_map(|r| {
                r.active
                    .iter()
                    .cloned()
                    .chain(r.handover.iter().map(|h| h.to.clone()))
                    .chain(r.retiring.iter().map(|(n, _)| n.clone()))
            })
            .collect();
        let drain = self.config.drain_timeout;
        let _ = now;
        let mut events = Vec::new();
        for n in self.nodes.values_mut() {
            let Some(st) = &n.status else { continue };
            if n.health != Health::Up {
                continue;
            }
            let name = n.spec.name.clone();
            // An origin refuses new plays only once no group uses it: edges still pulling from it must not be cut.
            let want = n.maintenance.is_some() && (n.spec.role == Role::Edge || !busy_origins.contains(&name));
            if st.maintenance != want {
                actions.push(Action::RelayMaintenance { node: name.clone(), on: want });
            }
            let players = st.players;
            if let Some(m) = &mut n.maintenance {
                if !m.empty && players == 0 && !busy_origins.contains(&name) {
                    m.empty = true;
                    events.push((
                        EventKind::MaintenanceEmpty,
                        name.clone(),
                        "no players left: the node is empty".to_string(),
                    ));
                }
                if !m.empty && !m.timed_out && unix_now().saturating_sub(m.since) >= drain.as_secs() {
                    m.timed_out = true;
                    let msg = format!(
                        "drain_timeout {drain:?} passed with {players} players still on it: it leaves the LB now"
                    );
                    events.push((EventKind::DrainTimeout, name.clone(), msg));
                }
            }
        }
        for (k, n, m) in events {
            if k == EventKind::DrainTimeout {
                self.log.raise(AlarmKind::DrainTimeout, &n, m.clone());
            }
            self.log.event(k, &n, m);
            self.dirty = true;
        }
    }

    /// Edges in the LB: in service when up, drained in maintenance, removed once empty (or drain_timeout).
    fn plan_lb(&self, actions: &mut Vec<Action>) {
        let Some(lb) = &self.config.lb else { return };
        self.plan_ingest(actions);
        // Every LB node gets the same reals; a node that cannot be read now is caught up when it answers.
        for (api, view) in &self.lb {
            let Some(view) = view else { continue };
            // A removed edge's address leaves every service, unless a known edge has the same address now.
            for spec in &self.removed {
                let real = config::real_of(spec);
                if self.nodes.values().any(|n| config::real_of(&n.spec) == real) {
                    continue;
                }
                for svc in &lb.services {
                    let here = view
                        .iter()
                        .find(|s| s.vip == svc.vip && s.port == svc.port && s.proto == svc.proto)
                        .is_some_and(|s| s.reals.iter().any(|r| r.addr == real));
                    if here {
                        let (lb, node, service) = (api.clone(), spec.name.clone(), *svc);
                        actions.push(Action::LbRemove { lb, node, real, service });
                    }
                }
            }
            // Services a reload took out of [lb] (or a removed group's ingest address): known nodes leave them.
            for n in self.nodes.values() {
                let real = config::real_of(&n.spec);
                for svc in &self.retired_services {
                    let here = view
                        .iter()
                        .find(|s| s.vip == svc.vip && s.port == svc.port && s.proto == svc.proto)
                        .is_some_and(|s| s.reals.iter().any(|r| r.addr == real));
                    if here {
                        let (lb, node, service) = (api.clone(), n.spec.name.clone(), *svc);
                        actions.push(Action::LbRemove { lb, node, real, service });
                    }
                }
            }
            for n in self.nodes.values().filter(|n| n.spec.role == Role::Edge) {
                let real = config::real_of(&n.spec);
                for svc in &lb.services {
                    let cur = view
                        .iter()
                        .find(|s| s.vip == svc.vip && s.port == svc.port && s.proto == svc.proto)
                        .and_then(|s| s.reals.iter().find(|r| r.addr == real));
                    let (lb, node, service) = (api.clone(), n.spec.name.clone(), *svc);
                    let weight = lb_weight(&self.config);
                    if let Some(r) = cur.filter(|r| Some(r.weight) == self.lb_weight_was && r.weight != weight) {
                        let (lb, node, real) = (lb.clone(), node.clone(), r.addr);
                        actions.push(Action::LbWeight { lb, node, real, service, weight });
                    }
                    match &n.maintenance {
                        None if n.health == Health::Up => match cur {
                            None => {
                                actions.push(Action::LbAdd { lb, node, real, service, weight: lb_weight(&self.config) })
                            }
                            Some(r) if r.drained => actions.push(Action::LbUndrain { lb, node, real, service }),
                            Some(_) => {}
                        },
                        // Down or not yet heard from: lbd's own health check decides; nothing to change.
                        None => {}
                        // Empty (or out of time): it leaves the LB.
                        Some(m) if (m.empty || m.timed_out) && cur.is_some() => {
                            actions.push(Action::LbRemove { lb, node, real, service })
                        }
                        Some(m) if !(m.empty || m.timed_out) && cur.is_some_and(|r| !r.drained) => {
                            actions.push(Action::LbDrain { lb, node, real, service })
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }

    /// Groups with an ingest address: the active member is the only real of that service on every LB node. During
    /// a handover the new member is added first and the old one removed once it is active no more; a pushing
    /// publisher's connection stays where it is (the LB's connection table), new ones reach the active member.
    fn plan_ingest(&self, actions: &mut Vec<Action>) {
        let weight = lb_weight(&self.config);
        for g in &self.config.groups {
            let Some(service) = g.ingest_service() else { continue };
            let rt = &self.groups[&g.name];
            let mut wanted: BTreeSet<&str> = BTreeSet::new();
            wanted.extend(rt.active.as_deref());
            wanted.extend(rt.handover.as_ref().map(|h| h.to.as_str()));
            for (api, view) in &self.lb {
                let Some(view) = view else { continue };
                let reals: Vec<IpAddr> = view
                    .iter()
                    .find(|s| s.vip == service.vip && s.port == service.port && s.proto == service.proto)
                    .map(|s| s.reals.iter().map(|r| r.addr).collect())
                    .unwrap_or_default();
                for m in &g.members {
                    let Some(n) = self.nodes.get(&m.node) else { continue };
                    let real = config::real_of(&n.spec);
                    let (lb, node) = (api.clone(), m.node.clone());
                    let here = reals.contains(&real);
                    if wanted.contains(m.node.as_str()) && !here && n.health == Health::Up {
                        actions.push(Action::LbAdd { lb, node, real, service, weight });
                    } else if !wanted.contains(m.node.as_str()) && here {
                        actions.push(Action::LbRemove { lb, node, real, service });
                    }
                }
            }
        }
    }

    fn check_alarms(&mut self, groups: &[Group], now: Instant) {
        if !self.settled(now) {
            return;
        }
        for g in groups {
            let rt = &self.groups[&g.name];
            match &rt.active {
                None => self.log.raise(
                    AlarmKind::GroupNoActive,
                    &g.name,
                    "no member of the group is healthy: its streams are not ingested".into(),
                ),
                Some(_) => self.log.clear(AlarmKind::GroupNoActive, &g.name),
            }
            let active = rt.active.as_ref().and_then(|a| self.nodes.get(a)).filter(|n| n.health == Health::Up);
            let have = active.map(|n| n.ingesting(&g.app)).unwrap_or_default();
            for key in g.source_keys() {
                let list = g.key_sources(&key);
                let s = list[0].1;
                let k = (g.name.clone(), s.key.clone());
                let subject = format!("{}/{}", g.name, s.key);
                // Redundant sources: alarmed at once while none of them delivers on the active member.
                if list.len() > 1 {
                    let seen: Vec<&OriginSource> = active
                        .and_then(|n| n.sources.as_ref())
                        .map(|v| v.iter().filter(|x| x.app == g.app && x.key == key).collect())
                        .unwrap_or_default();
                    let down =
                        !seen.is_empty() && !seen.iter().any(|x| x.state == api_types::relay::SourceState::Ingesting);
                    let alarm_subject = format!("{}/{key}", g.app);
                    if down {
                        let roles: Vec<&str> = list.iter().map(|(r, _)| r.as_str()).collect();
                        self.log.raise(
                            AlarmKind::SourceDown,
                            &alarm_subject,
                            format!("no source of {} delivers ({} all down)", alarm_subject, roles.join(", ")),
                        );
                    } else if !seen.is_empty() {
                        self.log.clear(AlarmKind::SourceDown, &alarm_subject);
                    }
                }
                if have.contains(&s.key) {
                    self.missing_since.remove(&k);
                    self.log.clear(AlarmKind::SourceNotIngesting, &subject);
                } else {
                    let since = *self.missing_since.entry(k).or_insert(now);
                    if now.saturating_duration_since(since) >= self.config.source_alarm_after {
                        let why = active
                            .and_then(|n| n.sources.as_ref())
                            .and_then(|v| {
                                v.iter()
                                    .find(|x| x.app == g.app && x.key == s.key)
                                    .map(|x| x.state.as_str().to_string())
                            })
                            .unwrap_or_else(|| "not started".into());
                        self.log.raise(
                            AlarmKind::SourceNotIngesting,
                            &subject,
                            format!("{} is not ingested ({why})", config::redact(&s.url)),
                        );
                    }
                }
            }
        }
        for p in self.config.pools.clone() {
            let in_service = self.pool_edges(&p.name).iter().filter(|n| n.eligible()).count();
            if in_service < p.min {
                self.log.raise(
                    AlarmKind::PoolBelowMin,
                    &p.name,
                    format!("{in_service} edges in service, minimum {}", p.min),
                );
            } else {
                self.log.clear(AlarmKind::PoolBelowMin, &p.name);
            }
        }
    }

    /// Every stream of the cluster: its group, where it is ingested, which edges have it, players and bit rates.
    pub fn streams(&self) -> Vec<StreamSummary> {
        let mut out: BTreeMap<(String, String), StreamSummary> = BTreeMap::new();
        for n in self.nodes.values().filter(|n| n.health == Health::Up) {
            for s in n.status.iter().flat_map(|s| &s.streams) {
                let e = out.entry((s.app.clone(), s.key.clone())).or_insert_with(|| StreamSummary {
                    group: self.config.groups.iter().find(|g| g.app == s.app).map(|g| g.name.clone()),
                    app: s.app.clone(),
                    key: s.key.clone(),
                    ..Default::default()
                });
                match n.spec.role {
                    Role::Origin if s.source.is_some() => {
                        e.ingest = Some(n.spec.name.clone());
                        e.source = s.source.as_ref().map(|x| format!("{} {}", x.kind, config::redact(&x.peer)));
                        e.bitrate_in_kbps = s.bitrate_in_kbps;
                    }
                    Role::Origin => {}
                    Role::Edge => {
                        e.edges.push(n.spec.name.clone());
                        e.players += s.players;
                        e.bitrate_out_kbps += s.bitrate_out_kbps;
                    }
                }
            }
        }
        out.into_values().collect()
    }

    /// Every pool with its edges, load and autoscaling state.
    pub fn pools(&self) -> Vec<PoolSummary> {
        self.config
            .pools
            .iter()
            .map(|p| {
                let edges = self.pool_edges(&p.name);
                let st = || edges.iter().filter(|n| n.health == Health::Up).filter_map(|n| n.status.as_ref());
                let started = self.started_in(&p.name);
                PoolSummary {
                    name: p.name.clone(),
                    min: p.min,
                    max: p.max,
                    edges: edges.iter().map(|n| n.spec.name.clone()).collect(),
                    in_service: edges.iter().filter(|n| n.eligible()).count(),
                    down: edges.iter().filter(|n| n.health == Health::Down).count(),
                    players: st().map(|s| s.players).sum(),
                    bitrate_out_kbps: st().map(|s| s.bitrate_out_kbps).sum(),
                    utilisation: p
                        .scale
                        .as_ref()
                        .map(|sc| self.pool_load(&p.name, sc.signal).utilisation(sc.capacity))
                        .filter(|u| u.is_finite()),
                    starting: self
                        .scaling
                        .starting
                        .iter()
                        .filter(|(_, (x, _))| x == &p.name)
                        .map(|(n, _)| n.clone())
                        .collect(),
                    stopping: self.scaling.stopping.keys().filter(|n| started.contains(*n)).cloned().collect(),
                    started: started.into_iter().collect(),
                }
            })
            .collect()
    }

    pub fn pool_edges(&self, pool: &str) -> Vec<&NodeRt> {
        self.nodes
            .values()
            .filter(|n| n.spec.role == Role::Edge && self.config.pool_of(&n.spec).as_deref() == Some(pool))
            .collect()
    }

    /// An LB node could not be read.
    pub fn lb_unreachable(&mut self, api: &str, why: String) {
        self.lb.insert(api.to_string(), None);
        self.log.raise(AlarmKind::LbUnreachable, &format!("lb {api}"), why);
    }

    pub fn lb_seen(&mut self, api: &str, view: Vec<ServiceView>) {
        self.lb.insert(api.to_string(), Some(view));
        self.log.clear(AlarmKind::LbUnreachable, &format!("lb {api}"));
    }

    /// What an action's outcome means for the log.
    pub fn acted(&mut self, action: &Action, result: Result<(), String>) {
        let node = action.node().to_string();
        let provider = matches!(action, Action::ProviderStart { .. } | Action::ProviderStop { .. });
        match &result {
            Ok(()) => {
                self.failing.remove(action);
            }
            // The same refusal again (lbd or a relay answers it every keepalive): already reported.
            Err(_) if !provider && self.failing.contains(action) => return,
            Err(_) => {
                if self.failing.len() >= 10_000 {
                    self.failing.clear();
                }
                self.failing.insert(action.clone());
            }
        }
        match (action, result) {
            (Action::PrePull { app, key, .. }, Ok(())) => {
                if self.replicated.insert((node.clone(), app.clone(), key.clone())) {
                    self.log.event(
                        EventKind::ReplicationStarted,
                        &node,
                        format!("pulling {app}/{key} from the active origin"),
                    );
                }
            }
            (Action::PrePull { app, key, .. }, Err(e)) => {
                self.log.event(EventKind::ReplicationFailed, &node, format!("cannot pull {app}/{key}: {e}"));
            }
            (Action::SetOrigins { origins, .. }, Ok(())) => {
                self.log.event(EventKind::EdgeRepointed, &node, format!("origins now {}", origins.join(", ")));
            }
            (Action::PutSource { app, key, body, .. }, Ok(())) => {
                self.log.event(
                    EventKind::IngestStarted,
                    &node,
                    format!("ingesting {app}/{key} from {}", describe_sources(body)),
                );
            }
            (Action::DeleteSource { app, key, .. }, Ok(())) => {
                self.log.event(EventKind::IngestStopped, &node, format!("stopped ingesting {app}/{key}"));
            }
            (Action::LbAdd { service, .. }, Ok(())) => {
                self.log.event(EventKind::LbAdded, &node, format!("in service {service}"))
            }
            (Action::LbDrain { service, .. }, Ok(())) => {
                self.log.event(EventKind::LbDrained, &node, format!("drained in {service}"))
            }
            (Action::LbUndrain { service, .. }, Ok(())) => {
                self.log.event(EventKind::LbAdded, &node, format!("undrained in {service}"))
            }
            (Action::LbRemove { service, .. }, Ok(())) => {
                self.log.event(EventKind::LbRemoved, &node, format!("left {service}"))
            }
            (Action::LbWeight { service, weight, .. }, Ok(())) => {
                self.log.event(EventKind::LbAdded, &node, format!("weight {weight} in {service}"))
            }
            (Action::RelayMaintenance { .. }, Ok(())) => {}
            (a @ (Action::ProviderStart { .. } | Action::ProviderStop { .. }), r) => {
                self.provider_done(a, &r, Instant::now())
            }
            (a, Err(e)) => self.log.event(EventKind::ActionFailed, &node, format!("{} failed: {e}", a.describe())),
        }
    }
}

mod reload;
pub use reload::Reloaded;

#[cfg(test)]
pub(crate) mod tests;
