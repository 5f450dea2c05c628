//! The egress layer: players. One player type ([`player::Player`]) reads the hub's ring through a sink per
//! protocol (RTMP, HTTP-FLV; RTMPT is RTMP over HTTP polling); one gate ([`gate`]) admits every media connection
//! (limits) and every play (names, maintenance, the on_play callback, the stream's opener).

pub mod flv;
pub mod gate;
pub mod hls;
pub mod http;
pub mod player;
pub(crate) mod rtmp;
pub mod rtmpt;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use svc::Stopping;

use crate::hub::{Hooks, Opener, PublishDoor};
use crate::metrics::Metrics;
use crate::Config;

/// What every player and media connection needs, built once at start: the role chose `opener` and `publish`.
pub struct Egress {
    /// Limits and timeouts (--max-connections, --player-timeout, ...).
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Fires on shutdown; every connection selects on it.
    pub stopping: Stopping,
    /// Where a player's stream comes from (the hub on an origin, a pull on an edge).
    pub opener: Arc<dyn Opener>,
    /// Who takes an RTMP publish (ingest's publishers on an origin; refused on an edge).
    pub publish: Arc<dyn PublishDoor>,
    /// The operator's callbacks.
    pub hooks: Arc<dyn Hooks>,
    /// Open media connections per client IP (only tracked with --max-connections-per-ip).
    pub per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Maintenance: no new players (a clear refusal), existing ones continue.
    pub maintenance: Arc<AtomicBool>,
    /// Live RTMPT sessions.
    pub(crate) rtmpt: rtmpt::Sessions,
    /// Every stream's HLS packager and the HLS sessions.
    pub hls: Arc<hls::Hls>,
}

impl Egress {
    pub fn new(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        stopping: Stopping,
        opener: Arc<dyn Opener>,
        publish: Arc<dyn PublishDoor>,
        hooks: Arc<dyn Hooks>,
    ) -> Self {
        let hls = Arc::new(hls::Hls::new(&config));
        Self {
            hls,
            config,
            metrics,
            stopping,
            opener,
            publish,
            hooks,
            per_ip: Default::default(),
            maintenance: Default::default(),
            rtmpt: Default::default(),
        }
    }
}
