//! Process-wide counters and the families of `GET /metrics`, as Prometheus text through `svc::metrics`.
//!
//! This module knows nothing of the hub: the per-stream gauges are handed in as [`StreamSample`]s by whoever
//! holds both (the API), so the counters can be bumped from every module without an import cycle.

use std::sync::atomic::{AtomicU64, Ordering};

use svc::metrics::{Family, Labels};

/// Counters are plain atomics: they are bumped on hot paths and read only by the API.
#[derive(Default)]
pub struct Metrics {
    pub connections_total: AtomicU64,
    pub connections_active: AtomicU64,
    /// Refused at accept because `--max-connections` was reached.
    pub connections_refused_limit: AtomicU64,
    /// Refused at accept because `--max-connections-per-ip` was reached for the client's IP.
    pub connections_refused_per_ip: AtomicU64,
    /// Closed by --handshake-timeout, --connect-timeout or --conn-idle-timeout.
    pub connections_timed_out: AtomicU64,
    /// Play/publish requests past --max-streams-per-connection.
    pub streams_refused: AtomicU64,
    /// Plays (and API pulls) refused because --max-pulls pulls were running.
    pub pulls_refused: AtomicU64,
    /// API requests refused for a missing or wrong token, or a cross-site Host/Origin.
    pub api_refused: AtomicU64,
    /// Publishes and plays refused by an on_publish/on_play callback (non-2xx, timeout, unreachable).
    pub callbacks_refused: AtomicU64,
    /// Closed because of malformed or over-limit input (handshake, chunk, AMF).
    pub protocol_errors: AtomicU64,
    /// `POST /open/1` answered 503: the client's RTMPT sessions, RTMPT's share or the connection budget were full.
    pub rtmpt_sessions_refused: AtomicU64,
    pub publishes_refused: AtomicU64,
    pub players_total: AtomicU64,
    /// Players disconnected because they stopped reading.
    pub players_stalled: AtomicU64,
    /// Frames a slow player skipped to catch up at the next keyframe.
    pub frames_skipped: AtomicU64,
    /// Edge: upstream connections attempted (each pull session, successful or not).
    pub upstream_attempts: AtomicU64,
    pub upstream_connects: AtomicU64,
    /// Streams that ended without ever receiving media: players told "not found".
    pub streams_not_found: AtomicU64,
    /// Edge: plays answered "not found" from the negative cache, without a pull.
    pub not_found_cache_hits: AtomicU64,
    /// Edge: streams ended because the origin ended them (its publisher left for its grace period).
    pub streams_ended_upstream: AtomicU64,
    /// Edge: plays refused because their client IP had --max-new-pulls-per-ip pulls without media.
    pub pulls_refused_per_ip: AtomicU64,
    pub upstream_failures: AtomicU64,
    /// Origin ingest sources that failed (connect, handshake, play, timeout).
    pub source_failures: AtomicU64,
    pub upstream_active: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// HLS requests (playlists, init segments, segments, parts), whatever their answer.
    pub hls_requests: AtomicU64,
    /// HLS blocking playlist and part requests answered when what they waited for came (not at the deadline).
    pub hls_blocking_answered: AtomicU64,
}

/// What `/metrics` shows of one stream.
pub struct StreamSample<'a> {
    pub app: &'a str,
    pub key: &'a str,
    pub players: usize,
    pub bitrate_in_bps: u64,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Every family, each sample labelled with this relay's `role`; stream families get `app` and `key` too.
    pub fn families(&self, role: &str, streams: &[StreamSample<'_>]) -> Vec<Family> {
        let labels = || -> Labels { vec![("role", role.to_string())] };
        let one = |f: Family, c: &AtomicU64| f.with(labels(), c.load(Ordering::Relaxed) as f64);
        let mut players = Family::gauge("relay_stream_players", "Players of a stream.");
        let mut bitrate = Family::gauge("relay_stream_bitrate_in_bps", "Incoming bitrate of a stream.");
        for s in streams {
            let labels = vec![("role", role.to_string()), ("app", s.app.to_string()), ("key", s.key.to_string())];
            players.add(labels.clone(), s.players as f64);
            bitrate.add(labels, s.bitrate_in_bps as f64);
        }
        vec![
            one(Family::counter("relay_connections_total", "RTMP connections accepted."), &self.connections_total),
            one(Family::gauge("relay_connections_active", "RTMP connections open now."), &self.connections_active),
            one(
                Family::counter("relay_connections_refused_total", "Connections refused at --max-connections."),
                &self.connections_refused_limit,
            ),
            one(
                Family::counter(
                    "relay_connections_refused_per_ip_total",
                    "Connections refused at --max-connections-per-ip.",
                ),
                &self.connections_refused_per_ip,
            ),
            one(
                Family::counter(
                    "relay_connections_timed_out_total",
                    "Connections closed by the handshake, connect or idle timeout.",
                ),
                &self.connections_timed_out,
            ),
            one(
                Family::counter("relay_streams_refused_total", "Plays/publishes past --max-streams-per-connection."),
                &self.streams_refused,
            ),
            one(
                Family::counter("relay_pulls_refused_total", "Plays and API pulls refused at --max-pulls."),
                &self.pulls_refused,
            ),
            one(
                Family::counter("relay_api_refused_total", "API requests refused (token, Host or Origin)."),
                &self.api_refused,
            ),
            one(
                Family::counter(
                    "relay_callbacks_refused_total",
                    "Publishes and plays refused by on_publish/on_play (non-2xx, timeout, unreachable).",
                ),
                &self.callbacks_refused,
            ),
            one(
                Family::counter("relay_protocol_errors_total", "Connections closed for malformed or over-limit input."),
                &self.protocol_errors,
            ),
            one(
                Family::counter(
                    "relay_rtmpt_sessions_refused_total",
                    "RTMPT opens refused with 503 (--max-rtmpt-sessions-per-ip, RTMPT's half of --max-connections).",
                ),
                &self.rtmpt_sessions_refused,
            ),
            one(
                Family::counter("relay_publishes_refused_total", "Publish requests refused (key live, bad token)."),
                &self.publishes_refused,
            ),
            one(Family::counter("relay_players_total", "Play requests accepted."), &self.players_total),
            one(
                Family::counter("relay_hls_requests_total", "HLS requests (playlists, segments, parts)."),
                &self.hls_requests,
            ),
            one(
                Family::counter(
                    "relay_hls_blocking_answered_total",
                    "Blocking playlist reloads and preload-hinted parts answered when what they waited for came.",
                ),
                &self.hls_blocking_answered,
            ),
            one(
                Family::counter("relay_players_stalled_total", "Players disconnected for not reading."),
                &self.players_stalled,
            ),
            one(
                Family::counter("relay_frames_skipped_total", "Frames dropped so a slow player resumes at a keyframe."),
                &self.frames_skipped,
            ),
            one(
                Family::counter("relay_upstream_attempts_total", "Upstream pull connections attempted."),
                &self.upstream_attempts,
            ),
            one(
                Family::counter("relay_upstream_connects_total", "Upstream pull connections that reached playing."),
                &self.upstream_connects,
            ),
            one(
                Family::counter(
                    "relay_streams_not_found_total",
                    "Streams ended without ever receiving media (players told not found).",
                ),
                &self.streams_not_found,
            ),
            one(
                Family::counter(
                    "relay_not_found_cache_hits_total",
                    "Plays answered not found from the negative cache, without a pull.",
                ),
                &self.not_found_cache_hits,
            ),
            one(
                Family::counter(
                    "relay_streams_ended_upstream_total",
                    "Edge streams ended because the origin ended them.",
                ),
                &self.streams_ended_upstream,
            ),
            one(
                Family::counter(
                    "relay_pulls_refused_per_ip_total",
                    "Plays refused at --max-new-pulls-per-ip (pulls without media from one client IP).",
                ),
                &self.pulls_refused_per_ip,
            ),
            one(
                Family::counter("relay_upstream_failures_total", "Upstream pull attempts or sessions that failed."),
                &self.upstream_failures,
            ),
            one(
                Family::gauge("relay_upstream_active", "Upstream pull connections playing now."),
                &self.upstream_active,
            ),
            one(
                Family::counter("relay_source_failures_total", "Origin ingest sources that failed (and were retried)."),
                &self.source_failures,
            ),
            one(Family::counter("relay_bytes_in_total", "Bytes received on RTMP connections."), &self.bytes_in),
            one(Family::counter("relay_bytes_out_total", "Bytes sent on RTMP connections."), &self.bytes_out),
            Family::gauge("relay_streams", "Streams known now.").with(labels(), streams.len() as f64),
            players,
            bitrate,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_type_and_the_role_label() {
        let m = Metrics::default();
        Metrics::inc(&m.protocol_errors);
        m.bytes_out.fetch_add(1 << 40, Ordering::Relaxed);
        let streams = [
            StreamSample { app: "live", key: "a\"b", players: 3, bitrate_in_bps: 1_500_000 },
            StreamSample { app: "live", key: "c", players: 0, bitrate_in_bps: 0 },
        ];
        let text = svc::metrics::render(&m.families("edge", &streams));
        assert!(text.starts_with(
            "# HELP relay_connections_total RTMP connections accepted.\n\
             # TYPE relay_connections_total counter\n\
             relay_connections_total{role=\"edge\"} 0\n"
        ));
        assert!(text.contains("# TYPE relay_upstream_active gauge\nrelay_upstream_active{role=\"edge\"} 0\n"));
        assert!(text.contains("relay_stream_players{role=\"edge\",app=\"live\",key=\"a\\\"b\"} 3\n"), "{text}");
        let parsed = svc::metrics::parse(&text).unwrap();
        assert_eq!(parsed.len(), 31);
        for (name, samples) in &parsed {
            assert!(text.contains(&format!("# HELP {name} ")) && text.contains(&format!("# TYPE {name} ")));
            assert!(samples.iter().all(|(l, _)| l[0] == ("role".to_string(), "edge".to_string())), "{name}");
        }
        assert_eq!(parsed["relay_protocol_errors_total"][0].1, 1.0);
        assert_eq!(parsed["relay_bytes_out_total"][0].1, (1u64 << 40) as f64);
        assert_eq!(parsed["relay_streams"][0].1, 2.0);
        assert_eq!(parsed["relay_stream_bitrate_in_bps"][0].1, 1_500_000.0);
        assert_eq!(parsed["relay_stream_players"][0].0[2], ("key".to_string(), "a\"b".to_string()));
    }
}
