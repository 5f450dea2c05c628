//! Process-wide counters and their Prometheus text rendering for `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::hub::Hub;

/// Counters are plain atomics: they are bumped on hot paths and read only by the API.
#[derive(Default)]
pub struct Metrics {
    pub connections_total: AtomicU64,
    pub connections_active: AtomicU64,
    /// Refused at accept because `--max-connections` was reached.
    pub connections_refused_limit: AtomicU64,
    /// Closed because of malformed or over-limit input (handshake, chunk, AMF).
    pub protocol_errors: AtomicU64,
    pub publishes_refused: AtomicU64,
    pub players_total: AtomicU64,
    /// Players disconnected because they stopped reading.
    pub players_stalled: AtomicU64,
    /// Frames a slow player skipped to catch up at the next keyframe.
    pub frames_skipped: AtomicU64,
    pub upstream_connects: AtomicU64,
    pub upstream_failures: AtomicU64,
    pub upstream_active: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, hub: &Hub, role: &str) -> String {
        let mut o = String::new();
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut line = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                o,
                "# HELP relay_{name} {help}\n# TYPE relay_{name} {kind}\nrelay_{name}{{role=\"{role}\"}} {v}"
            );
        };
        line("connections_total", "counter", "RTMP connections accepted.", g(&self.connections_total));
        line("connections_active", "gauge", "RTMP connections open now.", g(&self.connections_active));
        line(
            "connections_refused_total",
            "counter",
            "Connections refused at --max-connections.",
            g(&self.connections_refused_limit),
        );
        line(
            "protocol_errors_total",
            "counter",
            "Connections closed for malformed or over-limit input.",
            g(&self.protocol_errors),
        );
        line(
            "publishes_refused_total",
            "counter",
            "Publish requests refused (key live, bad token).",
            g(&self.publishes_refused),
        );
        line("players_total", "counter", "Play requests accepted.", g(&self.players_total));
        line("players_stalled_total", "counter", "Players disconnected for not reading.", g(&self.players_stalled));
        line(
            "frames_skipped_total",
            "counter",
            "Frames dropped so a slow player resumes at a keyframe.",
            g(&self.frames_skipped),
        );
        line(
            "upstream_connects_total",
            "counter",
            "Upstream pull connections that reached playing.",
            g(&self.upstream_connects),
        );
        line(
            "upstream_failures_total",
            "counter",
            "Upstream pull attempts or sessions that failed.",
            g(&self.upstream_failures),
        );
        line("upstream_active", "gauge", "Upstream pull connections playing now.", g(&self.upstream_active));
        line("bytes_in_total", "counter", "Bytes received on RTMP connections.", g(&self.bytes_in));
        line("bytes_out_total", "counter", "Bytes sent on RTMP connections.", g(&self.bytes_out));
        let views = hub.views();
        line("streams", "gauge", "Streams known now.", views.len() as u64);
        let _ = writeln!(o, "# HELP relay_stream_players Players of a stream.\n# TYPE relay_stream_players gauge");
        for v in &views {
            let _ = writeln!(
                o,
                "relay_stream_players{{role=\"{role}\",app=\"{}\",key=\"{}\"}} {}",
                esc(&v.app),
                esc(&v.key),
                v.players
            );
        }
        let _ = writeln!(o, "# HELP relay_stream_bitrate_in_bps Incoming bitrate of a stream.\n# TYPE relay_stream_bitrate_in_bps gauge");
        for v in &views {
            let _ = writeln!(
                o,
                "relay_stream_bitrate_in_bps{{role=\"{role}\",app=\"{}\",key=\"{}\"}} {}",
                esc(&v.app),
                esc(&v.key),
                v.bitrate_in_kbps * 1000
            );
        }
        o
    }
}

/// Label values come from clients (app/key), so quote-escape them.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
