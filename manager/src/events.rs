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
    /// A follower of an HA deployment shows the leader's history: its own events and alarms (its store being
    /// unreachable, say) are kept aside and join the history if it becomes leader.
    mirror: bool,
    own: VecDeque<Event>,
    /// The newest event the store holds (HA): later ones are written at the next save.
    stored_upto: u64,
    own_raised: BTreeMap<(AlarmKind, String), Alarm>,
    own_cleared: VecDeque<Alarm>,
}

/// The alarms as the store keeps them (the leader writes them; followers show them).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredAlarms {
    pub raised: Vec<Alarm>,
    pub cleared: Vec<Alarm>,
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
            mirror: false,
            own: VecDeque::new(),
            stored_upto: 0,
            own_raised: BTreeMap::new(),
            own_cleared: VecDeque::new(),
        }
    }

    /// A reloaded `events_kept`: the history is trimmed to it at the next event.
    pub fn set_kept(&mut self, kept: usize) {
        self.kept = kept;
    }

    /// Becomes a follower's mirror of the stored history. A leader stepping down keeps what it wrote but could
    /// not store (and its store alarm) as its own story, told if it leads again.
    pub fn set_mirror(&mut self) {
        if self.mirror {
            return;
        }
        self.mirror = true;
        while self.events.back().is_some_and(|e| e.seq > self.stored_upto) {
            let e = self.events.pop_back().expect("checked");
            self.own.push_front(e);
        }
        self.next_seq = self.events.back().map_or(self.stored_upto, |e| e.seq).max(self.stored_upto) + 1;
        let mine: Vec<_> = self.raised.keys().filter(|(k, _)| *k == AlarmKind::StoreUnreachable).cloned().collect();
        for k in mine {
            if let Some(a) = self.raised.remove(&k) {
                self.own_raised.insert(k, a);
            }
        }
    }

    /// The store holds the history up to `seq`.
    pub fn set_stored(&mut self, seq: u64) {
        self.stored_upto = self.stored_upto.max(seq);
    }

    pub fn stored_upto(&self) -> u64 {
        self.stored_upto
    }

    /// A follower that has read the leader's history drops its own story (the leader tells its own).
    pub fn clear_own(&mut self) {
        self.own.clear();
    }

    /// The highest event number in the history (0: none).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Events after `seq`, oldest first: what the leader has not written to the store yet.
    pub fn events_after(&self, seq: u64) -> Vec<Event> {
        self.events.iter().filter(|e| e.seq > seq).cloned().collect()
    }

    pub fn stored_alarms(&self) -> StoredAlarms {
        StoredAlarms {
            raised: self.raised.values().cloned().collect(),
            cleared: self.cleared.iter().cloned().collect(),
        }
    }

    /// A follower takes stored events newer than its last (oldest first) and the stored alarms. A history that
    /// went back (the store was reset) is taken whole.
    pub fn mirror_events(&mut self, events: Vec<Event>, alarms: StoredAlarms, whole: bool) {
        if whole {
            self.events.clear();
            self.next_seq = 1;
        }
        for e in events {
            if e.seq >= self.next_seq {
                self.next_seq = e.seq + 1;
                self.events.push_back(e);
            }
        }
        while self.events.len() > self.kept {
            self.events.pop_front();
        }
        self.raised = alarms.raised.into_iter().map(|a| ((a.kind, a.subject.clone()), a)).collect();
        self.cleared = alarms.cleared.into_iter().collect();
    }

    /// A new leader: the stored history (all of it, oldest first) and alarms, then what this smd saw on its own
    /// while following (numbered after them), so the history continues without a gap or a repeat.
    pub fn take_over(&mut self, events: Vec<Event>, alarms: StoredAlarms) {
        self.mirror_events(events, alarms, true);
        self.stored_upto = self.last_seq();
        self.mirror = false;
        for mut e in std::mem::take(&mut self.own) {
            e.seq = self.next_seq;
            self.next_seq += 1;
            self.events.push_back(e);
        }
        while self.events.len() > self.kept {
            self.events.pop_front();
        }
        for (k, a) in std::mem::take(&mut self.own_raised) {
            self.raised.entry(k).or_insert(a);
        }
        for a in std::mem::take(&mut self.own_cleared).into_iter().rev() {
            self.cleared.push_front(a);
        }
        self.cleared.truncate(100);
    }

    pub fn event(&mut self, kind: EventKind, subject: &str, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(event = %kind.as_str(), subject, "{message}");
        *self.counts.entry(kind).or_default() += 1;
        let e = Event { seq: self.next_seq, time_ms: now_ms(), kind, subject: subject.to_string(), message };
        if self.mirror {
            // Only the manager's own story (its store, its leadership); the nodes' is the leader's to tell.
            if !matches!(e.kind, EventKind::AlarmRaised | EventKind::AlarmCleared | EventKind::LeaderLost)
                || (e.kind != EventKind::LeaderLost && e.subject != crate::leader::SUBJECT)
            {
                return;
            }
            self.own.push_back(e);
            while self.own.len() > 100 {
                self.own.pop_front();
            }
            return;
        }
        self.events.push_back(e);
        self.next_seq += 1;
        while self.events.len() > self.kept {
            self.events.pop_front();
        }
    }

    /// Raises an alarm once; a raised one keeps its first time and takes the newest message.
    pub fn raise(&mut self, kind: AlarmKind, subject: &str, message: String) {
        let key = (kind, subject.to_string());
        if self.mirror {
            // A follower's own alarm (its store unreachable): shown beside the leader's, kept if it takes over. The
            // nodes' alarms are the leader's to raise (a new leader raises those it sees when it takes over).
            if kind != AlarmKind::StoreUnreachable {
                return;
            }
            if let Some(a) = self.own_raised.get_mut(&key) {
                a.message = message;
                return;
            }
            tracing::warn!(alarm = %kind.as_str(), subject, "alarm raised: {message}");
            self.event(EventKind::AlarmRaised, subject, format!("{}: {message}", kind.as_str()));
            let a = Alarm { kind, subject: subject.to_string(), message, raised_ms: now_ms(), cleared_ms: None };
            self.own_raised.insert(key, a);
            return;
        }
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
        if self.mirror {
            if kind != AlarmKind::StoreUnreachable {
                return;
            }
            if let Some(mut a) = self.own_raised.remove(&(kind, subject.to_string())) {
                a.cleared_ms = Some(now_ms());
                self.own_cleared.push_front(a);
                self.own_cleared.truncate(100);
                tracing::info!(alarm = %kind.as_str(), subject, "alarm cleared");
                self.event(EventKind::AlarmCleared, subject, format!("{} cleared", kind.as_str()));
            }
            return;
        }
        if let Some(mut a) = self.raised.remove(&(kind, subject.to_string())) {
            a.cleared_ms = Some(now_ms());
            self.event(EventKind::AlarmCleared, subject, format!("{} cleared", kind.as_str()));
            self.cleared.push_front(a);
            self.cleared.truncate(100);
        }
    }

    pub fn is_raised(&self, kind: AlarmKind, subject: &str) -> bool {
        let key = (kind, subject.to_string());
        self.raised.contains_key(&key) || self.own_raised.contains_key(&key)
    }

    /// Raised alarms (a follower's own beside the leader's), then recently cleared ones (newest first).
    pub fn alarms(&self) -> (Vec<Alarm>, Vec<Alarm>) {
        let mut raised: Vec<Alarm> = self.raised.values().cloned().collect();
        raised.extend(
            self.own_raised.values().filter(|a| !self.raised.contains_key(&(a.kind, a.subject.clone()))).cloned(),
        );
        let mut cleared: Vec<Alarm> = self.own_cleared.iter().chain(self.cleared.iter()).cloned().collect();
        cleared.sort_by_key(|a| std::cmp::Reverse(a.cleared_ms));
        (raised, cleared)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_mirrors_the_leaders_history_and_a_new_leader_continues_it() {
        // The leader writes three events, stores two, then loses its lease: the third and its store alarm become
        // its own story.
        let mut leader = Log::new(10);
        for i in 0..3 {
            leader.event(EventKind::NodeUp, &format!("e{i}"), "up");
        }
        leader.set_stored(2);
        leader.raise(AlarmKind::StoreUnreachable, "smd", "etcd gone".into());
        leader.set_mirror();
        assert_eq!(leader.last_seq(), 2, "unstored events leave the shared history");
        assert!(leader.is_raised(AlarmKind::StoreUnreachable, "smd"));
        leader.event(EventKind::NodeDown, "e0", "a follower does not tell the nodes' story");
        leader.clear(AlarmKind::StoreUnreachable, "smd");

        // A follower sees what the store holds, newest first, and the stored alarms.
        let stored: Vec<Event> = (1..=2)
            .map(|seq| Event {
                seq,
                time_ms: 0,
                kind: EventKind::NodeUp,
                subject: format!("e{}", seq - 1),
                message: "up".into(),
            })
            .collect();
        let mut follower = Log::new(10);
        follower.set_mirror();
        follower.mirror_events(stored[..1].to_vec(), StoredAlarms::default(), false);
        follower.mirror_events(stored.clone(), StoredAlarms::default(), false);
        assert_eq!(follower.events(10, None, None).iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 1]);

        // The old leader leads again: the stored history, then its own story numbered after it.
        leader.take_over(stored, StoredAlarms::default());
        let seqs: Vec<(u64, String)> =
            leader.events(10, None, None).iter().rev().map(|e| (e.seq, e.kind.as_str())).collect();
        assert_eq!(
            seqs,
            vec![
                (1, "node-up".to_string()),
                (2, "node-up".to_string()),
                (3, "node-up".to_string()),
                (4, "alarm-raised".to_string()),
                (5, "alarm-cleared".to_string()),
            ]
        );
        assert_eq!(leader.events_after(leader.stored_upto()).len(), 3, "what the next save writes");
        assert!(!leader.is_raised(AlarmKind::StoreUnreachable, "smd"));
    }
}
