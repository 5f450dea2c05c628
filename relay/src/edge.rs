//! Edge pulls: one upstream connection per stream, idle stop, reconnect with backoff over the origin list.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tracing::{info, warn};

use crate::hub::{SourceInfo, Stream};
use crate::metrics::Metrics;
use crate::proto::{ClientEvent, ClientSession, HandshakeState, HandshakeStep, ProtoError};
use crate::{Ctx, OriginUrl, Role};

/// Why a pull was not started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PullRefused {
    #[error("bad app or stream name (1-128 of A-Z a-z 0-9 - _ . ~)")]
    BadName,
    #[error("pull limit reached (--max-pulls {0})")]
    Limit(usize),
}

/// Returns the stream for app/key, starting its pull if this call created it.
///
/// The hub's map lock makes creation atomic, so however many players arrive at once exactly one pull
/// task (one upstream connection) exists per stream. A new pull first takes a slot of --max-pulls, so one
/// client cycling through names cannot open an upstream connection per name.
pub(crate) fn ensure_pull(ctx: &Arc<Ctx>, app: &str, name: &str) -> Result<Arc<Stream>, PullRefused> {
    if !crate::valid_name(app) || !crate::valid_name(name) {
        return Err(PullRefused::BadName);
    }
    if let Some(s) = ctx.hub.get(app, name) {
        return Ok(s);
    }
    let max = ctx.config.max_pulls;
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
    if !matches!(ctx.config.role, Role::Edge { .. }) {
        ctx.pulls.fetch_sub(1, Ordering::AcqRel);
        return Ok(stream);
    }
    info!(app, key = name, origins = ctx.origins_for(app).len(), "starting pull");
    let (ctx, s) = (ctx.clone(), stream.clone());
    tokio::spawn(async move {
        pull_loop(ctx.clone(), s).await;
        ctx.pulls.fetch_sub(1, Ordering::AcqRel);
    });
    Ok(stream)
}

/// Why one upstream session ended.
pub(crate) enum PullEnd {
    /// No players for --idle-timeout.
    Idle,
    /// The stream was ended (grace period over, or shutdown).
    Ended,
    /// The origin list changed and this upstream is no longer the first origin of its app: move now.
    Repoint,
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

async fn pull_loop(ctx: Arc<Ctx>, stream: Arc<Stream>) {
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
                let up = Upstream::of_origin(origin, &stream.name, generation);
                (pull_once(&ctx, &stream, &up, &mut reached_playing).await, origin.to_string())
            }
            None => (Err(PullError::NoOrigin), "-".to_string()),
        };
        match r {
            Ok(PullEnd::Idle) => {
                info!(app = %stream.app, key = %stream.name, idle_secs = ctx.config.idle_timeout.as_secs(), "no players, stopping pull");
                ctx.hub.remove(&stream);
                return;
            }
            Ok(PullEnd::Ended) => {
                ctx.hub.remove(&stream);
                return;
            }
            Ok(PullEnd::Repoint) => {
                info!(from = %origin, app = %stream.app, key = %stream.name, "origin list changed, moving to its first origin");
                // Straight to the new first origin, no backoff: the players are waiting.
                i = 0;
                backoff = ctx.config.backoff_min;
                continue;
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
        if stream.is_ended() || stream.idle_for().is_some_and(|d| d >= ctx.config.idle_timeout) {
            ctx.hub.remove(&stream);
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
    Edge { origin: &'a OriginUrl, generation: u64 },
    /// An origin's ingest of a source: it runs, players or not, until the source is removed.
    Source { removed: &'a std::sync::atomic::AtomicBool },
}

impl<'a> Upstream<'a> {
    fn of_origin(origin: &'a OriginUrl, name: &'a str, generation: u64) -> Self {
        Upstream {
            host: &origin.host,
            port: origin.port,
            app: &origin.app,
            tc_url: origin.tc_url(),
            play: name,
            kind: "upstream",
            role: UpstreamRole::Edge { origin, generation },
        }
    }
}

/// One upstream connection: handshake, play, then feed the stream until it fails or is not needed.
pub(crate) async fn pull_once(
    ctx: &Arc<Ctx>,
    stream: &Arc<Stream>,
    up: &Upstream<'_>,
    playing: &mut bool,
) -> Result<PullEnd, PullError> {
    let origin = &up.tc_url;
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
    let mut source: Option<u64> = None;
    let mut stop = ctx.stopping.clone();
    let mut check = tokio::time::interval(Duration::from_millis(500));
    let mut last_input = Instant::now();
    let result = loop {
        let mut busy = false;
        for ev in events.drain(..) {
            match ev {
                ClientEvent::Playing => {
                    if source.is_none() {
                        match stream.attach_source(SourceInfo { kind: up.kind, peer: up.tc_url.clone() }) {
                            Ok(id) => source = Some(id),
                            // Only this task attaches to an edge stream, so this is not expected; retry later.
                            Err(e) => {
                                warn!(key = %stream.name, error = %e, "cannot attach upstream");
                                busy = true;
                                continue;
                            }
                        }
                        *playing = true;
                        Metrics::inc(&ctx.metrics.upstream_connects);
                        ctx.metrics.upstream_active.fetch_add(1, Ordering::Relaxed);
                        info!(origin = %origin, app = %stream.app, key = %stream.name, "upstream playing");
                    }
                }
                ClientEvent::Media(m) => {
                    if let Some(id) = source {
                        stream.push(id, m);
                    }
                }
                ClientEvent::Unpublished => {
                    info!(origin = %origin, key = %stream.name, "origin reports the publisher left; waiting")
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
        let held = stream.held_until().map(Instant::from_std);
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
            _ = tokio::time::sleep_until(held.unwrap_or_else(Instant::now)), if held.is_some() => {
                stream.release_due();
            }
            _ = check.tick() => {
                if stream.is_ended() {
                    break Ok(PullEnd::Ended);
                }
                match up.role {
                    UpstreamRole::Edge { .. } if stream.idle_for().is_some_and(|d| d >= ctx.config.idle_timeout) => {
                        break Ok(PullEnd::Idle);
                    }
                    UpstreamRole::Source { removed } if removed.load(Ordering::Acquire) => break Ok(PullEnd::Ended),
                    _ => {}
                }
                if last_input.elapsed() >= ctx.config.source_timeout {
                    break Err(PullError::Timeout("upstream sent nothing within --source-timeout"));
                }
                if let UpstreamRole::Edge { origin, generation } = up.role {
                    if ctx.origins_gen.load(Ordering::Acquire) != generation
                        && ctx.origins_for(&stream.app).first() != Some(origin)
                    {
                        break Ok(PullEnd::Repoint);
                    }
                }
            }
            _ = stop.wait() => break Ok(PullEnd::Ended),
        }
    };
    if let Some(id) = source {
        stream.detach_source(id);
        ctx.metrics.upstream_active.fetch_sub(1, Ordering::Relaxed);
    }
    result
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
