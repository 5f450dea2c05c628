//! The one gate of egress: every media connection (RTMP, HTTP-FLV, RTMPT) is admitted against the connection
//! limits at accept, and every play, whatever its protocol, passes the same checks before it may subscribe.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::warn;

use super::player::{NOT_FOUND, NOT_FOUND_TEXT};
use super::Egress;
use crate::hub::{Event, OpenRefused, Stream};
use crate::metrics::Metrics;

/// Counts a connection against its client IP (--max-connections-per-ip) until dropped.
struct IpSlot {
    ctx: Arc<Egress>,
    ip: std::net::IpAddr,
    /// Whether it was counted (a limit was set when it was taken; a reload may set or lift one meanwhile).
    counted: bool,
}

impl IpSlot {
    fn take(ctx: &Arc<Egress>, ip: std::net::IpAddr) -> Option<Self> {
        let limit = ctx.config.live().max_connections_per_ip;
        if limit == 0 {
            return Some(Self { ctx: ctx.clone(), ip, counted: false });
        }
        let mut m = ctx.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Self { ctx: ctx.clone(), ip, counted: true })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let mut m = self.ctx.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// A connection admitted past --max-connections and --max-connections-per-ip; releases both when dropped.
pub struct Admitted {
    _ip: IpSlot,
    ctx: Arc<Egress>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.ctx.metrics.connections_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts `what` connections (RTMP, HTTP media) until `accepting` fires (a drain, or the shutdown): each passes
/// the gate, then `serve` runs it in a task of its own holding the gate's slot. The listener closes on return.
pub(crate) async fn accept_loop<F, Fut>(
    ctx: Arc<Egress>,
    listener: tokio::net::TcpListener,
    mut stop: svc::Stopping,
    what: &'static str,
    serve: F,
) where
    F: Fn(Arc<Egress>, tokio::net::TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    while let Some((sock, peer)) = svc::accept::next(&listener, &mut stop, what).await {
        let Some(slot) = admit(&ctx, peer) else {
            drop(sock);
            continue;
        };
        let _ = sock.set_nodelay(true);
        let conn = serve(ctx.clone(), sock, peer);
        tokio::spawn(async move {
            let _slot = slot;
            conn.await;
        });
    }
    tracing::info!(addr = ?listener.local_addr().ok(), "{what}: listener closed");
}

/// The gate every media connection (RTMP, HTTP-FLV, RTMPT) passes at accept; None closes it with a log line.
pub fn admit(ctx: &Arc<Egress>, peer: SocketAddr) -> Option<Admitted> {
    let active = ctx.metrics.connections_active.load(Ordering::Relaxed);
    let live = ctx.config.live();
    if active as usize >= live.max_connections {
        Metrics::inc(&ctx.metrics.connections_refused_limit);
        warn!(%peer, limit = live.max_connections, "connection limit reached (--max-connections), closing new connection");
        return None;
    }
    let Some(ip) = IpSlot::take(ctx, peer.ip()) else {
        Metrics::inc(&ctx.metrics.connections_refused_per_ip);
        warn!(%peer, limit = live.max_connections_per_ip, "per-IP connection limit reached (--max-connections-per-ip), closing new connection");
        return None;
    };
    Metrics::inc(&ctx.metrics.connections_total);
    ctx.metrics.connections_active.fetch_add(1, Ordering::Relaxed);
    Some(Admitted { _ip: ip, ctx: ctx.clone() })
}

/// Why a play was refused: the onStatus code (RTMP) or HTTP status (HTTP-FLV) and description for the player,
/// and the reason for the log.
pub struct PlayRefused {
    pub code: &'static str,
    pub http_status: u16,
    pub description: &'static str,
    pub log: String,
}

/// Everything a play needs before it may subscribe, for every protocol: the name checks (before anything is
/// allocated), maintenance, whether this relay serves the app, the on_play callback, then the stream (starting
/// an edge's pull).
pub async fn open_play(ctx: &Egress, event: Event<'_>) -> Result<Arc<Stream>, PlayRefused> {
    let refused = |code, http_status, description, log: String| PlayRefused { code, http_status, description, log };
    let failed = "NetStream.Play.Failed";
    if !crate::valid_name(event.stream) || !crate::valid_name(event.app) {
        return Err(refused(failed, 400, "bad app or stream name", "bad app or stream name".into()));
    }
    if ctx.maintenance.load(Ordering::Relaxed) {
        let log = "node in maintenance: no new players".to_string();
        return Err(refused(failed, 503, "node in maintenance, try another", log));
    }
    if !ctx.opener.serves(event.app) {
        let log = "no origin serves this app".to_string();
        return Err(refused("NetStream.Play.StreamNotFound", 404, "no origin for this app", log));
    }
    if let Err(e) = ctx.hooks.ask(&event).await {
        let log = format!("on_play refused the play: {e}");
        return Err(refused(failed, 403, "refused by the on_play callback", log));
    }
    let client = event.client_addr.parse::<SocketAddr>().ok().map(|a| a.ip());
    ctx.opener.open(event.app, event.stream, client).map_err(|e| match e {
        OpenRefused::BadName => refused(failed, 400, "bad app or stream name", e.to_string()),
        OpenRefused::Limit(_) => refused(failed, 503, "pull limit reached (--max-pulls)", e.to_string()),
        OpenRefused::PerIp(_) => {
            refused(failed, 503, "too many new streams from your address, retry later", e.to_string())
        }
        OpenRefused::NotFound => refused(NOT_FOUND, 404, NOT_FOUND_TEXT, e.to_string()),
    })
}
