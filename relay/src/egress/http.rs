//! The media HTTP listener (`--http-listen`): reads request heads through the gate and routes them to HLS (on
//! kept-alive connections), RTMPT, the health check or HTTP-FLV.
//!
//! Our own small HTTP/1.1 server on tokio (request heads parsed with httparse, bounded) instead of axum, because
//! a player is a long-lived write loop that needs what the RTMP players have: the connection gate at accept,
//! vectored writes of shared buffers with the --player-timeout stall check, and the ring's backlog bounds.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tracing::{debug, info, warn};

use super::Egress;
use crate::metrics::Metrics;
use crate::wire::http::parse_request;

pub(crate) async fn accept_loop(ctx: Arc<Egress>, listener: TcpListener, accepting: svc::Stopping) {
    super::gate::accept_loop(ctx, listener, accepting, "HTTP media", |ctx, sock, peer| async move {
        if let Err(e) = serve(&ctx, sock, peer).await {
            debug!(%peer, error = %e, "HTTP media connection ended");
        }
    })
    .await
}

/// Reads request heads (the first within --handshake-timeout, later ones on a kept-alive connection within
/// --conn-idle-timeout) and answers them: HLS requests in turn on the same connection; RTMPT, the health check
/// and HTTP-FLV take the connection over.
async fn serve(ctx: &Arc<Egress>, mut sock: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(1024);
    let mut wait = ctx.config.handshake_timeout;
    let mut stop = ctx.stopping.clone();
    loop {
        let head = tokio::select! {
            h = timeout(wait, async {
                loop {
                    if let Some(r) = parse_request(&buf).transpose() {
                        return Some(r);
                    }
                    if sock.read_buf(&mut buf).await.ok()? == 0 {
                        return None;
                    }
                }
            }) => h,
            _ = stop.wait() => return Ok(()),
        };
        let req = match head {
            Err(_) => {
                if wait == ctx.config.handshake_timeout {
                    Metrics::inc(&ctx.metrics.connections_timed_out);
                    info!(%peer, reason = "no request head within --handshake-timeout", "closing idle connection");
                }
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
        if let Some(r) = super::rtmpt::route(&req) {
            let _ = buf.split_to(req.head_len);
            return super::rtmpt::serve(ctx, sock, peer, req, r, buf).await;
        }
        if req.target == "/healthz" {
            // For load balancers' HTTP checks of this port.
            return respond(&mut sock, 200, "ok").await;
        }
        let path = req.target.split('?').next().unwrap_or("");
        let keep = if path == "/hls.min.js" {
            super::hls::answer_script(ctx, &mut sock, peer, &req).await?
        } else if super::hls::route(&req.target).is_some() {
            super::hls::answer(ctx, &mut sock, peer, &req).await?
        } else {
            return super::flv::serve(ctx, sock, peer, req).await;
        };
        if !keep || req.content_length > 0 {
            return Ok(());
        }
        let _ = buf.split_to(req.head_len);
        wait = ctx.config.conn_idle_timeout;
    }
}

/// A short plain-text answer, then close.
pub async fn respond(sock: &mut TcpStream, status: u16, msg: &str) -> std::io::Result<()> {
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
