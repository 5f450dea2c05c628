//! The rtsp probe: `OPTIONS rtsp://REAL:PORT/ RTSP/1.0` is answered with `RTSP/1.0 200`.

use super::{tcp, Probe, Verdict};
use futures::future::BoxFuture;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest status line the probe reads before giving up on a reply.
const MAX_STATUS_LINE: usize = 1024;

pub struct Rtsp;

impl Probe for Rtsp {
    fn check(&self, target: SocketAddr) -> BoxFuture<'_, Verdict> {
        Box::pin(async move {
            let mut s = tcp::connect(target).await?;
            let req = format!("OPTIONS rtsp://{target}/ RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: lbd-health-check\r\n\r\n");
            s.write_all(req.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
            let line = read_line(&mut s).await?;
            match parse_status(&line, "RTSP/1.0") {
                Some(200) => Ok("200".into()),
                Some(code) => Err(format!("RTSP status {code}, expected 200")),
                None => Err(format!("not an RTSP status line: {:?}", line.chars().take(60).collect::<String>())),
            }
        })
    }
}

async fn read_line(s: &mut TcpStream) -> Result<String, String> {
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    loop {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            buf.truncate(i);
            break;
        }
        if buf.len() >= MAX_STATUS_LINE {
            break;
        }
        let n = s.read(&mut chunk).await.map_err(|e| format!("reading the reply: {e}"))?;
        if n == 0 {
            if buf.is_empty() {
                return Err("connection closed without a reply".into());
            }
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
}

/// The status code of `RTSP/1.0 200 OK` when the line starts with `version_prefix`.
pub fn parse_status(line: &str, version_prefix: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with(version_prefix) {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status("RTSP/1.0 200 OK", "RTSP/1.0"), Some(200));
        assert_eq!(parse_status("RTSP/1.0 454 Session Not Found", "RTSP/1.0"), Some(454));
        assert_eq!(parse_status("HTTP/1.1 200 OK", "RTSP/1.0"), None);
        assert_eq!(parse_status("RTSP/1.0 20 OK", "RTSP/1.0"), None);
        assert_eq!(parse_status("garbage", "RTSP/1.0"), None);
        assert_eq!(parse_status("", "RTSP/1.0"), None);
    }
}
