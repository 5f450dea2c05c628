//! A stream: its source, GOP cache, monotonic timeline across sources, held frames and their timer, and its ring.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{watch, Notify};

use super::clock::Clock;
use super::doors::Tap;
use super::frame::Frame;
use super::ring::{Item, ReadInfo, Reader, Ring};
use super::switch::{ForceRefused, LaneRefused, LaneState, Switch, SwitchRecord, SwitchSettings};
use super::Budget;
use crate::wire::proto::{Media, MediaKind};

/// Gap inserted between the last timestamp of a lost source and the first of its replacement.
const REBASE_GAP_MS: u32 = 40;
/// A step between one source's timestamps larger than this, either way, is a discontinuity (an encoder restarted
/// its clock, a publisher with `-output_ts_offset`): the timeline is rebased to go on just after the last frame.
/// Interleaved audio and video step back by tens of milliseconds, and a source silent for `--source-timeout` is
/// dropped, so no healthy stream comes near it.
const MAX_TIMESTAMP_STEP_MS: i32 = 2_000;

/// The source kind of an edge's pull from its origin (`SourceInfo::kind`).
pub const UPSTREAM: &str = "upstream";

/// The source kind of an origin's rtmp:// pull source (`SourceInfo::kind`).
pub const PULL_RTMP: &str = "pull-rtmp";

/// Now in Unix milliseconds (the stream clock's anchor).
fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Who feeds a stream.
#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    /// "publisher" on an origin, "upstream" on an edge.
    pub kind: &'static str,
    /// Publisher's address or the origin URL pulled from.
    pub peer: String,
}

/// A key's sources as `GET /sources/{app}/{key}` shows them.
pub struct KeyLanes {
    pub lanes: Vec<LaneState>,
    pub live: Option<String>,
    pub forced: Option<String>,
    pub switches: u64,
    pub last_switch: Option<SwitchRecord>,
    pub settings: SwitchSettings,
    /// Time each role has been live since the stream started.
    pub live_time: Vec<(String, Duration)>,
}

/// Cached state a new player starts from, plus the monotonic timestamp mapping.
#[derive(Default)]
struct Cache {
    source: Option<(u64, SourceInfo)>,
    /// When the last source left (or the stream was created without one): grace period runs from here.
    source_lost_at: Option<Instant>,
    metadata: Option<Media>,
    video_header: Option<Media>,
    audio_header: Option<Media>,
    /// Frames from the latest keyframe on: a new player starts decoding at once.
    gop: Vec<Arc<Frame>>,
    gop_bytes: usize,
    /// The GOP outgrew the cache bound: stop caching until the next keyframe.
    gop_overflow: bool,
    /// Highest timestamp sent to players.
    last_out: Option<u32>,
    /// Added (wrapping) to source timestamps so a replacement source continues the timeline.
    offset: u32,
    /// Set when a new source attaches after another: the next frame fixes `offset`.
    rebase: bool,
    /// Cached (GOP, headers) but not yet sent to players: audio and data held for the next video frame
    /// (`--coalesce-ms`). Everything cached is sent before anyone subscribes, so nobody gets a frame twice.
    held: Vec<Arc<Frame>>,
    /// Bytes of `held`: they count against the stream's byte budget with the ring's.
    held_bytes: usize,
    /// When the oldest held frame must go out at the latest.
    held_until: Option<Instant>,
    ring: Ring,
    /// The stream's wall clock (HLS numbering, program date-time) and the anchor players are told.
    clock: Clock,
    /// Every source of the key (main, backups, slate) and which one is live: `source` is the live one.
    switch: Switch,
}

/// How a player receives a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rtmp,
    HttpFlv,
    Rtmpt,
    /// An HLS session (no connection of its own: counted while it keeps asking).
    Hls,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::HttpFlv => "http-flv",
            Protocol::Rtmpt => "rtmpt",
            Protocol::Hls => "hls",
        }
    }
}

/// Players of a stream by protocol, for `GET /streams`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PlayersByProtocol {
    pub rtmp: usize,
    #[serde(rename = "http-flv")]
    pub http_flv: usize,
    pub rtmpt: usize,
    pub hls: usize,
}

/// Per-stream counters, read by the API.
#[derive(Default)]
pub struct StreamStats {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub players: AtomicUsize,
    /// Players by [`Protocol`] (in its order).
    by_protocol: [AtomicUsize; 4],
    /// Bits per second, refreshed once a second by the hub's sampler.
    pub bps_in: AtomicU64,
    pub bps_out: AtomicU64,
    pub(super) last_in: AtomicU64,
    pub(super) last_out: AtomicU64,
}

/// A live stream (app + key).
pub struct Stream {
    pub app: String,
    pub name: String,
    pub created: Instant,
    pub stats: StreamStats,
    /// Bumped whenever frames enter the ring or the stream ends: wakes the players.
    wake: watch::Sender<u64>,
    cache: Mutex<Cache>,
    ended: AtomicBool,
    has_video: AtomicBool,
    /// A source sent something: the stream exists. A stream that ends without it was never found, and its
    /// players are told so (StreamNotFound, 404) rather than that it ended.
    had_media: AtomicBool,
    /// A player subscribed at some time (an edge stops a never-found pull as soon as its players left).
    had_player: AtomicBool,
    next_source_id: AtomicU64,
    /// Players were last seen at this time (edge idle stop).
    last_player_at: Mutex<Instant>,
    budget: Budget,
    /// The hub's source-change counter: bumped when a source attaches or leaves, so a manager hears of ingest at once.
    changes: Arc<watch::Sender<u64>>,
    /// Wakes the stream's release timer when frames start being held (once per hold, not per frame) or the
    /// stream ends.
    timer: Arc<Notify>,
    /// Sees every frame as it is pushed (the HLS packager), if egress gave the stream one.
    tap: Option<Arc<dyn Tap>>,
}

/// What a new player gets: the cached start and its subscription to live frames.
pub struct Subscription {
    pub start: Vec<Arc<Frame>>,
    pub rx: Reader,
}

impl Stream {
    pub(super) fn new(
        app: &str,
        name: &str,
        budget: Budget,
        changes: Arc<watch::Sender<u64>>,
        tap: Option<Arc<dyn Tap>>,
    ) -> Arc<Self> {
        let (wake, _) = watch::channel(0);
        let now = Instant::now();
        Arc::new(Self {
            app: app.to_string(),
            name: name.to_string(),
            created: now,
            stats: StreamStats::default(),
            wake,
            cache: Mutex::new(Cache { source_lost_at: Some(now), ..Default::default() }),
            ended: AtomicBool::new(false),
            has_video: AtomicBool::new(false),
            had_media: AtomicBool::new(false),
            had_player: AtomicBool::new(false),
            next_source_id: AtomicU64::new(1),
            last_player_at: Mutex::new(now),
            budget,
            changes,
            timer: Arc::new(Notify::new()),
            tap,
        })
    }

    /// Starts the task that releases held frames when their time is up (`--coalesce-ms`, `--merge-ms`): the
    /// stream owns its timer, so no source has to poll for it. It ends with the stream. Without a tokio runtime
    /// (unit tests) nothing is started and [`Stream::release_due`] is called by hand.
    pub(super) fn start_timer(self: &Arc<Self>) {
        if (self.budget.merge.is_zero() && self.budget.coalesce.is_zero())
            || tokio::runtime::Handle::try_current().is_err()
        {
            return;
        }
        let (stream, timer) = (Arc::downgrade(self), self.timer.clone());
        tokio::spawn(release_timer(stream, timer));
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // A panic while holding the lock cannot leave the cache inconsistent in a way that matters more
        // than stopping the relay would, so keep serving.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches a publisher/upstream in `role`: live at once when no other source is attached, else warm (its
    /// frames cached, not forwarded) until the switch picks it. Refused while another source has the role.
    pub(super) fn attach_source(&self, info: SourceInfo, role: &str) -> Result<u64, LaneRefused> {
        let mut c = self.cache();
        let id = self.next_source_id.fetch_add(1, Ordering::Relaxed);
        let live = c.switch.attach(id, info.clone(), role, Instant::now())?;
        if !live {
            drop(c);
            self.changes.send_modify(|n| *n += 1);
            return Ok(id);
        }
        c.source = Some((id, info));
        c.source_lost_at = None;
        c.rebase = c.last_out.is_some();
        c.clock.source_attached();
        // The old GOP belongs to the old source's decoder state; the new source sends fresh headers.
        c.gop.clear();
        c.gop_bytes = 0;
        drop(c);
        self.changes.send_modify(|n| *n += 1);
        Ok(id)
    }

    /// Detaches source `id`; when it was live, the best ready source of the key takes over at once.
    pub(super) fn detach_source(&self, id: u64) {
        let mut c = self.cache();
        let routed = c.switch.detach(id, Instant::now());
        if let Some((to, info)) = routed.switched {
            self.switched(&mut c, to, info);
            for m in routed.out {
                self.forward(&mut c, m);
            }
            drop(c);
            self.changes.send_modify(|n| *n += 1);
            return;
        }
        if matches!(&c.source, Some((cur, _)) if *cur == id) {
            self.release(&mut c);
            c.source = None;
            c.source_lost_at = Some(Instant::now());
            c.gop.clear();
            c.gop_bytes = 0;
            drop(c);
            self.changes.send_modify(|n| *n += 1);
        } else {
            // A warm source left: the key's view changed.
            drop(c);
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// The switch made `to` live: the stream's source is now it. The switch has already rebased its timestamps
    /// to continue the timeline, so the stream's own rebasing stays off; the clock's anchor stays too (an
    /// upstream relay's announced anchor is not followed across a switch).
    fn switched(&self, c: &mut Cache, to: u64, info: SourceInfo) {
        c.source = Some((to, info));
        c.source_lost_at = None;
        c.clock.source_attached();
        c.gop.clear();
        c.gop_bytes = 0;
    }

    /// Sets how the key's sources are ranked and timed (from `PUT /sources`).
    pub(super) fn configure_switch(&self, settings: SwitchSettings) {
        self.cache().switch.configure(settings);
    }

    /// An operator's switch to `role` (`None`: back to automatic).
    pub fn force_source(&self, role: Option<&str>) -> Result<(), ForceRefused> {
        let mut c = self.cache();
        let routed = c.switch.force(role, Instant::now())?;
        if let Some((to, info)) = routed.switched {
            self.switched(&mut c, to, info);
            for m in routed.out {
                self.forward(&mut c, m);
            }
            drop(c);
            self.changes.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    /// The key's sources and which one is live.
    pub fn lanes(&self) -> KeyLanes {
        let c = self.cache();
        KeyLanes {
            lanes: c.switch.lanes(Instant::now()),
            live: c.switch.live_role().map(str::to_string),
            forced: c.switch.forced().map(str::to_string),
            switches: c.switch.switches,
            last_switch: c.switch.last_switch.clone(),
            settings: c.switch.settings.clone(),
            live_time: c.switch.live_time(Instant::now()),
        }
    }

    pub fn source(&self) -> Option<SourceInfo> {
        self.cache().source.as_ref().map(|(_, s)| s.clone())
    }

    /// How long the stream has been without a source, if it has none.
    pub fn sourceless_for(&self) -> Option<Duration> {
        let c = self.cache();
        if c.switch.has_lanes() {
            // A source is attached but not ready yet (a backup waiting for its keyframe): the stream waits for it;
            // one that sends nothing is dropped by --source-timeout, and the grace period then runs.
            return None;
        }
        c.source_lost_at.map(|t| t.elapsed())
    }

    pub fn has_video(&self) -> bool {
        self.has_video.load(Ordering::Relaxed)
    }

    /// Whether a source ever sent media: false means nobody has found this stream yet.
    pub fn had_media(&self) -> bool {
        self.had_media.load(Ordering::Acquire)
    }

    /// Whether a player ever subscribed.
    pub fn had_player(&self) -> bool {
        self.had_player.load(Ordering::Acquire)
    }

    /// Publishes one message from source `id` to every player and the cache.
    pub(super) fn push(&self, id: u64, media: Media) {
        self.stats.bytes_in.fetch_add(media.payload.len() as u64, Ordering::Relaxed);
        if media.kind == MediaKind::Video {
            self.has_video.store(true, Ordering::Relaxed);
        }
        self.had_media.store(true, Ordering::Release);
        let mut c = self.cache();
        let routed = c.switch.route(id, media, Instant::now(), self.budget.gop_max_bytes);
        if let Some((to, info)) = routed.switched {
            self.switched(&mut c, to, info);
            self.changes.send_modify(|n| *n += 1);
        }
        for m in routed.out {
            self.forward(&mut c, m);
        }
    }

    /// Sends one message of the live source (on the switch's timeline) to the players and the cache.
    fn forward(&self, c: &mut Cache, media: Media) {
        let header = media.is_metadata() || media.is_video_header() || media.is_audio_header();
        let ts = if c.rebase && header {
            // A new source sends its headers first, often stamped 0 whatever its media's clock: they go out at
            // the timeline's current point and the first real frame fixes the offset (else a publisher starting
            // at one hour would step the players' timeline by an hour).
            c.last_out.unwrap_or(0)
        } else {
            if c.rebase {
                // Continue the timeline: the new source's first frame lands just after the last frame sent.
                let last = c.last_out.unwrap_or(0);
                c.offset = last.wrapping_add(REBASE_GAP_MS).wrapping_sub(media.timestamp);
                c.rebase = false;
            }
            let ts = media.timestamp.wrapping_add(c.offset);
            match c.last_out {
                Some(last) if (ts.wrapping_sub(last) as i32).abs() > MAX_TIMESTAMP_STEP_MS => {
                    if header {
                        // Headers may be stamped anywhere (0 on a codec change): shown at the timeline's point,
                        // they are no reason to move it.
                        last
                    } else {
                        tracing::debug!(app = %self.app, key = %self.name, step_ms = ts.wrapping_sub(last) as i32, "timestamp discontinuity, rebasing the timeline");
                        c.offset = last.wrapping_add(REBASE_GAP_MS).wrapping_sub(media.timestamp);
                        last.wrapping_add(REBASE_GAP_MS)
                    }
                }
                _ => ts,
            }
        };
        // Compare in wrapping arithmetic so a timeline crossing 2^32 ms still counts as moving forward. Headers do
        // not move it: a first source's headers come stamped 0 before media that may start anywhere.
        if !header && c.last_out.is_none_or(|l| (ts.wrapping_sub(l) as i32) > 0) {
            c.last_out = Some(ts);
        }
        // An edge's pull and an origin's rtmp:// pull may come from one of our relays, which announces its clock:
        // it is followed (two origins pulling one camera relay then share its clock, and a failover between them
        // keeps the HLS timeline). A publisher's announcement is not (a restream through ffmpeg rewrites the
        // timestamps it applies to).
        let from_upstream = matches!(&c.source, Some((_, s)) if s.kind == UPSTREAM || s.kind == PULL_RTMP);
        let mut media = media;
        if media.is_metadata() {
            if from_upstream {
                c.clock.upstream_metadata(&media);
            }
            c.metadata = Some(media.clone());
            // Players (and the edges below us) get it with this relay's anchor.
            if let Some(m) = c.clock.metadata(Some(&media), ts) {
                media = m;
            }
        } else if media.is_video_header() {
            c.video_header = Some(media.clone());
        } else if media.is_audio_header() {
            c.audio_header = Some(media.clone());
        }
        let is_header = media.is_metadata() || media.is_video_header() || media.is_audio_header();
        let clock = if is_header {
            c.clock.current()
        } else {
            let offset = c.offset;
            let clock = c.clock.frame(ts, offset, from_upstream, unix_ms());
            if c.clock.to_announce().is_some() {
                // The anchor is new (the stream's first frame, an edge's new upstream): players hear of it
                // before the frame it applies to.
                let source = c.metadata.clone();
                if let Some(m) = c.clock.metadata(source.as_ref(), ts) {
                    let f = Frame::new(m, ts);
                    if let Some(tap) = &self.tap {
                        tap.frame(&f, clock);
                    }
                    self.hold(c, f);
                }
            }
            clock
        };
        let keyframe = media.is_keyframe() && !media.is_video_header();
        let frame = Frame::new(media, ts);
        if let Some(tap) = &self.tap {
            tap.frame(&frame, clock);
        }
        if keyframe {
            c.gop.clear();
            c.gop_bytes = 0;
            c.gop_overflow = false;
        }
        let cacheable = !is_header && !c.gop_overflow && (keyframe || !c.gop.is_empty() || !self.has_video());
        if cacheable {
            c.gop_bytes += frame.size();
            if c.gop_bytes > self.budget.gop_max_bytes {
                c.gop.clear();
                c.gop_bytes = 0;
                c.gop_overflow = true;
            } else {
                c.gop.push(frame.clone());
            }
        }
        self.hold(c, frame);
    }

    /// Holds `frame` for its players (merging, coalescing) or releases it now.
    fn hold(&self, c: &mut Cache, frame: Arc<Frame>) {
        // Every player wakes and writes once per send burst, so holding audio and data until the next video
        // frame turns two or three socket writes per player into one. Video goes out at once, and nothing
        // waits longer than --coalesce-ms (audio-only streams, gaps).
        // With --merge-ms everything waits for the end of the merge period: players then wake, read and write
        // once per period instead of once per frame, which is what their CPU cost follows.
        let video = frame.media.kind == MediaKind::Video;
        c.held_bytes += frame.size();
        c.held.push(frame);
        let hold = if !self.budget.merge.is_zero() {
            Some(self.budget.merge)
        } else if video || self.budget.coalesce.is_zero() {
            None
        } else {
            Some(self.budget.coalesce)
        };
        match hold {
            // Held frames count against --stream-buffer-bytes: past it they go out now rather than wait.
            Some(_) if c.held_bytes >= self.budget.stream_bytes => self.release(c),
            None => self.release(c),
            Some(d) => {
                let room = self.budget.stream_bytes - c.held_bytes;
                c.ring.trim(self.max_frames(), room);
                if c.held_until.is_none() {
                    c.held_until = Some(Instant::now() + d);
                    self.timer.notify_one();
                }
            }
        }
    }

    /// Bytes the ring and the held frames keep now.
    #[cfg(test)]
    pub(super) fn buffered_bytes(&self) -> usize {
        let c = self.cache();
        c.ring.bytes() + c.held_bytes
    }

    /// Most frames the ring keeps.
    fn max_frames(&self) -> usize {
        self.budget.queue.max(16)
    }

    /// Sends held frames to players.
    fn release(&self, c: &mut Cache) {
        c.held_until = None;
        if c.held.is_empty() {
            return;
        }
        c.held_bytes = 0;
        let Cache { held, ring, .. } = c;
        for frame in held.drain(..) {
            ring.push(frame, self.max_frames(), self.budget.stream_bytes);
        }
        let head = ring.head();
        self.wake.send_replace(head);
    }

    /// Moves up to `max` frames at `r`'s position into `out` (or `Item::End`), and says how far behind it is.
    pub fn read(&self, r: &mut Reader, max: usize, out: &mut Vec<Item>) -> ReadInfo {
        // Mark the current wake-up as seen before looking, so a push after this look wakes the next wait.
        r.wake.borrow_and_update();
        self.cache().ring.read(r, max, out)
    }

    /// Waits until frames may be ready for `r` (or the stream ended).
    pub async fn wait(&self, r: &mut Reader) {
        if r.wake.changed().await.is_err() {
            // The sender lives as long as the stream, which the caller holds: never reached.
            std::future::pending::<()>().await
        }
    }

    /// Whether [`Stream::read`] has something for `r` now (frames, or the end).
    pub fn has_unread(&self, r: &Reader) -> bool {
        self.cache().ring.has_unread(r)
    }

    /// When the held frames go out at the latest, if frames are held.
    pub(super) fn held_until(&self) -> Option<Instant> {
        self.cache().held_until
    }

    /// Sends held frames whose time is up (the stream's timer fired).
    pub(super) fn release_due(&self) {
        let mut c = self.cache();
        if c.held_until.is_some_and(|t| t <= Instant::now()) {
            self.release(&mut c);
        }
    }

    /// Subscribes a player: metadata, sequence headers and the GOP, then live frames with no gap.
    pub fn subscribe(&self, protocol: Protocol) -> Subscription {
        let mut c = self.cache();
        // Held frames may already be in the GOP: send them to the others first so this player's start and
        // its live frames neither overlap nor leave a gap.
        self.release(&mut c);
        let rx = Reader { next: c.ring.head(), wake: self.wake.subscribe() };
        let start_ts = c.gop.first().map(|f| f.timestamp).or(c.last_out).unwrap_or(0);
        let mut start = Vec::with_capacity(c.gop.len() + 3);
        let source = c.metadata.clone();
        let metadata = c.clock.metadata(source.as_ref(), start_ts);
        for m in [&metadata, &c.video_header, &c.audio_header].into_iter().flatten() {
            // Headers are stamped with the GOP's start so a player's timeline never goes backwards.
            start.push(Frame::new(m.clone(), start_ts));
        }
        start.extend(c.gop.iter().cloned());
        drop(c);
        self.count_player(protocol);
        Subscription { start, rx }
    }

    /// Counts a player that reads no ring of its own (an HLS session) until [`Stream::unsubscribe`]: it keeps an
    /// edge's pull alive like any player.
    pub fn count_player(&self, protocol: Protocol) {
        self.had_player.store(true, Ordering::Release);
        self.stats.players.fetch_add(1, Ordering::Relaxed);
        self.stats.by_protocol[protocol as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn unsubscribe(&self, protocol: Protocol) {
        self.stats.players.fetch_sub(1, Ordering::Relaxed);
        self.stats.by_protocol[protocol as usize].fetch_sub(1, Ordering::Relaxed);
        *self.last_player_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    pub fn players(&self) -> usize {
        self.stats.players.load(Ordering::Relaxed)
    }

    pub fn players_by_protocol(&self) -> PlayersByProtocol {
        let n = |p: Protocol| self.stats.by_protocol[p as usize].load(Ordering::Relaxed);
        PlayersByProtocol {
            rtmp: n(Protocol::Rtmp),
            http_flv: n(Protocol::HttpFlv),
            rtmpt: n(Protocol::Rtmpt),
            hls: n(Protocol::Hls),
        }
    }

    /// Time since the last player left, if there are none now.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.players() > 0 {
            return None;
        }
        Some(self.last_player_at.lock().unwrap_or_else(|e| e.into_inner()).elapsed())
    }

    /// Marks the stream over and tells every player.
    pub fn end(&self) {
        self.finish(false);
    }

    /// Stops carrying a stream that has not ended at its source (an edge's idle stop): players, if any came just
    /// then, are told it is over like `end`; the tap forgets it rather than announcing an end.
    pub fn retire(&self) {
        self.finish(true);
    }

    fn finish(&self, retired: bool) {
        if !self.ended.swap(true, Ordering::AcqRel) {
            let mut c = self.cache();
            self.release(&mut c);
            c.ring.ended = true;
            let head = c.ring.head();
            drop(c);
            self.wake.send_replace(head + 1);
            self.timer.notify_one();
            match &self.tap {
                Some(tap) if retired => tap.retire(),
                Some(tap) => tap.end(self.had_media()),
                None => {}
            }
        }
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Frames (video and audio) currently cached in the GOP.
    pub fn gop_len(&self) -> usize {
        self.cache().gop.len()
    }
}

/// A stream's release timer: sleeps until the held frames are due, releases them, and waits for the next hold.
/// Holds the stream only weakly and between waits, so it never keeps an ended stream alive.
async fn release_timer(stream: Weak<Stream>, timer: Arc<Notify>) {
    loop {
        let until = match stream.upgrade() {
            Some(s) if !s.is_ended() => s.held_until(),
            _ => return,
        };
        match until {
            Some(t) => tokio::time::sleep_until(t.into()).await,
            // A hold that began since the look above left a permit: this returns at once.
            None => timer.notified().await,
        }
        if let Some(s) = stream.upgrade() {
            s.release_due();
        }
    }
}
