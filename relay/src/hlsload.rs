//! An HLS / Low-Latency HLS player load generator: many keep-alive HTTP/1.1 clients in one process that fetch
//! playlists, init sections, segments and parts as players do, with per-request-type counts, bytes, latencies and
//! errors, and how long blocking playlist reloads are answered after the part they wait for appears.
//!
//! Plain clients reload the playlist every target duration (half of it when nothing changed, RFC 8216 6.3.4) and
//! fetch each new `#EXTINF` segment once, plus the `#EXT-X-MAP` init section once. LL clients (when the playlist
//! says `CAN-BLOCK-RELOAD=YES` and lists parts) ask for the next part with `_HLS_msn`/`_HLS_part` (RFC 8216bis
//! 6.2.5.2) and fetch each new `#EXT-X-PART` once; they do not fetch preload hints ahead (one connection per client,
//! and a hinted fetch would block it).
//!
//! Part availability: one observer, on its own thread and runtime (so the clients' load does not delay it), polls the
//! non-blocking playlist every few milliseconds and records for each part the send time of the last poll that did
//! not list it (lower bound) and the receive time of the first that did (upper bound). A blocking reload's delay is
//! its answer time minus max(lower bound, its own send time): an upper bound of the server's delay, too high by at
//! most the observer's resolution (poll interval + one playlist round trip), which the summary states. The
//! server's `Date` header has one-second resolution and no server sends an availability time, hence the observer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where to play from: `http://HOST:PORT/PATH/index.m3u8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlsUrl {
    pub host: String,
    pub port: u16,
    /// The playlist's path, e.g. `/live/bench/index.m3u8`.
    pub path: String,
}

/// Why a URL, a playlist or a response was not understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HlsError {
    #[error("bad URL {0:?}: expected http://HOST:PORT/PATH")]
    BadUrl(String),
    #[error("not a playlist: the first line is not #EXTM3U")]
    NotM3u8,
    #[error("playlist line {line}: {reason}")]
    BadLine { line: usize, reason: String },
    #[error("playlist without #EXT-X-TARGETDURATION")]
    NoTargetDuration,
    #[error("malformed HTTP response: {0}")]
    BadResponse(String),
}

impl HlsUrl {
    pub fn parse(url: &str) -> Result<Self, HlsError> {
        let bad = || HlsError::BadUrl(url.to_string());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = rest.find('/').map(|i| rest.split_at(i)).ok_or_else(bad)?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Self { host: host.to_string(), port, path: path.to_string() })
    }

    /// The request target of `uri` as the playlist at this URL lists it: relative to the playlist's directory, an
    /// absolute path, or an absolute `http://` URL (same server assumed; only its path is used).
    pub fn resolve(&self, uri: &str) -> String {
        if let Some(rest) = uri.strip_prefix("http://").or_else(|| uri.strip_prefix("https://")) {
            return rest.find('/').map(|i| rest[i..].to_string()).unwrap_or_else(|| "/".to_string());
        }
        if uri.starts_with('/') {
            return uri.to_string();
        }
        let base = self.path.split('?').next().unwrap_or_default();
        let dir = &base[..base.rfind('/').map(|i| i + 1).unwrap_or(0)];
        format!("{dir}{uri}")
    }
}

/// A byte range of a resource: `length` bytes from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub length: u64,
    pub offset: u64,
}

/// A complete media segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    pub uri: String,
    pub duration: f64,
    pub byterange: Option<ByteRange>,
}

/// A partial segment (`#EXT-X-PART`) of the parent segment `msn`, `index` counted from 0 within it.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub msn: u64,
    pub index: u32,
    pub uri: String,
    pub duration: f64,
    pub independent: bool,
    pub byterange: Option<ByteRange>,
}

/// `#EXT-X-PRELOAD-HINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreloadHint {
    /// `PART` or `MAP`.
    pub kind: String,
    pub uri: String,
}

/// The parts of a media playlist a player acts on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Playlist {
    pub target_duration: f64,
    pub media_sequence: u64,
    /// `#EXT-X-MAP` URI (the fMP4 init section); the last one listed.
    pub map: Option<String>,
    pub segments: Vec<Segment>,
    /// Every listed part, in order, with its parent's sequence number.
    pub parts: Vec<Part>,
    pub part_target: Option<f64>,
    pub preload_hint: Option<PreloadHint>,
    pub can_block_reload: bool,
    pub ended: bool,
}

/// The attributes of a tag's attribute list (`A=1,B="x,y"`), quotes removed.
fn attributes(list: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once('=') else { break };
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.split_once('"') {
                Some((v, n)) => (v, n),
                None => (q, ""),
            }
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v, n),
                None => (after, ""),
            }
        };
        out.insert(name.trim().to_string(), value.to_string());
        rest = next.trim_start_matches(',').trim_start();
    }
    out
}

/// `LEN[@OFFSET]`; without an offset the range follows the previous one of the same URI (`prev_end`).
fn byterange(v: &str, prev_end: Option<u64>) -> Option<ByteRange> {
    let (len, off) = match v.split_once('@') {
        Some((l, o)) => (l.parse().ok()?, o.parse().ok()?),
        None => (v.parse().ok()?, prev_end?),
    };
    Some(ByteRange { length: len, offset: off })
}

impl Playlist {
    /// Parses a media playlist (RFC 8216 and 8216bis: segments, parts, map, preload hint, server control).
    pub fn parse(text: &str) -> Result<Self, HlsError> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
        if lines.next().map(|(_, l)| l) != Some("#EXTM3U") {
            return Err(HlsError::NotM3u8);
        }
        let mut p = Playlist::default();
        let mut target = None;
        let mut pending: Option<(f64, Option<&str>)> = None;
        // End of the last byte range per URI, for ranges listed without an offset.
        let mut range_end: HashMap<String, u64> = HashMap::new();
        let num = |line: usize, v: &str| -> Result<f64, HlsError> {
            v.trim().parse::<f64>().map_err(|_| HlsError::BadLine { line, reason: format!("{v:?} is not a number") })
        };
        for (line, l) in lines {
            if l.is_empty() {
                continue;
            }
            let Some(tag) = l.strip_prefix('#') else {
                // A URI line: the segment the preceding #EXTINF described.
                let (duration, range) =
                    pending.take().ok_or_else(|| HlsError::BadLine { line, reason: "URI without #EXTINF".into() })?;
                let byterange = match range {
                    Some(r) => Some(
                        byterange(r, range_end.get(l).copied())
                            .ok_or_else(|| HlsError::BadLine { line, reason: format!("bad byte range {r:?}") })?,
                    ),
                    None => None,
                };
                if let Some(r) = byterange {
                    range_end.insert(l.to_string(), r.offset + r.length);
                }
                let msn = p.media_sequence + p.segments.len() as u64;
                p.segments.push(Segment { msn, uri: l.to_string(), duration, byterange });
                continue;
            };
            let (name, value) = tag.split_once(':').unwrap_or((tag, ""));
            match name {
                "EXT-X-TARGETDURATION" => target = Some(num(line, value)?),
                "EXT-X-MEDIA-SEQUENCE" => {
                    p.media_sequence = value.trim().parse().map_err(|_| HlsError::BadLine {
                        line,
                        reason: format!("media sequence {value:?} is not a number"),
                    })?
                }
                "EXTINF" => {
                    let d = value.split(',').next().unwrap_or_default();
                    pending = Some((num(line, d)?, pending.and_then(|(_, r)| r)));
                }
                "EXT-X-BYTERANGE" => {
                    let d = pending.map(|(d, _)| d).unwrap_or(0.0);
                    pending = Some((d, Some(value)));
                }
                "EXT-X-MAP" => {
                    let a = attributes(value);
                    let uri = a
                        .get("URI")
                        .ok_or_else(|| HlsError::BadLine { line, reason: "#EXT-X-MAP without URI".into() })?;
                    p.map = Some(uri.clone());
                }
                "EXT-X-PART" => {
                    let a = attributes(value);
                    let uri = a
                        .get("URI")
                        .ok_or_else(|| HlsError::BadLine { line, reason: "#EXT-X-PART without URI".into() })?
                        .clone();
                    let duration = num(line, a.get("DURATION").map(String::as_str).unwrap_or("x"))?;
                    let msn = p.media_sequence + p.segments.len() as u64;
                    let index = p.parts.iter().rev().take_while(|q| q.msn == msn).count() as u32;
                    let byterange = match a.get("BYTERANGE") {
                        Some(r) => {
                            let b = byterange(r, range_end.get(&uri).copied())
                                .ok_or_else(|| HlsError::BadLine { line, reason: format!("bad byte range {r:?}") })?;
                            range_end.insert(uri.clone(), b.offset + b.length);
                            Some(b)
                        }
                        None => None,
                    };
                    let independent = a.get("INDEPENDENT").is_some_and(|v| v == "YES");
                    p.parts.push(Part { msn, index, uri, duration, independent, byterange });
                }
                "EXT-X-PART-INF" => {
                    let a = attributes(value);
                    p.part_target = a.get("PART-TARGET").map(|v| num(line, v)).transpose()?;
                }
                "EXT-X-SERVER-CONTROL" => {
                    p.can_block_reload = attributes(value).get("CAN-BLOCK-RELOAD").is_some_and(|v| v == "YES");
                }
                "EXT-X-PRELOAD-HINT" => {
                    let a = attributes(value);
                    if let (Some(kind), Some(uri)) = (a.get("TYPE"), a.get("URI")) {
                        p.preload_hint = Some(PreloadHint { kind: kind.clone(), uri: uri.clone() });
                    }
                }
                "EXT-X-ENDLIST" => p.ended = true,
                _ => {}
            }
        }
        p.target_duration = target.ok_or(HlsError::NoTargetDuration)?;
        Ok(p)
    }

    /// Sequence number the next segment will have (the one the trailing parts belong to).
    pub fn next_msn(&self) -> u64 {
        self.media_sequence + self.segments.len() as u64
    }

    /// `(_HLS_msn, _HLS_part)` of the part after the last one listed (RFC 8216bis 6.2.5.2): the next part of the
    /// segment in progress, or part 0 of the next segment. A part index past a segment's last part is, per the
    /// RFC, the next segment's part 0, so this needs no knowledge of how many parts a segment will have.
    pub fn next_part(&self) -> (u64, u32) {
        let msn = self.next_msn();
        (msn, self.parts.iter().filter(|q| q.msn == msn).count() as u32)
    }

    /// True if the playlist lists part `index` of segment `msn`.
    pub fn has_part(&self, msn: u64, index: u32) -> bool {
        self.parts.iter().any(|q| q.msn == msn && q.index == index)
    }

    /// The part a blocking reload for `(msn, part)` waited for, as this answer to it shows: that part, or (when
    /// `part` is past segment `msn`'s last part) part 0 of the next segment; None if the answer lists neither
    /// (the server answered before the part existed).
    pub fn awaited(&self, msn: u64, part: u32) -> Option<(u64, u32)> {
        if self.has_part(msn, part) {
            return Some((msn, part));
        }
        let complete = self.segments.iter().any(|s| s.msn == msn);
        (complete && self.has_part(msn + 1, 0)).then_some((msn + 1, 0))
    }
}

/// What a request fetched, for the per-type figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A non-blocking playlist fetch (plain clients; an LL client's first one).
    Playlist,
    /// An LL blocking reload (`_HLS_msn`/`_HLS_part`); its latency includes the wait for the part.
    Blocking,
    Init,
    Segment,
    Part,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Playlist, Kind::Blocking, Kind::Init, Kind::Segment, Kind::Part];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Playlist => "playlist",
            Kind::Blocking => "blocking reload",
            Kind::Init => "init",
            Kind::Segment => "segment",
            Kind::Part => "part",
        }
    }
}

/// Counters of one request type.
#[derive(Default)]
pub struct KindStats {
    pub count: AtomicU64,
    pub bytes: AtomicU64,
    /// Answers with a status outside 2xx.
    pub non_2xx: AtomicU64,
    /// Responses or playlists that did not parse.
    pub parse: AtomicU64,
    /// Connect, read or write failures and timeouts.
    pub conn: AtomicU64,
    /// Request sent to last body byte read, microseconds, successful requests only.
    latency_us: Mutex<Vec<u32>>,
}

/// A blocking reload, kept to be matched with the observer's record of its part.
#[derive(Debug, Clone, Copy)]
pub struct Reload {
    pub part: (u64, u32),
    pub sent: Instant,
    pub answered: Instant,
}

/// When the observer first saw a part: after `lo` (a poll sent then did not list it; None if the observer's first
/// poll already listed it) and by `hi` (a poll answered then listed it).
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub lo: Option<Instant>,
    pub hi: Instant,
}

/// Live counters of a load run. Request figures are recorded only while `recording` is set (the bench's window);
/// client start-up counters always.
#[derive(Default)]
pub struct HlsStats {
    pub recording: AtomicBool,
    kinds: [KindStats; 5],
    /// Clients that got their first playlist.
    pub started: AtomicUsize,
    /// LL clients whose server offered blocking reloads and parts (the others play as plain clients).
    pub ll_active: AtomicUsize,
    /// Blocking reloads answered with a playlist that lists neither the awaited part nor the next segment's first.
    pub early: AtomicU64,
    reloads: Mutex<Vec<Reload>>,
    seen: Mutex<HashMap<(u64, u32), Seen>>,
    pub observer_polls: AtomicU64,
    pub observer_errors: AtomicU64,
}

/// The figures of one request type over the recorded window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KindSummary {
    pub kind: Kind,
    pub count: u64,
    pub bytes: u64,
    pub non_2xx: u64,
    pub parse: u64,
    pub conn: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// How long blocking reloads were answered after their part appeared (see the module's head for the method).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DelaySummary {
    /// Reloads matched with the observer's record of their part.
    pub matched: u64,
    /// Reloads sent after the observer had already seen their part (answered at once; not a wait).
    pub not_blocked: u64,
    /// Reloads whose part the observer never saw with a lower bound (listed at its first poll, or missed).
    pub unmatched: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Median of the observer's uncertainty (hi - max(lo, sent)) over the matched reloads.
    pub resolution_ms: f64,
    /// Per part, the delay of the first client answered (the server's reaction before the burst of answers to
    /// every waiting client queues on the server's and the load generator's core): median and p99 over parts.
    pub first_p50_ms: f64,
    pub first_p99_ms: f64,
    /// Per part, the time from the first to the last client answered (the burst's length), median over parts.
    pub spread_p50_ms: f64,
}

/// The `p` quantile (0..=1) of `v`, sorted in place; NaN when empty.
pub fn quantile<T: Copy + Ord + Into<f64>>(v: &mut [T], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize].into()
}

/// Delays of `reloads` against the observer's `seen` records (pure, for the tests).
pub fn reload_delays(reloads: &[Reload], seen: &HashMap<(u64, u32), Seen>) -> DelaySummary {
    let mut s = DelaySummary::default();
    let (mut delays, mut res) = (Vec::new(), Vec::new());
    // Per part: the smallest delay and the first and last answer.
    let mut per_part: HashMap<(u64, u32), (u32, Instant, Instant)> = HashMap::new();
    for r in reloads {
        let Some(Seen { lo: Some(lo), hi }) = seen.get(&r.part).copied() else {
            s.unmatched += 1;
            continue;
        };
        if r.sent >= hi {
            s.not_blocked += 1;
            continue;
        }
        let from = lo.max(r.sent);
        // Micros; an answer before the lower bound cannot happen on one clock, but saturate rather than wrap.
        let d = r.answered.saturating_duration_since(from).as_micros() as u32;
        delays.push(d);
        res.push(hi.saturating_duration_since(from).as_micros() as u32);
        let e = per_part.entry(r.part).or_insert((d, r.answered, r.answered));
        *e = (e.0.min(d), e.1.min(r.answered), e.2.max(r.answered));
        s.matched += 1;
    }
    let mut first: Vec<u32> = per_part.values().map(|e| e.0).collect();
    let mut spread: Vec<u32> =
        per_part.values().map(|e| e.2.saturating_duration_since(e.1).as_micros() as u32).collect();
    s.first_p50_ms = quantile(&mut first, 0.5) / 1000.0;
    s.first_p99_ms = quantile(&mut first, 0.99) / 1000.0;
    s.spread_p50_ms = quantile(&mut spread, 0.5) / 1000.0;
    s.p50_ms = quantile(&mut delays, 0.5) / 1000.0;
    s.p99_ms = quantile(&mut delays, 0.99) / 1000.0;
    s.max_ms = quantile(&mut delays, 1.0) / 1000.0;
    s.resolution_ms = quantile(&mut res, 0.5) / 1000.0;
    s
}

impl HlsStats {
    fn kind(&self, k: Kind) -> &KindStats {
        &self.kinds[Kind::ALL.iter().position(|x| *x == k).unwrap_or(0)]
    }

    fn on(&self) -> bool {
        self.recording.load(Ordering::Relaxed)
    }

    fn ok(&self, k: Kind, bytes: u64, took: Duration) {
        if self.on() {
            let s = self.kind(k);
            s.count.fetch_add(1, Ordering::Relaxed);
            s.bytes.fetch_add(bytes, Ordering::Relaxed);
            s.latency_us.lock().unwrap_or_else(|e| e.into_inner()).push(took.as_micros().min(u32::MAX as u128) as u32);
        }
    }

    fn failed(&self, k: Kind, e: &FetchError) {
        if self.on() {
            let s = self.kind(k);
            s.count.fetch_add(1, Ordering::Relaxed);
            match e {
                FetchError::Status(_) => &s.non_2xx,
                FetchError::Parse(_) => &s.parse,
                FetchError::Io(_) => &s.conn,
            }
            .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Per request type figures of the recorded window.
    pub fn summary(&self) -> Vec<KindSummary> {
        Kind::ALL
            .iter()
            .map(|&kind| {
                let s = self.kind(kind);
                let mut lat = s.latency_us.lock().unwrap_or_else(|e| e.into_inner()).clone();
                KindSummary {
                    kind,
                    count: s.count.load(Ordering::Relaxed),
                    bytes: s.bytes.load(Ordering::Relaxed),
                    non_2xx: s.non_2xx.load(Ordering::Relaxed),
                    parse: s.parse.load(Ordering::Relaxed),
                    conn: s.conn.load(Ordering::Relaxed),
                    p50_ms: quantile(&mut lat, 0.5) / 1000.0,
                    p99_ms: quantile(&mut lat, 0.99) / 1000.0,
                }
            })
            .collect()
    }

    /// Blocking-reload delays after their part appeared, over the recorded window.
    pub fn delays(&self) -> DelaySummary {
        let reloads = self.reloads.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        reload_delays(&reloads, &seen)
    }
}

/// Why a request failed, by the classes the figures count.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("{0}")]
    Parse(HlsError),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Largest response head accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Largest playlist body kept (bodies of media are counted and dropped).
const MAX_PLAYLIST: usize = 1024 * 1024;

/// The parts of a response head that frame the body.
#[derive(Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub head_len: usize,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub close: bool,
}

/// Parses a response head from the start of `buf`: `Ok(None)` while incomplete.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, HlsError> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= MAX_RESPONSE_HEAD => {
            Err(HlsError::BadResponse("response head too large".into()))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(head_len)) => {
            let mut h = ResponseHead {
                status: resp.code.unwrap_or(0),
                head_len,
                content_length: None,
                chunked: false,
                close: resp.version == Some(0),
            };
            for x in resp.headers.iter() {
                let v = std::str::from_utf8(x.value).unwrap_or_default().trim();
                if x.name.eq_ignore_ascii_case("content-length") {
                    h.content_length =
                        Some(v.parse().map_err(|_| HlsError::BadResponse(format!("bad Content-Length {v:?}")))?);
                } else if x.name.eq_ignore_ascii_case("transfer-encoding") {
                    h.chunked = v.to_ascii_lowercase().contains("chunked");
                } else if x.name.eq_ignore_ascii_case("connection") {
                    let v = v.to_ascii_lowercase();
                    h.close = v.contains("close") || (h.close && !v.contains("keep-alive"));
                }
            }
            Ok(Some(h))
        }
        Err(e) => Err(HlsError::BadResponse(e.to_string())),
    }
}

/// One keep-alive HTTP/1.1 connection that reconnects when the server closed it or a request failed.
pub struct Conn {
    host: String,
    port: u16,
    sock: Option<TcpStream>,
    buf: BytesMut,
    /// Connections opened, the first included.
    pub connects: u64,
}

impl Conn {
    pub fn new(url: &HlsUrl) -> Self {
        Self {
            host: url.host.clone(),
            port: url.port,
            sock: None,
            buf: BytesMut::with_capacity(64 * 1024),
            connects: 0,
        }
    }

    /// `GET target`; the body goes to `keep` (cleared first) if given, else is counted and dropped. Returns the
    /// body's length. A failed request drops the connection (the next one reconnects).
    pub async fn get(
        &mut self,
        target: &str,
        range: Option<ByteRange>,
        keep: Option<&mut Vec<u8>>,
        timeout: Duration,
    ) -> Result<u64, FetchError> {
        let r = tokio::time::timeout(timeout, self.get_inner(target, range, keep)).await;
        let r = r.unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()));
        if r.is_err() {
            self.sock = None;
            self.buf.clear();
        }
        r
    }

    async fn get_inner(
        &mut self,
        target: &str,
        range: Option<ByteRange>,
        mut keep: Option<&mut Vec<u8>>,
    ) -> Result<u64, FetchError> {
        if self.sock.is_none() {
            let s = TcpStream::connect((self.host.as_str(), self.port)).await?;
            s.set_nodelay(true)?;
            self.sock = Some(s);
            self.buf.clear();
            self.connects += 1;
        }
        let sock = self.sock.as_mut().expect("connected above");
        let range = range
            .map(|r| format!("Range: bytes={}-{}\r\n", r.offset, r.offset + r.length.saturating_sub(1)))
            .unwrap_or_default();
        let req = format!("GET {target} HTTP/1.1\r\nHost: {}:{}\r\n{range}\r\n", self.host, self.port);
        sock.write_all(req.as_bytes()).await?;
        let head = loop {
            if let Some(h) = parse_response_head(&self.buf).map_err(FetchError::Parse)? {
                break h;
            }
            if sock.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        };
        self.buf.advance(head.head_len);
        if let Some(k) = keep.as_deref_mut() {
            k.clear();
        }
        let mut total = 0u64;
        // Moves up to `n` buffered bytes into the kept body (if any), counting them.
        let mut take = |buf: &mut BytesMut, n: usize, keep: &mut Option<&mut Vec<u8>>| -> Result<(), FetchError> {
            if let Some(k) = keep.as_deref_mut() {
                if k.len() + n > MAX_PLAYLIST {
                    return Err(FetchError::Parse(HlsError::BadResponse("playlist body too large".into())));
                }
                k.extend_from_slice(&buf[..n]);
            }
            buf.advance(n);
            total += n as u64;
            Ok(())
        };
        if head.chunked {
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    if self.buf.len() > 1024 {
                        return Err(FetchError::Parse(HlsError::BadResponse("chunk size line too long".into())));
                    }
                    if sock.read_buf(&mut self.buf).await? == 0 {
                        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
                    }
                };
                let size_text = std::str::from_utf8(&self.buf[..line_end]).unwrap_or_default();
                let size = u64::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16)
                    .map_err(|_| FetchError::Parse(HlsError::BadResponse(format!("bad chunk size {size_text:?}"))))?;
                self.buf.advance(line_end + 2);
                // The chunk, then its CRLF (after the last chunk: the empty trailer's CRLF).
                let mut left = size;
                while left > 0 {
                    if self.buf.is_empty() && sock.read_buf(&mut self.buf).await? == 0 {
                        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
                    }
                    let n = (self.buf.len() as u64).min(left) as usize;
                    take(&mut self.buf, n, &mut keep)?;
                    left -= n as u64;
                }
                while self.buf.len() < 2 {
                    if sock.read_buf(&mut self.buf).await? == 0 {
                        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
                    }
                }
                self.buf.advance(2);
                if size == 0 {
                    break;
                }
            }
        } else {
            let length = head.content_length;
            let mut left = length.unwrap_or(u64::MAX);
            while left > 0 {
                if self.buf.is_empty() {
                    if self.buf.capacity() < 64 * 1024 {
                        self.buf.reserve(64 * 1024);
                    }
                    if sock.read_buf(&mut self.buf).await? == 0 {
                        if length.is_none() {
                            break;
                        }
                        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
                    }
                }
                let n = (self.buf.len() as u64).min(left) as usize;
                take(&mut self.buf, n, &mut keep)?;
                left -= n as u64;
            }
        }
        if head.close || (head.content_length.is_none() && !head.chunked) {
            self.sock = None;
            self.buf.clear();
        }
        if !(200..300).contains(&head.status) {
            return Err(FetchError::Status(head.status));
        }
        Ok(total)
    }
}

/// How a load run is shaped.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub url: HlsUrl,
    pub clients: usize,
    /// Fraction of clients that play LL-HLS (0..=1), spread evenly over the client list.
    pub ll_share: f64,
    pub connect_per_sec: u32,
    /// The observer's poll interval; None runs no observer.
    pub observer_poll: Option<Duration>,
}

impl LoadConfig {
    /// Whether client `i` plays LL-HLS: every 1/ll_share-th client, so any prefix of the list has the share.
    pub fn is_ll(&self, i: usize) -> bool {
        let s = self.ll_share.clamp(0.0, 1.0);
        ((i + 1) as f64 * s).floor() > (i as f64 * s).floor()
    }

    /// LL clients among all clients.
    pub fn ll_count(&self) -> usize {
        (0..self.clients).filter(|&i| self.is_ll(i)).count()
    }
}

/// Time a request may take before it counts as a connection error (blocking reloads: see `blocking_timeout`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before a client retries after a failed playlist fetch, so a failing server is not hammered.
const RETRY: Duration = Duration::from_millis(500);

/// Runs the clients (and the observer, if configured) until `stop` fires.
pub async fn run(cfg: LoadConfig, stats: Arc<HlsStats>, stop: svc::Stopping) {
    let observer = cfg.observer_poll.map(|poll| {
        let (url, stats, stop) = (cfg.url.clone(), stats.clone(), stop.clone());
        std::thread::spawn(move || observe(url, poll, stats, stop))
    });
    let mut tasks = tokio::task::JoinSet::new();
    let gap = Duration::from_secs_f64(1.0 / cfg.connect_per_sec.max(1) as f64);
    for i in 0..cfg.clients {
        if stop.is_stopping() {
            break;
        }
        let (url, stats, mut stop2, ll) = (cfg.url.clone(), stats.clone(), stop.clone(), cfg.is_ll(i));
        tasks.spawn(async move {
            tokio::select! {
                _ = client(url, ll, stats) => {}
                _ = stop2.wait() => {}
            }
        });
        tokio::time::sleep(gap).await;
    }
    while tasks.join_next().await.is_some() {}
    if let Some(h) = observer {
        let _ = h.join();
    }
}

/// Fetches and parses a playlist, recording it under `kind`.
async fn fetch_playlist(
    conn: &mut Conn,
    target: &str,
    kind: Kind,
    timeout: Duration,
    body: &mut Vec<u8>,
    stats: &HlsStats,
) -> Result<Playlist, FetchError> {
    let t0 = Instant::now();
    let r = async {
        let n = conn.get(target, None, Some(body), timeout).await?;
        let text = std::str::from_utf8(body)
            .map_err(|_| FetchError::Parse(HlsError::BadResponse("playlist is not UTF-8".into())))?;
        Ok((n, Playlist::parse(text).map_err(FetchError::Parse)?))
    }
    .await;
    match r {
        Ok((n, p)) => {
            stats.ok(kind, n, t0.elapsed());
            Ok(p)
        }
        Err(e) => {
            stats.failed(kind, &e);
            Err(e)
        }
    }
}

/// Fetches a media resource once, recording it under `kind`.
async fn fetch_media(conn: &mut Conn, target: &str, range: Option<ByteRange>, kind: Kind, stats: &HlsStats) {
    let t0 = Instant::now();
    match conn.get(target, range, None, REQUEST_TIMEOUT).await {
        Ok(n) => stats.ok(kind, n, t0.elapsed()),
        Err(e) => stats.failed(kind, &e),
    }
}

/// A blocking reload may wait up to about three target durations (RFC 8216bis 6.2.5.2); longer is an error.
fn blocking_timeout(p: &Playlist) -> Duration {
    Duration::from_secs_f64(p.target_duration * 3.0 + 1.0)
}

async fn client(url: HlsUrl, ll: bool, stats: Arc<HlsStats>) {
    let mut conn = Conn::new(&url);
    let mut body = Vec::with_capacity(8 * 1024);
    let mut started = false;
    let mut init_done = false;
    // Highest segment fetched (plain) and part fetched (LL).
    let mut last_seg: Option<u64> = None;
    let mut last_part: Option<(u64, u32)> = None;
    let mut blocking: Option<Playlist> = None;
    loop {
        if let Some(pl) = blocking.take() {
            // LL: ask for the next part, then fetch the parts the answer lists that are new.
            let (msn, part) = pl.next_part();
            let target = format!("{}?_HLS_msn={msn}&_HLS_part={part}", url.path);
            let sent = Instant::now();
            match fetch_playlist(&mut conn, &target, Kind::Blocking, blocking_timeout(&pl), &mut body, &stats).await {
                Ok(next) => {
                    let answered = Instant::now();
                    match next.awaited(msn, part) {
                        Some(awaited) if stats.on() => stats
                            .reloads
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(Reload { part: awaited, sent, answered }),
                        Some(_) => {}
                        None => {
                            if stats.on() {
                                stats.early.fetch_add(1, Ordering::Relaxed);
                            }
                            // Not a wait: pause a part's length so a server that never blocks is not spun on.
                            let d = next.part_target.unwrap_or(next.target_duration / 6.0);
                            tokio::time::sleep(Duration::from_secs_f64(d.max(0.01))).await;
                        }
                    }
                    let after = last_part;
                    for q in next.parts.iter().filter(|q| after.is_none_or(|l| (q.msn, q.index) > l)) {
                        fetch_media(&mut conn, &url.resolve(&q.uri), q.byterange, Kind::Part, &stats).await;
                        last_part = Some((q.msn, q.index));
                    }
                    blocking = Some(next);
                }
                Err(_) => {
                    tokio::time::sleep(RETRY).await;
                    blocking = Some(pl);
                }
            }
            continue;
        }
        let t0 = Instant::now();
        let pl = match fetch_playlist(&mut conn, &url.path, Kind::Playlist, REQUEST_TIMEOUT, &mut body, &stats).await {
            Ok(p) => p,
            Err(_) => {
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        if !started {
            started = true;
            stats.started.fetch_add(1, Ordering::Relaxed);
        }
        if !init_done {
            if let Some(map) = &pl.map {
                fetch_media(&mut conn, &url.resolve(map), None, Kind::Init, &stats).await;
            }
            init_done = true;
        }
        if ll && pl.can_block_reload && !pl.parts.is_empty() {
            // From here on blocking reloads; start at the live edge (no backlog).
            stats.ll_active.fetch_add(1, Ordering::Relaxed);
            last_part = pl.parts.last().map(|q| (q.msn, q.index));
            blocking = Some(pl);
            continue;
        }
        // Plain: each new segment once; a new client starts with the newest segment only.
        let first_new = match last_seg {
            Some(l) => l + 1,
            None => pl.segments.last().map(|s| s.msn).unwrap_or(0),
        };
        let mut changed = false;
        for s in pl.segments.iter().filter(|s| s.msn >= first_new) {
            fetch_media(&mut conn, &url.resolve(&s.uri), s.byterange, Kind::Segment, &stats).await;
            last_seg = Some(s.msn);
            changed = true;
        }
        let td = Duration::from_secs_f64(pl.target_duration.max(0.1));
        tokio::time::sleep_until((t0 + if changed { td } else { td / 2 }).into()).await;
    }
}

/// The observer: polls the non-blocking playlist every `poll` on its own thread and runtime, recording when each
/// part first appeared (see the module's head).
fn observe(url: HlsUrl, poll: Duration, stats: Arc<HlsStats>, mut stop: svc::Stopping) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        stats.observer_errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    rt.block_on(async move {
        let mut conn = Conn::new(&url);
        let mut body = Vec::new();
        let mut prev_sent: Option<Instant> = None;
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait() => return,
            }
            let sent = Instant::now();
            let r = conn.get(&url.path, None, Some(&mut body), REQUEST_TIMEOUT).await;
            let hi = Instant::now();
            let pl = r.ok().and_then(|_| Playlist::parse(std::str::from_utf8(&body).ok()?).ok());
            let Some(pl) = pl else {
                stats.observer_errors.fetch_add(1, Ordering::Relaxed);
                // A failed poll says nothing about what existed: the next lower bound stays the last good poll's.
                continue;
            };
            stats.observer_polls.fetch_add(1, Ordering::Relaxed);
            let mut seen = stats.seen.lock().unwrap_or_else(|e| e.into_inner());
            for q in &pl.parts {
                seen.entry((q.msn, q.index)).or_insert(Seen { lo: prev_sent, hi });
            }
            // Keep about a minute of parts: enough for any reload of the window still to be matched.
            if seen.len() > 4096 {
                let keep_from = pl.next_msn().saturating_sub(60);
                seen.retain(|k, _| k.0 >= keep_from);
            }
            drop(seen);
            prev_sent = Some(sent);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN_TS: &str = "#EXTM3U
#EXT-X-VERSION:3
#EXT-X-MEDIA-SEQUENCE:12
#EXT-X-TARGETDURATION:2
#EXTINF:2.000,
bench-12.ts
#EXTINF:2.000,
bench-13.ts
#EXTINF:1.967,
bench-14.ts
";

    const LL: &str = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0,CAN-SKIP-UNTIL=12.0
#EXT-X-PART-INF:PART-TARGET=0.33334
#EXT-X-MEDIA-SEQUENCE:100
#EXT-X-MAP:URI=\"init.mp4\"
#EXTINF:2.000,
seg100.m4s
#EXT-X-PART:DURATION=0.33334,URI=\"seg101.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33334,URI=\"seg101.1.m4s\"
#EXTINF:0.66668,
seg101.m4s
#EXT-X-PART:DURATION=0.33334,URI=\"seg102.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33334,URI=\"seg102.1.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg102.2.m4s\"
";

    #[test]
    fn plain_mpegts_playlist() {
        let p = Playlist::parse(PLAIN_TS).unwrap();
        assert_eq!((p.target_duration, p.media_sequence, p.map.as_deref()), (2.0, 12, None));
        let segs: Vec<(u64, &str, f64)> = p.segments.iter().map(|s| (s.msn, s.uri.as_str(), s.duration)).collect();
        assert_eq!(segs, [(12, "bench-12.ts", 2.0), (13, "bench-13.ts", 2.0), (14, "bench-14.ts", 1.967)]);
        assert!(p.parts.is_empty() && !p.can_block_reload && !p.ended && p.preload_hint.is_none());
        assert_eq!((p.next_msn(), p.next_part()), (15, (15, 0)));
        let ended = Playlist::parse(&format!("{PLAIN_TS}#EXT-X-ENDLIST\n")).unwrap();
        assert!(ended.ended);
    }

    #[test]
    fn ll_playlist_with_parts_map_and_hint() {
        let p = Playlist::parse(LL).unwrap();
        assert_eq!((p.target_duration, p.media_sequence, p.map.as_deref()), (2.0, 100, Some("init.mp4")));
        assert!(p.can_block_reload);
        assert_eq!(p.part_target, Some(0.33334));
        let segs: Vec<(u64, &str)> = p.segments.iter().map(|s| (s.msn, s.uri.as_str())).collect();
        assert_eq!(segs, [(100, "seg100.m4s"), (101, "seg101.m4s")]);
        let parts: Vec<(u64, u32, &str, bool)> =
            p.parts.iter().map(|q| (q.msn, q.index, q.uri.as_str(), q.independent)).collect();
        assert_eq!(
            parts,
            [
                (101, 0, "seg101.0.m4s", true),
                (101, 1, "seg101.1.m4s", false),
                (102, 0, "seg102.0.m4s", true),
                (102, 1, "seg102.1.m4s", false)
            ]
        );
        assert_eq!(p.parts[0].duration, 0.33334);
        assert_eq!(p.preload_hint, Some(PreloadHint { kind: "PART".into(), uri: "seg102.2.m4s".into() }));
        // The next part is the third of segment 102 (the one the preload hint names).
        assert_eq!(p.next_part(), (102, 2));
        // An answer to (102, 2) lists that part; an answer to (101, 2) (past 101's last part) lists 102's part 0.
        assert_eq!((p.awaited(102, 1), p.awaited(101, 2), p.awaited(102, 2)), (Some((102, 1)), Some((102, 0)), None));
    }

    #[test]
    fn next_part_after_a_completed_segment() {
        // The segment in progress has no part yet: the next request is its part 0.
        let p = Playlist::parse(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n\
             #EXT-X-PART:DURATION=1.0,URI=\"a.0.m4s\"\n#EXT-X-PART:DURATION=1.0,URI=\"a.1.m4s\"\n#EXTINF:2.0,\na.m4s\n",
        )
        .unwrap();
        assert_eq!((p.parts.len(), p.parts[1].msn, p.parts[1].index), (2, 7, 1));
        assert_eq!(p.next_part(), (8, 0));
    }

    #[test]
    fn byte_ranges_and_attribute_quoting() {
        let p = Playlist::parse(
            "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI=\"init,1.mp4\",BYTERANGE=\"720@0\"\n\
             #EXT-X-PART:DURATION=1.0,URI=\"s0.mp4\",BYTERANGE=\"1000@720\"\n\
             #EXT-X-PART:DURATION=1.0,URI=\"s0.mp4\",BYTERANGE=500\n\
             #EXTINF:2.0,\n#EXT-X-BYTERANGE:1500@720\ns0.mp4\n",
        )
        .unwrap();
        assert_eq!(p.map.as_deref(), Some("init,1.mp4"));
        assert_eq!(p.parts[0].byterange, Some(ByteRange { length: 1000, offset: 720 }));
        assert_eq!(p.parts[1].byterange, Some(ByteRange { length: 500, offset: 1720 }));
        assert_eq!(p.segments[0].byterange, Some(ByteRange { length: 1500, offset: 720 }));
        assert_eq!(p.segments[0].duration, 2.0);
    }

    #[test]
    fn bad_playlists() {
        assert_eq!(Playlist::parse("<html>"), Err(HlsError::NotM3u8));
        assert_eq!(Playlist::parse("#EXTM3U\n#EXTINF:2,\na.ts\n"), Err(HlsError::NoTargetDuration));
        assert_eq!(
            Playlist::parse("#EXTM3U\n#EXT-X-TARGETDURATION:2\na.ts\n"),
            Err(HlsError::BadLine { line: 3, reason: "URI without #EXTINF".into() })
        );
        assert_eq!(
            Playlist::parse("#EXTM3U\n#EXT-X-TARGETDURATION:x\n"),
            Err(HlsError::BadLine { line: 2, reason: "\"x\" is not a number".into() })
        );
        assert!(matches!(
            Playlist::parse("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART:DURATION=1\n"),
            Err(HlsError::BadLine { line: 3, .. })
        ));
    }

    #[test]
    fn urls_and_relative_uris() {
        let u = HlsUrl::parse("http://127.0.0.1:8080/live/cam1/index.m3u8").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("127.0.0.1", 8080, "/live/cam1/index.m3u8"));
        assert_eq!(u.resolve("seg1.m4s"), "/live/cam1/seg1.m4s");
        assert_eq!(u.resolve("p/seg1.m4s?x=1"), "/live/cam1/p/seg1.m4s?x=1");
        assert_eq!(u.resolve("/hls/bench-3.ts"), "/hls/bench-3.ts");
        assert_eq!(u.resolve("http://other:1/a/b.ts"), "/a/b.ts");
        let q = HlsUrl::parse("http://h/a/index.m3u8?s=1").unwrap();
        assert_eq!((q.port, q.resolve("init.mp4")), (80, "/a/init.mp4".to_string()));
        for bad in ["rtmp://h/a", "http://h", "http://:80/a", "http://h:x/a"] {
            assert_eq!(HlsUrl::parse(bad), Err(HlsError::BadUrl(bad.into())), "{bad}");
        }
    }

    #[test]
    fn response_heads() {
        let h = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nbody").unwrap().unwrap();
        assert_eq!(
            h,
            ResponseHead { status: 200, head_len: 39, content_length: Some(12), chunked: false, close: false }
        );
        let h =
            parse_response_head(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!((h.status, h.chunked, h.close, h.content_length), (404, true, true, None));
        let h = parse_response_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n").unwrap().unwrap();
        assert!(!h.close);
        assert_eq!(parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }

    #[test]
    fn ll_share_spreads_evenly() {
        let cfg = |share| LoadConfig {
            url: HlsUrl::parse("http://h:1/a/i.m3u8").unwrap(),
            clients: 10,
            ll_share: share,
            connect_per_sec: 1,
            observer_poll: None,
        };
        let half: Vec<bool> = (0..4).map(|i| cfg(0.5).is_ll(i)).collect();
        assert_eq!(half, [false, true, false, true]);
        assert_eq!((cfg(0.0).ll_count(), cfg(0.5).ll_count(), cfg(0.3).ll_count(), cfg(1.0).ll_count()), (0, 5, 3, 10));
    }

    #[test]
    fn reload_delays_against_the_observer() {
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        let mut seen = HashMap::new();
        seen.insert((1, 0), Seen { lo: Some(ms(100)), hi: ms(106) });
        seen.insert((1, 1), Seen { lo: Some(ms(400)), hi: ms(405) });
        seen.insert((1, 2), Seen { lo: None, hi: ms(5) });
        let reloads = [
            // Sent before the part existed, answered 3 ms after the lower bound.
            Reload { part: (1, 0), sent: ms(50), answered: ms(103) },
            // Sent after the lower bound: measured from its own send.
            Reload { part: (1, 1), sent: ms(402), answered: ms(410) },
            // Sent after the observer had seen the part: not a wait.
            Reload { part: (1, 1), sent: ms(500), answered: ms(501) },
            Reload { part: (1, 2), sent: ms(0), answered: ms(9) },
            Reload { part: (9, 9), sent: ms(0), answered: ms(9) },
        ];
        let d = reload_delays(&reloads, &seen);
        assert_eq!((d.matched, d.not_blocked, d.unmatched), (2, 1, 2));
        assert_eq!((d.p50_ms, d.p99_ms, d.max_ms), (8.0, 8.0, 8.0));
        // Resolutions 6 and 3 ms: the upper of the two middle values.
        assert_eq!(d.resolution_ms, 6.0);
        // One matched reload per part: each is its part's first, and no burst.
        assert_eq!((d.first_p50_ms, d.first_p99_ms, d.spread_p50_ms), (8.0, 8.0, 0.0));
        // Two clients answered 2 and 7 ms after the part appeared: the first 2 ms, the burst 5 ms.
        let two = [
            Reload { part: (1, 0), sent: ms(50), answered: ms(102) },
            Reload { part: (1, 0), sent: ms(60), answered: ms(107) },
        ];
        let d = reload_delays(&two, &seen);
        assert_eq!((d.matched, d.first_p50_ms, d.spread_p50_ms, d.p99_ms), (2, 2.0, 5.0, 7.0));
        assert!(reload_delays(&[], &seen).p50_ms.is_nan());
    }

    /// Parts per segment of the fake LL-HLS server below, and how often it publishes one.
    const FAKE_PARTS: u64 = 4;
    const FAKE_PART_MS: u64 = 40;

    /// The fake server's playlist when `n` parts exist: the last three complete segments with their parts, the
    /// parts of the segment in progress and a preload hint, at a part every 40 ms.
    fn fake_playlist(n: u64) -> String {
        let complete = n / FAKE_PARTS;
        let first = complete.saturating_sub(3);
        let mut p = format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:0.16\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES\n\
             #EXT-X-PART-INF:PART-TARGET=0.04\n#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-MAP:URI=\"init.mp4\"\n"
        );
        let part =
            |p: &mut String, s: u64, i: u64| p.push_str(&format!("#EXT-X-PART:DURATION=0.04,URI=\"s{s}.{i}.m4s\"\n"));
        for s in first..complete {
            (0..FAKE_PARTS).for_each(|i| part(&mut p, s, i));
            p.push_str(&format!("#EXTINF:0.16,\ns{s}.m4s\n"));
        }
        (0..n % FAKE_PARTS).for_each(|i| part(&mut p, complete, i));
        p.push_str(&format!("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s{complete}.{}.m4s\"\n", n % FAKE_PARTS));
        p
    }

    /// One keep-alive connection of the fake server: blocking reloads wait for their part (a part index past a
    /// segment's last is the next segment's part 0); media bodies have fixed sizes (init 100, segment 1000, part
    /// 250 bytes) so the test can check the byte counts.
    async fn fake_conn(mut sock: TcpStream, parts: tokio::sync::watch::Receiver<u64>) {
        let mut buf = BytesMut::new();
        loop {
            let req = loop {
                match crate::wire::http::parse_request(&buf) {
                    Ok(Some(r)) => break r,
                    Ok(None) => {}
                    Err(_) => return,
                }
                if sock.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
            };
            buf.advance(req.head_len);
            let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
            let body = if path.ends_with("index.m3u8") {
                let q: HashMap<&str, u64> = query
                    .split('&')
                    .filter_map(|kv| Some((kv.split_once('=')?.0, kv.split_once('=')?.1.parse().ok()?)))
                    .collect();
                if let (Some(&m), Some(&p)) = (q.get("_HLS_msn"), q.get("_HLS_part")) {
                    let global = m * FAKE_PARTS + p.min(FAKE_PARTS);
                    let mut rx = parts.clone();
                    let _ = tokio::time::timeout(Duration::from_secs(3), rx.wait_for(|&n| global < n)).await;
                }
                fake_playlist(*parts.borrow()).into_bytes()
            } else if path.ends_with("init.mp4") {
                vec![0; 100]
            } else if path.matches('.').count() == 2 {
                vec![0; 250]
            } else {
                vec![0; 1000]
            };
            // One write per response: a head and a body in two would meet Nagle and delayed ACKs (40 ms each).
            let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            out.extend_from_slice(&body);
            if sock.write_all(&out).await.is_err() {
                return;
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plain_and_ll_clients_against_a_fake_ll_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let ticker = tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_millis(FAKE_PART_MS));
            loop {
                t.tick().await;
                tx.send_modify(|n| *n += 1);
            }
        });
        let rx2 = rx.clone();
        let server = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(fake_conn(s, rx2.clone()));
            }
        });
        // Two complete segments before the clients start (a wait on the fake's own clock, with a deadline).
        let mut ready = rx.clone();
        tokio::time::timeout(Duration::from_secs(5), ready.wait_for(|&n| n >= 2 * FAKE_PARTS)).await.unwrap().unwrap();

        let cfg = LoadConfig {
            url: HlsUrl::parse(&format!("http://127.0.0.1:{port}/live/t/index.m3u8")).unwrap(),
            clients: 4,
            ll_share: 0.5,
            connect_per_sec: 1000,
            observer_poll: Some(Duration::from_millis(2)),
        };
        let stats = Arc::new(HlsStats::default());
        stats.recording.store(true, Ordering::Relaxed);
        let (stop, stopping) = svc::Shutdown::new();
        let run = tokio::spawn(run(cfg, stats.clone(), stopping));
        // About 1.2 s of play: 30 parts, 7 segments; the assertions below hold with wide margins.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        stats.recording.store(false, Ordering::Relaxed);
        stop.trigger();
        tokio::time::timeout(Duration::from_secs(5), run).await.unwrap().unwrap();
        ticker.abort();
        server.abort();

        assert_eq!((stats.started.load(Ordering::Relaxed), stats.ll_active.load(Ordering::Relaxed)), (4, 2));
        let s: HashMap<&str, KindSummary> = stats.summary().into_iter().map(|k| (k.kind.name(), k)).collect();
        for k in s.values() {
            assert_eq!((k.non_2xx, k.parse, k.conn), (0, 0, 0), "{:?}", k.kind);
        }
        // Each client fetched the init section once; media bodies were counted whole.
        assert_eq!((s["init"].count, s["init"].bytes), (4, 400));
        assert!(s["segment"].count >= 6, "{:?}", s["segment"]);
        assert_eq!(s["segment"].bytes, 1000 * s["segment"].count);
        assert!(s["part"].count >= 30, "{:?}", s["part"]);
        assert_eq!(s["part"].bytes, 250 * s["part"].count);
        // Two LL clients, one blocking reload per part each; plain clients reload every target duration.
        assert!(s["blocking reload"].count >= 30, "{:?}", s["blocking reload"]);
        assert!(s["playlist"].count >= 8, "{:?}", s["playlist"]);
        assert_eq!(stats.early.load(Ordering::Relaxed), 0);
        assert!(stats.observer_polls.load(Ordering::Relaxed) >= 100);
        let d = stats.delays();
        assert!(d.matched >= 20, "{d:?}");
        // A loopback fake answers a waiting reload within milliseconds of publishing the part.
        assert!(d.p50_ms < 20.0 && d.resolution_ms < 20.0, "{d:?}");
    }
}
