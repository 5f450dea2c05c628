//! The typed contract between the daemons: every request and response that crosses a process, in one place, so a
//! server serialises from the same type its clients parse with, and a field renamed on one side fails to compile
//! or fails the round-trip tests instead of silently reading as 0 on the other.
//!
//! - [`lb`]: lbd's control API (the unix socket and `/api/v1/` over HTTP): requests, answers, service and real
//!   views, events, and the value types they carry (service keys, protocols, health checks) with their validation.
//! - [`relay`]: the relay's `/status`, `/streams`, `/sources` and `/origins`, the source URL parser and the rule
//!   for app and stream names.
//! - [`manager`]: the stream manager's `/api/v1/` as smctl and the console read it.
//! - [`duration`]: the duration format of every flag, config file and wire field (`3s`, `500ms`, `1m 30s`).
//!
//! No I/O here: serde, and pure parsing and validation functions.

pub mod duration;
pub mod lb;
pub mod manager;
pub mod relay;

pub use duration::Dur;
