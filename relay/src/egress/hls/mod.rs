//! HLS and Low-Latency HLS on the media HTTP listener: `GET /APP/KEY/index.m3u8`, its init segment, segments and
//! parts (CMAF), the player page `/APP/KEY/play.html` and `/hls.min.js`.
//!
//! Every stream is packaged as it arrives (the hub's tap feeds a [`packager::Packager`]), whether or not anyone
//! plays it as HLS, so every edge that carries a stream has the same window of the same segments when the
//! first HLS request comes through the VIP. Requests are answered from memory on keep-alive connections.
//! Players pass the same gate as every other play (names, maintenance, the on_play callback, the edge's pull);
//! an HLS player has no connection of its own, so it is a *session*: a client address (or a `session` query
//! parameter) that asked within the session timeout, counted as a player and told to on_stop when it lapses.

pub mod packager;
pub mod playlist;
mod respond;
pub mod spool;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tracing::{info, warn};

use super::gate::open_play;
use super::Egress;
use crate::hub::{Ended, Event, Protocol, Stream, Tap, Taps};
use crate::wire::http::Request;
use packager::{HlsSettings, Packager};
use respond::{Body, Reply};

/// The player page, with hls.js from `/hls.min.js`.
const PLAYER_PAGE: &str = include_str!("../hls_player.html");
/// Most HLS sessions one client address may hold (distinct `session` parameters): each costs an on_play call.
pub const MAX_SESSIONS_PER_IP: usize = 64;
/// An ended stream's packager still answers (its playlist with `EXT-X-ENDLIST`) this long.
const ENDED_LINGER: Duration = Duration::from_secs(30);

/// What an HLS request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum File {
    Playlist,
    Page,
    Init(String),
    Segment(u64),
    Part(u64, usize),
}

/// `/APP/KEY/FILE[?QUERY]` to (app, key, file, query), or `None` if it is not an HLS target.
pub fn route(target: &str) -> Option<(&str, &str, File, &str)> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let rest = path.strip_prefix('/')?;
    let (dir, file) = rest.rsplit_once('/')?;
    let (app, key) = dir.split_once('/')?;
    let file = match file {
        "index.m3u8" => File::Playlist,
        "play.html" => File::Page,
        f if f.starts_with("init-") && f.ends_with(".mp4") => File::Init(f.to_string()),
        f => {
            let f = f.strip_suffix(".m4s")?;
            if let Some(n) = f.strip_prefix('s') {
                File::Segment(n.parse().ok()?)
            } else {
                let (msn, part) = f.strip_prefix('p')?.split_once('.')?;
                File::Part(msn.parse().ok()?, part.parse().ok()?)
            }
        }
    };
    Some((app, key, file, query))
}

/// The value of `name` in a query string.
fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
}

/// Who an HLS session is: the client's address, the stream, and its `session` parameter if it sends one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SessionKey {
    ip: IpAddr,
    app: String,
    key: String,
    id: String,
}

struct Session {
    stream: Arc<Stream>,
    last_seen: Instant,
    client_addr: String,
    query: String,
}

/// Each stream's packager by (app, key), with when it was seen ended.
type Packagers = HashMap<(String, String), (Arc<Packager>, Option<Instant>)>;

/// The relay's HLS: a packager per stream and the sessions of HLS players.
pub struct Hls {
    pub settings: HlsSettings,
    pub enabled: bool,
    packagers: Mutex<Packagers>,
    sessions: Mutex<HashMap<SessionKey, Session>>,
    /// hls.js, read once from `--hls-js` when first asked for.
    script: std::sync::OnceLock<Option<bytes::Bytes>>,
}

impl Hls {
    pub fn new(config: &crate::Config) -> Self {
        Self {
            settings: HlsSettings {
                segment_ms: config.hls_segment.as_millis() as i64,
                part_ms: config.hls_part.as_millis() as i64,
                window: config.hls_window,
                max_bytes: config.stream_buffer_bytes,
            },
            enabled: config.hls,
            packagers: Default::default(),
            sessions: Default::default(),
            script: Default::default(),
        }
    }

    fn packagers(&self) -> MutexGuard<'_, Packagers> {
        self.packagers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<SessionKey, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The packager of app/key, if the stream is (or recently was) here. An edge that stopped pulling for want
    /// of players has none: the stream goes on at the origin, and the next player starts the pull again.
    pub fn packager(&self, app: &str, key: &str) -> Option<Arc<Packager>> {
        self.packagers().get(&(app.to_string(), key.to_string())).map(|(p, _)| p.clone()).filter(|p| !p.state().retired)
    }

    /// How long an HLS player may ask nothing before its session ends: three target durations, and at least
    /// 10 s (a player that paused briefly, a slow network).
    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis((self.settings.segment_ms as u64 * 3).max(10_000))
    }

    /// Once a second: ends lapsed sessions (on_stop) and forgets ended streams' packagers after a while.
    pub fn tick(&self, ctx: &Egress) {
        let timeout = self.session_timeout();
        let lapsed: Vec<(SessionKey, Session)> = {
            let mut m = self.sessions();
            let keys: Vec<SessionKey> =
                m.iter().filter(|(_, s)| s.last_seen.elapsed() >= timeout).map(|(k, _)| k.clone()).collect();
            keys.into_iter().filter_map(|k| m.remove(&k).map(|s| (k, s))).collect()
        };
        for (k, s) in lapsed {
            s.stream.unsubscribe(Protocol::Hls);
            info!(client = %s.client_addr, app = %k.app, key = %k.key, "HLS session ended (no request within the session timeout)");
            ctx.hooks.tell(Ended {
                action: "on_stop",
                app: k.app,
                stream: k.key,
                query: s.query,
                tc_url: None,
                client_addr: s.client_addr,
                protocol: Protocol::Hls.as_str(),
            });
        }
        let mut m = self.packagers();
        for (p, ended_at) in m.values_mut() {
            if ended_at.is_none() && p.state().ended.is_some() {
                *ended_at = Some(Instant::now());
            }
        }
        m.retain(|_, (p, ended_at)| ended_at.is_none_or(|t| t.elapsed() < ENDED_LINGER) && !p.state().retired);
    }

    /// HLS sessions open now.
    pub fn sessions_open(&self) -> usize {
        self.sessions().len()
    }

    /// The session of this request: an existing one (refreshed), or a new one past the gate (on_play once).
    async fn session(&self, ctx: &Egress, peer: SocketAddr, app: &str, key: &str, query: &str) -> Result<(), Reply> {
        let id = query_value(query, "session").unwrap_or("").to_string();
        let k = SessionKey { ip: peer.ip(), app: app.to_string(), key: key.to_string(), id };
        {
            let mut m = self.sessions();
            if let Some(s) = m.get_mut(&k) {
                if !s.stream.is_ended() {
                    s.last_seen = Instant::now();
                    return Ok(());
                }
                let old = m.remove(&k).expect("present");
                old.stream.unsubscribe(Protocol::Hls);
            } else if m.keys().filter(|x| x.ip == k.ip).count() >= MAX_SESSIONS_PER_IP {
                return Err(Reply::text(503, "too many HLS sessions from your address"));
            }
        }
        let event = Event {
            action: "on_play",
            app,
            stream: key,
            client_addr: peer.to_string(),
            protocol: Protocol::Hls.as_str(),
            query,
            tc_url: None,
        };
        let stream = open_play(ctx, event).await.map_err(|r| {
            warn!(%peer, app, key, reason = %r.log, "HLS play refused");
            Reply::text(r.http_status, r.description)
        })?;
        stream.count_player(Protocol::Hls);
        crate::metrics::Metrics::inc(&ctx.metrics.players_total);
        info!(%peer, app, key, "HLS session started");
        let s = Session { stream, last_seen: Instant::now(), client_addr: peer.to_string(), query: query.to_string() };
        if let Some(old) = self.sessions().insert(k, s) {
            // Two first requests of one session raced through the gate: count it once.
            old.stream.unsubscribe(Protocol::Hls);
        }
        Ok(())
    }

    /// hls.js as `--hls-js` names it (read once).
    fn script(&self, ctx: &Egress) -> Option<bytes::Bytes> {
        self.script
            .get_or_init(|| {
                let path = ctx.config.hls_js.as_ref()?;
                match std::fs::read(path) {
                    Ok(b) => Some(bytes::Bytes::from(b)),
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "cannot read --hls-js");
                        None
                    }
                }
            })
            .clone()
    }
}

impl Taps for Hls {
    fn tap(&self, app: &str, key: &str) -> Option<Arc<dyn Tap>> {
        if !self.enabled {
            return None;
        }
        let p = Packager::new(app, key, self.settings);
        self.packagers().insert((app.to_string(), key.to_string()), (p.clone(), None));
        Some(p)
    }
}

/// Answers one HLS request on a keep-alive connection; false when the connection must close after it.
pub(crate) async fn answer(
    ctx: &Arc<Egress>,
    sock: &mut TcpStream,
    peer: SocketAddr,
    req: &Request,
) -> std::io::Result<bool> {
    let reply = match route(&req.target) {
        Some((app, key, file, query)) => reply(ctx, peer, req, app, key, file, query).await,
        None => Reply::text(404, "not found"),
    };
    respond::send(ctx, sock, peer, req, reply).await
}

async fn reply(
    ctx: &Arc<Egress>,
    peer: SocketAddr,
    req: &Request,
    app: &str,
    key: &str,
    file: File,
    query: &str,
) -> Reply {
    crate::metrics::Metrics::inc(&ctx.metrics.hls_requests);
    match req.method.as_str() {
        "GET" | "HEAD" => {}
        "OPTIONS" => return Reply::preflight(),
        _ => return Reply::text(405, "method not allowed"),
    }
    if req.content_length > 0 {
        return Reply::text(400, "an HLS request has no body");
    }
    let hls = &ctx.hls;
    if file == File::Page {
        if !crate::valid_name(app) || !crate::valid_name(key) {
            return Reply::text(400, "bad app or stream name");
        }
        return Reply::page(PLAYER_PAGE);
    }
    if !hls.enabled {
        return Reply::text(404, "HLS is off on this relay (--hls false)");
    }
    // A stream that ended after playing: its players get the last playlist (EXT-X-ENDLIST) and segments for a
    // while, rather than a new, empty stream of the same key.
    if let Some(p) = hls.packager(app, key).filter(|p| p.state().ended == Some(true)) {
        return respond::file(ctx, &p, file, query).await;
    }
    if let Err(r) = hls.session(ctx, peer, app, key, query).await {
        return r;
    }
    let Some(p) = hls.packager(app, key) else {
        return Reply::text(404, "stream not found");
    };
    respond::file(ctx, &p, file, query).await
}

/// `GET /hls.min.js`: the player library the page loads.
pub(crate) fn script_reply(ctx: &Egress) -> Reply {
    match ctx.hls.script(ctx) {
        Some(b) => Reply::ok("application/javascript", "public, max-age=3600", None, Body::One(b)),
        None => {
            Reply::text(404, "hls.js is not installed on this relay: set --hls-js PATH (cargo xtask setup vendors it)")
        }
    }
}

/// Answers `GET /hls.min.js` on a keep-alive connection.
pub(crate) async fn answer_script(
    ctx: &Arc<Egress>,
    sock: &mut TcpStream,
    peer: SocketAddr,
    req: &Request,
) -> std::io::Result<bool> {
    let reply = if matches!(req.method.as_str(), "GET" | "HEAD") {
        script_reply(ctx)
    } else {
        Reply::text(405, "method not allowed")
    };
    respond::send(ctx, sock, peer, req, reply).await
}

/// A request for a stream's packager after its session passed the gate.
pub(crate) fn ended_text(found: bool) -> &'static str {
    if found {
        "stream ended"
    } else {
        super::player::NOT_FOUND_TEXT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(route("/live/cam1/index.m3u8"), Some(("live", "cam1", File::Playlist, "")));
        assert_eq!(
            route("/live/cam1/index.m3u8?_HLS_msn=5&_HLS_part=1"),
            Some(("live", "cam1", File::Playlist, "_HLS_msn=5&_HLS_part=1"))
        );
        assert_eq!(route("/live/a/b/s12.m4s"), Some(("live", "a/b", File::Segment(12), "")));
        assert_eq!(route("/live/k/p12.3.m4s"), Some(("live", "k", File::Part(12, 3), "")));
        assert_eq!(route("/live/k/init-00ff.mp4"), Some(("live", "k", File::Init("init-00ff.mp4".into()), "")));
        assert_eq!(route("/live/k/play.html"), Some(("live", "k", File::Page, "")));
        for bad in
            ["/live/k.flv", "/live/k/s.m4s", "/live/k/p1.m4s", "/live/k/x.m4s", "/k/index.m3u8", "/live/k/s-1.m4s"]
        {
            assert_eq!(route(bad).map(|r| r.2), None, "{bad}");
        }
        assert_eq!(query_value("a=1&session=xyz", "session"), Some("xyz"));
        assert_eq!(query_value("a=1", "session"), None);
    }
}
