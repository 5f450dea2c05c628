//! The one player loop of every protocol: a [`Player`] reads its stream's ring at its own position, applies the
//! backlog bounds, and frames each frame through its [`Sink`]; [`write_bufs`] writes the shared buffers with
//! vectored writes and the --player-timeout stall check. A new protocol (HLS next) is a new `Sink` variant.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tracing::{debug, info, warn};

use super::Egress;
use crate::hub::{Frame, Item, Reader, Stream};
use crate::metrics::Metrics;
use crate::wire::proto::{self, ProtoError, ServerSession};

/// What a player of a stream that never had media is told (RTMP onStatus code, and the description ffmpeg
/// prints as "Server error: ..."; HTTP-FLV gets 404 with it).
pub const NOT_FOUND: &str = "NetStream.Play.StreamNotFound";
pub const NOT_FOUND_TEXT: &str = "stream not found";

/// Most frames taken from the ring per wake-up: keeps other players' turns short.
const MAX_BATCH: usize = 64;
/// Most buffers in one vectored write (a frame is its chunk headers interleaved with payload slices).
const MAX_IOV: usize = 512;

/// How a player's frames go on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// RTMP chunks on message stream `stream_id` (shared pre-chunked form for the usual id); RTMPT too.
    Rtmp { stream_id: u32 },
    /// FLV tags (HTTP-FLV), the tag headers built once per frame and shared.
    Flv,
}

impl Sink {
    /// Appends `f` in this sink's framing as buffers to write (shared, no copy of the payload).
    #[inline]
    pub fn frame(self, f: &Frame, out: &mut VecDeque<Bytes>) {
        match self {
            Sink::Rtmp { stream_id } => f.wire_for(stream_id, out),
            Sink::Flv => f.flv_tag(out),
        }
    }

    /// What the player is told when its stream is over: RTMP gets onStatus (the end, or not found when nothing
    /// ever came for the key); FLV has no way to say it, the connection closes.
    pub fn end(self, found: bool, out: &mut VecDeque<Bytes>) -> Result<(), ProtoError> {
        let Sink::Rtmp { stream_id } = self else {
            return Ok(());
        };
        let mut b = BytesMut::new();
        if found {
            ServerSession::end_play(stream_id, &mut b)?;
        } else {
            proto::on_status(&mut b, stream_id, "error", NOT_FOUND, NOT_FOUND_TEXT)?;
        }
        out.push_back(b.freeze());
        Ok(())
    }
}

/// A player of a stream: its position in the ring, whether it is skipping to a keyframe, and its sink.
pub struct Player {
    pub stream: Arc<Stream>,
    rx: Reader,
    skipping: bool,
    pub sink: Sink,
}

impl Player {
    pub fn new(stream: Arc<Stream>, rx: Reader, sink: Sink) -> Self {
        Self { stream, rx, skipping: false, sink }
    }

    /// Frames a subscription's cached start (headers, GOP) for this player.
    pub fn start(&self, start: &[Arc<Frame>], out: &mut VecDeque<Bytes>) {
        for f in start {
            self.sink.frame(f, out);
        }
    }

    /// Completes when the ring may have something for this player: at once if it is behind, else at the next push.
    pub async fn ready(&mut self) {
        if self.stream.has_unread(&self.rx) {
            return;
        }
        self.stream.wait(&mut self.rx).await
    }

    /// After a wake-up: writes what the ring has for this player, and what its sink says at the stream's end.
    /// False when the player is done (the stream ended).
    pub async fn pump<W: AsyncWrite + Unpin>(
        &mut self,
        ctx: &Egress,
        sock: &mut W,
        peer: SocketAddr,
    ) -> Result<bool, WriteError> {
        let mut batch = VecDeque::new();
        let ended = self.next(ctx, peer, &mut batch);
        if ended {
            // Nothing ever came for this key within the grace period: it does not exist (as far as we know).
            let found = self.stream.had_media();
            self.sink.end(found, &mut batch).map_err(|e| WriteError::Io(std::io::Error::other(e.to_string())))?;
            let why = match (self.sink, found) {
                (Sink::Flv, _) => "stream ended, closing HTTP-FLV player",
                (Sink::Rtmp { .. }, true) => "stream ended, closing player",
                (Sink::Rtmp { .. }, false) => "stream not found, closing player",
            };
            info!(%peer, "{why}");
        }
        if !batch.is_empty() {
            write_bufs(ctx, sock, peer, Some(&self.stream), batch).await?;
        }
        Ok(!ended)
    }

    /// Takes what the ring has for this player into `batch` (in its sink's framing), applying the backlog
    /// bounds: a player past the ring's end, more than --player-queue messages or --player-buffer-bytes behind
    /// drops frames until the next keyframe (headers and metadata still go out), so it catches up with the live
    /// edge. True when the stream ended.
    pub fn next(&mut self, ctx: &Egress, peer: SocketAddr, batch: &mut VecDeque<Bytes>) -> bool {
        let mut items = Vec::with_capacity(MAX_BATCH);
        let info = self.stream.read(&mut self.rx, MAX_BATCH, &mut items);
        if info.lagged > 0 {
            ctx.metrics.frames_skipped.fetch_add(info.lagged, Ordering::Relaxed);
            self.skipping = true;
        }
        if info.behind_frames > ctx.config.player_queue || info.behind_bytes > ctx.config.player_buffer_bytes as u64 {
            debug!(%peer, frames = info.behind_frames, bytes = info.behind_bytes, "player behind, skipping to next keyframe");
            self.skipping = true;
        }
        let mut ended = false;
        for item in items {
            match item {
                Item::Frame(f) => {
                    let m = &f.media;
                    let header = m.is_metadata() || m.is_video_header() || m.is_audio_header();
                    if self.skipping && !header {
                        if m.is_keyframe() || !self.stream.has_video() {
                            self.skipping = false;
                        } else {
                            Metrics::inc(&ctx.metrics.frames_skipped);
                        }
                    }
                    if !self.skipping || header {
                        self.sink.frame(&f, batch);
                    }
                }
                Item::End => ended = true,
            }
        }
        ended
    }
}

/// Why a write to a player failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer stopped reading (--player-timeout)")]
    Stalled,
}

/// Writes every buffer with vectored writes, or fails; a peer that accepts nothing for --player-timeout is
/// disconnected (counted as a stalled player when `stream` is the one it plays). Counts the bytes.
pub async fn write_bufs<W: AsyncWrite + Unpin>(
    ctx: &Egress,
    sock: &mut W,
    peer: SocketAddr,
    stream: Option<&Stream>,
    mut bufs: VecDeque<Bytes>,
) -> Result<(), WriteError> {
    let limit = ctx.config.player_timeout;
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    // The timer is only registered if the write has to wait: `timeout` polls the write first.
    let res = timeout(limit, async {
        while !bufs.is_empty() {
            let slices: Vec<IoSlice<'_>> = bufs.iter().take(MAX_IOV).map(|b| IoSlice::new(b)).collect();
            let n = sock.write_vectored(&slices).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero));
            }
            advance(&mut bufs, n);
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    match res {
        Ok(r) => r?,
        Err(_) => {
            if stream.is_some() {
                Metrics::inc(&ctx.metrics.players_stalled);
            }
            warn!(%peer, secs = limit.as_secs_f32(), "peer stopped reading (--player-timeout), disconnecting");
            return Err(WriteError::Stalled);
        }
    }
    ctx.metrics.bytes_out.fetch_add(total as u64, Ordering::Relaxed);
    if let Some(stream) = stream {
        stream.stats.bytes_out.fetch_add(total as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// Drops the first `n` written bytes from `bufs`.
fn advance(bufs: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let front = bufs.front_mut().expect("wrote more than queued");
        if n >= front.len() {
            n -= front.len();
            bufs.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
}
