//! RTMPT, RTMP tunnelled over HTTP the Red5/FMS way, on the media HTTP listener: `POST /open/1` creates a
//! session and answers its id; `/send/ID/SEQ` carries client bytes in and `/idle/ID/SEQ` polls; every answer is
//! one polling-interval byte and then whatever the server has for the client; `/close/ID/SEQ` ends it. Content
//! type `application/x-fcs` both ways.
//!
//! A session is an ordinary RTMP session (`rtmp::serve_rtmp`) on an in-memory duplex stream: the HTTP side
//! writes request bodies into it and answers with what it read out, so RTMPT players and publishers get
//! exactly what RTMP ones get (limits, timeouts, callbacks, ring, merging, metrics).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::{debug, info};

use super::Egress;
use crate::hub::Protocol;
use crate::wire::http::Request;

/// In-memory buffer between the HTTP side and the RTMP session, each way: a client that stops polling makes
/// the session's writes wait, and --player-timeout ends it, as for a TCP player.
const PIPE: usize = 1 << 20;
/// Most bytes answered to one request.
const MAX_ANSWER: usize = 1 << 20;
/// How long an idle or send request waits for the session to have something before answering empty.
const POLL_WAIT: Duration = Duration::from_millis(50);
/// The polling interval byte of every answer (Red5 starts at 1 and grows it up to 0x21 while idle).
const INTERVAL: u8 = 1;

/// An RTMPT request.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Open,
    Send(String),
    Idle(String),
    Close(String),
    /// `/fcs/ident2`, which Flash probes first: answered 404 as Red5 does.
    Ident,
}

/// The RTMPT command of a request, if it is one (`/open/1`, `/send/ID/SEQ`, `/idle/ID/SEQ`, `/close/ID/SEQ`).
pub fn route(req: &Request) -> Option<Route> {
    let path = req.target.split('?').next().unwrap_or("");
    let mut parts = path.strip_prefix('/')?.split('/');
    let cmd = parts.next()?;
    let id = parts.next();
    let seq_ok =
        |s: Option<&str>| s.is_some_and(|s| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()));
    let id_ok = |s: &str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric());
    match cmd {
        "open" if id == Some("1") && parts.next().is_none() => Some(Route::Open),
        "fcs" if id == Some("ident2") => Some(Route::Ident),
        "send" | "idle" | "close" => {
            let id = id.filter(|i| id_ok(i))?;
            if !seq_ok(parts.next()) || parts.next().is_some() {
                return None;
            }
            let id = id.to_string();
            Some(match cmd {
                "send" => Route::Send(id),
                "idle" => Route::Idle(id),
                _ => Route::Close(id),
            })
        }
        _ => None,
    }
}

/// The HTTP side of a live session.
struct Session {
    pipe: tokio::sync::Mutex<DuplexStream>,
}

/// Live RTMPT sessions by id.
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    counter: AtomicU64,
    keys: std::collections::hash_map::RandomState,
    /// Sessions open per client IP (--max-rtmpt-sessions-per-ip) and in all (RTMPT's share of the budget).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
}

/// One open session's place in the counts; released when the session ends.
struct Slot {
    ctx: Arc<Egress>,
    ip: IpAddr,
}

impl Slot {
    /// Takes a place for a session of `ip`, or says which limit is full.
    fn take(ctx: &Arc<Egress>, ip: IpAddr) -> Result<Self, &'static str> {
        let s = &ctx.rtmpt;
        let mut m = s.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let limit = ctx.config.live().max_rtmpt_sessions_per_ip;
        let n = m.get(&ip).copied().unwrap_or(0);
        if limit != 0 && n >= limit {
            return Err("too many RTMPT sessions from this address (--max-rtmpt-sessions-per-ip)");
        }
        // Half of --max-connections stays for RTMP and HTTP-FLV players whatever RTMPT opens: sessions cost
        // one request each, a TCP player a connection and a handshake.
        if s.total.load(Ordering::Relaxed) >= (ctx.config.live().max_connections / 2).max(1) {
            return Err("RTMPT sessions hold their share (half) of --max-connections");
        }
        m.insert(ip, n + 1);
        s.total.fetch_add(1, Ordering::Relaxed);
        Ok(Self { ctx: ctx.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let s = &self.ctx.rtmpt;
        s.total.fetch_sub(1, Ordering::Relaxed);
        let mut m = s.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl Sessions {
    fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    fn remove(&self, id: &str) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// A fresh id nobody can guess from earlier ones: a per-process random SipHash key over a counter.
    fn new_id(&self) -> String {
        let mut h = self.keys.build_hasher();
        h.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
        let a = h.finish();
        h.write_u64(a);
        format!("{:016x}{:016x}", a, h.finish())
    }
}

/// Serves RTMPT requests on one keep-alive HTTP connection, starting with `req` (its head already consumed from
/// `buf`), until the client closes it or sends something else.
pub(crate) async fn serve(
    ctx: &Arc<Egress>,
    mut sock: TcpStream,
    peer: SocketAddr,
    mut req: Request,
    mut route: Route,
    mut buf: BytesMut,
) -> std::io::Result<()> {
    loop {
        // The body: bounded like an RTMP message.
        let limit = 2 * ctx.config.limits.max_message_size as usize;
        if req.content_length > limit {
            return super::http::respond(&mut sock, 413, "body too large").await;
        }
        while buf.len() < req.content_length {
            let r = timeout(ctx.config.player_timeout, sock.read_buf(&mut buf)).await;
            match r {
                Ok(Ok(0)) | Err(_) => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
            }
        }
        let body = buf.split_to(req.content_length);
        let answer = match route {
            Route::Ident => return super::http::respond(&mut sock, 404, "not found").await,
            Route::Open => match open(ctx, peer) {
                Ok(id) => {
                    let mut a = id.into_bytes();
                    a.push(b'\n');
                    Some(a)
                }
                Err(why) => {
                    // A flood is thousands of these: counted, logged at debug only.
                    crate::metrics::Metrics::inc(&ctx.metrics.rtmpt_sessions_refused);
                    debug!(%peer, reason = why, "RTMPT open refused");
                    return super::http::respond(&mut sock, 503, why).await;
                }
            },
            Route::Send(id) | Route::Idle(id) => exchange(ctx, &id, &body).await,
            Route::Close(id) => {
                if let Some(s) = ctx.rtmpt.get(&id) {
                    // Closing the pipe ends the RTMP session (EOF), which cleans up as a TCP close would.
                    let _ = s.pipe.lock().await.shutdown().await;
                    ctx.rtmpt.remove(&id);
                    debug!(%peer, id, "RTMPT session closed by the client");
                }
                Some(vec![INTERVAL])
            }
        };
        let Some(answer) = answer else {
            return super::http::respond(&mut sock, 404, "no such RTMPT session").await;
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-fcs\r\nContent-Length: {}\r\nCache-Control: no-cache\r\n\
             Connection: keep-alive\r\nServer: relay\r\n\r\n",
            answer.len()
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(&answer);
        match timeout(ctx.config.player_timeout, sock.write_all(&out)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        }
        ctx.metrics.bytes_out.fetch_add(out.len() as u64, Ordering::Relaxed);
        // The next request on this connection, within the head timeout.
        let next = timeout(ctx.config.conn_idle_timeout, async {
            loop {
                if let Some(r) = crate::wire::http::parse_request(&buf).transpose() {
                    return Some(r);
                }
                if sock.read_buf(&mut buf).await.ok()? == 0 {
                    return None;
                }
            }
        })
        .await;
        req = match next {
            Ok(Some(Ok(r))) => r,
            Ok(Some(Err(e))) => return super::http::respond(&mut sock, e.status(), &e.to_string()).await,
            _ => return Ok(()),
        };
        let _ = buf.split_to(req.head_len);
        route = match self::route(&req) {
            Some(r) => r,
            None => return super::http::respond(&mut sock, 404, "not an RTMPT request").await,
        };
    }
}

/// Starts a session: an RTMP session on one end of a pipe, the other end kept for the HTTP side. Refused (503)
/// past the client's session cap, RTMPT's share of the budget, or the connection gate, before anything is held.
fn open(ctx: &Arc<Egress>, peer: SocketAddr) -> Result<String, &'static str> {
    let slot = Slot::take(ctx, peer.ip())?;
    // The session counts as a connection of its client for the limits, like a TCP one.
    let admitted = super::gate::admit(ctx, peer).ok_or("connection limit reached (--max-connections)")?;
    let id = ctx.rtmpt.new_id();
    let (http_end, rtmp_end) = tokio::io::duplex(PIPE);
    ctx.rtmpt
        .map
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), Arc::new(Session { pipe: tokio::sync::Mutex::new(http_end) }));
    info!(%peer, id, "RTMPT session opened");
    let (ctx, id2) = (ctx.clone(), id.clone());
    tokio::spawn(async move {
        let _held = (slot, admitted);
        super::rtmp::serve_rtmp(ctx.clone(), rtmp_end, peer, Protocol::Rtmpt).await;
        ctx.rtmpt.remove(&id2);
        debug!(%peer, id = id2, "RTMPT session ended");
    });
    Ok(id)
}

/// Writes the client's bytes into the session and answers with what the session has for the client.
async fn exchange(ctx: &Egress, id: &str, body: &[u8]) -> Option<Vec<u8>> {
    let session = ctx.rtmpt.get(id)?;
    let mut pipe = session.pipe.lock().await;
    if !body.is_empty() {
        ctx.metrics.bytes_in.fetch_add(body.len() as u64, Ordering::Relaxed);
        // ffmpeg's idle requests carry one byte of padding, not RTMP data.
        let data = if body == [0] { &[][..] } else { body };
        if !data.is_empty() && timeout(ctx.config.player_timeout, pipe.write_all(data)).await.ok()?.is_err() {
            return None;
        }
    }
    let mut answer = Vec::with_capacity(4096);
    answer.push(INTERVAL);
    let mut chunk = vec![0u8; 64 * 1024];
    // Wait a little for the first bytes (fewer empty round trips), then take what is ready without waiting.
    let mut wait = POLL_WAIT;
    while answer.len() < MAX_ANSWER {
        match timeout(wait, pipe.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                // The session ended: answer what we have; the next request finds no session.
                ctx.rtmpt.remove(id);
                break;
            }
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
        wait = Duration::ZERO;
    }
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str) -> Request {
        Request {
            method: "POST".into(),
            target: target.into(),
            content_length: 0,
            head_len: 0,
            keep_alive: true,
            range: None,
            if_none_match: None,
        }
    }

    #[test]
    fn routes() {
        assert_eq!(route(&req("/open/1")), Some(Route::Open));
        assert_eq!(route(&req("/send/abc123/7")), Some(Route::Send("abc123".into())));
        assert_eq!(route(&req("/idle/abc123/0")), Some(Route::Idle("abc123".into())));
        assert_eq!(route(&req("/close/abc123/9")), Some(Route::Close("abc123".into())));
        assert_eq!(route(&req("/fcs/ident2")), Some(Route::Ident));
        for bad in ["/open/2", "/send/abc", "/send/a-b/1", "/idle/abc/x", "/send/abc/1/2", "/live/x.flv", "/"] {
            assert_eq!(route(&req(bad)), None, "{bad}");
        }
    }

    #[test]
    fn ids_are_distinct_and_routable() {
        let s = Sessions::default();
        let (a, b) = (s.new_id(), s.new_id());
        assert_ne!(a, b);
        assert_eq!(route(&req(&format!("/idle/{a}/1"))), Some(Route::Idle(a)));
    }
}
