//! The HLS packager of one stream: frames in (the hub's tap), CMAF parts, segments and init segments out, cut
//! and named by the stream's clock alone, so every relay of the stream makes the same bytes under the same names.
//!
//! The rule, a pure function of the frames and their clocks (Unix ms, see `hub::clock`):
//! - a segment starts at the first keyframe whose clock falls in a new window of `segment_ms`; its media sequence
//!   number is that window's index (`clock / segment_ms`), so relays that joined at different times agree;
//! - a packager starts with the first keyframe it sees in a window other than the one of the first keyframe it
//!   saw: it never publishes a segment it may have seen only the end of;
//! - a part ends before the first video frame (audio frame in an audio-only stream) whose next frame, a step
//!   later, would take the part past `part_ms` + 1 ms (whole-millisecond timestamps step 33 or 34 ms at 30 fps),
//!   so parts stay within the playlist's PART-TARGET; or at the segment's end;
//! - a window with no keyframe of its own (a GOP longer than the target) is listed as an `EXT-X-GAP` segment, so
//!   sequence numbers stay consecutive and the listed durations still add up to the media's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;

use super::spool::Spool;
use crate::hub::{Frame, Tap};
use crate::wire::fmp4::{self, AudioConfig, Sample, VideoConfig};
use crate::wire::proto::MediaKind;

/// Sizes and durations of a stream's HLS (from the relay's settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HlsSettings {
    /// Target segment duration in ms (the window segments are numbered by).
    pub segment_ms: i64,
    /// Target part duration in ms; 0 turns Low-Latency HLS off (no parts).
    pub part_ms: i64,
    /// Segments a playlist lists.
    pub window: usize,
    /// Most bytes of segments kept (the stream's byte budget); the oldest leave first.
    pub max_bytes: usize,
}

/// 64-bit FNV-1a over buffers: the ETag and init name, the same wherever the bytes are the same.
pub fn fnv(bufs: &[Bytes]) -> u64 {
    bufs.iter().fold(FNV_START, |h, b| fnv_more(h, b))
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of what `h` hashed followed by `bytes`.
fn fnv_more(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &x| (h ^ x as u64).wrapping_mul(0x100_0000_01b3))
}

/// An init segment (the codecs' configuration), named by its content.
#[derive(Debug)]
pub struct Init {
    pub name: String,
    pub data: Bytes,
    pub etag: u64,
    /// RFC 6381 codecs, for logs and the stream's view.
    pub codecs: String,
}

/// A part: one CMAF fragment (moof + mdat).
#[derive(Debug)]
pub struct Part {
    pub duration_ms: i64,
    /// Starts with a keyframe (or the stream has no video): a player may start decoding here.
    pub independent: bool,
    pub data: PartData,
    pub len: usize,
    pub etag: u64,
}

/// Where a part's bytes are.
#[derive(Debug)]
pub enum PartData {
    /// In its segment's file, at this offset (sent with sendfile).
    Spooled(Arc<Spool>, u64),
    /// In memory (no file could be made for its segment).
    Memory(Bytes),
}

impl Part {
    /// The part's bytes as a buffer (read back from its file if spooled); `None` if the file cannot be read.
    pub fn bytes(&self) -> Option<Bytes> {
        match &self.data {
            PartData::Memory(b) => Some(b.clone()),
            PartData::Spooled(f, at) => f.read_at(*at, self.len).ok().map(Bytes::from),
        }
    }
}

/// A closed segment: its parts back to back, or a gap.
#[derive(Debug)]
pub struct Segment {
    pub msn: u64,
    /// Clock (Unix ms) of its first frame.
    pub start: i64,
    /// The duration the playlist lists (the media's, less the gap windows listed after it).
    pub listed_ms: i64,
    pub parts: Vec<Arc<Part>>,
    /// A window with no keyframe: listed with `EXT-X-GAP`, never served.
    pub gap: bool,
    pub init: Arc<Init>,
    /// The codecs changed here (`EXT-X-DISCONTINUITY`).
    pub discontinuity: bool,
    pub len: usize,
    pub etag: u64,
}

/// The segment being built.
struct Open {
    msn: u64,
    start: i64,
    parts: Vec<Arc<Part>>,
    part_start: i64,
    video: Vec<(Arc<Frame>, i64)>,
    audio: Vec<(Arc<Frame>, i64)>,
    init: Arc<Init>,
    discontinuity: bool,
    /// The file the segment's parts go to (None: in memory) and how much of it is written.
    spool: Option<Arc<Spool>>,
    spooled: u64,
    /// FNV-1a of the parts so far: the segment's ETag.
    hash: u64,
}

/// A pause between two frames longer than this is a hole in the stream, not a frame step.
const HOLE_MS: i64 = 1000;

/// A packager's state (behind its lock).
pub struct State {
    pub settings: HlsSettings,
    video: Option<VideoConfig>,
    audio: Option<AudioConfig>,
    /// A video sequence header came: video frames cut segments and parts.
    has_video: bool,
    /// Why the stream cannot be packaged (a codec HLS here does not carry), once seen.
    pub unsupported: Option<String>,
    config_changed: bool,
    init: Option<Arc<Init>>,
    /// Closed segments, oldest first: the listed window and a few older ones still fetchable.
    pub segments: VecDeque<Arc<Segment>>,
    open: Option<Open>,
    last_key_window: Option<i64>,
    /// Discontinuities that left the front of the window (EXT-X-DISCONTINUITY-SEQUENCE).
    pub discontinuity_seq: u64,
    /// The stream ended (`Some(found)`): the playlist gets `EXT-X-ENDLIST`.
    pub ended: Option<bool>,
    /// This relay stopped carrying the stream (an edge's idle stop): the packager is dropped, never served.
    pub retired: bool,
    /// Segments go to memory files sent with sendfile (off: parts stay in memory; the fallback, and tests).
    pub spool_files: bool,
    last_clock: Option<i64>,
    /// After a hole in the stream, frames wait for the next keyframe of the track that cuts (see `push`).
    in_hole: bool,
    last_video: Option<i64>,
    last_audio: Option<i64>,
    video_delta: i64,
    audio_delta: i64,
    bytes: usize,
    /// The playlist as last rendered, until the next part, segment or end: every player of a part's time gets
    /// these bytes instead of a rendering of its own.
    rendered: Option<Bytes>,
}

/// What a playlist or a blocking request can see of the open segment.
pub struct OpenView {
    pub msn: u64,
    pub start: i64,
    pub parts: Vec<Arc<Part>>,
    pub init: Arc<Init>,
    pub discontinuity: bool,
}

impl State {
    fn new(settings: HlsSettings) -> Self {
        Self {
            settings,
            video: None,
            audio: None,
            has_video: false,
            unsupported: None,
            config_changed: false,
            init: None,
            segments: VecDeque::new(),
            open: None,
            last_key_window: None,
            in_hole: false,
            discontinuity_seq: 0,
            ended: None,
            retired: false,
            spool_files: true,
            last_clock: None,
            last_video: None,
            last_audio: None,
            video_delta: 33,
            audio_delta: 23,
            bytes: 0,
            rendered: None,
        }
    }

    /// The playlist text, rendered once per change.
    pub fn playlist(&mut self) -> Bytes {
        if let Some(b) = &self.rendered {
            return b.clone();
        }
        let b = Bytes::from(super::playlist::render(self));
        self.rendered = Some(b.clone());
        b
    }

    /// The open segment (its parts so far), if one is being built.
    pub fn open(&self) -> Option<OpenView> {
        self.open.as_ref().map(|o| OpenView {
            msn: o.msn,
            start: o.start,
            parts: o.parts.clone(),
            init: o.init.clone(),
            discontinuity: o.discontinuity,
        })
    }

    /// The sequence number of the segment being built (or the next one), if any segment was ever started.
    pub fn head_msn(&self) -> Option<u64> {
        self.open.as_ref().map(|o| o.msn).or_else(|| self.segments.back().map(|s| s.msn + 1))
    }

    /// Parts of the open segment so far.
    pub fn open_parts(&self) -> usize {
        self.open.as_ref().map_or(0, |o| o.parts.len())
    }

    /// Bytes of segments kept (and parts of the open one).
    pub fn bytes(&self) -> usize {
        self.bytes + self.open.as_ref().map_or(0, |o| o.parts.iter().map(|p| p.len).sum())
    }

    /// The init segment named `name` (the current one or one a kept segment uses).
    pub fn init_named(&self, name: &str) -> Option<Arc<Init>> {
        let open = self.open.as_ref().map(|o| &o.init);
        open.into_iter()
            .chain(self.segments.iter().map(|s| &s.init))
            .chain(self.init.as_ref())
            .find(|i| i.name == name)
            .cloned()
    }

    /// Segment `msn`, if kept and not a gap.
    pub fn segment(&self, msn: u64) -> Option<Arc<Segment>> {
        let first = self.segments.front()?.msn;
        let s = self.segments.get(msn.checked_sub(first)? as usize)?;
        (s.msn == msn && !s.gap).then(|| s.clone())
    }

    /// Part `index` of segment `msn`, if it exists.
    pub fn part(&self, msn: u64, index: usize) -> Option<Arc<Part>> {
        if let Some(o) = self.open.as_ref().filter(|o| o.msn == msn) {
            return o.parts.get(index).cloned();
        }
        self.segment(msn)?.parts.get(index).cloned()
    }

    fn push(&mut self, frame: &Arc<Frame>, clock: i64) -> bool {
        let m = &frame.media;
        match m.kind {
            MediaKind::Data => return false,
            MediaKind::Video if m.is_video_header() => {
                self.has_video = true;
                match fmp4::video_config(&m.payload) {
                    Ok(c) if self.video.as_ref() != Some(&c) => {
                        self.video = Some(c);
                        self.config_changed = true;
                    }
                    Ok(_) => {}
                    Err(e) => self.refuse(e.to_string()),
                }
                return false;
            }
            MediaKind::Audio if m.is_audio_header() => {
                match fmp4::audio_config(&m.payload) {
                    Ok(c) if self.audio.as_ref() != Some(&c) => {
                        self.audio = Some(c);
                        self.config_changed = true;
                    }
                    Ok(_) => {}
                    Err(e) => self.refuse(e.to_string()),
                }
                return false;
            }
            _ => {}
        }
        let video = m.kind == MediaKind::Video;
        if (video && self.video.is_none()) || (!video && self.audio.is_none()) {
            // A track with no (supported) configuration is left out.
            return false;
        }
        // Each track's last step: the duration the last sample of a part gets when the next sample of its
        // track has not come yet (audio; video parts end at the next video frame).
        let (last, delta) = if video {
            (&mut self.last_video, &mut self.video_delta)
        } else {
            (&mut self.last_audio, &mut self.audio_delta)
        };
        if let Some(l) = *last {
            let d = clock - l;
            if d > 0 && d < 1000 {
                *delta = d;
            }
        }
        *last = Some(clock);
        // A hole: nothing for longer than any frame step (an origin failover, a stalled source). What follows it
        // waits for the next cutting keyframe, which starts a new segment after gap windows: audio appended to the
        // open segment before that keyframe would stretch its last part over the hole.
        if self.last_clock.is_some_and(|l| clock - l > HOLE_MS) {
            self.in_hole = true;
        }
        self.last_clock = Some(clock);
        // The track whose frames cut: video when the stream has it.
        let leader = video || !self.has_video;
        let mut changed = false;
        if leader && (m.is_keyframe() || !video) {
            let w = clock.div_euclid(self.settings.segment_ms);
            match &self.open {
                Some(o) if w > o.msn as i64 || self.config_changed => {
                    let next = (w.max(0) as u64).max(o.msn + 1);
                    self.close_segment(clock, next);
                    self.start_segment(next, clock);
                    changed = true;
                }
                Some(_) => {}
                None if self.last_key_window.is_some_and(|l| l != w) => {
                    self.start_segment(w.max(0) as u64, clock);
                    changed = true;
                }
                None => {}
            }
            self.last_key_window = Some(w);
            self.in_hole = false;
        }
        if self.in_hole {
            return changed;
        }
        let part_ms = self.settings.part_ms;
        let Some(o) = &mut self.open else {
            return changed;
        };
        let filled = !o.video.is_empty() || !o.audio.is_empty();
        // A part ends before the frame that would take it past `part_ms` (timestamps are whole milliseconds,
        // so a part may reach `part_ms` + 1; the playlist's PART-TARGET says so): the frame after this one is
        // expected a frame's step later.
        let step = if video { self.video_delta } else { self.audio_delta };
        if part_ms > 0 && leader && filled && clock + step > o.part_start + part_ms + 1 {
            Self::close_part(o, clock, self.audio_delta);
            changed = true;
        }
        if video {
            o.video.push((frame.clone(), clock));
        } else {
            o.audio.push((frame.clone(), clock));
        }
        changed
    }

    fn refuse(&mut self, why: String) {
        if self.unsupported.is_none() {
            tracing::warn!(reason = %why, "stream cannot be served as HLS");
        }
        self.unsupported = Some(why);
    }

    fn start_segment(&mut self, msn: u64, clock: i64) {
        let data = fmp4::init_segment(self.video.as_ref(), self.audio.as_ref());
        let previous = self.init.clone();
        let init = match &previous {
            Some(i) if i.data == data => i.clone(),
            _ => {
                let etag = fnv(std::slice::from_ref(&data));
                let codecs =
                    [self.video.as_ref().map(|v| v.codec.clone()), self.audio.as_ref().map(|a| a.codec.clone())]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(",");
                Arc::new(Init { name: format!("init-{etag:016x}.mp4"), data, etag, codecs })
            }
        };
        let discontinuity = previous.is_some_and(|p| !Arc::ptr_eq(&p, &init));
        self.init = Some(init.clone());
        self.config_changed = false;
        self.open = Some(Open {
            msn,
            start: clock,
            parts: Vec::new(),
            part_start: clock,
            video: Vec::new(),
            audio: Vec::new(),
            init,
            discontinuity,
            spool: self.spool_files.then(|| Spool::create().ok().map(Arc::new)).flatten(),
            spooled: 0,
            hash: FNV_START,
        });
    }

    /// Closes the open part at `end` (the clock of the frame after it).
    fn close_part(o: &mut Open, end: i64, audio_delta: i64) {
        let seq = (o.msn as u32).wrapping_mul(256).wrapping_add(o.parts.len() as u32);
        let samples = |frames: &[(Arc<Frame>, i64)], last: i64| -> Vec<Sample> {
            frames
                .iter()
                .enumerate()
                .filter_map(|(i, (f, c))| {
                    let next = frames.get(i + 1).map_or(c + last, |(_, n)| *n);
                    let d = (next - c).clamp(1, u32::MAX as i64) as u32;
                    fmp4::sample_of(&f.media, *c as u64, d)
                })
                .collect()
        };
        let last_video = o.video.last().map_or(0, |(_, c)| end - c);
        let video = samples(&o.video, last_video.max(1));
        let audio = samples(&o.audio, audio_delta);
        o.video.clear();
        o.audio.clear();
        if video.is_empty() && audio.is_empty() {
            return;
        }
        let independent = video.first().is_none_or(|s| s.keyframe);
        // One contiguous buffer per part (one copy of the media, a few hundred kB a second): a segment then goes
        // out in a handful of iovecs instead of one per frame, which is what its writes cost.
        let bufs = fmp4::fragment(seq, &video, &audio);
        let len = bufs.iter().map(|b| b.len()).sum();
        let mut whole = bytes::BytesMut::with_capacity(len);
        for b in &bufs {
            whole.extend_from_slice(b);
        }
        let etag = fnv_more(FNV_START, &whole);
        o.hash = fnv_more(o.hash, &whole);
        // Into the segment's file when it has one (then no copy stays in memory); a failed write leaves this part
        // and the rest of the segment in memory.
        let data = match &o.spool {
            Some(f) if f.write_at(&whole, o.spooled).is_ok() => {
                let d = PartData::Spooled(f.clone(), o.spooled);
                o.spooled += len as u64;
                d
            }
            _ => {
                o.spool = None;
                PartData::Memory(whole.freeze())
            }
        };
        o.parts.push(Arc::new(Part { duration_ms: end - o.part_start, independent, data, len, etag }));
        o.part_start = end;
    }

    /// Closes the open segment at `end`; `next` is the number of the segment after it (windows between are gaps).
    fn close_segment(&mut self, end: i64, next: u64) {
        let Some(mut o) = self.open.take() else {
            return;
        };
        let seg = self.settings.segment_ms;
        let gaps = next.saturating_sub(o.msn + 1);
        let media_ms = end - o.start;
        let listed_ms = (media_ms - gaps as i64 * seg).max(1);
        // After a hole in the stream (a failover, a source that stalled) the whole windows without media are gap
        // segments, and this one's last part ends where its listed duration does (its last frame held until then),
        // so its parts add up to it and a player's timeline does not stretch by the hole. (A GOP longer than the
        // target is no hole: its media runs past the listed end and keeps its own durations.)
        let listed_end = o.start + listed_ms;
        let media_end = [
            o.video.last().map(|(_, c)| c + self.video_delta),
            o.audio.last().map(|(_, c)| c + self.audio_delta),
            Some(o.part_start),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(o.part_start);
        let part_end = if media_end <= listed_end { listed_end } else { end };
        Self::close_part(&mut o, part_end, self.audio_delta);
        if !o.parts.is_empty() {
            let len = o.parts.iter().map(|p| p.len).sum();
            self.bytes += len;
            self.segments.push_back(Arc::new(Segment {
                msn: o.msn,
                start: o.start,
                listed_ms,
                etag: o.hash,
                parts: o.parts,
                gap: false,
                init: o.init.clone(),
                discontinuity: o.discontinuity,
                len,
            }));
        }
        for g in 0..gaps {
            let msn = o.msn + 1 + g;
            let start = o.start + listed_ms + g as i64 * seg;
            let init = o.init.clone();
            let s = Segment {
                msn,
                start,
                listed_ms: seg,
                parts: Vec::new(),
                gap: true,
                init,
                discontinuity: false,
                len: 0,
                etag: 0,
            };
            self.segments.push_back(Arc::new(s));
        }
        self.trim();
    }

    /// Keeps the listed window plus two older segments (a player that read the playlist just before they left
    /// still gets them), within the byte budget.
    fn trim(&mut self) {
        let keep = self.settings.window + 2;
        while self.segments.len() > keep || (self.bytes > self.settings.max_bytes && self.segments.len() > 1) {
            let old = self.segments.pop_front().expect("non-empty");
            self.bytes -= old.len;
            if self.segments.front().is_some_and(|s| s.discontinuity) {
                self.discontinuity_seq += 1;
            }
        }
    }

    fn end(&mut self, found: bool) {
        if self.ended.is_some() {
            return;
        }
        if let (Some(o), Some(last)) = (&self.open, self.last_clock) {
            let msn = o.msn + 1;
            let delta = if self.has_video { self.video_delta } else { self.audio_delta };
            self.close_segment(last + delta, msn);
        }
        self.ended = Some(found);
    }
}

/// One stream's packager: the state and a wake-up for blocking requests.
pub struct Packager {
    pub app: String,
    pub key: String,
    state: Mutex<State>,
    /// Bumped whenever a part or segment is added or the stream ends.
    changed: watch::Sender<u64>,
}

impl Packager {
    pub fn new(app: &str, key: &str, settings: HlsSettings) -> Arc<Self> {
        Arc::new(Self {
            app: app.to_string(),
            key: key.to_string(),
            state: Mutex::new(State::new(settings)),
            changed: watch::channel(0).0,
        })
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes on every change (a new part or segment, the end).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

impl Tap for Packager {
    fn frame(&self, frame: &Arc<Frame>, clock_ms: i64) {
        let mut s = self.state();
        if s.push(frame, clock_ms) {
            s.rendered = None;
            drop(s);
            self.changed.send_modify(|n| *n += 1);
        }
    }

    fn end(&self, found: bool) {
        let mut s = self.state();
        s.end(found);
        s.rendered = None;
        drop(s);
        self.changed.send_modify(|n| *n += 1);
    }

    fn retire(&self) {
        self.state().retired = true;
        self.changed.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::proto::Media;

    pub(crate) fn settings() -> HlsSettings {
        HlsSettings { segment_ms: 2000, part_ms: 500, window: 4, max_bytes: 1 << 20 }
    }

    /// An FLV AVC sequence header with the SPS x264 writes for 640x360 Constrained Baseline 3.0 and a PPS.
    fn video_header() -> Vec<u8> {
        let sps = [
            0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00,
            0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48,
        ];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let mut v = vec![0x17, 0, 0, 0, 0, 1, sps[1], sps[2], sps[3], 0xff, 0xe1, 0, sps.len() as u8];
        v.extend_from_slice(&sps);
        v.extend_from_slice(&[1, 0, pps.len() as u8]);
        v.extend_from_slice(&pps);
        v
    }

    fn frame(kind: MediaKind, payload: Vec<u8>) -> Arc<Frame> {
        crate::hub::test_frame(Media { kind, timestamp: 0, payload: Bytes::from(payload) })
    }

    /// Headers, then 30 fps video with a keyframe every `gop` frames and audio every 23 ms, from `from` to `to`.
    pub(crate) fn feed(p: &Packager, from: i64, to: i64, gop: i64) {
        join(p, from, from, to, gop)
    }

    /// The frames of a stream that started at `origin`, as a relay that joined at `from` sees them: headers,
    /// then from the first keyframe at or after `from` (an edge starts at its origin's GOP cache).
    pub(crate) fn join(p: &Packager, origin: i64, from: i64, to: i64, gop: i64) {
        p.frame(&frame(MediaKind::Video, video_header()), from);
        p.frame(&frame(MediaKind::Audio, vec![0xaf, 0, 0x12, 0x10]), from);
        let (mut v, mut a) = (0i64, 0i64);
        let mut joined = false;
        loop {
            let (tv, ta) = (origin + v * 100 / 3, origin + a * 23);
            if tv.min(ta) >= to {
                break;
            }
            if tv <= ta {
                let key = v % gop == 0;
                joined |= key && tv >= from;
                if joined {
                    p.frame(&frame(MediaKind::Video, vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0, v as u8]), tv);
                }
                v += 1;
            } else {
                if joined {
                    p.frame(&frame(MediaKind::Audio, vec![0xaf, 1, a as u8]), ta);
                }
                a += 1;
            }
        }
    }

    fn playlist_of(p: &Packager) -> Vec<(u64, bool, i64, Vec<u64>)> {
        p.state()
            .segments
            .iter()
            .map(|s| (s.msn, s.gap, s.listed_ms, s.parts.iter().map(|x| x.etag).collect()))
            .collect()
    }

    #[test]
    fn segments_are_numbered_by_the_clock_window_and_start_after_the_first_window() {
        let p = Packager::new("live", "k", settings());
        // Keyframes every 2 s at clock 1_000_000_500 + 2000 n: window n starts at each.
        feed(&p, 1_000_000_500, 1_000_010_600, 60);
        let s = p.state();
        let msns: Vec<u64> = s.segments.iter().map(|s| s.msn).collect();
        // The first keyframe's window (500_000) is only seen, not published.
        assert_eq!(msns, vec![500_001, 500_002, 500_003, 500_004]);
        assert!(
            s.segments.iter().all(|x| x.listed_ms == 2000 && !x.gap && x.parts.len() == 4),
            "2 s, 4 parts of 500 ms"
        );
        assert!(s.segments.iter().all(|x| x.parts[0].independent && !x.parts[1].independent));
        assert_eq!(s.head_msn(), Some(500_005));
        assert_eq!(s.open_parts(), 0, "the open segment's first part is still being filled");
    }

    #[test]
    fn two_packagers_that_joined_at_different_times_make_the_same_segments() {
        let (a, b) = (Packager::new("live", "k", settings()), Packager::new("live", "k", settings()));
        feed(&a, 1_000_000_500, 1_000_012_600, 60);
        // b sees the same stream from 3 s later on (an edge that joined late: its first frame is a keyframe).
        join(&b, 1_000_000_500, 1_000_003_700, 1_000_012_600, 60);
        let (pa, pb) = (playlist_of(&a), playlist_of(&b));
        assert!(pb.len() >= 2, "{pb:?}");
        for s in &pb {
            assert!(pa.contains(s), "segment {s:?} of the late packager differs");
        }
    }

    #[test]
    fn a_gop_longer_than_the_target_leaves_gap_segments_and_durations_add_up() {
        let p = Packager::new("live", "k", HlsSettings { window: 10, ..settings() });
        // Keyframes every 5 s (150 frames) from 1_000_001_000: in windows 500_000 (only seen), 3, 5, 8, 10.
        feed(&p, 1_000_001_000, 1_000_021_100, 150);
        let s = p.state();
        let rows: Vec<(u64, bool, i64)> = s.segments.iter().map(|s| (s.msn, s.gap, s.listed_ms)).collect();
        let want = [
            (500_003, false, 3000),
            (500_004, true, 2000),
            (500_005, false, 1000),
            (500_006, true, 2000),
            (500_007, true, 2000),
        ];
        assert_eq!(&rows[..5], &want, "5 s of media listed as the segment and the gap windows after it");
        let msns: Vec<u64> = rows.iter().map(|r| r.0).collect();
        assert!(msns.windows(2).all(|w| w[1] == w[0] + 1), "consecutive: {msns:?}");
        let first = &s.segments[0];
        let media: i64 = s.segments.iter().take(5).map(|x| x.listed_ms).sum();
        assert_eq!(media, 10_000, "listed durations add up to the media's");
        assert!(first.parts.len() >= 9, "parts every 500 ms across the long GOP");
    }

    #[test]
    fn a_hole_in_the_stream_is_gap_windows_and_the_parts_add_up_to_each_listed_duration() {
        let p = Packager::new("live", "k", HlsSettings { window: 10, ..settings() });
        // 2 s GOPs from 1_000_000_500; the source stops at ..007_000 and a new one (a failover) starts 4.2 s later
        // with a keyframe at ..011_200 (window 500_005): window 500_004 is a gap, and 500_003 (from the keyframe
        // at ..006_500) is listed up to it, 2.7 s, its last frame held.
        feed(&p, 1_000_000_500, 1_000_007_000, 60);
        // The new source's audio comes a little before its first keyframe: it must not join the old segment.
        for t in [1_000_011_150, 1_000_011_173] {
            p.frame(&frame(MediaKind::Audio, vec![0xaf, 1, 7]), t);
        }
        join(&p, 1_000_011_200, 1_000_011_200, 1_000_017_300, 60);
        let s = p.state();
        let rows: Vec<(u64, bool, i64, i64)> = s
            .segments
            .iter()
            .map(|x| (x.msn, x.gap, x.listed_ms, x.parts.iter().map(|p| p.duration_ms).sum::<i64>()))
            .collect();
        let hole = rows.iter().position(|r| r.1).expect("a gap segment");
        for r in &rows {
            if !r.1 {
                assert_eq!(r.2, r.3, "segment {} lists {} ms, its parts add up to {} ms: {rows:?}", r.0, r.2, r.3);
            }
        }
        assert_eq!(rows[hole].0, 500_004, "{rows:?}");
        assert_eq!(rows[hole - 1].2, 2700, "the segment before the hole runs to the gap window: {rows:?}");
        assert!(rows.windows(2).all(|w| w[1].0 == w[0].0 + 1), "consecutive: {rows:?}");
        let starts: Vec<i64> = s.segments.iter().map(|x| x.start).collect();
        for (w, r) in starts.windows(2).zip(&rows) {
            assert_eq!(w[1] - w[0], r.2, "the timeline is continuous: {rows:?}");
        }
    }

    #[test]
    fn the_window_and_the_end() {
        let p = Packager::new("live", "k", settings());
        feed(&p, 1_000_000_500, 1_000_030_600, 60);
        assert_eq!(p.state().segments.len(), 6, "window 4 + 2 kept");
        let bytes = p.state().bytes();
        assert!(bytes > 0);
        p.end(true);
        let s = p.state();
        assert_eq!(s.ended, Some(true));
        assert!(s.open().is_none(), "the open segment is closed at the end");
        assert_eq!(s.segments.back().unwrap().msn, 500_015);
    }

    #[test]
    fn spooled_parts_hold_the_same_bytes_as_parts_in_memory() {
        let filed = Packager::new("live", "k", settings());
        let kept = Packager::new("live", "k", settings());
        kept.state().spool_files = false;
        for p in [&filed, &kept] {
            feed(p, 1_000_000_500, 1_000_009_000, 60);
        }
        let (a, b) = (filed.state(), kept.state());
        assert_eq!(a.segments.len(), b.segments.len());
        assert!(a.segments.len() >= 3);
        for (x, y) in a.segments.iter().zip(&b.segments) {
            assert!(x.parts.iter().all(|p| matches!(p.data, PartData::Spooled(..))), "segment {} not in a file", x.msn);
            assert!(y.parts.iter().all(|p| matches!(p.data, PartData::Memory(_))));
            let bytes = |s: &Segment| -> Vec<Bytes> { s.parts.iter().map(|p| p.bytes().unwrap()).collect() };
            assert_eq!(bytes(x), bytes(y), "segment {}", x.msn);
            assert_eq!((x.etag, x.len), (y.etag, y.len));
            assert_eq!(x.etag, fnv(&bytes(x)), "the ETag is the hash of the segment's bytes");
            assert_eq!(x.len, bytes(x).iter().map(|b| b.len()).sum::<usize>());
        }
    }
}
