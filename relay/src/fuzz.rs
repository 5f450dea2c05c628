//! Fuzz entry points: raw bytes through handshake, chunk decoding and AMF command handling to session events,
//! and through the media HTTP listener's request parsing; plus the seeded mutation loop that drives them.
//!
//! Shared by the cargo-fuzz targets in `relay/fuzz`, the always-run randomized test in
//! `relay/tests/bad_input.rs` and the long campaign (`examples/fuzz_campaign.rs`), so the same input path is
//! exercised with and without libFuzzer.

use bytes::BytesMut;

use crate::wire::chunk::{encode_message, msg_type, ChunkLimits};
use crate::wire::proto::{ClientSession, HandshakeState, HandshakeStep, ServerEvent, ServerSession};

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

/// A request head for the media HTTP listener: parsing, then the RTMPT command and the HTTP-FLV target.
/// Returns 1 if it parsed.
pub fn http_request(data: &[u8]) -> usize {
    match crate::wire::http::parse_request(data) {
        Ok(Some(r)) => {
            let _ = crate::egress::rtmpt::route(&r);
            let _ = crate::egress::flv::flv_target(&r.target)
                .map(|(app, key, _)| crate::valid_name(app) && crate::valid_name(key));
            1
        }
        _ => 0,
    }
}

/// xorshift64*: a fixed seed gives the same inputs on every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// One to eight random edits of `seed`: byte set, bit flip, truncation, random insertion, or a splice from
/// elsewhere in the input (which repeats headers and length fields, good at reaching the limit checks).
pub fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut input = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        if input.is_empty() {
            break;
        }
        let pos = rng.below(input.len());
        match rng.below(5) {
            0 => input[pos] = rng.next_u64() as u8,
            1 => input[pos] ^= 1 << rng.below(8),
            2 => input.truncate(pos),
            3 => {
                let extra: Vec<u8> = (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect();
                input.splice(pos..pos, extra);
            }
            _ => {
                let from = rng.below(input.len());
                let len = rng.below(input.len() - from + 1).min(256);
                let piece = input[from..from + len].to_vec();
                input.splice(pos..pos, piece);
            }
        }
    }
    input
}

/// A fuzz entry point: input bytes to a count of what it reached.
pub type Entry = fn(&[u8]) -> usize;

/// The fuzzed parsers, each with its entry point.
pub const TARGETS: [(&str, Entry); 4] = [
    ("server_handshake", server_from_handshake),
    ("server_session", server_session),
    ("client_session", client_session),
    ("http_request", http_request),
];

/// Valid inputs per target (in [`TARGETS`] order) for the mutations to start from.
pub fn seed_inputs() -> Vec<Vec<Vec<u8>>> {
    let publish = valid_publish_session();
    let play = valid_play_session();
    let (_, c0c1) = HandshakeState::client().expect("client handshake");
    // C0+C1, then C2 (the simple handshake does not check its bytes), then the chunk stream.
    let handshake = |session: &[u8]| [c0c1.clone(), vec![0; 1536], session.to_vec()].concat();
    vec![
        vec![handshake(&publish), handshake(&play)],
        vec![publish, play],
        vec![origin_answers()],
        vec![
            b"GET /live/test.flv?token=abc HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: x\r\n\r\n".to_vec(),
            b"POST /send/1/2 HTTP/1.1\r\nContent-Type: application/x-fcs\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
            b"GET /healthz HTTP/1.0\r\n\r\n".to_vec(),
        ],
    ]
}

fn amf_command(name: &str, txn: f64, args: &[rml_rtmp::rml_amf0::Amf0Value]) -> Vec<u8> {
    use rml_rtmp::rml_amf0::Amf0Value;
    let mut v = vec![Amf0Value::Utf8String(name.into()), Amf0Value::Number(txn), Amf0Value::Null];
    v.extend_from_slice(args);
    rml_rtmp::rml_amf0::serialize(&v).expect("AMF0 serialization")
}

/// A client publishing: connect, createStream, publish, metadata, sequence header, frames (one with an
/// extended timestamp).
pub fn valid_publish_session() -> Vec<u8> {
    use rml_rtmp::rml_amf0::Amf0Value;
    let mut out = BytesMut::new();
    let _ = ClientSession::new(ChunkLimits::default(), "live", "rtmp://127.0.0.1/live", "test", &mut out);
    encode_message(&mut out, 3, 0, msg_type::AMF0_COMMAND, 0, &amf_command("createStream", 2.0, &[]), 4096);
    let publish =
        amf_command("publish", 3.0, &[Amf0Value::Utf8String("test".into()), Amf0Value::Utf8String("live".into())]);
    encode_message(&mut out, 3, 0, msg_type::AMF0_COMMAND, 1, &publish, 4096);
    let mut props = std::collections::HashMap::new();
    props.insert("width".to_string(), Amf0Value::Number(640.0));
    let meta = rml_rtmp::rml_amf0::serialize(&vec![
        Amf0Value::Utf8String("@setDataFrame".into()),
        Amf0Value::Utf8String("onMetaData".into()),
        Amf0Value::Object(props),
    ])
    .expect("AMF0 serialization");
    encode_message(&mut out, 5, 0, msg_type::AMF0_DATA, 1, &meta, 4096);
    encode_message(&mut out, 6, 0, msg_type::VIDEO, 1, &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f], 4096);
    encode_message(&mut out, 6, 0x0100_0000, msg_type::VIDEO, 1, &[0x17; 6000], 4096);
    encode_message(&mut out, 4, 33, msg_type::AUDIO, 1, &[0xAF, 0, 0x12, 0x10], 4096);
    out.to_vec()
}

/// A client playing: connect, createStream, play with a query, deleteStream.
pub fn valid_play_session() -> Vec<u8> {
    use rml_rtmp::rml_amf0::Amf0Value;
    let mut out = BytesMut::new();
    let _ = ClientSession::new(ChunkLimits::default(), "live", "rtmp://127.0.0.1/live", "test", &mut out);
    encode_message(&mut out, 3, 0, msg_type::AMF0_COMMAND, 0, &amf_command("createStream", 2.0, &[]), 4096);
    let play = amf_command("play", 0.0, &[Amf0Value::Utf8String("test?a=1".into()), Amf0Value::Number(-1000.0)]);
    encode_message(&mut out, 3, 0, msg_type::AMF0_COMMAND, 1, &play, 4096);
    encode_message(
        &mut out,
        3,
        0,
        msg_type::AMF0_COMMAND,
        1,
        &amf_command("deleteStream", 0.0, &[Amf0Value::Number(1.0)]),
        4096,
    );
    out.to_vec()
}

/// What an origin sends a pulling client: the server's start, the answers to connect and createStream as our
/// server session gives them, Play.Start, then media.
pub fn origin_answers() -> Vec<u8> {
    let mut server = ServerSession::new(limits());
    let mut s2c = BytesMut::new();
    let _ = ServerSession::start(&mut s2c);
    let mut c2s = BytesMut::new();
    let mut client = match ClientSession::new(limits(), "live", "rtmp://x/live", "test", &mut c2s) {
        Ok(c) => c,
        Err(_) => return s2c.to_vec(),
    };
    let mut all = Vec::new();
    let (mut sev, mut cev) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        let data = c2s.split();
        let _ = server.feed(&data, &mut s2c, &mut sev);
        for e in sev.drain(..) {
            if let ServerEvent::Play { stream_id, name } = e {
                let _ = ServerSession::accept_play(stream_id, &name, &mut s2c);
            }
        }
        let data = s2c.split();
        all.extend_from_slice(&data);
        let _ = client.feed(&data, &mut c2s, &mut cev);
    }
    let mut out = BytesMut::new();
    encode_message(&mut out, 6, 0, msg_type::VIDEO, 1, &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f], 4096);
    encode_message(&mut out, 4, 40, msg_type::AUDIO, 1, &[0xAF, 1, 0x12, 0x10], 4096);
    all.extend_from_slice(&out);
    all
}
