//! HTTP control/observability API: GET /streams, POST /streams/{app}/{key}/pull, GET /metrics.
//!
//! A minimal HTTP/1.1 server on tokio (one request per connection) instead of hyper: three routes do not
//! justify the dependency tree on a 2-core build machine.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

use crate::{Ctx, Role};

/// Requests larger than this are refused: every route fits in a request line and a few headers.
const MAX_REQUEST: usize = 16 * 1024;

pub(crate) async fn serve(ctx: Arc<Ctx>, listener: TcpListener) {
    let mut stop = ctx.stopping.clone();
    while let Some((sock, peer)) = svc::accept::next(&listener, &mut stop, "API").await {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(Duration::from_secs(5), handle(ctx, sock)).await {
                debug!(%peer, error = %e, "API request timed out");
            }
        });
    }
}

struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

fn json(status: &'static str, v: serde_json::Value) -> Response {
    Response { status, content_type: "application/json", body: v.to_string() + "\n" }
}

async fn handle(ctx: Arc<Ctx>, mut sock: TcpStream) {
    let mut buf = Vec::with_capacity(1024);
    let mut tmp = [0u8; 2048];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > MAX_REQUEST {
            return;
        }
        match sock.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let resp = route(&ctx, method, path);
    let msg = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        resp.status,
        resp.content_type,
        resp.body.len(),
        resp.body
    );
    let _ = sock.write_all(msg.as_bytes()).await;
    let _ = sock.shutdown().await;
}

fn route(ctx: &Arc<Ctx>, method: &str, path: &str) -> Response {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        ("GET", ["streams"]) => {
            json("200 OK", serde_json::json!({ "role": ctx.config.role.name(), "streams": ctx.hub.views() }))
        }
        ("GET", ["metrics"]) => Response {
            status: "200 OK",
            content_type: "text/plain; version=0.0.4",
            body: ctx.metrics.render(&ctx.hub, ctx.config.role.name()),
        },
        ("GET", ["healthz"]) => Response { status: "200 OK", content_type: "text/plain", body: "ok\n".into() },
        ("POST", ["streams", app, key, "pull"]) => match &ctx.config.role {
            Role::Origin { .. } => json("404 Not Found", serde_json::json!({ "error": "pull is an edge operation" })),
            Role::Edge { origins } => {
                if !origins.iter().any(|o| o.app == *app) {
                    return json(
                        "404 Not Found",
                        serde_json::json!({ "error": format!("no --origin serves app {app:?}") }),
                    );
                }
                let stream = crate::edge::ensure_pull(ctx, app, key);
                info!(app, key, "pre-pull requested over the API");
                json(
                    "202 Accepted",
                    serde_json::json!({ "app": app, "key": key, "pulling": true, "source": stream.source(),
                        "held_for_secs": ctx.config.idle_timeout.as_secs() }),
                )
            }
        },
        (_, ["streams", ..]) | (_, ["metrics"]) => {
            json("405 Method Not Allowed", serde_json::json!({ "error": "method not allowed" }))
        }
        _ => json("404 Not Found", serde_json::json!({ "error": "not found" })),
    }
}
