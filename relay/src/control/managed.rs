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
    let mut managers = Managers::new(&link.managers, ctx.config.live().api_token.clone(), Duration::from_secs(3));
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
        // A reloaded --api-token is the one the next call carries.
        managers.token(ctx.config.live().api_token.clone());
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
        managers.token(ctx.config.live().api_token.clone());
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

/// A draining relay tells the manager it is leaving: it asks for its own maintenance (`POST
/// /api/v1/nodes/NAME/maintenance`, forwarded to the leader by a follower), so the LB drains it and the manager
/// sends no new work. smd keeps the node in maintenance until `smctl resume NAME` (a rolling upgrade resumes each
/// edge once its new version answers). Tried for at most 5 s; a failure is logged and the drain goes on.
pub(crate) async fn leaving(ctx: &Control, link: &ManagerLink) {
    let mut managers = Managers::new(&link.managers, ctx.config.live().api_token.clone(), Duration::from_secs(2));
    let path = format!("/api/v1/nodes/{}/maintenance", link.name);
    match tokio::time::timeout(Duration::from_secs(5), managers.call(Method::POST, &path, None::<&()>)).await {
        Ok(Ok(_)) => {
            info!(manager = %managers.base(), name = %link.name, "told the stream manager this node is leaving (maintenance on)")
        }
        Ok(Err(e)) => warn!(error = %e, "cannot tell the stream manager this node is leaving"),
        Err(_) => warn!("cannot tell the stream manager this node is leaving: no answer within 5 s"),
    }
}

/// The clients of every manager and which one answered last.
struct Managers {
    clients: Vec<Client>,
    /// Where the next call starts: the manager that answered last.
    current: usize,
    /// The token the clients send, and their timeout (to rebuild them when a reload changes the token).
    bearer: Option<String>,
    timeout: Duration,
}

impl Managers {
    fn new(bases: &[BaseUrl], bearer: Option<String>, timeout: Duration) -> Self {
        let clients = bases.iter().map(|b| Client::new(b.clone(), bearer.clone(), timeout)).collect();
        Self { clients, current: 0, bearer, timeout }
    }

    /// Sends `bearer` from now on.
    fn token(&mut self, bearer: Option<String>) {
        if bearer != self.bearer {
            let bases: Vec<BaseUrl> = self.clients.iter().map(|c| c.base.clone()).collect();
            self.clients = bases.into_iter().map(|b| Client::new(b, bearer.clone(), self.timeout)).collect();
            self.bearer = bearer;
        }
    }

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
                        info!(manager = %self.clients[i].base, "the stream manager tried first did not take the call: this one did, and is tried first from now on");
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A manager on loopback answering every request with `status`, counting them.
    async fn manager(status: u16) -> (BaseUrl, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                let status = axum::http::StatusCode::from_u16(status).unwrap();
                svc::http::error(status, format!("answered {status}"))
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        (BaseUrl::parse(&format!("http://{addr}")).unwrap(), hits)
    }

    fn managers(bases: &[&BaseUrl]) -> Managers {
        let bases: Vec<BaseUrl> = bases.iter().map(|b| (*b).clone()).collect();
        Managers::new(&bases, None, Duration::from_secs(2))
    }

    /// Unreachable, 503 (no leader) and a redirect move on to the next manager, which then takes the calls that
    /// follow; a 4xx is the manager's answer and is not tried elsewhere; none answering is one error naming each.
    #[tokio::test]
    async fn calls_go_to_the_manager_that_answers() {
        let dead = BaseUrl::parse(&format!("http://127.0.0.1:{}", lb_lab::ports::free_port())).unwrap();
        let (no_leader, no_leader_hits) = manager(503).await;
        let (redirect, redirect_hits) = manager(307).await;
        let (leader, leader_hits) = manager(200).await;
        let mut m = managers(&[&dead, &no_leader, &redirect, &leader]);
        m.call(Method::POST, "/api/v1/nodes", Some(&())).await.unwrap();
        assert_eq!((m.current, m.base()), (3, &leader));
        assert_eq!(
            (
                no_leader_hits.load(Ordering::SeqCst),
                redirect_hits.load(Ordering::SeqCst),
                leader_hits.load(Ordering::SeqCst)
            ),
            (1, 1, 1)
        );
        // The next call starts with the one that answered.
        m.call(Method::POST, "/api/v1/nodes/e1/changed", None::<&()>).await.unwrap();
        assert_eq!((no_leader_hits.load(Ordering::SeqCst), leader_hits.load(Ordering::SeqCst)), (1, 2));

        let (unknown, unknown_hits) = manager(404).await;
        let mut m = managers(&[&unknown, &leader]);
        let e = m.call(Method::POST, "/api/v1/nodes/e1/changed", None::<&()>).await.unwrap_err();
        assert_eq!(e.status(), Some(404));
        assert_eq!((unknown_hits.load(Ordering::SeqCst), leader_hits.load(Ordering::SeqCst)), (1, 2));

        let mut m = managers(&[&dead, &no_leader]);
        let e = m.call(Method::POST, "/api/v1/nodes", Some(&())).await.unwrap_err().to_string();
        assert!(e.starts_with("POST /api/v1/nodes: no stream manager took the call: "), "{e}");
        assert!(e.contains(&dead.to_string()) && e.contains("HTTP 503: answered 503"), "{e}");
        assert_eq!(m.current, 0);
    }
}
