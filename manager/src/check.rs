//! `smctl check`: Nagios go/no-go verdicts on an origin group, an edge pool, a stream and the manager itself, from
//! the manager's API answers parsed with their contract types (the same plugin format as `lbctl check`, through
//! `svc::nagios`).

use api_types::manager::{Alarm, AlarmKind, Alarms, GroupView, NodeState, PoolSummary, StreamSummary};
use svc::nagios::{Check, Perf, Range, State, Thresholds, Uom};

/// The Nagios service name of the group, pool and stream checks.
pub const NAME: &str = "STREAM";
/// The Nagios service name of the check of the manager itself.
pub const MANAGER: &str = "MANAGER";

/// An origin group: CRITICAL without an active member; WARNING when it runs on a standby, a source is not
/// ingested or no healthy standby is left; thresholds (`-w`/`-c`) apply to the healthy members.
pub fn group(groups: &[GroupView], name: &str, warning: Option<Range>, critical: Option<Range>) -> Check {
    let Some(g) = groups.iter().find(|g| g.name == name) else {
        return Check::new(NAME, State::Critical, format!("group {name}: no such group on the manager"));
    };
    let members = &g.members;
    let healthy = members.iter().filter(|m| m.state == NodeState::Up).count();
    let ingesting = g.sources.iter().filter(|s| s.ingesting).count();
    let active = g.active.as_deref();
    let preferred = members.first().map(|m| m.node.as_str());
    let t = Thresholds {
        warning: Some(warning.unwrap_or(Range::at_least(2.0))),
        critical: Some(critical.unwrap_or(Range::at_least(1.0))),
    };
    let mut state = t.state(healthy as f64);
    let mut text = match active {
        None => {
            state = State::Critical;
            format!("group {name}: NO ACTIVE ORIGIN, its streams are not ingested")
        }
        Some(a) => format!("group {name}: {a} active, {healthy} of {} members healthy", members.len()),
    };
    if active.is_some() && active != preferred {
        state = state.max(State::Warning);
        text.push_str(&format!(", running on a standby (preferred {})", preferred.unwrap_or("-")));
    }
    if active.is_some() && ingesting < g.sources.len() {
        state = state.max(State::Warning);
        let missing: Vec<&str> = g.sources.iter().filter(|s| !s.ingesting).map(|s| s.key.as_str()).collect();
        text.push_str(&format!(", not ingested: {}", missing.join(", ")));
    }
    let mut c = Check::new(NAME, state, text);
    c.perf = vec![
        Perf::new("healthy_members", healthy as f64, Uom::None).thresholds(t).min(0.0).max(members.len() as f64),
        Perf::new("sources_ingesting", ingesting as f64, Uom::None).min(0.0).max(g.sources.len() as f64),
        Perf::new("failovers", g.failovers as f64, Uom::Counter),
    ];
    c
}

/// An edge pool: CRITICAL below its minimum (or with no edge in service); WARNING at its maximum or with an edge
/// down; thresholds apply to the edges in service.
pub fn pool(pools: &[PoolSummary], name: &str, warning: Option<Range>, critical: Option<Range>) -> Check {
    let Some(p) = pools.iter().find(|p| p.name == name) else {
        return Check::new(NAME, State::Critical, format!("pool {name}: no such pool on the manager"));
    };
    let in_service = p.in_service as f64;
    let edges = p.edges.len() as f64;
    let min = (p.min as f64).max(1.0);
    let t = Thresholds { warning, critical: Some(critical.unwrap_or(Range::at_least(min))) };
    let mut state = t.state(in_service);
    let mut text = format!("pool {name}: {in_service} of {edges} edges in service (min {min})");
    if let Some(max) = p.max {
        text.push_str(&format!(", max {max}"));
        if p.edges.len() >= max {
            state = state.max(State::Warning);
            text.push_str(", AT MAX");
        }
    }
    if p.down > 0 {
        state = state.max(State::Warning);
        text.push_str(&format!(", {} down", p.down));
    }
    let mut c = Check::new(NAME, state, text);
    let mut edges_perf = Perf::new("edges_in_service", in_service, Uom::None).thresholds(t).min(0.0);
    if let Some(max) = p.max {
        edges_perf = edges_perf.max(max as f64);
    }
    c.perf = vec![
        edges_perf,
        Perf::new("players", p.players as f64, Uom::None).min(0.0),
        Perf::new("bitrate_out", p.bitrate_out_kbps as f64 * 1000.0, Uom::None).min(0.0),
    ];
    c
}

/// The manager itself (`GET /api/v1/alarms`): CRITICAL while it cannot save its state (a restart would forget
/// maintenance and active members), WARNING with any other alarm raised, OK otherwise.
pub fn manager(alarms: &Alarms) -> Check {
    let raised = &alarms.raised;
    let unsaved = raised.iter().find(|a| a.kind == AlarmKind::StateNotSaved);
    let (state, text) = match unsaved {
        Some(a) => (State::Critical, format!("manager: state-not-saved: {}", a.message)),
        None if raised.is_empty() => (State::Ok, "manager: no alarm raised".to_string()),
        None => {
            let mut kinds: Vec<String> = raised.iter().map(|a: &Alarm| a.kind.as_str()).collect();
            kinds.dedup();
            (State::Warning, format!("manager: {} alarms raised ({})", raised.len(), kinds.join(", ")))
        }
    };
    let mut c = Check::new(MANAGER, state, text);
    c.perf = vec![Perf::new("alarms", raised.len() as f64, Uom::None).min(0.0)];
    c
}

/// A stream (APP/KEY): CRITICAL when no origin ingests it; thresholds apply to the edges that have it.
pub fn stream(streams: &[StreamSummary], app_key: &str, warning: Option<Range>, critical: Option<Range>) -> Check {
    let found = streams.iter().find(|s| format!("{}/{}", s.app, s.key) == app_key);
    let (ingest, edges, players, bin, bout) = match found {
        Some(s) => (
            s.ingest.clone(),
            s.edges.len(),
            s.players as f64,
            s.bitrate_in_kbps as f64 * 1000.0,
            s.bitrate_out_kbps as f64 * 1000.0,
        ),
        None => (None, 0, 0.0, 0.0, 0.0),
    };
    let t = Thresholds { warning, critical };
    let (state, text) = match &ingest {
        None => (State::Critical, format!("stream {app_key}: NOT INGESTED by any origin")),
        Some(o) => {
            (t.state(edges as f64), format!("stream {app_key}: ingested at {o}, on {edges} edges, {players} players"))
        }
    };
    let mut c = Check::new(NAME, state, text);
    c.perf = vec![
        Perf::new("edges", edges as f64, Uom::None).thresholds(t).min(0.0),
        Perf::new("players", players, Uom::None).min(0.0),
        Perf::new("bitrate_in", bin, Uom::None).min(0.0),
        Perf::new("bitrate_out", bout, Uom::None).min(0.0),
    ];
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The API's JSON, parsed as smctl parses it.
    fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn groups(active: Option<&str>, states: [&str; 2], ingesting: bool) -> Vec<GroupView> {
        parse(json!([{ "name": "cams", "app": "live", "failback": true, "replication": "pre-pull",
                 "active": active, "active_since": null, "handover": null, "failovers": 2,
                 "members": [{ "node": "o1", "priority": 100, "state": states[0], "active": active == Some("o1") },
                             { "node": "o2", "priority": 50, "state": states[1], "active": active == Some("o2") }],
                 "sources": [{ "key": "cam1", "url": "rtsp://10.0.0.50/cam", "ingesting": ingesting }] }]))
    }

    #[test]
    fn group_states_and_perfdata() {
        let c = group(&groups(Some("o1"), ["up", "up"], true), "cams", None, None);
        assert_eq!(c.state, State::Ok, "{}", c.line());
        assert_eq!(
            c.line(),
            "STREAM OK - group cams: o1 active, 2 of 2 members healthy | healthy_members=2;2:;1:;0;2 sources_ingesting=1;;;0;1 failovers=2c"
        );
        let c = group(&groups(Some("o2"), ["down", "up"], true), "cams", None, None);
        assert_eq!(c.state, State::Warning, "{}", c.line());
        assert!(c.text.contains("running on a standby (preferred o1)"), "{}", c.text);
        let c = group(&groups(Some("o1"), ["up", "up"], false), "cams", None, None);
        assert_eq!(c.state, State::Warning);
        assert!(c.text.contains("not ingested: cam1"));
        let c = group(&groups(None, ["down", "down"], false), "cams", None, None);
        assert_eq!(c.state, State::Critical);
        assert!(c.text.contains("NO ACTIVE ORIGIN"));
        assert_eq!(group(&groups(None, ["up", "up"], false), "nope", None, None).state, State::Critical);
    }

    #[test]
    fn pool_and_stream_states() {
        let p = |in_service: u32, down: u32, max: Option<u32>| -> Vec<PoolSummary> {
            parse(
                json!([{ "name": "edges", "min": 2, "max": max, "edges": ["e1", "e2", "e3"], "in_service": in_service,
                     "down": down, "players": 7, "bitrate_out_kbps": 1500, "utilisation": null, "started": [],
                     "starting": [], "stopping": [] }]),
            )
        };
        let c = pool(&p(3, 0, None), "edges", None, None);
        assert_eq!(c.line(), "STREAM OK - pool edges: 3 of 3 edges in service (min 2) | edges_in_service=3;;2:;0 players=7;;;0 bitrate_out=1500000;;;0");
        assert_eq!(pool(&p(2, 1, None), "edges", None, None).state, State::Warning);
        assert_eq!(pool(&p(3, 0, Some(3)), "edges", None, None).state, State::Warning);
        assert_eq!(pool(&p(1, 2, None), "edges", None, None).state, State::Critical);
        let s: Vec<StreamSummary> = parse(json!([{ "group": "cams", "app": "live", "key": "cam1", "ingest": "o1",
                         "source": "publisher 10.0.0.50", "edges": ["e1", "e2"], "players": 4,
                         "bitrate_in_kbps": 3000, "bitrate_out_kbps": 12000 }]));
        let c = stream(&s, "live/cam1", None, Some("2:".parse().unwrap()));
        assert_eq!(c.state, State::Ok, "{}", c.line());
        assert_eq!(stream(&s, "live/cam1", None, Some("3:".parse().unwrap())).state, State::Critical);
        let c = stream(&s, "live/other", None, None);
        assert_eq!((c.state, c.text.as_str()), (State::Critical, "stream live/other: NOT INGESTED by any origin"));
    }

    #[test]
    fn the_manager_check_is_named_manager() {
        let alarm = |kind: &str| {
            json!({ "kind": kind, "subject": "smd", "message": "disk full", "raised_ms": 1,
                                         "cleared_ms": null })
        };
        let c = manager(&parse(json!({ "raised": [], "cleared": [alarm("node-down")] })));
        assert_eq!(c.line(), "MANAGER OK - manager: no alarm raised | alarms=0;;;0");
        let c = manager(&parse(json!({ "raised": [alarm("node-down"), alarm("node-down")], "cleared": [] })));
        assert_eq!(c.line(), "MANAGER WARNING - manager: 2 alarms raised (node-down) | alarms=2;;;0");
        let c = manager(&parse(json!({ "raised": [alarm("node-down"), alarm("state-not-saved")], "cleared": [] })));
        assert_eq!(c.line(), "MANAGER CRITICAL - manager: state-not-saved: disk full | alarms=2;;;0");
    }
}
