//! RTMP connections: accept with a connection limit, handshake, then publish or play on the hub.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn};

use crate::hub::{Item, Protocol, Reader, SourceInfo, Stream};
use crate::metrics::Metrics;
use crate::wire::proto::{HandshakeState, HandshakeStep, ProtoError, ServerEvent, ServerSession};
use crate::{Ctx, Role};

/// What a player of a stream that never had media is told (RTMP onStatus code, and the description ffmpeg
/// prints as "Server error: ..."; HTTP-FLV gets 404 with it).
pub(crate) const NOT_FOUND: &str = "NetStream.Play.StreamNotFound";
pub(crate) const NOT_FOUND_TEXT: &str = "stream not found";

/// Most frames taken from the ring per wake-up: keeps other players' turns short.
const MAX_BATCH: usize = 64;
/// Most buffers in one vectored write (a frame is its chunk headers interleaved with payload slices).
const MAX_IOV: usize = 512;

/// Counts a connection against its client IP (--max-connections-per-ip) until dropped.
struct IpSlot {
    ctx: Arc<Ctx>,
    ip: std::net::IpAddr,
}

impl IpSlot {
    fn take(ctx: &Arc<Ctx>, ip: std::net::IpAddr) -> Option<Self> {
        let limit = ctx.config.max_connections_per_ip;
        if limit == 0 {
            return Some(Self { ctx: ctx.clone(), ip });
        }
        let mut m = ctx.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Self { ctx: ctx.clone(), ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if self.ctx.config.max_connections_per_ip == 0 {
            return;
        }
        let mut m = self.ctx.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// A connection admitted past --max-connections and --max-connections-per-ip; releases both when dropped.
pub(crate) struct Admitted {
    _ip: IpSlot,
    ctx: Arc<Ctx>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.ctx.metrics.connections_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The gate every media connection (RTMP, HTTP-FLV, RTMPT) passes at accept; None closes it with a log line.
pub(crate) fn admit(ctx: &Arc<Ctx>, peer: SocketAddr) -> Option<Admitted> {
    let active = ctx.metrics.connections_active.load(Ordering::Relaxed);
    if active as usize >= ctx.config.max_connections {
        Metrics::inc(&ctx.metrics.connections_refused_limit);
        warn!(%peer, limit = ctx.config.max_connections, "connection limit reached (--max-connections), closing new connection");
        return None;
    }
    let Some(ip) = IpSlot::take(ctx, peer.ip()) else {
        Metrics::inc(&ctx.metrics.connections_refused_per_ip);
        warn!(%peer, limit = ctx.config.max_connections_per_ip, "per-IP connection limit reached (--max-connections-per-ip), closing new connection");
        return None;
    };
    Metrics::inc(&ctx.metrics.connections_total);
    ctx.metrics.connections_active.fetch_add(1, Ordering::Relaxed);
    Some(Admitted { _ip: ip, ctx: ctx.clone() })
}

pub(crate) async fn accept_loop(ctx: Arc<Ctx>, listener: TcpListener) {
    let mut stop = ctx.stopping.clone();
    while let Some((sock, peer)) = svc::accept::next(&listener, &mut stop, "RTMP").await {
        let Some(slot) = admit(&ctx, peer) else {
            drop(sock);
            continue;
        };
        let _ = sock.set_nodelay(true);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            serve_rtmp(ctx, sock, peer, Protocol::Rtmp).await;
        });
    }
}

/// A byte stream an RTMP session runs on: a TCP connection, or the in-memory end of an RTMPT session.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Runs one RTMP session (handshake, commands, publish or play) on `sock` until it ends.
pub(crate) async fn serve_rtmp<S: Io>(ctx: Arc<Ctx>, sock: S, peer: SocketAddr, protocol: Protocol) {
    let mut conn = Conn {
        ctx: ctx.clone(),
        sock,
        peer,
        protocol,
        app: String::new(),
        tc_url: None,
        role: Mode::Idle,
        close: false,
        connected: false,
        streams_used: 0,
    };
    match conn.run().await {
        Ok(()) => debug!(%peer, "connection closed"),
        Err(ConnError::Proto(e)) => {
            Metrics::inc(&ctx.metrics.protocol_errors);
            warn!(%peer, error = %e, "bad input, closing this connection");
        }
        Err(e) => debug!(%peer, error = %e, "connection ended"),
    }
    conn.cleanup();
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Timeout(&'static str),
}

enum Mode {
    Idle,
    Publishing { stream: Arc<Stream>, source: u64, name: String, query: String },
    Playing { stream: Arc<Stream>, stream_id: u32, rx: Reader, skipping: bool, name: String, query: String },
}

struct Conn<S> {
    ctx: Arc<Ctx>,
    sock: S,
    peer: SocketAddr,
    /// RTMP, or RTMP tunnelled over HTTP (RTMPT): for player counts and callbacks.
    protocol: Protocol,
    app: String,
    tc_url: Option<String>,
    role: Mode,
    /// Close once pending replies are flushed (after a refusal).
    close: bool,
    /// `connect` was received (until then --connect-timeout runs).
    connected: bool,
    /// Play and publish requests so far (bounded by --max-streams-per-connection).
    streams_used: usize,
}

/// The query string of a stream key (`key?a=b` gives `a=b`), else of the tcUrl, else empty.
fn query_of<'a>(raw_name: &'a str, tc_url: Option<&'a str>) -> &'a str {
    raw_name.split_once('?').or_else(|| tc_url.and_then(|u| u.split_once('?'))).map_or("", |(_, q)| q)
}

/// Splits `name?a=b&c=d` and returns the name and the value of `key` in the query.
fn split_query<'a>(s: &'a str, key: &str) -> (&'a str, Option<&'a str>) {
    match s.split_once('?') {
        None => (s, None),
        Some((n, q)) => (n, q.split('&').find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))),
    }
}

impl<S: Io> Conn<S> {
    async fn run(&mut self) -> Result<(), ConnError> {
        let ctx = self.ctx.clone();
        let rest = timeout(ctx.config.handshake_timeout, self.handshake()).await.map_err(|_| {
            Metrics::inc(&ctx.metrics.connections_timed_out);
            info!(peer = %self.peer, reason = "no handshake within --handshake-timeout", "closing idle connection");
            ConnError::Timeout("handshake timed out")
        })??;
        let mut session = ServerSession::new(ctx.config.limits);
        let mut out = BytesMut::new();
        ServerSession::start(&mut out)?;
        let mut events = Vec::new();
        if !rest.is_empty() {
            session.feed(&rest, &mut out, &mut events)?;
        }
        let mut stop = ctx.stopping.clone();
        let handshake_done = Instant::now();
        let mut last_input = handshake_done;
        loop {
            self.handle_events(&mut session, &mut events, &mut out).await?;
            if !out.is_empty() {
                let b = out.split().freeze();
                self.write_all(VecDeque::from([b])).await?;
            }
            if self.close {
                return Ok(());
            }
            let publishing = matches!(self.role, Mode::Publishing { .. });
            // A connection doing nothing yet (no connect) or any more (not playing or publishing) holds a slot
            // for nothing: it gets --connect-timeout from the handshake, then --conn-idle-timeout of silence.
            // A player is never idle: it only reads.
            let idle_deadline = match (&self.role, self.connected) {
                (Mode::Idle, false) => {
                    Some((handshake_done + ctx.config.connect_timeout, "no connect within --connect-timeout"))
                }
                (Mode::Idle, true) => Some((
                    last_input + ctx.config.conn_idle_timeout,
                    "neither playing nor publishing, silent for --conn-idle-timeout",
                )),
                _ => None,
            };
            let buf = session.decoder_buffer();
            // Players only send acks and commands: a small read buffer keeps per-player memory low.
            buf.reserve(if publishing { 16 * 1024 } else { 1024 });
            tokio::select! {
                r = self.sock.read_buf(buf) => {
                    let n = r?;
                    if n == 0 {
                        return Ok(());
                    }
                    last_input = Instant::now();
                    ctx.metrics.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    session.process(n, &mut out, &mut events)?;
                }
                _ = wait_play(&mut self.role), if matches!(self.role, Mode::Playing { .. }) => {
                    if !self.play().await? {
                        return Ok(());
                    }
                }
                _ = tokio::time::sleep_until(last_input + ctx.config.source_timeout), if publishing => {
                    return Err(ConnError::Timeout("publisher sent nothing within --source-timeout"));
                }
                _ = tokio::time::sleep_until(idle_deadline.map_or_else(Instant::now, |d| d.0)), if idle_deadline.is_some() => {
                    let why = idle_deadline.map_or("", |d| d.1);
                    Metrics::inc(&ctx.metrics.connections_timed_out);
                    info!(peer = %self.peer, reason = why, "closing idle connection");
                    return Err(ConnError::Timeout(why));
                }
                _ = stop.wait() => return Ok(()),
            }
        }
    }

    async fn handshake(&mut self) -> Result<Vec<u8>, ConnError> {
        let mut hs = HandshakeState::server();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = self.sock.read(&mut buf).await?;
            if n == 0 {
                return Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            match hs.feed(&buf[..n])? {
                HandshakeStep::Continue { reply } => self.sock.write_all(&reply).await?,
                HandshakeStep::Done { reply, rest } => {
                    self.sock.write_all(&reply).await?;
                    return Ok(rest);
                }
            }
        }
    }

    async fn handle_events(
        &mut self,
        session: &mut ServerSession,
        events: &mut Vec<ServerEvent>,
        out: &mut BytesMut,
    ) -> Result<(), ConnError> {
        for ev in events.drain(..) {
            match ev {
                ServerEvent::Connected { app, tc_url } => {
                    self.connected = true;
                    self.app = split_query(&app, "token").0.to_string();
                    self.tc_url = tc_url;
                    debug!(peer = %self.peer, app = %self.app, "connect");
                }
                ServerEvent::ConnectRefused { reason } => {
                    Metrics::inc(&self.ctx.metrics.protocol_errors);
                    warn!(peer = %self.peer, %reason, "connect refused, closing this connection");
                    self.close = true;
                }
                ServerEvent::Publish { stream_id, name } => {
                    if self.over_stream_limit(stream_id, "NetStream.Publish.Denied", out)? {
                        continue;
                    }
                    self.publish(session, stream_id, &name, out).await?
                }
                ServerEvent::Play { stream_id, name } => {
                    if self.over_stream_limit(stream_id, "NetStream.Play.Failed", out)? {
                        continue;
                    }
                    let start = self.start_play(stream_id, &name, out).await?;
                    if !out.is_empty() || !start.is_empty() {
                        let mut q = VecDeque::with_capacity(start.len() + 1);
                        q.push_back(out.split().freeze());
                        q.extend(start);
                        self.write_all(q).await?;
                    }
                }
                ServerEvent::Media(m) => {
                    if let Mode::Publishing { stream, source, .. } = &self.role {
                        stream.push(*source, m);
                    }
                }
                ServerEvent::StreamClosed => self.cleanup(),
            }
        }
        Ok(())
    }

    /// Counts a play/publish request; past --max-streams-per-connection it is refused and the connection closed.
    fn over_stream_limit(&mut self, stream_id: u32, code: &str, out: &mut BytesMut) -> Result<bool, ConnError> {
        self.streams_used += 1;
        if self.streams_used <= self.ctx.config.max_streams_per_connection {
            return Ok(false);
        }
        Metrics::inc(&self.ctx.metrics.streams_refused);
        warn!(peer = %self.peer, limit = self.ctx.config.max_streams_per_connection, "too many streams on one connection (--max-streams-per-connection), closing");
        crate::wire::proto::on_status(out, stream_id, "error", code, "too many streams on this connection")?;
        self.close = true;
        Ok(true)
    }

    /// Asks the on_publish callback (if configured) whether this publish may go on.
    async fn ask_publish(&self, name: &str, raw_name: &str) -> Result<(), crate::callback::Denied> {
        let event = self.event("on_publish", name, query_of(raw_name, self.tc_url.as_deref()));
        ask(&self.ctx, self.ctx.config.callbacks.on_publish.as_ref(), &event).await
    }

    fn event<'a>(&'a self, action: &'static str, name: &'a str, query: &'a str) -> crate::callback::Event<'a> {
        crate::callback::Event {
            action,
            app: &self.app,
            stream: name,
            client_addr: self.peer.to_string(),
            protocol: self.protocol.as_str(),
            query,
            tc_url: self.tc_url.as_deref(),
        }
    }

    async fn publish(
        &mut self,
        session: &mut ServerSession,
        stream_id: u32,
        raw_name: &str,
        out: &mut BytesMut,
    ) -> Result<(), ConnError> {
        let (name, token) = split_query(raw_name, "token");
        let refuse = |this: &mut Self, out: &mut BytesMut, code: &str, why: &str| -> Result<(), ConnError> {
            Metrics::inc(&this.ctx.metrics.publishes_refused);
            warn!(peer = %this.peer, app = %this.app, key = %crate::shown(name), reason = why, "publish refused");
            crate::wire::proto::on_status(out, stream_id, "error", code, why)?;
            // Close once the refusal is flushed: ffmpeg exits on it, and a refused client has nothing left to do.
            this.close = true;
            Ok(())
        };
        let expected = match &self.ctx.config.role {
            Role::Edge { .. } => {
                return refuse(self, out, "NetStream.Publish.Denied", "this relay is an edge; publish to the origin")
            }
            Role::Origin { publish_token } => publish_token.clone(),
        };
        if let Some(expected) = expected {
            let tc_token = self.tc_url.as_deref().and_then(|u| split_query(u, "token").1);
            if token.or(tc_token) != Some(expected.as_str()) {
                return refuse(self, out, "NetStream.Publish.Unauthorized", "missing or wrong ?token=");
            }
        }
        if !matches!(self.role, Mode::Idle) || !crate::valid_name(name) || !crate::valid_name(&self.app) {
            return refuse(
                self,
                out,
                "NetStream.Publish.BadName",
                "bad stream name or already busy on this connection",
            );
        }
        if let Err(e) = self.ask_publish(name, raw_name).await {
            warn!(peer = %self.peer, app = %self.app, key = %crate::shown(name), error = %e, "on_publish refused the publish");
            return refuse(self, out, "NetStream.Publish.Unauthorized", "refused by the on_publish callback");
        }
        let (stream, _) = self.ctx.hub.get_or_create(&self.app, name);
        match stream.attach_source(SourceInfo { kind: "publisher", peer: self.peer.to_string() }) {
            Ok(source) => {
                info!(peer = %self.peer, app = %self.app, key = name, "publish started");
                let query = query_of(raw_name, self.tc_url.as_deref()).to_string();
                self.role = Mode::Publishing { stream, source, name: name.to_string(), query };
                session.accept_publish(stream_id, name, out)?;
                Ok(())
            }
            Err(busy) => {
                // The holder's address is for the operator only: a client learns that the key is busy, no more.
                warn!(peer = %self.peer, app = %self.app, key = name, holder = %busy.0, "key already published");
                refuse(self, out, "NetStream.Publish.BadName", "stream key is busy: another publisher has it")
            }
        }
    }

    /// Subscribes to the stream (starting a pull on an edge) and returns the cached start frames.
    async fn start_play(
        &mut self,
        stream_id: u32,
        raw_name: &str,
        out: &mut BytesMut,
    ) -> Result<Vec<Bytes>, ConnError> {
        let name = split_query(raw_name, "token").0;
        if !matches!(self.role, Mode::Idle) {
            crate::wire::proto::on_status(out, stream_id, "error", "NetStream.Play.Failed", "busy connection")?;
            return Ok(Vec::new());
        }
        let query = query_of(raw_name, self.tc_url.as_deref());
        let event = self.event("on_play", name, query);
        let stream = match open_play(&self.ctx, event).await {
            Ok(s) => s,
            Err(r) => {
                warn!(peer = %self.peer, app = %self.app, key = %crate::shown(name), reason = %r.log, "play refused");
                crate::wire::proto::on_status(out, stream_id, "error", r.code, r.description)?;
                self.close = true;
                return Ok(Vec::new());
            }
        };
        ServerSession::accept_play(stream_id, name, out)?;
        let sub = stream.subscribe(self.protocol);
        Metrics::inc(&self.ctx.metrics.players_total);
        info!(peer = %self.peer, app = %self.app, key = name, cached = sub.start.len(), "play started");
        let mut start = VecDeque::new();
        for f in &sub.start {
            f.wire_for(stream_id, &mut start);
        }
        let start: Vec<Bytes> = start.into();
        let (name, query) = (name.to_string(), query.to_string());
        self.role = Mode::Playing { stream, stream_id, rx: sub.rx, skipping: false, name, query };
        Ok(start)
    }

    /// Writes what the ring has for this player (after a wake-up); false when the player is done.
    async fn play(&mut self) -> Result<bool, ConnError> {
        let Mode::Playing { stream, stream_id, rx, skipping, .. } = &mut self.role else {
            return Ok(true);
        };
        let stream_id = *stream_id;
        let mut batch = VecDeque::new();
        let ended =
            next_batch(&self.ctx, self.peer, stream, rx, skipping, &mut batch, |f, out| f.wire_for(stream_id, out));
        if ended {
            let mut out = BytesMut::new();
            if stream.had_media() {
                ServerSession::end_play(stream_id, &mut out)?;
                info!(peer = %self.peer, "stream ended, closing player");
            } else {
                // Nothing ever came for this key within the grace period: it does not exist (as far as we know).
                crate::wire::proto::on_status(&mut out, stream_id, "error", NOT_FOUND, NOT_FOUND_TEXT)?;
                info!(peer = %self.peer, "stream not found, closing player");
            }
            batch.push_back(out.freeze());
        }
        if !batch.is_empty() {
            self.write_all(batch).await?;
        }
        Ok(!ended)
    }

    /// Writes everything or fails; a peer that accepts nothing for --player-timeout is disconnected.
    async fn write_all(&mut self, bufs: VecDeque<Bytes>) -> Result<(), ConnError> {
        let stream = match &self.role {
            Mode::Playing { stream, .. } => Some(stream.clone()),
            _ => None,
        };
        write_bufs(&self.ctx, &mut self.sock, self.peer, stream.as_deref(), bufs).await.map_err(|e| match e {
            WriteError::Io(e) => ConnError::Io(e),
            WriteError::Stalled => ConnError::Timeout("peer stopped reading"),
        })
    }

    /// Leaves whatever the connection was doing (stream closed or connection gone).
    fn cleanup(&mut self) {
        let cb = &self.ctx.config.callbacks;
        match std::mem::replace(&mut self.role, Mode::Idle) {
            Mode::Publishing { stream, source, name, query } => {
                info!(peer = %self.peer, app = %self.app, key = %name, "publish stopped");
                stream.detach_source(source);
                self.notify(cb.on_unpublish.clone(), "on_unpublish", name, query);
            }
            Mode::Playing { stream, name, query, .. } => {
                stream.unsubscribe(self.protocol);
                self.notify(cb.on_stop.clone(), "on_stop", name, query);
            }
            Mode::Idle => {}
        }
    }

    /// Tells a callback that something ended, in the background: its answer changes nothing.
    fn notify(&self, url: Option<crate::callback::CallbackUrl>, action: &'static str, name: String, query: String) {
        let ended = Ended { action, app: self.app.clone(), stream: name, query, tc_url: self.tc_url.clone() };
        notify_end(&self.ctx, url, ended, self.peer, self.protocol);
    }
}

/// A publish or play that ended, for on_unpublish / on_stop.
pub(crate) struct Ended {
    pub action: &'static str,
    pub app: String,
    pub stream: String,
    pub query: String,
    pub tc_url: Option<String>,
}

/// Posts `ended` to `url` (if configured) in the background: the answer changes nothing; a failure is logged.
pub(crate) fn notify_end(
    ctx: &Arc<Ctx>,
    url: Option<crate::callback::CallbackUrl>,
    ended: Ended,
    peer: SocketAddr,
    protocol: Protocol,
) {
    let Some(url) = url else {
        return;
    };
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let event = crate::callback::Event {
            action: ended.action,
            app: &ended.app,
            stream: &ended.stream,
            client_addr: peer.to_string(),
            protocol: protocol.as_str(),
            query: &ended.query,
            tc_url: ended.tc_url.as_deref(),
        };
        if let Err(e) = crate::callback::call(&url, &event, ctx.config.callbacks.timeout).await {
            warn!(action = ended.action, error = %e, "callback failed");
        }
    });
}

/// Why a write to a player failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer stopped reading (--player-timeout)")]
    Stalled,
}

/// Writes every buffer with vectored writes, or fails; a peer that accepts nothing for --player-timeout is
/// disconnected (counted as a stalled player when `stream` is the one it plays). Counts the bytes.
pub(crate) async fn write_bufs<W: AsyncWrite + Unpin>(
    ctx: &Ctx,
    sock: &mut W,
    peer: SocketAddr,
    stream: Option<&Stream>,
    mut bufs: VecDeque<Bytes>,
) -> Result<(), WriteError> {
    let limit = ctx.config.player_timeout;
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    // The timer is only registered if the write has to wait: `timeout` polls the write first.
    let res = timeout(limit, async {
        while !bufs.is_empty() {
            let slices: Vec<IoSlice<'_>> = bufs.iter().take(MAX_IOV).map(|b| IoSlice::new(b)).collect();
            let n = sock.write_vectored(&slices).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero));
            }
            advance(&mut bufs, n);
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    match res {
        Ok(r) => r?,
        Err(_) => {
            if stream.is_some() {
                Metrics::inc(&ctx.metrics.players_stalled);
            }
            warn!(%peer, secs = limit.as_secs_f32(), "peer stopped reading (--player-timeout), disconnecting");
            return Err(WriteError::Stalled);
        }
    }
    ctx.metrics.bytes_out.fetch_add(total as u64, Ordering::Relaxed);
    if let Some(stream) = stream {
        stream.stats.bytes_out.fetch_add(total as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// Drops the first `n` written bytes from `bufs`.
fn advance(bufs: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let front = bufs.front_mut().expect("wrote more than queued");
        if n >= front.len() {
            n -= front.len();
            bufs.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
}

/// Takes what the ring has for a player into `batch` (through `wire`, the player's framing), applying the
/// backlog bounds: a player past the ring's end, more than --player-queue messages or --player-buffer-bytes
/// behind drops frames until the next keyframe (headers and metadata still go out), so it catches up with the
/// live edge. True when the stream ended.
pub(crate) fn next_batch(
    ctx: &Ctx,
    peer: SocketAddr,
    stream: &Stream,
    rx: &mut Reader,
    skipping: &mut bool,
    batch: &mut VecDeque<Bytes>,
    mut wire: impl FnMut(&crate::hub::Frame, &mut VecDeque<Bytes>),
) -> bool {
    let mut items = Vec::with_capacity(MAX_BATCH);
    let info = stream.read(rx, MAX_BATCH, &mut items);
    if info.lagged > 0 {
        ctx.metrics.frames_skipped.fetch_add(info.lagged, Ordering::Relaxed);
        *skipping = true;
    }
    if info.behind_frames > ctx.config.player_queue || info.behind_bytes > ctx.config.player_buffer_bytes as u64 {
        debug!(%peer, frames = info.behind_frames, bytes = info.behind_bytes, "player behind, skipping to next keyframe");
        *skipping = true;
    }
    let mut ended = false;
    for item in items {
        match item {
            Item::Frame(f) => {
                let m = &f.media;
                let header = m.is_metadata() || m.is_video_header() || m.is_audio_header();
                if *skipping && !header {
                    if m.is_keyframe() || !stream.has_video() {
                        *skipping = false;
                    } else {
                        Metrics::inc(&ctx.metrics.frames_skipped);
                    }
                }
                if !*skipping || header {
                    wire(&f, batch);
                }
            }
            Item::End => ended = true,
        }
    }
    ended
}

/// Why a play was refused: the onStatus code (RTMP) or HTTP status (HTTP-FLV) and description for the player,
/// and the reason for the log.
pub(crate) struct PlayRefused {
    pub code: &'static str,
    pub http_status: u16,
    pub description: &'static str,
    pub log: String,
}

/// Everything a play needs before it may subscribe, for every protocol: the name checks (before anything is
/// allocated), the edge's app check, the on_play callback, then the stream (starting the edge's pull).
pub(crate) async fn open_play(ctx: &Arc<Ctx>, event: crate::callback::Event<'_>) -> Result<Arc<Stream>, PlayRefused> {
    let refused = |code, http_status, description, log: String| PlayRefused { code, http_status, description, log };
    let failed = "NetStream.Play.Failed";
    if !crate::valid_name(event.stream) || !crate::valid_name(event.app) {
        return Err(refused(failed, 400, "bad app or stream name", "bad app or stream name".into()));
    }
    if ctx.maintenance.load(std::sync::atomic::Ordering::Relaxed) {
        let log = "node in maintenance: no new players".to_string();
        return Err(refused(failed, 503, "node in maintenance, try another", log));
    }
    if let Role::Edge { .. } = &ctx.config.role {
        if ctx.origins_for(event.app).is_empty() {
            let log = "no origin serves this app".to_string();
            return Err(refused("NetStream.Play.StreamNotFound", 404, "no origin for this app", log));
        }
    }
    if let Err(e) = ask(ctx, ctx.config.callbacks.on_play.as_ref(), &event).await {
        let log = format!("on_play refused the play: {e}");
        return Err(refused(failed, 403, "refused by the on_play callback", log));
    }
    match &ctx.config.role {
        Role::Origin { .. } => Ok(ctx.hub.get_or_create(event.app, event.stream).0),
        Role::Edge { .. } => {
            let client = event.client_addr.parse::<SocketAddr>().ok().map(|a| a.ip());
            crate::ingest::edge::ensure_pull(ctx, event.app, event.stream, client).map_err(|e| match e {
                crate::ingest::edge::PullRefused::BadName => refused(failed, 400, "bad app or stream name", e.to_string()),
                crate::ingest::edge::PullRefused::Limit(_) => {
                    refused(failed, 503, "pull limit reached (--max-pulls)", e.to_string())
                }
                crate::ingest::edge::PullRefused::PerIp(_) => {
                    refused(failed, 503, "too many new streams from your address, retry later", e.to_string())
                }
                crate::ingest::edge::PullRefused::NotFound => refused(NOT_FOUND, 404, NOT_FOUND_TEXT, e.to_string()),
            })
        }
    }
}

/// Posts `event` to `url` if one is configured; a refusal is counted.
async fn ask(
    ctx: &Ctx,
    url: Option<&crate::callback::CallbackUrl>,
    event: &crate::callback::Event<'_>,
) -> Result<(), crate::callback::Denied> {
    let Some(url) = url else {
        return Ok(());
    };
    let r = crate::callback::call(url, event, ctx.config.callbacks.timeout).await;
    if r.is_err() {
        Metrics::inc(&ctx.metrics.callbacks_refused);
    }
    r
}

/// Completes when the ring may have something for this player: at once if it is behind, else at the next push.
async fn wait_play(role: &mut Mode) {
    match role {
        Mode::Playing { stream, rx, .. } => wait_ring(stream, rx).await,
        _ => std::future::pending().await,
    }
}

/// Completes when the ring may have something for `rx`.
pub(crate) async fn wait_ring(stream: &Stream, rx: &mut Reader) {
    if stream.has_unread(rx) {
        return;
    }
    stream.wait(rx).await
}

#[cfg(test)]
mod tests {
    use super::split_query;

    #[test]
    fn query_token() {
        assert_eq!(split_query("test?token=abc", "token"), ("test", Some("abc")));
        assert_eq!(split_query("test?x=1&token=abc", "token"), ("test", Some("abc")));
        assert_eq!(split_query("test", "token"), ("test", None));
        assert_eq!(split_query("test?tokenx=1", "token"), ("test", None));
    }
}
