//! The manager's HTTP API under `/api/v1/` (bearer token) on `svc::http`: nodes and their registration,
//! maintenance, groups, streams, events, alarms; `/metrics` (same token) and `/healthz` (open, for probes).

use std::sync::Arc;

use api_types::manager::{
    ActionAnswer, Alarms, GroupSourceView, GroupView, HandoverView, MemberView, NodeRole, NodeState, NodeView,
    Registered, Replication,
};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use svc::auth::Bearer;
use svc::http::error;

use crate::cluster::{Cluster, NodeRt};
use crate::config::{NodeSpec, Role};
use crate::driver::Shared;

#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    bearer: Bearer,
}

pub fn router(shared: Arc<Shared>, bearer: Bearer) -> Router {
    let ctx = Ctx { shared, bearer };
    Router::new()
        .route("/api/v1/nodes", get(nodes).post(register))
        .route("/api/v1/nodes/{name}", get(node).delete(remove_node))
        .route("/api/v1/nodes/{name}/changed", post(changed))
        .route("/api/v1/nodes/{name}/maintenance", post(maintenance_on))
        .route("/api/v1/nodes/{name}/resume", post(maintenance_off))
        .route("/api/v1/groups", get(groups))
        .route("/api/v1/pools", get(pools))
        .route("/api/v1/pools/{pool}/start", post(pool_start))
        .route("/api/v1/pools/{pool}/stop/{name}", post(pool_stop))
        .route("/api/v1/streams", get(streams))
        .route("/api/v1/sources/{app}/{key}/switch", post(switch_source))
        .route("/api/v1/events", get(events))
        .route("/api/v1/alarms", get(alarms))
        .route("/api/v1/leader", get(leader))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(console))
        .route("/console/seq", get(console_seq))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .layer(middleware::from_fn_with_state(ctx.clone(), guard))
        .with_state(ctx)
}

/// The token on everything but /healthz (GET or HEAD); for every state-changing method also a Host that is an address and no foreign Origin, so a
/// web page in an operator's browser cannot put a node into maintenance.
async fn guard(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    // The console page and its change counter are read-only views: open, like a status page.
    let read = req.method() == Method::GET || req.method() == Method::HEAD;
    let open = matches!(req.uri().path(), "/healthz" | "/" | "/console/seq") && read;
    if !open && !ctx.bearer.allows(req.headers()) {
        return svc::auth::unauthorized();
    }
    if let Some(why) = svc::auth::forged_change(req.method(), req.headers()) {
        return error(StatusCode::FORBIDDEN, why);
    }
    if !read && req.uri().path().starts_with("/api/v1/") && ctx.shared.acting().is_none() {
        return forward(&ctx, req).await;
    }
    next.run(req).await
}

/// Marks a request one smd forwarded to another, so a request never goes round between two that both think the
/// other leads.
const FORWARDED: &str = "x-smd-forwarded-by";

/// A write sent to a follower: forwarded to the leader as it came (token, path, body), its answer returned as the
/// leader gave it. With no leader (an election in progress, etcd unreachable): 503, to be retried.
async fn forward(ctx: &Ctx, req: Request) -> Response {
    let (me, leader) = {
        let l = ctx.shared.lead();
        (l.me.name.clone(), l.leader_now().cloned().filter(|m| m.name != l.me.name))
    };
    let no_leader = |why: String| {
        let mut r = error(StatusCode::SERVICE_UNAVAILABLE, why);
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("2"));
        r
    };
    let Some(leader) = leader else {
        return no_leader(format!(
            "no smd leads right now ({me} follows; an election is in progress or etcd is unreachable): retry in a \
             few seconds"
        ));
    };
    if req.headers().contains_key(FORWARDED) {
        return no_leader(format!("{me} does not lead either (the leader is changing): retry in a few seconds"));
    }
    let method = req.method().clone();
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    let body = match axum::body::to_bytes(req.into_body(), 1 << 20).await {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("request body: {e}")),
    };
    let json: Option<serde_json::Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("request body is not JSON: {e}")),
        }
    };
    let base = match svc::client::BaseUrl::parse(&leader.api) {
        Ok(b) => b,
        Err(e) => return no_leader(format!("the leader {} advertises an API smd cannot use: {e}", leader.name)),
    };
    let token = ctx.shared.lock().config.token.clone();
    let client = svc::client::Client::new(base, Some(token), std::time::Duration::from_secs(10))
        .with_header(FORWARDED, me.clone());
    match client.raw(method, &path, json.as_ref()).await {
        Ok((status, bytes)) => {
            let mut r = (status, bytes).into_response();
            r.headers_mut()
                .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => no_leader(format!("{me} forwards writes to the leader {}, which did not answer: {e}", leader.name)),
    }
}

/// `GET /api/v1/leader`: who leads, as this smd sees it.
async fn leader(State(ctx): State<Ctx>) -> Json<api_types::manager::LeaderView> {
    Json(ctx.shared.lead().view())
}

/// A node's role as the API answers it.
fn role_of(r: Role) -> NodeRole {
    match r {
        Role::Origin => NodeRole::Origin,
        Role::Edge => NodeRole::Edge,
    }
}

fn replication_of(r: crate::config::Replication) -> Replication {
    match r {
        crate::config::Replication::PrePull => Replication::PrePull,
        crate::config::Replication::OnDemand => Replication::OnDemand,
    }
}

fn node_view(c: &Cluster, n: &NodeRt) -> NodeView {
    let groups =
        c.config.groups.iter().filter(|g| g.priority_of(&n.spec.name).is_some()).map(|g| g.name.clone()).collect();
    let active_in =
        c.groups.iter().filter(|(_, r)| r.active.as_deref() == Some(&n.spec.name)).map(|(g, _)| g.clone()).collect();
    let st = n.status.as_ref();
    NodeView {
        name: n.spec.name.clone(),
        role: role_of(n.spec.role),
        state: n.node_state(),
        health: n.health,
        api: n.spec.api.clone(),
        rtmp: n.spec.rtmp.to_string(),
        pool: if n.spec.role == Role::Edge { c.config.pool_of(&n.spec) } else { None },
        groups,
        active_in,
        streams: st.map_or(0, |s| s.streams.len()),
        players: st.map_or(0, |s| s.players),
        bitrate_out_kbps: st.map_or(0, |s| s.bitrate_out_kbps),
        maintenance_since: n.maintenance.as_ref().map(|m| m.since),
        last_seen: n.last_seen_unix,
        last_error: n.last_error.clone(),
        registered: !n.from_config,
        version: st.and_then(|s| s.version.clone()),
    }
}

async fn nodes(State(ctx): State<Ctx>) -> Json<Vec<NodeView>> {
    let c = ctx.shared.lock();
    Json(c.nodes.values().map(|n| node_view(&c, n)).collect())
}

async fn node(State(ctx): State<Ctx>, Path(name): Path<String>) -> Response {
    let c = ctx.shared.lock();
    match c.nodes.get(&name) {
        Some(n) => Json(node_view(&c, n)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("unknown node {name:?}")),
    }
}

async fn register(State(ctx): State<Ctx>, body: axum::body::Bytes) -> Response {
    let r: api_types::manager::Registration = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, format!("expected {{name, role, api, rtmp[, http, pool]}}: {e}"))
        }
    };
    let role = match r.role {
        NodeRole::Origin => Role::Origin,
        NodeRole::Edge => Role::Edge,
    };
    let spec = NodeSpec { name: r.name, role, api: r.api, rtmp: r.rtmp, http: r.http, pool: r.pool };
    let r = ctx.shared.lock().register(spec);
    match r {
        Ok(changed) => {
            ctx.shared.wake.notify_one();
            Json(Registered { registered: true, changed }).into_response()
        }
        // The cap is not the client's mistake in the request: a conflict with the manager's state.
        Err(e) if e.starts_with("registration refused") => error(StatusCode::CONFLICT, e),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// `DELETE /api/v1/nodes/NAME`: forgets a self-registered edge that is out of service (see Cluster::remove_node).
async fn remove_node(State(ctx): State<Ctx>, Path(name): Path<String>) -> Response {
    let r = ctx.shared.lock().remove_node(&name);
    let msg = match r {
        Ok(m) => m,
        Err(crate::cluster::RemoveError::Unknown(e)) => return error(StatusCode::NOT_FOUND, e),
        Err(crate::cluster::RemoveError::Refused(e)) => return error(StatusCode::CONFLICT, e),
    };
    let saved = crate::driver::save(&ctx.shared).await;
    ctx.shared.wake.notify_one();
    let done =
        ActionAnswer { node: Some(name), pool: None, message: msg, state: None, removed: Some(true), error: None };
    match saved {
        Ok(()) => Json(done).into_response(),
        Err(why) => unsaved(done, &why),
    }
}

/// A node says its streams changed (a publish, an ingest): read it now.
async fn changed(State(ctx): State<Ctx>, Path(name): Path<String>) -> Response {
    if !ctx.shared.lock().nodes.contains_key(&name) {
        return error(StatusCode::NOT_FOUND, format!("unknown node {name:?}"));
    }
    ctx.shared.wake.notify_one();
    StatusCode::NO_CONTENT.into_response()
}

async fn maintenance_on(State(ctx): State<Ctx>, Path(name): Path<String>) -> Response {
    set_maintenance(&ctx, &name, true).await
}

async fn maintenance_off(State(ctx): State<Ctx>, Path(name): Path<String>) -> Response {
    set_maintenance(&ctx, &name, false).await
}

async fn set_maintenance(ctx: &Ctx, name: &str, on: bool) -> Response {
    let (msg, state) = {
        let mut c = ctx.shared.lock();
        let msg = match c.maintenance(name, on) {
            Ok(msg) => msg,
            Err(e) => return error(StatusCode::NOT_FOUND, e),
        };
        (msg, c.nodes.get(name).map(NodeRt::node_state))
    };
    // Written now, not at the next keepalive, so the answer can say whether a restart would keep it.
    let saved = crate::driver::save(&ctx.shared).await;
    ctx.shared.wake.notify_one();
    let done = ActionAnswer {
        node: Some(name.to_string()),
        pool: None,
        message: msg.to_string(),
        state,
        removed: None,
        error: None,
    };
    match saved {
        Ok(()) => Json(done).into_response(),
        Err(why) => unsaved(done, &why),
    }
}

/// An operator action that took effect but could not be written to the state file: 500 with the JSON error
/// shape (so clients fail loudly) and what did happen.
fn unsaved(mut done: ActionAnswer, why: &str) -> Response {
    done.error = Some(format!("{}, but it is not saved: {why}", done.message));
    (StatusCode::INTERNAL_SERVER_ERROR, Json(done)).into_response()
}

async fn pool_start(State(ctx): State<Ctx>, Path(pool): Path<String>) -> Response {
    let r = ctx.shared.lock().manual_start(&pool);
    match r {
        Ok(msg) => {
            let saved = crate::driver::save(&ctx.shared).await;
            ctx.shared.wake.notify_one();
            let done =
                ActionAnswer { node: None, pool: Some(pool), message: msg, state: None, removed: None, error: None };
            match saved {
                Ok(()) => Json(done).into_response(),
                Err(why) => unsaved(done, &why),
            }
        }
        Err(e) if e.starts_with("unknown pool") => error(StatusCode::NOT_FOUND, e),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

async fn pool_stop(State(ctx): State<Ctx>, Path((pool, name)): Path<(String, String)>) -> Response {
    let r = ctx.shared.lock().manual_stop(&pool, &name);
    match r {
        Ok(msg) => {
            let saved = crate::driver::save(&ctx.shared).await;
            ctx.shared.wake.notify_one();
            let done = ActionAnswer {
                node: Some(name),
                pool: Some(pool),
                message: msg,
                state: None,
                removed: None,
                error: None,
            };
            match saved {
                Ok(()) => Json(done).into_response(),
                Err(why) => unsaved(done, &why),
            }
        }
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

async fn pools(State(ctx): State<Ctx>) -> Json<Vec<crate::cluster::PoolSummary>> {
    Json(ctx.shared.lock().pools())
}

async fn groups(State(ctx): State<Ctx>) -> Json<Vec<GroupView>> {
    let c = ctx.shared.lock();
    let v = c
        .config
        .groups
        .iter()
        .map(|g| {
            let rt = &c.groups[&g.name];
            let active_node = rt.active.as_ref().and_then(|a| c.nodes.get(a));
            let have = active_node.map(|n| n.ingesting(&g.app)).unwrap_or_default();
            GroupView {
                name: g.name.clone(),
                app: g.app.clone(),
                failback: g.failback,
                replication: replication_of(g.replication),
                active: rt.active.clone(),
                active_since: rt.active_since_unix,
                handover: rt.handover.as_ref().map(|h| HandoverView { to: h.to.clone(), reason: h.reason.to_string() }),
                failovers: rt.failovers,
                members: g
                    .by_priority()
                    .iter()
                    .map(|m| MemberView {
                        node: m.node.clone(),
                        priority: m.priority,
                        state: c.nodes.get(&m.node).map_or(NodeState::Unknown, NodeRt::node_state),
                        active: rt.active.as_deref() == Some(m.node.as_str()),
                    })
                    .collect(),
                sources: g
                    .source_keys()
                    .iter()
                    .flat_map(|k| g.key_sources(k))
                    .map(|(role, s)| {
                        // What the active member said of this source at its last keepalive.
                        let seen = active_node.and_then(|n| n.sources.as_ref()).and_then(|v| {
                            v.iter().find(|x| x.app == g.app && x.key == s.key && (x.role == role || x.role.is_empty()))
                        });
                        GroupSourceView {
                            key: s.key.clone(),
                            url: crate::config::redact(&s.url),
                            ingesting: have.contains(&s.key),
                            live: seen.is_some_and(|x| x.live),
                            healthy: seen.is_some_and(|x| x.state == api_types::relay::SourceState::Ingesting),
                            role,
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    Json(v)
}

/// `smctl switch-source APP/KEY ROLE`: the active origin of the app's group makes `role` live (or `auto`).
async fn switch_source(
    State(ctx): State<Ctx>,
    Path((app, key)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let parsed: api_types::manager::SwitchSourceBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, format!("expected {{\"role\": \"backup\"}} (or \"auto\"): {e}"))
        }
    };
    match crate::driver::switch_source(&ctx.shared, &app, &key, &parsed.role).await {
        Ok(v) => {
            ctx.shared.lock().log.event(
                crate::events::EventKind::SourceSwitched,
                &format!("{app}/{key}"),
                format!("operator asked for source {} of {app}/{key}", parsed.role),
            );
            Json(v).into_response()
        }
        Err((status, why)) => error(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), why),
    }
}

async fn streams(State(ctx): State<Ctx>) -> Json<Vec<crate::cluster::StreamSummary>> {
    Json(ctx.shared.lock().streams())
}

#[derive(Deserialize)]
struct EventsQuery {
    last: Option<usize>,
    kind: Option<String>,
    subject: Option<String>,
}

async fn events(State(ctx): State<Ctx>, Query(q): Query<EventsQuery>) -> Response {
    let c = ctx.shared.lock();
    Json(c.log.events(q.last.unwrap_or(usize::MAX), q.kind.as_deref(), q.subject.as_deref())).into_response()
}

async fn alarms(State(ctx): State<Ctx>) -> Json<Alarms> {
    let (raised, cleared) = ctx.shared.lock().log.alarms();
    Json(Alarms { raised, cleared })
}

/// The console page, rendered at most once per keepalive for each view (it is open to anyone: reloads and many
/// open tabs must not cost a render each).
async fn console(State(ctx): State<Ctx>, Query(view): Query<crate::console::View>) -> Response {
    let page = {
        let c = ctx.shared.lock();
        let key = (view.key(), c.log.events(1, None, None).first().map_or(0, |e| e.seq));
        let fresh = c.config.keepalive;
        let mut cache = ctx.shared.console_cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, (at, _)| at.elapsed() < fresh);
        match cache.get(&key) {
            Some((_, page)) => page.clone(),
            None => {
                let h = ctx.shared.history();
                let lead = ctx.shared.lead().view();
                let page = std::sync::Arc::new(crate::console::render_with(
                    &c,
                    &h,
                    &view,
                    c.config.console_refresh,
                    Some(&lead),
                ));
                if cache.len() < 64 {
                    cache.insert(key, (std::time::Instant::now(), page.clone()));
                }
                page
            }
        }
    };
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        page.as_str().to_string(),
    )
        .into_response()
}

/// The newest event's number: the console reloads when it changes.
async fn console_seq(State(ctx): State<Ctx>) -> String {
    let c = ctx.shared.lock();
    format!("{}\n", c.log.events(1, None, None).first().map_or(0, |e| e.seq))
}

async fn metrics(State(ctx): State<Ctx>, _h: HeaderMap) -> Response {
    let mut text = crate::metrics::render(&ctx.shared.lock());
    text.push_str(&crate::metrics::leadership(&ctx.shared.lead()));
    svc::http::metrics_text(text)
}

#[cfg(test)]
mod tests;
