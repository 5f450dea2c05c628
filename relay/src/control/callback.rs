//! HTTP callbacks (the nginx-rtmp/SRS convention): a JSON POST on publish, unpublish, play and stop; a non-2xx
//! answer or a timeout refuses a publish or play.
//!
//! One POST per event to an operator's endpoint, plain `http://` (the endpoint is normally on the same host or
//! network), through `svc::client`, the HTTP client every daemon shares. The events and the [`Hooks`] the layers
//! below call are the hub's; this is their implementation.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use svc::client::{BaseUrl, Client, ClientError};

use crate::hub::{BoxFuture, Ended, Hooks};
pub use crate::hub::{Denied, Event};
use crate::metrics::Metrics;

/// A callback endpoint: `http://HOST[:PORT][/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl CallbackUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid callback URL {url:?}: {why}; expected http://HOST[:PORT]/PATH");
        let rest = url.strip_prefix("http://").ok_or_else(|| bad("scheme must be http://"))?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = svc::client::host_port(hostport, 80).map_err(bad)?;
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(bad("control characters or spaces in the path"));
        }
        Ok(Self { host, port, path: path.to_string() })
    }

    fn host_header(&self) -> String {
        let h = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == 80 {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }
}

impl std::fmt::Display for CallbackUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.host_header(), self.path)
    }
}

/// The configured endpoints; each is optional.
#[derive(Debug, Clone, Default)]
pub struct Callbacks {
    pub on_publish: Option<CallbackUrl>,
    pub on_unpublish: Option<CallbackUrl>,
    pub on_play: Option<CallbackUrl>,
    pub on_stop: Option<CallbackUrl>,
    /// Longest wait for an answer (connect included); past it a publish or play is refused.
    pub timeout: Duration,
}

/// POSTs `event` to `url` through the shared HTTP client; Ok on a 2xx answer within `limit`.
pub async fn call(url: &CallbackUrl, event: &Event<'_>, limit: Duration) -> Result<(), Denied> {
    // CallbackUrl accepts http:// only (see its parser); https callbacks are a later step.
    let base = BaseUrl { host: url.host.clone(), port: url.port, prefix: String::new(), tls: false };
    let client = Client::new(base, None, limit);
    match client.raw(Method::POST, &url.path, Some(event)).await {
        Ok((status, _)) if status.is_success() => Ok(()),
        Ok((status, _)) => Err(Denied::Status { url: url.to_string(), status: status.as_u16() }),
        Err(ClientError::Timeout(..)) => Err(Denied::Timeout { url: url.to_string(), secs: limit.as_secs_f32() }),
        Err(e) => Err(Denied::Failed { url: url.to_string(), why: e.to_string() }),
    }
}

/// The configured endpoints as the layers below reach them ([`Hooks`]); refusals are counted.
pub struct CallbackHooks {
    /// The callbacks are read from here at each event: a reload changes them for the next one.
    pub live: Arc<crate::config::Live>,
    pub metrics: Arc<Metrics>,
}

impl CallbackHooks {
    /// The endpoint of `action` and the timeout, as configured now.
    fn url(&self, action: &str) -> Option<(CallbackUrl, std::time::Duration)> {
        let live = self.live.get();
        let c = &live.callbacks;
        let url = match action {
            "on_publish" => c.on_publish.as_ref(),
            "on_unpublish" => c.on_unpublish.as_ref(),
            "on_play" => c.on_play.as_ref(),
            "on_stop" => c.on_stop.as_ref(),
            _ => None,
        };
        url.map(|u| (u.clone(), c.timeout))
    }
}

impl Hooks for CallbackHooks {
    fn ask<'a>(&'a self, event: &'a Event<'a>) -> BoxFuture<'a, Result<(), Denied>> {
        Box::pin(async move {
            let Some((url, timeout)) = self.url(event.action) else {
                return Ok(());
            };
            let r = call(&url, event, timeout).await;
            if r.is_err() {
                Metrics::inc(&self.metrics.callbacks_refused);
            }
            r
        })
    }

    fn tell(&self, ended: Ended) {
        let Some((url, limit)) = self.url(ended.action) else {
            return;
        };
        tokio::spawn(async move {
            let event = Event {
                action: ended.action,
                app: &ended.app,
                stream: &ended.stream,
                client_addr: ended.client_addr.clone(),
                protocol: ended.protocol,
                query: &ended.query,
                tc_url: ended.tc_url.as_deref(),
            };
            if let Err(e) = call(&url, &event, limit).await {
                tracing::warn!(action = ended.action, error = %e, "callback failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = CallbackUrl::parse("http://127.0.0.1:8080/hooks/publish?x=1").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("127.0.0.1", 8080, "/hooks/publish?x=1"));
        assert_eq!(u.to_string(), "http://127.0.0.1:8080/hooks/publish?x=1");
        let u = CallbackUrl::parse("http://auth.example").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = CallbackUrl::parse("http://[::1]:9/x").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.host_header()), ("::1", 9, "[::1]:9".to_string()));
        for bad in ["https://x/", "x/y", "http://:80/", "http://x:99999/", "http://x/a b", "http://[::1/"] {
            assert!(CallbackUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
