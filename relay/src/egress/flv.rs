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

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::hub::Protocol;
use crate::metrics::Metrics;
use crate::wire::flv::file_header;
use crate::wire::http::parse_request;
use crate::wire::proto::MediaKind;
use crate::egress::rtmp::{admit, next_batch, open_play, wait_ring, write_bufs};
use crate::Ctx;

/// `/APP/KEY.flv[?QUERY]` to (app, key, query); names are checked later, with every other play.
pub fn flv_target(target: &str) -> Option<(&str, &str, &str)> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let rest = path.strip_prefix('/')?;
    let (app, file) = rest.split_once('/')?;
    let key = file.strip_suffix(".flv")?;
    Some((app, key, query))
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
    if let Some(r) = crate::egress::rtmpt::route(&req) {
        let _ = buf.split_to(req.head_len);
        return crate::egress::rtmpt::serve(ctx, sock, peer, req, r, buf).await;
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
    let ended = crate::egress::rtmp::Ended { action: "on_stop", app, stream: key, query, tc_url: None };
    crate::egress::rtmp::notify_end(ctx, ctx.config.callbacks.on_stop.clone(), ended, peer, Protocol::HttpFlv);
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
                        return respond(sock, 404, crate::egress::rtmp::NOT_FOUND_TEXT).await;
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
    let io = |e: crate::egress::rtmp::WriteError| std::io::Error::other(e.to_string());
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
    fn targets() {
        assert_eq!(flv_target("/live/test.flv"), Some(("live", "test", "")));
        assert_eq!(flv_target("/live/test.flv?token=1"), Some(("live", "test", "token=1")));
        assert_eq!(flv_target("/live/a/b.flv"), Some(("live", "a/b", "")));
        assert_eq!(flv_target("/live/test"), None);
        assert_eq!(flv_target("live/test.flv"), None);
    }
}
