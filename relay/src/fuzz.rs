//! Fuzz entry points: raw bytes through handshake, chunk decoding and AMF command handling to session events.
//!
//! Shared by the cargo-fuzz targets in `relay/fuzz` and by the always-run randomized test in
//! `relay/tests/bad_input.rs`, so the same input path is exercised with and without libFuzzer.

use bytes::BytesMut;

use crate::chunk::ChunkLimits;
use crate::proto::{ClientSession, HandshakeState, HandshakeStep, ServerEvent, ServerSession};

/// Small limits so the fuzzer reaches the limit paths quickly.
fn limits() -> ChunkLimits {
    ChunkLimits { max_chunk_size: 64 * 1024, max_message_size: 256 * 1024 }
}

/// Server side after a completed handshake: bytes are a client's chunk stream. Returns the number of events.
pub fn server_session(data: &[u8]) -> usize {
    let mut s = ServerSession::new(limits());
    let mut out = BytesMut::new();
    let mut events = Vec::new();
    // Feed in a few pieces so partial-chunk paths are taken too.
    let mut count = 0;
    for piece in data.chunks(97) {
        if s.feed(piece, &mut out, &mut events).is_err() {
            break;
        }
        // Accept publishes, as an origin would, so media and metadata parsing is reached too.
        for e in events.drain(..) {
            count += 1;
            if let ServerEvent::Publish { stream_id, name } = e {
                if s.accept_publish(stream_id, &name, &mut out).is_err() {
                    return count;
                }
            }
        }
    }
    count
}

/// Client (pull) side: bytes are what an origin sends after the handshake.
pub fn client_session(data: &[u8]) -> usize {
    let mut out = BytesMut::new();
    let Ok(mut c) = ClientSession::new(limits(), "live", "rtmp://127.0.0.1/live", "test", &mut out) else {
        return 0;
    };
    let mut events = Vec::new();
    for piece in data.chunks(131) {
        if c.feed(piece, &mut out, &mut events).is_err() {
            break;
        }
    }
    events.len()
}

/// Everything from the first byte: a server handshake, then the rest as a chunk stream.
pub fn server_from_handshake(data: &[u8]) -> usize {
    let mut hs = HandshakeState::server();
    match hs.feed(data) {
        Ok(HandshakeStep::Done { rest, .. }) => server_session(&rest),
        _ => 0,
    }
}
