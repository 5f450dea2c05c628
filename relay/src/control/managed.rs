//! A relay under a stream manager: it registers itself (name, role, addresses) and tells the manager at once when
//! a stream's source comes or goes, so the manager reads the node's state now instead of at its next keepalive.

use std::sync::Arc;
use std::time::Duration;

use api_types::manager::{NodeRole, Registration};
use axum::http::Method;
use svc::client::{BaseUrl, Client};
use tracing::{info, warn};

use super::Control;

/// Where the manager is and how this node presents itself to it.
#[derive(Debug, Clone)]
pub struct ManagerLink {
    pub manager: BaseUrl,
    /// This node's name in the cluster (unique).
    pub name: String,
    /// The node's API as the manager reaches it (`http://HOST:PORT`).
    pub api: String,
    /// The node's RTMP address as edges and the load balancer reach it (`HOST:PORT`).
    pub rtmp: String,
    /// The node's HTTP media address (HTTP-FLV, RTMPT), if it serves one.
    pub http: Option<String>,
}

/// Registers (retrying with backoff until the manager accepts), then reports every source change; a manager that
/// no longer knows the node (it lost its state) gets the registration again.
pub(crate) async fn run(ctx: Arc<Control>, link: ManagerLink) {
    let client = Client::new(link.manager.clone(), ctx.config.api_token.clone(), Duration::from_secs(3));
    let mut stop = ctx.stopping.clone();
    let mut changes = ctx.hub.changes();
    // The manager's own type of `POST /api/v1/nodes`; the addresses were checked when the link was configured.
    let (Ok(rtmp), Ok(http)) = (link.rtmp.parse(), link.http.as_deref().map(str::parse).transpose()) else {
        tracing::error!(rtmp = %link.rtmp, http = ?link.http, "cannot register: the advertised addresses are not IP:PORT");
        return;
    };
    let body = Registration {
        name: link.name.clone(),
        role: match ctx.config.role {
            crate::config::Role::Origin { .. } => NodeRole::Origin,
            crate::config::Role::Edge { .. } => NodeRole::Edge,
        },
        api: link.api.clone(),
        rtmp,
        http,
        pool: None,
    };
    let mut registered = false;
    let mut backoff = Duration::from_millis(250);
    loop {
        if !registered {
            match client.send(Method::POST, "/api/v1/nodes", &body).await {
                Ok(_) => {
                    info!(manager = %link.manager, name = %link.name, "registered with the stream manager");
                    registered = true;
                    backoff = Duration::from_millis(250);
                }
                Err(e) => {
                    warn!(manager = %link.manager, error = %e, retry_ms = backoff.as_millis() as u64, "cannot register with the stream manager");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = stop.wait() => return,
        }
        // Several changes at once (a failover moves many streams) make one report.
        tokio::time::sleep(Duration::from_millis(20)).await;
        changes.borrow_and_update();
        let path = format!("/api/v1/nodes/{}/changed", link.name);
        match client.call(Method::POST, &path, None::<&()>).await {
            Ok(_) => {}
            Err(e) if e.status() == Some(404) => {
                warn!(name = %link.name, "the stream manager does not know this node: registering again");
                registered = false;
            }
            // The manager reads the node at its next keepalive anyway: a lost report only costs time.
            Err(e) => warn!(error = %e, "cannot report a source change to the stream manager"),
        }
    }
}
