//! The HTTP server of every daemon's API: an axum [`Router`] served over HTTP/1.1 on our accept loop, with the
//! bounds an API on a shared host needs against slow or greedy clients ([`Limits`]: head and whole-body deadlines, a
//! body size limit, a connection cap, an idle keep-alive timeout), one JSON error shape for every refusal (axum's
//! extractor rejections, unknown routes and methods included), the peer address as [`ConnectInfo`], and a graceful
//! stop that lets requests in flight finish for a moment.

use crate::accept;
use crate::shutdown::Stopping;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// A request head must arrive within this: enough for any real client, short enough that idle sockets do not pile
/// up (slowloris).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long requests in flight (a scrape, a long HTTP-FLV response) may go on after shutdown before being cut.
pub const GRACE: Duration = Duration::from_secs(2);

/// What one API server allows a client. Each daemon picks its own where it builds its server ([`serve_with`]);
/// [`serve`] takes the defaults, which fit every API of ours (their requests are small JSON documents).
#[derive(Clone, Debug)]
pub struct Limits {
    /// A request head (and, on a keep-alive connection, the next one) must arrive within this.
    pub header_timeout: Duration,
    /// A whole request body must arrive within this from the end of its head, or the answer is 408 and the
    /// connection is closed: a client that trickles its body cannot hold a connection and its buffer open.
    pub body_timeout: Duration,
    /// The largest request body; a longer one is answered 413 (before reading it when Content-Length says so).
    pub max_body: usize,
    /// Connections served at once; one beyond is answered 503 and closed at once, so idle API clients cannot
    /// take the descriptors the daemon's other listeners need.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: HEADER_TIMEOUT,
            body_timeout: Duration::from_secs(10),
            max_body: 64 * 1024,
            max_connections: 256,
        }
    }
}

/// Serves `router` on `listener` with the default [`Limits`] until `stop` fires; `what` names the server in logs.
pub async fn serve(listener: TcpListener, router: Router, stop: Stopping, what: &'static str) {
    serve_with(listener, router, stop, what, Limits::default()).await
}

/// Serves `router` on `listener` with `limits` until `stop` fires; `what` names the server in logs.
pub async fn serve_with(listener: TcpListener, router: Router, mut stop: Stopping, what: &'static str, limits: Limits) {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The head timer also runs while a keep-alive connection waits for its next request: that is the idle timeout.
    // Half-close: a client that shuts its sending side after the request still gets the answer.
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).half_close(true);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let limits = Arc::new(limits);
    while let Some((stream, peer)) = accept::next(&listener, &mut stop, what).await {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse_busy(&stream);
            tracing::debug!(%peer, "{what}: {} connections already open; refused", limits.max_connections);
            continue;
        };
        let router = router.clone();
        let limits = limits.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            handle(router.clone(), limits.clone(), peer, req)
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "{what}: HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
    if tokio::time::timeout(GRACE, graceful.shutdown()).await.is_err() {
        tracing::debug!("{what}: requests still in flight after {GRACE:?} were cut");
    }
}

/// The answer on a connection over the cap, written without waiting (a fresh socket's send buffer is empty); the
/// socket is closed right after.
fn refuse_busy(stream: &tokio::net::TcpStream) {
    const BODY: &str = r#"{"error":"too many API connections; retry later"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\nRetry-After: 1\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

/// One request: its body read whole within the limits, then the router, then refusals mapped to JSON.
async fn handle(
    router: Router,
    limits: Arc<Limits>,
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> Result<Response, Infallible> {
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    let body = match read_body(body, &limits).await {
        Ok(b) => b,
        Err(refusal) => return Ok(refusal),
    };
    let method = parts.method.clone();
    let req = axum::extract::Request::from_parts(parts, Body::from(body));
    let Ok(response) = router.oneshot(req).await;
    Ok(json_errors(&method, response).await)
}

/// The body in one contiguous buffer sized by its length, read within `body_timeout` and `max_body`. Each frame
/// is copied and dropped at once: keeping the frames (as collecting them does) keeps hyper's read buffer behind
/// each one alive, several KB per byte for a body sent a byte per segment.
async fn read_body(mut body: Incoming, limits: &Limits) -> Result<Bytes, Response> {
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let too_large =
        || closing(error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {} bytes", limits.max_body)));
    let declared = body.size_hint().exact();
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return Err(too_large());
    }
    let mut buf = BytesMut::with_capacity(declared.map_or(0, |n| n as usize));
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| closing(error(StatusCode::BAD_REQUEST, format!("request body: {e}"))))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limits.max_body {
                    return Err(too_large());
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(())) => Ok(buf.freeze()),
        Ok(Err(refusal)) => Err(refusal),
        Err(_) => Err(closing(error(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {:?}", limits.body_timeout),
        ))),
    }
}

/// `r` with the connection closed after it (its request body was not read to the end).
fn closing(mut r: Response) -> Response {
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// The largest refusal text taken over into a JSON error (axum's rejections are a line).
const MAX_REFUSAL_TEXT: usize = 4096;

/// A refusal that is not JSON yet (axum's extractor rejections are plain text, its 404 and 405 empty) as
/// `{"error": "..."}` with the same status and headers, so every API refuses in one shape.
async fn json_errors(method: &Method, response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json || method == Method::HEAD {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match http_body_util::Limited::new(body, MAX_REFUSAL_TEXT).collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("refused").to_lowercase() } else { text };
    let json = error(status, message);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, json.into_body())
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
        let server = tokio::spawn(serve_with(
            l,
            router,
            st,
            "test",
            Limits { header_timeout: Duration::from_millis(200), ..Limits::default() },
        ));
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
