//! The manager's Prometheus families (names fixed with the alert rules in scripts/prometheus/rules/manager.yml).

use svc::metrics::{render as text, Family};

use crate::cluster::{Cluster, Health};
use crate::config::Role;
use crate::events::AlarmKind;

pub fn render(c: &Cluster) -> String {
    let mut up = Family::gauge("sm_node_up", "1 while the node answers its keepalives.");
    let mut state =
        Family::gauge("sm_node_state", "1 for the node's current state (up, down, maintenance, draining, unknown).");
    let mut players = Family::gauge("sm_node_players", "Players on the node (edges: viewers; origins: pulling edges).");
    let mut out = Family::gauge("sm_node_bitrate_out_bps", "The node's outbound bit rate.");
    for n in c.nodes.values() {
        let l = || vec![("node", n.spec.name.clone()), ("role", n.spec.role.as_str().to_string())];
        up.add(l(), if n.health == Health::Up { 1.0 } else { 0.0 });
        for s in ["up", "down", "maintenance", "draining", "unknown"] {
            let mut lab = l();
            lab.push(("state", s.to_string()));
            state.add(lab, if n.state() == s { 1.0 } else { 0.0 });
        }
        let st = n.status.as_ref();
        players.add(l(), st.map_or(0, |s| s.players) as f64);
        out.add(l(), st.map_or(0, |s| s.bitrate_out_kbps * 1000) as f64);
    }
    let mut has_active = Family::gauge("sm_group_has_active", "1 while the origin group has an active member.");
    let mut active = Family::gauge("sm_group_active", "1 for the group's active member.");
    let mut failovers = Family::counter("sm_failovers_total", "Failovers of the group (its active member went down).");
    let mut ingesting =
        Family::gauge("sm_stream_ingesting", "1 while the group's active origin ingests the configured source.");
    for g in &c.config.groups {
        let rt = &c.groups[&g.name];
        has_active.add(vec![("group", g.name.clone())], if rt.active.is_some() { 1.0 } else { 0.0 });
        for m in &g.members {
            let is = rt.active.as_deref() == Some(m.node.as_str());
            active.add(vec![("group", g.name.clone()), ("node", m.node.clone())], if is { 1.0 } else { 0.0 });
        }
        failovers.add(vec![("group", g.name.clone())], rt.failovers as f64);
        let have = rt.active.as_ref().and_then(|a| c.nodes.get(a)).map(|n| n.ingesting(&g.app)).unwrap_or_default();
        for s in &g.sources {
            let l = vec![("group", g.name.clone()), ("app", g.app.clone()), ("key", s.key.clone())];
            ingesting.add(l, if have.contains(&s.key) { 1.0 } else { 0.0 });
        }
    }
    let mut pool_edges = Family::gauge("sm_pool_edges", "Edges of the pool in service (up, not in maintenance).");
    let mut pool_min = Family::gauge("sm_pool_min", "The pool's configured minimum.");
    let mut pool_max = Family::gauge(
        "sm_pool_max",
        "The pool's configured maximum (its minimum's edges count until autoscaling sets one).",
    );
    for p in &c.config.pools {
        let edges = c.pool_edges(&p.name);
        let l = || vec![("pool", p.name.clone())];
        pool_edges.add(l(), edges.iter().filter(|n| n.eligible()).count() as f64);
        pool_min.add(l(), p.min as f64);
        if let Some(max) = p.max {
            pool_max.add(l(), max as f64);
        }
    }
    let (raised, _) = c.log.alarms();
    let mut alarms = Family::gauge("sm_alarms_active", "Alarms raised now, by kind.");
    for k in AlarmKind::ALL {
        alarms.add(vec![("kind", k.as_str())], raised.iter().filter(|a| a.kind == k).count() as f64);
    }
    let mut events = Family::counter("sm_events_total", "Events written since the manager started, by kind.");
    for (k, n) in &c.log.counts {
        events.add(vec![("kind", k.as_str())], *n as f64);
    }
    let edges = c.nodes.values().filter(|n| n.spec.role == Role::Edge).count();
    let nodes = Family::gauge("sm_edges", "Edges known (configured and registered).").with(vec![], edges as f64);
    text(&[
        up, state, players, out, has_active, active, failovers, ingesting, pool_edges, pool_min, pool_max, alarms,
        events, nodes,
    ])
}

/// This smd's part in an HA deployment (always leading with a file store).
pub fn leadership(l: &crate::leader::Leadership) -> String {
    let now = std::time::Instant::now();
    let leader = Family::gauge("sm_leader", "1 while this smd leads (acts); 0 while it follows.")
        .with(vec![("smd", l.me.name.clone())], if l.acting(now) { 1.0 } else { 0.0 });
    let term = Family::gauge("sm_leader_term", "The leader's term as this smd knows it (0 with a file store).")
        .with(vec![], l.term as f64);
    let up = Family::gauge("sm_store_up", "1 while the store (etcd) answers; always 1 with a file store.")
        .with(vec![], if l.store_up() { 1.0 } else { 0.0 });
    text(&[leader, term, up])
}

#[cfg(test)]
mod tests {
    use crate::cluster::tests::{config, ok_origin, CAMS};
    use crate::cluster::{Cluster, Observation, Persisted};
    use std::time::{Duration, Instant};

    #[test]
    fn the_families_parse_and_follow_the_cluster() {
        let t0 = Instant::now();
        let mut c = Cluster::new(config(&CAMS.replace("FAILBACK", "true")), Persisted::default(), t0);
        c.observe("o1", ok_origin(&[("live", "cam1")]), t0);
        c.observe("o2", ok_origin(&[]), t0);
        c.observe("e1", Observation::Failed("refused".into()), t0);
        c.plan(t0);
        c.observe("e1", Observation::Failed("refused".into()), t0 + Duration::from_secs(4));
        c.plan(t0 + Duration::from_secs(4));
        let m = svc::metrics::parse(&super::render(&c)).unwrap();
        let get = |name: &str, want: &[(&str, &str)]| {
            m[name]
                .iter()
                .find(|(l, _)| want.iter().all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v)))
                .map(|(_, v)| *v)
        };
        assert_eq!(get("sm_node_up", &[("node", "o1"), ("role", "origin")]), Some(1.0));
        assert_eq!(get("sm_node_up", &[("node", "e1")]), Some(0.0));
        assert_eq!(get("sm_node_state", &[("node", "e1"), ("state", "down")]), Some(1.0));
        assert_eq!(get("sm_group_has_active", &[("group", "cams")]), Some(1.0));
        assert_eq!(get("sm_group_active", &[("group", "cams"), ("node", "o1")]), Some(1.0));
        assert_eq!(get("sm_group_active", &[("group", "cams"), ("node", "o2")]), Some(0.0));
        assert_eq!(get("sm_stream_ingesting", &[("group", "cams"), ("key", "cam1")]), Some(1.0));
        assert_eq!(get("sm_pool_edges", &[("pool", "edges")]), Some(0.0));
        assert_eq!(get("sm_pool_min", &[("pool", "edges")]), Some(2.0));
        assert_eq!(get("sm_alarms_active", &[("kind", "node-down")]), Some(1.0));
        assert_eq!(get("sm_alarms_active", &[("kind", "pool-below-min")]), Some(1.0));
        assert!(get("sm_events_total", &[("kind", "failover")]).is_none(), "no failover happened");
        assert!(m.get("sm_pool_max").is_none_or(|v| v.is_empty()), "no max configured: no sample");
    }
}
