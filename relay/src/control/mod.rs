//! The control layer: the HTTP API, the stream manager link and the callbacks, over the layers below.

pub(crate) mod api;
pub mod callback;
pub mod managed;
