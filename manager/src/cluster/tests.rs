//! The decisions with made-up nodes and times: failover, N+2 and a shared standby, failback make-before-break,
//! a restart that moves nothing, edge maintenance through the LB.

use super::*;
use api_types::lb::{CountersView, Health as LbHealth, Proto, RealView, ServiceView};

const SECS: fn(u64) -> Duration = Duration::from_secs;

pub(crate) fn config(extra: &str) -> Config {
    try_config(extra).unwrap()
}

/// The test cluster's config with `extra`, or why it is refused.
pub(crate) fn try_config(extra: &str) -> Result<Config, crate::config::ConfigError> {
    let dir = std::env::temp_dir().join(format!("sm-cluster-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), "0123456789abcdef-token\n").unwrap();
    let text = format!(
        r#"
listen = "127.0.0.1:0"
token_file = "token"
keepalive = "1s"
failover_time = "3s"
drain_timeout = "60s"
[lb]
api = "http://10.0.0.1:9400"
services = ["10.0.0.100:1935"]
[[pool]]
name = "edges"
min = 2
[[node]]
name = "o1"
role = "origin"
api = "http://10.0.0.11:8081"
rtmp = "10.0.0.11:1935"
[[node]]
name = "o2"
role = "origin"
api = "http://10.0.0.12:8081"
rtmp = "10.0.0.12:1935"
[[node]]
name = "o3"
role = "origin"
api = "http://10.0.0.13:8081"
rtmp = "10.0.0.13:1935"
[[node]]
name = "e1"
role = "edge"
api = "http://10.0.0.21:8081"
rtmp = "10.0.0.21:1935"
[[node]]
name = "e2"
role = "edge"
api = "http://10.0.0.22:8081"
rtmp = "10.0.0.22:1935"
{extra}
"#
    );
    let c = Config::parse(&text, &dir.join("m.toml"));
    let _ = std::fs::remove_dir_all(&dir);
    c
}

pub(crate) const CAMS: &str = r#"
[[group]]
name = "cams"
app = "live"
failback = FAILBACK
members = [{ node = "o1", priority = 100 }, { node = "o2", priority = 50 }]
sources = [{ key = "cam1", url = "rtsp://10.0.0.50/cam" }]
"#;

pub(crate) fn ok_origin(sources: &[(&str, &str)]) -> Observation {
    Observation::Ok {
        status: NodeStatus {
            streams: sources
                .iter()
                .map(|(app, key)| StreamStatus {
                    app: app.to_string(),
                    key: key.to_string(),
                    source: Some(SourceStatus { kind: "pull-rtsp".into(), peer: "x".into() }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        },
        sources: Some(
            sources
                .iter()
                .map(|(app, key)| OriginSource {
                    app: app.to_string(),
                    key: key.to_string(),
                    url: "rtsp://10.0.0.50/cam".into(),
                    state: api_types::relay::SourceState::Ingesting,
                    ..Default::default()
                })
                .collect(),
        ),
    }
}

fn ok_edge(origins: Vec<String>, players: usize) -> Observation {
    Observation::Ok { status: NodeStatus { origins, players, ..Default::default() }, sources: None }
}

fn failed() -> Observation {
    Observation::Failed("connection refused".into())
}

fn active(c: &Cluster, g: &str) -> Option<String> {
    c.groups[g].active.clone()
}

#[test]
fn n_plus_1_failover_after_failover_time_and_failback_make_before_break() {
    let t0 = Instant::now();
    let mut c = Cluster::new(config(&CAMS.replace("FAILBACK", "true")), Persisted::default(), t0);
    for n in ["o1", "o2"] {
        c.observe(n, ok_origin(&[]), t0);
    }
    let a = c.plan(t0);
    assert_eq!(active(&c, "cams").as_deref(), Some("o1"), "the highest priority is active once all are known");
    assert!(
        a.contains(&Action::PutSource {
            node: "o1".into(),
            app: "live".into(),
            key: "cam1".into(),
            body: api_types::relay::SourceBody { url: "rtsp://10.0.0.50/cam".into(), ..Default::default() }
        }),
        "{a:?}"
    );
    assert!(!a.iter().any(|x| matches!(x, Action::PutSource { node, .. } if node == "o2")));

    // o1 ingests; then it stops answering. Nothing moves before failover_time.
    c.observe("o1", ok_origin(&[("live", "cam1")]), t0 + SECS(1));
    c.observe("o2", ok_origin(&[]), t0 + SECS(1));
    c.plan(t0 + SECS(1));
    c.observe("o1", failed(), t0 + SECS(3));
    c.plan(t0 + SECS(3));
    assert_eq!(active(&c, "cams").as_deref(), Some("o1"));
    c.observe("o1", failed(), t0 + SECS(4));
    c.observe("o2", ok_origin(&[]), t0 + SECS(4));
    let a = c.plan(t0 + SECS(4));
    assert_eq!(active(&c, "cams").as_deref(), Some("o2"), "3 s after the last answer o2 takes the group");
    assert!(a.iter().any(|x| matches!(x, Action::PutSource { node, .. } if node == "o2")), "{a:?}");
    assert_eq!(c.groups["cams"].failovers, 1);
    assert!(c.log.is_raised(AlarmKind::NodeDown, "o1"));
    assert!(c.log.events(10, Some("failover"), None)[0].message.contains("o1 is down: o2 takes the group"));

    // o1 returns (without its sources: its relay restarted). Failback: o1 ingests first, o2 keeps its source.
    c.observe("o1", ok_origin(&[]), t0 + SECS(10));
    c.observe("o2", ok_origin(&[("live", "cam1")]), t0 + SECS(10));
    let a = c.plan(t0 + SECS(10));
    assert!(!c.log.is_raised(AlarmKind::NodeDown, "o1"));
    assert_eq!(active(&c, "cams").as_deref(), Some("o2"), "still o2 until o1 ingests");
    assert_eq!(c.groups["cams"].handover.as_ref().map(|h| h.to.as_str()), Some("o1"));
    assert!(a.iter().any(|x| matches!(x, Action::PutSource { node, .. } if node == "o1")), "{a:?}");
    assert!(!a.iter().any(|x| matches!(x, Action::DeleteSource { .. })), "make before break: {a:?}");
    // o1 ingests: it becomes active; o2 keeps its source a moment while edges move.
    c.observe("o1", ok_origin(&[("live", "cam1")]), t0 + SECS(11));
    let a = c.plan(t0 + SECS(11));
    assert_eq!(active(&c, "cams").as_deref(), Some("o1"));
    assert!(!a.iter().any(|x| matches!(x, Action::DeleteSource { .. })), "{a:?}");
    assert_eq!(c.log.events(1, Some("failback"), None).len(), 1);
    let a = c.plan(t0 + SECS(14));
    assert!(a.contains(&Action::DeleteSource { node: "o2".into(), app: "live".into(), key: "cam1".into() }), "{a:?}");
}

#[test]
fn without_failback_the_returning_primary_stays_standby() {
    let t0 = Instant::now();
    let mut c = Cluster::new(config(&CAMS.replace("FAILBACK", "false")), Persisted::default(), t0);
    c.observe("o2", ok_origin(&[]), t0);
    c.observe("o1", failed(), t0);
    c.plan(t0 + SECS(4));
    c.observe("o1", failed(), t0 + SECS(4));
    c.observe("o2", ok_origin(&[]), t0 + SECS(4));
    c.plan(t0 + SECS(4));
    assert_eq!(active(&c, "cams").as_deref(), Some("o2"));
    c.observe("o1", ok_origin(&[]), t0 + SECS(5));
    c.plan(t0 + SECS(5));
    c.plan(t0 + SECS(30));
    assert_eq!(active(&c, "cams").as_deref(), Some("o2"));
    assert!(c.groups["cams"].handover.is_none());
}

#[test]
fn n_plus_2_and_a_standby_shared_by_two_groups_take_groups_by_priority() {
    let groups = r#"
[[group]]
name = "a"
app = "a"
members = [{ node = "o1", priority = 100 }, { node = "o2", priority = 90 }, { node = "o3", priority = 10 }]
[[group]]
name = "b"
app = "b"
members = [{ node = "o2", priority = 100 }, { node = "o3", priority = 50 }]
"#;
    let t0 = Instant::now();
    let mut c = Cluster::new(config(groups), Persisted::default(), t0);
    for n in ["o1", "o2", "o3"] {
        c.observe(n, ok_origin(&[]), t0);
    }
    c.plan(t0);
    assert_eq!((active(&c, "a").as_deref(), active(&c, "b").as_deref()), (Some("o1"), Some("o2")));
    // o1 dies: a goes to o2 (priority 90), not o3.
    c.observe("o1", failed(), t0 + SECS(3));
    c.observe("o1", failed(), t0 + SECS(4));
    c.plan(t0 + SECS(4));
    assert_eq!(active(&c, "a").as_deref(), Some("o2"));
    // o2 dies too: both groups go to the shared standby o3.
    c.observe("o2", failed(), t0 + SECS(7));
    c.observe("o2", failed(), t0 + SECS(8));
    c.observe("o3", ok_origin(&[]), t0 + SECS(8));
    c.plan(t0 + SECS(8));
    assert_eq!((active(&c, "a").as_deref(), active(&c, "b").as_deref()), (Some("o3"), Some("o3")));
    // o3 dies: no member left; the alarm says so.
    c.observe("o3", failed(), t0 + SECS(11));
    c.observe("o3", failed(), t0 + SECS(12));
    c.plan(t0 + SECS(12));
    assert_eq!(active(&c, "a"), None);
    assert!(c.log.is_raised(AlarmKind::GroupNoActive, "a") && c.log.is_raised(AlarmKind::GroupNoActive, "b"));
}

#[test]
fn a_restart_adopts_what_runs_and_moves_nothing() {
    let t0 = Instant::now();
    let cfg = config(&CAMS.replace("FAILBACK", "true"));
    // No state file: o2 (lower priority) is the one ingesting, as after a failover before the restart.
    let mut c = Cluster::new(cfg.clone(), Persisted::default(), t0);
    c.observe("o2", ok_origin(&[("live", "cam1")]), t0);
    let a = c.plan(t0);
    assert_eq!(active(&c, "cams").as_deref(), Some("o2"), "adopted before o1 answered");
    assert!(!a.iter().any(|x| matches!(x, Action::PutSource { .. } | Action::DeleteSource { .. })), "{a:?}");
    // With a state file naming o2, o2 stays active while o1 is not known yet.
    let p = c.persisted();
    let mut c = Cluster::new(cfg, p, t0);
    let a = c.plan(t0);
    assert_eq!(active(&c, "cams").as_deref(), Some("o2"));
    assert!(a.is_empty(), "{a:?}");
}

fn lb_view(reals: &[(&str, bool)]) -> Vec<ServiceView> {
    vec![ServiceView {
        vip: "10.0.0.100".parse().unwrap(),
        port: 1935,
        proto: Proto::Tcp,
        check: "none".into(),
        persistent: 0,
        usable_reals: reals.len(),
        active_flows: 0,
        counters: CountersView::default(),
        reals: reals
            .iter()
            .map(|(a, drained)| RealView {
                addr: a.parse().unwrap(),
                weight: 100,
                mac: None,
                state: "up".into(),
                health: LbHealth::Up,
                drained: *drained,
                last_check: None,
                check_us: None,
                active_flows: 0,
                counters: CountersView::default(),
            })
            .collect(),
    }]
}

#[test]
fn without_groups_an_edge_keeps_its_origins() {
    let t0 = Instant::now();
    let mut c = Cluster::new(config(""), Persisted::default(), t0);
    assert!(c.edge_origins(&c.config.groups.clone()).is_empty());
    c.observe("e1", ok_edge(vec!["rtmp://10.0.0.9:1935/live".into()], 0), t0);
    let a = c.plan(t0);
    assert!(!a.iter().any(|x| matches!(x, Action::SetOrigins { .. })), "an empty origin list was sent: {a:?}");
}

#[test]
fn edges_join_the_lb_and_leave_it_through_maintenance_when_empty() {
    let t0 = Instant::now();
    let mut c = Cluster::new(config(&CAMS.replace("FAILBACK", "true")), Persisted::default(), t0);
    let svc = c.config.lb.as_ref().unwrap().services[0];
    for n in ["o1", "o2"] {
        c.observe(n, ok_origin(&[("live", "cam1")][..usize::from(n == "o1")]), t0);
    }
    c.observe("e1", ok_edge(vec![], 0), t0);
    c.lb_seen("http://10.0.0.1:9400", lb_view(&[]));
    let a = c.plan(t0);
    let e1: IpAddr = "10.0.0.21".parse().unwrap();
    assert!(
        a.contains(&Action::LbAdd {
            lb: "http://10.0.0.1:9400".into(),
            node: "e1".into(),
            real: e1,
            service: svc,
            weight: 100
        }),
        "{a:?}"
    );
    let want = vec!["rtmp://10.0.0.11:1935/live".to_string(), "rtmp://10.0.0.12:1935/live".to_string()];
    assert!(a.contains(&Action::SetOrigins { node: "e1".into(), origins: want.clone() }), "{a:?}");
    assert!(a.contains(&Action::PrePull { node: "e1".into(), app: "live".into(), key: "cam1".into() }), "{a:?}");
    assert!(!a.iter().any(|x| x.node() == "e2"), "e2 is not known to be up: {a:?}");
    c.plan(t0 + SECS(4));
    assert!(c.log.is_raised(AlarmKind::PoolBelowMin, "edges"), "one edge of a minimum of two");

    // In the LB; maintenance: drained, relay told, then removed once its players are gone.
    c.lb_seen("http://10.0.0.1:9400", lb_view(&[("10.0.0.21", false)]));
    c.observe("e1", ok_edge(want.clone(), 3), t0 + SECS(5));
    c.maintenance("e1", true).unwrap();
    let a = c.plan(t0 + SECS(5));
    assert!(
        a.contains(&Action::LbDrain { lb: "http://10.0.0.1:9400".into(), node: "e1".into(), real: e1, service: svc }),
        "{a:?}"
    );
    assert!(a.contains(&Action::RelayMaintenance { node: "e1".into(), on: true }), "{a:?}");
    assert!(!a.iter().any(|x| matches!(x, Action::PrePull { .. })), "no new pulls in maintenance: {a:?}");
    assert_eq!(c.nodes["e1"].state(), "draining");
    c.lb_seen("http://10.0.0.1:9400", lb_view(&[("10.0.0.21", true)]));
    let mut st = ok_edge(want.clone(), 0);
    if let Observation::Ok { status, .. } = &mut st {
        status.maintenance = true;
    }
    c.observe("e1", st, t0 + SECS(6));
    let a = c.plan(t0 + SECS(6));
    assert_eq!(c.nodes["e1"].state(), "maintenance");
    assert!(
        a.contains(&Action::LbRemove { lb: "http://10.0.0.1:9400".into(), node: "e1".into(), real: e1, service: svc }),
        "{a:?}"
    );
    assert_eq!(c.log.events(1, Some("maintenance-empty"), Some("e1")).len(), 1);
    // Resume: back into the LB and accepting players.
    c.lb_seen("http://10.0.0.1:9400", lb_view(&[]));
    c.maintenance("e1", false).unwrap();
    let a = c.plan(t0 + SECS(7));
    assert!(
        a.contains(&Action::LbAdd {
            lb: "http://10.0.0.1:9400".into(),
            node: "e1".into(),
            real: e1,
            service: svc,
            weight: 100
        }),
        "{a:?}"
    );
    assert!(a.contains(&Action::RelayMaintenance { node: "e1".into(), on: false }), "{a:?}");
}

#[test]
fn an_origin_in_maintenance_hands_its_group_over_first() {
    let t0 = Instant::now();
    let mut c = Cluster::new(config(&CAMS.replace("FAILBACK", "true")), Persisted::default(), t0);
    c.observe("o1", ok_origin(&[("live", "cam1")]), t0);
    c.observe("o2", ok_origin(&[]), t0);
    c.plan(t0);
    c.maintenance("o1", true).unwrap();
    let a = c.plan(t0 + SECS(1));
    assert_eq!(active(&c, "cams").as_deref(), Some("o1"), "o1 keeps the group until o2 ingests");
    assert!(a.iter().any(|x| matches!(x, Action::PutSource { node, .. } if node == "o2")), "{a:?}");
    assert!(!a.contains(&Action::RelayMaintenance { node: "o1".into(), on: true }), "edges still pull from o1: {a:?}");
    c.observe("o2", ok_origin(&[("live", "cam1")]), t0 + SECS(2));
    c.plan(t0 + SECS(2));
    assert_eq!(active(&c, "cams").as_deref(), Some("o2"));
    let a = c.plan(t0 + SECS(5));
    assert!(a.contains(&Action::DeleteSource { node: "o1".into(), app: "live".into(), key: "cam1".into() }), "{a:?}");
    assert!(a.contains(&Action::RelayMaintenance { node: "o1".into(), on: true }), "{a:?}");
}

#[test]
fn registration_rules() {
    let mut c = Cluster::new(config(""), Persisted::default(), Instant::now());
    let spec = |name: &str, role: Role, api: &str| NodeSpec {
        name: name.into(),
        role,
        api: api.into(),
        rtmp: "10.0.0.31:1935".parse().unwrap(),
        http: None,
        pool: None,
    };
    assert_eq!(c.register(spec("e3", Role::Edge, "http://10.0.0.31:8081")), Ok(true));
    assert_eq!(c.register(spec("e3", Role::Edge, "http://10.0.0.31:8081")), Ok(false), "again: no change");
    assert!(c.register(spec("e3", Role::Origin, "http://10.0.0.31:8081")).unwrap_err().contains("known as an edge"));
    assert!(c
        .register(spec("o9", Role::Origin, "http://10.0.0.39:8081"))
        .unwrap_err()
        .contains("not in the configuration"));
    assert!(c.register(spec("e1", Role::Edge, "http://10.9.9.9:8081")).unwrap_err().contains("configured with api"));
    assert!(c.register(spec("bad name", Role::Edge, "http://10.0.0.31:8081")).is_err());
    assert!(c.register(spec("e4", Role::Edge, "ftp://x")).is_err());
    assert_eq!(c.persisted().registered.len(), 1, "only the registered edge is persisted");
}

#[test]
fn every_lb_node_gets_the_edges_and_a_silent_one_is_caught_up_later() {
    let t0 = Instant::now();
    let mut cfg = config("");
    let second = svc::client::BaseUrl::parse("http://10.0.0.3:9400").unwrap();
    cfg.lb.as_mut().unwrap().apis.push(second);
    let mut c = Cluster::new(cfg, Persisted::default(), t0);
    c.observe("e1", ok_edge(vec![], 0), t0);
    c.lb_seen("http://10.0.0.1:9400", lb_view(&[]));
    c.lb_unreachable("http://10.0.0.3:9400", "connection refused".into());
    let a = c.plan(t0);
    let adds: Vec<&str> =
        a.iter().filter_map(|x| if let Action::LbAdd { lb, .. } = x { Some(lb.as_str()) } else { None }).collect();
    assert_eq!(adds, vec!["http://10.0.0.1:9400"], "{a:?}");
    assert!(c.log.is_raised(AlarmKind::LbUnreachable, "lb http://10.0.0.3:9400"));
    c.lb_seen("http://10.0.0.3:9400", lb_view(&[]));
    let a = c.plan(t0 + SECS(1));
    assert!(a.iter().any(|x| matches!(x, Action::LbAdd { lb, .. } if lb == "http://10.0.0.3:9400")), "{a:?}");
    assert!(!c.log.is_raised(AlarmKind::LbUnreachable, "lb http://10.0.0.3:9400"));
}

fn scaled(lifetime: &str) -> Config {
    let mut c = config("");
    let extra = format!(
        r#"
name = "edges"
min = 2
max = 4
[scale]
capacity = 5000000
scale_out_at = 0.7
scale_in_at = 0.3
cooldown = "10s"
warm_up = "20s"
min_lifetime = "{lifetime}"
provider = "/bin/true"
"#
    );
    let pool: crate::config::Pool = toml::from_str(&extra).unwrap();
    c.pools = vec![pool];
    c
}

fn edge_load(mbit: u64) -> Observation {
    Observation::Ok { status: NodeStatus { bitrate_out_kbps: mbit * 1000, ..Default::default() }, sources: None }
}

fn starts(a: &[Action]) -> Vec<String> {
    a.iter()
        .filter_map(|x| if let Action::ProviderStart { node, .. } = x { Some(node.clone()) } else { None })
        .collect()
}

fn edge_spec(name: &str, ip: &str) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        role: Role::Edge,
        api: format!("http://{ip}:8081"),
        rtmp: format!("{ip}:1935").parse().unwrap(),
        http: None,
        pool: None,
    }
}

#[test]
fn scale_out_on_load_one_warm_up_at_a_time_cooldown_and_max() {
    let t0 = Instant::now();
    let mut c = Cluster::new(scaled("0s"), Persisted::default(), t0);
    c.observe("e1", edge_load(4), t0);
    c.observe("e2", edge_load(4), t0);
    let a = c.plan(t0);
    assert_eq!(starts(&a), vec!["edges-1"], "8 Mbit/s on 2 x 5 Mbit/s is 80%: {a:?}");
    let ev = c.log.events(1, Some("scale-out"), Some("edges"));
    assert!(
        ev[0]
            .message
            .contains("load 8.0 Mbit/s is 80% of 2 edges x 5.0 Mbit/s (threshold 70%): starting edges-1 (3 of max 4)"),
        "{}",
        ev[0].message
    );
    assert!(starts(&c.plan(t0 + SECS(1))).is_empty(), "one warm-up at a time");
    // It registers and comes up: in the pool, counted, and the start is done.
    c.register(edge_spec("edges-1", "10.0.0.41")).unwrap();
    assert_eq!(c.nodes["edges-1"].spec.pool.as_deref(), Some("edges"));
    c.observe("edges-1", edge_load(4), t0 + SECS(2));
    c.observe("e1", edge_load(4), t0 + SECS(2));
    c.observe("e2", edge_load(4), t0 + SECS(2));
    assert!(starts(&c.plan(t0 + SECS(2))).is_empty(), "cooldown: 12 Mbit/s is 80% but 10 s have not passed");
    assert_eq!(c.log.events(1, Some("scale-out-done"), None).len(), 1);
    let a = c.plan(t0 + SECS(11));
    assert_eq!(starts(&a), vec!["edges-2"]);
    c.register(edge_spec("edges-2", "10.0.0.42")).unwrap();
    c.observe("edges-2", edge_load(5), t0 + SECS(12));
    for t in [25, 40, 60] {
        assert!(starts(&c.plan(t0 + SECS(t))).is_empty(), "at max (4) however high the load goes");
    }
}

#[test]
fn scale_in_waits_for_min_lifetime_drains_then_stops_and_keeps_min() {
    let t0 = Instant::now();
    let mut c = Cluster::new(scaled("1h"), Persisted::default(), t0);
    c.observe("e1", edge_load(4), t0);
    c.observe("e2", edge_load(4), t0);
    c.plan(t0);
    c.register(edge_spec("edges-1", "10.0.0.41")).unwrap();
    for n in ["e1", "e2", "edges-1"] {
        c.observe(n, edge_load(0), t0 + SECS(30));
    }
    let a = c.plan(t0 + SECS(30));
    assert!(c.scaling.stopping.is_empty(), "younger than min_lifetime: kept ({a:?})");
    // The same with no lifetime: the started edge (never an always-on one) is drained first.
    let mut c = Cluster::new(scaled("0s"), Persisted::default(), t0);
    c.observe("e1", edge_load(4), t0);
    c.observe("e2", edge_load(4), t0);
    c.plan(t0);
    c.register(edge_spec("edges-1", "10.0.0.41")).unwrap();
    for n in ["e1", "e2"] {
        c.observe(n, edge_load(0), t0 + SECS(30));
    }
    c.observe("edges-1", ok_edge(vec![], 2), t0 + SECS(30));
    let a = c.plan(t0 + SECS(30));
    assert_eq!(c.scaling.stopping.keys().collect::<Vec<_>>(), vec!["edges-1"]);
    assert_eq!(c.nodes["edges-1"].state(), "draining");
    assert!(a.contains(&Action::RelayMaintenance { node: "edges-1".into(), on: true }), "{a:?}");
    assert!(!a.iter().any(|x| matches!(x, Action::ProviderStop { .. })), "players are still on it");
    // Empty and out of the LB: stopped; a successful stop forgets it; the pool stays at its min of 2.
    let mut st = ok_edge(vec![], 0);
    if let Observation::Ok { status, .. } = &mut st {
        status.maintenance = true;
    }
    c.observe("edges-1", st, t0 + SECS(31));
    // One round sees it empty, the next stops it.
    c.plan(t0 + SECS(31));
    let a = c.plan(t0 + SECS(32));
    let stop = Action::ProviderStop { pool: "edges".into(), node: "edges-1".into() };
    assert!(a.contains(&stop), "{a:?}");
    c.acted(&stop, Ok(()));
    assert!(!c.nodes.contains_key("edges-1"));
    for t in [60, 120] {
        let a = c.plan(t0 + SECS(t));
        assert!(
            c.scaling.stopping.is_empty() && !a.iter().any(|x| matches!(x, Action::ProviderStop { .. })),
            "never below min"
        );
    }
}

#[test]
fn a_failing_provider_raises_an_alarm_and_backs_off_without_runaway() {
    let t0 = Instant::now();
    let mut c = Cluster::new(scaled("0s"), Persisted::default(), t0);
    c.observe("e1", edge_load(5), t0);
    c.observe("e2", edge_load(5), t0);
    let a = c.plan(t0);
    let start = a.iter().find(|x| matches!(x, Action::ProviderStart { .. })).unwrap().clone();
    c.acted(&start, Err("exit status: 1 quota exceeded".into()));
    assert!(c.log.is_raised(AlarmKind::ProviderFailed, "edges"));
    assert!(c.scaling.starting.is_empty(), "a failed start does not count toward max");
    assert!(starts(&c.plan(t0 + SECS(5))).is_empty(), "backoff");
    assert_eq!(starts(&c.plan(t0 + SECS(11))).len(), 1, "retried after the backoff");
    // A start that never registers is given up at warm_up, its leftovers stopped, and the backoff doubles.
    let a = c.plan(t0 + SECS(32));
    assert!(a.iter().any(|x| matches!(x, Action::ProviderStop { .. })), "{a:?}");
    assert!(starts(&c.plan(t0 + SECS(45))).is_empty(), "20 s backoff after the second failure");
    // Manual start: refused at max, else queued and started at once.
    assert!(c.manual_start("nope").is_err());
    c.manual_start("edges").unwrap();
    let a = c.plan(t0 + SECS(46));
    assert_eq!(starts(&a).len(), 1, "a manual start ignores the load and the backoff: {a:?}");
    c.manual_start("edges").unwrap();
    assert!(c.manual_start("edges").unwrap_err().contains("at its max"));
    assert!(c.manual_stop("edges", "e1").unwrap_err().contains("always-on"));
}

#[test]
fn a_node_is_down_after_failover_time_and_two_failed_polls_not_one() {
    // keepalive as long as failover_time (3 s): a death just before a poll used to be decided by that one poll.
    let t0 = Instant::now();
    let mut c = Cluster::new(config(""), Persisted::default(), t0);
    c.observe("e1", edge_load(0), t0);
    c.observe("e1", failed(), t0 + SECS(3));
    assert_eq!(c.nodes["e1"].health, Health::Up, "one failed poll, however late, is not a death");
    c.observe("e1", failed(), t0 + SECS(6));
    assert_eq!(c.nodes["e1"].health, Health::Down);
    // An answer resets the count.
    c.observe("e1", edge_load(0), t0 + SECS(7));
    c.observe("e1", failed(), t0 + SECS(8));
    c.observe("e1", failed(), t0 + SECS(9));
    assert_eq!(c.nodes["e1"].health, Health::Up, "two failures but only 2 s of silence");
    c.observe("e1", failed(), t0 + SECS(10));
    assert_eq!(c.nodes["e1"].health, Health::Down);
}

#[test]
fn a_lost_always_on_edge_is_replaced_and_never_counts_toward_min() {
    // The pool at its min (2) and no load: e2 dies. A down edge serves nobody: a start replaces it, and scale-in
    // never drains the pool down to one edge in service because the dead one still "counts".
    let t0 = Instant::now();
    let mut c = Cluster::new(scaled("0s"), Persisted::default(), t0);
    for t in 0..3 {
        c.observe("e1", edge_load(0), t0 + SECS(t));
        c.observe("e2", if t == 0 { edge_load(0) } else { failed() }, t0 + SECS(t));
        assert!(starts(&c.plan(t0 + SECS(t))).is_empty(), "nothing to do while e2 is not yet down (t={t})");
    }
    let mut started = Vec::new();
    for t in 3..8 {
        c.observe("e1", edge_load(0), t0 + SECS(t));
        c.observe("e2", failed(), t0 + SECS(t));
        started.extend(starts(&c.plan(t0 + SECS(t))));
    }
    assert_eq!(c.nodes["e2"].health, Health::Down);
    assert_eq!(started, vec!["edges-1"], "one replacement for the lost always-on edge");
    let ev = c.log.events(1, Some("scale-out"), Some("edges"));
    assert!(ev[0].message.contains("1 edges up, below the pool's min 2"), "{}", ev[0].message);
    // The replacement comes up with no load: 2 edges up is the min, so nothing is scaled in.
    c.register(edge_spec("edges-1", "10.0.0.41")).unwrap();
    for t in 8..40 {
        for (n, o) in [("e1", edge_load(0)), ("e2", failed()), ("edges-1", edge_load(0))] {
            c.observe(n, o, t0 + SECS(t));
        }
        let a = c.plan(t0 + SECS(t));
        assert!(starts(&a).is_empty(), "t={t}: {a:?}");
        assert!(c.scaling.stopping.is_empty(), "t={t}: scale-in below min with a dead edge counted");
    }
}

#[test]
fn a_start_that_fails_after_its_edge_registered_keeps_it_as_a_started_edge() {
    let t0 = Instant::now();
    let mut c = Cluster::new(scaled("0s"), Persisted::default(), t0);
    c.observe("e1", edge_load(5), t0);
    c.observe("e2", edge_load(5), t0);
    let a = c.plan(t0);
    let start = a.iter().find(|x| matches!(x, Action::ProviderStart { .. })).unwrap().clone();
    // The edge registers while the provider still runs; then the provider times out.
    c.register(edge_spec("edges-1", "10.0.0.41")).unwrap();
    c.acted(&start, Err("no answer within 60s, killed".into()));
    assert!(c.log.is_raised(AlarmKind::ProviderFailed, "edges"));
    assert!(c.scaling.starting.is_empty());
    assert!(c.scaling.started.contains_key("edges-1"), "the registered edge is not the manager's any more");
    // Ours to stop: pool-stop accepts it (an always-on edge is refused).
    c.observe("edges-1", edge_load(0), t0 + SECS(1));
    c.observe("e1", edge_load(0), t0 + SECS(1));
    c.observe("e2", edge_load(0), t0 + SECS(1));
    assert!(c.manual_stop("edges", "edges-1").is_ok());
    assert!(c.manual_stop("edges", "e1").unwrap_err().contains("always-on"));
}

#[test]
fn an_overflow_pool_starts_only_when_the_always_on_pool_is_full_and_hot() {
    let t0 = Instant::now();
    let mut c = config("");
    let always: crate::config::Pool = toml::from_str("name = \"edges\"\nmin = 2\nmax = 2\n").unwrap();
    let overflow: crate::config::Pool = toml::from_str(
        "name = \"burst\"\nmin = 0\nmax = 2\n[scale]\ncapacity = 5000000\nscale_out_at = 0.7\nscale_in_at = 0.3\n\
         cooldown = \"1s\"\nmin_lifetime = \"0s\"\nprovider = \"/bin/true\"\noverflow_of = \"edges\"\n",
    )
    .unwrap();
    c.pools = vec![always, overflow];
    let mut c = Cluster::new(c, Persisted::default(), t0);
    c.observe("e1", edge_load(2), t0);
    c.observe("e2", edge_load(2), t0);
    assert!(starts(&c.plan(t0)).is_empty(), "40% of the always-on edges: nothing");
    c.observe("e1", edge_load(4), t0 + SECS(1));
    c.observe("e2", edge_load(4), t0 + SECS(1));
    let a = c.plan(t0 + SECS(1));
    assert_eq!(starts(&a), vec!["burst-1"], "80% of the full always-on pool: an overflow edge ({a:?})");
    c.register(edge_spec("burst-1", "10.0.0.41")).unwrap();
    assert_eq!(c.nodes["burst-1"].spec.pool.as_deref(), Some("burst"));
    // The load goes: the overflow edge is drained first (the always-on pool never scales in).
    for n in ["e1", "e2", "burst-1"] {
        c.observe(n, edge_load(0), t0 + SECS(5));
    }
    c.plan(t0 + SECS(5));
    assert_eq!(c.scaling.stopping.keys().collect::<Vec<_>>(), vec!["burst-1"]);
}

#[test]
fn the_ingest_address_follows_the_active_member() {
    let t0 = Instant::now();
    let cfg = config(&format!("{}ingest = \"10.0.0.101:1935\"\n", CAMS.replace("FAILBACK", "false")));
    let mut c = Cluster::new(cfg, Persisted::default(), t0);
    let ingest = crate::config::parse_service("10.0.0.101:1935").unwrap();
    let view = |reals: &[&str]| {
        let mut v = lb_view(&[]);
        let mut s = lb_view(&reals.iter().map(|r| (*r, false)).collect::<Vec<_>>()).remove(0);
        s.vip = "10.0.0.101".parse().unwrap();
        v.push(s);
        v
    };
    c.observe("o1", ok_origin(&[("live", "cam1")]), t0);
    c.observe("o2", ok_origin(&[]), t0);
    c.lb_seen("http://10.0.0.1:9400", view(&[]));
    let a = c.plan(t0);
    let o1: IpAddr = "10.0.0.11".parse().unwrap();
    let o2: IpAddr = "10.0.0.12".parse().unwrap();
    let lb = || "http://10.0.0.1:9400".to_string();
    assert!(
        a.contains(&Action::LbAdd { lb: lb(), node: "o1".into(), real: o1, service: ingest, weight: 100 }),
        "{a:?}"
    );
    assert!(
        !a.iter().any(|x| matches!(x, Action::LbAdd { node, .. } if node == "o2")),
        "only the active member: {a:?}"
    );
    // o1 dies: o2 takes the group and the ingest address.
    c.lb_seen("http://10.0.0.1:9400", view(&["10.0.0.11"]));
    c.observe("o1", failed(), t0 + SECS(3));
    c.observe("o1", failed(), t0 + SECS(4));
    c.observe("o2", ok_origin(&[]), t0 + SECS(4));
    let a = c.plan(t0 + SECS(4));
    assert!(
        a.contains(&Action::LbAdd { lb: lb(), node: "o2".into(), real: o2, service: ingest, weight: 100 }),
        "{a:?}"
    );
    assert!(a.contains(&Action::LbRemove { lb: lb(), node: "o1".into(), real: o1, service: ingest }), "{a:?}");
    // A bad ingest address is refused at load.
    let dir = std::env::temp_dir().join(format!("sm-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), "0123456789abcdef-token\n").unwrap();
    let text =
        "listen = \"127.0.0.1:0\"\ntoken_file = \"token\"\n[lb]\napi = \"http://10.0.0.1:9400\"\nservices = [\"10.0.0.100:1935\"]\n\
         [[node]]\nname = \"o1\"\nrole = \"origin\"\napi = \"http://10.0.0.11:8081\"\nrtmp = \"10.0.0.11:1935\"\n\
         [[group]]\nname = \"g\"\napp = \"live\"\nmembers = [{ node = \"o1\", priority = 1 }]\ningest = \"10.0.0.100:1935\"\n";
    let e = Config::parse(text, &dir.join("m.toml")).unwrap_err().to_string();
    assert!(e.contains("is one of the edges' services"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_repeated_refusal_is_one_event_in_words_until_it_succeeds() {
    let mut c = Cluster::new(config(""), Persisted::default(), Instant::now());
    let a = Action::PrePull { node: "e1".into(), app: "live".into(), key: "cam1".into() };
    let b = Action::SetOrigins { node: "e1".into(), origins: vec!["10.0.0.11:1935".into()] };
    for _ in 0..3 {
        c.acted(&b, Err("HTTP 400: bad origins".into()));
    }
    c.acted(&a, Err("HTTP 503: busy".into()));
    let failed = c.log.events(100, Some("action-failed"), None);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].message, "point e1 at origins 10.0.0.11:1935 failed: HTTP 400: bad origins");
    assert_eq!(c.log.events(100, Some("replication-failed"), None).len(), 1);
    c.acted(&b, Ok(()));
    c.acted(&b, Err("HTTP 400: bad origins".into()));
    assert_eq!(c.log.events(100, Some("action-failed"), None).len(), 2, "a new episode is reported again");
}

#[test]
fn registered_nodes_are_capped_removed_with_reasons_and_expire() {
    let t0 = Instant::now();
    let mut cfg = config("");
    cfg.max_registered = 2;
    cfg.registration_expiry = Duration::from_secs(5);
    let mut c = Cluster::new(cfg, Persisted::default(), t0);
    assert_eq!(c.register(edge_spec("r1", "10.0.0.31")), Ok(true));
    assert_eq!(c.register(edge_spec("r2", "10.0.0.32")), Ok(true));
    let e = c.register(edge_spec("r3", "10.0.0.33")).unwrap_err();
    assert!(e.starts_with("registration refused: 2 self-registered nodes already (max_registered = 2)"), "{e}");
    assert_eq!(c.register(edge_spec("r2", "10.0.0.32")), Ok(false), "a known node re-registers past the cap");
    assert!(matches!(c.remove_node("o1"), Err(RemoveError::Refused(m)) if m.contains("configuration file")));
    assert!(matches!(c.remove_node("nope"), Err(RemoveError::Unknown(_))));
    c.observe("r1", ok_edge(vec![], 0), t0);
    assert!(matches!(c.remove_node("r1"), Err(RemoveError::Refused(m)) if m.contains("in service")));
    c.maintenance("r1", true).unwrap();
    assert!(matches!(c.remove_node("r1"), Err(RemoveError::Refused(m)) if m.contains("still draining")));
    // r2 never answered: forgotten after registration_expiry; r1 answered once and stays.
    c.plan(t0 + Duration::from_secs(6));
    assert!(!c.nodes.contains_key("r2") && c.nodes.contains_key("r1"));
    assert_eq!(c.log.events(10, Some("node-removed"), Some("r2")).len(), 1);
    assert_eq!(c.register(edge_spec("r3", "10.0.0.33")), Ok(true), "room again");
}

#[test]
fn no_group_sends_no_empty_origin_list() {
    let t0 = Instant::now();
    let mut c = Cluster::new(config(""), Persisted::default(), t0);
    assert!(c.config.groups.is_empty());
    c.observe("e1", ok_edge(vec!["10.0.0.11:1935".into()], 0), t0);
    let actions = c.plan(t0);
    assert!(!actions.iter().any(|a| matches!(a, Action::SetOrigins { .. })), "{actions:?}");
}

#[test]
fn a_reload_applies_nodes_groups_lb_and_timers_as_a_diff_without_a_failover() {
    let t0 = Instant::now();
    let cams = CAMS.replace("FAILBACK", "true");
    let mut c = Cluster::new(config(&cams), Persisted::default(), t0);
    let lb = "http://10.0.0.1:9400";
    for n in ["o1", "o2"] {
        c.observe(n, ok_origin(&[("live", "cam1")][..usize::from(n == "o1")]), t0);
    }
    c.observe("e1", ok_edge(vec![], 0), t0);
    c.observe("e2", ok_edge(vec![], 0), t0);
    c.lb_seen(lb, lb_view(&[("10.0.0.21", false), ("10.0.0.22", false)]));
    c.plan(t0);
    assert_eq!(active(&c, "cams").as_deref(), Some("o1"));

    // Unchanged: nothing applied, nothing for the next start.
    assert_eq!(c.reload(config(&cams)), Ok(Reloaded::default()));
    assert_eq!(c.generation, 1);

    // e2 leaves the file, e9 joins; o1 keeps the group though o3 joins it with a higher priority (no failover for
    // an edit; failback decides later, make before break); a second group arrives; the keepalive and the LB
    // weight change; the listen address cannot change live.
    let edited = cams.replace(
        r#"{ node = "o2", priority = 50 }"#,
        r#"{ node = "o2", priority = 50 }, { node = "o3", priority = 200 }"#,
    ) + r#"
[[node]]
name = "e9"
role = "edge"
api = "http://10.0.0.29:8081"
rtmp = "10.0.0.29:1935"
[[group]]
name = "tv"
app = "tv"
members = [{ node = "o2", priority = 10 }]
"#;
    let mut new = config(&edited);
    new.nodes.retain(|n| n.name != "e2");
    new.keepalive = SECS(2);
    new.lb.as_mut().unwrap().weight = 7;
    new.listen = "127.0.0.1:1".parse().unwrap();
    // e2 is in service: refused (its players would be cut), nothing changes, until it is drained and empty.
    let e = c.reload(new.clone()).unwrap_err();
    assert!(e.contains("node e2 is removed from the file but is up and in service"), "{e}");
    assert!(e.contains("smctl maintenance e2"), "{e}");
    assert_eq!((c.generation, c.config.keepalive, c.nodes.contains_key("e9")), (1, SECS(1), false));
    c.maintenance("e2", true).unwrap();
    c.plan(t0);
    assert!(c.nodes["e2"].maintenance.as_ref().is_some_and(|m| m.empty));
    let r = c.reload(new).unwrap();
    assert_eq!(
        r.applied,
        [
            "node e2 removed",
            "node e9 added",
            "group cams members changed",
            "group tv added",
            "[lb] weight 100 -> 7",
            "keepalive 1s -> 2s"
        ]
    );
    assert_eq!(r.at_next_start, ["listen"]);
    assert_eq!(c.config.listen, "127.0.0.1:0".parse().unwrap(), "the running listen address is kept");
    assert_eq!(c.config.keepalive, SECS(2));
    assert_eq!(c.generation, 2);
    assert!(c.nodes.contains_key("e9") && c.nodes["e9"].from_config);
    assert!(!c.nodes.contains_key("e2"));
    assert_eq!(c.log.events(1, Some("node-removed"), None)[0].subject, "e2");
    assert_eq!(active(&c, "cams").as_deref(), Some("o1"), "the active member stays");
    assert!(c.groups.contains_key("tv"));

    // The next plan takes e2 out of the LB, adds e9 with the new weight once it is up, and starts no failover.
    c.observe("e9", ok_edge(vec![], 0), t0 + SECS(1));
    c.observe("o3", ok_origin(&[]), t0 + SECS(1));
    let a = c.plan(t0 + SECS(1));
    let svc = c.config.lb.as_ref().unwrap().services[0];
    let e2: IpAddr = "10.0.0.22".parse().unwrap();
    let e9: IpAddr = "10.0.0.29".parse().unwrap();
    assert!(a.contains(&Action::LbRemove { lb: lb.into(), node: "e2".into(), real: e2, service: svc }), "{a:?}");
    assert!(
        a.contains(&Action::LbAdd { lb: lb.into(), node: "e9".into(), real: e9, service: svc, weight: 7 }),
        "{a:?}"
    );
    // e1, at the old weight in lbd, gets the new one.
    let e1: IpAddr = "10.0.0.21".parse().unwrap();
    assert!(
        a.contains(&Action::LbWeight { lb: lb.into(), node: "e1".into(), real: e1, service: svc, weight: 7 }),
        "{a:?}"
    );
    assert_eq!(active(&c, "cams").as_deref(), Some("o1"));
    assert_eq!(c.groups["cams"].failovers, 0);
    assert_eq!(active(&c, "tv").as_deref(), Some("o2"), "the new group gets its active member");

    // The group loses o1 and tv goes: o1 stops cams' sources, o2 those of tv; the group moves to a member.
    c.observe("o1", ok_origin(&[("live", "cam1")]), t0 + SECS(2));
    c.observe("o2", ok_origin(&[("tv", "news")]), t0 + SECS(2));
    let mut without = config(&cams.replace(r#"{ node = "o1", priority = 100 }, "#, ""));
    without.nodes.push(c.nodes["e9"].spec.clone());
    let r = c.reload(without).unwrap();
    assert!(r.applied.contains(&"group tv removed".to_string()), "{:?}", r.applied);
    assert!(r.applied.contains(&"group cams members changed".to_string()), "{:?}", r.applied);
    assert!(r.applied.contains(&"node e2 added".to_string()), "{:?}", r.applied);
    assert!(r.applied.contains(&"keepalive 2s -> 1s".to_string()), "{:?}", r.applied);
    assert!(!c.groups.contains_key("tv"));
    let a = c.plan(t0 + SECS(2));
    assert!(a.contains(&Action::DeleteSource { node: "o1".into(), app: "live".into(), key: "cam1".into() }), "{a:?}");
    assert!(a.contains(&Action::DeleteSource { node: "o2".into(), app: "tv".into(), key: "news".into() }), "{a:?}");
    assert_eq!(active(&c, "cams").as_deref(), Some("o2"));
    // Once they stopped, nothing more is asked of them.
    c.observe("o1", ok_origin(&[]), t0 + SECS(3));
    c.observe("o2", ok_origin(&[("live", "cam1")]), t0 + SECS(3));
    let a = c.plan(t0 + SECS(3));
    assert!(!a.iter().any(|x| matches!(x, Action::DeleteSource { .. })), "{a:?}");
    assert!(c.retired_sources.is_empty());
}

#[test]
fn a_reload_takes_edges_out_of_a_service_dropped_from_lb() {
    let t0 = Instant::now();
    let mut c = Cluster::new(config(""), Persisted::default(), t0);
    let lb = "http://10.0.0.1:9400";
    c.observe("e1", ok_edge(vec![], 0), t0);
    c.lb_seen(lb, lb_view(&[("10.0.0.21", false)]));
    let svc = c.config.lb.as_ref().unwrap().services[0];
    let mut new = config("");
    new.lb.as_mut().unwrap().services = vec![ServiceKey::parse("10.0.0.100:8080", Proto::Tcp).unwrap()];
    let r = c.reload(new).unwrap();
    assert_eq!(r.applied, ["[lb] services changed"]);
    let a = c.plan(t0);
    let e1: IpAddr = "10.0.0.21".parse().unwrap();
    assert!(a.contains(&Action::LbRemove { lb: lb.into(), node: "e1".into(), real: e1, service: svc }), "{a:?}");
    c.lb_seen(lb, lb_view(&[]));
    c.plan(t0);
    assert!(c.retired_services.is_empty());
}

#[test]
fn a_registered_edge_named_in_a_reloaded_file_becomes_configured() {
    let t0 = Instant::now();
    let mut c = Cluster::new(config(""), Persisted::default(), t0);
    c.register(edge_spec("e7", "10.0.0.27")).unwrap();
    let mut new = config("");
    new.nodes.push(edge_spec("e7", "10.0.0.27"));
    let r = c.reload(new).unwrap();
    assert_eq!(r.applied, ["node e7 now configured"]);
    assert!(c.nodes["e7"].from_config);
    assert!(c.persisted().registered.is_empty());
}

#[test]
fn a_reload_that_removes_a_group_takes_its_origin_out_of_the_ingest_address() {
    let t0 = Instant::now();
    let cfg = config(&format!("{}ingest = \"10.0.0.101:1935\"\n", CAMS.replace("FAILBACK", "false")));
    let mut c = Cluster::new(cfg, Persisted::default(), t0);
    let ingest = crate::config::parse_service("10.0.0.101:1935").unwrap();
    let view = |reals: &[&str]| {
        let mut v = lb_view(&[]);
        let mut s = lb_view(&reals.iter().map(|r| (*r, false)).collect::<Vec<_>>()).remove(0);
        s.vip = "10.0.0.101".parse().unwrap();
        v.push(s);
        v
    };
    c.observe("o1", ok_origin(&[("live", "cam1")]), t0);
    c.lb_seen("http://10.0.0.1:9400", view(&["10.0.0.11"]));
    c.plan(t0);
    assert_eq!(active(&c, "cams").as_deref(), Some("o1"));
    let r = c.reload(config("")).unwrap();
    assert_eq!(r.applied, ["group cams removed"]);
    let a = c.plan(t0 + SECS(1));
    let o1: IpAddr = "10.0.0.11".parse().unwrap();
    let lb = "http://10.0.0.1:9400".to_string();
    assert!(a.contains(&Action::LbRemove { lb, node: "o1".into(), real: o1, service: ingest }), "{a:?}");
    assert!(a.contains(&Action::DeleteSource { node: "o1".into(), app: "live".into(), key: "cam1".into() }), "{a:?}");
    c.lb_seen("http://10.0.0.1:9400", view(&[]));
    c.observe("o1", ok_origin(&[]), t0 + SECS(2));
    let a = c.plan(t0 + SECS(2));
    assert!(a.is_empty(), "{a:?}");
    assert!(c.retired_services.is_empty());
    // o2 has not been heard from: if it comes up with the group's sources, it stops them too.
    assert_eq!(c.retired_sources, BTreeSet::from([("o2".to_string(), "live".to_string())]));
}

/// An origin's observation of live/cam1 with main (pulled) and backup (pushed): (role, live, ingesting) each.
fn redundant_origin(states: &[(&str, bool, bool)]) -> Observation {
    let any = states.iter().any(|s| s.1);
    let Observation::Ok { mut status, .. } = ok_origin(if any { &[("live", "cam1")] } else { &[] }) else {
        unreachable!()
    };
    status.streams.retain(|_| any);
    let sources = states
        .iter()
        .map(|(role, live, ing)| OriginSource {
            app: "live".into(),
            key: "cam1".into(),
            role: role.to_string(),
            live: *live,
            url: if *role == "main" { "rtsp://10.0.0.50/cam".into() } else { "pushed".into() },
            state: if *ing {
                api_types::relay::SourceState::Ingesting
            } else {
                api_types::relay::SourceState::Connecting
            },
            source_timeout_ms: 2000,
            source_stable_for_ms: 5000,
            ..Default::default()
        })
        .collect();
    Observation::Ok { status, sources: Some(sources) }
}

#[test]
fn redundant_sources_are_put_in_order_and_their_switches_and_losses_are_told() {
    let t0 = Instant::now();
    let cfg = CAMS.replace("FAILBACK", "false").replace(
        r#"sources = [{ key = "cam1", url = "rtsp://10.0.0.50/cam" }]"#,
        "source_timeout = \"2s\"\nsources = [{ key = \"cam1\", url = \"rtsp://10.0.0.50/cam\" }, { key = \"cam1\", role = \"backup\" }]",
    );
    let mut c = Cluster::new(config(&cfg), Persisted::default(), t0);
    for n in ["o1", "o2"] {
        c.observe(n, ok_origin(&[]), t0);
    }
    let a = c.plan(t0);
    let body = a
        .iter()
        .find_map(|x| match x {
            Action::PutSource { node, body, .. } if node == "o1" => Some(body.clone()),
            _ => None,
        })
        .expect("sources put on the active member");
    let roles: Vec<(&str, Option<&str>)> = body.sources.iter().map(|e| (e.role.as_str(), e.url.as_deref())).collect();
    assert_eq!(roles, vec![("main", Some("rtsp://10.0.0.50/cam")), ("backup", None)]);
    assert_eq!(body.source_timeout.map(|d| d.0), Some(Duration::from_secs(2)));
    assert!(body.url.is_empty());
    // The origin ingests both: nothing more to put.
    c.observe("o1", redundant_origin(&[("main", true, true), ("backup", false, true)]), t0 + SECS(1));
    let a = c.plan(t0 + SECS(1));
    assert!(!a.iter().any(|x| matches!(x, Action::PutSource { node, .. } if node == "o1")), "{a:?}");
    // Main dies: the backup goes live; both told.
    c.observe("o1", redundant_origin(&[("main", false, false), ("backup", true, true)]), t0 + SECS(2));
    let ev = c.log.events(10, None, Some("live/cam1"));
    let kinds: Vec<String> = ev.iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.contains(&"source-down".to_string()) && kinds.contains(&"source-switched".to_string()), "{kinds:?}");
    let switched = ev.iter().find(|e| e.kind == EventKind::SourceSwitched).unwrap();
    assert_eq!(switched.message, "live/cam1 switched from main to backup on o1");
    c.plan(t0 + SECS(2));
    assert!(!c.log.is_raised(AlarmKind::SourceDown, "live/cam1"), "the backup delivers");
    // Both down: alarmed at once; cleared when one delivers again.
    c.observe("o1", redundant_origin(&[("main", false, false), ("backup", false, false)]), t0 + SECS(3));
    c.plan(t0 + SECS(3));
    assert!(c.log.is_raised(AlarmKind::SourceDown, "live/cam1"));
    c.observe("o1", redundant_origin(&[("main", true, true), ("backup", false, false)]), t0 + SECS(4));
    c.plan(t0 + SECS(4));
    assert!(!c.log.is_raised(AlarmKind::SourceDown, "live/cam1"));
    // o1 dies: the standby gets the same ordered list when it takes over.
    for i in 5..12 {
        c.observe("o1", failed(), t0 + SECS(i));
        c.observe("o2", ok_origin(&[]), t0 + SECS(i));
    }
    let a = c.plan(t0 + SECS(12));
    assert_eq!(active(&c, "cams").as_deref(), Some("o2"));
    assert!(
        a.iter().any(|x| matches!(x, Action::PutSource { node, body: b, .. } if node == "o2" && *b == body)),
        "{a:?}"
    );
}

#[test]
fn redundant_source_mistakes_are_refused_with_the_reason() {
    let base = CAMS.replace("FAILBACK", "false");
    let line = r#"sources = [{ key = "cam1", url = "rtsp://10.0.0.50/cam" }]"#;
    for (bad, why) in [
        (
            r#"sources = [{ key = "cam1", url = "rtsp://10.0.0.50/cam" }, { key = "cam1", role = "main" }]"#,
            "role \"main\" is given twice",
        ),
        (
            r#"sources = [{ key = "cam1", url = "rtsp://a/x" }, { key = "cam1" }, { key = "cam1", url = "rtmp://b/l/k" }]"#,
            "need a role",
        ),
        (
            r#"sources = [{ key = "cam1", role = "slate", url = "testcard" }, { key = "cam1", role = "backup" }]"#,
            "the slate must be the last source",
        ),
        (r#"sources = [{ key = "cam1" }]"#, "has no url"),
        (r#"sources = [{ key = "cam1", url = "rtsp://a/x", prio = 1 }]"#, "unknown field `prio`"),
        (
            "source_timeout = \"10ms\"\nsources = [{ key = \"cam1\", url = \"rtsp://a/x\" }, { key = \"cam1\", role = \"backup\" }]",
            "source_timeout 10ms is out of range 100ms..=60s",
        ),
    ] {
        let text = base.replace(line, bad);
        let err = try_config(&text).err().map(|e| e.to_string());
        assert!(err.as_deref().is_some_and(|e| e.contains(why)), "{bad}: {err:?}");
    }
}
