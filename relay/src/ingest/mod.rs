//! The ingest layer: what feeds the hub (publishers, an edge's upstream pulls, an origin's RTMP and RTSP
//! sources), each through the hub's one push API ([`crate::hub::Publisher`]).

pub(crate) mod edge;
pub mod publish;
pub mod rtsp;
pub mod slate;
pub mod source;

use std::sync::Arc;

use svc::Stopping;

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::Config;

/// What every ingest task needs: the settings (timeouts, backoff, limits), the hub it feeds, the counters, and
/// the shutdown signal.
pub struct Ingest {
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub stopping: Stopping,
    /// Where this relay's RTMP listener is reached locally: a slate publishes itself here.
    pub rtmp_addr: std::sync::OnceLock<std::net::SocketAddr>,
}
