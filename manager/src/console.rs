//! The operator console the manager serves at `/`: the load balancer, origin groups, edges and pools, streams,
//! alarms, the event history and graphs, one page that refreshes itself. Read-only for everyone who reaches it;
//! maintenance buttons work for a holder of the API token (the page sends it from the tab's session storage).
//! Also the sampler that feeds the graphs' history.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use svc::console::{badge, chart, esc, si, table, Line};

use crate::cluster::{Cluster, Health, NodeRt};
use crate::config::Role;
use crate::history::History;

/// Page options from the query string.
#[derive(Debug, Default, serde::Deserialize)]
pub struct View {
    /// Graph span: 1h (default), 6h, 24h, 7d, 30d.
    pub span: Option<String>,
    /// Event filter: kind and subject.
    pub kind: Option<String>,
    pub subject: Option<String>,
    /// The page of the nodes table (from 1): nodes that need attention come first.
    pub page: Option<usize>,
}

/// Nodes per page of the console's node table; the per-edge graphs show at most this many edges of the page.
pub const NODES_PER_PAGE: usize = 100;
const EDGES_GRAPHED: usize = 20;

impl View {
    /// What makes two renders of the page differ (besides the cluster): the render cache's key.
    pub fn key(&self) -> String {
        format!("{:?}|{:?}|{:?}|{:?}", self.span, self.kind, self.subject, self.page)
    }
}

fn span_of(v: &View) -> (Duration, &'static str) {
    match v.span.as_deref() {
        Some("6h") => (Duration::from_secs(6 * 3600), "6h"),
        Some("24h") => (Duration::from_secs(86_400), "24h"),
        Some("7d") => (Duration::from_secs(7 * 86_400), "7d"),
        Some("30d") => (Duration::from_secs(30 * 86_400), "30d"),
        _ => (Duration::from_secs(3600), "1h"),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn hms(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

fn ago(unix: Option<u64>) -> String {
    match unix {
        None => "never".into(),
        Some(t) => {
            let d = unix_now().saturating_sub(t);
            if d < 120 {
                format!("{d} s ago")
            } else if d < 7200 {
                format!("{} min ago", d / 60)
            } else {
                format!("{} h ago", d / 3600)
            }
        }
    }
}

/// A process age: 45 s, 12 min, 3 h, 2 d.
fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

fn post_button(label: &str, url: &str) -> String {
    format!("<button class=\"act\" data-post=\"{}\">{}</button>", esc(url), esc(label))
}

/// The whole page.
pub fn render(c: &Cluster, h: &History, view: &View, refresh: Duration) -> String {
    render_with(c, h, view, refresh, None)
}

/// The page, saying which smd leads and which one drew it (HA on etcd).
pub fn render_with(
    c: &Cluster,
    h: &History,
    view: &View,
    refresh: Duration,
    lead: Option<&api_types::manager::LeaderView>,
) -> String {
    let (span, span_name) = span_of(view);
    let mut b = String::new();
    b.push_str("<p id=\"msg\"></p>");
    let (raised, cleared) = c.log.alarms();
    let _ = write!(
        b,
        "<section id=\"summary\"><h2>Cluster</h2>{} nodes, {} groups, {} alarms raised {}</section>",
        c.nodes.len(),
        c.config.groups.len(),
        raised.len(),
        if raised.is_empty() { badge("ok") } else { badge("raised") }
    );
    if let Some(l) = lead.filter(|l| l.store == "etcd") {
        let leader = match &l.leader {
            Some(name) => format!("{} leads (term {})", esc(name), l.term),
            None => "no smd leads right now (election in progress or etcd unreachable)".to_string(),
        };
        let me = format!(
            "this page is from {} ({}{})",
            esc(&l.me),
            if l.leading { "the leader" } else { "a follower" },
            if l.store_ok { "" } else { ", etcd UNREACHABLE" }
        );
        let _ = write!(b, "<p id=\"leader\">{leader}; {me}</p>");
    }

    // Alarms first: what needs attention.
    let mut rows: Vec<Vec<String>> = raised
        .iter()
        .map(|a| {
            vec![
                badge("raised"),
                esc(&a.kind.as_str()),
                esc(&a.subject),
                esc(&a.message),
                hms(a.raised_ms),
                String::new(),
            ]
        })
        .collect();
    rows.extend(cleared.iter().take(10).map(|a| {
        vec![
            badge("cleared"),
            esc(&a.kind.as_str()),
            esc(&a.subject),
            esc(&a.message),
            hms(a.raised_ms),
            a.cleared_ms.map(hms).unwrap_or_default(),
        ]
    }));
    let _ = write!(
        b,
        "<section id=\"alarms\"><h2>Alarms</h2>{}</section>",
        table(&["", "kind", "subject", "message", "raised (UTC)", "cleared"], &rows)
    );

    // The load balancer.
    b.push_str("<section id=\"lb\"><h2>Load balancer</h2>");
    if c.config.lb.is_none() {
        b.push_str("<p class=\"dim\">no [lb] configured</p>");
    }
    for api in c.config.lb.iter().flat_map(|l| &l.apis) {
        let api = api.to_string();
        match c.lb.get(&api).and_then(Option::as_ref) {
            None => {
                let _ = write!(b, "<h3>{} lbd at {}</h3><p>not reachable</p>", badge("down"), esc(&api));
            }
            Some(view) => {
                let _ = write!(b, "<h3>{} lbd at {}</h3>", badge("up"), esc(&api));
                b.push_str(&lb_table(c, view));
            }
        }
    }
    b.push_str("</section>");

    // Origin groups.
    b.push_str("<section id=\"groups\"><h2>Origin groups</h2>");
    for g in &c.config.groups {
        let rt = &c.groups[&g.name];
        let _ = write!(
            b,
            "<h3 data-group=\"{n}\">{n} <span class=\"dim\">app {app}, failback {fb}, failovers {f}</span> active: <b data-active=\"{n}\">{a}</b>{ho}</h3>",
            n = esc(&g.name),
            app = esc(&g.app),
            fb = if g.failback { "on" } else { "off" },
            f = rt.failovers,
            a = esc(rt.active.as_deref().unwrap_or("none")),
            ho = rt.handover.as_ref().map(|h| format!(" (handover to {}: {})", esc(&h.to), h.reason)).unwrap_or_default()
        );
        let have = rt.active.as_ref().and_then(|a| c.nodes.get(a)).map(|n| n.ingesting(&g.app)).unwrap_or_default();
        let rows: Vec<Vec<String>> = g
            .by_priority()
            .iter()
            .map(|m| {
                let n = c.nodes.get(&m.node);
                let role = if rt.active.as_deref() == Some(m.node.as_str()) { "active" } else { "standby" };
                vec![esc(&m.node), m.priority.to_string(), badge(role), badge(n.map_or("unknown", NodeRt::state))]
            })
            .collect();
        b.push_str(&table(&["member", "priority", "role", "state"], &rows));
        let rows: Vec<Vec<String>> = g
            .sources
            .iter()
            .map(|s| {
                vec![
                    esc(&s.key),
                    esc(&crate::config::redact(&s.url)),
                    badge(if have.contains(&s.key) { "ingesting" } else { "no" }),
                ]
            })
            .collect();
        if !rows.is_empty() {
            b.push_str(&table(&["source", "url", "ingested"], &rows));
        }
        let hist: Vec<Vec<String>> = c
            .log
            .events(usize::MAX, None, Some(&g.name))
            .into_iter()
            .filter(|e| {
                matches!(
                    e.kind.as_str().as_str(),
                    "failover" | "failback" | "handover-done" | "handover-started" | "group-active"
                )
            })
            .take(5)
            .map(|e| vec![hms(e.time_ms), esc(&e.kind.as_str()), esc(&e.message)])
            .collect();
        if !hist.is_empty() {
            b.push_str(&table(&["time (UTC)", "failover history", ""], &hist));
        }
    }
    b.push_str("</section>");

    // Nodes: origins and edges with their pools, a page at a time (a registration flood must not make the page
    // megabytes): those that need attention (not up, or in maintenance) first, then by name.
    b.push_str("<section id=\"nodes\"><h2>Origins and edges</h2>");
    let mut order: Vec<&NodeRt> = c.nodes.values().collect();
    order.sort_by_key(|n| n.state() == "up");
    let attention = order.iter().filter(|n| n.state() != "up").count();
    let pages = order.len().div_ceil(NODES_PER_PAGE).max(1);
    let page = view.page.unwrap_or(1).clamp(1, pages);
    let shown: Vec<&NodeRt> = order.iter().skip((page - 1) * NODES_PER_PAGE).take(NODES_PER_PAGE).copied().collect();
    let _ = write!(
        b,
        "<p class=\"dim\" id=\"node-count\">{} nodes ({} origins, {} edges), {attention} need attention; page {page} of {pages}",
        order.len(),
        order.iter().filter(|n| n.spec.role == Role::Origin).count(),
        order.iter().filter(|n| n.spec.role == Role::Edge).count(),
    );
    if page > 1 {
        let _ = write!(b, " <a href=\"?page={}\">previous</a>", page - 1);
    }
    if page < pages {
        let _ = write!(b, " <a href=\"?page={}\">next</a>", page + 1);
    }
    b.push_str("</p>");
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|n| {
            let st = n.status.as_ref();
            let pool =
                if n.spec.role == Role::Edge { c.config.pool_of(&n.spec).unwrap_or_default() } else { String::new() };
            let name = esc(&n.spec.name);
            let action = if n.maintenance.is_some() {
                post_button("resume", &format!("/api/v1/nodes/{}/resume", n.spec.name))
            } else {
                post_button("maintenance", &format!("/api/v1/nodes/{}/maintenance", n.spec.name))
            };
            vec![
                format!("<span data-node=\"{name}\">{name}</span>"),
                n.spec.role.as_str().to_string(),
                badge(n.state()),
                esc(&pool),
                esc(&n.spec.rtmp.to_string()),
                st.map_or(0, |s| s.streams.len()).to_string(),
                st.map_or(0, |s| s.players).to_string(),
                si(st.map_or(0, |s| s.bitrate_out_kbps) as f64 * 1000.0) + "bit/s",
                st.map_or("-".into(), |s| age(s.uptime_secs)),
                ago(n.last_seen_unix),
                esc(st.and_then(|s| s.version.as_deref()).unwrap_or("-")),
                action,
            ]
        })
        .collect();
    b.push_str(&table(
        &["node", "role", "state", "pool", "rtmp", "streams", "players", "out", "age", "last seen", "version", ""],
        &rows,
    ));
    let prow: Vec<Vec<String>> = c
        .pools()
        .into_iter()
        .map(|p| {
            let scaling = p
                .started
                .iter()
                .map(|n| {
                    let what = if p.stopping.contains(n) {
                        "stopping"
                    } else if p.starting.contains(n) {
                        "starting"
                    } else {
                        "started"
                    };
                    let stop = if what == "started" {
                        post_button("stop", &format!("/api/v1/pools/{}/stop/{n}", p.name))
                    } else {
                        String::new()
                    };
                    format!("{} {}{stop}", esc(n), badge(what))
                })
                .collect::<Vec<_>>()
                .join(" ");
            let autoscaled = c.config.pools.iter().any(|x| x.name == p.name && x.scale.is_some());
            vec![
                esc(&p.name),
                format!("{} of {}", p.in_service, p.edges.len()),
                p.min.to_string(),
                p.max.map_or("-".into(), |m| m.to_string()),
                p.players.to_string(),
                si(p.bitrate_out_kbps as f64 * 1000.0) + "bit/s",
                p.utilisation.map_or("-".into(), |u| format!("{:.0}%", u * 100.0)),
                if autoscaled {
                    format!("{scaling} {}", post_button("start an edge", &format!("/api/v1/pools/{}/start", p.name)))
                } else {
                    scaling
                },
            ]
        })
        .collect();
    b.push_str(&table(&["pool", "in service", "min", "max", "players", "out", "load", "autoscaled edges"], &prow));
    b.push_str("</section>");

    // Streams.
    let rows: Vec<Vec<String>> = c
        .streams()
        .iter()
        .map(|st| {
            let name = format!("{}/{}", st.app, st.key);
            vec![
                format!("<span data-stream=\"{}\">{}</span>", esc(&name), esc(&name)),
                st.ingest.as_deref().map_or(badge("no"), esc),
                esc(&st.edges.join(", ")),
                st.players.to_string(),
                si(st.bitrate_in_kbps as f64 * 1000.0) + "bit/s",
                si(st.bitrate_out_kbps as f64 * 1000.0) + "bit/s",
            ]
        })
        .collect();
    let _ = write!(
        b,
        "<section id=\"streams\"><h2>Streams</h2>{}</section>",
        table(&["stream", "ingested at", "edges", "players", "in", "out"], &rows)
    );

    // Graphs.
    let to = unix_now();
    let from = to.saturating_sub(span.as_secs());
    let _ = write!(b, "<section id=\"graphs\"><h2>Graphs <span class=\"dim\">last {span_name}:");
    for s in ["1h", "6h", "24h", "7d", "30d"] {
        let _ = write!(b, " <a href=\"?span={s}\">{s}</a>");
    }
    b.push_str("</span></h2><div class=\"charts\">");
    let graphed: std::collections::BTreeSet<String> = shown
        .iter()
        .filter(|n| n.spec.role == Role::Edge)
        .take(EDGES_GRAPHED)
        .map(|n| format!("edge/{}/", n.spec.name))
        .collect();
    let series = |prefix: &str, suffix: &str| -> Vec<(String, Vec<(u64, f64)>)> {
        h.names()
            .filter(|n| n.starts_with(prefix) && n.ends_with(suffix))
            .filter(|n| prefix != "edge/" || graphed.contains(&n[..n.len() - suffix.len() + 1]))
            .map(|n| (n[prefix.len()..n.len() - suffix.len()].to_string(), h.points(n, span)))
            .collect()
    };
    for (title, unit, prefix, suffix) in [
        ("Outbound per edge", "bit/s", "edge/", "/out_bps"),
        ("Players per edge", "players", "edge/", "/players"),
        ("Outbound per pool", "bit/s", "pool/", "/out_bps"),
        ("Players per pool", "players", "pool/", "/players"),
        ("Active flows per service", "flows", "service/", "/flows"),
        ("Packets per service", "packets/s", "service/", "/pps"),
    ] {
        let data = series(prefix, suffix);
        let lines: Vec<Line<'_>> = data.iter().map(|(l, p)| Line { label: l, points: p }).collect();
        b.push_str(&chart(title, unit, from, to, &lines));
    }
    b.push_str("</div></section>");

    // Events, filterable.
    let kind = view.kind.as_deref().filter(|k| !k.is_empty());
    let subject = view.subject.as_deref().filter(|k| !k.is_empty());
    let rows: Vec<Vec<String>> = c
        .log
        .events(200, kind, subject)
        .into_iter()
        .map(|e| vec![hms(e.time_ms), esc(&e.kind.as_str()), esc(&e.subject), esc(&e.message)])
        .collect();
    let _ = write!(
        b,
        "<section id=\"events\"><h2>Events</h2><form class=\"f\" method=\"get\"><input name=\"kind\" placeholder=\"kind (e.g. failover)\" value=\"{}\">\
         <input name=\"subject\" placeholder=\"node, group or pool\" value=\"{}\"><button>filter</button></form>{}</section>",
        esc(kind.unwrap_or("")),
        esc(subject.unwrap_or("")),
        table(&["time (UTC)", "kind", "subject", "message"], &rows)
    );
    svc::console::page("Stream cluster", refresh.as_secs().max(1), Some("/console/seq"), &b)
}

/// One LB node's services and reals, each real named by its edge.
fn lb_table(c: &Cluster, view: &[api_types::lb::ServiceView]) -> String {
    svc::console::services_table(view, |addr| {
        c.nodes.values().find(|n| n.spec.rtmp.ip() == addr).map(|n| n.spec.name.clone()).unwrap_or_default()
    })
}

/// Last counter readings per service, to turn the LB's packet counters into rates.
#[derive(Default)]
pub struct Sampler {
    last_packets: BTreeMap<String, (u64, u64)>,
}

impl Sampler {
    /// One sample of everything graphed, at unix time `t`.
    pub fn sample(&mut self, c: &Cluster, h: &mut History, t: u64) {
        // Graphs for edges that have answered at least once (a registration that never came up has none), and
        // none kept for nodes that are gone.
        h.retain(|name| match name.strip_prefix("edge/").and_then(|r| r.rsplit_once('/')) {
            Some((node, _)) => c.nodes.contains_key(node),
            None => true,
        });
        for n in c.nodes.values().filter(|n| n.spec.role == Role::Edge && n.last_ok.is_some()) {
            let (players, out) = match (&n.status, n.health) {
                (Some(s), Health::Up) => (s.players as f64, s.bitrate_out_kbps as f64 * 1000.0),
                _ => (0.0, 0.0),
            };
            h.record(&format!("edge/{}/players", n.spec.name), t, players);
            h.record(&format!("edge/{}/out_bps", n.spec.name), t, out);
        }
        for p in &c.config.pools {
            let edges = c.pool_edges(&p.name);
            let up = edges.iter().filter(|n| n.health == Health::Up).filter_map(|n| n.status.as_ref());
            let (players, out) =
                up.fold((0.0, 0.0), |(a, b), s| (a + s.players as f64, b + s.bitrate_out_kbps as f64 * 1000.0));
            h.record(&format!("pool/{}/players", p.name), t, players);
            h.record(&format!("pool/{}/out_bps", p.name), t, out);
        }
        // Per service over every LB node: flows now, and packets per second from the counters' growth.
        let mut flows: BTreeMap<String, (f64, u64)> = BTreeMap::new();
        for s in c.lb.values().flatten().flatten() {
            let e = flows.entry(format!("{}:{}", fmt_vip(s.vip), s.port)).or_default();
            e.0 += s.active_flows as f64;
            e.1 += s.counters.packets;
        }
        for (name, (f, packets)) in flows {
            h.record(&format!("service/{name}/flows"), t, f);
            if let Some((t0, p0)) = self.last_packets.insert(name.clone(), (t, packets)) {
                if t > t0 && packets >= p0 {
                    h.record(&format!("service/{name}/pps"), t, (packets - p0) as f64 / (t - t0) as f64);
                }
            }
        }
    }
}

fn fmt_vip(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::tests::{config, ok_origin, CAMS};
    use crate::cluster::{Observation, Persisted};
    use std::time::Instant;

    #[test]
    fn the_page_shows_groups_nodes_streams_graphs_and_filtered_events() {
        let t0 = Instant::now();
        let mut c = Cluster::new(config(&CAMS.replace("FAILBACK", "true")), Persisted::default(), t0);
        c.observe("o1", ok_origin(&[("live", "cam1")]), t0);
        c.observe("o2", ok_origin(&[]), t0);
        let edge = crate::cluster::NodeStatus {
            players: 4,
            bitrate_out_kbps: 8000,
            streams: vec![crate::cluster::StreamStatus {
                app: "live".into(),
                key: "cam1".into(),
                players: 4,
                bitrate_out_kbps: 8000,
                ..Default::default()
            }],
            ..Default::default()
        };
        c.observe("e1", Observation::Ok { status: edge, sources: None }, t0);
        c.plan(t0);
        let mut h = History::new(Duration::from_secs(15));
        let mut s = Sampler::default();
        let now = unix_now();
        for k in 0..5 {
            s.sample(&c, &mut h, now - 60 + k * 15);
        }
        let page = render(&c, &h, &View::default(), Duration::from_secs(15));
        assert!(page.contains("data-active=\"cams\">o1</b>"), "the active member");
        assert!(page.contains("<span data-node=\"e1\">e1</span>"));
        assert!(
            page.contains("<span data-stream=\"live/cam1\">live/cam1</span></td><td>o1</td><td>e1</td><td>4</td>"),
            "{page}"
        );
        assert!(page.contains("data-series=\"e1\" data-points=\"5\""), "players per edge has its samples");
        assert!(page.contains("data-post=\"/api/v1/nodes/e1/maintenance\""));
        let filtered =
            render(&c, &h, &View { kind: Some("node-up".into()), ..Default::default() }, Duration::from_secs(15));
        let events = filtered.split("id=\"events\"").nth(1).unwrap();
        assert!(events.contains("node-up") && !events.contains("group-active"), "{events}");
    }

    #[test]
    fn many_nodes_are_paged_with_those_needing_attention_first() {
        let t0 = Instant::now();
        let mut c = Cluster::new(config(&CAMS.replace("FAILBACK", "true")), Persisted::default(), t0);
        c.config.max_registered = 1000;
        for k in 0..1000 {
            let spec = crate::config::NodeSpec {
                name: format!("flood{k:04}"),
                role: Role::Edge,
                api: "http://127.0.0.1:1".into(),
                rtmp: "127.0.0.9:1935".parse().unwrap(),
                http: None,
                pool: None,
            };
            assert_eq!(c.register(spec), Ok(true));
        }
        // Registrations that never answered get no graphs: a flood does not grow the history file.
        let mut h = History::new(Duration::from_secs(15));
        Sampler::default().sample(&c, &mut h, unix_now());
        assert_eq!(h.names().filter(|n| n.starts_with("edge/flood")).count(), 0);
        let page = render(&c, &h, &View::default(), Duration::from_secs(15));
        let rows = page.matches("data-node=").count();
        assert_eq!(rows, NODES_PER_PAGE, "one page of nodes");
        let count = page.split("id=\"node-count\">").nth(1).unwrap().split(" <a").next().unwrap();
        assert!(count.starts_with(&format!("{} nodes (", c.nodes.len())) && count.contains("page 1 of 11"), "{count}");
        assert!(page.contains("href=\"?page=2\">next</a>"));
        assert!(page.len() < 200_000, "page is {} bytes", page.len());
        let last = render(&c, &h, &View { page: Some(11), ..Default::default() }, Duration::from_secs(15));
        assert_eq!(last.matches("data-node=").count(), c.nodes.len() - 1000);
        assert!(last.contains("page 11 of 11") && last.contains("href=\"?page=10\">previous</a>"));
        // Past the end: the last page, not an empty one.
        let past = render(&c, &h, &View { page: Some(99), ..Default::default() }, Duration::from_secs(15));
        assert!(past.contains("page 11 of 11"));
    }
}
