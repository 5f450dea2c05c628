//! HTTP callbacks (the nginx-rtmp/SRS convention): a JSON POST on publish, unpublish, play and stop; a non-2xx
//! answer or a timeout refuses a publish or play.
//!
//! A tiny HTTP/1.1 client over tokio instead of a client crate: one POST per event to an operator's endpoint,
//! plain `http://` (the endpoint is normally on the same host or network), status line only.

use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// What the endpoint receives (JSON).
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    /// `on_publish`, `on_unpublish`, `on_play` or `on_stop`.
    pub action: &'static str,
    pub app: &'a str,
    /// The stream key without its query string.
    pub stream: &'a str,
    /// The client's address (ip:port).
    pub client_addr: String,
    /// `rtmp` today.
    pub protocol: &'static str,
    /// What followed `?` in the stream key (or the tcUrl when the key had none), without the `?`.
    pub query: &'a str,
    pub tc_url: Option<&'a str>,
}

/// Why a callback said no.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error("callback {url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("callback {url} gave no answer within {secs}s")]
    Timeout { url: String, secs: f32 },
    #[error("callback {url} failed: {why}")]
    Failed { url: String, why: String },
}

/// POSTs `event` to `url`; Ok on a 2xx answer within `limit`.
pub async fn call(url: &CallbackUrl, event: &Event<'_>, limit: Duration) -> Result<(), Denied> {
    match tokio::time::timeout(limit, post(url, event)).await {
        Err(_) => Err(Denied::Timeout { url: url.to_string(), secs: limit.as_secs_f32() }),
        Ok(Err(e)) => Err(Denied::Failed { url: url.to_string(), why: e.to_string() }),
        Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
        Ok(Ok(status)) => Err(Denied::Status { url: url.to_string(), status }),
    }
}

async fn post(url: &CallbackUrl, event: &Event<'_>) -> std::io::Result<u16> {
    let body = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    let mut sock = TcpStream::connect((url.host.as_str(), url.port)).await?;
    let _ = sock.set_nodelay(true);
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: relay\r\n\r\n",
        url.path,
        url.host_header(),
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(&body).await?;
    // Only the status line matters; read at most a few KiB of it.
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_status(&buf).ok_or_else(|| std::io::Error::other("no HTTP status line in the answer"))
}

fn parse_status(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code: u16 = parts.next()?.parse().ok()?;
    (100..600).contains(&code).then_some(code)
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

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.0 403 Forbidden\r\n\r\n"), Some(403));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 99999 x\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }
}
