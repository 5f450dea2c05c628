//! lbd's read-only console page (served on its API listener): `lbctl list`, `stats` and `events` as HTML, on the
//! blocks of `svc::console` (whose services table the stream manager's console shows too).

use svc::console::{badge, esc, si, table};

use crate::api::{ServiceView, StatsView};
use crate::events::Event;

/// The services table (shared with the stream manager's console, so it lives in svc).
pub use svc::console::services_table;

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
