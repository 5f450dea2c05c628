//! HTTP/1.1 request heads of the media listener (HTTP-FLV, RTMPT), parsed with httparse and bounded (no I/O).

/// Longest request head we read; anything longer is refused (431).
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header lines in a request head.
const MAX_HEADERS: usize = 32;

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    pub content_length: usize,
    /// Bytes of the head, including the blank line.
    pub head_len: usize,
    /// The connection may carry another request (HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
    /// `Connection: keep-alive`).
    pub keep_alive: bool,
    /// `Range` as sent.
    pub range: Option<String>,
    /// `If-None-Match` as sent.
    pub if_none_match: Option<String>,
}

/// Why a request head was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    #[error("request head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
}

impl HttpError {
    /// The status a client gets for it.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_) => 400,
            HttpError::TooLarge | HttpError::TooManyHeaders => 431,
        }
    }
}

/// The origin-form path of a request target: an absolute-form target (`http://HOST/live/x.flv`, which HTTP/1.1
/// servers must accept, RFC 9112 3.2.2) loses its scheme and authority. `None` for a target that is neither.
fn origin_form(target: &str) -> Option<String> {
    if target.starts_with('/') || target == "*" {
        return Some(target.to_string());
    }
    let (scheme, rest) = target.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => Some(rest[i..].to_string()),
        Some(i) => Some(format!("/{}", &rest[i..])),
        None => Some("/".to_string()),
    }
}

/// Parses a request head from the start of `buf`: `Ok(None)` while incomplete.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => Err(HttpError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(head_len)) => {
            if head_len > MAX_HEAD {
                return Err(HttpError::TooLarge);
            }
            let mut content_length = None;
            let mut keep_alive = req.version == Some(1);
            let (mut range, mut if_none_match) = (None, None);
            let text = |v: &[u8]| String::from_utf8_lossy(v).trim().to_string();
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("connection") {
                    let v = text(h.value).to_ascii_lowercase();
                    if v.split(',').any(|t| t.trim() == "close") {
                        keep_alive = false;
                    } else if v.split(',').any(|t| t.trim() == "keep-alive") {
                        keep_alive = true;
                    }
                } else if h.name.eq_ignore_ascii_case("range") {
                    range = Some(text(h.value));
                } else if h.name.eq_ignore_ascii_case("if-none-match") {
                    if_none_match = Some(text(h.value));
                }
                if h.name.eq_ignore_ascii_case("content-length") {
                    let n: usize = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .ok_or_else(|| HttpError::Malformed("bad Content-Length".into()))?;
                    // Two different lengths leave the body's end ambiguous (request smuggling): refused at once,
                    // not waited on (RFC 9112 6.3).
                    if content_length.is_some_and(|c| c != n) {
                        return Err(HttpError::Malformed("conflicting Content-Length headers".into()));
                    }
                    content_length = Some(n);
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(HttpError::Malformed("Transfer-Encoding is not supported".into()));
                }
            }
            let target = origin_form(req.path.unwrap_or_default())
                .ok_or_else(|| HttpError::Malformed("request target is neither /PATH nor http://HOST/PATH".into()))?;
            Ok(Some(Request {
                method: req.method.unwrap_or_default().to_string(),
                target,
                content_length: content_length.unwrap_or(0),
                head_len,
                keep_alive,
                range,
                if_none_match,
            }))
        }
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders),
        Err(e) => Err(HttpError::Malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let r = parse_request(b"GET /live/test.flv?a=1 HTTP/1.1\r\nHost: x\r\n\r\nrest").unwrap().unwrap();
        assert_eq!((r.method.as_str(), r.target.as_str(), r.head_len), ("GET", "/live/test.flv?a=1", 44));
        assert_eq!(parse_request(b"GET /live/test.flv HTTP/1.1\r\nHost"), Ok(None));
        let r = parse_request(b"POST /open/1 HTTP/1.1\r\nContent-Length: 1\r\n\r\n\0").unwrap().unwrap();
        assert_eq!(r.content_length, 1);
        assert!(parse_request(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_request(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse_request(b"\x16\x03\x01garbage\r\n\r\n").is_err());
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert_eq!(parse_request(&big), Err(HttpError::TooLarge));
        // The same length twice is one length; two different ones are refused, not waited on.
        let r = parse_request(b"POST /open/1 HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n").unwrap();
        assert_eq!(r.unwrap().content_length, 1);
        let two = parse_request(b"POST /open/1 HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(two, Err(HttpError::Malformed("conflicting Content-Length headers".into())));
        // Too many header lines: 431, like a head too large.
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
        }
        assert_eq!(parse_request(&many).map_err(|e| e.status()), Err(431));
        // Absolute-form targets are read as their path.
        for (target, want) in [
            ("http://127.0.0.1:8080/live/x.flv?t=1", "/live/x.flv?t=1"),
            ("HTTP://host/open/1", "/open/1"),
            ("http://host", "/"),
            ("http://host?a", "/?a"),
        ] {
            let head = format!("GET {target} HTTP/1.1\r\nHost: host\r\n\r\n");
            assert_eq!(parse_request(head.as_bytes()).unwrap().unwrap().target, want, "{target}");
        }
        assert!(parse_request(b"GET ftp://host/x HTTP/1.1\r\n\r\n").is_err());
        // Keep-alive by version and Connection; Range and If-None-Match as sent.
        let r = parse_request(b"GET /a HTTP/1.1\r\nRange: bytes=0-9\r\nIf-None-Match: \"x\"\r\n\r\n").unwrap().unwrap();
        assert_eq!(
            (r.keep_alive, r.range.as_deref(), r.if_none_match.as_deref()),
            (true, Some("bytes=0-9"), Some("\"x\""))
        );
        assert!(!parse_request(b"GET /a HTTP/1.1\r\nConnection: Close\r\n\r\n").unwrap().unwrap().keep_alive);
        assert!(!parse_request(b"GET /a HTTP/1.0\r\n\r\n").unwrap().unwrap().keep_alive);
        assert!(parse_request(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().unwrap().keep_alive);
    }
}
