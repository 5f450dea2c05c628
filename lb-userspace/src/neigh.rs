//! The resolver: a task that learns and follows real servers' MACs for the control task. It subscribes to the
//! kernel's neighbour events (RTNLGRP_NEIGH), asks the kernel to ARP for reals it has no entry for, gives up on a
//! resolution after a wait (so an add-real is answered), and re-reads the whole table now and then as a safety net
//! against a lost event. It also adds VIPs to the interface (--manage-vips). Everything it learns goes back to the
//! control task as a message; it never touches the dataplane.

use crate::netinfo::{self, Iface, Net, NetError};
use futures::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a resolution is waited for before the control task hears "unresolved" (the real joins whenever it
/// answers later).
pub const RESOLVE_WAIT: Duration = Duration::from_secs(3);
/// How often a real without a usable entry is ARPed for again.
const RETRY: Duration = Duration::from_secs(2);
/// How often the whole table is re-read, in case an event was lost (the socket's buffer overflowed).
const RESYNC: Duration = Duration::from_secs(30);

/// What the control task asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Learn this real's MAC and report it, and every change of it; report "unresolved" after RESOLVE_WAIT.
    Watch(IpAddr),
    Unwatch(IpAddr),
    /// Add the address to the interface as a /32 (the LB answers ARP for its VIPs, the IPVS way).
    AddVip(IpAddr),
}

/// What the resolver reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// The real's MAC, first learned or changed.
    Mac(IpAddr, [u8; 6]),
    /// No usable entry within RESOLVE_WAIT of a Watch.
    Unresolved(IpAddr),
}

#[derive(Default)]
struct Watched {
    /// The last usable MAC: kept (and forwarded to) while the kernel's entry is not usable.
    mac: Option<[u8; 6]>,
    /// The kernel's entry is usable now; when not, ARP is triggered every RETRY until it is (the kernel does not
    /// probe on its own for traffic XDP sends).
    usable: bool,
    /// When an outstanding Watch gives up.
    deadline: Option<Instant>,
}

/// Has the resolver learn the MACs of `addrs` and waits for each answer (a MAC, or "unresolved" after
/// RESOLVE_WAIT): for lbd's start, before the control task reads the reports.
pub async fn resolve(
    resolver: &mpsc::UnboundedSender<Command>,
    reports: &mut mpsc::UnboundedReceiver<Report>,
    addrs: &[IpAddr],
) -> BTreeMap<IpAddr, [u8; 6]> {
    let mut pending: BTreeSet<IpAddr> = addrs.iter().copied().collect();
    for a in &pending {
        let _ = resolver.send(Command::Watch(*a));
    }
    let mut macs = BTreeMap::new();
    // The resolver answers every Watch within RESOLVE_WAIT; the margin covers a slow neighbour dump.
    let deadline = Instant::now() + RESOLVE_WAIT + Duration::from_secs(1);
    while !pending.is_empty() {
        match tokio::time::timeout_at(deadline, reports.recv()).await {
            Ok(Some(Report::Mac(a, mac))) => {
                pending.remove(&a);
                macs.insert(a, mac);
            }
            Ok(Some(Report::Unresolved(a))) => {
                pending.remove(&a);
            }
            Ok(None) | Err(_) => break,
        }
    }
    macs
}

fn trigger(iface: &Iface, addr: IpAddr) {
    if let Err(e) = netinfo::trigger_resolution(&iface.name, addr) {
        tracing::warn!(real = %addr, error = %e, "could not trigger neighbour resolution");
    }
}

/// Starts the resolver for `iface`: subscribed to neighbour events before this returns, so no change is missed.
pub fn spawn(
    net: Net,
    iface: Iface,
) -> Result<(mpsc::UnboundedSender<Command>, mpsc::UnboundedReceiver<Report>), NetError> {
    let (mut conn, _handle, events) = rtnetlink::new_connection()?;
    let groups = netlink_sys::SocketAddr::new(0, rtnetlink::constants::RTMGRP_NEIGH);
    netlink_sys::AsyncSocket::socket_mut(conn.socket_mut()).bind(&groups)?;
    tokio::spawn(conn);
    let (cmd_tx, cmds) = mpsc::unbounded_channel();
    let (report_tx, reports) = mpsc::unbounded_channel();
    tokio::spawn(run(net, iface, cmds, events, report_tx));
    Ok((cmd_tx, reports))
}

type Events = futures::channel::mpsc::UnboundedReceiver<(
    netlink_packet_core::NetlinkMessage<RouteNetlinkMessage>,
    netlink_sys::SocketAddr,
)>;

async fn run(
    net: Net,
    iface: Iface,
    mut cmds: mpsc::UnboundedReceiver<Command>,
    mut events: Events,
    reports: mpsc::UnboundedSender<Report>,
) {
    let mut watched: HashMap<IpAddr, Watched> = HashMap::new();
    let mut retry = tokio::time::interval(RETRY);
    let mut resync = tokio::time::interval_at(Instant::now() + RESYNC, RESYNC);
    loop {
        let next_deadline = watched.values().filter_map(|w| w.deadline).min();
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                None => return, // the control task is gone
                Some(Command::Watch(addr)) => {
                    let w = watched.entry(addr).or_default();
                    if let Some(mac) = w.mac {
                        let _ = reports.send(Report::Mac(addr, mac));
                        continue;
                    }
                    w.deadline = Some(Instant::now() + RESOLVE_WAIT);
                    // The kernel may know it already; otherwise its answer arrives as an event.
                    match net.neighbours(iface.index).await {
                        Ok(table) => learn(&mut watched, &table, &reports),
                        Err(e) => tracing::warn!(error = %e, "reading the neighbour table failed"),
                    }
                    if watched.get(&addr).is_some_and(|w| w.mac.is_none()) {
                        trigger(&iface, addr);
                    }
                }
                Some(Command::Unwatch(addr)) => {
                    watched.remove(&addr);
                }
                Some(Command::AddVip(vip)) => match net.ensure_address(iface.index, vip).await {
                    Ok(true) => tracing::info!(%vip, iface = %iface.name, "added VIP to the interface"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(%vip, error = %e, "could not add VIP to the interface; configure it by hand"),
                },
            },
            Some((msg, _)) = events.next() => match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => {
                    if let Some((idx, ip, entry)) = netinfo::parse_neighbour(&n) {
                        if idx == iface.index {
                            learn(&mut watched, &HashMap::from([(ip, entry)]), &reports);
                        }
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(n)) => {
                    if let Some((idx, ip, _)) = netinfo::parse_neighbour(&n) {
                        if let (true, Some(w)) = (idx == iface.index, watched.get_mut(&ip)) {
                            w.usable = false;
                        }
                    }
                }
                _ => {}
            },
            _ = sleep_until(next_deadline) => {
                let now = Instant::now();
                for (addr, w) in watched.iter_mut() {
                    if w.deadline.is_some_and(|d| d <= now) {
                        w.deadline = None;
                        let _ = reports.send(Report::Unresolved(*addr));
                    }
                }
            }
            _ = retry.tick() => {
                for (addr, _) in watched.iter().filter(|(_, w)| !w.usable) {
                    trigger(&iface, *addr);
                }
            }
            _ = resync.tick() => match net.neighbours(iface.index).await {
                Ok(table) => {
                    learn(&mut watched, &table, &reports);
                    // Keep forwarding with the last known MAC; the retry tick asks the kernel about the ones it lost.
                    for (addr, w) in watched.iter_mut() {
                        w.usable = table.get(addr).is_some_and(|n| n.usable);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "re-reading the neighbour table failed"),
            },
        }
    }
}

/// Records the kernel's entries for watched addresses and reports every usable MAC that is new or changed.
fn learn(
    watched: &mut HashMap<IpAddr, Watched>,
    table: &HashMap<IpAddr, netinfo::Neighbour>,
    reports: &mpsc::UnboundedSender<Report>,
) {
    for (addr, n) in table {
        if let Some(w) = watched.get_mut(addr) {
            w.usable = n.usable;
            if n.usable && w.mac != Some(n.mac) {
                w.mac = Some(n.mac);
                w.deadline = None;
                let _ = reports.send(Report::Mac(*addr, n.mac));
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
