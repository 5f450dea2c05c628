//! RTMP chunk stream codec: a bounded, tolerant decoder and a stateless fmt-0 encoder.
//!
//! Why our own instead of rml_rtmp's `ChunkDeserializer`: rml_rtmp fails with `NoPreviousChunkOnStream` when
//! a peer (nginx-rtmp) opens a chunk stream with a compressed header, and it has no bound on chunk or message
//! size. The encoder writes every message with a full (fmt 0) header, so an encoded message carries no
//! per-connection compression state and the same bytes can be shared by every player of a stream.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Chunk size a peer starts with until it sends Set Chunk Size (RTMP spec 5.4.1).
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// Timestamps at or above this value are carried in the 4-byte extended timestamp field.
pub const EXTENDED_TIMESTAMP: u32 = 0x00FF_FFFF;
/// A peer needs only a handful of chunk streams; more is either a bug or an attempt to pin memory.
const MAX_CHUNK_STREAMS: usize = 64;

/// Message type ids used by this crate (RTMP spec 5.4 and 7.1).
pub mod msg_type {
    pub const SET_CHUNK_SIZE: u8 = 1;
    pub const ABORT: u8 = 2;
    pub const ACK: u8 = 3;
    pub const USER_CONTROL: u8 = 4;
    pub const WINDOW_ACK_SIZE: u8 = 5;
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    pub const AUDIO: u8 = 8;
    pub const VIDEO: u8 = 9;
    pub const AMF3_DATA: u8 = 15;
    pub const AMF3_COMMAND: u8 = 17;
    pub const AMF0_DATA: u8 = 18;
    pub const AMF0_COMMAND: u8 = 20;
}

/// Chunk stream ids we send on; every message has a full header, so the split only helps peers' buffering.
pub mod csid {
    pub const CONTROL: u32 = 2;
    pub const COMMAND: u32 = 3;
    pub const AUDIO: u32 = 4;
    pub const DATA: u32 = 5;
    pub const VIDEO: u32 = 6;
}

/// Bounds enforced while decoding, so one peer cannot make us allocate without limit.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    /// Largest chunk size a peer may announce with Set Chunk Size.
    pub max_chunk_size: u32,
    /// Largest message length a peer may announce in a chunk header.
    pub max_message_size: u32,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        // 64 KiB chunks are what OBS/ffmpeg/nginx use at most in practice; 8 MiB holds a very large keyframe.
        Self { max_chunk_size: 65_536, max_message_size: 8 << 20 }
    }
}

/// Why a chunk stream could not be decoded; the connection is closed with this as the log reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("peer set chunk size {size}, above the limit {limit} (--max-chunk-size)")]
    ChunkSizeTooLarge { size: u32, limit: u32 },
    #[error("peer set an invalid chunk size 0")]
    ChunkSizeZero,
    #[error("message of {size} bytes on chunk stream {csid}, above the limit {limit} (--max-message-size)")]
    MessageTooLarge { size: u32, limit: u32, csid: u32 },
    #[error("more than {MAX_CHUNK_STREAMS} chunk streams in use")]
    TooManyChunkStreams,
    #[error("malformed Set Chunk Size message")]
    BadSetChunkSize,
}

/// One complete RTMP message as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub csid: u32,
    /// Absolute timestamp in milliseconds (wraps at 2^32, as the protocol does).
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Bytes,
}

/// What we remember about a chunk stream to expand compressed headers.
#[derive(Default)]
struct ChunkStreamState {
    timestamp: u32,
    /// Last timestamp delta; a fmt-3 header that starts a new message reuses it.
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// Whether the last header carried an extended timestamp: then fmt-3 chunks carry one too.
    extended: bool,
    /// Payload of a message that spans several chunks.
    partial: BytesMut,
}

/// Incremental decoder: push bytes in, take messages out.
pub struct ChunkDecoder {
    buf: BytesMut,
    chunk_size: u32,
    streams: HashMap<u32, ChunkStreamState>,
    limits: ChunkLimits,
    /// Bytes held in partial messages over all chunk streams (bounded by 2x the message limit).
    partial_bytes: usize,
}

impl ChunkDecoder {
    pub fn new(limits: ChunkLimits) -> Self {
        Self {
            buf: BytesMut::with_capacity(8192),
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: HashMap::new(),
            limits,
            partial_bytes: 0,
        }
    }

    /// Appends received bytes; call `next_message` until it returns `Ok(None)`.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The buffer to read socket data into directly (avoids a copy through `push`).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Decodes the next complete message, or `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<RawMessage>, ChunkError> {
        loop {
            match self.next_chunk()? {
                Step::NeedMore => return Ok(None),
                Step::Partial => continue,
                Step::Message(m) => {
                    self.apply_control(&m)?;
                    return Ok(Some(m));
                }
            }
        }
    }

    /// Protocol control messages that change how the following chunks are read take effect here,
    /// before the next chunk in the same buffer is parsed.
    fn apply_control(&mut self, m: &RawMessage) -> Result<(), ChunkError> {
        match m.type_id {
            msg_type::SET_CHUNK_SIZE => {
                if m.payload.len() < 4 {
                    return Err(ChunkError::BadSetChunkSize);
                }
                let size = u32::from_be_bytes([m.payload[0], m.payload[1], m.payload[2], m.payload[3]]) & 0x7FFF_FFFF;
                if size == 0 {
                    return Err(ChunkError::ChunkSizeZero);
                }
                if size > self.limits.max_chunk_size {
                    return Err(ChunkError::ChunkSizeTooLarge { size, limit: self.limits.max_chunk_size });
                }
                self.chunk_size = size;
            }
            msg_type::ABORT if m.payload.len() >= 4 => {
                let id = u32::from_be_bytes([m.payload[0], m.payload[1], m.payload[2], m.payload[3]]);
                if let Some(st) = self.streams.get_mut(&id) {
                    self.partial_bytes -= st.partial.len();
                    st.partial.clear();
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn next_chunk(&mut self) -> Result<Step, ChunkError> {
        let b = &self.buf[..];
        if b.is_empty() {
            return Ok(Step::NeedMore);
        }
        let fmt = b[0] >> 6;
        let (csid, mut pos) = match b[0] & 0x3F {
            0 if b.len() >= 2 => (64 + b[1] as u32, 2),
            1 if b.len() >= 3 => (64 + b[1] as u32 + ((b[2] as u32) << 8), 3),
            0 | 1 => return Ok(Step::NeedMore),
            id => (id as u32, 1),
        };
        let header_len = [11usize, 7, 3, 0][fmt as usize];
        if b.len() < pos + header_len {
            return Ok(Step::NeedMore);
        }
        if !self.streams.contains_key(&csid) && self.streams.len() >= MAX_CHUNK_STREAMS {
            return Err(ChunkError::TooManyChunkStreams);
        }
        // A compressed header on a chunk stream we have not seen expands against zeroed state, as FFmpeg
        // does; rml_rtmp rejects it, which breaks pulling from nginx-rtmp.
        let st = self.streams.entry(csid).or_default();
        let h = &b[pos..pos + header_len];
        let ts_field = if fmt < 3 { u32::from_be_bytes([0, h[0], h[1], h[2]]) } else { 0 };
        let mut length = st.length;
        let mut type_id = st.type_id;
        let mut stream_id = st.stream_id;
        if fmt <= 1 {
            length = u32::from_be_bytes([0, h[3], h[4], h[5]]);
            type_id = h[6];
        }
        if fmt == 0 {
            stream_id = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
        }
        pos += header_len;
        let extended = if fmt < 3 { ts_field == EXTENDED_TIMESTAMP } else { st.extended };
        let mut ext_value = 0;
        if extended {
            if b.len() < pos + 4 {
                return Ok(Step::NeedMore);
            }
            ext_value = u32::from_be_bytes([b[pos], b[pos + 1], b[pos + 2], b[pos + 3]]);
            pos += 4;
        }
        if length > self.limits.max_message_size {
            return Err(ChunkError::MessageTooLarge { size: length, limit: self.limits.max_message_size, csid });
        }
        let starting = st.partial.is_empty() || fmt < 3;
        let have = if starting { 0 } else { st.partial.len() };
        let take = (length as usize - have).min(self.chunk_size as usize);
        if b.len() < pos + take {
            // Reserve for the whole chunk once, not byte by byte, but never more than one chunk.
            self.buf.reserve(pos + take - b.len());
            return Ok(Step::NeedMore);
        }
        // The header is complete: commit it to the chunk stream state.
        if starting {
            let field = if extended { ext_value } else { ts_field };
            match fmt {
                0 => {
                    st.timestamp = field;
                    st.delta = 0;
                }
                1 | 2 => {
                    st.delta = field;
                    st.timestamp = st.timestamp.wrapping_add(field);
                }
                _ => st.timestamp = st.timestamp.wrapping_add(st.delta),
            }
            if !st.partial.is_empty() {
                // A new header in the middle of a message: the peer abandoned it.
                self.partial_bytes -= st.partial.len();
                st.partial.clear();
            }
        }
        st.length = length;
        st.type_id = type_id;
        st.stream_id = stream_id;
        st.extended = extended;
        let timestamp = st.timestamp;

        self.buf.advance(pos);
        let done = have + take == length as usize;
        let payload = if done && have == 0 {
            // Whole message in one chunk: copy it out. A slice of the read buffer would keep the whole buffer
            // (16 KiB or more) alive for as long as the frame is cached, hiding memory from the byte budgets.
            let m = Bytes::copy_from_slice(&self.buf[..take]);
            self.buf.advance(take);
            m
        } else {
            if st.partial.is_empty() {
                st.partial.reserve((length as usize).min(64 * 1024));
            }
            st.partial.extend_from_slice(&self.buf[..take]);
            self.buf.advance(take);
            self.partial_bytes += take;
            if self.partial_bytes > 2 * self.limits.max_message_size as usize {
                return Err(ChunkError::MessageTooLarge {
                    size: self.partial_bytes as u32,
                    limit: self.limits.max_message_size,
                    csid,
                });
            }
            if !done {
                return Ok(Step::Partial);
            }
            self.partial_bytes -= st.partial.len();
            st.partial.split().freeze()
        };
        Ok(Step::Message(RawMessage { csid, timestamp, type_id, stream_id, payload }))
    }
}

enum Step {
    NeedMore,
    Partial,
    Message(RawMessage),
}

/// Appends `payload` as one message with a full header on `csid`, split at `chunk_size`.
pub fn encode_message(
    out: &mut BytesMut,
    csid: u32,
    timestamp: u32,
    type_id: u8,
    stream_id: u32,
    payload: &[u8],
    chunk_size: usize,
) {
    debug_assert!((2..64).contains(&csid), "we only send on one-byte chunk stream ids");
    let extended = timestamp >= EXTENDED_TIMESTAMP;
    let chunks = payload.len().div_ceil(chunk_size).max(1);
    out.reserve(payload.len() + 16 + chunks * 5);
    out.put_u8(csid as u8);
    let ts_field = if extended { EXTENDED_TIMESTAMP } else { timestamp };
    out.put_slice(&ts_field.to_be_bytes()[1..]);
    out.put_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.put_u8(type_id);
    out.put_u32_le(stream_id);
    if extended {
        out.put_u32(timestamp);
    }
    for (i, chunk) in payload.chunks(chunk_size).enumerate() {
        if i > 0 {
            out.put_u8(0xC0 | csid as u8);
            // FFmpeg, nginx-rtmp and the spec repeat the extended timestamp on fmt-3 continuation chunks.
            if extended {
                out.put_u32(timestamp);
            }
        }
        out.put_slice(chunk);
    }
}

/// Lengths of the first (fmt 0, one-byte csid) and each continuation chunk header at `timestamp`.
pub fn header_lens(timestamp: u32) -> (usize, usize) {
    let ext = if timestamp >= EXTENDED_TIMESTAMP { 4 } else { 0 };
    (12 + ext, 1 + ext)
}

/// Only the chunk headers `encode_message` would write for a payload of `len` bytes: the first header, then one
/// per continuation chunk. With the payload sliced at `chunk_size` between them, this is the same wire form
/// without a second copy of the payload.
pub fn encode_headers(csid: u32, timestamp: u32, type_id: u8, stream_id: u32, len: usize, chunk_size: usize) -> Bytes {
    debug_assert!((2..64).contains(&csid), "we only send on one-byte chunk stream ids");
    let extended = timestamp >= EXTENDED_TIMESTAMP;
    let chunks = len.div_ceil(chunk_size).max(1);
    let (first, cont) = header_lens(timestamp);
    let mut out = BytesMut::with_capacity(first + (chunks - 1) * cont);
    out.put_u8(csid as u8);
    let ts_field = if extended { EXTENDED_TIMESTAMP } else { timestamp };
    out.put_slice(&ts_field.to_be_bytes()[1..]);
    out.put_slice(&(len as u32).to_be_bytes()[1..]);
    out.put_u8(type_id);
    out.put_u32_le(stream_id);
    if extended {
        out.put_u32(timestamp);
    }
    for _ in 1..chunks {
        out.put_u8(0xC0 | csid as u8);
        if extended {
            out.put_u32(timestamp);
        }
    }
    out.freeze()
}

/// `encode_message` into a fresh buffer.
pub fn encode_to_bytes(
    csid: u32,
    timestamp: u32,
    type_id: u8,
    stream_id: u32,
    payload: &[u8],
    chunk_size: usize,
) -> Bytes {
    let mut out = BytesMut::new();
    encode_message(&mut out, csid, timestamp, type_id, stream_id, payload, chunk_size);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(dec: &mut ChunkDecoder) -> Vec<RawMessage> {
        let mut v = Vec::new();
        while let Some(m) = dec.next_message().unwrap() {
            v.push(m);
        }
        v
    }

    #[test]
    fn roundtrip_multi_chunk_with_extended_timestamp() {
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        for ts in [0, 40, EXTENDED_TIMESTAMP - 1, EXTENDED_TIMESTAMP, 0x1234_5678] {
            let wire = encode_to_bytes(csid::VIDEO, ts, msg_type::VIDEO, 1, &payload, 128);
            let mut dec = ChunkDecoder::new(ChunkLimits::default());
            // Feed one byte at a time: every split point must work.
            let mut got = Vec::new();
            for b in wire.iter() {
                dec.push(&[*b]);
                got.extend(decode_all(&mut dec));
            }
            assert_eq!(got.len(), 1, "ts {ts}");
            assert_eq!(got[0].timestamp, ts);
            assert_eq!(got[0].stream_id, 1);
            assert_eq!(&got[0].payload[..], &payload[..]);
        }
    }

    #[test]
    fn compressed_header_on_unseen_chunk_stream_is_accepted() {
        // fmt 1 on csid 7 that was never opened: delta 40, length 2, type 9.
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        dec.push(&[0x47, 0, 0, 40, 0, 0, 2, 9, 0x17, 0x01]);
        let m = decode_all(&mut dec);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].timestamp, 40);
        assert_eq!(m[0].type_id, 9);
        // fmt 3 new message reuses the delta.
        dec.push(&[0xC7, 0x27, 0x01]);
        let m = decode_all(&mut dec);
        assert_eq!(m[0].timestamp, 80);
    }

    #[test]
    fn set_chunk_size_applies_to_following_chunks_and_is_bounded() {
        let mut dec = ChunkDecoder::new(ChunkLimits { max_chunk_size: 4096, max_message_size: 1 << 20 });
        let mut wire = BytesMut::new();
        encode_message(&mut wire, 2, 0, msg_type::SET_CHUNK_SIZE, 0, &4096u32.to_be_bytes(), 128);
        encode_message(&mut wire, 6, 0, msg_type::VIDEO, 1, &[7u8; 3000], 4096);
        dec.push(&wire);
        let m = decode_all(&mut dec);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].payload.len(), 3000);

        let mut dec = ChunkDecoder::new(ChunkLimits { max_chunk_size: 4096, max_message_size: 1 << 20 });
        dec.push(&encode_to_bytes(2, 0, msg_type::SET_CHUNK_SIZE, 0, &1_000_000u32.to_be_bytes(), 128));
        assert_eq!(dec.next_message(), Err(ChunkError::ChunkSizeTooLarge { size: 1_000_000, limit: 4096 }));
    }

    #[test]
    fn oversized_message_is_refused_at_the_header() {
        let mut dec = ChunkDecoder::new(ChunkLimits { max_chunk_size: 4096, max_message_size: 1000 });
        // Header announcing 0xFFFFFF bytes; no payload needed to be refused.
        dec.push(&[0x06, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 1, 0, 0, 0]);
        assert!(matches!(dec.next_message(), Err(ChunkError::MessageTooLarge { .. })));
    }
}
