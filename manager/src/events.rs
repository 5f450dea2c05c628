//! The bounded event history (what happened) and the alarms (what is wrong now, until it is cleared), as the
//! API, the logs and the metrics show them.

use std::collections::{BTreeMap, VecDeque};

/// Events, alarms and their kinds as the API answers them: the contract crate's.
pub use api_types::manager::{Alarm, AlarmKind, Event, EventKind};

pub struct Log {
    events: VecDeque<Event>,
    kept: usize,
    next_seq: u64,
    /// Raised alarms by (kind, subject).
    raised: BTreeMap<(AlarmKind, String), Alarm>,
    cleared: VecDeque<Alarm>,
    /// Events written per kind since start (a counter for the metrics).
    pub counts: BTreeMap<EventKind, u64>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Log {
    pub fn new(kept: usize) -> Self {
        Self {
            events: VecDeque::new(),
            kept,
            next_seq: 1,
            raised: BTreeMap::new(),
            cleared: VecDeque::new(),
            counts: BTreeMap::new(),
        }
    }

    pub fn event(&mut self, kind: EventKind, subject: &str, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(event = %kind.as_str(), subject, "{message}");
        *self.counts.entry(kind).or_default() += 1;
        self.events.push_back(Event {
            seq: self.next_seq,
            time_ms: now_ms(),
            kind,
            subject: subject.to_string(),
            message,
        });
        self.next_seq += 1;
        while self.events.len() > self.kept {
            self.events.pop_front();
        }
    }

    /// Raises an alarm once; a raised one keeps its first time and takes the newest message.
    pub fn raise(&mut self, kind: AlarmKind, subject: &str, message: String) {
        let key = (kind, subject.to_string());
        if let Some(a) = self.raised.get_mut(&key) {
            a.message = message;
            return;
        }
        tracing::warn!(alarm = %kind.as_str(), subject, "alarm raised: {message}");
        self.event(EventKind::AlarmRaised, subject, format!("{}: {message}", kind.as_str()));
        self.raised
            .insert(key, Alarm { kind, subject: subject.to_string(), message, raised_ms: now_ms(), cleared_ms: None });
    }

    pub fn clear(&mut self, kind: AlarmKind, subject: &str) {
        if let Some(mut a) = self.raised.remove(&(kind, subject.to_string())) {
            a.cleared_ms = Some(now_ms());
            self.event(EventKind::AlarmCleared, subject, format!("{} cleared", kind.as_str()));
            self.cleared.push_front(a);
            self.cleared.truncate(100);
        }
    }

    pub fn is_raised(&self, kind: AlarmKind, subject: &str) -> bool {
        self.raised.contains_key(&(kind, subject.to_string()))
    }

    /// Raised alarms, then recently cleared ones (newest first).
    pub fn alarms(&self) -> (Vec<Alarm>, Vec<Alarm>) {
        (self.raised.values().cloned().collect(), self.cleared.iter().cloned().collect())
    }

    /// Events newest first, optionally of one kind or about one subject, at most `last`.
    pub fn events(&self, last: usize, kind: Option<&str>, subject: Option<&str>) -> Vec<Event> {
        self.events
            .iter()
            .rev()
            .filter(|e| kind.is_none_or(|k| e.kind.as_str() == k))
            .filter(|e| subject.is_none_or(|s| e.subject == s))
            .take(last)
            .cloned()
            .collect()
    }
}
