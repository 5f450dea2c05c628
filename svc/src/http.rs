//! The HTTP server of every daemon: an axum [`Router`] served over HTTP/1.1 on our accept loop, with a header
//! read timeout (a client that trickles its request head is dropped), the peer address as
//! [`ConnectInfo`], and a graceful stop that lets requests in flight finish for a moment.

use crate::accept;
use crate::shutdown::Stopping;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// A request head must arrive within this: enough for any real client, short enough that idle sockets do not pile
/// up (slowloris).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long requests in flight (a scrape, a long HTTP-FLV response) may go on after shutdown before being cut.
pub const GRACE: Duration = Duration::from_secs(2);

/// Serves `router` on `listener` until `stop` fires; `what` names the server in logs.
pub async fn serve(listener: TcpListener, router: Router, stop: Stopping, what: &'static str) {
    serve_with(listener, router, stop, what, HEADER_TIMEOUT).await
}

async fn serve_with(listener: TcpListener, router: Router, mut stop: Stopping, what: &'static str, head: Duration) {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(head);
    while let Some((stream, peer)) = accept::next(&listener, &mut stop, what).await {
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(req)
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "{what}: HTTP connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(GRACE, graceful.shutdown()).await.is_err() {
        tracing::debug!("{what}: requests still in flight after {GRACE:?} were cut");
    }
}

/// A Prometheus scrape's answer.
pub fn metrics_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE))], body).into_response()
}

/// A JSON error body `{"error": "..."}` with `status`: what every API of ours answers on a refused request.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// The peer of a request (see [`ConnectInfo`]).
pub type Peer = ConnectInfo<SocketAddr>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shutdown;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_raw(addr: SocketAddr, req: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).await.unwrap();
        r
    }

    #[tokio::test]
    async fn routes_peers_timeouts_and_shutdown() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let router = Router::new()
            .route("/metrics", get(|| async { metrics_text("up 1\n".into()) }))
            .route("/peer", get(|ConnectInfo(p): Peer| async move { p.ip().to_string() }))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "try /metrics") });
        let (sd, st) = Shutdown::new();
        let server = tokio::spawn(serve_with(l, router, st, "test", Duration::from_millis(200)));
        let close = "Connection: close\r\n\r\n";
        let r = get_raw(addr, &format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{close}")).await;
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        assert!(r.contains("version=0.0.4") && r.ends_with("\r\n\r\nup 1\n"), "{r}");
        let r = get_raw(addr, &format!("GET /peer HTTP/1.1\r\nHost: x\r\n{close}")).await;
        assert!(r.ends_with("127.0.0.1"), "{r}");
        let r = get_raw(addr, &format!("GET /nope HTTP/1.1\r\nHost: x\r\n{close}")).await;
        assert!(r.starts_with("HTTP/1.1 404") && r.contains(r#"{"error":"try /metrics"}"#), "{r}");
        // A client that never finishes its head is dropped after the header timeout.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost").await.unwrap();
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
        assert!(n.is_ok(), "the slow client was not dropped");
        sd.trigger();
        tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed after shutdown");
    }
}
