//! The HTTP/1.1 JSON client the daemons call each other's APIs with (the manager drives relays and lbd, a relay
//! registers with the manager): one request per connection, a bearer token, a deadline over the whole exchange.

use std::time::Duration;

use axum::http::{header, Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;

/// Largest response body read; our APIs answer far less, and a peer must not make the caller buffer without end.
pub const MAX_BODY: usize = 16 << 20;

/// What went wrong calling an API.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {url:?}: {why}; expected http://HOST[:PORT][/PATH]")]
    BadUrl { url: String, why: &'static str },
    #[error("{0}: no answer within {1:?}")]
    Timeout(String, Duration),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: {1}")]
    Http(String, String),
    #[error("{what}: HTTP {status}: {message}")]
    Status { what: String, status: u16, message: String },
    #[error("{0}: the answer is not the expected JSON: {1}")]
    Decode(String, serde_json::Error),
}

impl ClientError {
    /// The HTTP status of a refused request, if it got that far.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `HOST[:PORT]` or `[V6]:PORT` of an http:// URL: the host (without brackets) and the port (`default` when
/// absent). Shared by every URL the daemons parse (API bases, relay callbacks), so they agree on the edge cases.
pub fn host_port(hostport: &str, default: u16) -> Result<(String, u16), &'static str> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, tail) = v6.split_once(']').ok_or("unclosed [")?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| "bad port")?,
            None if tail.is_empty() => default,
            None => return Err("junk after ]"),
        };
        (h, port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| "bad port")?),
            None => (hostport, default),
        }
    };
    if host.is_empty() {
        return Err("missing host");
    }
    Ok((host.to_string(), port))
}

/// An API's base address: `http://HOST[:PORT][/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" for none).
    pub prefix: String,
}

impl BaseUrl {
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = |why| ClientError::BadUrl { url: url.to_string(), why };
        let rest = url.strip_prefix("http://").ok_or_else(|| bad("scheme must be http://"))?;
        let (hostport, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = host_port(hostport, 80).map_err(bad)?;
        if prefix.bytes().any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#') {
            return Err(bad("the path may not hold spaces, control characters, a query or a fragment"));
        }
        Ok(Self { host, port, prefix: prefix.to_string() })
    }

    /// `host:port` as a Host header and a connect address take it (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.prefix)
    }
}

/// A client of one API.
#[derive(Debug, Clone)]
pub struct Client {
    pub base: BaseUrl,
    token: Option<String>,
    pub timeout: Duration,
}

impl Client {
    pub fn new(base: BaseUrl, token: Option<String>, timeout: Duration) -> Self {
        Self { base, token, timeout }
    }

    /// `method path` with an optional JSON body; the status and body of any answer (2xx or not).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let what = format!("{method} {}{path}", self.base);
        let body = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| ClientError::Decode(what.clone(), e))?),
            None => Bytes::new(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base.prefix))
            .header(header::HOST, self.base.authority())
            .header(header::CONNECTION, "close");
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(body)).map_err(|e| ClientError::Http(what.clone(), e.to_string()))?;
        let exchange = async {
            // Connect by (host, port) so names and IPv6 literals both work.
            let sock = TcpStream::connect((self.base.host.as_str(), self.base.port))
                .await
                .map_err(|e| ClientError::Io(what.clone(), e))?;
            let _ = sock.set_nodelay(true);
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(sock))
                .await
                .map_err(|e| ClientError::Http(what.clone(), e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let resp = send.send_request(req).await.map_err(|e| ClientError::Http(what.clone(), e.to_string()))?;
            let status = resp.status();
            let limited = http_body_util::Limited::new(resp.into_body(), MAX_BODY);
            let body = limited.collect().await.map_err(|e| ClientError::Http(what.clone(), e.to_string()))?;
            Ok((status, body.to_bytes()))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(what.clone(), self.timeout))?
    }

    /// Like [`Client::raw`], but a non-2xx answer is an error carrying the API's `{"error": ...}` message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Bytes, ClientError> {
        let m = method.clone();
        let (status, bytes) = self.raw(method, path, body).await?;
        if status.is_success() {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).trim().to_string());
        Err(ClientError::Status { what: format!("{m} {}{path}", self.base), status: status.as_u16(), message })
    }

    /// GET `path` and decode its JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let bytes = self.call(Method::GET, path, None::<&()>).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(format!("GET {}{path}", self.base), e))
    }

    /// `method path` with a JSON body; the answer's JSON (or null for an empty body).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<serde_json::Value, ClientError> {
        let what = format!("{method} {}{path}", self.base);
        let bytes = self.call(method, path, Some(body)).await?;
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(what, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let u = BaseUrl::parse("http://10.0.0.1:9100").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.prefix.as_str()), ("10.0.0.1", 9100, ""));
        let u = BaseUrl::parse("http://[fd00::1]:80/api/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.prefix.as_str()), ("fd00::1", 80, "/api"));
        assert_eq!(u.to_string(), "http://[fd00::1]:80/api");
        assert_eq!(BaseUrl::parse("http://m.example").unwrap().port, 80);
        for bad in ["https://x", "x:80", "http://:80", "http://x:99999", "http://[::1", "http://x/a b", "http://x/?q"] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn calls_an_api_with_its_token_and_reports_refusals() {
        use axum::routing::{get, post};
        let app = axum::Router::new()
            .route(
                "/api/v1/echo",
                post(|h: axum::http::HeaderMap, b: Bytes| async move {
                    let auth = h.get("authorization").map(|v| v.to_str().unwrap().to_string());
                    axum::Json(serde_json::json!({ "auth": auth, "body": String::from_utf8_lossy(&b) }))
                }),
            )
            .route("/api/v1/no", get(|| async { crate::http::error(StatusCode::CONFLICT, "taken") }))
            .route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(5)).await }));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        let base = BaseUrl::parse(&format!("http://{addr}/api/v1")).unwrap();
        let c = Client::new(base, Some("secret-token-0123".into()), Duration::from_secs(2));
        let v = c.send(Method::POST, "/echo", &serde_json::json!({ "a": 1 })).await.unwrap();
        assert_eq!(v, serde_json::json!({ "auth": "Bearer secret-token-0123", "body": "{\"a\":1}" }));
        let e = c.get::<serde_json::Value>("/no").await.unwrap_err();
        assert_eq!(e.status(), Some(409));
        assert!(e.to_string().ends_with("HTTP 409: taken"), "{e}");
        let c = Client::new(BaseUrl::parse(&format!("http://{addr}")).unwrap(), None, Duration::from_millis(200));
        assert!(matches!(c.get::<()>("/slow").await, Err(ClientError::Timeout(..))));
        let dead = Client::new(BaseUrl::parse("http://127.0.0.1:1").unwrap(), None, Duration::from_secs(1));
        assert!(matches!(dead.get::<()>("/").await, Err(ClientError::Io(..))));
    }
}
