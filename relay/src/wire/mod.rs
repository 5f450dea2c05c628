//! The wire layer: RTMP chunks, AMF commands and sessions, FLV tags and HTTP request heads, as bytes in and
//! bytes out. No I/O and no imports from the layers above.

pub mod avc;
pub mod chunk;
pub mod flv;
pub mod fmp4;
pub mod http;
pub mod names;
pub mod proto;
