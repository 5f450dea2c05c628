//! Streams and their fan-out: GOP cache, shared pre-chunked frames, monotonic timestamps across sources.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::watch;

use crate::wire::proto::Media;

/// The message stream id ffmpeg, nginx-rtmp and Flash clients get from their (only) createStream: frames are
/// pre-chunked for it once. A player on another id gets its own encoding.
pub const SHARED_STREAM_ID: u32 = 1;
/// Gap inserted between the last timestamp of a lost source and the first of its replacement.
const REBASE_GAP_MS: u32 = 40;
/// A step between one source's timestamps larger than this, either way, is a discontinuity (an encoder restarted
/// its clock, a publisher with `-output_ts_offset`): the timeline is rebased to go on just after the last frame.
/// Interleaved audio and video step back by tens of milliseconds, and a source silent for `--source-timeout` is
/// dropped, so no healthy stream comes near it.
const MAX_TIMESTAMP_STEP_MS: i32 = 2_000;

/// One message of a stream, chunked once and shared by every player (no per-player copy).
///
/// Only one copy of the payload exists: the wire form is the chunk headers (one small buffer) interleaved
/// with slices of the payload, written with vectored writes, instead of a second, chunked copy of the payload.
#[derive(Debug)]
pub struct Frame {
    pub media: Media,
    /// Timestamp players see (after rebasing onto the stream's monotonic timeline).
    pub timestamp: u32,
    /// Chunk headers for message stream `SHARED_STREAM_ID`: the full first header, then one per continuation.
    headers: Bytes,
    /// The FLV tag header (11 bytes) and PreviousTagSize (4 bytes) around the payload, built by the first
    /// HTTP-FLV player that needs them and shared by the rest.
    flv: OnceLock<Bytes>,
}

impl Frame {
    fn new(media: Media, timestamp: u32) -> Arc<Self> {
        // FFmpeg's FLV demuxer takes onMetaData as stream metadata only at timestamp 0; at any other time it
        // becomes a bogus subtitle stream. nginx-rtmp sends it at 0 too.
        let timestamp = if media.is_metadata() { 0 } else { timestamp };
        let headers = media.encode_headers(timestamp, SHARED_STREAM_ID);
        Arc::new(Self { media, timestamp, headers, flv: OnceLock::new() })
    }

    /// Appends the FLV tag of this frame (header, payload, PreviousTagSize) as buffers to write.
    pub fn flv_tag(&self, out: &mut VecDeque<Bytes>) {
        let h = self.flv.get_or_init(|| crate::wire::flv::tag_frame(&self.media, self.timestamp));
        out.push_back(h.slice(..11));
        if !self.media.payload.is_empty() {
            out.push_back(self.media.payload.clone());
        }
        out.push_back(h.slice(11..));
    }

    /// Bytes this frame holds (payload and headers): what the byte budgets count.
    pub fn size(&self) -> usize {
        self.media.payload.len() + self.headers.len()
    }

    /// Appends the wire form for a player on `stream_id` as buffers to write; shared unless the player uses an
    /// unusual id.
    pub fn wire_for(&self, stream_id: u32, out: &mut VecDeque<Bytes>) {
        if stream_id != SHARED_STREAM_ID {
            out.push_back(self.media.encode(self.timestamp, stream_id));
            return;
        }
        let p = &self.media.payload;
        let cs = crate::wire::proto::OUT_CHUNK_SIZE;
        let (first, cont) = crate::wire::chunk::header_lens(self.timestamp);
        out.push_back(self.headers.slice(..first));
        let mut h = first;
        for (i, start) in (0..p.len().max(1)).step_by(cs).enumerate() {
            if i > 0 {
                out.push_back(self.headers.slice(h..h + cont));
                h += cont;
            }
            if !p.is_empty() {
                out.push_back(p.slice(start..(start + cs).min(p.len())));
            }
        }
    }

    /// The whole wire form in one buffer (tests and rare paths).
    pub fn wire_bytes(&self, stream_id: u32) -> Bytes {
        let mut v = VecDeque::new();
        self.wire_for(stream_id, &mut v);
        let mut b = bytes::BytesMut::new();
        for x in v {
            b.extend_from_slice(&x);
        }
        b.freeze()
    }
}

/// What a player reads from the fan-out.
#[derive(Debug, Clone)]
pub enum Item {
    Frame(Arc<Frame>),
    /// The stream is over (no source within the grace period): players are told and disconnected.
    End,
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

/// The fan-out ring: recent frames every player reads from at its own position (sequence number).
///
/// Bounded in frames and in bytes; a player whose position fell out of the ring has lagged and resumes at a
/// keyframe. Players hold only a position, so a slow player costs no memory beyond the shared ring.
#[derive(Default)]
struct Ring {
    /// Frames with the stream's byte count before each (for a player's backlog in bytes).
    frames: VecDeque<(u64, Arc<Frame>)>,
    /// Sequence number of `frames[0]`.
    base: u64,
    bytes: usize,
    /// Bytes ever pushed.
    total: u64,
    ended: bool,
}

impl Ring {
    fn head(&self) -> u64 {
        self.base + self.frames.len() as u64
    }
}

/// A player's position in a stream's ring and its wake-up.
pub struct Reader {
    next: u64,
    wake: watch::Receiver<u64>,
}

/// What [`Stream::read`] found.
#[derive(Debug, Default)]
pub struct ReadInfo {
    /// Frames that left the ring before this player read them.
    pub lagged: u64,
    /// Frames and bytes still unread after this read.
    pub behind_frames: usize,
    pub behind_bytes: u64,
    pub ended: bool,
}

/// Who feeds a stream.
#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    /// "publisher" on an origin, "upstream" on an edge.
    pub kind: &'static str,
    /// Publisher's address or the origin URL pulled from.
    pub peer: String,
}

/// Returned when a stream already has a live source (a second publisher).
#[derive(Debug, thiserror::Error)]
#[error("stream already has a source: {0}")]
pub struct SourceBusy(pub String);

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
    /// When the oldest held frame must go out at the latest.
    held_until: Option<Instant>,
    ring: Ring,
}

/// How a player receives a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rtmp,
    HttpFlv,
    Rtmpt,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::HttpFlv => "http-flv",
            Protocol::Rtmpt => "rtmpt",
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
}

/// Per-stream counters, read by the API.
#[derive(Default)]
pub struct StreamStats {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub players: AtomicUsize,
    /// Players by [`Protocol`] (in its order).
    by_protocol: [AtomicUsize; 3],
    /// Bits per second, refreshed once a second by the hub's sampler.
    pub bps_in: AtomicU64,
    pub bps_out: AtomicU64,
    last_in: AtomicU64,
    last_out: AtomicU64,
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
}

/// What a new player gets: the cached start and its subscription to live frames.
pub struct Subscription {
    pub start: Vec<Arc<Frame>>,
    pub rx: Reader,
}

impl Stream {
    fn new(app: &str, name: &str, budget: Budget, changes: Arc<watch::Sender<u64>>) -> Arc<Self> {
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
        })
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // A panic while holding the lock cannot leave the cache inconsistent in a way that matters more
        // than stopping the relay would, so keep serving.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches a publisher/upstream; refused while another is live.
    pub fn attach_source(&self, info: SourceInfo) -> Result<u64, SourceBusy> {
        let mut c = self.cache();
        if let Some((_, cur)) = &c.source {
            return Err(SourceBusy(cur.peer.clone()));
        }
        let id = self.next_source_id.fetch_add(1, Ordering::Relaxed);
        c.source = Some((id, info));
        c.source_lost_at = None;
        c.rebase = c.last_out.is_some();
        // The old GOP belongs to the old source's decoder state; the new source sends fresh headers.
        c.gop.clear();
        c.gop_bytes = 0;
        drop(c);
        self.changes.send_modify(|n| *n += 1);
        Ok(id)
    }

    /// Detaches source `id` (no-op if another source replaced it).
    pub fn detach_source(&self, id: u64) {
        let mut c = self.cache();
        if matches!(&c.source, Some((cur, _)) if *cur == id) {
            self.release(&mut c);
            c.source = None;
            c.source_lost_at = Some(Instant::now());
            c.gop.clear();
            c.gop_bytes = 0;
            drop(c);
            self.changes.send_modify(|n| *n += 1);
        }
    }

    pub fn source(&self) -> Option<SourceInfo> {
        self.cache().source.as_ref().map(|(_, s)| s.clone())
    }

    /// How long the stream has been without a source, if it has none.
    pub fn sourceless_for(&self) -> Option<Duration> {
        self.cache().source_lost_at.map(|t| t.elapsed())
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
    pub fn push(&self, id: u64, media: Media) {
        self.stats.bytes_in.fetch_add(media.payload.len() as u64, Ordering::Relaxed);
        if media.kind == crate::wire::proto::MediaKind::Video {
            self.has_video.store(true, Ordering::Relaxed);
        }
        self.had_media.store(true, Ordering::Release);
        let mut c = self.cache();
        if !matches!(&c.source, Some((cur, _)) if *cur == id) {
            return;
        }
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
        if media.is_metadata() {
            c.metadata = Some(media.clone());
        } else if media.is_video_header() {
            c.video_header = Some(media.clone());
        } else if media.is_audio_header() {
            c.audio_header = Some(media.clone());
        }
        let is_header = media.is_metadata() || media.is_video_header() || media.is_audio_header();
        let keyframe = media.is_keyframe() && !media.is_video_header();
        let frame = Frame::new(media, ts);
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
        // Every player wakes and writes once per send burst, so holding audio and data until the next video
        // frame turns two or three socket writes per player into one. Video goes out at once, and nothing
        // waits longer than --coalesce-ms (audio-only streams, gaps).
        // With --merge-ms everything waits for the end of the merge period: players then wake, read and write
        // once per period instead of once per frame, which is what their CPU cost follows.
        let video = frame.media.kind == crate::wire::proto::MediaKind::Video;
        c.held.push(frame);
        let hold = if !self.budget.merge.is_zero() {
            Some(self.budget.merge)
        } else if video || self.budget.coalesce.is_zero() {
            None
        } else {
            Some(self.budget.coalesce)
        };
        match hold {
            None => self.release(&mut c),
            Some(d) => {
                if c.held_until.is_none() {
                    c.held_until = Some(Instant::now() + d);
                }
            }
        }
    }

    /// Sends held frames to players.
    fn release(&self, c: &mut Cache) {
        c.held_until = None;
        if c.held.is_empty() {
            return;
        }
        let Cache { held, ring, .. } = c;
        for frame in held.drain(..) {
            let size = frame.size();
            ring.frames.push_back((ring.total, frame));
            ring.bytes += size;
            ring.total += size as u64;
            // Bounded by count and by bytes, so a stream of huge frames cannot pin queue x max-message-size.
            while ring.frames.len() > self.budget.queue.max(16)
                || (ring.bytes > self.budget.stream_bytes && ring.frames.len() > 1)
            {
                let (_, old) = ring.frames.pop_front().expect("non-empty");
                ring.bytes -= old.size();
                ring.base += 1;
            }
        }
        let head = ring.head();
        self.wake.send_replace(head);
    }

    /// Moves up to `max` frames at `r`'s position into `out` (or `Item::End`), and says how far behind it is.
    pub fn read(&self, r: &mut Reader, max: usize, out: &mut Vec<Item>) -> ReadInfo {
        // Mark the current wake-up as seen before looking, so a push after this look wakes the next wait.
        r.wake.borrow_and_update();
        let c = self.cache();
        let ring = &c.ring;
        let mut info = ReadInfo::default();
        if r.next < ring.base {
            info.lagged = ring.base - r.next;
            r.next = ring.base;
        }
        let mut i = (r.next - ring.base) as usize;
        while i < ring.frames.len() && out.len() < max {
            out.push(Item::Frame(ring.frames[i].1.clone()));
            i += 1;
        }
        r.next = ring.base + i as u64;
        info.behind_frames = ring.frames.len() - i;
        info.behind_bytes = ring.frames.get(i).map_or(0, |(at, _)| ring.total - at);
        if ring.ended && i == ring.frames.len() {
            info.ended = true;
            out.push(Item::End);
        }
        info
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
        let c = self.cache();
        r.next < c.ring.head() || c.ring.ended
    }

    /// When the source should call [`Stream::release_due`], if frames are held.
    pub fn held_until(&self) -> Option<Instant> {
        self.cache().held_until
    }

    /// Sends held frames whose time is up (the source's timer fired).
    pub fn release_due(&self) {
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
        for m in [&c.metadata, &c.video_header, &c.audio_header].into_iter().flatten() {
            // Headers are stamped with the GOP's start so a player's timeline never goes backwards.
            start.push(Frame::new(m.clone(), start_ts));
        }
        start.extend(c.gop.iter().cloned());
        drop(c);
        self.had_player.store(true, Ordering::Release);
        self.stats.players.fetch_add(1, Ordering::Relaxed);
        self.stats.by_protocol[protocol as usize].fetch_add(1, Ordering::Relaxed);
        Subscription { start, rx }
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
        PlayersByProtocol { rtmp: n(Protocol::Rtmp), http_flv: n(Protocol::HttpFlv), rtmpt: n(Protocol::Rtmpt) }
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
        if !self.ended.swap(true, Ordering::AcqRel) {
            let mut c = self.cache();
            self.release(&mut c);
            c.ring.ended = true;
            let head = c.ring.head();
            drop(c);
            self.wake.send_replace(head + 1);
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
}

impl Hub {
    pub fn new(budget: Budget) -> Self {
        Self { streams: Mutex::new(HashMap::new()), budget, changes: Arc::new(watch::channel(0).0) }
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
        let s = Stream::new(app, name, self.budget, self.changes.clone());
        m.insert(key, s.clone());
        (s, true)
    }

    pub fn get(&self, app: &str, name: &str) -> Option<Arc<Stream>> {
        self.map().get(&(app.to_string(), name.to_string())).filter(|s| !s.is_ended()).cloned()
    }

    /// Ends and forgets a stream (only that exact instance, in case it was already replaced).
    pub fn remove(&self, stream: &Arc<Stream>) {
        stream.end();
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
    use super::*;
    use crate::wire::proto::MediaKind;

    fn media(kind: MediaKind, timestamp: u32, first: u8) -> Media {
        // Second byte 1: a coded frame, not a sequence header.
        Media { kind, timestamp, payload: Bytes::from(vec![first, 1, 0, 0, 0]) }
    }

    fn next_ts(s: &Stream, rx: &mut Reader) -> Option<u32> {
        let mut v = Vec::new();
        s.read(rx, 1, &mut v);
        match v.pop() {
            Some(Item::Frame(f)) => Some(f.timestamp),
            _ => None,
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
        let id = s.attach_source(SourceInfo { kind: "publisher", peer: "p".into() }).unwrap();
        let mut early = s.subscribe(Protocol::Rtmp).rx;
        s.push(id, media(MediaKind::Video, 0, 0x17));
        s.push(id, media(MediaKind::Audio, 10, 0xAF));
        assert_eq!(next_ts(&s, &mut early), Some(0), "video goes out at once");
        assert_eq!(next_ts(&s, &mut early), None, "audio waits for the next video frame");
        assert!(s.held_until().is_some());
        // A new player gets the held audio in its start, the others get it live: each exactly once.
        let late = s.subscribe(Protocol::Rtmp);
        assert_eq!(late.start.len(), 2);
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
        let first = s.attach_source(SourceInfo { kind: "publisher", peer: "p".into() }).unwrap();
        for ts in [0, 33, 66] {
            s.push(first, media(MediaKind::Video, ts, 0x17));
        }
        s.detach_source(first);
        // A returning publisher one hour ahead: its headers come stamped 0, its media at 3,600,000 ms.
        let second = s.attach_source(SourceInfo { kind: "publisher", peer: "p".into() }).unwrap();
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
        let id = s.attach_source(SourceInfo { kind: "publisher", peer: "p".into() }).unwrap();
        let mut rx = s.subscribe(Protocol::Rtmp).rx;
        let big = |ts| Media { kind: MediaKind::Video, timestamp: ts, payload: Bytes::from(vec![0x27; 3000]) };
        for ts in 0..10 {
            s.push(id, big(ts));
        }
        let c = s.cache();
        assert!(c.ring.bytes <= 10_000, "{}", c.ring.bytes);
        assert_eq!(c.ring.frames.len(), 3);
        drop(c);
        let mut out = Vec::new();
        let info = s.read(&mut rx, 64, &mut out);
        assert_eq!((info.lagged, out.len(), info.behind_bytes), (7, 3, 0));
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
        let id = s.attach_source(SourceInfo { kind: "publisher", peer: "p".into() }).unwrap();
        let mut early = s.subscribe(Protocol::Rtmp).rx;
        s.push(id, media(MediaKind::Video, 0, 0x17));
        s.push(id, media(MediaKind::Audio, 10, 0xAF));
        s.push(id, media(MediaKind::Video, 33, 0x27));
        assert_eq!(next_ts(&s, &mut early), None, "video waits for the merge period too");
        std::thread::sleep(Duration::from_millis(90));
        s.release_due();
        let mut v = Vec::new();
        s.read(&mut early, 64, &mut v);
        assert_eq!(v.len(), 3, "the whole period at once");
        // A player arriving mid-period gets the GOP (with held frames) at once, and nothing twice.
        s.push(id, media(MediaKind::Video, 66, 0x27));
        let late = s.subscribe(Protocol::Rtmp);
        assert_eq!(late.start.len(), 4);
        let mut late_rx = late.rx;
        assert_eq!(next_ts(&s, &mut late_rx), None);
        assert_eq!(next_ts(&s, &mut early), Some(66));
    }
}
