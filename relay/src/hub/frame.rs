//! A frame as players get it: the media, chunked once for RTMP and framed once for FLV, shared by every player.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::wire::proto::Media;

/// The message stream id ffmpeg, nginx-rtmp and Flash clients get from their (only) createStream: frames are
/// pre-chunked for it once. A player on another id gets its own encoding.
pub const SHARED_STREAM_ID: u32 = 1;
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
    pub(super) fn new(media: Media, timestamp: u32) -> Arc<Self> {
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
