//! The relay's HTTP API as its clients (the stream manager, operators' tools) read it: `GET /status`, `/streams`,
//! `/sources`, `PUT /origins`, `PUT /sources/{app}/{key}`, `POST|DELETE /maintenance`; the parser of source URLs
//! and the rule for app and stream names, so the manager checks what it sends with the relay's own rule.

use serde::{Deserialize, Serialize};

/// Longest app or stream name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// Whether `name` is an acceptable app or stream name: 1 to [`MAX_NAME_LEN`] bytes of ASCII letters, digits
/// and `-_.~`, not starting with a dot. Checked before anything is allocated for a name (a stream, a pull), so a
/// client cannot make a relay hold arbitrary strings, and names stay safe in URLs, logs and metric labels.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// What a relay is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayRole {
    /// Ingests streams (publishers, pull sources).
    #[default]
    Origin,
    /// Pulls streams from origins for its players.
    Edge,
}

/// `GET /status`: what a manager reads every keepalive, the node's state and its streams in one answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The name it registered with a manager under, if it is managed.
    pub name: Option<String>,
    pub role: RelayRole,
    pub maintenance: bool,
    pub players: usize,
    pub bitrate_out_kbps: u64,
    pub bitrate_in_kbps: u64,
    /// How long the relay process has run.
    pub uptime_secs: u64,
    /// `0.1.0 (1a2b3c4)`: the version and commit it runs, for watching a rolling upgrade. Absent from relays built
    /// before it was added, so a manager newer than its relays still reads them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// An edge's origins (`rtmp://HOST:PORT/APP`); empty on an origin.
    pub origins: Vec<String>,
    pub streams: Vec<StreamView>,
    /// The highest manager term whose commands this relay accepted (0: none since it started); see
    /// [`crate::manager::TERM_HEADER`]. Absent from older relays, so a newer reader still parses them.
    #[serde(default)]
    pub manager_term: u64,
}

/// `GET /streams`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamsList {
    pub role: RelayRole,
    pub streams: Vec<StreamView>,
}

/// A stream of a relay, in `GET /streams` and `GET /status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamView {
    pub app: String,
    pub key: String,
    /// Who feeds it; none while it waits for its publisher or upstream.
    pub source: Option<SourceInfo>,
    pub players: usize,
    pub players_by_protocol: PlayersByProtocol,
    pub bitrate_in_kbps: u64,
    pub bitrate_out_kbps: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub uptime_secs: u64,
    pub gop_cached_frames: usize,
}

/// Who feeds a stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// "publisher" on an origin, "upstream" on an edge, "pull-rtmp" or "pull-rtsp" for an origin's pull source.
    pub kind: String,
    /// Publisher's address or the URL pulled from.
    pub peer: String,
}

/// Players of a stream by protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayersByProtocol {
    pub rtmp: usize,
    #[serde(rename = "http-flv")]
    pub http_flv: usize,
    pub rtmpt: usize,
    /// HLS sessions (a client address, or a `session` query parameter, that asked within the session timeout).
    #[serde(default)]
    pub hls: usize,
}

/// `GET /sources`: an origin's pull sources.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SourcesList {
    pub sources: Vec<SourceView>,
}

/// Where a pull source is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceState {
    #[default]
    Connecting,
    Ingesting,
    Failed,
}

impl SourceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Connecting => "connecting",
            SourceState::Ingesting => "ingesting",
            SourceState::Failed => "failed",
        }
    }
}

/// One pull source in `GET /sources` (and the answer to `PUT /sources/{app}/{key}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceView {
    pub app: String,
    pub key: String,
    /// Which of the key's sources this is (`main` for a key with one url).
    #[serde(default)]
    pub role: String,
    /// This source is the one the key forwards now.
    #[serde(default)]
    pub live: bool,
    /// The key's switch timings (`source_timeout`, `source_stable_for`), as put.
    #[serde(default)]
    pub source_timeout_ms: u64,
    #[serde(default)]
    pub source_stable_for_ms: u64,
    /// The URL without credentials and query; `pushed` for an encoder that publishes `KEY?role=ROLE`,
    /// `slate:testcard` or `slate:file:PATH` for a slate.
    pub url: String,
    /// `ingesting`: delivering now (a key's backup is ingested too, warm); a pushed role waiting for its encoder
    /// is `connecting`.
    pub state: SourceState,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// Time in the current state.
    pub since_secs: u64,
    pub connects: u64,
    pub failures: u64,
    pub bytes_in: u64,
}

/// `PUT /sources/{app}/{key}`'s body: one pull `url` (the key's only source), or the key's ordered `sources`
/// (redundant sources: the first healthy one is live) with the switch's timings.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceBody {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// In order of preference: the first is `main`, then backups, a slate last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceEntry>,
    /// The live source is given up after delivering nothing this long (default 1 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_timeout: Option<crate::Dur>,
    /// A recovered preferred source must deliver this long before it is switched back to (default 5 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_stable_for: Option<crate::Dur>,
}

/// One source of a key: its role (how a pushed encoder names itself: `KEY?role=ROLE`) and, for a pulled one,
/// its URL; a `slate` has `testcard` or `file:PATH` (a looping file) as its URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceEntry {
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Default `source_timeout`.
pub const DEFAULT_SOURCE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// Default `source_stable_for`.
pub const DEFAULT_SOURCE_STABLE_FOR: std::time::Duration = std::time::Duration::from_secs(5);
/// `source_timeout`'s range: below 100 ms an encoder's normal jitter would switch; past a minute viewers left.
pub const SOURCE_TIMEOUT_RANGE: std::ops::RangeInclusive<std::time::Duration> =
    std::time::Duration::from_millis(100)..=std::time::Duration::from_secs(60);
/// `source_stable_for`'s range: 0 switches back at the first keyframe; past an hour it never would in practice.
pub const SOURCE_STABLE_FOR_RANGE: std::ops::RangeInclusive<std::time::Duration> =
    std::time::Duration::ZERO..=std::time::Duration::from_secs(3600);
/// Most sources one key may have.
pub const MAX_SOURCES_PER_KEY: usize = 8;
/// The role of the first source when a key has one `url`, and of a publisher that names none.
pub const MAIN_ROLE: &str = "main";
/// The role of the last resort: a generated test card or a looping file the origin plays itself.
pub const SLATE_ROLE: &str = "slate";

/// Where one source's media comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceInput {
    /// An encoder publishes `KEY?role=ROLE` to the origin.
    Pushed,
    /// The origin pulls it.
    Pull(SourceUrl),
    /// The origin plays it itself through ffmpeg: a generated test card, or a file looped.
    Slate(Slate),
}

/// What a slate shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slate {
    TestCard,
    File(String),
}

/// A key's sources, checked: roles in order, and the switch's timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePlan {
    pub sources: Vec<(String, SourceInput)>,
    pub timeout: std::time::Duration,
    pub stable_for: std::time::Duration,
}

impl SourcePlan {
    /// The roles in order of preference.
    pub fn order(&self) -> Vec<String> {
        self.sources.iter().map(|(r, _)| r.clone()).collect()
    }
}

impl SourceBody {
    /// Checks the body: everything wrong is refused with its reason, nothing is clamped.
    pub fn plan(&self) -> Result<SourcePlan, SourceError> {
        let bad = |why: String| SourceError::BadSources(why);
        let entries = match (self.url.is_empty(), self.sources.is_empty()) {
            (false, true) => vec![SourceEntry { role: MAIN_ROLE.into(), url: Some(self.url.clone()) }],
            (true, false) => self.sources.clone(),
            (false, false) => return Err(bad("give either url or sources, not both".into())),
            (true, true) => return Err(bad("no source: give url or a non-empty sources list".into())),
        };
        if entries.len() > MAX_SOURCES_PER_KEY {
            return Err(bad(format!("{} sources; at most {MAX_SOURCES_PER_KEY} per key", entries.len())));
        }
        let mut sources: Vec<(String, SourceInput)> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if !valid_name(&e.role) {
                return Err(bad(format!("source {}: bad role {:?} (1-128 of A-Z a-z 0-9 - _ . ~)", i + 1, e.role)));
            }
            if sources.iter().any(|(r, _)| *r == e.role) {
                return Err(bad(format!("source {}: role {:?} is given twice", i + 1, e.role)));
            }
            let input = match (e.role == SLATE_ROLE, &e.url) {
                (true, _) if i + 1 != entries.len() => {
                    return Err(bad(format!("source {}: the slate must be the last source", i + 1)))
                }
                (true, Some(u)) if u == "testcard" => SourceInput::Slate(Slate::TestCard),
                (true, Some(u)) if u.starts_with("file:") && u.len() > 5 => {
                    SourceInput::Slate(Slate::File(u[5..].into()))
                }
                (true, _) => {
                    return Err(bad(format!(
                        "source {}: a slate's url is testcard or file:PATH (a video file the origin loops)",
                        i + 1
                    )))
                }
                (false, None) => SourceInput::Pushed,
                (false, Some(u)) => SourceInput::Pull(SourceUrl::parse(u)?),
            };
            sources.push((e.role.clone(), input));
        }
        let timeout = self.source_timeout.map_or(DEFAULT_SOURCE_TIMEOUT, |d| d.0);
        if !SOURCE_TIMEOUT_RANGE.contains(&timeout) {
            return Err(bad(format!(
                "source_timeout {} is out of range 100ms..=60s: shorter switches on an encoder's normal jitter, longer leaves viewers on a frozen picture",
                crate::Dur(timeout)
            )));
        }
        let stable_for = self.source_stable_for.map_or(DEFAULT_SOURCE_STABLE_FOR, |d| d.0);
        if !SOURCE_STABLE_FOR_RANGE.contains(&stable_for) {
            return Err(bad(format!(
                "source_stable_for {} is out of range 0s..=1h: past an hour a recovered source would in practice never be used again",
                crate::Dur(stable_for)
            )));
        }
        Ok(SourcePlan { sources, timeout, stable_for })
    }
}

/// `GET /sources/{app}/{key}`: the key's sources in order of preference and which one is live.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeySources {
    pub app: String,
    pub key: String,
    /// The live source's role; none while no source delivers (the key is down).
    pub live: Option<String>,
    /// The role an operator forced (`POST /sources/{app}/{key}/switch`); none: automatic.
    pub forced: Option<String>,
    pub switches: u64,
    /// The last switch: from, to, why, how long ago.
    pub last_switch: Option<SwitchView>,
    pub source_timeout_ms: u64,
    pub source_stable_for_ms: u64,
    pub sources: Vec<KeySourceView>,
}

/// A switch as `GET /sources/{app}/{key}` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchView {
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
    pub secs_ago: u64,
}

/// One source of a key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySourceView {
    pub role: String,
    /// `publisher`, `pull-rtmp`, `pull-rtsp`, or none while nothing feeds this role.
    pub kind: Option<String>,
    /// Who feeds it now (a publisher's address, a URL without credentials).
    pub peer: Option<String>,
    pub live: bool,
    /// Delivering within `source_timeout`.
    pub healthy: bool,
    /// Time since it last sent anything.
    pub idle_ms: Option<u64>,
    pub frames: u64,
}

/// `POST /sources/{app}/{key}/switch`'s body: the role to make live now (and keep while it delivers), or
/// `auto` to go back to the order of preference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchBody {
    pub role: String,
}

/// `PUT /origins`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginsBody {
    pub origins: Vec<String>,
}

/// `PUT /origins`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginsAnswer {
    pub origins: Vec<String>,
    /// False when the list was the one in use.
    pub changed: bool,
}

/// `POST|DELETE /maintenance`'s answer: `players` says when the node is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceAnswer {
    pub maintenance: bool,
    pub players: usize,
}

/// `POST /streams/{app}/{key}/pull`'s answer (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullAnswer {
    pub app: String,
    pub key: String,
    pub pulling: bool,
    pub source: Option<SourceInfo>,
    pub held_for_secs: u64,
}

/// Why a source was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    #[error(
        "invalid source URL {0:?}: {1}; expected rtmp://HOST[:PORT]/APP/KEY or rtsp://[USER:PASS@]HOST[:PORT]/PATH"
    )]
    BadUrl(String, &'static str),
    #[error("bad app or stream name (1-128 of A-Z a-z 0-9 - _ . ~)")]
    BadName,
    #[error("sources are an origin operation")]
    NotOrigin,
    #[error("bad sources: {0}")]
    BadSources(String),
}

/// A parsed source URL: an RTMP encoder or an RTSP camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceUrl {
    Rtmp {
        host: String,
        port: u16,
        app: String,
        /// The stream name played upstream, with its `?query` if any.
        play: String,
        raw: String,
    },
    Rtsp {
        url: RtspUrl,
        raw: String,
    },
}

impl SourceUrl {
    pub fn parse(url: &str) -> Result<Self, SourceError> {
        let bad = |why| SourceError::BadUrl(shown(url), why);
        if url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(bad("spaces or control characters"));
        }
        let rest = match url.split_once("://") {
            Some(("rtmp", rest)) => rest,
            Some(("rtsp", _)) => {
                return Ok(SourceUrl::Rtsp { url: RtspUrl::parse(url).map_err(bad)?, raw: url.into() })
            }
            Some((_, _)) => return Err(bad("the scheme must be rtmp:// or rtsp://")),
            None => return Err(bad("no scheme")),
        };
        let (hostport, path) = rest.split_once('/').ok_or_else(|| bad("missing /APP/KEY"))?;
        let (app, play) = path.split_once('/').ok_or_else(|| bad("missing /KEY"))?;
        let key = play.split('?').next().unwrap_or("");
        if !valid_name(app) || !valid_name(key) {
            return Err(bad("APP and KEY must be 1-128 of A-Z a-z 0-9 - _ . ~"));
        }
        if hostport.contains('@') {
            return Err(bad("credentials in an rtmp:// URL go in the query (?user=...&pass=...), not before the host"));
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad("bad port"))?),
            None => (hostport, 1935),
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        Ok(SourceUrl::Rtmp { host: host.into(), port, app: app.into(), play: play.into(), raw: url.into() })
    }

    /// The URL without credentials and query (which may hold a token): for logs, the API and `/streams`.
    pub fn shown(&self) -> String {
        match self {
            SourceUrl::Rtmp { raw, .. } => shown(raw),
            SourceUrl::Rtsp { url, .. } => shown(url.url.as_str()),
        }
    }
}

fn shown(url: &str) -> String {
    let no_query = url.split('?').next().unwrap_or("");
    // Credentials in user info (rtsp://user:pass@host/...) are never shown.
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let (auth, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            format!("{scheme}://{}{path}", auth.rsplit_once('@').map_or(auth, |(_, h)| h))
        }
        None => no_query.to_string(),
    }
}

/// An `rtsp://[USER:PASS@]HOST[:PORT]/PATH` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtspUrl {
    /// Without credentials.
    pub url: url::Url,
    pub creds: Option<(String, String)>,
}

impl RtspUrl {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let mut url = url::Url::parse(raw).map_err(|_| "not a URL")?;
        if url.scheme() != "rtsp" {
            return Err("the scheme must be rtsp://");
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("missing host");
        }
        let creds = match (url.username(), url.password()) {
            ("", None) => None,
            (u, p) => Some((decode(u), decode(p.unwrap_or("")))),
        };
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(RtspUrl { url, creds })
    }
}

/// Percent-decoding of URL user info.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["test", "a", "cam-1_hd.v2~x", &"x".repeat(MAX_NAME_LEN)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "..", "a/b", "a b", "a?b", "ü", "a\0", &"x".repeat(MAX_NAME_LEN + 1)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn source_urls() {
        let SourceUrl::Rtmp { host, port, app, play, .. } = SourceUrl::parse("rtmp://10.0.0.5/live/cam1").unwrap()
        else {
            panic!("rtmp")
        };
        assert_eq!((host.as_str(), port, app.as_str(), play.as_str()), ("10.0.0.5", 1935, "live", "cam1"));
        let u = SourceUrl::parse("rtmp://enc.example:1936/app/k?token=s3cret").unwrap();
        assert!(matches!(&u, SourceUrl::Rtmp { port: 1936, play, .. } if play == "k?token=s3cret"));
        assert_eq!(u.shown(), "rtmp://enc.example:1936/app/k", "the token is not shown");
        let u = SourceUrl::parse("rtsp://viewer:pw@10.0.5.11:554/stream1").unwrap();
        assert_eq!(u.shown(), "rtsp://10.0.5.11:554/stream1", "credentials are not shown");
        assert!(matches!(u, SourceUrl::Rtsp { .. }));
        for (bad, why) in [
            ("http://x/a/b", "rtmp:// or rtsp://"),
            ("rtsp:///a", "missing host"),
            ("x/a/b", "no scheme"),
            ("rtmp://x/live", "missing /KEY"),
            ("rtmp://x", "missing /APP/KEY"),
            ("rtmp://x:99999/a/b", "bad port"),
            ("rtmp://u:p@x/a/b", "go in the query"),
            ("rtmp://x/a/b c", "spaces"),
            ("rtmp://x/a/../b", "APP and KEY"),
        ] {
            let e = SourceUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn rtsp_urls_keep_credentials_out_of_the_url() {
        let u = RtspUrl::parse("rtsp://viewer:s%40cret@10.0.5.11:554/stream1?x=1").unwrap();
        assert_eq!(u.url.as_str(), "rtsp://10.0.5.11:554/stream1?x=1");
        assert_eq!(u.creds, Some(("viewer".into(), "s@cret".into())));
        assert_eq!(RtspUrl::parse("rtsp://cam/a").unwrap().creds, None);
        assert!(RtspUrl::parse("rtmp://cam/a").is_err());
        assert!(RtspUrl::parse("rtsp:///a").is_err());
    }

    #[test]
    fn a_status_missing_a_field_the_relay_always_sends_is_refused() {
        let v = serde_json::to_value(Status::default()).unwrap();
        let mut without = v.as_object().unwrap().clone();
        without.remove("bitrate_out_kbps");
        let e = serde_json::from_value::<Status>(without.into()).unwrap_err().to_string();
        assert!(e.contains("missing field `bitrate_out_kbps`"), "{e}");
        assert_eq!(serde_json::from_value::<Status>(v).unwrap(), Status::default());
    }
}
