//! smd's API on the shared server over a real socket: HEAD like GET on the open pages, the bearer parser, the
//! forgery guard on state changes and JSON refusals from extractors.

use super::*;
use crate::cluster::tests::config;
use std::net::SocketAddr;
use svc::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "0123456789abcdef-token";

async fn serve() -> (SocketAddr, Shutdown) {
    let c = config("");
    let bearer = Bearer::token(&c.token).unwrap();
    let shared = Shared::new(
        Cluster::new(c, Default::default(), std::time::Instant::now()),
        crate::history::History::new(std::time::Duration::from_secs(10)),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (sd, st) = Shutdown::new();
    tokio::spawn(svc::http::serve(l, router(shared, bearer), st, "API"));
    (addr, sd)
}

/// (status, body) of `method path` with `headers`.
async fn send(addr: SocketAddr, method: &str, path: &str, headers: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).await.unwrap();
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), body.to_string())
}

#[tokio::test]
async fn head_auth_forgery_and_json_refusals() {
    let (addr, _sd) = serve().await;
    let host = format!("Host: {addr}\r\n");
    assert_eq!(send(addr, "GET", "/", &host).await.0, 200);
    assert_eq!(send(addr, "HEAD", "/", &host).await, (200, String::new()), "HEAD / is open like GET /");
    assert_eq!(send(addr, "HEAD", "/healthz", &host).await.0, 200);
    for auth in [format!("Bearer {TOKEN}"), format!("Bearer  {TOKEN}"), format!("bearer {TOKEN}")] {
        let h = format!("{host}Authorization: {auth}\r\n");
        assert_eq!(send(addr, "GET", "/api/v1/nodes", &h).await.0, 200, "{auth:?}");
    }
    let auth = format!("{host}Authorization: Bearer {TOKEN}\r\n");
    let (code, body) = send(addr, "GET", "/api/v1/events?last=abc", &auth).await;
    assert_eq!(code, 400);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    assert!(v["error"].as_str().unwrap().contains("last"), "{v}");
    let (code, body) = send(addr, "GET", "/api/v1/nodes/%ff", &auth).await;
    assert_eq!(code, 400);
    assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string(), "{body}");
    let evil = format!("Host: evil.example\r\nAuthorization: Bearer {TOKEN}\r\n");
    for (method, path) in
        [("POST", "/api/v1/nodes/e1/maintenance"), ("DELETE", "/api/v1/nodes/e1"), ("PUT", "/api/v1/nodes")]
    {
        let (code, body) = send(addr, method, path, &evil).await;
        assert_eq!(code, 403, "{method} {path}: {body}");
    }
}

/// `method path` (with `body`) over HTTP with `svc::client`, parsed as `T`; asserts that `T` written back is the
/// JSON the manager sent, so a field the API sends that its contract type lacks, or a renamed one, fails here.
async fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(
    c: &svc::client::Client,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> T {
    let bytes = c.call(method.clone(), path, body).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let raw: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let typed: T = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{method} {path}: {e}: {raw}"));
    assert_eq!(serde_json::to_value(&typed).unwrap(), raw, "{method} {path}: the type does not hold what smd sent");
    typed
}

#[tokio::test]
async fn every_endpoint_round_trips_through_its_contract_type() {
    use crate::cluster::tests::{ok_origin, CAMS};
    use crate::cluster::{NodeStatus, Observation, StreamStatus};
    use api_types::manager::{
        ActionAnswer, AlarmKind, Alarms, Event, GroupView, NodeState, NodeView, PoolSummary, Registered, StreamSummary,
    };
    use api_types::relay::SourceInfo;

    // A cluster with something in every answer: an active origin ingesting a stream, an edge playing it, an edge
    // down (an alarm), events.
    let c = crate::cluster::tests::config(&CAMS.replace("FAILBACK", "true"));
    let bearer = Bearer::token(&c.token).unwrap();
    let t0 = std::time::Instant::now();
    let mut cluster = Cluster::new(c, Default::default(), t0);
    cluster.observe("o1", ok_origin(&[("live", "cam1")]), t0);
    cluster.observe("o2", ok_origin(&[]), t0);
    let playing = StreamStatus {
        app: "live".into(),
        key: "cam1".into(),
        source: Some(SourceInfo { kind: "upstream".into(), peer: "rtmp://10.0.0.11:1935/live".into() }),
        players: 3,
        bitrate_out_kbps: 6000,
        ..Default::default()
    };
    let edge = NodeStatus { players: 3, bitrate_out_kbps: 6000, streams: vec![playing], ..Default::default() };
    cluster.observe("e1", Observation::Ok { status: edge, sources: None }, t0);
    cluster.observe("e2", Observation::Failed("connection refused".into()), t0);
    cluster.plan(t0);
    let later = t0 + std::time::Duration::from_secs(4);
    cluster.observe("e2", Observation::Failed("connection refused".into()), later);
    cluster.plan(later);
    let shared = Shared::new(cluster, crate::history::History::new(std::time::Duration::from_secs(10)));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (_sd, st) = Shutdown::new();
    tokio::spawn(svc::http::serve(l, router(shared, bearer), st, "API"));
    let base = svc::client::BaseUrl::parse(&format!("http://{addr}/api/v1")).unwrap();
    let api = svc::client::Client::new(base, Some(TOKEN.into()), std::time::Duration::from_secs(5));

    let nodes: Vec<NodeView> = round_trip(&api, Method::GET, "/nodes", None).await;
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["e1", "e2", "o1", "o2", "o3"]);
    let o1: NodeView = round_trip(&api, Method::GET, "/nodes/o1", None).await;
    assert_eq!((o1.state, o1.active_in.clone()), (NodeState::Up, vec!["cams".to_string()]));
    let e1 = nodes.iter().find(|n| n.name == "e1").unwrap();
    assert_eq!((e1.players, e1.bitrate_out_kbps, e1.pool.as_deref()), (3, 6000, Some("edges")));
    let groups: Vec<GroupView> = round_trip(&api, Method::GET, "/groups", None).await;
    assert_eq!((groups[0].active.as_deref(), groups[0].sources[0].ingesting), (Some("o1"), true));
    let pools: Vec<PoolSummary> = round_trip(&api, Method::GET, "/pools", None).await;
    assert_eq!((pools[0].in_service, pools[0].down, pools[0].players), (1, 1, 3));
    let streams: Vec<StreamSummary> = round_trip(&api, Method::GET, "/streams", None).await;
    assert_eq!(
        (streams[0].ingest.as_deref(), streams[0].edges.clone(), streams[0].bitrate_out_kbps),
        (Some("o1"), vec!["e1".to_string()], 6000)
    );
    let events: Vec<Event> = round_trip(&api, Method::GET, "/events?last=50", None).await;
    assert!(!events.is_empty() && events.windows(2).all(|w| w[0].seq > w[1].seq), "newest first: {events:?}");
    let alarms: Alarms = round_trip(&api, Method::GET, "/alarms", None).await;
    assert!(alarms.raised.iter().any(|a| a.kind == AlarmKind::NodeDown && a.subject == "e2"), "{alarms:?}");

    let m: ActionAnswer = round_trip(&api, Method::POST, "/nodes/e1/maintenance", None).await;
    assert_eq!((m.node.as_deref(), m.state), (Some("e1"), Some(NodeState::Draining)));
    let r: ActionAnswer = round_trip(&api, Method::POST, "/nodes/e1/resume", None).await;
    assert_eq!((r.node.as_deref(), r.state), (Some("e1"), Some(NodeState::Up)));
    let spec =
        serde_json::json!({ "name": "e3", "role": "edge", "api": "http://10.0.0.23:8081", "rtmp": "10.0.0.23:1935" });
    let reg: Registered = round_trip(&api, Method::POST, "/nodes", Some(&spec)).await;
    assert_eq!(reg, Registered { registered: true, changed: true });
}

#[tokio::test]
async fn switch_source_is_refused_with_the_reason_when_nothing_can_take_it() {
    use crate::cluster::tests::CAMS;
    let c = crate::cluster::tests::config(&CAMS.replace("FAILBACK", "false"));
    let bearer = Bearer::token(&c.token).unwrap();
    let t0 = std::time::Instant::now();
    let cluster = Cluster::new(c, Default::default(), t0);
    let shared = Shared::new(cluster, crate::history::History::new(std::time::Duration::from_secs(10)));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (_sd, st) = Shutdown::new();
    tokio::spawn(svc::http::serve(l, router(shared, bearer), st, "API"));
    let base = svc::client::BaseUrl::parse(&format!("http://{addr}/api/v1")).unwrap();
    let api = svc::client::Client::new(base, Some(TOKEN.into()), std::time::Duration::from_secs(10));
    let body = api_types::manager::SwitchSourceBody { role: "backup".into() };
    let refused = |r: Result<serde_json::Value, svc::client::ClientError>| match r {
        Err(svc::client::ClientError::Status { status, message, .. }) => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    };
    // An app no group serves.
    let (status, why) = refused(api.send(Method::POST, "/sources/other/cam1/switch", &body).await);
    assert_eq!(status, 404);
    assert!(why.contains("no origin group serves app \"other\""), "{why}");
    // The group has no active member yet (nothing observed).
    let (status, why) = refused(api.send(Method::POST, "/sources/live/cam1/switch", &body).await);
    assert_eq!(status, 409);
    assert!(why.contains("group cams has no active member now"), "{why}");
    // A malformed body.
    let (code, body) = send(
        addr,
        "POST",
        "/api/v1/sources/live/cam1/switch",
        &format!("Host: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n"),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("expected {\\\"role\\\": \\\"backup\\\"}"), "{body}");
}
