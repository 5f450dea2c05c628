//! The ingest layer: what feeds the hub (publishers, an edge's upstream pulls, an origin's RTMP and RTSP
//! sources), each through the hub's one push API.

pub(crate) mod edge;
pub mod source;
pub mod rtsp;
