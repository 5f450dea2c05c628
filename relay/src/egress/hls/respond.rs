//! HLS answers: the files of a packager (blocking playlist reloads and preload-hinted parts wait for what they
//! ask), and HTTP done as players and CDNs expect (CORS, Cache-Control, ETag and 304, HEAD, one byte range,
//! keep-alive): playlists and init segments from memory with vectored writes, segments and parts from their
//! segment's memory file with sendfile.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::warn;

use super::packager::{Packager, Part, PartData, State};
use super::spool::Spool;
use super::{ended_text, query_value, File};
use crate::egress::player::write_bufs;
use crate::egress::Egress;
use crate::metrics::Metrics;

/// A body: one buffer, or buffers shared with the frames (a segment, a part).
pub enum Body {
    One(Bytes),
    Many(Vec<Bytes>),
    /// `len` bytes of a segment's memory file from an offset, sent with sendfile.
    File(Arc<Spool>, u64, usize),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::One(b) => b.len(),
            Body::Many(v) => v.iter().map(|b| b.len()).sum(),
            Body::File(_, _, len) => *len,
        }
    }

    /// The body of `parts` back to back: one span of their segment's file when they are all in it in order (what
    /// the packager makes), else their bytes; `None` if a file could not be read.
    pub fn of_parts(parts: &[Arc<Part>]) -> Option<Body> {
        let len: usize = parts.iter().map(|p| p.len).sum();
        if let Some(PartData::Spooled(file, start)) = parts.first().map(|p| &p.data) {
            let mut at = *start;
            let contiguous = parts.iter().all(|p| match &p.data {
                PartData::Spooled(f, o) if Arc::ptr_eq(f, file) && *o == at => {
                    at += p.len as u64;
                    true
                }
                _ => false,
            });
            if contiguous {
                return Some(Body::File(file.clone(), *start, len));
            }
        }
        parts.iter().map(|p| p.bytes()).collect::<Option<Vec<Bytes>>>().map(Body::Many)
    }

    /// The bytes `start..end` as buffers (slices, no copy); a file body has none (see `send`).
    fn range(self, start: usize, end: usize) -> VecDeque<Bytes> {
        let all = match self {
            Body::One(b) => vec![b],
            Body::Many(v) => v,
            Body::File(..) => Vec::new(),
        };
        let mut out = VecDeque::new();
        let mut at = 0;
        for b in all {
            let (s, e) = (at, at + b.len());
            at = e;
            if e <= start || s >= end {
                continue;
            }
            out.push_back(b.slice(start.max(s) - s..end.min(e) - s));
        }
        out
    }
}

/// An answer before it is written.
pub struct Reply {
    status: u16,
    content_type: &'static str,
    cache: &'static str,
    etag: Option<u64>,
    /// A media file: byte ranges are honoured.
    media: bool,
    body: Body,
    retry_after: Option<u64>,
}

impl Reply {
    /// A short plain-text answer (errors).
    pub fn text(status: u16, msg: &str) -> Self {
        let body = Body::One(Bytes::from(format!("{msg}\n")));
        Self {
            status,
            content_type: "text/plain",
            cache: "no-cache",
            etag: None,
            media: false,
            body,
            retry_after: None,
        }
    }

    pub fn ok(content_type: &'static str, cache: &'static str, etag: Option<u64>, body: Body) -> Self {
        let media = etag.is_some();
        Self { status: 200, content_type, cache, etag, media, body, retry_after: None }
    }

    pub fn page(html: &'static str) -> Self {
        Self::ok("text/html; charset=utf-8", "no-cache", None, Body::One(Bytes::from_static(html.as_bytes())))
    }

    /// The CORS preflight of a browser on another origin.
    pub fn preflight() -> Self {
        Self { status: 204, ..Self::text(204, "") }
    }

    fn busy(msg: &str, retry_secs: u64) -> Self {
        Self { retry_after: Some(retry_secs), ..Self::text(503, msg) }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// One `Range: bytes=...` against a body of `len`: `Ok(None)` serves it whole (no header, several ranges or a
/// form we do not read, as RFC 9110 allows), `Err` when it is unsatisfiable (416).
fn byte_range(header: Option<&str>, len: usize) -> Result<Option<(usize, usize)>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = match (a.parse::<usize>(), b.parse::<usize>()) {
        (Ok(s), Ok(e)) if s <= e => (s, (e + 1).min(len)),
        (Ok(s), Err(_)) if b.is_empty() => (s, len),
        (Err(_), Ok(n)) if a.is_empty() => (len.saturating_sub(n), len),
        _ => return Ok(None),
    };
    if start >= len || start >= end {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// Writes `reply` (headers only for HEAD); true when the connection stays open for another request.
pub async fn send(
    ctx: &Egress,
    sock: &mut TcpStream,
    peer: SocketAddr,
    req: &crate::wire::http::Request,
    reply: Reply,
) -> std::io::Result<bool> {
    let Reply { mut status, content_type, cache, etag, media, body, retry_after } = reply;
    let keep_alive = req.keep_alive && !ctx.stopping.is_stopping();
    let etag_text = etag.map(|e| format!("\"{e:016x}\""));
    let len = body.len();
    let mut range = None;
    if status == 200 && etag_text.is_some() && req.if_none_match.as_deref() == etag_text.as_deref() {
        status = 304;
    } else if status == 200 && media {
        match byte_range(req.range.as_deref(), len) {
            Ok(Some(r)) => {
                status = 206;
                range = Some(r);
            }
            Ok(None) => {}
            Err(()) => status = 416,
        }
    }
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    let (start, end) = range.unwrap_or((0, len));
    let send_len = match status {
        304 | 204 => 0,
        416 => 0,
        _ => end - start,
    };
    if status != 204 && status != 304 {
        head.push_str(&format!("Content-Type: {content_type}\r\nContent-Length: {send_len}\r\n"));
    }
    head.push_str(&format!("Cache-Control: {cache}\r\n"));
    if let Some(e) = &etag_text {
        head.push_str(&format!("ETag: {e}\r\n"));
    }
    if media {
        head.push_str("Accept-Ranges: bytes\r\n");
    }
    match status {
        206 => head.push_str(&format!("Content-Range: bytes {start}-{}/{len}\r\n", end - 1)),
        416 => head.push_str(&format!("Content-Range: bytes */{len}\r\n")),
        _ => {}
    }
    if let Some(s) = retry_after {
        head.push_str(&format!("Retry-After: {s}\r\n"));
    }
    let live = ctx.config.live();
    let origin = &live.hls_cors_origin;
    if !origin.is_empty() {
        head.push_str(&format!(
            "Access-Control-Allow-Origin: {origin}\r\nAccess-Control-Expose-Headers: Content-Length, Content-Range, ETag\r\n"
        ));
        if status == 204 {
            head.push_str(
                "Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\nAccess-Control-Allow-Headers: Range, If-None-Match\r\nAccess-Control-Max-Age: 86400\r\n",
            );
        }
    }
    head.push_str(if keep_alive { "Connection: keep-alive\r\n\r\n" } else { "Connection: close\r\n\r\n" });
    let with_body = req.method != "HEAD" && send_len > 0;
    match body {
        Body::File(file, offset, _) if with_body => {
            send_file(ctx, sock, peer, head.as_bytes(), &file, offset + start as u64, send_len).await?
        }
        body => {
            let mut bufs = VecDeque::from([Bytes::from(head)]);
            if with_body {
                bufs.extend(body.range(start, end));
            }
            write_bufs(ctx, sock, peer, None, bufs).await.map_err(|e| std::io::Error::other(e.to_string()))?;
        }
    }
    if !keep_alive {
        let _ = sock.shutdown().await;
    }
    Ok(keep_alive)
}

/// Writes `head` (held back with MSG_MORE so it leaves with the body's first bytes), then `len` bytes of `file`
/// from `offset` with sendfile, within the player timeout.
async fn send_file(
    ctx: &Egress,
    sock: &mut TcpStream,
    peer: SocketAddr,
    head: &[u8],
    file: &Spool,
    offset: u64,
    len: usize,
) -> std::io::Result<()> {
    let limit = ctx.config.player_timeout;
    let fd = sock.as_raw_fd();
    let res = tokio::time::timeout(limit, async {
        let mut sent = 0;
        while sent < head.len() {
            let rest = &head[sent..];
            sent += sock
                .async_io(Interest::WRITABLE, || {
                    // SAFETY: `rest` is a live buffer of that length; `fd` is this connection's socket.
                    let n = unsafe {
                        libc::send(fd, rest.as_ptr().cast(), rest.len(), libc::MSG_MORE | libc::MSG_NOSIGNAL)
                    };
                    if n < 0 {
                        Err(std::io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                })
                .await?;
        }
        let mut off = offset as libc::off_t;
        let mut left = len;
        while left > 0 {
            let n = sock
                .async_io(Interest::WRITABLE, || {
                    // SAFETY: both descriptors are open for the call; `off` is ours and advanced by the kernel.
                    let n = unsafe { libc::sendfile(fd, file.fd(), &mut off, left) };
                    if n < 0 {
                        Err(std::io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                })
                .await?;
            if n == 0 {
                // The file is shorter than its parts say: never so unless it could not be written.
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "segment file ended early"));
            }
            left -= n;
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    match res {
        Ok(r) => r?,
        Err(_) => {
            warn!(%peer, secs = limit.as_secs_f32(), "peer stopped reading (--player-timeout), disconnecting");
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "player timeout"));
        }
    }
    ctx.metrics.bytes_out.fetch_add((head.len() + len) as u64, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// What a wait for a packager's state found.
enum Waited<T> {
    Ready(T),
    Deadline,
    Stopping,
}

/// Waits until `check` finds something in `p`'s state (checked at once and on every change), up to `deadline`.
async fn wait_for<T>(
    ctx: &Egress,
    p: &Packager,
    deadline: Instant,
    mut check: impl FnMut(&State) -> Option<T>,
) -> Waited<T> {
    let mut rx = p.watch();
    let mut stop = ctx.stopping.clone();
    loop {
        {
            let s = p.state();
            rx.borrow_and_update();
            if let Some(x) = check(&s) {
                return Waited::Ready(x);
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return Waited::Deadline },
            _ = tokio::time::sleep_until(deadline) => return Waited::Deadline,
            _ = stop.wait() => return Waited::Stopping,
        }
    }
}

/// The number `name` of the query (absent: `Ok(None)`), or a 400 naming it.
fn number(query: &str, name: &str) -> Result<Option<u64>, Reply> {
    match query_value(query, name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| Reply::text(400, &format!("{name} must be a whole number"))),
    }
}

/// Parts past the last one that a blocking request may ask for (RFC 8216bis 6.2.5.2's Advance Part Limit).
const ADVANCE_PART_LIMIT: u64 = 3;

/// Answers a request for one of `p`'s files (the session passed the gate).
pub async fn file(ctx: &Egress, p: &Arc<Packager>, file: File, query: &str) -> Reply {
    let seg = Duration::from_millis(p.state().settings.segment_ms as u64);
    // A blocked request waits at most three target durations (RFC 8216bis 6.2.5.2: then 503).
    let block = seg * 3;
    match file {
        File::Page => Reply::text(404, "not found"),
        File::Playlist => playlist(ctx, p, query, block).await,
        File::Init(name) => match p.state().init_named(&name) {
            Some(i) => Reply::ok("video/mp4", "public, max-age=3600", Some(i.etag), Body::One(i.data.clone())),
            None => Reply::text(404, "no such init segment"),
        },
        File::Segment(msn) => {
            // The segment being made, or the next one: a player that asks early waits for it, and so does a
            // client whose playlist came from an edge a few frames ahead of this one (any edge answers any
            // request through the VIP).
            let coming = |s: &State| {
                s.ended.is_none() && s.head_msn().is_some_and(|h| msn == h || msn == h + 1) && s.segment(msn).is_none()
            };
            if coming(&p.state()) {
                let _ = wait_for(ctx, p, Instant::now() + block, |s| (!coming(s)).then_some(())).await;
            }
            match p.state().segment(msn) {
                Some(s) => match Body::of_parts(&s.parts) {
                    Some(body) => Reply::ok("video/mp4", "public, max-age=3600", Some(s.etag), body),
                    None => Reply::text(500, "the segment could not be read"),
                },
                None => Reply::text(404, "no such segment (it left the window, or is not made yet)"),
            }
        }
        File::Part(msn, n) => {
            // The part the preload hint names (the open segment's next, or the next segment's first) is
            // answered when it exists.
            let hinted = |s: &State| {
                s.ended.is_none()
                    && s.open().is_some_and(|o| (o.msn == msn && o.parts.len() == n) || (o.msn + 1 == msn && n == 0))
            };
            let found = if hinted(&p.state()) {
                match wait_for(ctx, p, Instant::now() + block, |s| {
                    s.part(msn, n).map(Some).or_else(|| (!hinted(s)).then_some(None))
                })
                .await
                {
                    Waited::Ready(Some(part)) => {
                        Metrics::inc(&ctx.metrics.hls_blocking_answered);
                        Some(part)
                    }
                    _ => None,
                }
            } else {
                p.state().part(msn, n)
            };
            match found {
                Some(x) => match Body::of_parts(std::slice::from_ref(&x)) {
                    Some(body) => Reply::ok("video/mp4", "public, max-age=3600", Some(x.etag), body),
                    None => Reply::text(500, "the part could not be read"),
                },
                None => Reply::text(404, "no such part (it left the playlist, or is not made yet)"),
            }
        }
    }
}

async fn playlist(ctx: &Egress, p: &Arc<Packager>, query: &str, block: Duration) -> Reply {
    let (msn, part) = match (number(query, "_HLS_msn"), number(query, "_HLS_part")) {
        (Ok(m), Ok(n)) => (m, n),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if part.is_some() && msn.is_none() {
        return Reply::text(400, "_HLS_part needs _HLS_msn");
    }
    // The first segment: an edge's pull just started, or the key is unknown (the stream then ends as not found
    // after the grace period, as for every player).
    let first = ctx.config.grace_period + block;
    let ready = |s: &State| (s.ended.is_some() || !s.segments.is_empty() || s.unsupported.is_some()).then_some(());
    match wait_for(ctx, p, Instant::now() + first, ready).await {
        Waited::Ready(()) => {}
        Waited::Deadline => return Reply::busy("the stream has no HLS segment yet; retry", 2),
        Waited::Stopping => return Reply::busy("relay shutting down", 1),
    }
    {
        let s = p.state();
        if let Some(why) = &s.unsupported {
            return Reply::text(415, &format!("this stream cannot be played as HLS here: {why}"));
        }
        if s.segments.is_empty() {
            return Reply::text(404, ended_text(s.ended == Some(true)));
        }
    }
    let blocking = msn.is_some();
    if let Some(m) = msn {
        let (head, parts) = {
            let s = p.state();
            let head = s.head_msn().unwrap_or(0);
            // The parts segment M has (or has so far, if it is being made).
            let parts = if m == head { Some(s.open_parts()) } else { s.segment(m).map(|x| x.parts.len()) };
            (head, parts.map(|n| n as u64))
        };
        if m > head + 2 {
            return Reply::text(400, &format!("_HLS_msn {m} is more than two segments past the last ({head})"));
        }
        if let (Some(n), Some(parts)) = (part, parts) {
            if n > parts + ADVANCE_PART_LIMIT {
                return Reply::text(
                    400,
                    &format!("_HLS_part {n} is more than {ADVANCE_PART_LIMIT} parts past the last"),
                );
            }
        }
        let done = |s: &State| {
            let closed = s.segments.back().map(|x| x.msn);
            let ok = s.ended.is_some()
                || match part {
                    None => closed.is_some_and(|c| c >= m),
                    Some(n) => {
                        closed.is_some_and(|c| c >= m)
                            || s.open().is_some_and(|o| o.msn > m || (o.msn == m && o.parts.len() as u64 > n))
                    }
                };
            ok.then_some(())
        };
        match wait_for(ctx, p, Instant::now() + block, done).await {
            Waited::Ready(()) => Metrics::inc(&ctx.metrics.hls_blocking_answered),
            Waited::Deadline => return Reply::busy("the requested segment or part did not come in time", 1),
            Waited::Stopping => return Reply::busy("relay shutting down", 1),
        }
    }
    let text = p.state().playlist();
    // A blocking reload's URL names what it waited for: a CDN may keep it; a plain reload changes every part.
    let cache = if blocking { "public, max-age=60" } else { "max-age=1" };
    Reply::ok("application/vnd.apple.mpegurl", cache, None, Body::One(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(byte_range(None, 100), Ok(None));
        assert_eq!(byte_range(Some("bytes=0-9"), 100), Ok(Some((0, 10))));
        assert_eq!(byte_range(Some("bytes=90-"), 100), Ok(Some((90, 100))));
        assert_eq!(byte_range(Some("bytes=-10"), 100), Ok(Some((90, 100))));
        assert_eq!(byte_range(Some("bytes=50-500"), 100), Ok(Some((50, 100))));
        assert_eq!(byte_range(Some("bytes=100-"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=0-1,5-6"), 100), Ok(None), "several ranges: the whole body");
        assert_eq!(byte_range(Some("items=0-1"), 100), Ok(None));
        assert_eq!(byte_range(Some("bytes=9-3"), 100), Ok(None));
        let body = Body::Many(vec![Bytes::from_static(b"abc"), Bytes::from_static(b"defg"), Bytes::from_static(b"h")]);
        let got: Vec<u8> = body.range(2, 7).into_iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(got, b"cdefg");
    }
}
