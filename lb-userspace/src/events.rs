//! The event history: every state change (real up/down/drained/added/removed, service without a real, config
//! applied) with its time and reason, kept in a bounded ring and logged once when it happens.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Events kept unless `lbd --events` says otherwise; the oldest go first.
pub const DEFAULT_CAPACITY: usize = 1024;

/// An event and its kind are part of the control API (`lbctl events`, `GET /api/v1/events`): the contract crate's.
pub use api_types::lb::{Event, EventKind};

pub struct EventLog {
    events: VecDeque<Event>,
    capacity: usize,
    next_seq: u64,
}

impl EventLog {
    pub fn new(capacity: usize) -> Self {
        EventLog { events: VecDeque::with_capacity(capacity.min(4096)), capacity: capacity.max(1), next_seq: 1 }
    }

    /// Records and logs an event.
    pub fn push(&mut self, kind: EventKind, service: Option<String>, real: Option<IpAddr>, reason: impl Into<String>) {
        let ev = Event { seq: self.next_seq, time: rfc3339_now(), kind, service, real, reason: reason.into() };
        self.next_seq += 1;
        let svc = ev.service.as_deref().unwrap_or("-");
        let real = ev.real.map(|r| r.to_string()).unwrap_or_else(|| "-".into());
        match kind {
            EventKind::ServiceDown => {
                tracing::error!(event = kind.as_str(), service = svc, reason = %ev.reason, "SERVICE HAS NO USABLE REAL: its new connections are refused by the kernel")
            }
            EventKind::RealDown => {
                tracing::warn!(event = kind.as_str(), service = svc, real, reason = %ev.reason, "real down")
            }
            _ => tracing::info!(event = kind.as_str(), service = svc, real, reason = %ev.reason, "event"),
        }
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(ev);
    }

    /// A reloaded `--events`: the oldest events beyond it go now.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        while self.events.len() > self.capacity {
            self.events.pop_front();
        }
    }

    /// The last `n` events (all when None), oldest first.
    pub fn last(&self, n: Option<usize>) -> Vec<Event> {
        let skip = n.map(|n| self.events.len().saturating_sub(n)).unwrap_or(0);
        self.events.iter().skip(skip).cloned().collect()
    }

    /// Events recorded since lbd started (including those the ring has dropped).
    pub fn total(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

pub fn rfc3339_now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    rfc3339(d.as_secs(), d.subsec_millis())
}

/// `1970-01-01T00:00:00.000Z` from seconds since the epoch (civil-from-days, Howard Hinnant's algorithm).
pub fn rfc3339(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_bounded_and_numbered() {
        let mut log = EventLog::new(3);
        for i in 0..5 {
            log.push(EventKind::RealUp, Some("TCP 10.0.0.1:80".into()), None, format!("pass {i}"));
        }
        assert_eq!(log.len(), 3);
        assert_eq!(log.total(), 5);
        let all = log.last(None);
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(all[0].reason, "pass 2");
        assert_eq!(log.last(Some(1))[0].seq, 5);
        assert_eq!(log.last(Some(10)).len(), 3);
    }

    #[test]
    fn events_serialize_with_kebab_kinds() {
        let mut log = EventLog::new(4);
        log.push(EventKind::ServiceDown, Some("TCP 10.0.0.1:80".into()), None, "all reals down");
        let j = serde_json::to_value(&log.last(None)[0]).unwrap();
        assert_eq!(j["kind"], "service-down");
        assert!(j.get("real").is_none());
        assert_eq!(EventKind::RealDown.as_str(), serde_json::to_value(EventKind::RealDown).unwrap());
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_700_000_000, 123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(4_102_444_799, 999), "2099-12-31T23:59:59.999Z");
    }
}
