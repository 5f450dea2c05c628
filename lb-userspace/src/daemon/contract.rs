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
    tokio::spawn(serve(listener, scrapes, Some((jobs, bearer)), Default::default(), st));
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

/// A request over `c` carrying manager `term`: (status, `{"error"}` or the answer's message).
async fn termed(c: &svc::client::Client, term: Option<u64>, req: &Request) -> (u16, String) {
    let c = match term {
        Some(t) => c.clone().with_header(api_types::manager::TERM_HEADER, t.to_string()),
        None => c.clone(),
    };
    let (code, body) = c.raw(Method::POST, "/requests", Some(req)).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let text = v.get("error").or_else(|| v.get("message")).and_then(|m| m.as_str()).unwrap_or_default();
    (code.as_u16(), text.to_string())
}

/// The manager-term fence on the real router and `Lb`: an AddReal of an older term than one accepted is refused
/// with 409 and never reaches lbd (the services read back unchanged); the term shows in /stats and /metrics.
#[tokio::test]
async fn an_older_manager_term_is_refused_and_not_applied() {
    let (jobs, rx) = mpsc::channel::<Job>(8);
    tokio::spawn(control(lb(), rx));
    let (scrapes, mut scrape_rx) = mpsc::channel::<Scrape>(1);
    // The control task's part of a scrape; the fence's families are the HTTP server's.
    tokio::spawn(async move {
        while let Some(s) = scrape_rx.recv().await {
            let _ = s.send("# HELP lbd_up Up.\n# TYPE lbd_up gauge\nlbd_up 1\n".into());
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_sd, st) = svc::Shutdown::new();
    let bearer = svc::auth::Bearer::token(TOKEN).unwrap();
    tokio::spawn(serve(listener, scrapes, Some((jobs, bearer)), Default::default(), st));
    let base = svc::client::BaseUrl::parse(&format!("http://{addr}/api/v1")).unwrap();
    let api = svc::client::Client::new(base, Some(TOKEN.into()), Duration::from_secs(5));
    let rtmp = ServiceKey::parse("10.0.0.100:1935", Proto::Tcp).unwrap();
    let add = |real: &str| Request::AddReal { service: rtmp, real: ip(real), weight: 1 };
    let reals = || async {
        let list: Vec<ServiceView> = api.get("/services").await.unwrap();
        list[1].reals.iter().map(|r| r.addr).collect::<Vec<_>>()
    };
    let metrics = || async {
        let plain = svc::client::Client::new(
            svc::client::BaseUrl::parse(&format!("http://{addr}")).unwrap(),
            None,
            Duration::from_secs(5),
        );
        let (_, text) = plain.raw(Method::GET, "/metrics", None::<&()>).await.unwrap();
        let parsed = svc::metrics::parse(&String::from_utf8_lossy(&text)).unwrap();
        (parsed["lbd_manager_term"][0].1, parsed["lbd_manager_commands_refused_total"][0].1, parsed["lbd_up"][0].1)
    };
    assert_eq!(reals().await, [ip("10.0.0.11")]);
    assert_eq!(metrics().await, (0.0, 0.0, 1.0));

    assert_eq!(termed(&api, Some(7), &add("10.0.0.12")).await.0, 200);
    let (code, why) = termed(&api, Some(6), &add("10.0.0.13")).await;
    assert_eq!(
        (code, why.as_str()),
        (409, "stale manager term 6: term 7 has acted here since (a newer smd leads); command refused")
    );
    assert_eq!(reals().await, [ip("10.0.0.11"), ip("10.0.0.12")], "the stale AddReal was applied");
    assert_eq!(metrics().await, (7.0, 1.0, 1.0));
    let stats: StatsView = round_trip(&api, Method::GET, "/stats", None).await;
    assert_eq!(stats.manager_term, Some(7));
    // A request without the header (lbctl's, an operator's curl) passes; the same term and a newer one too.
    assert_eq!(termed(&api, None, &add("10.0.0.13")).await.0, 200);
    assert_eq!(termed(&api, Some(7), &Request::Drain { service: rtmp, real: ip("10.0.0.12") }).await.0, 200);
    let (code, why) = termed(&api, Some(7), &add("10.0.0.13")).await;
    assert_eq!((code, why.contains("already")), (400, true), "lbd's own refusal still comes through: {why}");
    assert_eq!(reals().await, [ip("10.0.0.11"), ip("10.0.0.12"), ip("10.0.0.13")]);
    // A request without the token never moves the term, even with a newer one.
    let anonymous = svc::client::Client::new(api.base.clone(), None, Duration::from_secs(5));
    assert_eq!(termed(&anonymous, Some(99), &add("10.0.0.14")).await.0, 401);
    assert_eq!(metrics().await, (7.0, 1.0, 1.0));
}
