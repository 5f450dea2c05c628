//! A light RTMP player load generator: many real RTMP play sessions in one process, measuring time to first frame.
//!
//! Each player does the full handshake/connect/createStream/play exchange and decodes every chunk (so a
//! server cannot cheat by having players that never read), but does not decode video.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wire::chunk::ChunkLimits;
use crate::wire::proto::{ClientEvent, ClientSession, MediaKind};
use crate::OriginUrl;

/// Where to play from: `rtmp://host:port/app/key`.
#[derive(Debug, Clone)]
pub struct PlayUrl {
    pub origin: OriginUrl,
    pub key: String,
}

impl PlayUrl {
    pub fn parse(url: &str) -> Result<Self, crate::RelayError> {
        let (base, key) = url
            .rsplit_once('/')
            .ok_or(crate::RelayError::BadOriginUrl { url: url.to_string(), reason: "missing /KEY" })?;
        Ok(Self { origin: OriginUrl::parse(base)?, key: key.to_string() })
    }
}

/// Live counters of a load run, readable while it runs.
#[derive(Default)]
pub struct LoadStats {
    /// Players that received their first video frame.
    pub started: AtomicUsize,
    pub failed: AtomicUsize,
    pub bytes: AtomicU64,
    pub video_frames: AtomicU64,
    /// Time to first video frame, one entry per started player.
    pub ttff: std::sync::Mutex<Vec<Duration>>,
    /// Each started player's delivery lag record.
    pub lags: std::sync::Mutex<Vec<Arc<std::sync::Mutex<Lag>>>>,
}

/// How late a player's video frames arrive relative to their own timeline, from [`LAG_AFTER`] after its first
/// frame on (the GOP burst at the start is not delivery lag). Per frame `arrival_ms - timestamp_ms`; the
/// smallest value is the best case, so `mean - min` is the average lag above the best case: what batching
/// (merged writes) or queueing adds to delivery.
#[derive(Debug, Default, Clone)]
pub struct Lag {
    pub min: i64,
    pub max: i64,
    pub sum: i64,
    pub n: i64,
}

/// Frames before this (after the first frame) are the GOP burst and catching up, not steady-state delivery.
pub const LAG_AFTER: Duration = Duration::from_secs(3);

impl Lag {
    fn add(&mut self, v: i64) {
        if self.n == 0 {
            (self.min, self.max) = (v, v);
        }
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        self.n += 1;
    }

    /// (mean, max) lag above the best case, in ms; None without frames.
    pub fn above_best(&self) -> Option<(f64, f64)> {
        (self.n > 0).then(|| (self.sum as f64 / self.n as f64 - self.min as f64, (self.max - self.min) as f64))
    }
}

/// Runs `players` players, `connect_per_sec` connecting per second, each until `stop` fires.
pub async fn run(url: PlayUrl, players: usize, connect_per_sec: u32, stats: Arc<LoadStats>, stop: svc::Stopping) {
    let mut tasks = tokio::task::JoinSet::new();
    let gap = Duration::from_secs_f64(1.0 / connect_per_sec.max(1) as f64);
    for _ in 0..players {
        let (url, stats, mut stop2) = (url.clone(), stats.clone(), stop.clone());
        tasks.spawn(async move {
            let r = tokio::select! {
                r = player(&url, &stats) => r,
                _ = stop2.wait() => Ok(()),
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "load player failed");
                stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        });
        tokio::time::sleep(gap).await;
    }
    while tasks.join_next().await.is_some() {}
}

async fn player(url: &PlayUrl, stats: &LoadStats) -> std::io::Result<()> {
    let t0 = Instant::now();
    let mut sock = TcpStream::connect((url.origin.host.as_str(), url.origin.port)).await?;
    sock.set_nodelay(true)?;
    let rest = crate::ingest::edge::connect_client(&mut sock).await?;
    let mut out = BytesMut::new();
    let err = |e: crate::wire::proto::ProtoError| std::io::Error::other(e.to_string());
    let mut s = ClientSession::new(ChunkLimits::default(), &url.origin.app, &url.origin.tc_url(), &url.key, &mut out)
        .map_err(err)?;
    let mut events = Vec::new();
    s.feed(&rest, &mut out, &mut events).map_err(err)?;
    let mut first = true;
    let lag = Arc::new(std::sync::Mutex::new(Lag::default()));
    let mut first_at = t0;
    loop {
        if !out.is_empty() {
            sock.write_all(&out.split()).await?;
        }
        for e in events.drain(..) {
            if let ClientEvent::Media(m) = e {
                if m.kind == MediaKind::Video && !m.is_video_header() {
                    stats.video_frames.fetch_add(1, Ordering::Relaxed);
                    if first {
                        first = false;
                        first_at = Instant::now();
                        stats.ttff.lock().unwrap_or_else(|e| e.into_inner()).push(t0.elapsed());
                        stats.lags.lock().unwrap_or_else(|e| e.into_inner()).push(lag.clone());
                        stats.started.fetch_add(1, Ordering::Relaxed);
                    } else if first_at.elapsed() >= LAG_AFTER {
                        let arrival = t0.elapsed().as_millis() as i64;
                        lag.lock().unwrap_or_else(|e| e.into_inner()).add(arrival - m.timestamp as i64);
                    }
                }
            }
        }
        let buf = s.decoder_buffer();
        buf.reserve(64 * 1024);
        let n = sock.read_buf(buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
        s.process(n, &mut out, &mut events).map_err(err)?;
    }
}
