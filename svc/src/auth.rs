//! Bearer-token access to an HTTP API: the token is read from a file (so it is not in `ps`), compared in constant
//! time, and required whenever the API listens beyond loopback.

use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// The token an API requires, or none (an API on loopback may run open).
#[derive(Clone, Debug, Default)]
pub struct Bearer(Option<Arc<str>>);

impl Bearer {
    pub fn none() -> Self {
        Bearer(None)
    }

    pub fn token(token: &str) -> Result<Self, String> {
        let t = token.trim();
        if t.len() < 16 {
            return Err("the API token must be at least 16 characters".into());
        }
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the API token must not contain whitespace or control characters".into());
        }
        Ok(Bearer(Some(t.into())))
    }

    /// Reads the token from `path` (its first line).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::token(text.lines().next().unwrap_or("")).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// The token itself, for a client that calls an API with it.
    pub fn value(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Refuses an API that would listen beyond loopback without a token.
    pub fn check_bind(&self, addr: SocketAddr, what: &str) -> Result<(), String> {
        if self.0.is_none() && !addr.ip().is_loopback() {
            return Err(format!(
                "{what} on {addr} is reachable from other hosts: give it a token (--api-token-file FILE) or bind it to loopback"
            ));
        }
        Ok(())
    }

    /// True when the request carries the token (or none is required).
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(want) = &self.0 else { return true };
        let given = bearer_token(headers).unwrap_or("");
        constant_time_eq(given.as_bytes(), want.as_bytes())
    }
}

/// The token of an `Authorization: Bearer TOKEN` header, the one parser every API of ours reads it with: the scheme
/// in any case (RFC 7235), any run of spaces or tabs around the token; None when there is no such header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim_matches([' ', '\t']);
    let (scheme, token) = value.split_once([' ', '\t'])?;
    let token = token.trim_matches([' ', '\t']);
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The answer to a request without the right token.
pub fn unauthorized() -> Response {
    let mut r = crate::http::error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    r
}

/// Why a state-changing request looks like it came from a web page rather than an operator's tool, if it does:
/// its Host is not an IP address or localhost (a DNS-rebinding page brings its own name), or it carries an Origin of
/// another host (a cross-site form or fetch). Bearer tokens aside, this keeps a browser on the operator's desk from
/// driving an API on loopback.
pub fn browser_forgery(headers: &HeaderMap) -> Option<&'static str> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !host_is_address(host) {
        return Some("a state-changing request needs a Host that is an IP address or localhost");
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let origin_host = origin.split_once("://").map_or("", |(_, h)| h);
        if !origin_host.eq_ignore_ascii_case(host) {
            return Some("cross-origin request refused");
        }
    }
    None
}

/// [`browser_forgery`] for a request with `method`: every method that can change state (all but GET, HEAD,
/// OPTIONS and TRACE) is checked, so no state-changing route of an API can be left out by mistake.
pub fn forged_change(method: &Method, headers: &HeaderMap) -> Option<&'static str> {
    let safe = [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE];
    if safe.contains(method) {
        return None;
    }
    browser_forgery(headers)
}

/// A Host header naming an IP address or localhost, with an optional port.
pub fn host_is_address(host: &str) -> bool {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, tail)) if tail.is_empty() || tail.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok()) => {
                ip.parse::<std::net::Ipv6Addr>().is_ok()
            }
            _ => false,
        };
    }
    let name = match host.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        Some(_) => return false,
        None => host,
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Equality whose time depends on the lengths only, not on where the bytes differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_and_required_off_loopback() {
        assert!(Bearer::token("short").is_err());
        assert!(Bearer::token("has a space in it ok").is_err());
        let b = Bearer::token("0123456789abcdef").unwrap();
        let mut h = HeaderMap::new();
        assert!(!b.allows(&h), "no header");
        h.insert(header::AUTHORIZATION, "Bearer 0123456789abcdeX".parse().unwrap());
        assert!(!b.allows(&h), "wrong token");
        h.insert(header::AUTHORIZATION, "Bearer 0123456789abcdef".parse().unwrap());
        assert!(b.allows(&h));
        for ok in [
            "bearer 0123456789abcdef",
            "BEARER  0123456789abcdef",
            "Bearer\t0123456789abcdef ",
            " Bearer 0123456789abcdef",
        ] {
            h.insert(header::AUTHORIZATION, ok.parse().unwrap());
            assert!(b.allows(&h), "{ok:?}");
            assert_eq!(bearer_token(&h), Some("0123456789abcdef"), "{ok:?}");
        }
        for bad in ["Bearer", "Bearer ", "Basic 0123456789abcdef", "Bearer0123456789abcdef", "0123456789abcdef"] {
            h.insert(header::AUTHORIZATION, bad.parse().unwrap());
            assert!(!b.allows(&h), "{bad:?}");
        }
        assert_eq!(bearer_token(&HeaderMap::new()), None);
        assert!(Bearer::none().allows(&HeaderMap::new()));
        assert_eq!(unauthorized().status(), StatusCode::UNAUTHORIZED);
        assert!(Bearer::none().check_bind("127.0.0.1:1".parse().unwrap(), "api").is_ok());
        assert!(Bearer::none().check_bind("[::1]:1".parse().unwrap(), "api").is_ok());
        let e = Bearer::none().check_bind("10.0.0.1:1".parse().unwrap(), "the API").unwrap_err();
        assert!(e.contains("token"), "{e}");
        assert!(b.check_bind("10.0.0.1:1".parse().unwrap(), "api").is_ok());
        assert!(
            constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"a", b"ab")
        );
    }

    #[test]
    fn requests_from_web_pages_are_told_apart() {
        let headers = |host: &str, origin: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, host.parse().unwrap());
            if let Some(o) = origin {
                h.insert(header::ORIGIN, o.parse().unwrap());
            }
            h
        };
        for ok in ["127.0.0.1:9100", "10.0.0.2", "[::1]:80", "localhost:8080"] {
            assert_eq!(browser_forgery(&headers(ok, None)), None, "{ok}");
        }
        assert!(browser_forgery(&headers("evil.example:9100", None)).is_some(), "DNS rebinding");
        assert!(browser_forgery(&headers("127.0.0.1:9100", Some("http://evil.example"))).is_some(), "cross-site");
        assert_eq!(browser_forgery(&headers("127.0.0.1:9100", Some("http://127.0.0.1:9100"))), None);
        let evil = headers("evil.example", None);
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert!(forged_change(&m, &evil).is_some(), "{m}");
        }
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert_eq!(forged_change(&m, &evil), None, "{m}");
        }
        assert!(!host_is_address("[::1"));
        assert!(!host_is_address("1.2.3.4:x"));
    }
}
