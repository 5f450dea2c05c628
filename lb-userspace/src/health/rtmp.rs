//! The rtmp probe: the RTMP handshake's first half (C0+C1 is answered with S0+S1, version 3).

use super::{tcp, Probe, Verdict};
use futures::future::BoxFuture;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// RTMP handshake chunk size (C1/S1).
const RTMP_HANDSHAKE: usize = 1536;

pub struct Rtmp;

impl Probe for Rtmp {
    fn check(&self, target: SocketAddr) -> BoxFuture<'_, Verdict> {
        Box::pin(async move {
            let mut s = tcp::connect(target).await?;
            s.write_all(&rtmp_c0c1()).await.map_err(|e| format!("send C0+C1: {e}"))?;
            let mut reply = vec![0u8; 1 + RTMP_HANDSHAKE];
            s.read_exact(&mut reply).await.map_err(|e| format!("reading S0+S1: {e}"))?;
            check_rtmp_s0s1(&reply)
        })
    }
}

/// C0 (version 3) and C1 (time, zero, 1528 bytes of filler).
pub fn rtmp_c0c1() -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + RTMP_HANDSHAKE);
    v.push(3);
    v.extend_from_slice(&[0; 8]);
    v.extend((0..RTMP_HANDSHAKE - 8).map(|i| (i * 7 + 13) as u8));
    v
}

/// S0 must be version 3 and S1 must follow in full.
pub fn check_rtmp_s0s1(reply: &[u8]) -> Result<String, String> {
    match reply.first() {
        Some(3) if reply.len() > RTMP_HANDSHAKE => Ok("S0+S1".into()),
        Some(3) => Err(format!("short S1: {} bytes", reply.len().saturating_sub(1))),
        Some(v) => Err(format!("S0 announces RTMP version {v}, expected 3")),
        None => Err("no S0".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_handshake_is_checked() {
        let c = rtmp_c0c1();
        assert_eq!(c.len(), 1537);
        assert_eq!(c[0], 3);
        let mut s = vec![3u8; 1537];
        assert_eq!(check_rtmp_s0s1(&s), Ok("S0+S1".into()));
        s[0] = 6;
        assert!(check_rtmp_s0s1(&s).unwrap_err().contains("version 6"));
        assert!(check_rtmp_s0s1(&[3, 0, 0]).unwrap_err().contains("short"));
    }
}
