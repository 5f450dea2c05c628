//! The relay's configuration: roles, origin URLs, every setting with its default, and its validation.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use svc::config::{in_range, ConfigError};
use svc::Dur;

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
    #[error(transparent)]
    Config(#[from] ConfigError),
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
    /// Package every stream as HLS / LL-HLS on the HTTP media listener.
    pub hls: bool,
    /// HLS target segment duration (segments are numbered by windows of it on the stream's clock).
    pub hls_segment: Duration,
    /// LL-HLS part duration; zero turns parts (Low-Latency HLS) off.
    pub hls_part: Duration,
    /// Segments an HLS playlist lists.
    pub hls_window: usize,
    /// `Access-Control-Allow-Origin` of HLS answers; empty sends none.
    pub hls_cors_origin: String,
    /// hls.js, served as `/hls.min.js` for the player page.
    pub hls_js: Option<std::path::PathBuf>,
    /// On SIGTERM: listeners closed, players served until they leave or this passes (0: stop at once).
    pub drain_timeout: Duration,
    /// The settings a SIGHUP changes while running (limits, callbacks, tokens, the HLS CORS origin), shared by every
    /// clone of this config; seeded from the fields above when the relay starts (see [`Live`]).
    pub live: std::sync::Arc<Live>,
}

/// The reloadable settings, as one value: read once per new connection, play, pull or API request (never per
/// frame), swapped whole by a reload, so a reader sees either the old set or the new one.
#[derive(Debug, Clone, Default)]
pub struct Reloadable {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_streams_per_connection: usize,
    pub max_pulls: usize,
    pub max_new_pulls_per_ip: usize,
    pub max_rtmpt_sessions_per_ip: usize,
    pub callbacks: callback::Callbacks,
    pub api_token: Option<String>,
    pub publish_token: Option<String>,
    pub hls_cors_origin: String,
}

impl Reloadable {
    /// The reloadable part of `c`.
    pub fn of(c: &Config) -> Self {
        Self {
            max_connections: c.max_connections,
            max_connections_per_ip: c.max_connections_per_ip,
            max_streams_per_connection: c.max_streams_per_connection,
            max_pulls: c.max_pulls,
            max_new_pulls_per_ip: c.max_new_pulls_per_ip,
            max_rtmpt_sessions_per_ip: c.max_rtmpt_sessions_per_ip,
            callbacks: c.callbacks.clone(),
            api_token: c.api_token.clone(),
            publish_token: match &c.role {
                Role::Origin { publish_token } => publish_token.clone(),
                Role::Edge { .. } => None,
            },
            hls_cors_origin: c.hls_cors_origin.clone(),
        }
    }
}

/// The running [`Reloadable`] settings behind a lock taken for the time of an `Arc` clone.
#[derive(Debug, Default)]
pub struct Live(std::sync::RwLock<std::sync::Arc<Reloadable>>);

impl Live {
    pub fn get(&self) -> std::sync::Arc<Reloadable> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, r: Reloadable) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(r);
    }
}

impl Config {
    /// The defaults of [`Settings`] for `role`.
    pub fn new(role: Role) -> Self {
        Self::from_settings(&Settings::default(), role)
    }

    /// The running configuration of checked `s` (see [`Settings::validate`]); callbacks, the manager link and
    /// sources are parsed by the caller and set after.
    pub fn from_settings(s: &Settings, role: Role) -> Self {
        let ms = Duration::from_millis;
        Self {
            role,
            limits: ChunkLimits { max_chunk_size: s.max_chunk_size, max_message_size: s.max_message_size },
            max_connections: s.max_connections as usize,
            idle_timeout: s.idle_timeout.0,
            grace_period: s.grace_period.0,
            player_timeout: s.player_timeout.0,
            source_timeout: s.source_timeout.0,
            handshake_timeout: s.handshake_timeout.0,
            connect_timeout: s.connect_timeout.0,
            conn_idle_timeout: s.conn_idle_timeout.0,
            max_streams_per_connection: s.max_streams_per_connection as usize,
            max_pulls: s.max_pulls as usize,
            max_connections_per_ip: s.max_connections_per_ip as usize,
            max_new_pulls_per_ip: s.max_new_pulls_per_ip as usize,
            max_rtmpt_sessions_per_ip: s.max_rtmpt_sessions_per_ip as usize,
            // Checked to at most 64 GiB, which fits the 64-bit usize of every target the relay builds for.
            stream_buffer_bytes: s.stream_buffer_bytes as usize,
            player_buffer_bytes: s.player_buffer_bytes as usize,
            api_token: s.api_token.clone(),
            callbacks: callback::Callbacks { timeout: s.callback_timeout.0, ..Default::default() },
            player_queue: s.player_queue as usize,
            gop_max_bytes: 16 << 20,
            coalesce: ms(s.coalesce_ms),
            merge: ms(s.merge_ms),
            backoff_min: ms(s.backoff_min_ms),
            backoff_max: ms(s.backoff_max_ms),
            manager: None,
            sources: Vec::new(),
            hls: s.hls,
            hls_segment: s.hls_segment.0,
            hls_part: s.hls_part.0,
            hls_window: s.hls_window as usize,
            hls_cors_origin: s.hls_cors_origin.clone(),
            hls_js: s.hls_js.clone(),
            drain_timeout: s.drain_timeout.0,
            live: Default::default(),
        }
    }

    /// The reloadable settings now (see [`Live`]).
    pub fn live(&self) -> std::sync::Arc<Reloadable> {
        self.live.get()
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

/// The largest message RTMP's 3-byte length field can carry.
pub const MAX_RTMP_MESSAGE: u32 = (1 << 24) - 1;
/// Bounds of the per-stream and per-player byte budgets: below 64 KiB not even a keyframe fits.
pub const MIN_BUFFER: u64 = 64 << 10;
pub const MAX_BUFFER: u64 = 64 << 30;
/// The most milliseconds `--merge-ms` and `--coalesce-ms` may hold frames: past a second the added latency is
/// that of HLS, not of RTMP, and the held frames of every stream grow with it.
pub const MAX_HOLD_MS: u64 = 1000;

/// Every setting of `relay origin` and `relay edge`, as the `--config` file and the flags give them (keys are the
/// long flag names, `-` or `_`), with its default: the one place defaults live. Checked by [`Settings::validate`];
/// documented, one entry each, in relay/README.md ("Settings").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub listen: Option<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
    pub api: Option<SocketAddr>,
    pub api_token: Option<String>,
    pub grace_period: Dur,
    pub player_timeout: Dur,
    pub source_timeout: Dur,
    pub handshake_timeout: Dur,
    pub connect_timeout: Dur,
    pub conn_idle_timeout: Dur,
    pub max_chunk_size: u32,
    pub max_message_size: u32,
    pub max_connections: u32,
    pub player_queue: u32,
    pub max_streams_per_connection: u32,
    pub max_connections_per_ip: u32,
    pub max_rtmpt_sessions_per_ip: u32,
    pub stream_buffer_bytes: u64,
    pub player_buffer_bytes: u64,
    pub on_publish: Option<String>,
    pub on_unpublish: Option<String>,
    pub on_play: Option<String>,
    pub on_stop: Option<String>,
    pub callback_timeout: Dur,
    pub coalesce_ms: u64,
    pub merge_ms: u64,
    pub manager: Option<String>,
    pub node_name: Option<String>,
    pub advertise: Option<IpAddr>,
    /// Origin only.
    pub publish_token: Option<String>,
    /// Origin only: `APP/KEY=URL` each.
    pub source: Vec<String>,
    /// Edge only: `rtmp://HOST[:PORT]/APP` each.
    pub origin: Vec<String>,
    pub idle_timeout: Dur,
    pub max_pulls: u32,
    pub max_new_pulls_per_ip: u32,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    pub hls: bool,
    pub hls_segment: Dur,
    pub hls_part: Dur,
    pub hls_window: u32,
    pub hls_cors_origin: String,
    pub hls_js: Option<std::path::PathBuf>,
    pub drain_timeout: Dur,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: None,
            http_listen: None,
            api: None,
            api_token: None,
            grace_period: Dur::secs(10),
            player_timeout: Dur::secs(10),
            source_timeout: Dur::secs(10),
            handshake_timeout: Dur::secs(10),
            connect_timeout: Dur::secs(10),
            conn_idle_timeout: Dur::secs(30),
            // 64 KiB chunks are what OBS/ffmpeg/nginx use at most in practice; 8 MiB holds a very large keyframe.
            max_chunk_size: 65_536,
            max_message_size: 8 << 20,
            max_connections: 10_000,
            player_queue: 512,
            max_streams_per_connection: 8,
            max_connections_per_ip: 0,
            max_rtmpt_sessions_per_ip: 16,
            stream_buffer_bytes: 64 << 20,
            player_buffer_bytes: 8 << 20,
            on_publish: None,
            on_unpublish: None,
            on_play: None,
            on_stop: None,
            callback_timeout: Dur::secs(3),
            // About one video frame: audio joins the next video frame's write (relay/BENCHMARKS.md).
            coalesce_ms: 50,
            // The fan-out benchmark's pick: under half the CPU per player of no merging, ~60 ms more mean lag.
            merge_ms: 100,
            manager: None,
            node_name: None,
            advertise: None,
            publish_token: None,
            source: Vec::new(),
            origin: Vec::new(),
            idle_timeout: Dur::secs(30),
            max_pulls: 1000,
            max_new_pulls_per_ip: 16,
            backoff_min_ms: 250,
            backoff_max_ms: 5000,
            hls: true,
            // Apple's authoring spec's 2 s keyframe interval: one GOP per segment.
            hls_segment: Dur::secs(2),
            // A third of a second: six parts per 2 s segment at 30 fps (ten frames each).
            hls_part: Dur::millis(333),
            hls_window: 6,
            hls_cors_origin: "*".into(),
            hls_js: None,
            // Long enough for a player to notice and for the LB to move new flows; short enough for a restart.
            drain_timeout: Dur::secs(30),
        }
    }
}

/// Settings only an origin has.
pub const ORIGIN_ONLY: &[&str] = &["publish_token", "source"];
/// Settings only an edge has.
pub const EDGE_ONLY: &[&str] =
    &["origin", "idle_timeout", "max_pulls", "max_new_pulls_per_ip", "backoff_min_ms", "backoff_max_ms"];

impl Settings {
    /// The keys a config file of `role` ("origin" or "edge") may hold.
    pub fn keys(role: &str) -> Vec<&'static str> {
        let other = if role == "origin" { EDGE_ONLY } else { ORIGIN_ONLY };
        svc::config::fields::<Settings>().iter().copied().filter(|k| !other.contains(k)).collect()
    }

    /// Refuses every value out of its range, naming the flag, the value, the range and why.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let day = Dur(svc::duration::MAX);
        let timeout_why = "a zero timeout would drop every connection at once; give a duration above 0";
        for (flag, d) in [
            ("--player-timeout", self.player_timeout),
            ("--source-timeout", self.source_timeout),
            ("--handshake-timeout", self.handshake_timeout),
            ("--connect-timeout", self.connect_timeout),
            ("--conn-idle-timeout", self.conn_idle_timeout),
            ("--callback-timeout", self.callback_timeout),
        ] {
            in_range(flag, d, Dur::millis(1), day, timeout_why)?;
        }
        in_range(
            "--drain-timeout",
            self.drain_timeout,
            Dur::secs(0),
            Dur::secs(3600),
            "0 stops at once; past an hour a stop (a restart, an upgrade) waits longer than any supervisor would",
        )?;
        let counts: [(&str, u64, u64, u64, &str); 11] = [
            (
                "--max-chunk-size",
                self.max_chunk_size.into(),
                128,
                MAX_RTMP_MESSAGE.into(),
                "128 is RTMP's own chunk size; 16777215 is the longest message RTMP's 3-byte length can say",
            ),
            (
                "--max-message-size",
                self.max_message_size.into(),
                4096,
                MAX_RTMP_MESSAGE.into(),
                "smaller refuses ordinary metadata; 16777215 is the longest message RTMP's 3-byte length can say",
            ),
            ("--max-connections", self.max_connections.into(), 1, 1_000_000, "0 would refuse every connection"),
            (
                "--player-queue",
                self.player_queue.into(),
                8,
                1_000_000,
                "fewer messages than one frame's audio and video skip players all the time",
            ),
            (
                "--max-streams-per-connection",
                self.max_streams_per_connection.into(),
                1,
                10_000,
                "0 would refuse every play and publish",
            ),
            (
                "--max-connections-per-ip",
                self.max_connections_per_ip.into(),
                0,
                1_000_000,
                "0 turns the limit off; more than --max-connections' ceiling means nothing",
            ),
            ("--max-rtmpt-sessions-per-ip", self.max_rtmpt_sessions_per_ip.into(), 0, 100_000, "0 turns the limit off"),
            (
                "--stream-buffer-bytes",
                self.stream_buffer_bytes,
                MIN_BUFFER,
                MAX_BUFFER,
                "below 64 KiB not even a keyframe fits",
            ),
            (
                "--player-buffer-bytes",
                self.player_buffer_bytes,
                MIN_BUFFER,
                MAX_BUFFER,
                "below 64 KiB not even a keyframe fits",
            ),
            (
                "--coalesce-ms",
                self.coalesce_ms,
                0,
                MAX_HOLD_MS,
                "longer holds audio past a video frame's time for nothing",
            ),
            (
                "--merge-ms",
                self.merge_ms,
                0,
                MAX_HOLD_MS,
                "past a second of added latency players see HLS-like delay and every stream holds more frames",
            ),
        ];
        for (flag, v, lo, hi, why) in counts {
            in_range(flag, v, lo, hi, why)?;
        }
        in_range("--max-pulls", self.max_pulls, 1, 100_000, "0 would refuse every pull")?;
        in_range("--max-new-pulls-per-ip", self.max_new_pulls_per_ip, 0, 100_000, "0 turns the limit off")?;
        let backoff_why = "0 would redial an origin in a busy loop; more than 10 minutes leaves a stream down long after its origin is back";
        in_range("--backoff-min-ms", self.backoff_min_ms, 1, 600_000, backoff_why)?;
        in_range("--backoff-max-ms", self.backoff_max_ms, 1, 600_000, backoff_why)?;
        if self.backoff_max_ms < self.backoff_min_ms {
            return Err(ConfigError::Invalid(format!(
                "--backoff-max-ms {} is below --backoff-min-ms {}: the maximum must be at least the minimum",
                self.backoff_max_ms, self.backoff_min_ms
            )));
        }
        in_range(
            "--hls-segment",
            self.hls_segment,
            Dur::millis(500),
            Dur::secs(30),
            "shorter than half a second is a segment per frame or two; longer than 30 s is past what players buffer",
        )?;
        if !self.hls_part.0.is_zero() {
            in_range(
                "--hls-part",
                self.hls_part,
                Dur::millis(100),
                Dur(self.hls_segment.0 / 2),
                "0 turns parts off; under 100 ms a part is a frame or two, over half --hls-segment it is no part",
            )?;
        }
        in_range(
            "--hls-window",
            self.hls_window,
            3,
            1000,
            "players need three segments behind the live edge; the window is kept in memory",
        )?;
        if self.hls_cors_origin.contains(['\r', '\n']) {
            return Err(ConfigError::Invalid("--hls-cors-origin must be one line (an origin, * or empty)".into()));
        }
        if self.listen.is_none() {
            return Err(ConfigError::Invalid(
                "no RTMP listen address: give --listen ADDR (or listen = \"ADDR\" in the --config file)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_with_a_listen_address() {
        let s = Settings { listen: Some("127.0.0.1:1935".parse().unwrap()), ..Settings::default() };
        s.validate().unwrap();
        let c = Config::new(Role::Origin { publish_token: None });
        assert_eq!((c.max_connections, c.player_queue, c.merge), (10_000, 512, Duration::from_millis(100)));
    }

    #[test]
    fn out_of_range_is_refused_with_the_range_never_clamped() {
        let ok = Settings { listen: Some("127.0.0.1:1935".parse().unwrap()), ..Settings::default() };
        for (s, want) in [
            (Settings { merge_ms: 1001, ..ok.clone() }, "--merge-ms 1001 is out of range 0..=1000"),
            (Settings { player_queue: 7, ..ok.clone() }, "--player-queue 7 is out of range 8..=1000000"),
            (
                Settings { max_streams_per_connection: 0, ..ok.clone() },
                "--max-streams-per-connection 0 is out of range 1..=10000",
            ),
            (Settings { backoff_min_ms: 0, ..ok.clone() }, "--backoff-min-ms 0 is out of range 1..=600000"),
            (Settings { backoff_max_ms: 700_000, ..ok.clone() }, "--backoff-max-ms 700000 is out of range"),
            (
                Settings { player_timeout: Dur::secs(0), ..ok.clone() },
                "--player-timeout 0s is out of range 1ms..=86400s",
            ),
            (Settings { listen: None, ..ok.clone() }, "no RTMP listen address"),
            (Settings { hls_part: Dur::millis(1500), ..ok.clone() }, "--hls-part 1500ms is out of range 100ms..=1s"),
            (Settings { hls_window: 2, ..ok.clone() }, "--hls-window 2 is out of range 3..=1000"),
            (Settings { hls_segment: Dur::millis(100), ..ok.clone() }, "--hls-segment 100ms is out of range"),
        ] {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(want), "wanted {want:?} in {e:?}");
        }
    }

    /// Every setting has its entry in relay/README.md ("Settings"), as `--flag`.
    #[test]
    fn every_setting_is_in_the_readme() {
        let readme = include_str!("../README.md");
        let names: Vec<String> =
            svc::config::fields::<Settings>().iter().map(|f| svc::config::Keys::Flags.show(f)).collect();
        assert_eq!(names.len(), 44);
        assert_eq!(svc::config::undocumented(readme, &names), Vec::<String>::new());
    }
}
