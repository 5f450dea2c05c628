//! The stream's wall clock: each frame's time in Unix milliseconds, the same on every relay of a stream, so HLS
//! segments are numbered, cut and stamped alike on every edge without the edges talking to each other.
//!
//! The relay that takes the stream from its source (the origin: a publisher or an ingest pull) fixes the
//! *anchor*, the Unix time of its timeline's 0, when the stream's first frame arrives, and never moves it: a
//! replacement source continues the timeline (the hub rebases it), so it continues the clock too. Every relay
//! announces its anchor to its players in onMetaData (`lbTimelineEpochMs`), which is how an edge learns it: the
//! edge's clock for a frame is the upstream's anchor plus the upstream's timestamp, whatever the edge did to its
//! own RTMP timeline (rebasing after a failover, joining late). After an origin failover the new origin's anchor
//! is its own wall clock, so the clock goes on forward by about the stall, and all edges follow it alike.
//!
//! Unix milliseconds need 41 bits: the clock is an i64; RTMP's 32-bit timestamps are unwrapped against it.

use bytes::Bytes;
use rml_rtmp::rml_amf0::{self, Amf0Value};

use crate::wire::proto::{Media, MediaKind};

/// The onMetaData property carrying a relay's anchor: the Unix time in milliseconds of its timeline's 0.
pub const ANCHOR_KEY: &str = "lbTimelineEpochMs";

/// The step after the last frame where a clock that would go backwards resumes (as the hub's timeline does).
const REBASE_GAP_MS: i64 = 40;

/// A stream's clock state (kept under the stream's lock).
#[derive(Debug, Default)]
pub(super) struct Clock {
    /// Unix ms of this relay's timeline 0, once known.
    anchor: Option<i64>,
    /// The anchor the current upstream announced for its own timeline (edges).
    upstream: Option<i64>,
    /// The (upstream anchor, hub offset) the anchor was last derived from.
    followed: Option<(i64, u32)>,
    /// The anchor last sent to players in onMetaData.
    announced: Option<i64>,
    /// The last frame's timeline position, unwrapped to 64 bits.
    last: Option<i64>,
}

impl Clock {
    /// A new source attached: its announcement (if it makes one) comes with its metadata.
    pub(super) fn source_attached(&mut self) {
        self.upstream = None;
    }

    /// Reads the anchor an upstream relay announces in its onMetaData (edges only).
    pub(super) fn upstream_metadata(&mut self, media: &Media) {
        if let Some(a) = anchor_of(media) {
            self.upstream = Some(a);
        }
    }

    /// Fixes the anchor for a media frame at timeline `ts` (after the hub's offset `offset` for this source):
    /// an edge follows its upstream's announced anchor (`from_upstream`), the first relay keeps the one it set
    /// at the stream's first frame. Returns the frame's clock.
    pub(super) fn frame(&mut self, ts: u32, offset: u32, from_upstream: bool, now_ms: i64) -> i64 {
        let pos = self.unwrap(ts);
        let follow = match (from_upstream, self.upstream) {
            (true, Some(up)) => Some((up, offset)),
            _ => None,
        };
        if let Some((up, offset)) = follow.filter(|_| follow != self.followed) {
            // The edge's timeline is the upstream's plus `offset`: the upstream's clock for a frame is its anchor
            // plus its own timestamp, i.e. our position minus the offset.
            let mut anchor = up - offset as i32 as i64;
            if let Some(last) = self.last_clock() {
                // Never backwards: an upstream whose clock is behind ours (a skewed origin) is followed from
                // just after our last frame, as the hub rebases a timeline.
                if anchor + pos <= last {
                    anchor = last + REBASE_GAP_MS - pos;
                }
            }
            self.anchor = Some(anchor);
            self.followed = follow;
        }
        let anchor = *self.anchor.get_or_insert(now_ms - pos);
        self.last = Some(pos);
        anchor + pos
    }

    /// The clock of the last frame (0 before the first).
    pub(super) fn current(&self) -> i64 {
        self.last_clock().unwrap_or(0)
    }

    /// The clock of the last frame.
    fn last_clock(&self) -> Option<i64> {
        Some(self.anchor? + self.last?)
    }

    /// `ts` as a 64-bit position next to the last one (RTMP timestamps wrap after 49.7 days).
    fn unwrap(&self, ts: u32) -> i64 {
        match self.last {
            None => ts as i64,
            Some(last) => last + ts.wrapping_sub(last as u32) as i32 as i64,
        }
    }

    /// The anchor to announce now, if it differs from the one players were last told.
    pub(super) fn to_announce(&self) -> Option<i64> {
        self.anchor.filter(|a| Some(*a) != self.announced)
    }

    /// Builds the onMetaData players get: the source's (or an empty one) with this relay's anchor, when known.
    pub(super) fn metadata(&mut self, source: Option<&Media>, ts: u32) -> Option<Media> {
        let Some(anchor) = self.anchor else {
            return source.cloned();
        };
        self.announced = Some(anchor);
        Some(with_anchor(source, anchor, ts))
    }
}

/// The anchor an onMetaData payload carries, if any.
fn anchor_of(media: &Media) -> Option<i64> {
    if media.kind != MediaKind::Data {
        return None;
    }
    let values = rml_amf0::deserialize(&mut std::io::Cursor::new(&media.payload[..])).ok()?;
    match values.get(1)? {
        Amf0Value::Object(props) => match props.get(ANCHOR_KEY)? {
            Amf0Value::Number(n) if n.is_finite() && n.abs() < 9e15 => Some(*n as i64),
            _ => None,
        },
        _ => None,
    }
}

/// `source` (onMetaData) with `anchor` set, or an onMetaData holding only the anchor.
fn with_anchor(source: Option<&Media>, anchor: i64, ts: u32) -> Media {
    let mut values = source
        .and_then(|m| rml_amf0::deserialize(&mut std::io::Cursor::new(&m.payload[..])).ok())
        .filter(|v| matches!(v.get(1), Some(Amf0Value::Object(_))))
        .unwrap_or_else(|| vec![Amf0Value::Utf8String("onMetaData".into()), Amf0Value::Object(Default::default())]);
    if let Some(Amf0Value::Object(props)) = values.get_mut(1) {
        props.insert(ANCHOR_KEY.to_string(), Amf0Value::Number(anchor as f64));
    }
    match rml_amf0::serialize(&values) {
        Ok(b) => Media { kind: MediaKind::Data, timestamp: ts, payload: Bytes::from(b) },
        // A metadata value rml_amf0 cannot write (a string over 64 KiB): announce the anchor alone.
        Err(_) => with_anchor(None, anchor, ts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_relay_anchors_once_and_unwraps_the_timeline() {
        let mut c = Clock::default();
        assert_eq!(c.frame(1000, 0, false, 1_700_000_001_000), 1_700_000_001_000);
        assert_eq!(c.frame(1040, 0, false, 9), 1_700_000_001_040, "the anchor stays");
        // Across RTMP's 2^32 wrap the clock goes on.
        let mut c = Clock::default();
        let start = c.frame(u32::MAX - 10, 0, false, 5_000_000_000_000);
        assert_eq!(c.frame(20, 0, false, 0) - start, 31);
        assert_eq!(c.to_announce(), Some(5_000_000_000_000 - (u32::MAX - 10) as i64));
    }

    #[test]
    fn an_edge_follows_its_upstream_whatever_its_own_offset() {
        let meta = |a: i64| with_anchor(None, a, 0);
        // Two edges of one origin: one joined at the start, one late after rebasing its timeline by 5000 ms.
        let (mut a, mut b) = (Clock::default(), Clock::default());
        a.upstream_metadata(&meta(1_000_000));
        b.upstream_metadata(&meta(1_000_000));
        assert_eq!(a.frame(700, 0, true, 0), 1_000_700);
        assert_eq!(b.frame(5700, 5000, true, 0), 1_000_700, "same frame, same clock");
        // A failover to an origin whose anchor is later: the clock moves forward to it on both.
        a.source_attached();
        a.upstream_metadata(&meta(1_010_000));
        assert_eq!(a.frame(800, 800u32.wrapping_sub(10), true, 0), 1_010_010);
        assert_eq!(a.frame(833, 790, true, 0), 1_010_043, "and goes on with it");
        // An upstream behind us is not followed backwards: the clock resumes just after the last frame.
        a.source_attached();
        a.upstream_metadata(&meta(5));
        assert_eq!(a.frame(900, 0, true, 0), 1_010_083);
        assert_eq!(a.frame(940, 0, true, 0), 1_010_123);
    }

    #[test]
    fn metadata_carries_the_anchor_and_keeps_the_source_properties() {
        let mut props = std::collections::HashMap::new();
        props.insert("width".to_string(), Amf0Value::Number(640.0));
        let v = vec![Amf0Value::Utf8String("onMetaData".into()), Amf0Value::Object(props)];
        let src = Media { kind: MediaKind::Data, timestamp: 0, payload: Bytes::from(rml_amf0::serialize(&v).unwrap()) };
        let mut c = Clock::default();
        assert!(c.metadata(Some(&src), 0).is_some_and(|m| anchor_of(&m).is_none()), "no anchor yet");
        c.frame(0, 0, false, 42_000);
        assert_eq!(c.to_announce(), Some(42_000));
        let out = c.metadata(Some(&src), 0).unwrap();
        assert_eq!(anchor_of(&out), Some(42_000));
        assert_eq!(c.to_announce(), None, "announced");
        let back = rml_amf0::deserialize(&mut std::io::Cursor::new(&out.payload[..])).unwrap();
        let Amf0Value::Object(p) = &back[1] else { panic!("{back:?}") };
        assert_eq!(p.get("width"), Some(&Amf0Value::Number(640.0)));
        assert_eq!(anchor_of(&c.metadata(None, 0).unwrap()), Some(42_000), "synthesized when the source has none");
    }
}
