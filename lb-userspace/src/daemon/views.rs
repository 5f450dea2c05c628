//! What lbd shows: `lbctl list`, `lbctl stats` and the Prometheus text of `lbd --metrics`, read from the services,
//! the dataplane's counters and a census of the connection table.

use super::core::Lb;
use super::maps::Maps;
use super::service::out_reason;
use crate::api::{counters_view, CountersView, RealView, Response, ServiceView, StatsView};
use crate::dataplane::conntable::Census;
use crate::health::Health;
use crate::model::ServiceKey;
use crate::netinfo::format_mac;
use lb_common::global;
use std::net::IpAddr;
use svc::metrics::{render, Family, Labels};

/// A flow counts as active in `list` and metrics when a packet was seen this recently.
pub const ACTIVE_FLOW_SECS: u64 = 120;

fn service_labels(s: &ServiceKey) -> Labels {
    vec![("vip", s.vip.to_string()), ("port", s.port.to_string()), ("proto", s.proto.to_string().to_lowercase())]
}

/// The health the API shows for what the control task believes (the same three states, kept apart so the health
/// checks can change without changing the wire).
fn health_view(h: Health) -> api_types::lb::Health {
    match h {
        Health::Unknown => api_types::lb::Health::Unknown,
        Health::Up => api_types::lb::Health::Up,
        Health::Down => api_types::lb::Health::Down,
    }
}

/// The dataplane's global counters, by what the program did with the packets.
const ACTIONS: [(&str, u32); 7] = [
    ("forwarded", global::TX),
    ("icmp_forwarded", global::TX_ICMP),
    ("pass_ipv6_ext_headers", global::PASS_EXT_HEADERS),
    ("pass_not_vip", global::PASS_NOT_VIP),
    ("pass_malformed", global::PASS_MALFORMED),
    ("pass_frag_or_options", global::PASS_FRAG_OR_OPTIONS),
    ("pass_no_real", global::PASS_NO_REAL),
];

impl<M: Maps> Lb<M> {
    pub fn list(&self, census: &Census) -> Response {
        let mut out = Vec::new();
        for s in self.services.values() {
            let mut reals = Vec::new();
            let (mut flows, mut usable) = (0, 0);
            for (addr, r) in &s.reals {
                let slot = self.reals.get(addr);
                let active = slot.map_or(0, |sl| census.active(s.slot, sl.id));
                flows += active;
                let out_reason = out_reason(slot, r);
                usable += out_reason.is_none() as usize;
                reals.push(RealView {
                    addr: *addr,
                    weight: r.spec.weight,
                    mac: slot.and_then(|sl| sl.mac).map(|m| format_mac(&m)),
                    state: out_reason.unwrap_or("up").into(),
                    health: health_view(r.health.tracker.health),
                    drained: r.spec.drained,
                    last_check: r.health.last_detail.clone(),
                    check_us: r.health.last_latency.map(|d| d.as_micros() as u64),
                    active_flows: active,
                    counters: counters_view(self.maps.dest_counters(r.dest)),
                });
            }
            out.push(ServiceView {
                vip: s.key.vip,
                port: s.key.port,
                proto: s.key.proto,
                check: s.check.summary(),
                persistent: s.persist,
                usable_reals: usable,
                active_flows: flows,
                counters: counters_view(self.maps.service_counters(s.slot)),
                reals,
            });
        }
        let mut r = Response::ok(format!("{} service(s)", out.len()));
        r.list = Some(out);
        r
    }

    pub fn stats(&self, census: &Census) -> Response {
        let g = self.maps.global_counters();
        let at = |i: u32| -> CountersView { counters_view(g.get(i as usize).copied().unwrap_or_default()) };
        let mut r = Response::ok("stats");
        r.stats = Some(Box::new(StatsView {
            iface: self.iface.name.clone(),
            xdp_mode: self.mode.to_string(),
            services: self.services.len(),
            reals: self.reals.len(),
            conn_table_entries: census.entries,
            conn_table_size: self.maps.conn_table_size(),
            forwarded: at(global::TX),
            passed_not_vip: at(global::PASS_NOT_VIP),
            passed_malformed: at(global::PASS_MALFORMED),
            passed_frag_or_options: at(global::PASS_FRAG_OR_OPTIONS),
            passed_no_real: at(global::PASS_NO_REAL),
            icmp_forwarded: at(global::TX_ICMP),
            passed_ipv6_ext_headers: at(global::PASS_EXT_HEADERS),
            flows_expired: self.flows_expired,
            maintenance: self.maintenance,
            announced: self.announced.iter().copied().collect(),
            announce_table: self.announce.map(|(_, t)| t),
            sync: self.sync_stats.as_ref().map(|s| s.snapshot().iter().map(|(k, v)| (k.to_string(), *v)).collect()),
            sync_peers: self.sync_peers.clone(),
            version: Some(svc::version::LONG.to_string()),
            // The HTTP API fills it in: the fence is there.
            manager_term: None,
        }));
        r
    }

    /// The Prometheus text of `lbd --metrics`.
    pub fn metrics(&self, census: &Census) -> String {
        let mut svc_packets = Family::counter("lbd_service_packets_total", "Packets forwarded to the service's reals.");
        let mut svc_bytes =
            Family::counter("lbd_service_bytes_total", "Bytes (whole frames) forwarded to the service's reals.");
        let mut svc_flows = Family::counter("lbd_service_new_flows_total", "Flows entered into the connection table (a TCP connection at its first ACK, a UDP flow at its first datagram).");
        let mut svc_usable = Family::gauge(
            "lbd_service_usable_reals",
            "Reals taking new flows (not down, drained, weight 0 or unresolved).",
        );
        let mut svc_up = Family::gauge(
            "lbd_service_up",
            "1 while at least one real takes new flows; 0 means the kernel resets new connections to the VIP.",
        );
        let mut real_up = Family::gauge("lbd_real_up", "1 unless the real's health check has it down.");
        let mut real_usable = Family::gauge("lbd_real_usable", "1 when the real takes new flows of the service.");
        let mut real_drained = Family::gauge("lbd_real_drained", "1 when the real is drained (lbctl drain).");
        let mut real_weight = Family::gauge("lbd_real_weight", "Configured Maglev weight.");
        let mut real_active = Family::gauge(
            "lbd_real_active_flows",
            "Connection-table flows of the service on the real, active in the last 120 s.",
        );
        let mut check_latency = Family::gauge("lbd_real_check_duration_seconds", "Duration of the last health check.");
        let mut checks = Family::counter("lbd_real_checks_total", "Health checks run, by result.");
        let mut real_packets = Family::counter(
            "lbd_real_packets_total",
            "Packets of the service forwarded to the real (reset when the real is removed from the service).",
        );
        let mut real_bytes = Family::counter("lbd_real_bytes_total", "Bytes of the service forwarded to the real.");
        let mut real_flows =
            Family::counter("lbd_real_new_flows_total", "New flows of the service placed on the real.");
        let mut expired = Family::counter(
            "lbd_flows_expired_total",
            "Connection-table entries removed by the flow sweep (idle flows of removed reals, idle UDP flows, expired persistence templates).",
        );
        expired.add(vec![], self.flows_expired as f64);
        let mut announced = Family::gauge(
            "lbd_vip_announced",
            "1 while the VIP's route is announced to the routing daemon (route health injection), 0 when withdrawn.",
        );
        let maintenance =
            Family::gauge("lbd_maintenance", "1 while this LB node is in maintenance (nothing announced).")
                .with(vec![], self.maintenance as u8 as f64);
        let mut sync_entries =
            Family::counter("lbd_sync_entries_total", "Flow-state sync entries, by what happened to them.");
        let mut sync_dropped = Family::counter(
            "lbd_sync_dropped_total",
            "Flow-state sync entries (auth: datagrams) dropped: over the rate, failing authentication, or naming a service or real this node lacks.",
        );
        if let Some(st) = &self.sync_stats {
            for (k, v) in st.snapshot() {
                if let Some(reason) = k.strip_prefix("dropped_") {
                    sync_dropped.add(vec![("reason", reason.into())], v as f64);
                } else {
                    sync_entries.add(vec![("what", k.into())], v as f64);
                }
            }
        }
        if self.announce.is_some() {
            let vips: std::collections::BTreeSet<IpAddr> = self.services.keys().map(|k| k.vip).collect();
            for vip in vips {
                announced.add(vec![("vip", vip.to_string())], self.announced.contains(&vip) as u8 as f64);
            }
        }
        for s in self.services.values() {
            let c = self.maps.service_counters(s.slot);
            svc_packets.add(service_labels(&s.key), c.packets as f64);
            svc_bytes.add(service_labels(&s.key), c.bytes as f64);
            svc_flows.add(service_labels(&s.key), c.new_flows as f64);
            let mut usable = 0;
            for (addr, r) in &s.reals {
                let mut l = service_labels(&s.key);
                l.push(("real", addr.to_string()));
                let slot = self.reals.get(addr);
                let ok = out_reason(slot, r).is_none();
                usable += ok as usize;
                real_up.add(l.clone(), (r.health.tracker.health != Health::Down) as u8 as f64);
                real_usable.add(l.clone(), ok as u8 as f64);
                real_drained.add(l.clone(), r.spec.drained as u8 as f64);
                real_weight.add(l.clone(), r.spec.weight as f64);
                real_active.add(l.clone(), slot.map_or(0, |sl| census.active(s.slot, sl.id)) as f64);
                let c = self.maps.dest_counters(r.dest);
                real_packets.add(l.clone(), c.packets as f64);
                real_bytes.add(l.clone(), c.bytes as f64);
                real_flows.add(l.clone(), c.new_flows as f64);
                // A real shows check figures from its first result on.
                if r.health.passed + r.health.failed > 0 {
                    if let Some(d) = r.health.last_latency {
                        check_latency.add(l.clone(), d.as_secs_f64());
                    }
                    let mut pass = l.clone();
                    pass.push(("result", "pass".into()));
                    checks.add(pass, r.health.passed as f64);
                    let mut fail = l;
                    fail.push(("result", "fail".into()));
                    checks.add(fail, r.health.failed as f64);
                }
            }
            svc_usable.add(service_labels(&s.key), usable as f64);
            svc_up.add(service_labels(&s.key), (usable > 0) as u8 as f64);
        }
        let g = self.maps.global_counters();
        let mut packets =
            Family::counter("lbd_packets_total", "Packets seen by the XDP program, by what it did with them.");
        let mut bytes = Family::counter("lbd_bytes_total", "Bytes seen by the XDP program, by what it did with them.");
        for (action, i) in ACTIONS {
            let c = g.get(i as usize).copied().unwrap_or_default();
            packets.add(vec![("action", action.into())], c.packets as f64);
            bytes.add(vec![("action", action.into())], c.bytes as f64);
        }
        let conn =
            Family::gauge("lbd_conn_table_entries", "Entries in the connection table (LRU; idle ones included).")
                .with(vec![], census.entries as f64);
        let conn_cap = Family::gauge("lbd_conn_table_capacity", "Size of the connection table.")
            .with(vec![], self.maps.conn_table_size() as f64);
        let events = Family::counter("lbd_events_total", "State-change events recorded since lbd started.")
            .with(vec![], self.events.total() as f64);
        render(&[
            svc_packets,
            svc_bytes,
            svc_flows,
            svc_usable,
            svc_up,
            real_up,
            real_usable,
            real_drained,
            real_weight,
            real_active,
            check_latency,
            checks,
            real_packets,
            real_bytes,
            real_flows,
            packets,
            bytes,
            conn,
            conn_cap,
            expired,
            announced,
            maintenance,
            sync_entries,
            sync_dropped,
            events,
        ])
    }
}
