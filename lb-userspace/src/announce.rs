//! Route health injection: a task that keeps one route per announceable VIP (`VIP/32` or `/128` on `lo`) in a
//! kernel routing table of its own, with protocol number [`RTPROT_LBD`], for a routing daemon to export. BIRD's
//! kernel protocol learns that table and its BGP sessions announce the VIPs to the routers, which spread flows
//! over the LB nodes that announce them (ECMP). lbd decides what is announceable; this task only makes the kernel
//! table say so. The table is not used for forwarding (no rule points at it).

use futures::TryStreamExt;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope};
use std::collections::BTreeSet;
use std::net::IpAddr;
use tokio::sync::mpsc;

/// The routes' protocol number (`ip route ... proto 252`): how BIRD filters (`krt_source`) and how a new lbd finds
/// the routes an earlier one left.
pub const RTPROT_LBD: u8 = 252;

#[derive(Debug)]
pub enum Command {
    /// The VIPs to announce now; every other route of ours in the table is withdrawn.
    Set(BTreeSet<IpAddr>),
    /// Withdraw everything, then report on the channel (lbd is stopping).
    WithdrawAll(tokio::sync::oneshot::Sender<()>),
}

/// Starts the task for routing table `table`. Errors are logged (and retried at the next change): a routing daemon
/// that misses an announcement is better than a balancer that stops.
pub fn spawn(table: u32) -> std::io::Result<mpsc::UnboundedSender<Command>> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let lo = match lo_index(&handle).await {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "announcements: cannot find the loopback interface; VIPs are not announced");
                return;
            }
        };
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Command::Set(want) => {
                    if let Err(e) = apply(&handle, table, lo, &want).await {
                        tracing::error!(table, error = %e, "updating the announced VIP routes failed");
                    }
                }
                Command::WithdrawAll(done) => {
                    if let Err(e) = apply(&handle, table, lo, &BTreeSet::new()).await {
                        tracing::error!(table, error = %e, "withdrawing the announced VIP routes failed");
                    }
                    let _ = done.send(());
                }
            }
        }
    });
    Ok(tx)
}

async fn lo_index(handle: &rtnetlink::Handle) -> Result<u32, rtnetlink::Error> {
    let mut links = handle.link().get().match_name("lo".into()).execute();
    match links.try_next().await? {
        Some(l) => Ok(l.header.index),
        None => Err(rtnetlink::Error::RequestFailed),
    }
}

/// Our routes in `table` now, by destination.
async fn current(handle: &rtnetlink::Handle, table: u32) -> Result<Vec<(IpAddr, RouteMessage)>, rtnetlink::Error> {
    let mut out = Vec::new();
    for v in [rtnetlink::IpVersion::V4, rtnetlink::IpVersion::V6] {
        let mut routes = handle.route().get(v).execute();
        while let Some(r) = routes.try_next().await? {
            if r.header.protocol != RouteProtocol::Other(RTPROT_LBD) || route_table(&r) != table {
                continue;
            }
            let dst = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
                RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
                _ => None,
            });
            if let Some(d) = dst {
                out.push((d, r));
            }
        }
    }
    Ok(out)
}

fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

/// Makes the table hold exactly `want`: adds what is missing, deletes what is ours and no longer wanted.
async fn apply(
    handle: &rtnetlink::Handle,
    table: u32,
    lo: u32,
    want: &BTreeSet<IpAddr>,
) -> Result<(), rtnetlink::Error> {
    let have = current(handle, table).await?;
    for (dst, msg) in &have {
        if !want.contains(dst) {
            handle.route().del(msg.clone()).execute().await?;
            tracing::info!(vip = %dst, table, "withdrew the VIP's route");
        }
    }
    let present: BTreeSet<IpAddr> = have.iter().map(|(d, _)| *d).collect();
    for vip in want.difference(&present) {
        let req = handle
            .route()
            .add()
            .output_interface(lo)
            .table_id(table)
            .protocol(RouteProtocol::Other(RTPROT_LBD))
            .scope(RouteScope::Link);
        match vip {
            IpAddr::V4(a) => req.v4().destination_prefix(*a, 32).replace().execute().await?,
            IpAddr::V6(a) => req.v6().destination_prefix(*a, 128).replace().execute().await?,
        }
        tracing::info!(vip = %vip, table, "announced the VIP (route added for the routing daemon)");
    }
    Ok(())
}
