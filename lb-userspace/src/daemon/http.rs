//! lbd over HTTP on the shared server: `/metrics` (`--metrics ADDR`), and with `--api ADDR` also the control API
//! under `/api/v1/` (the same requests as the unix socket, behind a bearer token), so a stream manager or console
//! on another host can drive the balancer. Handlers never touch maps: they send messages to the control task.
//! `POST /api/v1/requests` passes the manager-term fence (`svc::fence`) after the token: a request carrying an
//! older stream manager term than one accepted before is refused with 409 and never reaches the control task.

use super::control::Job;
use crate::api::{Request, Response as ApiResponse};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use svc::auth::Bearer;
use svc::fence::Fence;
use svc::Stopping;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// A scrape: the control task answers with the rendered text.
pub type Scrape = oneshot::Sender<String>;

#[derive(Clone)]
struct Ctx {
    scrapes: mpsc::Sender<Scrape>,
    /// The control API, when this server has it.
    api: Option<(mpsc::Sender<Job>, Bearer)>,
    /// The highest stream manager term accepted; shared by lbd's servers (its metrics show on each).
    fence: Arc<Fence>,
}

/// Serves `GET /metrics` (and `/`), plus the control API when `api` is given, until `stop` fires. `fence` is the
/// manager-term fence of the API (one for every server of this lbd).
pub async fn serve(
    listener: TcpListener,
    scrapes: mpsc::Sender<Scrape>,
    api: Option<(mpsc::Sender<Job>, Bearer)>,
    fence: Arc<Fence>,
    stop: Stopping,
) {
    let what = if api.is_some() { "api" } else { "metrics" };
    svc::http::serve(listener, router(Ctx { scrapes, api, fence }), stop, what).await
}

fn router(ctx: Ctx) -> Router {
    let mut r = Router::new().route("/metrics", get(scrape)).route("/", get(scrape));
    if ctx.api.is_some() {
        r = r
            .route("/api/v1/requests", post(request))
            .route("/api/v1/services", get(services))
            .route("/api/v1/stats", get(stats))
            .route("/api/v1/events", get(events))
            .route("/console", get(console));
    }
    r.fallback(|| async { svc::http::error(StatusCode::NOT_FOUND, "try /metrics or /api/v1/services") }).with_state(ctx)
}

async fn scrape(State(ctx): State<Ctx>) -> Response {
    let (tx, rx) = oneshot::channel();
    if ctx.scrapes.send(tx).await.is_err() {
        return gone();
    }
    match rx.await {
        Ok(mut text) => {
            text.push_str(&svc::metrics::render(&fence_families(&ctx.fence)));
            svc::http::metrics_text(text)
        }
        Err(_) => gone(),
    }
}

/// The fence's families: they live with the HTTP API, not with the control task that renders the others.
fn fence_families(fence: &Fence) -> Vec<svc::metrics::Family> {
    use svc::metrics::Family;
    vec![
        Family::gauge(
            "lbd_manager_term",
            "The highest stream manager term whose commands this lbd accepted over the API (0: none since it started).",
        )
        .with(vec![], fence.term() as f64),
        Family::counter(
            "lbd_manager_commands_refused_total",
            "API requests refused (409) for carrying a stream manager term older than one accepted before.",
        )
        .with(vec![], fence.refused() as f64),
    ]
}

fn gone() -> Response {
    svc::http::error(StatusCode::SERVICE_UNAVAILABLE, "lbd is shutting down")
}

/// Runs one request through the control task after checking the token.
async fn call(ctx: &Ctx, headers: &HeaderMap, req: Request) -> Result<ApiResponse, Response> {
    let Some((_, bearer)) = &ctx.api else { return Err(gone()) };
    if !bearer.allows(headers) {
        return Err(svc::auth::unauthorized());
    }
    call_open(ctx, req).await
}

/// Runs a request without a token: only for the read-only console.
async fn call_open(ctx: &Ctx, req: Request) -> Result<ApiResponse, Response> {
    let Some((jobs, _)) = &ctx.api else { return Err(gone()) };
    let (tx, rx) = oneshot::channel();
    jobs.send((req, tx)).await.map_err(|_| gone())?;
    rx.await.map_err(|_| gone())
}

/// The answer as JSON: 200 when lbd did it, 400 with its reason when it refused (nothing changed then).
fn answer(r: ApiResponse) -> Response {
    let status = if r.ok { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    (status, Json(r)).into_response()
}

/// `POST /api/v1/requests` with any request of the control socket, e.g. `{"cmd":"drain","service":{...},"real":...}`.
async fn request(State(ctx): State<Ctx>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if ctx.api.as_ref().is_some_and(|(_, bearer)| !bearer.allows(&headers)) {
        return svc::auth::unauthorized();
    }
    if let Some(why) = svc::auth::browser_forgery(&headers) {
        return svc::http::error(StatusCode::FORBIDDEN, why);
    }
    let req: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return svc::http::error(StatusCode::BAD_REQUEST, format!("malformed request: {e}")),
    };
    // Past the token (a request without it never moves the term), held until the control task has answered.
    let admitted = match ctx.fence.admit(&headers).await {
        Ok(a) => a,
        Err(refusal) => return refusal.response(),
    };
    let r = match call(&ctx, &headers, req).await {
        Ok(r) => answer(r),
        Err(r) => r,
    };
    drop(admitted);
    r
}

async fn services(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    match call(&ctx, &headers, Request::List).await {
        Ok(r) if r.ok => Json(r.list.unwrap_or_default()).into_response(),
        Ok(r) => answer(r),
        Err(r) => r,
    }
}

async fn stats(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    match call(&ctx, &headers, Request::Stats).await {
        Ok(r) if r.ok => Json(r.stats.map(|mut s| {
            s.manager_term = Some(ctx.fence.term());
            s
        }))
        .into_response(),
        Ok(r) => answer(r),
        Err(r) => r,
    }
}

/// lbd's own console for an LB without a stream manager: its services and reals, counters and recent events,
/// read-only (changes go through lbctl or the API), refreshed every 15 s.
async fn console(State(ctx): State<Ctx>) -> Response {
    let (Ok(list), Ok(stats), Ok(events)) = (
        call_open(&ctx, Request::List).await,
        call_open(&ctx, Request::Stats).await,
        call_open(&ctx, Request::Events { last: Some(100) }).await,
    ) else {
        return gone();
    };
    let body = crate::console::console_body(
        &list.list.unwrap_or_default(),
        stats.stats.as_deref(),
        &events.events.unwrap_or_default(),
    );
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        svc::console::page("lbd", 15, None, &body),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct EventsQuery {
    last: Option<usize>,
}

async fn events(State(ctx): State<Ctx>, headers: HeaderMap, Query(q): Query<EventsQuery>) -> Response {
    match call(&ctx, &headers, Request::Events { last: q.last }).await {
        Ok(r) if r.ok => Json(r.events.unwrap_or_default()).into_response(),
        Ok(r) => answer(r),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn http(addr: std::net::SocketAddr, req: &str, token: Option<&str>, body: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let head = format!(
            "{req} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).await.unwrap();
        r
    }

    #[tokio::test]
    async fn metrics_and_the_token_guarded_api_reach_the_control_task() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stx, mut srx) = mpsc::channel::<Scrape>(4);
        let (jtx, mut jrx) = mpsc::channel::<Job>(4);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(s) = srx.recv() => { let _ = s.send("lbd_up 1\n".into()); }
                    Some((req, reply)) = jrx.recv() => {
                        let r = match req {
                            Request::List => { let mut r = ApiResponse::ok("1 service(s)"); r.list = Some(vec![]); r }
                            Request::DelService { .. } => ApiResponse::err("unknown service"),
                            _ => ApiResponse::ok("done"),
                        };
                        let _ = reply.send(r);
                    }
                    else => break,
                }
            }
        });
        let bearer = Bearer::token("0123456789abcdef").unwrap();
        let (sd, st) = svc::Shutdown::new();
        let server = tokio::spawn(serve(listener, stx, Some((jtx, bearer)), Arc::default(), st));
        let tok = Some("0123456789abcdef");
        assert!(http(addr, "GET /metrics", None, "").await.starts_with("HTTP/1.1 200 OK"), "metrics stay open");
        let r = http(addr, "GET /api/v1/services", None, "").await;
        assert!(r.starts_with("HTTP/1.1 401") && r.contains("bearer"), "{r}");
        let r = http(addr, "GET /api/v1/services", Some("0123456789abcdeX"), "").await;
        assert!(r.starts_with("HTTP/1.1 401"), "{r}");
        let r = http(addr, "GET /api/v1/services", tok, "").await;
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("[]"), "{r}");
        // Refusals of the shared server (extractors, methods) are JSON like lbd's own.
        let r = http(addr, "GET /api/v1/events?last=abc", tok, "").await;
        assert!(r.starts_with("HTTP/1.1 400") && r.contains("application/json"), "{r}");
        assert!(r.contains(r#"{"error":"Failed to deserialize query string: last: invalid digit"#), "{r}");
        let r = http(addr, "DELETE /api/v1/services", tok, "").await;
        assert!(r.starts_with("HTTP/1.1 405") && r.ends_with(r#"{"error":"method not allowed"}"#), "{r}");
        // The scheme in any case, any spaces before the token (svc::auth's one parser).
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let lower = format!(
            "GET /api/v1/services HTTP/1.1\r\nHost: {addr}\r\nAuthorization: bearer  0123456789abcdef\r\n\
             Connection: close\r\n\r\n"
        );
        s.write_all(lower.as_bytes()).await.unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).await.unwrap();
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let r = http(addr, "GET /console", None, "").await;
        assert!(r.starts_with("HTTP/1.1 200") && r.contains("text/html"), "the console is read-only and open: {r}");
        assert!(r.contains("<h2>Services</h2>") && r.contains("<h2>Events</h2>"), "{r}");
        let drain = r#"{"cmd":"drain","service":{"vip":"10.0.0.1","port":80,"proto":"tcp"},"real":"10.0.0.2"}"#;
        let r = http(addr, "POST /api/v1/requests", tok, drain).await;
        assert!(r.starts_with("HTTP/1.1 200") && r.contains("\"ok\":true"), "{r}");
        let del = r#"{"cmd":"del-service","service":{"vip":"10.0.0.1","port":80,"proto":"tcp"}}"#;
        let r = http(addr, "POST /api/v1/requests", tok, del).await;
        assert!(r.starts_with("HTTP/1.1 400") && r.contains("unknown service"), "{r}");
        let r = http(addr, "POST /api/v1/requests", tok, "{\"cmd\":\"explode\"}").await;
        assert!(r.starts_with("HTTP/1.1 400") && r.contains("malformed request"), "{r}");
        let r = http(addr, "POST /api/v1/requests", None, drain).await;
        assert!(r.starts_with("HTTP/1.1 401"), "a request without the token must not reach lbd: {r}");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let forged = format!(
            "POST /api/v1/requests HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\n\
             Authorization: Bearer 0123456789abcdef\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{drain}",
            drain.len()
        );
        s.write_all(forged.as_bytes()).await.unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).await.unwrap();
        assert!(r.starts_with("HTTP/1.1 403") && r.contains("cross-origin"), "a page's cross-site POST: {r}");
        sd.trigger();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn the_metrics_server_has_no_api() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stx, _srx) = mpsc::channel::<Scrape>(4);
        let (sd, st) = svc::Shutdown::new();
        let server = tokio::spawn(serve(listener, stx, None, Arc::default(), st));
        let r = http(addr, "GET /api/v1/services", None, "").await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let r = http(addr, "GET /console", None, "").await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        sd.trigger();
        server.await.unwrap();
    }
}
