//! The service layer lbd, the relay and the stream manager share, so each daemon is only its own logic: the HTTP
//! server ([`http`]) and its bearer tokens ([`auth`]), the JSON client daemons call each other with ([`client`]), the fencing of a stream manager's commands by term ([`fence`]), Prometheus text ([`metrics`]), the accept loop ([`accept`]), shutdown signalling
//! ([`shutdown`]), logging set-up ([`logging`]), systemd readiness ([`notify`]), man pages and completions for packages ([`docs`]), SIGHUP as a reload ([`reload`]), the
//! version string ([`version`]), how settings are loaded, merged with flags and validated ([`config`]), the duration format of flags and config files ([`duration`]) and the rule for cluster names ([`names`]).
pub mod accept;
pub mod auth;
pub mod client;
pub mod config;
pub mod console;
pub mod docs;
pub mod fence;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod nagios;
pub mod names;
pub mod notify;
pub mod reload;
pub mod shutdown;
pub mod version;

/// The duration format lives with the wire types (it is part of lbd's health-check requests); svc re-exports it.
pub use api_types::duration;
pub use duration::Dur;
pub use shutdown::{Shutdown, Stopping};
