//! The hub layer: every stream of this relay, its GOP cache, its byte-bounded fan-out ring and its timers (held
//! frames are released by the stream itself). Ingest pushes into it, egress reads from it; it imports only `wire`.

mod clock;
mod doors;
mod frame;
mod ring;
mod stream;
mod switch;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

pub use clock::ANCHOR_KEY;
pub use doors::{
    BoxFuture, Denied, Ended, Event, Hooks, OpenRefused, Opener, PublishDoor, PublishRefused, PublishRequest,
    Publisher, Tap, Taps,
};
pub use frame::{Frame, SHARED_STREAM_ID};
pub use ring::{Item, ReadInfo, Reader};
pub use stream::{KeyLanes, PlayersByProtocol, Protocol, SourceInfo, Stream, StreamStats, Subscription, UPSTREAM};
pub use switch::{ForceRefused, LaneRefused, LaneState, SwitchRecord, SwitchSettings};

/// A frame as the hub makes it, for other layers' unit tests.
#[cfg(test)]
pub(crate) fn test_frame(media: crate::wire::proto::Media) -> Arc<Frame> {
    let ts = media.timestamp;
    Frame::new(media, ts)
}

/// Sizes that bound a stream's memory.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Most frames the fan-out ring keeps.
    pub queue: usize,
    /// Bytes of the latest GOP kept for new players.
    pub gop_max_bytes: usize,
    /// Bytes the fan-out ring keeps; the oldest frames leave first (at least one frame stays).
    pub stream_bytes: usize,
    /// Longest a frame is held so players get several in one write; zero sends every frame at once.
    pub coalesce: Duration,
    /// Merged writes: every frame is held until this long after the first held one, so each player gets the
    /// whole period's frames in one write; zero turns merging off (then `coalesce` applies).
    pub merge: Duration,
}

/// JSON view of a stream for `GET /streams`.
#[derive(Serialize)]
pub struct StreamView {
    pub app: String,
    pub key: String,
    pub source: Option<SourceInfo>,
    pub players: usize,
    pub players_by_protocol: PlayersByProtocol,
    pub bitrate_in_kbps: u64,
    pub bitrate_out_kbps: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub uptime_secs: u64,
    pub gop_cached_frames: usize,
}

/// All streams of this relay.
pub struct Hub {
    streams: Mutex<HashMap<(String, String), Arc<Stream>>>,
    budget: Budget,
    changes: Arc<watch::Sender<u64>>,
    /// Gives new streams their tap (HLS), once egress is built.
    taps: std::sync::OnceLock<Arc<dyn Taps>>,
    /// Keys whose sources were configured (order of roles, switch timings); others get the defaults.
    switch_settings: Mutex<HashMap<(String, String), SwitchSettings>>,
}

impl Hub {
    pub fn new(budget: Budget) -> Self {
        let changes = Arc::new(watch::channel(0).0);
        Self {
            streams: Mutex::new(HashMap::new()),
            budget,
            changes,
            taps: Default::default(),
            switch_settings: Default::default(),
        }
    }

    /// Sets who taps every stream created from now on (egress's HLS packagers); only the first call counts.
    pub fn set_taps(&self, taps: Arc<dyn Taps>) {
        let _ = self.taps.set(taps);
    }

    /// Changes whenever a stream's source attaches or leaves (a publish, an upstream, an ingest pull).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<(String, String), Arc<Stream>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream for app/key, created if absent; the flag says whether it was created now.
    pub fn get_or_create(&self, app: &str, name: &str) -> (Arc<Stream>, bool) {
        let mut m = self.map();
        let key = (app.to_string(), name.to_string());
        if let Some(s) = m.get(&key) {
            if !s.is_ended() {
                return (s.clone(), false);
            }
        }
        let tap = self.taps.get().and_then(|t| t.tap(app, name));
        let s = Stream::new(app, name, self.budget, self.changes.clone(), tap);
        if let Some(settings) = self.switch_settings(app, name) {
            s.configure_switch(settings);
        }
        s.start_timer();
        m.insert(key, s.clone());
        (s, true)
    }

    /// The configured sources' order and timings of a key, if it has them.
    fn switch_settings(&self, app: &str, key: &str) -> Option<SwitchSettings> {
        self.switch_settings.lock().unwrap_or_else(|e| e.into_inner()).get(&(app.to_string(), key.to_string())).cloned()
    }

    /// Sets (or with `None` forgets) a key's order of source roles and switch timings, now and for its future
    /// streams.
    pub fn configure_sources(&self, app: &str, key: &str, settings: Option<SwitchSettings>) {
        let k = (app.to_string(), key.to_string());
        let applied = settings.clone().unwrap_or_default();
        {
            let mut m = self.switch_settings.lock().unwrap_or_else(|e| e.into_inner());
            match settings {
                Some(s) => m.insert(k, s),
                None => m.remove(&k),
            };
        }
        if let Some(s) = self.get(app, key) {
            s.configure_switch(applied);
        }
    }

    pub fn get(&self, app: &str, name: &str) -> Option<Arc<Stream>> {
        self.map().get(&(app.to_string(), name.to_string())).filter(|s| !s.is_ended()).cloned()
    }

    /// Ends and forgets a stream (only that exact instance, in case it was already replaced).
    pub fn remove(&self, stream: &Arc<Stream>) {
        stream.end();
        self.forget(stream);
    }

    /// Removes a stream this relay stops carrying though it goes on at its source (an edge's idle stop).
    pub fn retire(&self, stream: &Arc<Stream>) {
        stream.retire();
        self.forget(stream);
    }

    fn forget(&self, stream: &Arc<Stream>) {
        let mut m = self.map();
        let key = (stream.app.clone(), stream.name.clone());
        if m.get(&key).is_some_and(|s| Arc::ptr_eq(s, stream)) {
            m.remove(&key);
        }
    }

    pub fn all(&self) -> Vec<Arc<Stream>> {
        self.map().values().cloned().collect()
    }

    pub fn views(&self) -> Vec<StreamView> {
        let mut v: Vec<_> = self
            .all()
            .iter()
            .map(|s| StreamView {
                app: s.app.clone(),
                key: s.name.clone(),
                source: s.source(),
                players: s.players(),
                players_by_protocol: s.players_by_protocol(),
                bitrate_in_kbps: s.stats.bps_in.load(Ordering::Relaxed) / 1000,
                bitrate_out_kbps: s.stats.bps_out.load(Ordering::Relaxed) / 1000,
                bytes_in: s.stats.bytes_in.load(Ordering::Relaxed),
                bytes_out: s.stats.bytes_out.load(Ordering::Relaxed),
                uptime_secs: s.created.elapsed().as_secs(),
                gop_cached_frames: s.gop_len(),
            })
            .collect();
        v.sort_by(|a, b| (&a.app, &a.key).cmp(&(&b.app, &b.key)));
        v
    }

    /// Once a second: refresh bitrates; end streams without a source past the grace period.
    pub fn tick(&self, grace: Duration) {
        for s in self.all() {
            for (total, last, bps) in [
                (&s.stats.bytes_in, &s.stats.last_in, &s.stats.bps_in),
                (&s.stats.bytes_out, &s.stats.last_out, &s.stats.bps_out),
            ] {
                let now = total.load(Ordering::Relaxed);
                let prev = last.swap(now, Ordering::Relaxed);
                bps.store(now.saturating_sub(prev) * 8, Ordering::Relaxed);
            }
            if s.sourceless_for().is_some_and(|d| d >= grace) {
                tracing::info!(app = %s.app, key = %s.name, players = s.players(), "no source within the grace period, ending stream");
                self.remove(&s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;

    use super::*;
    use crate::wire::proto::{Media, MediaKind};

    fn media(kind: MediaKind, timestamp: u32, first: u8) -> Media {
        // Second byte 1: a coded frame, not a sequence header.
        Media { kind, timestamp, payload: Bytes::from(vec![first, 1, 0, 0, 0]) }
    }

    /// The next audio/video frame's timestamp (the onMetaData announcing the stream's clock is skipped).
    fn next_ts(s: &Stream, rx: &mut Reader) -> Option<u32> {
        loop {
            let mut v = Vec::new();
            s.read(rx, 1, &mut v);
            match v.pop() {
                Some(Item::Frame(f)) if f.media.is_metadata() => continue,
                Some(Item::Frame(f)) => return Some(f.timestamp),
                _ => return None,
            }
        }
    }

    fn budget(queue: usize, stream_bytes: usize, coalesce_ms: u64) -> Budget {
        Budget {
            queue,
            gop_max_bytes: 1 << 20,
            stream_bytes,
            coalesce: Duration::from_millis(coalesce_ms),
            merge: Duration::ZERO,
        }
    }

    #[test]
    fn coalescing_holds_audio_for_video_and_never_duplicates() {
        let hub = Hub::new(budget(64, 1 << 20, 50));
        let (s, _) = hub.get_or_create("live", "k");
        let id = s.attach_source(SourceInfo { kind: "publisher", peer: "p".into() }, "main").unwrap();
        let mut early = s.subscribe(Protocol::Rtmp).rx;
        s.push(id, media(MediaKind::Video, 0, 0x17));
        s.push(id, media(MediaKind::Audio, 10, 0xAF));
        assert_eq!(next_ts(&s, &mut early), Some(0), "video goes out at once");
        assert_eq!(next_ts(&s, &mut early), None, "audio waits for the next video frame");
        assert!(s.held_until().is_some());
        // A new player gets the held audio in its start, the others get it live: each exactly once.
        let late = s.subscribe(Protocol::Rtmp);
        // The onMetaData announcing the stream's clock, the GOP's video and the held audio.
        assert_eq!(late.start.len(), 3);
        let mut late_rx = late.rx;
        assert_eq!(next_ts(&s, &mut late_rx), None);
        assert_eq!(next_ts(&s, &mut early), Some(10));
        // Audio with no video after it leaves when --coalesce-ms is up.
        s.push(id, media(MediaKind::Audio, 20, 0xAF));
        s.release_due();
        assert_eq!(next_ts(&s, &mut late_rx), None);
        std::thread::sleep(Duration::from_millis(60));
        s.release_due();
        assert_eq!(next_ts(&s, &mut late_rx), Some(20));
        assert!(s.held_until().is_none());
        // Audio then video: one burst, in order.
        s.push(id, media(MediaKind::Audio, 30, 0xAF));
        s.push(id, media(MediaKind::Video, 33, 0x27));
        assert_eq!(next_ts(&s, &mut late_rx), Some(30));
        assert_eq!(next_ts(&s, &mut late_rx), Some(33));
    }

    #[test]
    fn timestamp_jumps_either_way_continue_the_timeline() {
        let hub = Hub::new(budget(1000, 1 << 20, 0));
        let (s, _) = hub.get_or_create("live", "k");
        let mut rx = s.subscribe(Protocol::Rtmp).rx;
        let first = s.attach_source(SourceInfo { kind: "publisher", peer: "p".into() }, "main").unwrap();
        for ts in [0, 33, 66] {
            s.push(first, media(MediaKind::Video, ts, 0x17));
        }
        s.detach_source(first);
        // A returning publisher one hour ahead: its headers come stamped 0, its media at 3,600,000 ms.
        let second = s.attach_source(SourceInfo { kind: "publisher", peer: "p".into() }, "main").unwrap();
        s.push(
            second,
            Media { kind: MediaKind::Video, timestamp: 0, payload: Bytes::from_static(&[0x17, 0, 0, 0, 0]) },
        );
        for ts in [3_600_000, 3_600_033] {
            s.push(second, media(MediaKind::Video, ts, 0x17));
        }
        // Within one source: a jump forward, small interleaving steps back (passed through), a jump back.
        for ts in [7_200_000, 7_200_033, 7_200_020, 7_200_066, 1_000, 1_033] {
            s.push(second, media(MediaKind::Video, ts, 0x27));
        }
        let got: Vec<u32> = std::iter::from_fn(|| next_ts(&s, &mut rx)).collect();
        assert_eq!(got, vec![0, 33, 66, 66, 106, 139, 179, 212, 199, 245, 285, 318]);
    }

    #[test]
    fn ring_is_bounded_in_bytes_and_a_lagged_player_is_told() {
        let hub = Hub::new(budget(1000, 10_000, 0));
        let (s, _) = hub.get_or_create("live", "k");
        let id = s.attach_source(SourceInfo { kind: "publisher", peer: "p".into() }, "main").unwrap();
        let mut rx = s.subscribe(Protocol::Rtmp).rx;
        let big = |ts| Media { kind: MediaKind::Video, timestamp: ts, payload: Bytes::from(vec![0x27; 3000]) };
        for ts in 0..10 {
            s.push(id, big(ts));
        }
        assert!(s.buffered_bytes() <= 10_000, "{}", s.buffered_bytes());
        let mut out = Vec::new();
        let info = s.read(&mut rx, 64, &mut out);
        // 10 frames and the clock's onMetaData before them: 8 left the ring.
        assert_eq!((info.lagged, out.len(), info.behind_bytes), (8, 3, 0));
        s.end();
        out.clear();
        assert!(s.read(&mut rx, 64, &mut out).ended);
        assert!(matches!(out[..], [Item::End]));
    }

    #[test]
    fn wire_form_shares_the_payload_and_matches_the_encoder() {
        for len in [0, 1, 4095, 4096, 4097, 10_000] {
            for ts in [0, 40, crate::wire::chunk::EXTENDED_TIMESTAMP + 5] {
                let m = Media { kind: MediaKind::Video, timestamp: ts, payload: Bytes::from(vec![0x17; len]) };
                let f = Frame::new(m.clone(), ts);
                assert_eq!(f.wire_bytes(SHARED_STREAM_ID), m.encode(ts, SHARED_STREAM_ID), "len {len} ts {ts}");
                assert_eq!(f.wire_bytes(3), m.encode(ts, 3));
                assert!(f.size() < len + 64 + len / 1000, "one copy: {} for {len}", f.size());
            }
        }
    }

    #[test]
    fn merging_holds_video_too_and_a_new_player_still_starts_at_once() {
        let hub = Hub::new(Budget { merge: Duration::from_millis(80), ..budget(64, 1 << 20, 50) });
        let (s, _) = hub.get_or_create("live", "k");
        let id = s.attach_source(SourceInfo { kind: "publisher", peer: "p".into() }, "main").unwrap();
        let mut early = s.subscribe(Protocol::Rtmp).rx;
        s.push(id, media(MediaKind::Video, 0, 0x17));
        s.push(id, media(MediaKind::Audio, 10, 0xAF));
        s.push(id, media(MediaKind::Video, 33, 0x27));
        assert_eq!(next_ts(&s, &mut early), None, "video waits for the merge period too");
        std::thread::sleep(Duration::from_millis(90));
        s.release_due();
        let mut v = Vec::new();
        s.read(&mut early, 64, &mut v);
        assert_eq!(v.len(), 4, "the whole period at once (with the clock's onMetaData)");
        // A player arriving mid-period gets the GOP (with held frames) at once, and nothing twice.
        s.push(id, media(MediaKind::Video, 66, 0x27));
        let late = s.subscribe(Protocol::Rtmp);
        assert_eq!(late.start.len(), 5, "the clock's onMetaData and the GOP");
        let mut late_rx = late.rx;
        assert_eq!(next_ts(&s, &mut late_rx), None);
        assert_eq!(next_ts(&s, &mut early), Some(66));
    }

    #[tokio::test]
    async fn the_stream_releases_held_frames_itself() {
        let hub = Hub::new(Budget { merge: Duration::from_millis(40), ..budget(64, 1 << 20, 50) });
        let (s, _) = hub.get_or_create("live", "k");
        let id = s.attach_source(SourceInfo { kind: "publisher", peer: "p".into() }, "main").unwrap();
        let mut rx = s.subscribe(Protocol::Rtmp).rx;
        let pushed = Instant::now();
        s.push(id, media(MediaKind::Video, 0, 0x17));
        s.push(id, media(MediaKind::Audio, 10, 0xAF));
        assert_eq!(next_ts(&s, &mut rx), None, "held for the merge period");
        // Nobody calls release_due: the stream's own timer wakes the player.
        tokio::time::timeout(Duration::from_secs(2), s.wait(&mut rx)).await.expect("released within the deadline");
        assert!(pushed.elapsed() >= Duration::from_millis(40), "not before the period ended");
        let mut v = Vec::new();
        s.read(&mut rx, 64, &mut v);
        assert_eq!(v.len(), 3, "the whole period in one wake-up (with the clock's onMetaData)");
        assert!(s.held_until().is_none());
        // A second period is released the same way, and the timer stops with the stream.
        s.push(id, media(MediaKind::Video, 33, 0x27));
        tokio::time::timeout(Duration::from_secs(2), s.wait(&mut rx)).await.expect("second period released");
        assert_eq!(next_ts(&s, &mut rx), Some(33));
        hub.remove(&s);
        assert!(s.is_ended());
    }

    #[test]
    fn held_frames_count_against_the_byte_budget() {
        // A 60 s merge period and a 64-byte budget: holding alone would keep every frame for a minute.
        let hub = Hub::new(Budget { merge: Duration::from_secs(60), ..budget(64, 64, 50) });
        let (s, _) = hub.get_or_create("live", "k");
        let id = s.attach_source(SourceInfo { kind: "publisher", peer: "p".into() }, "main").unwrap();
        let mut rx = s.subscribe(Protocol::Rtmp).rx;
        let size = Frame::new(media(MediaKind::Video, 0, 0x27), 0).size();
        let (mut released, mut lagged) = (0, 0);
        // 21 frames after the onMetaData announcing the stream's clock: the budget fills every fourth frame,
        // the 21st ends the last hold.
        for i in 0..21 {
            s.push(id, media(MediaKind::Video, 40 * i, if i == 0 { 0x17 } else { 0x27 }));
            // Ring and held frames together stay within the budget (the ring always keeps its newest frame).
            assert!(s.buffered_bytes() <= 64 + size, "{} bytes buffered after frame {i}", s.buffered_bytes());
            let mut v = Vec::new();
            lagged += s.read(&mut rx, 64, &mut v).lagged as usize;
            released += v.len();
        }
        // Every frame went out as the budget filled, not after the 60 s period (the oldest of each release
        // trimmed by the same budget), and nothing is held any more.
        assert_eq!(released + lagged, 22, "{released} read, {lagged} trimmed");
        assert!(released >= 10, "{released} read");
        assert!(s.held_until().is_none());
    }
}
