//! HTTP-FLV playback, `GET /APP/KEY.flv` (the SRS/flv.js convention): the FLV sink of the one player loop, on
//! the same gate, pull, GOP cache, ring, limits and callbacks as RTMP players.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tracing::{info, warn};

use super::gate::open_play;
use super::http::respond;
use super::player::{write_bufs, Player, Sink, WriteError, NOT_FOUND_TEXT};
use super::Egress;
use crate::hub::{Ended, Event, Frame, Protocol};
use crate::metrics::Metrics;
use crate::wire::flv::file_header;
use crate::wire::http::Request;
use crate::wire::proto::MediaKind;

/// `/APP/KEY.flv[?QUERY]` to (app, key, query); names are checked later, with every other play.
pub fn flv_target(target: &str) -> Option<(&str, &str, &str)> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let rest = path.strip_prefix('/')?;
    let (app, file) = rest.split_once('/')?;
    let key = file.strip_suffix(".flv")?;
    Some((app, key, query))
}

/// Plays `GET /APP/KEY.flv` (the request head is read); other targets get 404.
pub(crate) async fn serve(
    ctx: &Arc<Egress>,
    mut sock: TcpStream,
    peer: SocketAddr,
    req: Request,
) -> std::io::Result<()> {
    let Some((app, key, query)) = flv_target(&req.target) else {
        return respond(&mut sock, 404, "not found").await;
    };
    if req.method != "GET" {
        return respond(&mut sock, 405, "method not allowed").await;
    }
    let event = Event {
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
    let player = Player::new(stream.clone(), sub.rx, Sink::Flv);
    let result = play(ctx, &mut sock, peer, player, &sub.start).await;
    stream.unsubscribe(Protocol::HttpFlv);
    let client_addr = peer.to_string();
    let protocol = Protocol::HttpFlv.as_str();
    ctx.hooks.tell(Ended { action: "on_stop", app, stream: key, query, tc_url: None, client_addr, protocol });
    result
}

/// Streams FLV until the stream ends, the player leaves or stalls, or the relay stops.
async fn play(
    ctx: &Arc<Egress>,
    sock: &mut TcpStream,
    peer: SocketAddr,
    mut player: Player,
    start: &[Arc<Frame>],
) -> std::io::Result<()> {
    let (mut audio, mut video) = (false, false);
    for f in start {
        audio |= f.media.kind == MediaKind::Audio;
        video |= f.media.kind == MediaKind::Video;
    }
    let mut stop = ctx.stopping.clone();
    let mut scratch = [0u8; 512];
    let mut first = VecDeque::new();
    if start.is_empty() {
        // Nothing cached (a pull just started, or nobody publishes this key): no 200 before there is data, so
        // a key that never exists gets a 404 after the grace period instead of an FLV header and then nothing.
        loop {
            tokio::select! {
                _ = player.ready() => {
                    let ended = player.next(ctx, peer, &mut first);
                    if !first.is_empty() {
                        break;
                    }
                    if ended {
                        info!(%peer, "stream not found, answering 404");
                        return respond(sock, 404, NOT_FOUND_TEXT).await;
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
    player.start(start, &mut batch);
    batch.extend(first);
    let io = |e: WriteError| std::io::Error::other(e.to_string());
    write_bufs(ctx, sock, peer, Some(&player.stream), batch).await.map_err(io)?;
    loop {
        tokio::select! {
            _ = player.ready() => {
                if !player.pump(ctx, sock, peer).await.map_err(io)? {
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
