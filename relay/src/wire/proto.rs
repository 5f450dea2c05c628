//! Sans-I/O RTMP sessions: handshake, command flow (server and client side) and message classification.
//!
//! Chunking is ours (`chunk`); rml_rtmp provides the handshake and the AMF0 message (de)serialization.
//! Keeping this free of sockets lets the fuzz target and unit tests drive it from raw bytes.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::{PeerBandwidthLimitType, RtmpMessage, UserControlEventType};
use rml_rtmp::rml_amf0::{self, Amf0Value};
use rml_rtmp::time::RtmpTimestamp;

use super::chunk::{self, csid, msg_type, ChunkDecoder, ChunkError, ChunkLimits, RawMessage};

/// Chunk size we send with; every message of a stream is pre-chunked at this size once and shared.
pub const OUT_CHUNK_SIZE: usize = 4096;
/// Window we ask peers to acknowledge; large, because acks are only bookkeeping for us.
const WINDOW_ACK_SIZE: u32 = 5_000_000;
/// Deepest AMF0 nesting we accept: the decoder recurses, so unbounded nesting would overflow the stack.
const MAX_AMF_DEPTH: usize = 16;

/// Why a session could not continue; the connection is closed and this is the log reason.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("handshake failed: {0:?}")]
    Handshake(rml_rtmp::handshake::HandshakeError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error("malformed {what} message: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("bad AMF0 in a {0} message: {1}")]
    Amf(&'static str, AmfFault),
    #[error("message serialization failed: {0}")]
    Serialize(String),
    #[error("peer refused: {code}: {description}")]
    Refused { code: String, description: String },
}

/// Handshake wrapper: feeds bytes until rml_rtmp's handshake completes.
pub struct HandshakeState {
    hs: Handshake,
}

/// Result of feeding handshake bytes.
pub enum HandshakeStep {
    /// Send `reply` and wait for more bytes.
    Continue { reply: Vec<u8> },
    /// Send `reply`; `rest` are the first bytes of the chunk stream.
    Done { reply: Vec<u8>, rest: Vec<u8> },
}

impl HandshakeState {
    pub fn server() -> Self {
        Self { hs: Handshake::new(PeerType::Server) }
    }

    /// Client side: returns the state and the C0+C1 bytes to send first.
    pub fn client() -> Result<(Self, Vec<u8>), ProtoError> {
        let mut hs = Handshake::new(PeerType::Client);
        let c0c1 = hs.generate_outbound_p0_and_p1().map_err(ProtoError::Handshake)?;
        Ok((Self { hs }, c0c1))
    }

    pub fn feed(&mut self, data: &[u8]) -> Result<HandshakeStep, ProtoError> {
        match self.hs.process_bytes(data).map_err(ProtoError::Handshake)? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                Ok(HandshakeStep::Continue { reply: response_bytes })
            }
            HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                Ok(HandshakeStep::Done { reply: response_bytes, rest: remaining_bytes })
            }
        }
    }
}

/// Kind of a media message as the fan-out sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
    /// AMF0 data such as onMetaData, without the `@setDataFrame` wrapper a publisher sends.
    Data,
}

/// One audio/video/data message of a stream.
#[derive(Debug, Clone)]
pub struct Media {
    pub kind: MediaKind,
    pub timestamp: u32,
    pub payload: Bytes,
}

impl Media {
    /// An H.264 (or other codec) keyframe: where a player can start decoding.
    pub fn is_keyframe(&self) -> bool {
        self.kind == MediaKind::Video && self.payload.first().is_some_and(|b| b >> 4 == 1)
    }
    /// AVC sequence header (decoder configuration); a player cannot decode without it.
    pub fn is_video_header(&self) -> bool {
        self.kind == MediaKind::Video && self.payload.len() >= 2 && self.payload[0] & 0x0F == 7 && self.payload[1] == 0
    }
    /// AAC sequence header (AudioSpecificConfig).
    pub fn is_audio_header(&self) -> bool {
        self.kind == MediaKind::Audio && self.payload.len() >= 2 && self.payload[0] >> 4 == 10 && self.payload[1] == 0
    }
    pub fn is_metadata(&self) -> bool {
        self.kind == MediaKind::Data
    }
    pub fn type_id(&self) -> u8 {
        match self.kind {
            MediaKind::Audio => msg_type::AUDIO,
            MediaKind::Video => msg_type::VIDEO,
            MediaKind::Data => msg_type::AMF0_DATA,
        }
    }
    pub fn csid(&self) -> u32 {
        match self.kind {
            MediaKind::Audio => csid::AUDIO,
            MediaKind::Video => csid::VIDEO,
            MediaKind::Data => csid::DATA,
        }
    }
    /// Only the chunk headers of [`Media::encode`] (the payload is sliced in between when sent).
    pub fn encode_headers(&self, timestamp: u32, stream_id: u32) -> Bytes {
        chunk::encode_headers(self.csid(), timestamp, self.type_id(), stream_id, self.payload.len(), OUT_CHUNK_SIZE)
    }

    /// The message pre-chunked for message stream `stream_id`.
    pub fn encode(&self, timestamp: u32, stream_id: u32) -> Bytes {
        chunk::encode_to_bytes(self.csid(), timestamp, self.type_id(), stream_id, &self.payload, OUT_CHUNK_SIZE)
    }
}

/// Why an AMF0 body could not be decoded; each says what a client did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmfFault {
    /// The body ends inside a value.
    Truncated,
    /// Objects or arrays nest deeper than [`MAX_AMF_DEPTH`].
    TooDeep,
    /// A type marker this relay does not decode (references, dates, XML, typed objects, AMF3 switches).
    UnsupportedMarker(u8),
    /// A string that is not UTF-8.
    BadUtf8,
}

impl std::fmt::Display for AmfFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AmfFault::Truncated => write!(f, "truncated (the body ends inside a value)"),
            AmfFault::TooDeep => write!(f, "objects nested deeper than {MAX_AMF_DEPTH}"),
            AmfFault::UnsupportedMarker(m) => write!(f, "unsupported type marker 0x{m:02x}"),
            AmfFault::BadUtf8 => write!(f, "a string is not UTF-8"),
        }
    }
}

/// Decodes AMF0 values: numbers, booleans, strings and long strings (0x0c), objects, null, undefined, ECMA and
/// strict arrays. Our own decoder rather than rml_amf0's, which lacks long strings and recurses without bound;
/// this one recurses at most [`MAX_AMF_DEPTH`] levels.
fn decode_amf0(mut b: &[u8]) -> Result<Vec<Amf0Value>, AmfFault> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], AmfFault> {
        if b.len() < n {
            return Err(AmfFault::Truncated);
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Ok(h)
    }
    fn string(b: &mut &[u8], n: usize) -> Result<String, AmfFault> {
        String::from_utf8(take(b, n)?.to_vec()).map_err(|_| AmfFault::BadUtf8)
    }
    fn u16_len(b: &mut &[u8]) -> Result<usize, AmfFault> {
        let n = take(b, 2)?;
        Ok(u16::from_be_bytes([n[0], n[1]]) as usize)
    }
    fn u32_of(b: &mut &[u8]) -> Result<u32, AmfFault> {
        let n = take(b, 4)?;
        Ok(u32::from_be_bytes([n[0], n[1], n[2], n[3]]))
    }
    fn object(b: &mut &[u8], depth: usize) -> Result<Amf0Value, AmfFault> {
        let mut props = HashMap::new();
        loop {
            let n = u16_len(b)?;
            if n == 0 {
                // An empty name ends the object; the end marker must follow.
                let m = take(b, 1)?[0];
                if m != 9 {
                    return Err(AmfFault::UnsupportedMarker(m));
                }
                return Ok(Amf0Value::Object(props));
            }
            let name = string(b, n)?;
            let v = value(b, depth)?;
            props.insert(name, v);
        }
    }
    fn value(b: &mut &[u8], depth: usize) -> Result<Amf0Value, AmfFault> {
        let marker = take(b, 1)?[0];
        if matches!(marker, 3 | 8 | 10) && depth >= MAX_AMF_DEPTH {
            return Err(AmfFault::TooDeep);
        }
        Ok(match marker {
            0 => Amf0Value::Number(f64::from_be_bytes(take(b, 8)?.try_into().expect("8 bytes"))),
            1 => Amf0Value::Boolean(take(b, 1)?[0] != 0),
            2 => {
                let n = u16_len(b)?;
                Amf0Value::Utf8String(string(b, n)?)
            }
            0x0c => {
                let n = u32_of(b)? as usize;
                Amf0Value::Utf8String(string(b, n)?)
            }
            3 => object(b, depth + 1)?,
            5 => Amf0Value::Null,
            6 => Amf0Value::Undefined,
            8 => {
                // ECMA array: the count is advisory; real encoders end it like an object (as rml_amf0 reads it).
                u32_of(b)?;
                object(b, depth + 1)?
            }
            10 => {
                let n = u32_of(b)? as usize;
                // Each value is at least one byte: a count beyond the body is a truncation, not an allocation.
                if n > b.len() {
                    return Err(AmfFault::Truncated);
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(value(b, depth + 1)?);
                }
                Amf0Value::StrictArray(items)
            }
            m => return Err(AmfFault::UnsupportedMarker(m)),
        })
    }
    let mut values = Vec::new();
    // A stray object-end marker at the top level ends the values (as rml_amf0 has always treated it).
    while !b.is_empty() && b[0] != 9 {
        values.push(value(&mut b, 0)?);
    }
    Ok(values)
}

/// Decodes an AMF0 command or data message.
///
/// Decoding goes through rml_amf0 directly rather than rml_rtmp's `MessagePayload::to_rtmp_message`: the latter
/// panics (`drain(..3)` out of range) on a command with fewer than three values, which our fuzz test found.
fn decode_amf(m: &RawMessage) -> Result<RtmpMessage, ProtoError> {
    let is_command = matches!(m.type_id, msg_type::AMF0_COMMAND | msg_type::AMF3_COMMAND);
    let what = if is_command { "command" } else { "data" };
    // AMF3-flagged messages from Flash-era clients carry AMF0 after a leading zero byte.
    let body = if matches!(m.type_id, msg_type::AMF3_COMMAND | msg_type::AMF3_DATA) && m.payload.first() == Some(&0) {
        &m.payload[1..]
    } else {
        &m.payload[..]
    };
    let mut values = decode_amf0(body).map_err(|f| ProtoError::Amf(what, f))?;
    if !is_command {
        return Ok(RtmpMessage::Amf0Data { values });
    }
    let malformed = |detail: &str| ProtoError::Malformed { what, detail: detail.to_string() };
    if values.is_empty() {
        return Err(malformed("empty command"));
    }
    let mut rest = values.split_off(1);
    let Some(Amf0Value::Utf8String(command_name)) = values.pop() else {
        return Err(malformed("command name is not a string"));
    };
    // Some clients omit the transaction id or command object on notifications; treat as 0 / null.
    let transaction_id = match rest.first() {
        Some(Amf0Value::Number(n)) => {
            let n = *n;
            rest.remove(0);
            n
        }
        _ => 0.0,
    };
    let command_object = if rest.is_empty() { Amf0Value::Null } else { rest.remove(0) };
    Ok(RtmpMessage::Amf0Command { command_name, transaction_id, command_object, additional_arguments: rest })
}

/// Encodes a protocol message with rml_rtmp and chunks it.
fn send(out: &mut BytesMut, csid: u32, stream_id: u32, msg: RtmpMessage) -> Result<(), ProtoError> {
    let p =
        msg.into_message_payload(RtmpTimestamp::new(0), stream_id).map_err(|e| ProtoError::Serialize(e.to_string()))?;
    chunk::encode_message(out, csid, 0, p.type_id, stream_id, &p.data, OUT_CHUNK_SIZE);
    Ok(())
}

fn command(
    out: &mut BytesMut,
    stream_id: u32,
    name: &str,
    txn: f64,
    obj: Amf0Value,
    args: Vec<Amf0Value>,
) -> Result<(), ProtoError> {
    send(
        out,
        csid::COMMAND,
        stream_id,
        RtmpMessage::Amf0Command {
            command_name: name.to_string(),
            transaction_id: txn,
            command_object: obj,
            additional_arguments: args,
        },
    )
}

fn obj(pairs: &[(&str, Amf0Value)]) -> Amf0Value {
    Amf0Value::Object(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<HashMap<_, _>>())
}

fn s(v: &str) -> Amf0Value {
    Amf0Value::Utf8String(v.to_string())
}

/// `onStatus` on a message stream, the way RTMP reports publish/play outcomes.
pub fn on_status(
    out: &mut BytesMut,
    stream_id: u32,
    level: &str,
    code: &str,
    description: &str,
) -> Result<(), ProtoError> {
    command(
        out,
        stream_id,
        "onStatus",
        0.0,
        Amf0Value::Null,
        vec![obj(&[("level", s(level)), ("code", s(code)), ("description", s(description))])],
    )
}

fn user_control(
    out: &mut BytesMut,
    event: UserControlEventType,
    stream_id: Option<u32>,
    ts: Option<u32>,
) -> Result<(), ProtoError> {
    send(
        out,
        csid::CONTROL,
        0,
        RtmpMessage::UserControl {
            event_type: event,
            stream_id,
            buffer_length: None,
            timestamp: ts.map(RtmpTimestamp::new),
        },
    )
}

/// Tracks received bytes and produces acknowledgements when the peer asked for them.
#[derive(Default)]
struct Acker {
    window: Option<u32>,
    total: u64,
    since_ack: u64,
}

impl Acker {
    fn received(&mut self, n: usize, out: &mut BytesMut) -> Result<(), ProtoError> {
        self.total += n as u64;
        self.since_ack += n as u64;
        if let Some(w) = self.window {
            if self.since_ack >= w as u64 {
                self.since_ack = 0;
                send(out, csid::CONTROL, 0, RtmpMessage::Acknowledgement { sequence_number: self.total as u32 })?;
            }
        }
        Ok(())
    }
}

/// Handles the control messages both sides treat the same way; returns true when consumed.
fn handle_control(m: &RawMessage, acker: &mut Acker, out: &mut BytesMut) -> Result<bool, ProtoError> {
    match m.type_id {
        msg_type::SET_CHUNK_SIZE | msg_type::ABORT | msg_type::ACK | msg_type::SET_PEER_BANDWIDTH => Ok(true),
        msg_type::WINDOW_ACK_SIZE => {
            if m.payload.len() < 4 {
                return Err(ProtoError::Malformed { what: "window ack size", detail: "short".into() });
            }
            let w = u32::from_be_bytes([m.payload[0], m.payload[1], m.payload[2], m.payload[3]]);
            acker.window = (w > 0).then_some(w);
            Ok(true)
        }
        msg_type::USER_CONTROL => {
            // Ping request (event 6): answer so peers such as nginx-rtmp do not drop us.
            if m.payload.len() >= 6 && m.payload[0] == 0 && m.payload[1] == 6 {
                let ts = u32::from_be_bytes([m.payload[2], m.payload[3], m.payload[4], m.payload[5]]);
                user_control(out, UserControlEventType::PingResponse, None, Some(ts))?;
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Classifies an audio/video/data message; AMF data is normalised (no `@setDataFrame`).
fn to_media(m: &RawMessage) -> Result<Option<Media>, ProtoError> {
    let kind = match m.type_id {
        msg_type::AUDIO => MediaKind::Audio,
        msg_type::VIDEO => MediaKind::Video,
        msg_type::AMF0_DATA | msg_type::AMF3_DATA => {
            let values = match decode_amf(m)? {
                RtmpMessage::Amf0Data { values } => values,
                _ => return Ok(None),
            };
            let mut values: &[Amf0Value] = &values;
            if matches!(values.first(), Some(Amf0Value::Utf8String(n)) if n == "@setDataFrame") {
                values = &values[1..];
            }
            // Only onMetaData is relayed; |RtmpSampleAccess and the like are per-server chatter.
            if !matches!(values.first(), Some(Amf0Value::Utf8String(n)) if n == "onMetaData") {
                return Ok(None);
            }
            // rml_amf0 writes no long strings: metadata holding one (over 64 KiB) is dropped, the stream goes on.
            let Ok(payload) = rml_amf0::serialize(&values.to_vec()) else {
                return Ok(None);
            };
            return Ok(Some(Media { kind: MediaKind::Data, timestamp: m.timestamp, payload: Bytes::from(payload) }));
        }
        _ => return Ok(None),
    };
    Ok(Some(Media { kind, timestamp: m.timestamp, payload: m.payload.clone() }))
}

/// What a server-side session reports to its connection handler.
#[derive(Debug)]
pub enum ServerEvent {
    /// `connect` was accepted (authorization happens at publish and play).
    Connected { app: String, tc_url: Option<String> },
    /// `connect` was refused (a bad app name or an overlong tcUrl) and answered with `_error`; close after
    /// flushing. `reason` is safe to log: client strings in it are bounded and escaped.
    ConnectRefused { reason: String },
    /// The client wants to publish `name` (may include `?query`) on message stream `stream_id`.
    Publish { stream_id: u32, name: String },
    /// The client wants to play `name` on message stream `stream_id`.
    Play { stream_id: u32, name: String },
    /// Media from a publisher.
    Media(Media),
    /// The client ended its publish or play (deleteStream, closeStream, FCUnpublish).
    StreamClosed,
}

/// Refuses a publish or play name (with its `?query`) too long to be a name: the connection is closed before the
/// string is held or logged whole.
fn bounded_name(what: &'static str, name: &str) -> Result<(), ProtoError> {
    let limit = super::names::MAX_NAME_LEN + 1 + super::names::MAX_QUERY_LEN;
    if name.len() > limit {
        return Err(ProtoError::Malformed {
            what,
            detail: format!("stream name {} of {} bytes, above {limit}", super::names::shown(name), name.len()),
        });
    }
    Ok(())
}

/// The server side of one connection after the handshake.
pub struct ServerSession {
    dec: ChunkDecoder,
    acker: Acker,
    next_stream_id: u32,
    /// Message stream we accepted a publish on: media on other streams is ignored.
    publishing_stream: Option<u32>,
}

impl ServerSession {
    pub fn new(limits: ChunkLimits) -> Self {
        Self { dec: ChunkDecoder::new(limits), acker: Acker::default(), next_stream_id: 1, publishing_stream: None }
    }

    /// The first bytes we send after the handshake.
    pub fn start(out: &mut BytesMut) -> Result<(), ProtoError> {
        send(out, csid::CONTROL, 0, RtmpMessage::WindowAcknowledgement { size: WINDOW_ACK_SIZE })?;
        send(
            out,
            csid::CONTROL,
            0,
            RtmpMessage::SetPeerBandwidth { size: WINDOW_ACK_SIZE, limit_type: PeerBandwidthLimitType::Dynamic },
        )?;
        send(out, csid::CONTROL, 0, RtmpMessage::SetChunkSize { size: OUT_CHUNK_SIZE as u32 })
    }

    pub fn decoder_buffer(&mut self) -> &mut BytesMut {
        self.dec.buffer_mut()
    }

    /// Processes bytes already placed in `decoder_buffer` (`n` new ones); replies go to `out`.
    pub fn process(&mut self, n: usize, out: &mut BytesMut, events: &mut Vec<ServerEvent>) -> Result<(), ProtoError> {
        self.acker.received(n, out)?;
        while let Some(m) = self.dec.next_message()? {
            if handle_control(&m, &mut self.acker, out)? {
                continue;
            }
            match m.type_id {
                msg_type::AMF0_COMMAND | msg_type::AMF3_COMMAND => self.command(&m, out, events)?,
                _ => {
                    if self.publishing_stream.is_some() {
                        if let Some(media) = to_media(&m)? {
                            events.push(ServerEvent::Media(media));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Convenience for tests and fuzzing: push bytes and process them.
    pub fn feed(&mut self, data: &[u8], out: &mut BytesMut, events: &mut Vec<ServerEvent>) -> Result<(), ProtoError> {
        self.dec.push(data);
        self.process(data.len(), out, events)
    }

    fn command(&mut self, m: &RawMessage, out: &mut BytesMut, events: &mut Vec<ServerEvent>) -> Result<(), ProtoError> {
        let RtmpMessage::Amf0Command { command_name, transaction_id: txn, command_object, additional_arguments: args } =
            decode_amf(m)?
        else {
            return Ok(());
        };
        let arg_str = |i: usize| match args.get(i) {
            Some(Amf0Value::Utf8String(s)) => Some(s.clone()),
            _ => None,
        };
        match command_name.as_str() {
            "connect" => {
                let props = match command_object {
                    Amf0Value::Object(p) => p,
                    _ => return Err(ProtoError::Malformed { what: "connect", detail: "no command object".into() }),
                };
                let app = match props.get("app") {
                    Some(Amf0Value::Utf8String(a)) => a.clone(),
                    _ => return Err(ProtoError::Malformed { what: "connect", detail: "no app".into() }),
                };
                let tc_url = match props.get("tcUrl") {
                    Some(Amf0Value::Utf8String(a)) => Some(a.clone()),
                    _ => None,
                };
                // Names are limited here, before anything else holds or logs them (a 65,000-byte app name
                // used to reach the play refusal's log line whole).
                let (name, query) = app.split_once('?').unwrap_or((&app, ""));
                let refusal = if !super::names::valid_name(name) {
                    Some(format!(
                        "bad app name {} ({} bytes): use 1-{} of A-Z a-z 0-9 - _ . ~",
                        super::names::shown(name),
                        name.len(),
                        super::names::MAX_NAME_LEN
                    ))
                } else if query.len() > super::names::MAX_QUERY_LEN {
                    Some(format!("app query of {} bytes, above {}", query.len(), super::names::MAX_QUERY_LEN))
                } else if tc_url.as_ref().is_some_and(|u| u.len() > super::names::MAX_TC_URL_LEN) {
                    Some(format!("tcUrl above {} bytes", super::names::MAX_TC_URL_LEN))
                } else {
                    None
                };
                if let Some(reason) = refusal {
                    command(
                        out,
                        0,
                        "_error",
                        txn,
                        Amf0Value::Null,
                        vec![obj(&[
                            ("level", s("error")),
                            ("code", s("NetConnection.Connect.Rejected")),
                            ("description", s(&reason)),
                        ])],
                    )?;
                    events.push(ServerEvent::ConnectRefused { reason });
                    return Ok(());
                }
                command(
                    out,
                    0,
                    "_result",
                    txn,
                    obj(&[("fmsVer", s("FMS/3,0,1,123")), ("capabilities", Amf0Value::Number(31.0))]),
                    vec![obj(&[
                        ("level", s("status")),
                        ("code", s("NetConnection.Connect.Success")),
                        ("description", s("Connection succeeded.")),
                        ("objectEncoding", Amf0Value::Number(0.0)),
                    ])],
                )?;
                events.push(ServerEvent::Connected { app, tc_url });
            }
            "createStream" => {
                let id = self.next_stream_id;
                self.next_stream_id = self.next_stream_id.wrapping_add(1).max(1);
                command(out, 0, "_result", txn, Amf0Value::Null, vec![Amf0Value::Number(id as f64)])?;
            }
            // A transaction id of 0 means the client expects no answer.
            "releaseStream" | "FCPublish" | "getStreamLength" if txn != 0.0 => {
                command(out, 0, "_result", txn, Amf0Value::Null, vec![Amf0Value::Undefined])?;
            }
            "publish" => {
                let name =
                    arg_str(0).ok_or(ProtoError::Malformed { what: "publish", detail: "no stream name".into() })?;
                bounded_name("publish", &name)?;
                events.push(ServerEvent::Publish { stream_id: m.stream_id, name });
            }
            "play" => {
                let name = arg_str(0).ok_or(ProtoError::Malformed { what: "play", detail: "no stream name".into() })?;
                bounded_name("play", &name)?;
                events.push(ServerEvent::Play { stream_id: m.stream_id, name });
            }
            "deleteStream" | "closeStream" | "FCUnpublish" => {
                self.publishing_stream = None;
                events.push(ServerEvent::StreamClosed);
            }
            _ => {}
        }
        Ok(())
    }

    /// Accepts a publish: the stream starts taking media.
    pub fn accept_publish(&mut self, stream_id: u32, name: &str, out: &mut BytesMut) -> Result<(), ProtoError> {
        self.publishing_stream = Some(stream_id);
        user_control(out, UserControlEventType::StreamBegin, Some(stream_id), None)?;
        on_status(out, stream_id, "status", "NetStream.Publish.Start", &format!("{name} is now published."))
    }

    /// Accepts a play request; media for `stream_id` follows from the fan-out.
    pub fn accept_play(stream_id: u32, name: &str, out: &mut BytesMut) -> Result<(), ProtoError> {
        user_control(out, UserControlEventType::StreamIsRecorded, Some(stream_id), None).ok();
        user_control(out, UserControlEventType::StreamBegin, Some(stream_id), None)?;
        on_status(out, stream_id, "status", "NetStream.Play.Reset", &format!("Playing and resetting {name}."))?;
        on_status(out, stream_id, "status", "NetStream.Play.Start", &format!("Started playing {name}."))?;
        // No |RtmpSampleAccess: only Flash used it, and ffmpeg's FLV demuxer turns it into a bogus subtitle stream.
        Ok(())
    }

    /// Tells the player the stream ended (publisher gone and grace period over).
    pub fn end_play(stream_id: u32, out: &mut BytesMut) -> Result<(), ProtoError> {
        on_status(out, stream_id, "status", "NetStream.Play.UnpublishNotify", "stream is now unpublished")?;
        user_control(out, UserControlEventType::StreamEof, Some(stream_id), None)
    }
}

/// What a client-side (pulling) session reports.
#[derive(Debug)]
pub enum ClientEvent {
    /// `play` was accepted: media follows.
    Playing,
    Media(Media),
    /// The origin says the publisher went away (it may come back on the same connection).
    Unpublished,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum ClientState {
    Connecting,
    CreatingStream,
    Playing,
}

/// The client side of a pull: connect, createStream, play, then media.
///
/// rml_rtmp's `ClientSession` could do this flow, but it cannot read nginx-rtmp's first chunks
/// (`NoPreviousChunkOnStream`), drops AMF0 data other than onMetaData with lossy re-encoding and has no limits,
/// so the pull uses our chunk decoder with the same message handling as the server side.
pub struct ClientSession {
    dec: ChunkDecoder,
    acker: Acker,
    state: ClientState,
    stream_name: String,
    stream_id: u32,
}

impl ClientSession {
    /// Starts the command flow for `rtmp://host/app/stream_name` (tc_url is that URL without the stream).
    pub fn new(
        limits: ChunkLimits,
        app: &str,
        tc_url: &str,
        stream_name: &str,
        out: &mut BytesMut,
    ) -> Result<Self, ProtoError> {
        send(out, csid::CONTROL, 0, RtmpMessage::SetChunkSize { size: OUT_CHUNK_SIZE as u32 })?;
        command(
            out,
            0,
            "connect",
            1.0,
            obj(&[
                ("app", s(app)),
                ("flashVer", s("LNX 9,0,124,2")),
                ("tcUrl", s(tc_url)),
                ("fpad", Amf0Value::Boolean(false)),
                ("capabilities", Amf0Value::Number(15.0)),
                ("audioCodecs", Amf0Value::Number(4071.0)),
                ("videoCodecs", Amf0Value::Number(252.0)),
                ("videoFunction", Amf0Value::Number(1.0)),
            ]),
            vec![],
        )?;
        Ok(Self {
            dec: ChunkDecoder::new(limits),
            acker: Acker::default(),
            state: ClientState::Connecting,
            stream_name: stream_name.to_string(),
            stream_id: 0,
        })
    }

    pub fn decoder_buffer(&mut self) -> &mut BytesMut {
        self.dec.buffer_mut()
    }

    pub fn feed(&mut self, data: &[u8], out: &mut BytesMut, events: &mut Vec<ClientEvent>) -> Result<(), ProtoError> {
        self.dec.push(data);
        self.process(data.len(), out, events)
    }

    pub fn process(&mut self, n: usize, out: &mut BytesMut, events: &mut Vec<ClientEvent>) -> Result<(), ProtoError> {
        self.acker.received(n, out)?;
        while let Some(m) = self.dec.next_message()? {
            if handle_control(&m, &mut self.acker, out)? {
                continue;
            }
            match m.type_id {
                msg_type::AMF0_COMMAND | msg_type::AMF3_COMMAND => self.command(&m, out, events)?,
                _ if self.state == ClientState::Playing => {
                    if let Some(media) = to_media(&m)? {
                        events.push(ClientEvent::Media(media));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn command(&mut self, m: &RawMessage, out: &mut BytesMut, events: &mut Vec<ClientEvent>) -> Result<(), ProtoError> {
        let RtmpMessage::Amf0Command { command_name, transaction_id: txn, additional_arguments: args, .. } =
            decode_amf(m)?
        else {
            return Ok(());
        };
        let info = |args: &[Amf0Value], key: &str| -> String {
            args.iter()
                .find_map(|a| match a {
                    Amf0Value::Object(p) => match p.get(key) {
                        Some(Amf0Value::Utf8String(c)) => Some(c.clone()),
                        _ => None,
                    },
                    _ => None,
                })
                .unwrap_or_default()
        };
        match (command_name.as_str(), self.state) {
            ("_result", ClientState::Connecting) if txn == 1.0 => {
                send(out, csid::CONTROL, 0, RtmpMessage::WindowAcknowledgement { size: WINDOW_ACK_SIZE })?;
                command(out, 0, "createStream", 2.0, Amf0Value::Null, vec![])?;
                self.state = ClientState::CreatingStream;
            }
            ("_result", ClientState::CreatingStream) if txn == 2.0 => {
                let id = args.iter().find_map(|a| match a {
                    Amf0Value::Number(n) => Some(*n as u32),
                    _ => None,
                });
                self.stream_id =
                    id.ok_or(ProtoError::Malformed { what: "createStream result", detail: "no stream id".into() })?;
                // Start -1000 = live stream (or recorded), as ffmpeg sends for live playback.
                command(
                    out,
                    self.stream_id,
                    "play",
                    0.0,
                    Amf0Value::Null,
                    vec![s(&self.stream_name), Amf0Value::Number(-1000.0)],
                )?;
                // Buffer length on the play stream, as Flash players send; some servers wait for it.
                let mut p = Vec::with_capacity(10);
                p.extend_from_slice(&3u16.to_be_bytes());
                p.extend_from_slice(&self.stream_id.to_be_bytes());
                p.extend_from_slice(&1000u32.to_be_bytes());
                chunk::encode_message(out, csid::CONTROL, 0, msg_type::USER_CONTROL, 0, &p, OUT_CHUNK_SIZE);
                self.state = ClientState::Playing;
            }
            ("_error", _) => {
                return Err(ProtoError::Refused { code: info(&args, "code"), description: info(&args, "description") });
            }
            ("onStatus", _) => {
                let code = info(&args, "code");
                let level = info(&args, "level");
                match code.as_str() {
                    "NetStream.Play.Start" => events.push(ClientEvent::Playing),
                    "NetStream.Play.UnpublishNotify" | "NetStream.Play.Stop" => events.push(ClientEvent::Unpublished),
                    _ if level == "error" || code == "NetStream.Play.StreamNotFound" => {
                        return Err(ProtoError::Refused { code, description: info(&args, "description") })
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deeply_nested_amf_is_refused_without_recursing() {
        let mut p = vec![2, 0, 7];
        p.extend_from_slice(b"connect");
        p.extend_from_slice(&[0, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0]);
        for _ in 0..100_000 {
            p.extend_from_slice(&[3, 0, 1, b'a']);
        }
        let m = RawMessage {
            csid: 3,
            timestamp: 0,
            type_id: msg_type::AMF0_COMMAND,
            stream_id: 0,
            payload: Bytes::from(p),
        };
        assert!(matches!(decode_amf(&m), Err(ProtoError::Amf(_, AmfFault::TooDeep))));
    }

    fn command(p: Vec<u8>) -> RawMessage {
        RawMessage { csid: 3, timestamp: 0, type_id: msg_type::AMF0_COMMAND, stream_id: 0, payload: Bytes::from(p) }
    }

    #[test]
    fn long_strings_and_undefined_are_decoded() {
        // connect, txn 1, { app: <long string "live">, x: undefined }, undefined, a 70,000-byte long string.
        let mut p = vec![2, 0, 7];
        p.extend_from_slice(b"connect");
        p.extend_from_slice(&[0, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0, 3, 0, 3]);
        p.extend_from_slice(b"app");
        p.extend_from_slice(&[0x0c, 0, 0, 0, 4]);
        p.extend_from_slice(b"live");
        p.extend_from_slice(&[0, 1, b'x', 6, 0, 0, 9, 6, 0x0c]);
        p.extend_from_slice(&70_000u32.to_be_bytes());
        p.extend(std::iter::repeat_n(b'y', 70_000));
        match decode_amf(&command(p)).unwrap() {
            RtmpMessage::Amf0Command { command_name, transaction_id, command_object, additional_arguments } => {
                assert_eq!((command_name.as_str(), transaction_id), ("connect", 1.0));
                let Amf0Value::Object(o) = command_object else { panic!("{command_object:?}") };
                assert_eq!(o.get("app"), Some(&Amf0Value::Utf8String("live".into())));
                assert_eq!(o.get("x"), Some(&Amf0Value::Undefined));
                assert_eq!(o.len(), 2);
                assert_eq!(additional_arguments.len(), 2);
                assert_eq!(additional_arguments[0], Amf0Value::Undefined);
                assert_eq!(additional_arguments[1], Amf0Value::Utf8String("y".repeat(70_000)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_amf_is_refused_with_its_reason() {
        let mut p = vec![2, 0, 7];
        p.extend_from_slice(b"connect");
        p.extend_from_slice(&[0, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0]);
        let cases: [(&[u8], AmfFault); 5] = [
            (&[0x0c, 0, 0, 1, 0, b'a'], AmfFault::Truncated),
            (&[0x02, 0, 5, b'a'], AmfFault::Truncated),
            (&[0x0a, 0xff, 0xff, 0xff, 0xff, 5], AmfFault::Truncated),
            (&[0x0b, 0, 0], AmfFault::UnsupportedMarker(0x0b)),
            (&[0x02, 0, 2, 0xff, 0xfe], AmfFault::BadUtf8),
        ];
        for (tail, want) in cases {
            let mut m = p.clone();
            m.extend_from_slice(tail);
            match decode_amf(&command(m)) {
                Err(ProtoError::Amf("command", got)) => assert_eq!(got, want, "{tail:?}"),
                other => panic!("{tail:?}: {other:?}"),
            }
        }
        assert_eq!(
            ProtoError::Amf("command", AmfFault::Truncated).to_string(),
            "bad AMF0 in a command message: truncated (the body ends inside a value)"
        );
    }

    #[test]
    fn command_with_fewer_than_three_values_is_not_a_panic() {
        // rml_rtmp's decoder panics on this (found by the fuzz test); ours treats missing values as absent.
        let mut p = vec![2, 0, 4];
        p.extend_from_slice(b"ping");
        let m = RawMessage {
            csid: 3,
            timestamp: 0,
            type_id: msg_type::AMF0_COMMAND,
            stream_id: 0,
            payload: Bytes::from(p),
        };
        match decode_amf(&m).unwrap() {
            RtmpMessage::Amf0Command { command_name, transaction_id, .. } => {
                assert_eq!((command_name.as_str(), transaction_id), ("ping", 0.0))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_and_server_sessions_talk_to_each_other() {
        let limits = ChunkLimits::default();
        let mut c2s = BytesMut::new();
        let mut client = ClientSession::new(limits, "live", "rtmp://x/live", "test", &mut c2s).unwrap();
        let mut server = ServerSession::new(limits);
        let mut s2c = BytesMut::new();
        ServerSession::start(&mut s2c).unwrap();
        let (mut sev, mut cev) = (Vec::new(), Vec::new());
        for _ in 0..4 {
            let data = c2s.split();
            server.feed(&data, &mut s2c, &mut sev).unwrap();
            for e in sev.drain(..) {
                if let ServerEvent::Play { stream_id, name } = e {
                    assert_eq!(name, "test");
                    ServerSession::accept_play(stream_id, &name, &mut s2c).unwrap();
                    let v = Media {
                        kind: MediaKind::Video,
                        timestamp: 0x0100_0000,
                        payload: Bytes::from_static(&[0x17, 0, 0, 0, 0]),
                    };
                    s2c.extend_from_slice(&v.encode(v.timestamp, stream_id));
                }
            }
            let data = s2c.split();
            client.feed(&data, &mut c2s, &mut cev).unwrap();
        }
        assert!(matches!(cev[0], ClientEvent::Playing));
        match &cev[1] {
            ClientEvent::Media(m) => {
                assert!(m.is_keyframe() && m.is_video_header());
                assert_eq!(m.timestamp, 0x0100_0000);
            }
            e => panic!("unexpected {e:?}"),
        }
    }
}
