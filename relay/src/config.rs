//! The relay's configuration: roles, origin URLs, every setting with its default, and its validation.

use std::time::Duration;

use crate::{callback, managed, ChunkLimits};

/// Errors a user can cause (bad configuration) or the relay can hit while starting.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("invalid origin URL {url:?}: {reason}; expected rtmp://HOST[:PORT]/APP")]
    BadOriginUrl { url: String, reason: &'static str },
    #[error("an edge needs at least one --origin rtmp://HOST:PORT/APP, or a --manager that sets its origins")]
    NoOrigin,
    #[error(
        "--manager needs --api (the manager drives the node through it) and --api-token (shared with the manager)"
    )]
    ManagerNeedsApi,
    #[error(
        "the API listens on non-loopback address {0}: set --api-token (clients then send Authorization: Bearer TOKEN)"
    )]
    ApiTokenRequired(std::net::SocketAddr),
    #[error("--api-token must not be empty")]
    EmptyApiToken,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// An origin an edge pulls from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginUrl {
    pub host: String,
    pub port: u16,
    pub app: String,
}

impl OriginUrl {
    pub fn parse(url: &str) -> Result<Self, RelayError> {
        let bad = |reason| RelayError::BadOriginUrl { url: url.to_string(), reason };
        let rest = url.strip_prefix("rtmp://").ok_or_else(|| bad("scheme must be rtmp://"))?;
        let (hostport, app) = rest.split_once('/').ok_or_else(|| bad("missing /APP"))?;
        let app = app.trim_end_matches('/');
        if app.is_empty() || app.contains('/') {
            return Err(bad("APP must be one path segment"));
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad("bad port"))?),
            None => (hostport, 1935),
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        Ok(Self { host: host.to_string(), port, app: app.to_string() })
    }

    /// `rtmp://host:port/app`, the tcUrl we send when pulling.
    pub fn tc_url(&self) -> String {
        format!("rtmp://{}:{}/{}", self.host, self.port, self.app)
    }
}

impl std::fmt::Display for OriginUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.tc_url())
    }
}

/// Which side of the replication this process is.
#[derive(Debug, Clone)]
pub enum Role {
    /// Accepts publishers and players.
    Origin {
        /// When set, publishing needs `?token=` with this value on the stream key or tcUrl.
        publish_token: Option<String>,
    },
    /// Serves players by pulling from these origins (tried in turn on failure).
    Edge { origins: Vec<OriginUrl> },
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::Origin { .. } => "origin",
            Role::Edge { .. } => "edge",
        }
    }
}

/// Everything the relay needs; validated by the binary before any socket is bound.
#[derive(Debug, Clone)]
pub struct Config {
    pub role: Role,
    pub limits: ChunkLimits,
    /// RTMP connections open at once; more are closed at accept with a log line.
    pub max_connections: usize,
    /// Edge: stop pulling a stream this long after its last player left.
    pub idle_timeout: Duration,
    /// How long players stay attached to a stream whose publisher/upstream is gone.
    pub grace_period: Duration,
    /// A player whose socket accepts nothing for this long is disconnected.
    pub player_timeout: Duration,
    /// A publisher or upstream that sends nothing for this long is dropped.
    pub source_timeout: Duration,
    /// The RTMP handshake must complete within this.
    pub handshake_timeout: Duration,
    /// After the handshake, the client must send `connect` within this.
    pub connect_timeout: Duration,
    /// A connection that neither plays nor publishes and sends nothing for this long is closed.
    pub conn_idle_timeout: Duration,
    /// Play and publish requests one connection may make in its life (a play/deleteStream loop is abuse).
    pub max_streams_per_connection: usize,
    /// Edge: upstream pulls running at once; a play that would start one more is refused.
    pub max_pulls: usize,
    /// RTMP connections open at once from one client IP; 0 = no per-IP limit.
    pub max_connections_per_ip: usize,
    /// Edge: pulls one client IP may have started that have not received media yet (unknown keys cost an
    /// upstream connection each); a play that would start one more is refused. 0 = no limit.
    pub max_new_pulls_per_ip: usize,
    /// RTMPT sessions open at once from one client IP; 0 turns the limit off. Sessions are opened by a cheap
    /// request with no auth, so a default cap keeps one client from taking the connection budget.
    pub max_rtmpt_sessions_per_ip: usize,
    /// Bytes of recent frames a stream keeps for its players (the fan-out ring); the oldest go first.
    pub stream_buffer_bytes: usize,
    /// Bytes a player may fall behind the live edge before it skips to the next keyframe.
    pub player_buffer_bytes: usize,
    /// HTTP callbacks on publish, unpublish, play and stop.
    pub callbacks: callback::Callbacks,
    /// Bearer token the HTTP API requires (`Authorization: Bearer TOKEN`); required off loopback.
    pub api_token: Option<String>,
    /// Messages a player may fall behind before it skips to the next keyframe.
    pub player_queue: usize,
    /// Bytes of the latest GOP kept for new players.
    pub gop_max_bytes: usize,
    /// Audio and data wait at most this long for the next video frame, so each player gets them in one
    /// write with it (fewer socket writes per player); zero sends every message as it comes.
    pub coalesce: Duration,
    /// Merged writes: frames of a stream are held this long and go to each player in one write; zero = off.
    pub merge: Duration,
    /// Edge reconnect backoff, doubled per failure between these bounds.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// The stream manager this node registers with and reports ingest changes to.
    pub manager: Option<managed::ManagerLink>,
    /// Origin: sources to ingest from the start, (app, key, URL), as `--source` gives them.
    pub sources: Vec<(String, String, String)>,
}

impl Config {
    pub fn new(role: Role) -> Self {
        Self {
            role,
            limits: ChunkLimits::default(),
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(30),
            grace_period: Duration::from_secs(10),
            player_timeout: Duration::from_secs(10),
            source_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            conn_idle_timeout: Duration::from_secs(30),
            max_streams_per_connection: 8,
            max_pulls: 1000,
            max_connections_per_ip: 0,
            max_new_pulls_per_ip: 16,
            max_rtmpt_sessions_per_ip: 16,
            stream_buffer_bytes: 64 << 20,
            player_buffer_bytes: 8 << 20,
            api_token: None,
            callbacks: callback::Callbacks { timeout: Duration::from_secs(3), ..Default::default() },
            player_queue: 512,
            gop_max_bytes: 16 << 20,
            coalesce: Duration::from_millis(50),
            merge: Duration::from_millis(100),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(5),
            manager: None,
            sources: Vec::new(),
        }
    }

    pub fn validate(&self) -> Result<(), RelayError> {
        if let Role::Edge { origins } = &self.role {
            if origins.is_empty() && self.manager.is_none() {
                return Err(RelayError::NoOrigin);
            }
        }
        if self.api_token.as_deref() == Some("") {
            return Err(RelayError::EmptyApiToken);
        }
        if self.manager.is_some() && self.api_token.is_none() {
            return Err(RelayError::ManagerNeedsApi);
        }
        Ok(())
    }

    /// The API may listen without a token only on loopback, where only local users reach it.
    pub fn validate_api_addr(&self, addr: std::net::SocketAddr) -> Result<(), RelayError> {
        if self.api_token.is_none() && !addr.ip().is_loopback() {
            return Err(RelayError::ApiTokenRequired(addr));
        }
        Ok(())
    }
}
