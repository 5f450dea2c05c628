//! The egress layer: players (RTMP, HTTP-FLV, RTMPT) and the gate every media connection passes.

pub mod flv;
pub(crate) mod rtmp;
pub mod rtmpt;
