//! RTMP connections (and RTMPT sessions): accept through the gate, handshake, then play through the RTMP sink
//! or hand a publish to the publish door (ingest) and push its media into the hub.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn};

use super::gate::open_play;
use super::player::{write_bufs, Player, Sink, WriteError};
use super::Egress;
use crate::hub::{Ended, Event, Protocol, PublishRequest, Publisher};
use crate::metrics::Metrics;
use crate::wire::proto::{HandshakeState, HandshakeStep, ProtoError, ServerEvent, ServerSession};

pub(crate) async fn accept_loop(ctx: Arc<Egress>, listener: TcpListener, accepting: svc::Stopping) {
    super::gate::accept_loop(ctx, listener, accepting, "RTMP", |ctx, sock, peer| {
        serve_rtmp(ctx, sock, peer, Protocol::Rtmp)
    })
    .await
}

/// A byte stream an RTMP session runs on: a TCP connection, or the in-memory end of an RTMPT session.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Runs one RTMP session (handshake, commands, publish or play) on `sock` until it ends.
pub(crate) async fn serve_rtmp<S: Io>(ctx: Arc<Egress>, sock: S, peer: SocketAddr, protocol: Protocol) {
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
    Publishing { publisher: Publisher, name: String, query: String },
    Playing { player: Player, name: String, query: String },
}

struct Conn<S> {
    ctx: Arc<Egress>,
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
                    if let Mode::Publishing { publisher, .. } = &self.role {
                        publisher.push(m);
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
        let limit = self.ctx.config.live().max_streams_per_connection;
        if self.streams_used <= limit {
            return Ok(false);
        }
        Metrics::inc(&self.ctx.metrics.streams_refused);
        warn!(peer = %self.peer, limit, "too many streams on one connection (--max-streams-per-connection), closing");
        crate::wire::proto::on_status(out, stream_id, "error", code, "too many streams on this connection")?;
        self.close = true;
        Ok(true)
    }

    fn event<'a>(&'a self, action: &'static str, name: &'a str, query: &'a str) -> Event<'a> {
        Event {
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
        let tc_token = self.tc_url.as_deref().and_then(|u| split_query(u, "token").1);
        let names_ok = matches!(self.role, Mode::Idle) && crate::valid_name(name) && crate::valid_name(&self.app);
        let query = query_of(raw_name, self.tc_url.as_deref());
        let req = PublishRequest {
            app: &self.app,
            name,
            token: token.or(tc_token),
            role: split_query(raw_name, "role").1,
            names_ok,
            event: self.event("on_publish", name, query),
            peer: self.peer.to_string(),
        };
        match self.ctx.publish.publish(req).await {
            Ok(publisher) => {
                let query = query.to_string();
                self.role = Mode::Publishing { publisher, name: name.to_string(), query };
                session.accept_publish(stream_id, name, out)?;
                Ok(())
            }
            Err(r) => refuse(self, out, r.code, r.why),
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
        let player = Player::new(stream, sub.rx, Sink::Rtmp { stream_id });
        player.start(&sub.start, &mut start);
        let start: Vec<Bytes> = start.into();
        let (name, query) = (name.to_string(), query.to_string());
        self.role = Mode::Playing { player, name, query };
        Ok(start)
    }

    /// Writes what the ring has for this player (after a wake-up); false when the player is done.
    async fn play(&mut self) -> Result<bool, ConnError> {
        let Mode::Playing { player, .. } = &mut self.role else {
            return Ok(true);
        };
        player.pump(&self.ctx, &mut self.sock, self.peer).await.map_err(conn_error)
    }

    /// Writes everything or fails; a peer that accepts nothing for --player-timeout is disconnected.
    async fn write_all(&mut self, bufs: VecDeque<Bytes>) -> Result<(), ConnError> {
        let stream = match &self.role {
            Mode::Playing { player, .. } => Some(player.stream.clone()),
            _ => None,
        };
        write_bufs(&self.ctx, &mut self.sock, self.peer, stream.as_deref(), bufs).await.map_err(conn_error)
    }

    /// Leaves whatever the connection was doing (stream closed or connection gone).
    fn cleanup(&mut self) {
        match std::mem::replace(&mut self.role, Mode::Idle) {
            Mode::Publishing { publisher, name, query } => {
                info!(peer = %self.peer, app = %self.app, key = %name, "publish stopped");
                drop(publisher);
                self.notify("on_unpublish", name, query);
            }
            Mode::Playing { player, name, query } => {
                player.stream.unsubscribe(self.protocol);
                self.notify("on_stop", name, query);
            }
            Mode::Idle => {}
        }
    }

    /// Tells a callback that something ended, in the background: its answer changes nothing.
    fn notify(&self, action: &'static str, name: String, query: String) {
        self.ctx.hooks.tell(Ended {
            action,
            app: self.app.clone(),
            stream: name,
            query,
            tc_url: self.tc_url.clone(),
            client_addr: self.peer.to_string(),
            protocol: self.protocol.as_str(),
        });
    }
}

fn conn_error(e: WriteError) -> ConnError {
    match e {
        WriteError::Io(e) => ConnError::Io(e),
        WriteError::Stalled => ConnError::Timeout("peer stopped reading"),
    }
}

/// Completes when the ring may have something for this player: at once if it is behind, else at the next push.
async fn wait_play(role: &mut Mode) {
    match role {
        Mode::Playing { player, .. } => player.ready().await,
        _ => std::future::pending().await,
    }
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
