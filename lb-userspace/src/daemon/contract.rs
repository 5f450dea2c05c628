//! lbd's HTTP API against its contract without root: the real router (`http.rs`) and the real decisions and views
//! (`Lb` with in-memory maps instead of BPF maps, a census of an empty connection table) answer every JSON endpoint;
//! each answer is fetched with `svc::client`, parsed with its `api_types::lb` type, written back and compared with
//! the raw JSON, so a field lbd sends that the type lacks, or a renamed one, fails here. The unix socket writes the
//! same `Response` with the same serde_json, so its requests are covered by `POST /api/v1/requests`.

use super::control::Job;
use super::core::{Handled, Lb, Setup};
use super::http::{serve, Scrape};
use super::maps::MemMaps;
use super::takeover;
use crate::dataplane::conntable::Census;
use crate::dataplane::AttachMode;
use crate::events::EventLog;
use crate::health::CheckResult;
use crate::model::{CheckKind, CheckSpec, LbState, Proto, ServiceKey};
use crate::netinfo::Iface;
use api_types::lb::{Event, EventKind, Health, Request, Response, ServiceView, StatsView};
use axum::http::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::mpsc;

const TOKEN: &str = "0123456789abcdef-token";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An LB with a checked web service (one real up, one down after a failed check, one drained, one without a MAC)
/// and a persistent RTMP service, as lbd's control task holds it.
fn lb() -> Lb<MemMaps> {
    let web = ServiceKey::parse("10.0.0.100:80", Proto::Tcp).unwrap();
    let rtmp = ServiceKey::parse("10.0.0.100:1935", Proto::Tcp).unwrap();
    let mut st = LbState::default();
    st.add_service(web).unwrap();
    st.set_check(web, CheckSpec { kind: CheckKind::Http, path: "/health".into(), ..CheckSpec::default() }).unwrap();
    for r in ["10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14"] {
        st.add_real(web, ip(r), 2).unwrap();
    }
    st.set_drained(web, ip("10.0.0.13"), true).unwrap();
    st.add_service(rtmp).unwrap();
    st.set_persistence(rtmp, 300).unwrap();
    st.add_real(rtmp, ip("10.0.0.11"), 1).unwrap();
    let macs = [("10.0.0.11", 11u8), ("10.0.0.12", 12), ("10.0.0.13", 13)]
        .into_iter()
        .map(|(a, m)| (ip(a), [2, 0, 0, 0, 0, m]))
        .collect();
    let iface = Iface { name: "lb0".into(), index: 2, mac: [2, 0, 0, 0, 0, 1], nets: vec![(ip("10.0.0.1"), 24)] };
    let setup = Setup { iface, mode: AttachMode::Skb, manage_vips: false, events: EventLog::new(64), announce: None };
    let plan = takeover::plan(&takeover::Pinned::default(), &st, 4, 16);
    let mut lb = Lb::new(MemMaps::new(4), setup, &st, plan, &macs).unwrap();
    for (real, ok, detail) in [("10.0.0.11", true, "200"), ("10.0.0.12", false, "connect: Connection refused")] {
        let latency = Duration::from_millis(3);
        lb.on_check(CheckResult { service: web, real: ip(real), generation: 1, ok, latency, detail: detail.into() });
    }
    lb.take_effects();
    lb
}

/// lbd's control task, reduced to what answers requests: `handle`, then `list`/`stats` from a census.
async fn control(mut lb: Lb<MemMaps>, mut jobs: mpsc::Receiver<Job>) {
    let census = Census::default();
    while let Some((req, reply)) = jobs.recv().await {
        let r = match lb.handle(req) {
            Handled::Answer(r) => r,
            Handled::NeedsCensus(Request::List) => lb.list(&census),
            Handled::NeedsCensus(_) => lb.stats(&census),
            Handled::AwaitMac { .. } => Response::err("this test adds no real"),
        };
        lb.take_effects();
        let _ = reply.send(r);
    }
}

/// `method path` (with `body`), parsed as `T`; asserts that `T` written back is the JSON lbd sent.
async fn round_trip<T: Serialize + DeserializeOwned>(
    c: &svc::client::Client,
    method: Method,
    path: &str,
    body: Option<&Request>,
) -> T {
    let bytes = c.call(method.clone(), path, body).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let raw: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let typed: T = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{method} {path}: {e}: {raw}"));
    assert_eq!(serde_json::to_value(&typed).unwrap(), raw, "{method} {path}: the type does not hold what lbd sent");
    typed
}

#[tokio::test]
async fn every_endpoint_round_trips_through_its_contract_type() {
    let (jobs, rx) = mpsc::channel::<Job>(8);
    tokio::spawn(control(lb(), rx));
    let (scrapes, _scrapes) = mpsc::channel::<Scrape>(1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_sd, st) = svc::Shutdown::new();
    let bearer = svc::auth::Bearer::token(TOKEN).unwrap();
    tokio::spawn(serve(listener, scrapes, Some((jobs, bearer)), st));
    let base = svc::client::BaseUrl::parse(&format!("http://{addr}/api/v1")).unwrap();
    let api = svc::client::Client::new(base, Some(TOKEN.into()), Duration::from_secs(5));

    let list: Vec<ServiceView> = round_trip(&api, Method::GET, "/services", None).await;
    assert_eq!(list.len(), 2);
    let web = &list[0];
    assert_eq!((web.port, web.check.as_str(), web.usable_reals), (80, "http /health =200 3s/1s rise 2 fall 3", 1));
    let states: Vec<(&str, Health, Option<&str>)> =
        web.reals.iter().map(|r| (r.state.as_str(), r.health, r.last_check.as_deref())).collect();
    assert_eq!(
        states,
        [
            ("up", Health::Up, Some("200")),
            ("down", Health::Down, Some("connect: Connection refused")),
            ("drained", Health::Unknown, None),
            ("unresolved", Health::Unknown, None),
        ]
    );
    assert_eq!((web.reals[0].check_us, web.reals[3].mac.as_deref()), (Some(3000), None));
    assert_eq!((list[1].port, list[1].persistent), (1935, 300));
    let stats: StatsView = round_trip(&api, Method::GET, "/stats", None).await;
    assert_eq!((stats.iface.as_str(), stats.services, stats.reals, stats.sync), ("lb0", 2, 4, None));
    let events: Vec<Event> = round_trip(&api, Method::GET, "/events?last=100", None).await;
    assert!(events.iter().any(|e| e.kind == EventKind::RealUp && e.real == Some(ip("10.0.0.11"))), "{events:?}");

    // The requests of the socket and of POST /api/v1/requests, and their answers with a list, stats or events.
    let service = ServiceKey::parse("10.0.0.100:80", Proto::Tcp).unwrap();
    let drain = Request::Drain { service, real: ip("10.0.0.11") };
    let r: Response = round_trip(&api, Method::POST, "/requests", Some(&drain)).await;
    assert!(r.ok && r.list.is_none() && r.stats.is_none() && r.events.is_none(), "{r:?}");
    let r: Response = round_trip(&api, Method::POST, "/requests", Some(&Request::List)).await;
    assert_eq!(r.list.unwrap()[0].reals[0].state, "drained");
    let r: Response = round_trip(&api, Method::POST, "/requests", Some(&Request::Stats)).await;
    assert_eq!(r.stats.unwrap().services, 2);
    let r: Response = round_trip(&api, Method::POST, "/requests", Some(&Request::Events { last: Some(1) })).await;
    assert_eq!(r.events.unwrap()[0].kind, EventKind::RealDrained);
    // A refusal is the same answer with ok false (HTTP 400).
    let unknown = Request::Drain { service, real: ip("10.0.0.99") };
    let (code, body) = api.raw(Method::POST, "/requests", Some(&unknown)).await.unwrap();
    let r: Response = serde_json::from_slice(&body).unwrap();
    assert_eq!((code.as_u16(), r.ok), (400, false), "draining a real the service lacks: {r:?}");
    assert_eq!(serde_json::to_value(&r).unwrap(), serde_json::from_slice::<serde_json::Value>(&body).unwrap());
}
