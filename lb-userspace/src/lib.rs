//! lbd and lbctl as a library: the model, Maglev, the dataplane owner, the connection-table worker, netlink, the
//! control API, health checks, events, metrics and the daemon.
pub mod api;
pub mod conntable;
pub mod daemon;
pub mod dataplane;
pub mod events;
pub mod health;
pub mod maglev;
pub mod metrics;
pub mod model;
pub mod netinfo;
