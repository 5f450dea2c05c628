//! Edge pulls: one upstream connection per stream, idle stop, reconnect with backoff over the origin list, and
//! the verdicts only the pull can reach: the origin never had the key (not found, cached briefly), or it ended
//! the stream (players ended), as opposed to a lost upstream (players held while the next origin is tried).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tracing::{info, warn};

use super::Ingest;
use crate::hub::{Opener, Publisher, SourceInfo, Stream};
use crate::metrics::Metrics;
use crate::wire::proto::{ClientEvent, ClientSession, HandshakeState, HandshakeStep, ProtoError};
use crate::OriginUrl;

/// How long a key the origin did not have is answered "not found" at once, without asking the origin again:
/// short, so a publisher starting just after is found soon; long enough that players retrying a missing key
/// cost at most one upstream connection per key per period.
pub const NOT_FOUND_CACHE: Duration = Duration::from_secs(5);

/// Why a pull was not started: the hub's refusal of a player's stream, which egress shows the player.
pub(crate) use crate::hub::OpenRefused as PullRefused;

/// An edge's pulls: built only on an edge, it is the [`Opener`] its players' streams come from.
pub struct Edge {
    pub ingest: Arc<Ingest>,
    /// Pull tasks running now (bounded by --max-pulls).
    pub pulls: AtomicUsize,
    /// Pulls without media yet, by the client IP that started them (bounded by --max-new-pulls-per-ip).
    pub new_pulls_per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Keys the origin did not have, until when a play of them is answered "not found" without a pull.
    pub not_found: Mutex<HashMap<(String, String), std::time::Instant>>,
    /// The origins pulled from, in order of preference; `--origin` at start, replaced by `PUT /origins`.
    pub origins: RwLock<Vec<OriginUrl>>,
    /// Bumped on every origin-list change: running pulls check it and move to the new first origin.
    pub origins_gen: AtomicU64,
}

impl std::ops::Deref for Edge {
    type Target = Ingest;
    fn deref(&self) -> &Ingest {
        &self.ingest
    }
}

impl Edge {
    pub fn new(ingest: Arc<Ingest>, origins: Vec<OriginUrl>) -> Self {
        Self {
            ingest,
            pulls: Default::default(),
            new_pulls_per_ip: Default::default(),
            not_found: Default::default(),
            origins: RwLock::new(origins),
            origins_gen: Default::default(),
        }
    }

    /// The origins serving `app`, in order of preference.
    pub fn origins_for(&self, app: &str) -> Vec<OriginUrl> {
        let list = self.origins.read().unwrap_or_else(|e| e.into_inner());
        list.iter().filter(|o| o.app == app).cloned().collect()
    }

    /// Replaces the origin list; pulls whose upstream is not the new first origin of its app move to it.
    pub fn set_origins(&self, origins: Vec<OriginUrl>) {
        *self.origins.write().unwrap_or_else(|e| e.into_inner()) = origins;
        self.origins_gen.fetch_add(1, Ordering::AcqRel);
    }
}

/// On an edge a player's stream is a pull from the first origin serving its app.
impl Opener for Arc<Edge> {
    fn serves(&self, app: &str) -> bool {
        !self.origins_for(app).is_empty()
    }
    fn open(&self, app: &str, key: &str, client: Option<IpAddr>) -> Result<Arc<Stream>, PullRefused> {
        ensure_pull(self, app, key, client)
    }
}

/// A pull counted against the client IP that started it until it receives media (or ends): unknown keys cost
/// an upstream connection each, so one address may not hold more than --max-new-pulls-per-ip of them.
pub(crate) struct NewPullSlot {
    ctx: Arc<Edge>,
    ip: Option<IpAddr>,
}

impl NewPullSlot {
    fn take(ctx: &Arc<Edge>, ip: Option<IpAddr>) -> Result<Self, PullRefused> {
        let limit = ctx.config.live().max_new_pulls_per_ip;
        let Some(ip) = ip.filter(|_| limit > 0) else {
            return Ok(Self { ctx: ctx.clone(), ip: None });
        };
        let mut m = ctx.new_pulls_per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= limit {
            if *n == 0 {
                m.remove(&ip);
            }
            Metrics::inc(&ctx.metrics.pulls_refused_per_ip);
            return Err(PullRefused::PerIp(limit));
        }
        *n += 1;
        Ok(Self { ctx: ctx.clone(), ip: Some(ip) })
    }
}

impl Drop for NewPullSlot {
    fn drop(&mut self) {
        let Some(ip) = self.ip else {
            return;
        };
        let mut m = self.ctx.new_pulls_per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }
}

/// Whether app/key is in the negative cache (the origin had no such stream a moment ago).
fn known_missing(ctx: &Edge, app: &str, name: &str) -> bool {
    let mut m = ctx.not_found.lock().unwrap_or_else(|e| e.into_inner());
    let key = (app.to_string(), name.to_string());
    match m.get(&key) {
        Some(until) if *until > std::time::Instant::now() => true,
        Some(_) => {
            m.remove(&key);
            false
        }
        None => false,
    }
}

/// Returns the stream for app/key, starting its pull if this call created it.
///
/// The hub's map lock makes creation atomic, so however many players arrive at once exactly one pull
/// task (one upstream connection) exists per stream. A new pull first takes a slot of --max-pulls and one of
/// its client's --max-new-pulls-per-ip, so one client cycling through names cannot open an upstream connection
/// per name; a key the origin just said it does not have is refused from the negative cache.
pub(crate) fn ensure_pull(
    ctx: &Arc<Edge>,
    app: &str,
    name: &str,
    client: Option<IpAddr>,
) -> Result<Arc<Stream>, PullRefused> {
    if !crate::valid_name(app) || !crate::valid_name(name) {
        return Err(PullRefused::BadName);
    }
    if let Some(s) = ctx.hub.get(app, name) {
        return Ok(s);
    }
    if known_missing(ctx, app, name) {
        Metrics::inc(&ctx.metrics.not_found_cache_hits);
        return Err(PullRefused::NotFound);
    }
    let slot = NewPullSlot::take(ctx, client)?;
    let max = ctx.config.live().max_pulls;
    if ctx.pulls.fetch_add(1, Ordering::AcqRel) >= max {
        ctx.pulls.fetch_sub(1, Ordering::AcqRel);
        Metrics::inc(&ctx.metrics.pulls_refused);
        return Err(PullRefused::Limit(max));
    }
    let (stream, created) = ctx.hub.get_or_create(app, name);
    if !created {
        // Another player created it between the lookup and here: its pull has the slot.
        ctx.pulls.fetch_sub(1, Ordering::AcqRel);
        return Ok(stream);
    }
    info!(app, key = name, origins = ctx.origins_for(app).len(), "starting pull");
    let (ctx, s) = (ctx.clone(), stream.clone());
    tokio::spawn(async move {
        pull_loop(ctx.clone(), s, slot).await;
        ctx.pulls.fetch_sub(1, Ordering::AcqRel);
    });
    Ok(stream)
}

/// What an edge pull has learnt from its upstream sessions, across reconnects.
pub(crate) struct PullState {
    /// An upstream said the publisher left (UnpublishNotify, Stop) or the stream does not exist, and no media
    /// came since: unlike a lost connection, the stream ends unless media resumes within the grace period.
    unpublished: bool,
    /// An upstream answered StreamNotFound before any media came.
    not_found: bool,
    /// An upstream accepted the play: only then does "no media within the wait" mean the origin has no such
    /// stream (unreachable origins are a lost upstream, which the hub's grace period covers).
    answered: bool,
    /// When the last media message came from any upstream.
    last_media: Instant,
    /// Released once media arrives: from then on the pull is a real stream, not a guess at a name.
    slot: Option<NewPullSlot>,
}

/// How a pull ends its stream, decided from what the upstreams said.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// No media within the grace period (the documented wait), or the origin said it has no such stream.
    NotFound,
    /// The only players left a stream that never had media: nothing to keep the upstream connection for.
    Abandoned,
    /// The origin ended the stream and no media came for the grace period: end the players.
    Ended,
}

fn verdict(ctx: &Edge, stream: &Stream, st: &PullState) -> Option<Verdict> {
    let grace = ctx.config.grace_period;
    if !stream.had_media() {
        if st.not_found || (st.answered && stream.created.elapsed() >= grace) {
            return Some(Verdict::NotFound);
        }
        if stream.had_player() && stream.players() == 0 {
            return Some(Verdict::Abandoned);
        }
        return None;
    }
    (st.unpublished && st.last_media.elapsed() >= grace).then_some(Verdict::Ended)
}

/// Ends the stream as the verdict says; its players are told (not found or ended) by the hub's end.
fn conclude(ctx: &Edge, stream: &Arc<Stream>, v: Verdict) {
    let (app, key) = (&stream.app, &stream.name);
    match v {
        Verdict::NotFound => {
            Metrics::inc(&ctx.metrics.streams_not_found);
            let mut m = ctx.not_found.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            m.retain(|_, until| *until > now);
            m.insert((app.clone(), key.clone()), now + NOT_FOUND_CACHE);
            drop(m);
            info!(%app, %key, players = stream.players(), cache_secs = NOT_FOUND_CACHE.as_secs(), "the origin has no such stream, telling players and stopping pull");
        }
        Verdict::Abandoned => info!(%app, %key, "players left a stream that never had media, stopping pull"),
        Verdict::Ended => {
            Metrics::inc(&ctx.metrics.streams_ended_upstream);
            info!(%app, %key, players = stream.players(), "the origin ended the stream, ending players");
        }
    }
    ctx.hub.remove(stream);
}

/// Why one upstream session ended.
pub(crate) enum PullEnd {
    /// No players for --idle-timeout.
    Idle,
    /// The stream was ended (grace period over, or shutdown).
    Ended,
    /// The origin list changed and this upstream is no longer the first origin of its app: move now.
    Repoint,
    /// The edge pull concluded the stream is not found, abandoned or ended (and ended it).
    Verdict,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PullError {
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Timeout(&'static str),
    #[error("upstream closed the connection")]
    Closed,
    #[error("stream already has a source")]
    Busy,
    #[error("no origin is configured for this app")]
    NoOrigin,
}

async fn pull_loop(ctx: Arc<Edge>, stream: Arc<Stream>, slot: NewPullSlot) {
    let mut st = PullState {
        unpublished: false,
        not_found: false,
        answered: false,
        last_media: Instant::now(),
        slot: Some(slot),
    };
    let mut backoff = ctx.config.backoff_min;
    let mut i = 0usize;
    let mut stop = ctx.stopping.clone();
    loop {
        // The list is read at every attempt: a manager may have re-pointed this edge (PUT /origins).
        let generation = ctx.origins_gen.load(Ordering::Acquire);
        let origins = ctx.origins_for(&stream.app);
        let mut reached_playing = false;
        let (r, origin) = match origins.get(i % origins.len().max(1)) {
            Some(origin) => {
                let up = Upstream::of_origin(&ctx, origin, &stream.name, generation);
                (pull_once(&ctx, &stream, &up, &mut reached_playing, Some(&mut st)).await, origin.to_string())
            }
            None => (Err(PullError::NoOrigin), "-".to_string()),
        };
        match r {
            Ok(PullEnd::Idle) => {
                info!(app = %stream.app, key = %stream.name, idle_secs = ctx.config.idle_timeout.as_secs(), "no players, stopping pull");
                ctx.hub.retire(&stream);
                return;
            }
            Ok(PullEnd::Ended) => {
                ctx.hub.remove(&stream);
                return;
            }
            Ok(PullEnd::Verdict) => return,
            Ok(PullEnd::Repoint) => {
                info!(from = %origin, app = %stream.app, key = %stream.name, "origin list changed, moving to its first origin");
                // Straight to the new first origin, no backoff: the players are waiting.
                i = 0;
                backoff = ctx.config.backoff_min;
                continue;
            }
            Err(PullError::Proto(ProtoError::Refused { code, .. })) if code == "NetStream.Play.StreamNotFound" => {
                // The origin has no such stream (it waited its grace period for one): if media came before,
                // the stream ended there; if not, it was never found.
                info!(origin = %origin, app = %stream.app, key = %stream.name, "origin reports no such stream");
                if stream.had_media() {
                    st.unpublished = true;
                } else {
                    st.not_found = true;
                }
            }
            Err(e) => {
                Metrics::inc(&ctx.metrics.upstream_failures);
                if reached_playing {
                    // A session that worked: retry quickly, but on the next origin in case this one is going away.
                    backoff = ctx.config.backoff_min;
                }
                warn!(origin = %origin, app = %stream.app, key = %stream.name, error = %e, retry_ms = backoff.as_millis() as u64, "upstream failed, trying next origin after backoff");
            }
        }
        i += 1;
        if let Some(v) = verdict(&ctx, &stream, &st) {
            conclude(&ctx, &stream, v);
            return;
        }
        if stream.is_ended() {
            ctx.hub.remove(&stream);
            return;
        }
        if stream.idle_for().is_some_and(|d| d >= ctx.config.idle_timeout) {
            ctx.hub.retire(&stream);
            return;
        }
        let mut repointed = ctx.origins_gen.load(Ordering::Acquire) != generation;
        if !repointed {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait() => return,
            }
            repointed = ctx.origins_gen.load(Ordering::Acquire) != generation;
        }
        if repointed {
            i = 0;
            backoff = ctx.config.backoff_min;
        } else {
            backoff = (backoff * 2).min(ctx.config.backoff_max);
        }
    }
}

/// What an upstream session plays, and what ends it besides failure.
pub(crate) struct Upstream<'a> {
    pub host: &'a str,
    pub port: u16,
    pub app: &'a str,
    pub tc_url: String,
    /// The stream name played upstream (a source's may carry a `?query`).
    pub play: &'a str,
    /// What the stream's source is called in `/streams` ("upstream", "pull-rtmp").
    pub kind: &'static str,
    pub role: UpstreamRole<'a>,
}

pub(crate) enum UpstreamRole<'a> {
    /// An edge's pull: it stops when idle, and moves when its origin is no longer the first of the list.
    Edge { origin: &'a OriginUrl, generation: u64, edge: &'a Edge },
    /// An origin's ingest of a source: it runs, players or not, until the source is removed.
    Source { removed: &'a std::sync::atomic::AtomicBool, role: &'a str },
}

impl<'a> Upstream<'a> {
    fn of_origin(edge: &'a Edge, origin: &'a OriginUrl, name: &'a str, generation: u64) -> Self {
        Upstream {
            host: &origin.host,
            port: origin.port,
            app: &origin.app,
            tc_url: origin.tc_url(),
            play: name,
            kind: "upstream",
            role: UpstreamRole::Edge { origin, generation, edge },
        }
    }
}

/// One upstream connection: handshake, play, then feed the stream until it fails or is not needed.
pub(crate) async fn pull_once(
    ctx: &Ingest,
    stream: &Arc<Stream>,
    up: &Upstream<'_>,
    playing: &mut bool,
    mut edge: Option<&mut PullState>,
) -> Result<PullEnd, PullError> {
    let origin = &up.tc_url;
    Metrics::inc(&ctx.metrics.upstream_attempts);
    let connect_timeout = ctx.config.handshake_timeout;
    let mut sock = timeout(connect_timeout, TcpStream::connect((up.host, up.port)))
        .await
        .map_err(|_| PullError::Timeout("connect timed out"))??;
    let _ = sock.set_nodelay(true);
    let rest = timeout(connect_timeout, client_handshake(&mut sock))
        .await
        .map_err(|_| PullError::Timeout("handshake timed out"))??;
    let mut out = BytesMut::new();
    let mut session = ClientSession::new(ctx.config.limits, up.app, &up.tc_url, up.play, &mut out)?;
    let mut events = Vec::new();
    if !rest.is_empty() {
        session.feed(&rest, &mut out, &mut events)?;
    }
    let mut source: Option<Publisher> = None;
    let mut stop = ctx.stopping.clone();
    let mut check = tokio::time::interval(Duration::from_millis(500));
    let mut last_input = Instant::now();
    // Media came on this session: until then an accepted play is waiting for the stream, not a lost upstream.
    let mut session_media = false;
    let result = loop {
        let mut busy = false;
        for ev in events.drain(..) {
            match ev {
                ClientEvent::Playing => {
                    if source.is_none() {
                        let role = match up.role {
                            UpstreamRole::Source { role, .. } => role,
                            UpstreamRole::Edge { .. } => api_types::relay::MAIN_ROLE,
                        };
                        match Publisher::attach_as(
                            stream.clone(),
                            SourceInfo { kind: up.kind, peer: up.tc_url.clone() },
                            role,
                        ) {
                            Ok(p) => source = Some(p),
                            // Only this task attaches to an edge stream, so this is not expected; retry later.
                            Err(e) => {
                                warn!(key = %stream.name, error = %e, "cannot attach upstream");
                                busy = true;
                                continue;
                            }
                        }
                        *playing = true;
                        if let Some(st) = edge.as_deref_mut() {
                            st.answered = true;
                        }
                        Metrics::inc(&ctx.metrics.upstream_connects);
                        ctx.metrics.upstream_active.fetch_add(1, Ordering::Relaxed);
                        info!(origin = %origin, app = %stream.app, key = %stream.name, "upstream playing");
                    }
                }
                ClientEvent::Media(m) => {
                    session_media = true;
                    if let Some(p) = &source {
                        p.push(m);
                    }
                    if let Some(st) = edge.as_deref_mut() {
                        st.last_media = Instant::now();
                        st.unpublished = false;
                        st.slot = None;
                    }
                }
                ClientEvent::Unpublished => {
                    info!(origin = %origin, key = %stream.name, "origin reports the publisher left; waiting");
                    if let Some(st) = edge.as_deref_mut() {
                        st.unpublished = true;
                    }
                }
            }
        }
        if busy {
            break Err(PullError::Busy);
        }
        if !out.is_empty() {
            let b = out.split();
            match timeout(ctx.config.player_timeout, sock.write_all(&b)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break Err(e.into()),
                Err(_) => break Err(PullError::Timeout("upstream stopped reading")),
            }
        }
        let buf = session.decoder_buffer();
        buf.reserve(32 * 1024);
        tokio::select! {
            r = sock.read_buf(buf) => {
                match r {
                    Ok(0) => break Err(PullError::Closed),
                    Ok(n) => {
                        last_input = Instant::now();
                        ctx.metrics.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                        if let Err(e) = session.process(n, &mut out, &mut events) {
                            break Err(e.into());
                        }
                    }
                    Err(e) => break Err(e.into()),
                }
            }
            _ = check.tick() => {
                if stream.is_ended() {
                    break Ok(PullEnd::Ended);
                }
                let pulls = match up.role {
                    UpstreamRole::Edge { edge, .. } => Some(edge),
                    UpstreamRole::Source { .. } => None,
                };
                if let Some((v, pulls)) = edge.as_deref().zip(pulls).and_then(|(st, e)| Some((verdict(e, stream, st)?, e))) {
                    conclude(pulls, stream, v);
                    break Ok(PullEnd::Verdict);
                }
                match up.role {
                    UpstreamRole::Edge { .. } if stream.idle_for().is_some_and(|d| d >= ctx.config.idle_timeout) => {
                        break Ok(PullEnd::Idle);
                    }
                    UpstreamRole::Source { removed, .. } if removed.load(Ordering::Acquire) => break Ok(PullEnd::Ended),
                    _ => {}
                }
                if last_input.elapsed() >= silence_limit(ctx, *playing, session_media, edge.as_deref()) {
                    break Err(PullError::Timeout("upstream sent nothing within --source-timeout"));
                }
                if let UpstreamRole::Edge { origin, generation, edge } = up.role {
                    if edge.origins_gen.load(Ordering::Acquire) != generation
                        && edge.origins_for(&stream.app).first() != Some(origin)
                    {
                        break Ok(PullEnd::Repoint);
                    }
                }
            }
            _ = stop.wait() => break Ok(PullEnd::Ended),
        }
    };
    if let Some(p) = source {
        drop(p);
        ctx.metrics.upstream_active.fetch_sub(1, Ordering::Relaxed);
    }
    result
}

/// How long an upstream session may send nothing before it counts as lost.
///
/// An origin that accepted an edge's play but has no media yet (no publisher, or the publisher left) is silent on
/// purpose: it answers "not found" or sends media once its own grace period is over. Dropping it at
/// --source-timeout (10 s, the same as the default grace period) raced that answer, so the edge moved on to the
/// next origin and its players waited for its own deadline instead of the origin's word. Such a session waits its
/// grace period plus --source-timeout; the pull's verdict ends the stream first when there is nothing to wait for.
fn silence_limit(ctx: &Ingest, playing: bool, session_media: bool, edge: Option<&PullState>) -> Duration {
    let timeout = ctx.config.source_timeout;
    match edge {
        Some(st) if playing && (!session_media || st.unpublished) => ctx.config.grace_period.max(timeout) + timeout,
        _ => timeout,
    }
}

async fn client_handshake(sock: &mut TcpStream) -> Result<Vec<u8>, PullError> {
    let (mut hs, c0c1) = HandshakeState::client()?;
    sock.write_all(&c0c1).await?;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Err(PullError::Closed);
        }
        match hs.feed(&buf[..n])? {
            HandshakeStep::Continue { reply } => sock.write_all(&reply).await?,
            HandshakeStep::Done { reply, rest } => {
                sock.write_all(&reply).await?;
                return Ok(rest);
            }
        }
    }
}

/// Handshake for other client-side users (the load generator).
#[cfg(feature = "test-support")]
pub async fn connect_client(sock: &mut TcpStream) -> Result<Vec<u8>, std::io::Error> {
    client_handshake(sock).await.map_err(|e| std::io::Error::other(e.to_string()))
}
