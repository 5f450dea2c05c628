//! The HTTP/1.1 client the daemons call each other's APIs with (the manager drives relays and lbd, a relay
//! registers with the manager) and lbd's http/https health checks use: one request per connection, a bearer token,
//! a deadline over the whole exchange, http:// or https:// (rustls; the certificate is verified against the
//! system's roots unless a CA file or an explicit `insecure` says otherwise).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{header, Request};
/// The request methods and answer statuses of this client's API (hyper's), so callers need no HTTP crate of their own.
pub use axum::http::{Method, StatusCode};
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
    #[error("invalid URL {url:?}: {why}; expected http://HOST[:PORT][/PATH] or https://...")]
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
    /// The TLS handshake failed: most often the certificate is not trusted or not for this name.
    #[error("{0}: TLS handshake failed: {1}")]
    Handshake(String, String),
    /// A TLS configuration could not be built (CA file unreadable or empty, no system roots).
    #[error("{0}")]
    TlsSetup(String),
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

/// An API's base address: `http://HOST[:PORT][/PREFIX]` or `https://...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" for none).
    pub prefix: String,
    /// https://: the exchange runs over TLS (port 443 by default).
    pub tls: bool,
}

impl BaseUrl {
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = |why| ClientError::BadUrl { url: url.to_string(), why };
        let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (None, Some(rest)) => (rest, true),
            (None, None) => return Err(bad("scheme must be http:// or https://")),
        };
        let (hostport, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = host_port(hostport, if tls { 443 } else { 80 }).map_err(bad)?;
        if prefix.bytes().any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#') {
            return Err(bad("the path may not hold spaces, control characters, a query or a fragment"));
        }
        Ok(Self { host, port, prefix: prefix.to_string(), tls })
    }

    /// The address of `target` with no prefix: how a health check names a real.
    pub fn of(target: std::net::SocketAddr, tls: bool) -> Self {
        Self { host: target.ip().to_string(), port: target.port(), prefix: String::new(), tls }
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
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.prefix)
    }
}

/// How an https:// exchange checks the server's certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Verify {
    /// Against the system's trusted roots (/etc/ssl/certs, or where SSL_CERT_FILE / SSL_CERT_DIR point).
    #[default]
    SystemRoots,
    /// Against the CA certificates of this PEM file only (a private CA, a self-signed server).
    CaFile(PathBuf),
    /// Not at all: any certificate is accepted (the handshake's signatures are still checked). An explicit opt-in,
    /// for reals with self-signed certificates nobody distributes.
    Insecure,
}

/// A TLS client set-up: how certificates are verified and, optionally, the name to send (SNI) and verify instead
/// of the URL's host. Built once (reading roots costs milliseconds) and shared by every connection.
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
    name: Option<rustls::pki_types::ServerName<'static>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Tls {
    /// A set-up verifying as `verify` says; `name` (a DNS name or an IP address) replaces the URL's host as the
    /// name sent and verified.
    pub fn new(verify: &Verify, name: Option<&str>) -> Result<Self, ClientError> {
        let name = match name {
            Some(n) => Some(
                rustls::pki_types::ServerName::try_from(n.to_string())
                    .map_err(|_| ClientError::TlsSetup(format!("{n:?} is not a valid TLS server name")))?,
            ),
            None => None,
        };
        let config = match verify {
            Verify::SystemRoots => system_config()?,
            Verify::CaFile(path) => Arc::new(verified_by(ca_file_roots(path)?)),
            Verify::Insecure => {
                let provider = provider();
                let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| ClientError::TlsSetup(format!("TLS set-up: {e}")))?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                    .with_no_client_auth();
                Arc::new(config)
            }
        };
        Ok(Self { config, name })
    }
}

/// ring's provider: it builds with the C compiler every machine here has (aws-lc-rs, the one with post-quantum
/// key exchange, needs a longer native build), and what it protects (health checks, API calls inside a cluster) is
/// short-lived.
#[expect(deprecated, reason = "rustls 0.23.48 deprecates ring's provider only for lacking post-quantum key exchange")]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn verified_by(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring's provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The system roots' set-up, read once per process.
fn system_config() -> Result<Arc<rustls::ClientConfig>, ClientError> {
    static SYSTEM: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found.errors.first().map(|e| format!(": {e}")).unwrap_or_default();
                return Err(format!(
                    "no trusted root certificates found on this system (install ca-certificates, or give a CA file){why}"
                ));
            }
            Ok(Arc::new(verified_by(roots)))
        })
        .clone()
        .map_err(ClientError::TlsSetup)
}

/// The certificates of a PEM file as trusted roots; an unreadable file or one without a certificate is an error.
fn ca_file_roots(path: &Path) -> Result<rustls::RootCertStore, ClientError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| ClientError::TlsSetup(format!("CA file {shown}: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| ClientError::TlsSetup(format!("CA file {shown}: not PEM: {e}")))?;
        roots.add(cert).map_err(|e| ClientError::TlsSetup(format!("CA file {shown}: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ClientError::TlsSetup(format!("CA file {shown} holds no PEM certificate (BEGIN CERTIFICATE)")));
    }
    Ok(roots)
}

/// The `insecure` verifier: any certificate, any name; the handshake signatures are still verified.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client of one API (or one health-checked server).
#[derive(Debug, Clone)]
pub struct Client {
    pub base: BaseUrl,
    token: Option<String>,
    pub timeout: Duration,
    /// https://: the set-up to use; None means the system roots.
    tls: Option<Tls>,
    user_agent: Option<String>,
    /// Extra headers sent on every request (a stream manager's term, see [`crate::fence`]).
    headers: Vec<(&'static str, String)>,
}

impl Client {
    pub fn new(base: BaseUrl, token: Option<String>, timeout: Duration) -> Self {
        Self { base, token, timeout, tls: None, user_agent: None, headers: Vec::new() }
    }

    /// Uses `tls` for https:// (instead of the system roots).
    pub fn with_tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sends this User-Agent (none by default), so the server's logs can tell, say, health checks apart.
    pub fn with_user_agent(mut self, agent: &str) -> Self {
        self.user_agent = Some(agent.to_string());
        self
    }

    /// Sends `name: value` on every request of this client, e.g. a stream manager's term:
    /// `.with_header(api_types::manager::TERM_HEADER, term.to_string())`. A value that is not a valid header value
    /// fails each request with [`ClientError::Http`].
    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// `method path` without a body; only the answer's status (its body is not read), for health checks.
    pub async fn status(&self, method: Method, path: &str) -> Result<StatusCode, ClientError> {
        let what = format!("{method} {}{path}", self.base);
        let req = self.request(&what, method, path, Bytes::new())?;
        let exchange = async {
            let resp = self.send_request(&what, req).await?;
            Ok(resp.status())
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(what.clone(), self.timeout))?
    }

    fn request(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base.prefix))
            .header(header::HOST, self.base.authority())
            .header(header::CONNECTION, "close");
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in &self.headers {
            req = req.header(*name, value.as_str());
        }
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(a) = &self.user_agent {
            req = req.header(header::USER_AGENT, a);
        }
        req.body(Full::new(body)).map_err(|e| ClientError::Http(what.to_string(), e.to_string()))
    }

    /// Connects (TLS for https://), sends `req` and returns the answer with its body unread.
    async fn send_request(
        &self,
        what: &str,
        req: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        // Connect by (host, port) so names and IPv6 literals both work.
        let sock = TcpStream::connect((self.base.host.as_str(), self.base.port))
            .await
            .map_err(|e| ClientError::Io(what.to_string(), e))?;
        let _ = sock.set_nodelay(true);
        if !self.base.tls {
            return exchange(what, TokioIo::new(sock), req).await;
        }
        let tls = match &self.tls {
            Some(t) => t.clone(),
            None => Tls::new(&Verify::SystemRoots, None)?,
        };
        let name = match tls.name {
            Some(n) => n,
            None => rustls::pki_types::ServerName::try_from(self.base.host.clone()).map_err(|_| {
                ClientError::TlsSetup(format!("{what}: {:?} is not a valid TLS server name", self.base.host))
            })?,
        };
        let stream = tokio_rustls::TlsConnector::from(tls.config)
            .connect(name, sock)
            .await
            .map_err(|e| ClientError::Handshake(what.to_string(), e.to_string()))?;
        exchange(what, TokioIo::new(stream), req).await
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
        let req = self.request(&what, method, path, body)?;
        let exchange = async {
            let resp = self.send_request(&what, req).await?;
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

/// One HTTP/1.1 exchange over a connected stream (plain or TLS).
async fn exchange<IO>(
    what: &str,
    io: IO,
    req: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, ClientError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| ClientError::Http(what.to_string(), e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send.send_request(req).await.map_err(|e| ClientError::Http(what.to_string(), e.to_string()))
}

/// A loopback HTTPS server with a self-signed certificate made on the spot, for the tests of https clients.
#[cfg(any(test, feature = "test-support"))]
pub mod testing {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Starts a server on 127.0.0.1 that answers every request with `status`, with a new self-signed certificate
    /// for `localhost`, `127.0.0.1` and `::1`. Returns its address and the certificate as PEM (a CA file to trust).
    pub async fn tls_server(status: u16) -> (SocketAddr, String) {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
        let cert = rcgen::generate_simple_self_signed(names).expect("a self-signed certificate");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .expect("default versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .expect("the certificate and its key");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake: nothing to answer.
                    let Ok(mut tls) = acceptor.accept(sock).await else { return };
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                    let _ = tls.write_all(reply.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (addr, cert.cert.pem())
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
        let u = BaseUrl::parse("https://m.example/api").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.prefix.as_str(), u.tls), ("m.example", 443, "/api", true));
        assert_eq!(u.to_string(), "https://m.example:443/api");
        assert!(!BaseUrl::parse("http://m.example").unwrap().tls);
        for bad in ["ftp://x", "x:80", "http://:80", "http://x:99999", "http://[::1", "http://x/a b", "http://x/?q"] {
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
                    let term = h.get("x-manager-term").map(|v| v.to_str().unwrap().to_string());
                    axum::Json(serde_json::json!({ "auth": auth, "term": term, "body": String::from_utf8_lossy(&b) }))
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
        assert_eq!(v, serde_json::json!({ "auth": "Bearer secret-token-0123", "term": null, "body": "{\"a\":1}" }));
        // A header of the client goes with every request.
        let termed = c.clone().with_header(api_types::manager::TERM_HEADER, "42".to_string());
        let v = termed.send(Method::POST, "/echo", &serde_json::json!({})).await.unwrap();
        assert_eq!(v["term"], "42");
        let e = c.get::<serde_json::Value>("/no").await.unwrap_err();
        assert_eq!(e.status(), Some(409));
        assert!(e.to_string().ends_with("HTTP 409: taken"), "{e}");
        let c = Client::new(BaseUrl::parse(&format!("http://{addr}")).unwrap(), None, Duration::from_millis(200));
        assert!(matches!(c.get::<()>("/slow").await, Err(ClientError::Timeout(..))));
        let dead = Client::new(BaseUrl::parse("http://127.0.0.1:1").unwrap(), None, Duration::from_secs(1));
        assert!(matches!(dead.get::<()>("/").await, Err(ClientError::Io(..))));
    }

    /// https://: a self-signed server is refused by default (not in the system roots), accepted with its
    /// certificate as the CA file, accepted with `insecure`; a name the certificate does not hold is refused.
    #[tokio::test]
    async fn https_verifies_the_certificate_unless_told_otherwise() {
        let (addr, pem) = testing::tls_server(204).await;
        let dir = std::env::temp_dir().join(format!("svc-client-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, &pem).unwrap();
        let base = BaseUrl::parse(&format!("https://{addr}")).unwrap();
        let client = |tls: Option<Tls>| {
            let c = Client::new(base.clone(), None, Duration::from_secs(5));
            match tls {
                Some(t) => c.with_tls(t),
                None => c,
            }
        };
        let e = client(None).status(Method::GET, "/").await.unwrap_err();
        assert!(matches!(e, ClientError::Handshake(..)), "{e}");
        assert!(e.to_string().contains("certificate"), "{e}");
        let ca_tls = Tls::new(&Verify::CaFile(ca.clone()), None).unwrap();
        assert_eq!(client(Some(ca_tls.clone())).status(Method::GET, "/").await.unwrap(), StatusCode::NO_CONTENT);
        let (status, body) = client(Some(ca_tls)).raw(Method::GET, "/", None::<&()>).await.unwrap();
        assert_eq!((status.as_u16(), body.as_ref()), (204, &b""[..]));
        let insecure = Tls::new(&Verify::Insecure, None).unwrap();
        assert_eq!(client(Some(insecure)).status(Method::GET, "/").await.unwrap(), StatusCode::NO_CONTENT);
        let by_name = Tls::new(&Verify::CaFile(ca.clone()), Some("localhost")).unwrap();
        assert_eq!(client(Some(by_name)).status(Method::GET, "/").await.unwrap(), StatusCode::NO_CONTENT);
        let wrong = Tls::new(&Verify::CaFile(ca.clone()), Some("other.example")).unwrap();
        let e = client(Some(wrong)).status(Method::GET, "/").await.unwrap_err();
        assert!(e.to_string().contains("certificate"), "{e}");
        // A CA file that is missing or holds no certificate is refused with the file's name.
        let e = Tls::new(&Verify::CaFile(dir.join("missing.pem")), None).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
        std::fs::write(dir.join("empty.pem"), "not a certificate\n").unwrap();
        let e = Tls::new(&Verify::CaFile(dir.join("empty.pem")), None).unwrap_err();
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
