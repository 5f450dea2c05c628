//! The stream manager's API under `/api/v1/` as smctl, `smctl check` and operators' tools read it: nodes, groups,
//! pools, streams, events and alarms, and the answers to operator actions.

use serde::{Deserialize, Serialize};

/// The header a stream manager sends its term in on every command to a relay or lbd: `X-Manager-Term: <u64>`
/// (decimal). The term is the etcd revision at which the sending smd became leader, so a newer leader always has
/// a larger term. A relay or lbd refuses (409 Conflict) a state-changing command whose term is lower than the
/// highest it has accepted, so a deposed leader's commands in flight or delayed cannot land after its successor's;
/// a command without the header (an operator's curl or lbctl, a single smd with a file store) is not fenced.
pub const TERM_HEADER: &str = "x-manager-term";

/// What a node is to the manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Origin,
    Edge,
}

/// What the manager has heard from a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeHealth {
    /// Not heard from since the manager started.
    Unknown,
    Up,
    Down,
}

/// A node's state as the API, the console and the metrics show it: its health and its maintenance together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Up,
    Down,
    /// In maintenance and still serving (players, or groups not handed over yet).
    Draining,
    /// In maintenance and empty (or its drain timed out).
    Maintenance,
    Unknown,
}

impl NodeState {
    pub const ALL: [NodeState; 5] =
        [NodeState::Up, NodeState::Down, NodeState::Draining, NodeState::Maintenance, NodeState::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Down => "down",
            NodeState::Draining => "draining",
            NodeState::Maintenance => "maintenance",
            NodeState::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /api/v1/nodes` (a list) and `GET /api/v1/nodes/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub role: NodeRole,
    pub state: NodeState,
    pub health: NodeHealth,
    pub api: String,
    pub rtmp: String,
    /// An edge's pool (none for an origin).
    pub pool: Option<String>,
    pub groups: Vec<String>,
    /// Groups this origin is the active member of.
    pub active_in: Vec<String>,
    pub streams: usize,
    pub players: usize,
    pub bitrate_out_kbps: u64,
    /// Unix seconds, while in maintenance.
    pub maintenance_since: Option<u64>,
    /// Unix seconds of its last answer, if any.
    pub last_seen: Option<u64>,
    pub last_error: Option<String>,
    /// Self-registered (not from the config).
    pub registered: bool,
    /// The version its last status gave (`0.1.0 (1a2b3c4)`); none before its first answer or from older relays.
    pub version: Option<String>,
}

/// How a group's edges get its streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Replication {
    /// Every edge pulls every stream the group ingests, before any player asks.
    #[default]
    PrePull,
    /// Edges pull a stream when its first player arrives.
    OnDemand,
}

/// A planned move of a group to another member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverView {
    pub to: String,
    pub reason: String,
}

/// `GET /api/v1/groups`: one origin group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupView {
    pub name: String,
    pub app: String,
    pub failback: bool,
    pub replication: Replication,
    pub active: Option<String>,
    /// Unix seconds.
    pub active_since: Option<u64>,
    pub handover: Option<HandoverView>,
    pub failovers: u64,
    /// By priority, the preferred first.
    pub members: Vec<MemberView>,
    pub sources: Vec<GroupSourceView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    pub node: String,
    pub priority: u32,
    pub state: NodeState,
    pub active: bool,
}

/// A source of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSourceView {
    pub key: String,
    /// Without credentials; empty for a pushed source (its encoder publishes `KEY?role=ROLE`).
    pub url: String,
    /// The active member ingests it (the key has a live source).
    pub ingesting: bool,
    /// Which of the key's sources this entry is (main, backup..., slate).
    #[serde(default)]
    pub role: String,
    /// This source is the one the key forwards now (as the active member last said).
    #[serde(default)]
    pub live: bool,
    /// It delivers now (a backup warm, or live).
    #[serde(default)]
    pub healthy: bool,
}

/// `POST /api/v1/sources/{app}/{key}/switch`'s body: the role to make live on the active origin, or `auto`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchSourceBody {
    pub role: String,
}

/// `GET /api/v1/streams`: a stream across the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamSummary {
    pub group: Option<String>,
    pub app: String,
    pub key: String,
    /// The origin that ingests it.
    pub ingest: Option<String>,
    pub source: Option<String>,
    pub bitrate_in_kbps: u64,
    /// Edges that have it; players and outbound bit rate summed over them.
    pub edges: Vec<String>,
    pub players: usize,
    pub bitrate_out_kbps: u64,
}

/// `GET /api/v1/pools`: an edge pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolSummary {
    pub name: String,
    pub min: usize,
    pub max: Option<usize>,
    pub edges: Vec<String>,
    /// Edges up and not in maintenance.
    pub in_service: usize,
    pub down: usize,
    pub players: usize,
    pub bitrate_out_kbps: u64,
    /// Autoscaling: the load against capacity, and the edges it started, is starting and is stopping.
    pub utilisation: Option<f64>,
    pub started: Vec<String>,
    pub starting: Vec<String>,
    pub stopping: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    NodeRegistered,
    NodeUp,
    NodeDown,
    GroupActive,
    Failover,
    HandoverStarted,
    HandoverCancelled,
    HandoverDone,
    Failback,
    IngestStarted,
    IngestStopped,
    ReplicationStarted,
    ReplicationFailed,
    EdgeRepointed,
    MaintenanceOn,
    MaintenanceEmpty,
    MaintenanceOff,
    DrainTimeout,
    LbAdded,
    LbDrained,
    LbRemoved,
    ActionFailed,
    ScaleOut,
    ScaleOutDone,
    ScaleIn,
    ScaleInDone,
    ProviderFailed,
    NodeRemoved,
    AlarmRaised,
    AlarmCleared,
    /// An smd won the election on etcd and acts from now on (subject: its name; the message has the term).
    LeaderElected,
    /// An smd stopped acting: its lease lapsed or was lost (partitioned from etcd, paused) or it is stopping.
    LeaderLost,
    /// An smd applied its re-read configuration file (SIGHUP; subject: its name; the message lists the changes).
    ConfigReloaded,
    /// A key's origin switched to another of its redundant sources (subject: `APP/KEY`; from, to, on which node).
    SourceSwitched,
    /// One of a key's redundant sources stopped delivering (subject: `APP/KEY`; which role, on which node).
    SourceDown,
}

impl EventKind {
    /// The kind as the API spells it (`node-down`).
    pub fn as_str(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlarmKind {
    NodeDown,
    GroupNoActive,
    PoolBelowMin,
    SourceNotIngesting,
    DrainTimeout,
    LbUnreachable,
    ProviderFailed,
    /// The state file (maintenance, active members, registered edges) cannot be written: a restart would forget.
    StateNotSaved,
    /// The smd cannot reach its store (etcd): nothing is decided or changed until it can (the data plane keeps
    /// running as it is).
    StoreUnreachable,
    /// A key with redundant sources has none delivering on its active origin (main, backups and slate all down).
    SourceDown,
}

impl AlarmKind {
    pub const ALL: [AlarmKind; 10] = [
        AlarmKind::NodeDown,
        AlarmKind::GroupNoActive,
        AlarmKind::PoolBelowMin,
        AlarmKind::SourceNotIngesting,
        AlarmKind::DrainTimeout,
        AlarmKind::LbUnreachable,
        AlarmKind::ProviderFailed,
        AlarmKind::StateNotSaved,
        AlarmKind::StoreUnreachable,
        AlarmKind::SourceDown,
    ];

    /// The kind as the API spells it (`state-not-saved`).
    pub fn as_str(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }
}

/// `GET /api/v1/leader`: who acts among the smd of a deployment, as this smd sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderView {
    /// This smd's name (`name` in its config).
    pub me: String,
    /// The smd that leads (holds the election key), if any; with a file store always `me`.
    pub leader: Option<String>,
    /// Where the leader's API is (its `advertise`): followers forward writes there.
    pub leader_api: Option<String>,
    /// The etcd revision at which the leader was elected; a newer leader always has a larger one (0 with a file
    /// store). Relays and lbd refuse commands carrying an older term than one they accepted.
    pub term: u64,
    /// Whether this smd acts now (decides, commands nodes and the LB, writes the state).
    pub leading: bool,
    /// `file` or `etcd`.
    pub store: String,
    /// Whether the store answered at the last attempt.
    pub store_ok: bool,
    /// The other smd that have a session on the store now (etcd only), by name, with their API.
    #[serde(default)]
    pub members: Vec<ManagerMember>,
}

/// One smd of an HA deployment, as it announces itself in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerMember {
    pub name: String,
    pub api: String,
}

/// `GET /api/v1/events`: one entry, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// Unix time in milliseconds.
    pub time_ms: u64,
    pub kind: EventKind,
    /// The node, group or pool it is about.
    pub subject: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    pub kind: AlarmKind,
    pub subject: String,
    pub message: String,
    pub raised_ms: u64,
    /// Set once cleared; cleared alarms stay listed for a while (the newest 100).
    pub cleared_ms: Option<u64>,
}

/// `GET /api/v1/alarms`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarms {
    pub raised: Vec<Alarm>,
    /// Recently cleared ones, newest first.
    pub cleared: Vec<Alarm>,
}

/// `POST /api/v1/nodes`: a relay registers itself (`relay ... --manager URL --node-name NAME --advertise ADDR`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub name: String,
    pub role: NodeRole,
    /// Its HTTP API (`http://HOST:PORT`): keepalives and commands go there.
    pub api: String,
    /// Its RTMP address others reach it at.
    pub rtmp: std::net::SocketAddr,
    /// Its HTTP media address (HTTP-FLV, RTMPT), if it serves one.
    pub http: Option<std::net::SocketAddr>,
    /// Edges: the pool it belongs to (the manager's first pool when absent; relays do not send it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// `POST /api/v1/nodes` (a relay registers itself)'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub registered: bool,
    /// False when the node was registered with these addresses already.
    pub changed: bool,
}

/// The answer to an operator's action on a node or a pool (maintenance, resume, removal, pool start and stop):
/// what was done, in words. A 500 answer carries the same fields plus `error` (done, but not saved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionAnswer {
    /// The node acted on (absent for a pool start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The pool acted on (pool start and stop only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    pub message: String,
    /// The node's state after a maintenance or resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<NodeState>,
    /// Set by a removal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<bool>,
    /// Set when the action took effect but the state file could not be written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_states_are_spelt_as_on_the_wire() {
        assert_eq!(AlarmKind::StateNotSaved.as_str(), "state-not-saved");
        assert_eq!(EventKind::HandoverDone.as_str(), "handover-done");
        for s in NodeState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::Value::String(s.as_str().into()));
        }
    }
}
