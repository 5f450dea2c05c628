//! The relay's API against its contract: every endpoint a manager or an operator's tool reads is fetched from a
//! real relay (in-process, port 0) with `svc::client`, parsed with its `api_types::relay` type, written back and
//! compared with the raw JSON, so a field the relay sends that the type lacks, or a renamed one, fails here.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use api_types::relay::{
    MaintenanceAnswer, OriginsAnswer, OriginsBody, PullAnswer, RelayRole, SourceBody, SourceState, SourceView,
    SourcesList, Status, StreamsList,
};
use axum::http::Method;
use relay::{Config, Listeners, OriginUrl, Role};
use serde::de::DeserializeOwned;
use serde::Serialize;
use svc::client::{BaseUrl, Client};

/// Starts a relay with `role` in this process; its RTMP and API addresses, and what stops it.
async fn start(role: Role) -> (SocketAddr, SocketAddr, svc::Shutdown) {
    let rtmp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = (rtmp.local_addr().unwrap(), api.local_addr().unwrap());
    let (sd, mut st) = svc::Shutdown::new();
    let listeners = Listeners { rtmp, api: Some(api), http: None };
    tokio::spawn(async move { relay::run_on(listeners, Config::new(role), async move { st.wait().await }).await });
    (addrs.0, addrs.1, sd)
}

fn client(api: SocketAddr) -> Client {
    Client::new(BaseUrl::parse(&format!("http://{api}")).unwrap(), None, Duration::from_secs(5))
}

/// `method path` (with `body`), parsed as `T`; asserts that `T` written back is the JSON the relay sent.
async fn round_trip<T: Serialize + DeserializeOwned>(
    c: &Client,
    method: Method,
    path: &str,
    body: Option<&(impl Serialize + ?Sized)>,
) -> T {
    let bytes = c.call(method.clone(), path, body).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let raw: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let typed: T = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{method} {path}: {e}: {raw}"));
    assert_eq!(
        serde_json::to_value(&typed).unwrap(),
        raw,
        "{method} {path}: the type does not hold what the relay sent"
    );
    typed
}

/// Polls `f` until it gives a value, at most `limit`.
async fn wait_until<T>(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_round_trips_through_its_contract_type() {
    let dir = common::TempDir::new("contract");
    let (origin_rtmp, origin_api, _origin) = start(Role::Origin { publish_token: None }).await;
    let o = client(origin_api);
    let _feed = common::publish(&dir, &format!("rtmp://{origin_rtmp}/live/cam1"), &[]);

    // A pull source nothing answers: listed connecting or failed, with its error once failed.
    let body = SourceBody { url: "rtmp://127.0.0.1:1/cam/x?token=s3cret".into(), ..Default::default() };
    let put: SourceView = round_trip(&o, Method::PUT, "/sources/live/src1", Some(&body)).await;
    assert_eq!((put.app.as_str(), put.key.as_str(), put.url.as_str()), ("live", "src1", "rtmp://127.0.0.1:1/cam/x"));
    let failed = wait_until("the source to fail", Duration::from_secs(10), async || {
        let l: SourcesList = round_trip(&o, Method::GET, "/sources", None::<&()>).await;
        l.sources.into_iter().find(|s| s.state == SourceState::Failed)
    })
    .await;
    assert!(failed.error.is_some() && failed.failures >= 1, "{failed:?}");

    // The published stream with its source, in /streams and /status.
    let live = wait_until("live/cam1 to have a source", Duration::from_secs(15), async || {
        let l: StreamsList = round_trip(&o, Method::GET, "/streams", None::<&()>).await;
        assert_eq!(l.role, RelayRole::Origin);
        l.streams.into_iter().find(|s| s.key == "cam1" && s.source.is_some() && s.bitrate_in_kbps > 0)
    })
    .await;
    assert_eq!(live.source.as_ref().unwrap().kind, "publisher");
    // Its redundant sources: main (the publisher, live) with a backup role nothing feeds; an operator's switch.
    let k: api_types::relay::KeySources = round_trip(&o, Method::GET, "/sources/live/cam1", None::<&()>).await;
    assert_eq!((k.live.as_deref(), k.switches, k.source_timeout_ms), (Some("main"), 0, 1000));
    let roles: Vec<(&str, bool, Option<&str>)> =
        k.sources.iter().map(|s| (s.role.as_str(), s.live, s.kind.as_deref())).collect();
    assert_eq!(roles, vec![("main", true, Some("publisher")), ("backup", false, None)]);
    let auto = api_types::relay::SwitchBody { role: "auto".into() };
    let k: api_types::relay::KeySources = round_trip(&o, Method::POST, "/sources/live/cam1/switch", Some(&auto)).await;
    assert_eq!((k.live.as_deref(), k.forced.as_deref()), (Some("main"), None));
    let st: Status = round_trip(&o, Method::GET, "/status", None::<&()>).await;
    assert_eq!((st.role, st.maintenance, st.name.as_deref()), (RelayRole::Origin, false, None));
    assert!(st.streams.iter().any(|s| s.key == "cam1" && s.source.is_some()), "{st:?}");
    assert_eq!(st.bitrate_in_kbps, st.streams.iter().map(|s| s.bitrate_in_kbps).sum::<u64>());
    // The version it runs, as `--version` prints it after the name (a rolling upgrade is watched through it).
    let version = st.version.as_deref().unwrap();
    assert!(version.starts_with(&format!("{} (", env!("CARGO_PKG_VERSION"))) && version.ends_with(')'), "{version}");

    // An edge of that origin: a pre-pull, its origins, maintenance, and its /status while it pulls.
    let origin_url = OriginUrl::parse(&format!("rtmp://{origin_rtmp}/live")).unwrap();
    let (_edge_rtmp, edge_api, _edge) = start(Role::Edge { origins: vec![origin_url] }).await;
    let e = client(edge_api);
    let pull: PullAnswer = round_trip(&e, Method::POST, "/streams/live/cam1/pull", None::<&()>).await;
    assert_eq!((pull.app.as_str(), pull.key.as_str(), pull.pulling), ("live", "cam1", true));
    let pulled = wait_until("the edge to pull live/cam1", Duration::from_secs(15), async || {
        let st: Status = round_trip(&e, Method::GET, "/status", None::<&()>).await;
        st.streams.into_iter().find(|s| s.key == "cam1" && s.source.is_some())
    })
    .await;
    assert_eq!(pulled.source.unwrap().kind, "upstream");
    let list = OriginsBody { origins: vec![format!("rtmp://{origin_rtmp}/live"), "rtmp://10.0.0.3/tv".into()] };
    let a: OriginsAnswer = round_trip(&e, Method::PUT, "/origins", Some(&list)).await;
    assert_eq!((a.origins, a.changed), (list.origins.clone(), true));
    let m: MaintenanceAnswer = round_trip(&e, Method::POST, "/maintenance", None::<&()>).await;
    assert_eq!(m, MaintenanceAnswer { maintenance: true, players: 0 });
    let st: Status = round_trip(&e, Method::GET, "/status", None::<&()>).await;
    assert_eq!((st.role, st.maintenance), (RelayRole::Edge, true));
    assert_eq!(st.origins, vec![format!("rtmp://{origin_rtmp}/live"), "rtmp://10.0.0.3:1935/tv".to_string()]);
    let m: MaintenanceAnswer = round_trip(&e, Method::DELETE, "/maintenance", None::<&()>).await;
    assert_eq!(m, MaintenanceAnswer { maintenance: false, players: 0 });
}
