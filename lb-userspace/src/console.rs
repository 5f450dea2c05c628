//! lbd's read-only console page (served on its API listener) and the services table the stream manager's console
//! shows for each LB node: one rendering of `lbctl list`'s data as HTML, on the blocks of `svc::console`.

use std::net::IpAddr;

use svc::console::{badge, esc, si, table};

use crate::api::{ServiceView, StatsView};
use crate::events::Event;

/// Services and their reals with health, drain, weight, last check, active flows and traffic; `label` names a real
/// (the manager puts the edge's name there).
pub fn services_table(list: &[ServiceView], label: impl Fn(IpAddr) -> String) -> String {
    let mut rows = Vec::new();
    for s in list {
        rows.push(vec![
            format!("<b>{} {}</b>", s.proto, esc(&std::net::SocketAddr::new(s.vip, s.port).to_string())),
            badge(if s.usable_reals > 0 { "up" } else { "down" }),
            format!("{} of {} usable", s.usable_reals, s.reals.len()),
            esc(&s.check),
            s.active_flows.to_string(),
            si(s.counters.packets as f64),
            si(s.counters.bytes as f64) + "B",
        ]);
        for r in &s.reals {
            rows.push(vec![
                format!("&nbsp;&nbsp;{} {}", esc(&r.addr.to_string()), esc(&label(r.addr))),
                badge(if r.drained { "drained" } else { &r.state }),
                format!("weight {}", r.weight),
                esc(r.last_check.as_deref().unwrap_or("")),
                r.active_flows.to_string(),
                si(r.counters.packets as f64),
                si(r.counters.bytes as f64) + "B",
            ]);
        }
    }
    table(&["service / real", "state", "reals / weight", "check", "active flows", "packets", "bytes"], &rows)
}

/// The body of lbd's console page: what `lbctl stats`, `list` and `events` show, as tables.
pub fn console_body(list: &[ServiceView], stats: Option<&StatsView>, events: &[Event]) -> String {
    let mut b = String::new();
    if let Some(s) = stats {
        let rows = vec![vec![
            esc(&s.iface),
            esc(&s.xdp_mode),
            s.services.to_string(),
            s.reals.to_string(),
            format!("{} of {}", s.conn_table_entries, s.conn_table_size),
            si(s.forwarded.packets as f64),
            badge(if s.maintenance { "maintenance" } else { "up" }),
            esc(&s.announced.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")),
        ]];
        b.push_str("<section id=\"node\"><h2>This LB node</h2>");
        b.push_str(&table(&["interface", "XDP", "services", "reals", "flows", "packets", "state", "announced"], &rows));
        b.push_str("</section>");
    }
    b.push_str("<section id=\"lb\"><h2>Services</h2>");
    b.push_str(&services_table(list, |_| String::new()));
    b.push_str("</section>");
    let rows: Vec<Vec<String>> = events
        .iter()
        .rev()
        .map(|e| {
            let what = e.service.clone().unwrap_or_default() + &e.real.map(|r| format!(" {r}")).unwrap_or_default();
            vec![esc(&e.time), esc(e.kind.as_str()), esc(&what), esc(&e.reason)]
        })
        .collect();
    b.push_str("<section id=\"events\"><h2>Events</h2>");
    b.push_str(&table(&["time", "kind", "service / real", "reason"], &rows));
    b.push_str("</section>");
    b
}
