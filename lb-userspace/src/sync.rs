//! Flow-state sync between LB nodes (what IPVS's sync daemon and vc5's flow sharing do): every flow this node
//! stores is sent to the peers, which insert it into their own connection table, so a flow that an ECMP rehash
//! moves to another node keeps its real even when the real set changed since it started.
//!
//! The XDP program reports stored flows on the NEW_FLOWS ring buffer. The sender turns each report into a
//! node-independent entry (the flow's 5-tuple, which names its service, and the real's address: ids differ between
//! nodes), batches them into UDP datagrams authenticated with HMAC-SHA256 and a timestamp, and sends at most
//! `rate` datagrams per second. The receiver checks each datagram, translates entries to its own ids and inserts
//! the ones it has no entry for (a local decision always wins). Sync is lossy by design: a report dropped on a
//! full ring, over the rate, or in the network only means that flow falls back to Maglev on another node, which
//! picks the same real while the real set is unchanged.

use crate::dataplane::conntable::{monotonic_ns, ConnTable};
use crate::model::{addr_key, addr_of_key, Proto, ServiceKey};
use hmac::{Hmac, Mac};
use lb_common::{ConnEntry, FlowKey, NewFlow};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;

const MAGIC: &[u8; 4] = b"LBS1";
const HEADER: usize = 4 + 8 + 8 + 2;
const ENTRY: usize = 40 + 16 + 4;
const TAG: usize = 32;
/// Entries per datagram: the datagram stays below 1400 bytes, under any usual MTU.
pub const PER_DATAGRAM: usize = (1400 - HEADER - TAG) / ENTRY;
/// Datagrams older (or newer) than this are refused: a captured datagram cannot be replayed later.
const MAX_SKEW: Duration = Duration::from_secs(30);
/// How long entries wait for a full datagram.
const FLUSH: Duration = Duration::from_millis(20);

/// Where to sync, and the shared secret.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    pub listen: SocketAddr,
    pub peers: Vec<SocketAddr>,
    pub key: Vec<u8>,
    /// Datagrams per second the sender may send to each peer.
    pub rate: u32,
}

/// This node's numbering, for translating entries both ways; the control task replaces it on every change.
#[derive(Clone, Debug, Default)]
pub struct Names {
    pub real_addr: HashMap<u32, IpAddr>,
    pub real_id: HashMap<IpAddr, u32>,
    pub slot: HashMap<ServiceKey, u32>,
}

/// Counters of the sync, for stats and metrics.
#[derive(Debug, Default)]
pub struct SyncStats {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub inserted: AtomicU64,
    /// Over the rate, or the ring buffer was read late (the kernel's own drops are not visible here).
    pub dropped_rate: AtomicU64,
    pub dropped_auth: AtomicU64,
    /// For a service or real this node does not have.
    pub dropped_unknown: AtomicU64,
}

impl SyncStats {
    pub fn snapshot(&self) -> [(&'static str, u64); 6] {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("sent", g(&self.sent)),
            ("received", g(&self.received)),
            ("inserted", g(&self.inserted)),
            ("dropped_rate", g(&self.dropped_rate)),
            ("dropped_auth", g(&self.dropped_auth)),
            ("dropped_unknown", g(&self.dropped_unknown)),
        ]
    }
}

/// Reads the key file: at least 16 bytes of secret (the whole file, trailing newline removed).
pub fn read_key(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut k = std::fs::read(path).map_err(|e| format!("cannot read the sync key {}: {e}", path.display()))?;
    while k.last().is_some_and(|b| b.is_ascii_whitespace()) {
        k.pop();
    }
    if k.len() < 16 {
        return Err(format!("{}: the sync key must be at least 16 bytes", path.display()));
    }
    Ok(k)
}

/// One flow on the wire: its key as stored, and its real's address.
fn encode_entry(out: &mut Vec<u8>, key: &FlowKey, real: IpAddr) {
    out.extend_from_slice(&key.src);
    out.extend_from_slice(&key.dst);
    out.extend_from_slice(&key.sport.to_ne_bytes());
    out.extend_from_slice(&key.dport.to_ne_bytes());
    out.extend_from_slice(&[key.proto, key.family, key.kind, 0]);
    let (a, fam) = addr_key(real);
    out.extend_from_slice(&a);
    out.extend_from_slice(&[fam, 0, 0, 0]);
}

fn decode_entry(b: &[u8]) -> Option<(FlowKey, IpAddr)> {
    let arr = |r: std::ops::Range<usize>| -> [u8; 16] { b[r].try_into().unwrap_or([0; 16]) };
    let key = FlowKey {
        src: arr(0..16),
        dst: arr(16..32),
        sport: u16::from_ne_bytes([b[32], b[33]]),
        dport: u16::from_ne_bytes([b[34], b[35]]),
        proto: b[36],
        family: b[37],
        kind: b[38],
        _pad: 0,
    };
    let real = addr_of_key(&arr(40..56), b[56])?;
    Some((key, real))
}

fn tag(key: &[u8], data: &[u8]) -> [u8; TAG] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A datagram of entries, authenticated.
pub fn encode(key: &[u8], seq: u64, entries: &[(FlowKey, IpAddr)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + entries.len() * ENTRY + TAG);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&now_ms().to_be_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
    for (k, r) in entries {
        encode_entry(&mut out, k, *r);
    }
    let t = tag(key, &out);
    out.extend_from_slice(&t);
    out
}

/// The entries of a datagram whose tag, timestamp and shape are right; None otherwise.
pub fn decode(key: &[u8], d: &[u8]) -> Option<Vec<(FlowKey, IpAddr)>> {
    if d.len() < HEADER + TAG || &d[..4] != MAGIC {
        return None;
    }
    let (body, t) = d.split_at(d.len() - TAG);
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
    m.update(body);
    m.verify_slice(t).ok()?;
    let sent = u64::from_be_bytes(body[12..20].try_into().ok()?);
    if now_ms().abs_diff(sent) > MAX_SKEW.as_millis() as u64 {
        return None;
    }
    let n = u16::from_be_bytes([body[20], body[21]]) as usize;
    if body.len() != HEADER + n * ENTRY {
        return None;
    }
    body[HEADER..].chunks(ENTRY).map(decode_entry).collect()
}

/// The service a flow key belongs to.
fn service_of(k: &FlowKey) -> Option<ServiceKey> {
    let proto = match k.proto {
        lb_common::PROTO_TCP => Proto::Tcp,
        lb_common::PROTO_UDP => Proto::Udp,
        _ => return None,
    };
    Some(ServiceKey { vip: addr_of_key(&k.dst, k.family)?, port: u16::from_be(k.dport), proto })
}

/// Peers' entries in this node's numbering, as connection-table entries seen at `now_ns`; entries for a service or
/// real this node lacks are left out.
pub fn to_local(names: &Names, entries: &[(FlowKey, IpAddr)], now_ns: u64) -> Vec<(FlowKey, ConnEntry)> {
    entries
        .iter()
        .filter_map(|(k, real)| {
            let vip_num = *names.slot.get(&service_of(k)?)?;
            let real_id = *names.real_id.get(real)?;
            Some((*k, ConnEntry { real_id, vip_num, atime_ns: now_ns }))
        })
        .collect()
}

/// Starts the sender (reading `ring`) and the receiver (inserting into `table`).
pub async fn spawn(
    cfg: SyncConfig,
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    table: ConnTable,
    names: Arc<RwLock<Names>>,
    stats: Arc<SyncStats>,
) -> std::io::Result<()> {
    let sock = Arc::new(UdpSocket::bind(cfg.listen).await?);
    tokio::spawn(send_loop(cfg.clone(), ring, sock.clone(), names.clone(), stats.clone()));
    tokio::spawn(receive_loop(cfg.key, sock, table, names, stats));
    Ok(())
}

async fn send_loop(
    cfg: SyncConfig,
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    sock: Arc<UdpSocket>,
    names: Arc<RwLock<Names>>,
    stats: Arc<SyncStats>,
) {
    // SAFETY: the ring's fd is its map's, owned by the RingBuf inside the AsyncFd for the AsyncFd's whole life.
    let mut ring = match unsafe { AsyncFd::register(ring) } {
        Ok(r) => r,
        Err(e) => return tracing::error!(error = %e, "flow sync: cannot watch the NEW_FLOWS ring; nothing is sent"),
    };
    let mut pending: Vec<(FlowKey, IpAddr)> = Vec::new();
    let mut seq = 0u64;
    // A token bucket of datagrams (one token per datagram sent to every peer), refilled `rate` per second.
    let rate = f64::from(cfg.rate.max(1));
    let (mut tokens, mut last) = (rate, tokio::time::Instant::now());
    // When the oldest pending entry must leave: a partial datagram waits at most FLUSH for company.
    let mut due: Option<tokio::time::Instant> = None;
    loop {
        let wait = due.map_or(FLUSH, |d| d.saturating_duration_since(tokio::time::Instant::now()));
        let ready = tokio::time::timeout(wait, ring.readable_mut()).await;
        // Readiness is cleared before the ring is drained, and the ring is drained on every pass (the flush timer's
        // too), so a report that lands between the two is never left waiting for the next one.
        if let Ok(Ok(mut guard)) = ready {
            guard.clear_ready();
        }
        {
            let names = names.read().unwrap_or_else(|e| e.into_inner()).clone();
            let r = ring.get_mut();
            while let Some(item) = r.next() {
                if item.len() < size_of::<NewFlow>() {
                    continue;
                }
                // SAFETY: the program writes whole NewFlow values; read_unaligned copes with the ring's alignment.
                let f: NewFlow = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                match names.real_addr.get(&f.real_id) {
                    Some(a) => {
                        if pending.is_empty() {
                            due = Some(tokio::time::Instant::now() + FLUSH);
                        }
                        pending.push((f.key, *a));
                    }
                    None => {
                        stats.dropped_unknown.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        while !pending.is_empty() {
            let now = tokio::time::Instant::now();
            tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate);
            last = now;
            let n = pending.len().min(PER_DATAGRAM);
            if n < PER_DATAGRAM && due.is_some_and(|d| now < d) {
                break; // wait for a fuller datagram, until the oldest entry is due
            }
            if tokens < 1.0 {
                stats.dropped_rate.fetch_add(n as u64, Ordering::Relaxed);
                pending.drain(..n);
                continue;
            }
            tokens -= 1.0;
            seq += 1;
            let d = encode(&cfg.key, seq, &pending[..n]);
            for p in &cfg.peers {
                if let Err(e) = sock.send_to(&d, p).await {
                    tracing::debug!(peer = %p, error = %e, "flow sync: send failed");
                }
            }
            stats.sent.fetch_add(n as u64, Ordering::Relaxed);
            pending.drain(..n);
        }
        if pending.is_empty() {
            due = None;
        }
    }
}

async fn receive_loop(
    key: Vec<u8>,
    sock: Arc<UdpSocket>,
    table: ConnTable,
    names: Arc<RwLock<Names>>,
    stats: Arc<SyncStats>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "flow sync: receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(entries) = decode(&key, &buf[..n]) else {
            stats.dropped_auth.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%from, "flow sync: refused a datagram (bad tag, stale or malformed)");
            continue;
        };
        stats.received.fetch_add(entries.len() as u64, Ordering::Relaxed);
        let local = to_local(&names.read().unwrap_or_else(|e| e.into_inner()), &entries, monotonic_ns());
        stats.dropped_unknown.fetch_add((entries.len() - local.len()) as u64, Ordering::Relaxed);
        match table.insert_new(local) {
            Ok(inserted) => {
                stats.inserted.fetch_add(inserted as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "flow sync: inserting peers' flows failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(i: u16) -> FlowKey {
        let (src, family) = addr_key(IpAddr::from([192, 168, 0, i as u8]));
        let (dst, _) = addr_key(IpAddr::from([10, 0, 0, 100]));
        FlowKey { src, dst, sport: i.to_be(), dport: 80u16.to_be(), proto: 6, family, kind: 0, _pad: 0 }
    }

    #[test]
    fn datagrams_round_trip_and_are_refused_when_forged_or_malformed() {
        let key = b"0123456789abcdef0123";
        let entries: Vec<(FlowKey, IpAddr)> =
            (0..PER_DATAGRAM as u16).map(|i| (flow(i), IpAddr::from([10, 0, 0, 11]))).collect();
        let d = encode(key, 7, &entries);
        assert!(d.len() <= 1400, "{} bytes", d.len());
        assert_eq!(decode(key, &d), Some(entries.clone()));
        assert_eq!(service_of(&entries[0].0), Some(ServiceKey::parse("10.0.0.100:80", Proto::Tcp).unwrap()));
        assert_eq!(decode(b"another key of 20b..", &d), None, "wrong key");
        let mut forged = d.clone();
        forged[HEADER + 3] ^= 1;
        assert_eq!(decode(key, &forged), None, "a changed entry");
        assert_eq!(decode(key, &d[..d.len() - 1]), None, "truncated");
        assert_eq!(decode(key, b"LBS1"), None);
        let v6 = vec![(flow(1), "fd00::11".parse().unwrap())];
        assert_eq!(decode(key, &encode(key, 1, &v6)), Some(v6));
    }
}
