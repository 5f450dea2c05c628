//! The fan-out ring: recent frames, bounded in count and bytes, that every player reads at its own position.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;

use super::frame::Frame;

/// What a player reads from the fan-out.
#[derive(Debug, Clone)]
pub enum Item {
    Frame(Arc<Frame>),
    /// The stream is over (no source within the grace period): players are told and disconnected.
    End,
}

/// The fan-out ring: recent frames every player reads from at its own position (sequence number).
///
/// Bounded in frames and in bytes; a player whose position fell out of the ring has lagged and resumes at a
/// keyframe. Players hold only a position, so a slow player costs no memory beyond the shared ring.
#[derive(Default)]
pub(super) struct Ring {
    /// Frames with the stream's byte count before each (for a player's backlog in bytes).
    frames: VecDeque<(u64, Arc<Frame>)>,
    /// Sequence number of `frames[0]`.
    base: u64,
    bytes: usize,
    /// Bytes ever pushed.
    total: u64,
    pub(super) ended: bool,
}

impl Ring {
    /// Sequence number the next pushed frame gets.
    pub(super) fn head(&self) -> u64 {
        self.base + self.frames.len() as u64
    }

    /// Bytes of the frames in the ring.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends a frame; the oldest leave while the ring is above `max_frames` or `max_bytes`.
    pub(super) fn push(&mut self, frame: Arc<Frame>, max_frames: usize, max_bytes: usize) {
        let size = frame.size();
        self.frames.push_back((self.total, frame));
        self.bytes += size;
        self.total += size as u64;
        self.trim(max_frames, max_bytes);
    }

    /// Drops the oldest frames while above `max_frames` or `max_bytes` (at least one frame stays), so a stream
    /// of huge frames cannot pin queue x max-message-size.
    pub(super) fn trim(&mut self, max_frames: usize, max_bytes: usize) {
        while self.frames.len() > max_frames || (self.bytes > max_bytes && self.frames.len() > 1) {
            let (_, old) = self.frames.pop_front().expect("non-empty");
            self.bytes -= old.size();
            self.base += 1;
        }
    }

    /// Moves up to `max` frames at `r`'s position into `out` (then `Item::End` if the ring ended there).
    pub(super) fn read(&self, r: &mut Reader, max: usize, out: &mut Vec<Item>) -> ReadInfo {
        let mut info = ReadInfo::default();
        if r.next < self.base {
            info.lagged = self.base - r.next;
            r.next = self.base;
        }
        let mut i = (r.next - self.base) as usize;
        while i < self.frames.len() && out.len() < max {
            out.push(Item::Frame(self.frames[i].1.clone()));
            i += 1;
        }
        r.next = self.base + i as u64;
        info.behind_frames = self.frames.len() - i;
        info.behind_bytes = self.frames.get(i).map_or(0, |(at, _)| self.total - at);
        if self.ended && i == self.frames.len() {
            info.ended = true;
            out.push(Item::End);
        }
        info
    }

    /// Whether [`Ring::read`] has something for `r` now (frames, or the end).
    pub(super) fn has_unread(&self, r: &Reader) -> bool {
        r.next < self.head() || self.ended
    }
}

/// A player's position in a stream's ring and its wake-up.
pub struct Reader {
    pub(super) next: u64,
    pub(super) wake: watch::Receiver<u64>,
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
