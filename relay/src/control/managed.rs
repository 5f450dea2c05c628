//! A relay under a stream manager: it registers itself (name, role, addresses) and tells the manager at once when
//! a stream's source comes or goes, so the manager reads the node's state now instead of at its next keepalive.
//! With several managers (every smd of an HA deployment), each call goes to the one that answered last, and to the
//! others in turn when it is unreachable or cannot take the call now (5xx, 503 while no smd leads, or a redirect).

use std::sync::Arc;
use std::time::Duration;

use api_types::manager::{NodeRole, Registration};
use axum::http::Method;
use bytes::Bytes;
use svc::client::{BaseUrl, Client, ClientError};
use tracing::{info, warn};

use super::Control;

/// Where the managers are and how this node presents itself to them.
#[derive(Debug, Clone)]
pub struct ManagerLink {
    /// Every smd of the deployment (one for a single manager), in the order `--manager` names them.
    pub managers: Vec<BaseUrl>,
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
    let mut managers = Managers {
        clients: link
            .managers
            .iter()
            .map(|m| Client::new(m.clone(), ctx.config.api_token.clone(), Duration::from_secs(3)))
            .collect(),
        current: 0,
    };
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
            match managers.call(Method::POST, "/api/v1/nodes", Some(&body)).await {
                Ok(_) => {
                    info!(manager = %managers.base(), name = %link.name, "registered with the stream manager");
                    registered = true;
                    backoff = Duration::from_millis(250);
                }
                Err(e) => {
                    warn!(error = %e, retry_ms = backoff.as_millis() as u64, "cannot register with the stream manager");
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
        match managers.call(Method::POST, &path, None::<&()>).await {
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

/// The clients of every manager and which one answered last.
struct Managers {
    clients: Vec<Client>,
    /// Where the next call starts: the manager that answered last.
    current: usize,
}

impl Managers {
    /// The manager calls start with.
    fn base(&self) -> &BaseUrl {
        &self.clients[self.current].base
    }

    /// `method path` to the manager that answered last, then to each other in turn while one is unreachable or
    /// answers 5xx or a redirect (no leader now, a follower, an smd stopping). A 4xx answer is the manager's word
    /// and is returned at once. When none takes the call, the error of each is returned in one.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&(impl serde::Serialize + ?Sized)>,
    ) -> Result<Bytes, ClientError> {
        let mut errors = Vec::new();
        for step in 0..self.clients.len() {
            let i = (self.current + step) % self.clients.len();
            match self.clients[i].call(method.clone(), path, body).await {
                Ok(b) => {
                    if i != self.current {
                        info!(manager = %self.clients[i].base, "the stream manager that answered before did not: using this one");
                    }
                    self.current = i;
                    return Ok(b);
                }
                Err(e) if matches!(e.status(), Some(400..=499)) => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "a stream manager did not take the call: trying the next");
                    errors.push(e);
                }
            }
        }
        if errors.len() == 1 {
            return Err(errors.remove(0));
        }
        let message = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        Err(ClientError::Http(format!("{method} {path}: no stream manager took the call"), message))
    }
}
