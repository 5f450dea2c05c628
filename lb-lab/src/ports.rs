//! Loopback ports for test daemons, taken below the kernel's ephemeral range so that no client's outgoing
//! connection can grab a port between the moment a test picks it and the moment its daemon binds it.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Ports handed out: [LOW, HIGH). Linux's default ephemeral range starts at 32768 (and the lab's machines keep the
/// default), so outgoing connections never take one of these; binding port 0 (the usual trick) races with them.
const LOW: u32 = 20_000;
const HIGH: u32 = 32_000;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A loopback TCP port nobody listens on right now, outside the ephemeral range. Test binaries run one after
/// another, but each starts at an offset derived from its PID so that two running at once rarely probe the same
/// ports, and every candidate is checked by binding it (TCP on 127.0.0.1 and 0.0.0.0, UDP on 127.0.0.1).
pub fn free_port() -> u16 {
    let span = HIGH - LOW;
    let base = (std::process::id().wrapping_mul(7919)) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (base + n) % span) as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("0.0.0.0", port)).is_ok();
        if tcp && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{HIGH}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
        for p in [a, b] {
            assert!((LOW..HIGH).contains(&(p as u32)), "{p}");
            TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
