//! Redundant sources of one stream key: every source ("lane": main, backup, slate...) is ingested, the best healthy
//! one is forwarded, and a switch keeps the players' timeline continuous (pure logic, under the stream's lock).
//!
//! Why here and not in ingest: a switch has to happen between two frames of the players' timeline, with the new
//! source's GOP and sequence headers at hand, so it lives next to the stream's own cache. The lanes that are not
//! live keep their latest GOP ("warm"), so a switch starts the new source at its last keyframe at once instead of
//! waiting up to a GOP for the next one.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::stream::SourceInfo;
use crate::wire::proto::{Media, MediaKind};

/// The gap left between the last forwarded frame and the first of a new source when the stall was shorter.
const GAP_MS: u32 = 40;

/// How a key's sources are ranked and when the live one is given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchSettings {
    /// Roles in order of preference (`main`, `backup`, ..., `slate`).
    pub order: Vec<String>,
    /// The live source is given up after delivering nothing this long.
    pub timeout: Duration,
    /// A recovered, preferred source must have delivered this long before it is switched back to.
    pub stable_for: Duration,
}

impl Default for SwitchSettings {
    fn default() -> Self {
        Self {
            order: vec!["main".into(), "backup".into()],
            timeout: api_types::relay::DEFAULT_SOURCE_TIMEOUT,
            stable_for: api_types::relay::DEFAULT_SOURCE_STABLE_FOR,
        }
    }
}

impl SwitchSettings {
    fn rank(&self, role: &str) -> Option<usize> {
        self.order.iter().position(|r| r == role)
    }
}

/// Why a source could not join its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaneRefused {
    #[error("role {0} of this key is already fed by {1}")]
    Busy(String, String),
    #[error("unknown source role {role:?}: this key's roles are {known}")]
    UnknownRole { role: String, known: String },
}

/// Why a manual switch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForceRefused {
    #[error("no source with role {0:?} is attached to this key")]
    NotAttached(String),
    #[error("source {0:?} has no fresh keyframe to start from (it is not delivering)")]
    NotReady(String),
}

/// One source of the key.
struct Lane {
    id: u64,
    role: String,
    rank: usize,
    info: SourceInfo,
    metadata: Option<Media>,
    video_header: Option<Media>,
    audio_header: Option<Media>,
    /// Frames from this lane's latest keyframe on, as it sent them (its own timestamps).
    gop: Vec<Media>,
    gop_bytes: usize,
    has_video: bool,
    /// When this lane last sent anything.
    last_at: Option<Instant>,
    /// When this lane's current run of delivery began (reset after a silence of `timeout`).
    up_since: Option<Instant>,
    /// Added (wrapping) to this lane's timestamps while it is live, so it continues the timeline.
    offset: u32,
    frames: u64,
}

impl Lane {
    fn fresh(&self, now: Instant, timeout: Duration) -> bool {
        self.last_at.is_some_and(|t| now.duration_since(t) < timeout)
    }

    /// Fresh and holding a GOP a decoder can start from.
    fn ready(&self, now: Instant, timeout: Duration) -> bool {
        self.fresh(now, timeout)
            && match self.gop.first() {
                Some(f) => !self.has_video || f.kind == MediaKind::Video,
                None => false,
            }
    }
}

/// What a lane's message led to.
#[derive(Default)]
pub(super) struct Routed {
    /// Messages to forward to the players, timestamps already on the switch's timeline.
    pub out: Vec<Media>,
    /// The live source changed to this one (id and who it is).
    pub switched: Option<(u64, SourceInfo)>,
}

/// A switch that happened, for the log, the metrics and `GET /sources/{app}/{key}`.
#[derive(Debug, Clone)]
pub struct SwitchRecord {
    pub from: Option<String>,
    pub to: String,
    pub reason: &'static str,
    pub at: Instant,
}

/// One source of a key as `GET /sources/{app}/{key}` shows it.
#[derive(Debug, Clone)]
pub struct LaneState {
    pub role: String,
    pub kind: &'static str,
    pub peer: String,
    pub live: bool,
    /// Delivering within the timeout.
    pub healthy: bool,
    pub idle_ms: Option<u64>,
    pub up_secs: Option<u64>,
    pub frames: u64,
}

/// The lanes of one key and which is live.
#[derive(Default)]
pub(super) struct Switch {
    lanes: Vec<Lane>,
    live: Option<u64>,
    pub settings: SwitchSettings,
    /// An operator's manual choice: kept while that source delivers (no automatic switch back).
    forced: Option<String>,
    /// The last media timestamp forwarded (the switch's timeline) and when.
    last_ts: Option<u32>,
    last_at: Option<Instant>,
    /// The sequence headers players decode with now: a new source's go out only when they differ.
    sent_video_header: Option<Bytes>,
    sent_audio_header: Option<Bytes>,
    pub switches: u64,
    pub last_switch: Option<SwitchRecord>,
    /// Time each role was live before its current run (`relay_source_live_seconds_total`), and since when the
    /// live one is.
    live_time: std::collections::BTreeMap<String, Duration>,
    live_since: Option<(String, Instant)>,
}

impl Switch {
    /// Adds a source in `role`; it goes live at once when nothing is live (the first source behaves as a lone
    /// publisher always did), else it stays warm.
    pub fn attach(&mut self, id: u64, info: SourceInfo, role: &str, now: Instant) -> Result<bool, LaneRefused> {
        let rank = self.settings.rank(role).ok_or_else(|| LaneRefused::UnknownRole {
            role: role.to_string(),
            known: self.settings.order.join(", "),
        })?;
        if let Some(l) = self.lanes.iter().find(|l| l.role == role) {
            return Err(LaneRefused::Busy(role.to_string(), l.info.peer.clone()));
        }
        if self.lanes.is_empty() {
            // Nothing to continue from inside the switch: the stream's own rebasing continues its timeline.
            self.last_ts = None;
            self.sent_video_header = None;
            self.sent_audio_header = None;
        }
        self.lanes.push(Lane {
            id,
            role: role.to_string(),
            rank,
            info,
            metadata: None,
            video_header: None,
            audio_header: None,
            gop: Vec::new(),
            gop_bytes: 0,
            has_video: false,
            last_at: None,
            up_since: None,
            offset: 0,
            frames: 0,
        });
        let live = self.live.is_none() && self.lanes.len() == 1;
        if live {
            self.live = Some(id);
            self.last_at = Some(now);
            self.live_from(Some(role.to_string()), now);
        }
        Ok(live)
    }

    /// Removes a source; when it was live, the best ready one takes over at once.
    pub fn detach(&mut self, id: u64, now: Instant) -> Routed {
        let Some(i) = self.lanes.iter().position(|l| l.id == id) else { return Routed::default() };
        let lane = self.lanes.remove(i);
        if self.live != Some(id) {
            return Routed::default();
        }
        self.live = None;
        self.live_from(None, now);
        match self.best(now, None) {
            Some(to) => self.switch_to(to, now, "the live source left", Some(lane.role.clone())),
            None => {
                if !self.lanes.is_empty() {
                    tracing::warn!(role = %lane.role, "the live source left and no other source is ready");
                }
                Routed::default()
            }
        }
    }

    /// New ranking and timings; sources already attached keep feeding (a role no longer listed ranks last).
    pub fn configure(&mut self, settings: SwitchSettings) {
        for l in &mut self.lanes {
            l.rank = settings.rank(&l.role).unwrap_or(usize::MAX);
        }
        self.settings = settings;
    }

    /// Whether any source is attached (live or warm).
    pub fn has_lanes(&self) -> bool {
        !self.lanes.is_empty()
    }

    /// The role of the live source.
    pub fn live_role(&self) -> Option<&str> {
        let live = self.live?;
        self.lanes.iter().find(|l| l.id == live).map(|l| l.role.as_str())
    }

    /// Takes one message of source `id`: caches it in the source's warm GOP, forwards it when the source is live,
    /// and switches when the live source went silent or a preferred one is back and stable.
    pub fn route(&mut self, id: u64, media: Media, now: Instant, gop_max_bytes: usize) -> Routed {
        let timeout = self.settings.timeout;
        let Some(lane) = self.lanes.iter_mut().find(|l| l.id == id) else { return Routed::default() };
        if !lane.fresh(now, timeout) {
            lane.up_since = Some(now);
        }
        lane.last_at = Some(now);
        lane.frames += 1;
        let header = media.is_metadata() || media.is_video_header() || media.is_audio_header();
        let keyframe = media.kind == MediaKind::Video && media.is_keyframe() && !media.is_video_header();
        if media.is_metadata() {
            lane.metadata = Some(media.clone());
        } else if media.is_video_header() {
            lane.video_header = Some(media.clone());
            lane.has_video = true;
        } else if media.is_audio_header() {
            lane.audio_header = Some(media.clone());
        }
        if media.kind == MediaKind::Video {
            lane.has_video = true;
        }
        if !header {
            if keyframe {
                lane.gop.clear();
                lane.gop_bytes = 0;
            }
            if keyframe || !lane.gop.is_empty() || !lane.has_video {
                lane.gop_bytes += media.payload.len();
                lane.gop.push(media.clone());
                if lane.gop_bytes > gop_max_bytes {
                    // Too big to replay: this lane starts at its next keyframe instead.
                    lane.gop.clear();
                    lane.gop_bytes = 0;
                }
            }
        }
        let rank = lane.rank;
        let role = lane.role.clone();
        if self.live == Some(id) {
            return Routed { out: self.forward(id, media, now), switched: None };
        }
        // Not live: is it time to switch?
        let live_lane = self.live.and_then(|l| self.lanes.iter().find(|x| x.id == l));
        let reason = match live_lane {
            None => Some("no source was live"),
            Some(l) if !l.fresh(now, timeout) => Some("the live source went silent"),
            Some(l) => {
                let preferred = match &self.forced {
                    Some(f) => *f == role && l.role != *f,
                    None => rank < l.rank,
                };
                let stable = self.lanes.iter().find(|x| x.id == id).and_then(|x| x.up_since).is_some_and(|t| {
                    now.duration_since(t) >= self.settings.stable_for || self.forced.as_deref() == Some(&role)
                });
                (preferred && stable && keyframe).then_some("a preferred source is back and stable")
            }
        };
        let Some(reason) = reason else { return Routed::default() };
        let exclude = self.live;
        match self.best(now, exclude) {
            Some(to) => {
                let from = self.live_role().map(str::to_string);
                self.switch_to(to, now, reason, from)
            }
            None => Routed::default(),
        }
    }

    /// An operator's switch to `role` (or back to automatic with `None`): at once, from its warm GOP.
    pub fn force(&mut self, role: Option<&str>, now: Instant) -> Result<Routed, ForceRefused> {
        let Some(role) = role else {
            self.forced = None;
            return Ok(Routed::default());
        };
        let lane = self.lanes.iter().find(|l| l.role == role).ok_or_else(|| ForceRefused::NotAttached(role.into()))?;
        if !lane.ready(now, self.settings.timeout) {
            return Err(ForceRefused::NotReady(role.into()));
        }
        let id = lane.id;
        self.forced = Some(role.to_string());
        if self.live == Some(id) {
            return Ok(Routed::default());
        }
        let from = self.live_role().map(str::to_string);
        Ok(self.switch_to(id, now, "switched by the operator", from))
    }

    /// The forced role, if an operator chose one.
    pub fn forced(&self) -> Option<&str> {
        self.forced.as_deref()
    }

    /// The lane to switch to: the forced one when it is ready, else the most preferred ready one.
    fn best(&self, now: Instant, exclude: Option<u64>) -> Option<u64> {
        let timeout = self.settings.timeout;
        let ready = |l: &&Lane| Some(l.id) != exclude && l.ready(now, timeout);
        if let Some(f) = &self.forced {
            if let Some(l) = self.lanes.iter().filter(ready).find(|l| &l.role == f) {
                return Some(l.id);
            }
        }
        self.lanes.iter().filter(ready).min_by_key(|l| l.rank).map(|l| l.id)
    }

    /// Makes lane `to` live: its headers when they differ from the players', then its warm GOP, rebased so the
    /// timeline goes on after the last frame forwarded: at least `GAP_MS` after it, and by the stall when the stall was
    /// longer than the GOP (so the timeline keeps pace with the wall clock). The GOP is replayed at once, so when it
    /// is longer than the stall the timeline runs ahead by the difference (players get a burst they buffer).
    fn switch_to(&mut self, to: u64, now: Instant, reason: &'static str, from: Option<String>) -> Routed {
        let Some(lane) = self.lanes.iter_mut().find(|l| l.id == to) else { return Routed::default() };
        let (first, newest) = match (lane.gop.first(), lane.gop.last()) {
            (Some(a), Some(b)) => (a.timestamp, b.timestamp),
            _ => return Routed::default(),
        };
        lane.offset = match (self.last_ts, self.last_at) {
            (Some(last), Some(at)) => {
                let stall = now.duration_since(at).as_millis().min(u32::MAX as u128 / 4) as u32;
                let span = (newest.wrapping_sub(first) as i32).max(0) as u32;
                let start = last.wrapping_add(GAP_MS.max(stall.saturating_sub(span)));
                start.wrapping_sub(first)
            }
            _ => 0,
        };
        let start_ts = first.wrapping_add(lane.offset);
        let mut out = Vec::with_capacity(lane.gop.len() + 2);
        // Only the codec configuration goes out again, and only when it differs: the players' decoders then
        // reconfigure (a new resolution) or go on untouched. The new source's onMetaData is not sent: the stream's
        // anchor (HLS numbering) must not follow another source's clock.
        let video = lane.video_header.clone().filter(|h| Some(&h.payload) != self.sent_video_header.as_ref());
        let audio = lane.audio_header.clone().filter(|h| Some(&h.payload) != self.sent_audio_header.as_ref());
        for mut h in [video, audio].into_iter().flatten() {
            h.timestamp = start_ts;
            out.push(h);
        }
        let offset = lane.offset;
        let gop: Vec<Media> = lane.gop.clone();
        let info = lane.info.clone();
        let role = lane.role.clone();
        self.live = Some(to);
        self.live_from(Some(role.clone()), now);
        self.switches += 1;
        tracing::info!(from = from.as_deref().unwrap_or("none"), to = %role, reason, gop_frames = gop.len(), "source switched");
        self.last_switch = Some(SwitchRecord { from, to: role, reason, at: now });
        let mut forwarded = Vec::new();
        for m in out.into_iter().chain(gop.into_iter().map(|mut m| {
            m.timestamp = m.timestamp.wrapping_add(offset);
            m
        })) {
            forwarded.push(self.note_sent(m, now));
        }
        Routed { out: forwarded, switched: Some((to, info)) }
    }

    /// Closes the live role's run of time and starts `role`'s (none: nothing live now).
    fn live_from(&mut self, role: Option<String>, now: Instant) {
        if let Some((r, since)) = self.live_since.take() {
            *self.live_time.entry(r).or_default() += now.duration_since(since);
        }
        self.live_since = role.map(|r| (r, now));
    }

    /// Time each role has been live, the current run included.
    pub fn live_time(&self, now: Instant) -> Vec<(String, Duration)> {
        let mut t = self.live_time.clone();
        if let Some((r, since)) = &self.live_since {
            *t.entry(r.clone()).or_default() += now.duration_since(*since);
        }
        t.into_iter().collect()
    }

    /// Forwards a live lane's message on the switch's timeline.
    fn forward(&mut self, id: u64, mut media: Media, now: Instant) -> Vec<Media> {
        let offset = self.lanes.iter().find(|l| l.id == id).map_or(0, |l| l.offset);
        media.timestamp = media.timestamp.wrapping_add(offset);
        vec![self.note_sent(media, now)]
    }

    /// Remembers what the players have now (timeline point, headers).
    fn note_sent(&mut self, media: Media, now: Instant) -> Media {
        if media.is_video_header() {
            self.sent_video_header = Some(media.payload.clone());
        } else if media.is_audio_header() {
            self.sent_audio_header = Some(media.payload.clone());
        } else if !media.is_metadata() {
            if self.last_ts.is_none_or(|l| (media.timestamp.wrapping_sub(l) as i32) > 0) {
                self.last_ts = Some(media.timestamp);
            }
            self.last_at = Some(now);
        }
        media
    }

    /// Every source of the key, preferred first.
    pub fn lanes(&self, now: Instant) -> Vec<LaneState> {
        let mut v: Vec<&Lane> = self.lanes.iter().collect();
        v.sort_by_key(|l| l.rank);
        v.into_iter()
            .map(|l| LaneState {
                role: l.role.clone(),
                kind: l.info.kind,
                peer: l.info.peer.clone(),
                live: self.live == Some(l.id),
                healthy: l.fresh(now, self.settings.timeout),
                idle_ms: l.last_at.map(|t| now.duration_since(t).as_millis() as u64),
                up_secs: l
                    .up_since
                    .filter(|_| l.fresh(now, self.settings.timeout))
                    .map(|t| now.duration_since(t).as_secs()),
                frames: l.frames,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(peer: &str) -> SourceInfo {
        SourceInfo { kind: "publisher", peer: peer.into() }
    }

    fn video(ts: u32, key: bool, tag: u8) -> Media {
        Media {
            kind: MediaKind::Video,
            timestamp: ts,
            payload: Bytes::from(vec![if key { 0x17 } else { 0x27 }, 1, tag]),
        }
    }

    fn header(tag: u8) -> Media {
        Media { kind: MediaKind::Video, timestamp: 0, payload: Bytes::from(vec![0x17, 0, tag]) }
    }

    fn fast() -> SwitchSettings {
        SwitchSettings {
            timeout: Duration::from_millis(100),
            stable_for: Duration::from_millis(300),
            ..Default::default()
        }
    }

    #[test]
    fn a_silent_main_hands_over_to_the_warm_backup_with_a_continuous_timeline() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut s = Switch { settings: fast(), ..Default::default() };
        assert!(s.attach(1, info("main"), "main", t0).unwrap());
        assert!(!s.attach(2, info("backup"), "backup", t0).unwrap(), "the backup stays warm");
        assert!(matches!(s.attach(3, info("x"), "backup", t0), Err(LaneRefused::Busy(..))));
        assert!(matches!(s.attach(3, info("x"), "spare", t0), Err(LaneRefused::UnknownRole { .. })));
        // Main at its own clock 10_000.., backup at 500.. with another header.
        assert_eq!(s.route(1, header(1), ms(0), 1 << 20).out.len(), 1);
        assert_eq!(s.route(2, header(2), ms(0), 1 << 20).out.len(), 0);
        for i in 0..3u32 {
            let out = s.route(1, video(10_000 + i * 40, i == 0, 1), ms(i as u64 * 40), 1 << 20).out;
            assert_eq!(out.iter().map(|m| m.timestamp).collect::<Vec<_>>(), vec![10_000 + i * 40]);
            assert!(s.route(2, video(500 + i * 40, i == 0, 2), ms(i as u64 * 40), 1 << 20).out.is_empty());
        }
        // Main silent from 80 ms; the backup's frame at 200 ms (past the 100 ms timeout) switches.
        let r = s.route(2, video(700, false, 2), ms(200), 1 << 20);
        let (to, _) = r.switched.expect("switched");
        assert_eq!(to, 2);
        assert_eq!(s.live_role(), Some("backup"));
        let ts: Vec<u32> = r.out.iter().map(|m| m.timestamp).collect();
        // Its header (it differs), then its GOP (500, 540, 580, 700): the stall is 120 ms, the GOP spans 200 ms, so
        // the GOP starts 40 ms after the last frame (10_080) and keeps its spacing.
        assert_eq!(ts, vec![10_120, 10_120, 10_160, 10_200, 10_320]);
        assert!(r.out[0].is_video_header());
        assert_eq!(s.switches, 1);
        // Main is back: not preferred until it delivered stable_for (300 ms), and then only at its keyframe.
        for t in (300..=700u32).step_by(40) {
            assert!(s.route(2, video(800 + t, false, 2), ms(t as u64), 1 << 20).switched.is_none());
            let r = s.route(1, video(20_000 + t, t == 300 || t == 620, 1), ms(t as u64), 1 << 20);
            if t < 620 {
                assert!(r.switched.is_none(), "at {t} ms");
                continue;
            }
            assert_eq!(r.switched.map(|x| x.0), Some(1));
            // Main's header differs from the backup's: sent again; its keyframe lands 40 ms after the backup's
            // last frame (800 + 620 + 9_620).
            assert_eq!(r.out.iter().map(|m| m.timestamp).collect::<Vec<_>>(), vec![11_080, 11_080]);
            assert!(r.out[0].is_video_header());
            break;
        }
        assert_eq!((s.switches, s.live_role()), (2, Some("main")));
        // Live time per role: main 0-200 ms and from 620 ms, the backup 200-620 ms.
        let t: Vec<(String, u128)> = s.live_time(ms(700)).into_iter().map(|(r, d)| (r, d.as_millis())).collect();
        assert_eq!(t, vec![("backup".to_string(), 420), ("main".to_string(), 280)]);
    }

    #[test]
    fn a_long_stall_moves_the_timeline_by_the_stall_not_more() {
        let t0 = Instant::now();
        let mut s = Switch { settings: fast(), ..Default::default() };
        s.attach(1, info("main"), "main", t0).unwrap();
        s.attach(2, info("backup"), "backup", t0).unwrap();
        s.route(1, video(1_000, true, 1), t0, 1 << 20);
        // The backup's GOP is one frame; main left 3 s ago.
        let at = t0 + Duration::from_secs(3);
        let r = s.route(2, video(5, true, 2), at, 1 << 20);
        assert_eq!(r.out.iter().map(|m| m.timestamp).collect::<Vec<_>>(), vec![4_000]);
    }

    #[test]
    fn detaching_the_live_source_switches_at_once_and_flapping_waits() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut s = Switch { settings: fast(), ..Default::default() };
        s.attach(1, info("main"), "main", t0).unwrap();
        s.attach(2, info("backup"), "backup", t0).unwrap();
        s.route(1, video(0, true, 1), ms(0), 1 << 20);
        s.route(2, video(0, true, 2), ms(0), 1 << 20);
        let r = s.detach(1, ms(10));
        assert_eq!(r.switched.map(|x| x.0), Some(2));
        let rec = s.last_switch.clone().unwrap();
        assert_eq!(
            (rec.from.as_deref(), rec.to.as_str(), rec.reason),
            (Some("main"), "backup", "the live source left")
        );
        // Main comes for 200 ms every 400 ms (shorter than stable_for): never switched back to.
        let (mut main, mut id) = (None, 10);
        for t in (20..2000u32).step_by(40) {
            assert!(s.route(2, video(t, t % 200 == 20, 2), ms(t as u64), 1 << 20).switched.is_none());
            let up = (t - 20) % 400 < 200;
            match (up, main) {
                (true, None) => {
                    s.attach(id, info("main"), "main", ms(t as u64)).unwrap();
                    main = Some(id);
                    id += 1;
                }
                (false, Some(m)) => {
                    s.detach(m, ms(t as u64));
                    main = None;
                }
                _ => {}
            }
            if let Some(m) = main {
                assert!(s.route(m, video(t, true, 1), ms(t as u64), 1 << 20).switched.is_none(), "at {t} ms");
            }
        }
        assert_eq!((s.switches, s.live_role()), (1, Some("backup")));
    }

    #[test]
    fn an_operator_can_force_a_source_and_give_it_back() {
        let t0 = Instant::now();
        let mut s = Switch { settings: fast(), ..Default::default() };
        s.attach(1, info("main"), "main", t0).unwrap();
        s.attach(2, info("backup"), "backup", t0).unwrap();
        assert!(matches!(s.force(Some("backup"), t0), Err(ForceRefused::NotReady(_))));
        assert!(matches!(s.force(Some("slate"), t0), Err(ForceRefused::NotAttached(_))));
        s.route(1, video(0, true, 1), t0, 1 << 20);
        s.route(2, video(0, true, 2), t0, 1 << 20);
        assert_eq!(s.force(Some("backup"), t0).unwrap().switched.map(|x| x.0), Some(2));
        // Main is preferred and stable, but the operator's choice holds.
        for t in (50..=400u32).step_by(50) {
            let at = t0 + Duration::from_millis(t as u64);
            s.route(2, video(t, false, 2), at, 1 << 20);
            assert!(s.route(1, video(t, true, 1), at, 1 << 20).switched.is_none(), "at {t} ms");
        }
        assert_eq!(s.forced(), Some("backup"));
        // Back to automatic: main (preferred, stable for 400 ms) takes over at its next keyframe.
        let at = t0 + Duration::from_millis(450);
        s.force(None, at).unwrap();
        s.route(2, video(450, false, 2), at, 1 << 20);
        assert_eq!(s.route(1, video(450, true, 1), at, 1 << 20).switched.map(|x| x.0), Some(1));
    }
}
