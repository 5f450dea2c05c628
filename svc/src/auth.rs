//! Bearer-token access to an HTTP API: the token is read from a file (so it is not in `ps`), compared in constant
//! time, and required whenever the API listens beyond loopback.

use axum::http::{header, HeaderMap, StatusCode};
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
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq(given.as_bytes(), want.as_bytes())
    }
}

/// The answer to a request without the right token.
pub fn unauthorized() -> Response {
    let mut r = crate::http::error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    r
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
}
