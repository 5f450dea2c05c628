//! `smctl check`: Nagios go/no-go verdicts on an origin group, an edge pool and a stream, from the manager's API
//! answers (the same plugin format as `lbctl check`, through `svc::nagios`).

use serde_json::Value;
use svc::nagios::{Check, Perf, Range, State, Thresholds, Uom};

const NAME: &str = "STREAM";

fn n(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// An origin group: CRITICAL without an active member; WARNING when it runs on a standby, a source is not
/// ingested or no healthy standby is left; thresholds (`-w`/`-c`) apply to the healthy members.
pub fn group(groups: &Value, name: &str, warning: Option<Range>, critical: Option<Range>) -> Check {
    let Some(g) = groups.as_array().and_then(|v| v.iter().find(|g| g["name"] == name)) else {
        return Check::new(NAME, State::Critical, format!("group {name}: no such group on the manager"));
    };
    let members = g["members"].as_array().cloned().unwrap_or_default();
    let healthy = members.iter().filter(|m| m["state"] == "up").count();
    let sources = g["sources"].as_array().cloned().unwrap_or_default();
    let ingesting = sources.iter().filter(|s| s["ingesting"] == true).count();
    let active = g["active"].as_str();
    let preferred = members.first().and_then(|m| m["node"].as_str());
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
    if active.is_some() && ingesting < sources.len() {
        state = state.max(State::Warning);
        let missing: Vec<&str> =
            sources.iter().filter(|s| s["ingesting"] != true).filter_map(|s| s["key"].as_str()).collect();
        text.push_str(&format!(", not ingested: {}", missing.join(", ")));
    }
    let mut c = Check::new(NAME, state, text);
    c.perf = vec![
        Perf::new("healthy_members", healthy as f64, Uom::None).thresholds(t).min(0.0).max(members.len() as f64),
        Perf::new("sources_ingesting", ingesting as f64, Uom::None).min(0.0).max(sources.len() as f64),
        Perf::new("failovers", n(&g["failovers"]), Uom::Counter),
    ];
    c
}

/// An edge pool: CRITICAL below its minimum (or with no edge in service); WARNING at its maximum or with an edge
/// down; thresholds apply to the edges in service.
pub fn pool(pools: &Value, name: &str, warning: Option<Range>, critical: Option<Range>) -> Check {
    let Some(p) = pools.as_array().and_then(|v| v.iter().find(|p| p["name"] == name)) else {
        return Check::new(NAME, State::Critical, format!("pool {name}: no such pool on the manager"));
    };
    let in_service = n(&p["in_service"]);
    let edges = p["edges"].as_array().map_or(0, Vec::len) as f64;
    let min = n(&p["min"]).max(1.0);
    let t = Thresholds { warning, critical: Some(critical.unwrap_or(Range::at_least(min))) };
    let mut state = t.state(in_service);
    let mut text = format!("pool {name}: {in_service} of {edges} edges in service (min {min})");
    if let Some(max) = p["max"].as_f64() {
        text.push_str(&format!(", max {max}"));
        if edges >= max {
            state = state.max(State::Warning);
            text.push_str(", AT MAX");
        }
    }
    if n(&p["down"]) > 0.0 {
        state = state.max(State::Warning);
        text.push_str(&format!(", {} down", n(&p["down"])));
    }
    let mut c = Check::new(NAME, state, text);
    let mut edges_perf = Perf::new("edges_in_service", in_service, Uom::None).thresholds(t).min(0.0);
    if let Some(max) = p["max"].as_f64() {
        edges_perf = edges_perf.max(max);
    }
    c.perf = vec![
        edges_perf,
        Perf::new("players", n(&p["players"]), Uom::None).min(0.0),
        Perf::new("bitrate_out", n(&p["bitrate_out_kbps"]) * 1000.0, Uom::None).min(0.0),
    ];
    c
}

/// The manager itself (`GET /api/v1/alarms`): CRITICAL while it cannot save its state (a restart would forget
/// maintenance and active members), WARNING with any other alarm raised, OK otherwise.
pub fn manager(alarms: &Value) -> Check {
    let raised = alarms["raised"].as_array().cloned().unwrap_or_default();
    let kind = |a: &Value| a["kind"].as_str().unwrap_or("").to_string();
    let unsaved = raised.iter().find(|a| a["kind"] == "state-not-saved");
    let (state, text) = match unsaved {
        Some(a) => (State::Critical, format!("manager: state-not-saved: {}", a["message"].as_str().unwrap_or(""))),
        None if raised.is_empty() => (State::Ok, "manager: no alarm raised".to_string()),
        None => {
            let mut kinds: Vec<String> = raised.iter().map(kind).collect();
            kinds.dedup();
            (State::Warning, format!("manager: {} alarms raised ({})", raised.len(), kinds.join(", ")))
        }
    };
    let mut c = Check::new(NAME, state, text);
    c.perf = vec![Perf::new("alarms", raised.len() as f64, Uom::None).min(0.0)];
    c
}

/// A stream (APP/KEY): CRITICAL when no origin ingests it; thresholds apply to the edges that have it.
pub fn stream(streams: &Value, app_key: &str, warning: Option<Range>, critical: Option<Range>) -> Check {
    let found = streams.as_array().and_then(|v| {
        v.iter().find(|s| format!("{}/{}", s["app"].as_str().unwrap_or(""), s["key"].as_str().unwrap_or("")) == app_key)
    });
    let (ingest, edges, players, bin, bout) = match found {
        Some(s) => (
            s["ingest"].as_str().map(str::to_string),
            s["edges"].as_array().map_or(0, Vec::len),
            n(&s["players"]),
            n(&s["bitrate_in_kbps"]) * 1000.0,
            n(&s["bitrate_out_kbps"]) * 1000.0,
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

    fn groups(active: Option<&str>, states: [&str; 2], ingesting: bool) -> Value {
        json!([{ "name": "cams", "active": active, "failovers": 2,
                 "members": [{ "node": "o1", "priority": 100, "state": states[0] }, { "node": "o2", "priority": 50, "state": states[1] }],
                 "sources": [{ "key": "cam1", "ingesting": ingesting }] }])
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
        let p = |in_service: u32, down: u32, max: Option<u32>| {
            json!([{ "name": "edges", "min": 2, "max": max, "edges": ["e1", "e2", "e3"], "in_service": in_service,
                     "down": down, "players": 7, "bitrate_out_kbps": 1500 }])
        };
        let c = pool(&p(3, 0, None), "edges", None, None);
        assert_eq!(c.line(), "STREAM OK - pool edges: 3 of 3 edges in service (min 2) | edges_in_service=3;;2:;0 players=7;;;0 bitrate_out=1500000;;;0");
        assert_eq!(pool(&p(2, 1, None), "edges", None, None).state, State::Warning);
        assert_eq!(pool(&p(3, 0, Some(3)), "edges", None, None).state, State::Warning);
        assert_eq!(pool(&p(1, 2, None), "edges", None, None).state, State::Critical);
        let s = json!([{ "app": "live", "key": "cam1", "ingest": "o1", "edges": ["e1", "e2"], "players": 4,
                         "bitrate_in_kbps": 3000, "bitrate_out_kbps": 12000 }]);
        let c = stream(&s, "live/cam1", None, Some("2:".parse().unwrap()));
        assert_eq!(c.state, State::Ok, "{}", c.line());
        assert_eq!(stream(&s, "live/cam1", None, Some("3:".parse().unwrap())).state, State::Critical);
        let c = stream(&s, "live/other", None, None);
        assert_eq!((c.state, c.text.as_str()), (State::Critical, "stream live/other: NOT INGESTED by any origin"));
    }
}
