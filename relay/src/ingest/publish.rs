//! Publishers: an RTMP (or RTMPT) publish, handed over by the connection, becomes the stream's source after the
//! token and the on_publish callback; an edge refuses publishes.

use std::sync::Arc;

use tracing::{info, warn};

use crate::hub::{
    BoxFuture, Hooks, Hub, LaneRefused, PublishDoor, PublishRefused, PublishRequest, Publisher, SourceInfo,
};

/// An origin's publishers.
pub struct Publishers {
    pub hub: Arc<Hub>,
    pub hooks: Arc<dyn Hooks>,
    /// `--publish-token`: publishing needs it as `?token=` on the key or the tcUrl.
    /// `--publish-token` is read from here at each publish (a reload changes it for the next one).
    pub live: std::sync::Arc<crate::config::Live>,
}

impl PublishDoor for Publishers {
    fn publish<'a>(&'a self, req: PublishRequest<'a>) -> BoxFuture<'a, Result<Publisher, PublishRefused>> {
        Box::pin(async move {
            let refused = |code, why| Err(PublishRefused { code, why });
            if let Some(expected) = &self.live.get().publish_token {
                if req.token != Some(expected.as_str()) {
                    return refused("NetStream.Publish.Unauthorized", "missing or wrong ?token=");
                }
            }
            if !req.names_ok {
                return refused("NetStream.Publish.BadName", "bad stream name or already busy on this connection");
            }
            if let Err(e) = self.hooks.ask(&req.event).await {
                warn!(peer = %req.peer, app = %req.app, key = %crate::shown(req.name), error = %e, "on_publish refused the publish");
                return refused("NetStream.Publish.Unauthorized", "refused by the on_publish callback");
            }
            let (stream, _) = self.hub.get_or_create(req.app, req.name);
            let role = req.role.unwrap_or(api_types::relay::MAIN_ROLE);
            match Publisher::attach_as(stream, SourceInfo { kind: "publisher", peer: req.peer.clone() }, role) {
                Ok(p) => {
                    info!(peer = %req.peer, app = %req.app, key = req.name, role, "publish started");
                    Ok(p)
                }
                Err(LaneRefused::Busy(_, holder)) => {
                    // The holder's address is for the operator only: a client learns that the key is busy, no more.
                    warn!(peer = %req.peer, app = %req.app, key = req.name, role, holder = %holder, "key already published");
                    refused("NetStream.Publish.BadName", "stream key is busy: another publisher has it")
                }
                Err(e @ LaneRefused::UnknownRole { .. }) => {
                    warn!(peer = %req.peer, app = %req.app, key = req.name, role = %crate::shown(role), known = %e, "publish refused: unknown role");
                    refused(
                        "NetStream.Publish.BadName",
                        "unknown ?role= for this key (main and backup, or the roles its sources list)",
                    )
                }
            }
        })
    }
}

/// An edge takes no publishes: its streams come from the origin.
pub struct EdgeRefusesPublish;

impl PublishDoor for EdgeRefusesPublish {
    fn publish<'a>(&'a self, _: PublishRequest<'a>) -> BoxFuture<'a, Result<Publisher, PublishRefused>> {
        Box::pin(async {
            Err(PublishRefused {
                code: "NetStream.Publish.Denied",
                why: "this relay is an edge; publish to the origin",
            })
        })
    }
}
