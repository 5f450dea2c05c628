//! lbd and lbctl as a library: the model, Maglev, the dataplane owner, netlink, the control API and the daemon.
pub mod api;
pub mod daemon;
pub mod dataplane;
pub mod maglev;
pub mod model;
pub mod netinfo;
