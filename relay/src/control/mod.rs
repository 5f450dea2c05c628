//! The control layer: the HTTP API, the stream manager link and the callbacks, over the layers below.

pub(crate) mod api;
pub mod callback;
pub mod managed;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use svc::Stopping;

use crate::egress::Egress;
use crate::hub::Hub;
use crate::ingest::edge::Edge;
use crate::ingest::source::Sources;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::{Config, OriginUrl};

/// What the API and the manager link see and steer: every layer's parts, as the role built them.
pub struct Control {
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub stopping: Stopping,
    pub ingest: Arc<Ingest>,
    pub egress: Arc<Egress>,
    /// Only on an edge: its pulls and origin list.
    pub edge: Option<Arc<Edge>>,
    /// An origin's sources (an edge's refuses every put).
    pub sources: Arc<Sources>,
    /// Maintenance: no new players (egress refuses them), existing ones continue. Shared with egress.
    pub maintenance: Arc<AtomicBool>,
    /// The highest stream manager term accepted: commands of an older one are refused (see `svc::fence`).
    pub fence: Arc<svc::fence::Fence>,
    pub started: Instant,
}

impl Control {
    /// The origins serving `app` (none on an origin).
    pub fn origins_for(&self, app: &str) -> Vec<OriginUrl> {
        self.edge.as_ref().map_or_else(Vec::new, |e| e.origins_for(app))
    }

    /// Replaces an edge's origin list (see [`Edge::set_origins`]); nothing on an origin.
    pub fn set_origins(&self, origins: Vec<OriginUrl>) {
        if let Some(e) = &self.edge {
            e.set_origins(origins);
        }
    }

    /// The whole origin list (empty on an origin).
    pub fn origins(&self) -> Vec<OriginUrl> {
        self.edge.as_ref().map_or_else(Vec::new, |e| e.origins.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}
