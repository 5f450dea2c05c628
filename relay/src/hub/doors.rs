//! The doors of the hub: the one push API every source uses ([`Publisher`]), and the small traits through which
//! the layers above reach each other without importing each other (built once, from the role, in `run_on`).
//!
//! Egress opens a player's stream through an [`Opener`] (the hub itself on an origin, the edge's pulls on an
//! edge) and hands an RTMP publish to a [`PublishDoor`] (ingest's publishers); both tell the operator's endpoints
//! through [`Hooks`] (control's callbacks).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;

use super::{Hub, LaneRefused, SourceInfo, Stream};
use crate::wire::proto::Media;

/// A boxed future, as the doors return them (one per publish or play, never per frame).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A stream's one source while it is attached: every frame goes through [`Publisher::push`]; dropping it detaches
/// the source (the stream then waits for the grace period for another).
pub struct Publisher {
    stream: Arc<Stream>,
    id: u64,
}

impl Publisher {
    /// Attaches `info` as the main source of `stream`; refused while another source has that role.
    pub fn attach(stream: Arc<Stream>, info: SourceInfo) -> Result<Self, LaneRefused> {
        Self::attach_as(stream, info, api_types::relay::MAIN_ROLE)
    }

    /// Attaches `info` as the source of `stream` in `role` (main, backup, slate...): the stream forwards the best
    /// healthy one of its sources and keeps the others warm.
    pub fn attach_as(stream: Arc<Stream>, info: SourceInfo, role: &str) -> Result<Self, LaneRefused> {
        let id = stream.attach_source(info, role)?;
        Ok(Self { stream, id })
    }

    /// Publishes one message to every player and the cache.
    pub fn push(&self, media: Media) {
        self.stream.push(self.id, media)
    }

    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stream.detach_source(self.id);
    }
}

/// A publish or play as the operator's callback endpoint sees it (JSON).
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    /// `on_publish`, `on_unpublish`, `on_play` or `on_stop`.
    pub action: &'static str,
    pub app: &'a str,
    /// The stream key without its query string.
    pub stream: &'a str,
    /// The client's address (ip:port).
    pub client_addr: String,
    /// `rtmp`, `http-flv` or `rtmpt`.
    pub protocol: &'static str,
    /// What followed `?` in the stream key (or the tcUrl when the key had none), without the `?`.
    pub query: &'a str,
    pub tc_url: Option<&'a str>,
}

/// A publish or play that ended, for on_unpublish / on_stop (owned: it is told in the background).
pub struct Ended {
    pub action: &'static str,
    pub app: String,
    pub stream: String,
    pub query: String,
    pub tc_url: Option<String>,
    pub client_addr: String,
    pub protocol: &'static str,
}

/// Why a callback said no.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error("callback {url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("callback {url} gave no answer within {secs}s")]
    Timeout { url: String, secs: f32 },
    #[error("callback {url} failed: {why}")]
    Failed { url: String, why: String },
}

/// The operator's endpoints (control's callbacks): asked before a publish or play, told when one ends.
pub trait Hooks: Send + Sync + 'static {
    /// Whether `event` (on_publish, on_play) may go on; Ok when no endpoint is configured for it.
    fn ask<'a>(&'a self, event: &'a Event<'a>) -> BoxFuture<'a, Result<(), Denied>>;
    /// Tells of an end (on_unpublish, on_stop) in the background: the answer changes nothing.
    fn tell(&self, ended: Ended);
}

/// Sees every frame of one stream as it is pushed, before merging holds it, in order, on the stream's clock
/// (Unix ms, the same on every relay): egress's HLS packager. Called under the stream's lock: quick, never blocking.
pub trait Tap: Send + Sync + 'static {
    /// A frame (headers and metadata too) and its clock.
    fn frame(&self, frame: &Arc<super::Frame>, clock_ms: i64);
    /// The stream is over; `found` says whether it ever had media.
    fn end(&self, found: bool);
    /// This relay stopped carrying a stream that goes on (an edge's pull stopped for want of players): what the
    /// tap made of it is stale, and the next player starts afresh.
    fn retire(&self);
}

/// Gives each new stream its tap (egress's HLS); set once on the hub at start.
pub trait Taps: Send + Sync + 'static {
    fn tap(&self, app: &str, key: &str) -> Option<Arc<dyn Tap>>;
}

/// Why a player's stream could not be opened (an edge's pull refused).
#[derive(Debug, thiserror::Error)]
pub enum OpenRefused {
    #[error("bad app or stream name (1-128 of A-Z a-z 0-9 - _ . ~)")]
    BadName,
    #[error("pull limit reached (--max-pulls {0})")]
    Limit(usize),
    #[error("too many new pulls from this address (--max-new-pulls-per-ip {0})")]
    PerIp(usize),
    #[error("the origin has no such stream (answer cached for a few seconds)")]
    NotFound,
}

/// Where a player's stream comes from: the hub's own stream on an origin, a pull from an origin on an edge.
pub trait Opener: Send + Sync + 'static {
    /// Whether this relay serves `app` at all (checked before the on_play callback is asked).
    fn serves(&self, app: &str) -> bool;
    /// The stream of app/key for a player from `client`, created (and pulled) if needed.
    fn open(&self, app: &str, key: &str, client: Option<IpAddr>) -> Result<Arc<Stream>, OpenRefused>;
}

/// On an origin players watch what is published or pulled in here.
impl Opener for Hub {
    fn serves(&self, _: &str) -> bool {
        true
    }
    fn open(&self, app: &str, key: &str, _: Option<IpAddr>) -> Result<Arc<Stream>, OpenRefused> {
        Ok(self.get_or_create(app, key).0)
    }
}

/// An RTMP publish as the connection received it.
pub struct PublishRequest<'a> {
    pub app: &'a str,
    /// The key without its query.
    pub name: &'a str,
    /// `?token=` of the key, else of the tcUrl.
    pub token: Option<&'a str>,
    /// `?role=` of the key: which of the key's redundant sources this publisher is (none: main).
    pub role: Option<&'a str>,
    /// The names are valid and the connection is not already publishing or playing.
    pub names_ok: bool,
    /// The callback event (on_publish) of this publish.
    pub event: Event<'a>,
    /// The publisher's address, for the stream's source and the logs.
    pub peer: String,
}

/// Why a publish was refused: the onStatus code and the reason (both shown to the client).
#[derive(Debug)]
pub struct PublishRefused {
    pub code: &'static str,
    pub why: &'static str,
}

/// Who takes RTMP publishes on this relay (ingest's publishers on an origin; an edge refuses them).
pub trait PublishDoor: Send + Sync + 'static {
    fn publish<'a>(&'a self, req: PublishRequest<'a>) -> BoxFuture<'a, Result<Publisher, PublishRefused>>;
}
