//! lbd and lbctl as a library. Where each concern lives:
//! - [`model`]: the desired state (services, reals, checks) and its TOML file; [`api`]: the control socket's wire
//!   types and client.
//! - [`dataplane`]: the XDP program's owner (load, attach, pins, maps), with [`dataplane::conntable`]: connection-
//!   table walks and purges on a worker thread; [`maglev`]: the rings.
//! - [`daemon`]: the control task (decisions in `daemon::core`, views, control socket, metrics endpoint, takeover,
//!   census cache, state-file writer); [`health`]: probes and rise/fall; [`neigh`]: the MAC resolver task;
//!   [`netinfo`]: netlink queries; [`events`]: the event history; [`announce`]: VIP routes for the routing daemon; [`sync`]: flow-state sync
//!   between LB nodes; [`settings`]: lbd's settings (flags and the config file's top), checked before anything starts.
pub mod announce;
pub mod api;
pub mod console;
pub mod daemon;
pub mod dataplane;
pub mod events;
pub mod health;
pub mod maglev;
pub mod model;
pub mod neigh;
pub mod netinfo;
pub mod settings;
pub mod sync;
