//! HTTP control/observability API on `svc::http`: GET /streams, POST /streams/{app}/{key}/pull, GET /metrics,
//! GET /healthz, and what a stream manager drives: GET /status, PUT /origins, POST/DELETE /maintenance. Handlers only read the hub and the counters (or start a pull); errors are `{"error": "..."}`.
//! Every state-changing request passes the manager-term fence (`svc::fence`): one of an older term than a command
//! already accepted is refused with 409.
//! Every answer and body is a type of the contract crate (`api_types::relay`), which the manager parses with.

use std::sync::Arc;

use api_types::relay::{
    KeySourceView, KeySources, MaintenanceAnswer, OriginsAnswer, OriginsBody, PlayersByProtocol, PullAnswer, RelayRole,
    SourceBody, SourceInfo, SourcesList, Status, StreamView, StreamsList, SwitchBody, SwitchView,
};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use svc::http::error;
use tracing::info;

use super::Control;
use crate::config::Role;
use crate::metrics::{Metrics, StreamSample};

type Shared = State<Arc<Control>>;

pub(crate) fn router(ctx: Arc<Control>) -> Router {
    Router::new()
        .route("/streams", get(streams))
        .route("/streams/{app}/{key}/pull", post(pull))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/origins", axum::routing::put(set_origins))
        .route("/maintenance", post(maintenance_on).delete(maintenance_off))
        .route("/sources", get(sources))
        .route("/sources/{app}/{key}", axum::routing::put(put_source).delete(delete_source).get(key_sources))
        .route("/sources/{app}/{key}/switch", post(switch_source))
        .method_not_allowed_fallback(refused)
        .fallback(refused)
        // Inside the guard: a request without the token never moves the manager term.
        .layer(middleware::from_fn_with_state(ctx.fence.clone(), svc::fence::middleware))
        .layer(middleware::from_fn_with_state(ctx.clone(), guard))
        .with_state(ctx)
}

/// Every request: the bearer token when one is configured (`/healthz` stays open for probes), and for every
/// method that changes state (POST, PUT, DELETE...) a Host that is an address and an Origin, if any, on the same host, so a web page in an operator's browser
/// cannot make the relay pull (DNS rebinding gives a foreign Host; a cross-site form gives a foreign Origin).
async fn guard(State(ctx): Shared, req: Request, next: Next) -> Response {
    if let Err(why) = check(&ctx, req.method(), req.uri().path(), req.headers()) {
        Metrics::inc(&ctx.metrics.api_refused);
        let (status, msg) = why;
        let mut r = error(status, msg);
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        return r;
    }
    next.run(req).await
}

fn check(ctx: &Control, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    if let Some(token) = &ctx.config.live().api_token {
        if path != "/healthz" {
            match svc::auth::bearer_token(headers) {
                None => return Err((StatusCode::UNAUTHORIZED, "missing Authorization: Bearer token")),
                Some(g) if !svc::auth::constant_time_eq(g.as_bytes(), token.as_bytes()) => {
                    return Err((StatusCode::UNAUTHORIZED, "wrong API token"))
                }
                Some(_) => {}
            }
        }
    }
    if let Some(why) = svc::auth::forged_change(method, headers) {
        return Err((StatusCode::FORBIDDEN, why));
    }
    Ok(())
}

/// The role as the API answers it.
fn role_of(role: &Role) -> RelayRole {
    match role {
        Role::Origin { .. } => RelayRole::Origin,
        Role::Edge { .. } => RelayRole::Edge,
    }
}

fn source_of(s: crate::hub::SourceInfo) -> SourceInfo {
    SourceInfo { kind: s.kind.to_string(), peer: s.peer }
}

/// The hub's view of its streams as the API answers it (the contract crate's type).
fn stream_views(ctx: &Control) -> Vec<StreamView> {
    ctx.hub
        .views()
        .into_iter()
        .map(|v| {
            let p = v.players_by_protocol;
            StreamView {
                app: v.app,
                key: v.key,
                source: v.source.map(source_of),
                players: v.players,
                players_by_protocol: PlayersByProtocol {
                    rtmp: p.rtmp,
                    http_flv: p.http_flv,
                    rtmpt: p.rtmpt,
                    hls: p.hls,
                },
                bitrate_in_kbps: v.bitrate_in_kbps,
                bitrate_out_kbps: v.bitrate_out_kbps,
                bytes_in: v.bytes_in,
                bytes_out: v.bytes_out,
                uptime_secs: v.uptime_secs,
                gop_cached_frames: v.gop_cached_frames,
            }
        })
        .collect()
}

async fn streams(State(ctx): Shared) -> Json<StreamsList> {
    Json(StreamsList { role: role_of(&ctx.config.role), streams: stream_views(&ctx) })
}

/// Edge only: starts pulling app/key now (held for --idle-timeout without players), as the first player would.
async fn pull(State(ctx): Shared, Path((app, key)): Path<(String, String)>) -> Response {
    let Some(edge) = &ctx.edge else {
        return error(StatusCode::NOT_FOUND, "pull is an edge operation");
    };
    if ctx.origins_for(&app).is_empty() {
        return error(StatusCode::NOT_FOUND, format!("no --origin serves app {app:?}"));
    }
    // The API is an operator's: its pulls are not counted against a client address.
    let stream = match crate::ingest::edge::ensure_pull(edge, &app, &key, None) {
        Ok(s) => s,
        Err(e @ crate::ingest::edge::PullRefused::BadName) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ crate::ingest::edge::PullRefused::NotFound) => return error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ (crate::ingest::edge::PullRefused::Limit(_) | crate::ingest::edge::PullRefused::PerIp(_))) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    };
    info!(app, key, "pre-pull requested over the API");
    let body = PullAnswer {
        app,
        key,
        pulling: true,
        source: stream.source().map(source_of),
        held_for_secs: ctx.config.idle_timeout.as_secs(),
    };
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// The counters and the per-stream gauges: the API is where both the hub and the counters are known.
async fn metrics(State(ctx): Shared) -> Response {
    let views = ctx.hub.views();
    let streams: Vec<StreamSample<'_>> = views
        .iter()
        .map(|v| StreamSample {
            app: &v.app,
            key: &v.key,
            players: v.players,
            bitrate_in_bps: v.bitrate_in_kbps * 1000,
        })
        .collect();
    let mut families = ctx.metrics.families(ctx.config.role.name(), &streams);
    let role = || vec![("role", ctx.config.role.name().to_string())];
    families.push(
        svc::metrics::Family::gauge(
            "relay_manager_term",
            "The highest stream manager term whose commands this relay accepted (0: none since it started).",
        )
        .with(role(), ctx.fence.term() as f64),
    );
    families.push(
        svc::metrics::Family::counter(
            "relay_manager_commands_refused_total",
            "Commands refused (409) for carrying a stream manager term older than one accepted before.",
        )
        .with(role(), ctx.fence.refused() as f64),
    );
    let mut sources = svc::metrics::Family::gauge("relay_sources", "Ingest sources of this origin by state.");
    for (state, n) in ctx.sources.counts() {
        let state = serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        sources.add(vec![("role", ctx.config.role.name().to_string()), ("state", state)], n as f64);
    }
    families.push(sources);
    // Redundant sources: switches per key and which role is live (1) on each key with sources attached.
    let mut switches = svc::metrics::Family::counter(
        "relay_source_switches_total",
        "Switches between a key's redundant sources (main, backup, slate) since its stream started.",
    );
    let mut live = svc::metrics::Family::gauge(
        "relay_source_live",
        "1 for the source role a key forwards now; 0 for its other attached sources.",
    );
    for st in ctx.hub.all() {
        let k = st.lanes();
        if k.lanes.is_empty() {
            continue;
        }
        let labels =
            || vec![("role", ctx.config.role.name().to_string()), ("app", st.app.clone()), ("key", st.name.clone())];
        switches.add(labels(), k.switches as f64);
        for l in &k.lanes {
            let mut lb = labels();
            lb.push(("source", l.role.clone()));
            live.add(lb, if l.live { 1.0 } else { 0.0 });
        }
    }
    let mut live_secs = svc::metrics::Family::counter(
        "relay_source_live_seconds_total",
        "Seconds each source role of a key has been the live one since its stream started.",
    );
    for st in ctx.hub.all() {
        for (role, d) in st.lanes().live_time {
            let labels = vec![
                ("role", ctx.config.role.name().to_string()),
                ("app", st.app.clone()),
                ("key", st.name.clone()),
                ("source", role),
            ];
            live_secs.add(labels, d.as_secs_f64());
        }
    }
    families.push(switches);
    families.push(live);
    families.push(live_secs);
    svc::http::metrics_text(svc::metrics::render(&families))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn status(State(ctx): Shared) -> Json<Status> {
    Json(status_of(&ctx))
}

/// Players connected now, every stream and protocol.
pub(crate) fn players(ctx: &Control) -> usize {
    stream_views(ctx).iter().map(|s| s.players).sum()
}

fn status_of(ctx: &Control) -> Status {
    let streams = stream_views(ctx);
    Status {
        name: ctx.config.manager.as_ref().map(|m| m.name.clone()),
        role: role_of(&ctx.config.role),
        maintenance: ctx.maintenance.load(std::sync::atomic::Ordering::Relaxed),
        players: streams.iter().map(|s| s.players).sum(),
        bitrate_out_kbps: streams.iter().map(|s| s.bitrate_out_kbps).sum(),
        bitrate_in_kbps: streams.iter().map(|s| s.bitrate_in_kbps).sum(),
        uptime_secs: ctx.started.elapsed().as_secs(),
        version: Some(svc::version::LONG.to_string()),
        origins: ctx.origins().iter().map(|o| o.to_string()).collect(),
        streams,
        manager_term: ctx.fence.term(),
    }
}

/// Edge only: replaces the origin list (all or nothing); pulls not on the new first origin of their app move to
/// it at once, and their players stay (the stream's timeline goes on across the switch).
async fn set_origins(State(ctx): Shared, body: axum::body::Bytes) -> Response {
    if ctx.edge.is_none() {
        return error(StatusCode::NOT_FOUND, "origins are an edge setting");
    }
    let parsed: OriginsBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"origins\": [\"rtmp://HOST:PORT/APP\", ...]}}: {e}"),
            )
        }
    };
    if parsed.origins.is_empty() {
        // An edge with no origin 404s every stream: an empty list is a mistake, not a way to drain (maintenance is).
        return error(
            StatusCode::BAD_REQUEST,
            "the origin list is empty: an edge needs at least one origin (use POST /maintenance to drain it)",
        );
    }
    let origins = match parsed.origins.iter().map(|u| crate::OriginUrl::parse(u)).collect::<Result<Vec<_>, _>>() {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let changed = ctx.origins() != origins;
    if changed {
        info!(origins = ?parsed.origins, "origin list replaced through the API");
        ctx.set_origins(origins);
    }
    Json(OriginsAnswer { origins: parsed.origins, changed }).into_response()
}

async fn sources(State(ctx): Shared) -> Json<SourcesList> {
    Json(SourcesList { sources: ctx.sources.views(&ctx.ingest) })
}

/// Origin only: ingest `url` into app/key (201 new, 200 replaced or the same); refused URLs change nothing.
async fn put_source(State(ctx): Shared, Path((app, key)): Path<(String, String)>, body: axum::body::Bytes) -> Response {
    let parsed: SourceBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"url\": \"rtmp://HOST[:PORT]/APP/KEY\"}} or {{\"sources\": [{{\"role\": \"main\", \"url\": ...}}, {{\"role\": \"backup\"}}]}}: {e}"),
            )
        }
    };
    use crate::source::{Put, SourceError};
    match ctx.sources.put(&ctx.ingest, &app, &key, &parsed) {
        Ok(how) => {
            let status = if how == Put::Created { StatusCode::CREATED } else { StatusCode::OK };
            if !parsed.sources.is_empty() {
                // A list of sources answers with the key's view (pushed roles have no pull to show).
                let mut r = key_sources(State(ctx.clone()), Path((app, key))).await;
                *r.status_mut() = status;
                return r;
            }
            let view = ctx.sources.views(&ctx.ingest).into_iter().find(|v| v.app == app && v.key == key);
            (status, Json(view)).into_response()
        }
        Err(e @ SourceError::NotOrigin) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// A key's redundant sources: configured and attached ones, in order of preference, and which one is live.
async fn key_sources(State(ctx): Shared, Path((app, key)): Path<(String, String)>) -> Response {
    let stream = ctx.hub.get(&app, &key);
    let configured = ctx.sources.order(&app, &key);
    let Some(k) = stream.as_ref().map(|s| s.lanes()) else {
        if configured.is_empty() {
            return error(StatusCode::NOT_FOUND, format!("no stream or sources for {app}/{key}"));
        }
        let d = crate::hub::SwitchSettings::default();
        let timings = ctx.sources.timings(&app, &key).unwrap_or((d.timeout, d.stable_for));
        let sources = configured.into_iter().map(|role| KeySourceView { role, ..Default::default() }).collect();
        return Json(KeySources {
            app,
            key,
            source_timeout_ms: timings.0.as_millis() as u64,
            source_stable_for_ms: timings.1.as_millis() as u64,
            sources,
            ..Default::default()
        })
        .into_response();
    };
    let mut sources: Vec<KeySourceView> = k
        .lanes
        .iter()
        .map(|l| KeySourceView {
            role: l.role.clone(),
            kind: Some(l.kind.to_string()),
            peer: Some(l.peer.clone()),
            live: l.live,
            healthy: l.healthy,
            idle_ms: l.idle_ms,
            frames: l.frames,
        })
        .collect();
    // Roles the key lists but nothing feeds now (an encoder down, a pull reconnecting).
    for role in k.settings.order.iter() {
        if !sources.iter().any(|s| &s.role == role) {
            sources.push(KeySourceView { role: role.clone(), ..Default::default() });
        }
    }
    let rank = |r: &str| k.settings.order.iter().position(|o| o == r).unwrap_or(usize::MAX);
    sources.sort_by_key(|s| rank(&s.role));
    Json(KeySources {
        app,
        key,
        live: k.live,
        forced: k.forced,
        switches: k.switches,
        last_switch: k.last_switch.map(|r| SwitchView {
            from: r.from,
            to: r.to,
            reason: r.reason.to_string(),
            secs_ago: r.at.elapsed().as_secs(),
        }),
        source_timeout_ms: k.settings.timeout.as_millis() as u64,
        source_stable_for_ms: k.settings.stable_for.as_millis() as u64,
        sources,
    })
    .into_response()
}

/// An operator's switch: `{"role": "backup"}` makes that source live now (from its warm GOP) and keeps it while it
/// delivers; `{"role": "auto"}` goes back to the order of preference.
async fn switch_source(
    State(ctx): Shared,
    Path((app, key)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let parsed: SwitchBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, format!("expected {{\"role\": \"backup\"}} (or \"auto\"): {e}"))
        }
    };
    if !matches!(ctx.config.role, Role::Origin { .. }) {
        return error(StatusCode::NOT_FOUND, "sources are an origin operation".to_string());
    }
    let Some(stream) = ctx.hub.get(&app, &key) else {
        return error(StatusCode::NOT_FOUND, format!("no stream {app}/{key} on this origin"));
    };
    let role = (parsed.role != "auto").then_some(parsed.role.as_str());
    match stream.force_source(role) {
        Ok(()) => {
            info!(app, key, role = %parsed.role, "source switched by the operator");
            key_sources(State(ctx), Path((app, key))).await
        }
        Err(e) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

async fn delete_source(State(ctx): Shared, Path((app, key)): Path<(String, String)>) -> Response {
    if ctx.sources.remove(&ctx.ingest, &app, &key) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no source for {app}/{key}"))
    }
}

/// Maintenance: new players are refused with a clear status (RTMP NetStream.Play.Failed, HTTP 503), players
/// already watching continue; `players` in the answer (and in /status) says when the node is empty.
async fn maintenance_on(State(ctx): Shared) -> Response {
    if !ctx.maintenance.swap(true, std::sync::atomic::Ordering::Relaxed) {
        info!("maintenance on: refusing new players");
    }
    Json(MaintenanceAnswer { maintenance: true, players: status_of(&ctx).players }).into_response()
}

async fn maintenance_off(State(ctx): Shared) -> Response {
    if ctx.maintenance.swap(false, std::sync::atomic::Ordering::Relaxed) {
        info!("maintenance off: accepting players");
    }
    Json(MaintenanceAnswer { maintenance: false, players: status_of(&ctx).players }).into_response()
}

/// What no route takes. Anything under /streams and /metrics is a resource this API has, so a request there is
/// the wrong method (405), e.g. GET on a pull; any other path is unknown (404), and so is a POST to /healthz.
async fn refused(uri: Uri) -> Response {
    let path = uri.path();
    if ["/metrics", "/streams", "/status", "/origins", "/maintenance"].contains(&path) || path.starts_with("/streams/")
    {
        error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else {
        error(StatusCode::NOT_FOUND, "not found")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, OriginUrl, Role};
    use std::net::SocketAddr;
    use svc::Shutdown;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves the API of a relay with `role` on a loopback port; the server stops when the Shutdown is dropped.
    async fn serve(role: Role) -> (SocketAddr, Arc<Control>, Shutdown) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (sd, st) = Shutdown::new();
        let ctx = crate::Parts::build(Config::new(role), st.clone()).control;
        tokio::spawn(svc::http::serve(l, router(ctx.clone()), st, "API"));
        (addr, ctx, sd)
    }

    /// (status, content type, body) of one request.
    async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).await.unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let ctype = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_string))
            .unwrap_or_default();
        (status, ctype, body.to_string())
    }

    fn json(body: &str) -> serde_json::Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
    }

    #[tokio::test]
    async fn origin_routes_statuses_and_bodies() {
        let (addr, ctx, _sd) = serve(Role::Origin { publish_token: None }).await;
        ctx.hub.get_or_create("live", "a\"b");
        let (code, ctype, body) = request(addr, "GET", "/streams?x=1").await;
        assert_eq!((code, ctype.as_str()), (200, "application/json"));
        let v = json(&body);
        assert_eq!(v["role"], "origin");
        assert_eq!(v["streams"][0]["key"], "a\"b");
        assert!(v["streams"][0]["source"].is_null());

        let (code, ctype, body) = request(addr, "GET", "/metrics").await;
        assert_eq!(code, 200);
        assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
        let m = svc::metrics::parse(&body).unwrap();
        assert_eq!(m["relay_streams"][0].1, 1.0);
        assert_eq!(m["relay_stream_players"][0].0[2], ("key".to_string(), "a\"b".to_string()));

        assert_eq!(request(addr, "GET", "/healthz").await.2, "ok\n");
        let (code, _, body) = request(addr, "POST", "/streams/live/a/pull").await;
        assert_eq!((code, json(&body)), (404, serde_json::json!({ "error": "pull is an edge operation" })));
        let not_allowed = serde_json::json!({ "error": "method not allowed" });
        for (method, path) in [
            ("POST", "/streams"),
            ("DELETE", "/streams"),
            ("GET", "/streams/live/a/pull"),
            ("GET", "/streams/live/a"),
            ("PUT", "/streams/x"),
            ("POST", "/metrics"),
        ] {
            let (code, ctype, body) = request(addr, method, path).await;
            assert_eq!(
                (code, ctype.as_str(), json(&body)),
                (405, "application/json", not_allowed.clone()),
                "{method} {path}"
            );
        }
        for (method, path) in [("GET", "/"), ("GET", "/nope"), ("POST", "/healthz"), ("GET", "/metricsx")] {
            let (code, _, body) = request(addr, method, path).await;
            assert_eq!((code, json(&body)), (404, serde_json::json!({ "error": "not found" })), "{method} {path}");
        }
    }

    #[tokio::test]
    async fn edge_pull_is_accepted_for_served_apps_only() {
        // Nothing listens on port 1: the pull keeps retrying in the background, which is all this test needs.
        let origins = vec![OriginUrl::parse("rtmp://127.0.0.1:1/live").unwrap()];
        let (addr, ctx, _sd) = serve(Role::Edge { origins }).await;
        let (code, _, body) = request(addr, "POST", "/streams/live/test/pull").await;
        assert_eq!(code, 202, "{body}");
        let held = ctx.config.idle_timeout.as_secs();
        assert_eq!(
            json(&body),
            serde_json::json!({ "app": "live", "key": "test", "pulling": true, "source": null, "held_for_secs": held })
        );
        assert!(ctx.hub.get("live", "test").is_some(), "the pull created the stream");
        let (code, _, body) = request(addr, "POST", "/streams/other/test/pull").await;
        assert_eq!((code, json(&body)), (404, serde_json::json!({ "error": "no --origin serves app \"other\"" })));
        assert_eq!(json(&request(addr, "GET", "/streams").await.2)["role"], "edge");
    }

    async fn send(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).await.unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        (head.split_whitespace().nth(1).unwrap().parse().unwrap(), json(body))
    }

    /// (status, body) of `method path` with `headers` (Host included) on a tokenless loopback API.
    async fn send_with(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).await.unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        let v = if body.is_empty() { serde_json::Value::Null } else { json(body) };
        (head.split_whitespace().nth(1).unwrap().parse().unwrap(), v)
    }

    #[tokio::test]
    async fn every_state_change_refuses_a_foreign_host_or_origin() {
        let (addr, ctx, _sd) = serve(Role::Origin { publish_token: None }).await;
        let source = r#"{"url": "rtmp://127.0.0.1:1/cam/x"}"#;
        let changes = [
            ("PUT", "/sources/live/x", source),
            ("DELETE", "/sources/live/x", ""),
            ("POST", "/maintenance", ""),
            ("DELETE", "/maintenance", ""),
            ("PUT", "/origins", r#"{"origins": ["rtmp://10.0.0.2/live"]}"#),
            ("POST", "/streams/live/x/pull", ""),
        ];
        let foreign = [
            (
                "Host: evil.example\r\n".to_string(),
                "a state-changing request needs a Host that is an IP address or localhost",
            ),
            (format!("Host: {addr}\r\nOrigin: http://evil.example\r\n"), "cross-origin request refused"),
        ];
        for (method, path, body) in changes {
            for (headers, why) in &foreign {
                let (code, v) = send_with(addr, method, path, headers, body).await;
                assert_eq!((code, v), (403, serde_json::json!({ "error": why })), "{method} {path} {headers:?}");
            }
        }
        assert!(ctx.sources.views(&ctx.ingest).is_empty(), "a refused PUT /sources started nothing");
        assert!(!ctx.maintenance.load(std::sync::atomic::Ordering::Relaxed));
        // Reads stay open to any Host, and the same changes pass from an operator's tool.
        assert_eq!(send_with(addr, "GET", "/status", "Host: evil.example\r\n", "").await.0, 200);
        let own = format!("Host: {addr}\r\nOrigin: http://{addr}\r\n");
        assert_eq!(send_with(addr, "PUT", "/sources/live/x", &own, source).await.0, 201);
        assert_eq!(send_with(addr, "DELETE", "/sources/live/x", &own, "").await.0, 204);
        assert_eq!(send_with(addr, "POST", "/maintenance", &own, "").await.0, 200);
        assert_eq!(send_with(addr, "DELETE", "/maintenance", &own, "").await.0, 200);
    }

    #[tokio::test]
    async fn a_manager_repoints_an_edge_and_puts_it_into_maintenance() {
        let origins = vec![OriginUrl::parse("rtmp://127.0.0.1:1/live").unwrap()];
        let (addr, ctx, _sd) = serve(Role::Edge { origins }).await;
        let (code, v) =
            send(addr, "PUT", "/origins", r#"{"origins": ["rtmp://10.0.0.2:1935/live", "rtmp://10.0.0.3/tv"]}"#).await;
        assert_eq!((code, v["changed"].as_bool()), (200, Some(true)));
        assert_eq!(ctx.origins_for("live")[0].host, "10.0.0.2");
        assert_eq!(ctx.origins_for("tv")[0].port, 1935);
        let (code, v) =
            send(addr, "PUT", "/origins", r#"{"origins": ["rtmp://10.0.0.2:1935/live", "rtmp://10.0.0.3/tv"]}"#).await;
        assert_eq!((code, v["changed"].as_bool()), (200, Some(false)), "the same list is no change");
        let gen = ctx.edge.as_ref().expect("an edge").origins_gen.load(std::sync::atomic::Ordering::Relaxed);
        let (code, v) = send(addr, "PUT", "/origins", r#"{"origins": []}"#).await;
        assert_eq!(code, 400, "{v}");
        assert_eq!(
            v,
            serde_json::json!({ "error":
                "the origin list is empty: an edge needs at least one origin (use POST /maintenance to drain it)" })
        );
        for bad in [r#"{"origins": ["http://x/live"]}"#, r#"{"origins": "rtmp://x/live"}"#, "nope"] {
            let (code, v) = send(addr, "PUT", "/origins", bad).await;
            assert_eq!(code, 400, "{bad}: {v}");
            assert!(v["error"].as_str().is_some(), "{v}");
        }
        assert_eq!(
            ctx.edge.as_ref().expect("an edge").origins_gen.load(std::sync::atomic::Ordering::Relaxed),
            gen,
            "a refused list changes nothing"
        );
        assert_eq!(ctx.origins_for("live")[0].host, "10.0.0.2");

        let (code, v) = send(addr, "POST", "/maintenance", "").await;
        assert_eq!((code, v), (200, serde_json::json!({ "maintenance": true, "players": 0 })));
        let (code, st) = send(addr, "GET", "/status", "").await;
        assert_eq!((code, st["maintenance"].as_bool(), st["role"].as_str()), (200, Some(true), Some("edge")));
        assert_eq!(st["origins"], serde_json::json!(["rtmp://10.0.0.2:1935/live", "rtmp://10.0.0.3:1935/tv"]));
        let ev = crate::callback::Event {
            action: "on_play",
            app: "live",
            stream: "x",
            client_addr: "127.0.0.1:5".into(),
            protocol: "rtmp",
            query: "",
            tc_url: None,
        };
        let refused = crate::egress::gate::open_play(&ctx.egress, ev).await.err().expect("refused in maintenance");
        assert_eq!((refused.http_status, refused.description), (503, "node in maintenance, try another"));
        let (code, v) = send(addr, "DELETE", "/maintenance", "").await;
        assert_eq!((code, v["maintenance"].as_bool()), (200, Some(false)));

        let (origin, octx, _sd2) = serve(Role::Origin { publish_token: None }).await;
        let (code, v) = send(origin, "PUT", "/origins", r#"{"origins": []}"#).await;
        assert_eq!((code, v), (404, serde_json::json!({ "error": "origins are an edge setting" })));
        assert!(!octx.maintenance.load(std::sync::atomic::Ordering::Relaxed));
    }
}
