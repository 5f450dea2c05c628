//! The media HTTP listener (`--http-listen`): HTTP-FLV playback, `GET /APP/KEY.flv` (the SRS/flv.js
//! convention), on the same pull, GOP cache, ring, limits and callbacks as RTMP players; RTMPT requests go to
//! `rtmpt`.
//!
//! Our own small HTTP/1.1 server on tokio (request heads parsed with httparse, bounded) instead of axum, because
//! a player is a long-lived write loop that needs what the RTMP players have: the connection gate at accept,
//! vectored writes of shared buffers with the --player-timeout stall check, and the ring's backlog bounds.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::hub::Protocol;
use crate::metrics::Metrics;
use crate::proto::{Media, MediaKind};
use crate::server::{admit, next_batch, open_play, wait_ring, write_bufs};
use crate::Ctx;

/// Longest request head we read; anything longer is refused (431).
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header lines in a request head.
const MAX_HEADERS: usize = 32;

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    pub content_length: usize,
    /// Bytes of the head, including the blank line.
    pub head_len: usize,
}

/// Why a request head was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    #[error("request head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
}

impl HttpError {
    /// The status a client gets for it.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_) => 400,
            HttpError::TooLarge | HttpError::TooManyHeaders => 431,
        }
    }
}

/// The origin-form path of a request target: an absolute-form target (`http://HOST/live/x.flv`, which HTTP/1.1
/// servers must accept, RFC 9112 3.2.2) loses its scheme and authority. `None` for a target that is neither.
fn origin_form(target: &str) -> Option<String> {
    if target.starts_with('/') || target == "*" {
        return Some(target.to_string());
    }
    let (scheme, rest) = target.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => Some(rest[i..].to_string()),
        Some(i) => Some(format!("/{}", &rest[i..])),
        None => Some("/".to_string()),
    }
}

/// Parses a request head from the start of `buf`: `Ok(None)` while incomplete.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => Err(HttpError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(head_len)) => {
            if head_len > MAX_HEAD {
                return Err(HttpError::TooLarge);
            }
            let mut content_length = None;
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    let n: usize = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .ok_or_else(|| HttpError::Malformed("bad Content-Length".into()))?;
                    // Two different lengths leave the body's end ambiguous (request smuggling): refused at once,
                    // not waited on (RFC 9112 6.3).
                    if content_length.is_some_and(|c| c != n) {
                        return Err(HttpError::Malformed("conflicting Content-Length headers".into()));
                    }
                    content_length = Some(n);
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(HttpError::Malformed("Transfer-Encoding is not supported".into()));
                }
            }
            let target = origin_form(req.path.unwrap_or_default())
                .ok_or_else(|| HttpError::Malformed("request target is neither /PATH nor http://HOST/PATH".into()))?;
            Ok(Some(Request {
                method: req.method.unwrap_or_default().to_string(),
                target,
                content_length: content_length.unwrap_or(0),
                head_len,
            }))
        }
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders),
        Err(e) => Err(HttpError::Malformed(e.to_string())),
    }
}

/// `/APP/KEY.flv[?QUERY]` to (app, key, query); names are checked later, with every other play.
pub fn flv_target(target: &str) -> Option<(&str, &str, &str)> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let rest = path.strip_prefix('/')?;
    let (app, file) = rest.split_once('/')?;
    let key = file.strip_suffix(".flv")?;
    Some((app, key, query))
}

/// The FLV file header (signature, version, flags, header size) and PreviousTagSize0.
pub fn file_header(audio: bool, video: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(13);
    b.put_slice(b"FLV\x01");
    b.put_u8(if audio { 4 } else { 0 } | if video { 1 } else { 0 });
    b.put_u32(9);
    b.put_u32(0);
    b.freeze()
}

/// The 11-byte FLV tag header and the 4-byte PreviousTagSize that go around `media`'s payload.
pub fn tag_frame(media: &Media, timestamp: u32) -> Bytes {
    let len = media.payload.len() as u32;
    let kind = match media.kind {
        MediaKind::Audio => 8,
        MediaKind::Video => 9,
        MediaKind::Data => 18,
    };
    let mut b = BytesMut::with_capacity(15);
    b.put_u8(kind);
    b.put_slice(&len.to_be_bytes()[1..]);
    // FLV keeps the low 24 bits of the timestamp, then the high 8 bits.
    b.put_slice(&timestamp.to_be_bytes()[1..]);
    b.put_u8((timestamp >> 24) as u8);
    b.put_slice(&[0, 0, 0]);
    b.put_u32(11 + len);
    b.freeze()
}

pub(crate) async fn accept_loop(ctx: Arc<Ctx>, listener: TcpListener) {
    let mut stop = ctx.stopping.clone();
    while let Some((sock, peer)) = svc::accept::next(&listener, &mut stop, "HTTP media").await {
        let Some(slot) = admit(&ctx, peer) else {
            drop(sock);
            continue;
        };
        let _ = sock.set_nodelay(true);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = serve(&ctx, sock, peer).await {
                debug!(%peer, error = %e, "HTTP media connection ended");
            }
        });
    }
}

/// Reads one request head (within --handshake-timeout), then answers it.
async fn serve(ctx: &Arc<Ctx>, mut sock: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(1024);
    let head = timeout(ctx.config.handshake_timeout, async {
        loop {
            if let Some(r) = parse_request(&buf).transpose() {
                return Some(r);
            }
            if sock.read_buf(&mut buf).await.ok()? == 0 {
                return None;
            }
        }
    })
    .await;
    let req = match head {
        Err(_) => {
            Metrics::inc(&ctx.metrics.connections_timed_out);
            info!(%peer, reason = "no request head within --handshake-timeout", "closing idle connection");
            return Ok(());
        }
        Ok(None) => return Ok(()),
        Ok(Some(Err(e))) => {
            Metrics::inc(&ctx.metrics.protocol_errors);
            warn!(%peer, error = %e, "bad input, closing this connection");
            return respond(&mut sock, e.status(), &e.to_string()).await;
        }
        Ok(Some(Ok(r))) => r,
    };
    if let Some(r) = crate::rtmpt::route(&req) {
        let _ = buf.split_to(req.head_len);
        return crate::rtmpt::serve(ctx, sock, peer, req, r, buf).await;
    }
    if req.target == "/healthz" {
        // For load balancers' HTTP checks of this port.
        return respond(&mut sock, 200, "ok").await;
    }
    let Some((app, key, query)) = flv_target(&req.target) else {
        return respond(&mut sock, 404, "not found").await;
    };
    if req.method != "GET" {
        return respond(&mut sock, 405, "method not allowed").await;
    }
    let event = crate::callback::Event {
        action: "on_play",
        app,
        stream: key,
        client_addr: peer.to_string(),
        protocol: Protocol::HttpFlv.as_str(),
        query,
        tc_url: None,
    };
    let stream = match open_play(ctx, event).await {
        Ok(s) => s,
        Err(r) => {
            warn!(%peer, app, key, reason = %r.log, "HTTP-FLV play refused");
            return respond(&mut sock, r.http_status, r.description).await;
        }
    };
    let (app, key, query) = (app.to_string(), key.to_string(), query.to_string());
    let sub = stream.subscribe(Protocol::HttpFlv);
    Metrics::inc(&ctx.metrics.players_total);
    info!(%peer, app, key, cached = sub.start.len(), "HTTP-FLV play started");
    let result = play(ctx, &mut sock, peer, &stream, sub).await;
    stream.unsubscribe(Protocol::HttpFlv);
    let ended = crate::server::Ended { action: "on_stop", app, stream: key, query, tc_url: None };
    crate::server::notify_end(ctx, ctx.config.callbacks.on_stop.clone(), ended, peer, Protocol::HttpFlv);
    result
}

/// Streams FLV until the stream ends, the player leaves or stalls, or the relay stops.
async fn play(
    ctx: &Arc<Ctx>,
    sock: &mut TcpStream,
    peer: SocketAddr,
    stream: &crate::hub::Stream,
    sub: crate::hub::Subscription,
) -> std::io::Result<()> {
    let mut rx = sub.rx;
    let (mut audio, mut video) = (false, false);
    for f in &sub.start {
        audio |= f.media.kind == MediaKind::Audio;
        video |= f.media.kind == MediaKind::Video;
    }
    let mut skipping = false;
    let mut stop = ctx.stopping.clone();
    let mut scratch = [0u8; 512];
    let mut first = VecDeque::new();
    if sub.start.is_empty() {
        // Nothing cached (a pull just started, or nobody publishes this key): no 200 before there is data, so
        // a key that never exists gets a 404 after the grace period instead of an FLV header and then nothing.
        loop {
            tokio::select! {
                _ = wait_ring(stream, &mut rx) => {
                    let ended = next_batch(ctx, peer, stream, &mut rx, &mut skipping, &mut first, |f, out| f.flv_tag(out));
                    if !first.is_empty() {
                        break;
                    }
                    if ended {
                        info!(%peer, "stream not found, answering 404");
                        return respond(sock, 404, crate::server::NOT_FOUND_TEXT).await;
                    }
                }
                r = sock.read(&mut scratch) => {
                    if r? == 0 {
                        return Ok(());
                    }
                }
                _ = stop.wait() => return Ok(()),
            }
        }
        // The first frames' kinds are not known yet: announce both, as SRS does; players cope with either missing.
        (audio, video) = (true, true);
    }
    // Close-delimited body: no chunked encoding to frame, so the shared tag buffers go out as they are.
    let head = "HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nConnection: close\r\nCache-Control: no-cache\r\n\
                Access-Control-Allow-Origin: *\r\n\r\n";
    let mut batch = VecDeque::from([Bytes::from_static(head.as_bytes()), file_header(audio, video)]);
    for f in &sub.start {
        f.flv_tag(&mut batch);
    }
    batch.extend(first);
    let io = |e: crate::server::WriteError| std::io::Error::other(e.to_string());
    write_bufs(ctx, sock, peer, Some(stream), batch).await.map_err(io)?;
    loop {
        tokio::select! {
            _ = wait_ring(stream, &mut rx) => {
                let mut batch = VecDeque::new();
                let ended = next_batch(ctx, peer, stream, &mut rx, &mut skipping, &mut batch, |f, out| f.flv_tag(out));
                if !batch.is_empty() {
                    write_bufs(ctx, sock, peer, Some(stream), batch).await.map_err(io)?;
                }
                if ended {
                    info!(%peer, "stream ended, closing HTTP-FLV player");
                    return Ok(());
                }
            }
            // A player sends nothing after its request; reading notices when it leaves.
            r = sock.read(&mut scratch) => {
                if r? == 0 {
                    return Ok(());
                }
            }
            _ = stop.wait() => return Ok(()),
        }
    }
}

/// A short plain-text answer, then close.
pub(crate) async fn respond(sock: &mut TcpStream, status: u16, msg: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let body = format!("{msg}\n");
    let r = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(r.as_bytes()).await?;
    sock.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let r = parse_request(b"GET /live/test.flv?a=1 HTTP/1.1\r\nHost: x\r\n\r\nrest").unwrap().unwrap();
        assert_eq!((r.method.as_str(), r.target.as_str(), r.head_len), ("GET", "/live/test.flv?a=1", 44));
        assert_eq!(parse_request(b"GET /live/test.flv HTTP/1.1\r\nHost"), Ok(None));
        let r = parse_request(b"POST /open/1 HTTP/1.1\r\nContent-Length: 1\r\n\r\n\0").unwrap().unwrap();
        assert_eq!(r.content_length, 1);
        assert!(parse_request(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_request(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse_request(b"\x16\x03\x01garbage\r\n\r\n").is_err());
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert_eq!(parse_request(&big), Err(HttpError::TooLarge));
        // The same length twice is one length; two different ones are refused, not waited on.
        let r = parse_request(b"POST /open/1 HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n").unwrap();
        assert_eq!(r.unwrap().content_length, 1);
        let two = parse_request(b"POST /open/1 HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(two, Err(HttpError::Malformed("conflicting Content-Length headers".into())));
        // Too many header lines: 431, like a head too large.
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
        }
        assert_eq!(parse_request(&many).map_err(|e| e.status()), Err(431));
        // Absolute-form targets are read as their path.
        for (target, want) in [
            ("http://127.0.0.1:8080/live/x.flv?t=1", "/live/x.flv?t=1"),
            ("HTTP://host/open/1", "/open/1"),
            ("http://host", "/"),
            ("http://host?a", "/?a"),
        ] {
            let head = format!("GET {target} HTTP/1.1\r\nHost: host\r\n\r\n");
            assert_eq!(parse_request(head.as_bytes()).unwrap().unwrap().target, want, "{target}");
        }
        assert!(parse_request(b"GET ftp://host/x HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    fn targets() {
        assert_eq!(flv_target("/live/test.flv"), Some(("live", "test", "")));
        assert_eq!(flv_target("/live/test.flv?token=1"), Some(("live", "test", "token=1")));
        assert_eq!(flv_target("/live/a/b.flv"), Some(("live", "a/b", "")));
        assert_eq!(flv_target("/live/test"), None);
        assert_eq!(flv_target("live/test.flv"), None);
    }

    #[test]
    fn tags() {
        let m = Media { kind: MediaKind::Video, timestamp: 0, payload: Bytes::from_static(&[0x17, 1, 2]) };
        let t = tag_frame(&m, 0x0102_0304);
        assert_eq!(&t[..], &[9, 0, 0, 3, 0x02, 0x03, 0x04, 0x01, 0, 0, 0, 0, 0, 0, 14]);
        assert_eq!(&file_header(true, true)[..], b"FLV\x01\x05\0\0\0\x09\0\0\0\0");
    }
}
