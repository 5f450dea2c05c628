//! The dataplane's malformed-packet campaign: random and mutated frames (truncations, bad lengths, IP options,
//! fragments, bad TCP data offsets, VLAN tags, IPv6 extension headers, ICMP errors with garbage inner headers, tiny
//! frames) through BPF_PROG_TEST_RUN, each judged by a strict reference parser: the program may transmit only a
//! well-formed packet for a configured service (or an ICMP error about one), and only with its MACs changed.
use crate::fixture::{configure, real_mac, set_ring, CLIENT, OUR_MAC, VIP, XDP_PASS, XDP_TX};
use crate::packet::{icmp6_packet_too_big, icmp_frag_needed, Pkt, Pkt6, TCP_ACK, TCP_SYN};
use lb_userspace::dataplane::{Dataplane, LB_PROGRAM};
use lb_userspace::model::{Proto, ServiceKey};
use std::collections::BTreeMap;
use std::time::Instant;

pub const VIP6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];

/// The fixtures' services plus TCP [fd00::100]:80 at slot 3.
pub fn configure_campaign(dp: &mut Dataplane) {
    configure(dp);
    let web6 = ServiceKey::parse("[fd00::100]:80", Proto::Tcp).unwrap();
    dp.set_service(web6.vip_key(), 3).unwrap();
    set_ring(dp, 3, &[1, 2, 3]);
}

/// Services of the campaign: (family, address, port, proto). TCP VIP:81 exists but has no real.
fn configured(family: u8, addr: &[u8], port: u16, proto: u8) -> bool {
    match family {
        4 => addr == VIP && ((port == 80 && proto == 6) || (port == 53 && proto == 17) || (port == 81 && proto == 6)),
        _ => addr == VIP6 && port == 80 && proto == 6,
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The L4 header at `l4` of `room` bytes: (source port, destination port) when well formed.
fn l4_ok(f: &[u8], l4: usize, room: usize, proto: u8) -> Option<(u16, u16)> {
    match proto {
        6 if room >= 20 && f.len() >= l4 + 20 => {
            let doff = (f[l4 + 12] >> 4) as usize;
            (doff >= 5 && doff * 4 <= room).then(|| (be16(f, l4), be16(f, l4 + 2)))
        }
        17 if room >= 8 && f.len() >= l4 + 8 => Some((be16(f, l4), be16(f, l4 + 2))),
        _ => None,
    }
}

/// The reference parser: may the program transmit this frame?
pub fn may_transmit(f: &[u8]) -> bool {
    if f.len() < 14 {
        return false;
    }
    match be16(f, 12) {
        0x0800 => {
            if f.len() < 34 || f[14] != 0x45 || be16(f, 20) & 0x3fff != 0 {
                return false;
            }
            let tot = be16(f, 16) as usize;
            if tot < 20 || 14 + tot > f.len() {
                return false;
            }
            let (proto, dst) = (f[23], &f[30..34]);
            if proto == 1 {
                // ICMP frag-needed quoting a packet the VIP sent.
                if tot < 20 + 8 + 20 + 8 || f[34] != 3 || f[35] != 4 {
                    return false;
                }
                let inner = 42;
                let (iproto, isrc) = (f[inner + 9], &f[inner + 12..inner + 16]);
                if f[inner] != 0x45 || be16(f, inner + 6) & 0x1fff != 0 || !(iproto == 6 || iproto == 17) || isrc != dst
                {
                    return false;
                }
                return configured(4, isrc, be16(f, inner + 20), iproto);
            }
            match l4_ok(f, 34, tot - 20, proto) {
                Some((_, dport)) => configured(4, dst, dport, proto),
                None => false,
            }
        }
        0x86dd => {
            if f.len() < 54 || f[14] >> 4 != 6 {
                return false;
            }
            let room = be16(f, 18) as usize;
            if 54 + room > f.len() {
                return false;
            }
            let (next, dst) = (f[20], &f[38..54]);
            if next == 58 {
                if room < 8 + 40 + 8 || f[54] != 2 {
                    return false;
                }
                let inner = 62;
                let (inext, isrc) = (f[inner + 6], &f[inner + 8..inner + 24]);
                if f[inner] >> 4 != 6 || !(inext == 6 || inext == 17) || isrc != dst {
                    return false;
                }
                return configured(6, isrc, be16(f, inner + 40), inext);
            }
            match l4_ok(f, 54, room, next) {
                Some((_, dport)) => configured(6, dst, dport, next),
                None => false,
            }
        }
        _ => false,
    }
}

/// A small fast generator (xorshift), so a seed gives the same campaign.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.u64() % n.max(1) as u64) as usize
    }
}

/// One frame: a well-formed base (often for a service), then zero or more mutations.
pub fn frame(r: &mut Rng) -> (Vec<u8>, &'static str) {
    let port = [80u16, 53, 81, 443][r.below(4)];
    let sport = 1024 + r.below(60000) as u16;
    let flags = [TCP_SYN, TCP_ACK, 0x04, 0x11, 0xff][r.below(5)];
    let mut f = match r.below(7) {
        0 => Pkt::tcp(CLIENT, sport, VIP, port, flags).frame(),
        1 => Pkt::udp(CLIENT, sport, VIP, port).frame(),
        2 => Pkt6::tcp(CLIENT6, sport, VIP6, port, flags).frame(),
        3 => icmp_frag_needed([192, 168, 9, 1], &Pkt::tcp(VIP, port, CLIENT, sport, TCP_ACK), 1280),
        4 => icmp6_packet_too_big(CLIENT6, &Pkt6::tcp(VIP6, port, CLIENT6, sport, TCP_ACK), 1280),
        5 => Pkt::tcp(CLIENT, sport, [10, 0, 0, r.below(256) as u8], port, flags).frame(),
        _ => (0..r.below(120)).map(|_| r.u64() as u8).collect(),
    };
    let what = match r.below(12) {
        0 => "intact",
        1 => {
            f.truncate(r.below(f.len() + 1));
            "truncated"
        }
        2 => {
            for _ in 0..1 + r.below(8) {
                let i = r.below(f.len());
                if let Some(b) = f.get_mut(i) {
                    *b = r.u64() as u8;
                }
            }
            "bytes flipped"
        }
        3 if f.len() > 17 => {
            let v = r.u64() as u16;
            f[16..18].copy_from_slice(&v.to_be_bytes()); // IPv4 total length / IPv6 flow label
            if let Some(x) = f.get_mut(18..20) {
                x.copy_from_slice(&v.to_be_bytes()); // IPv6 payload length
            }
            "bad lengths"
        }
        4 if f.len() > 14 => {
            f[14] = 0x40 | (r.below(16) as u8); // IHL
            "IHL"
        }
        5 if f.len() > 21 => {
            f[20] = r.u64() as u8 & 0x3f; // fragment bits
            f[21] = r.u64() as u8;
            "fragment"
        }
        6 if f.len() > 46 => {
            f[46] = (r.below(16) as u8) << 4; // TCP data offset
            "TCP data offset"
        }
        7 if f.len() >= 14 => {
            f.splice(12..12, [0x81, 0x00, 0x00, 0x05]); // a VLAN tag
            "VLAN"
        }
        8 if f.len() > 20 && be16(&f, 12) == 0x86dd => {
            f[20] = [0, 43, 44, 50, 51, 60, 135][r.below(7)]; // extension header before L4
            "IPv6 extension header"
        }
        9 if f.len() > 42 => {
            for b in f.iter_mut().skip(42) {
                *b = r.u64() as u8; // the quoted inner packet (or L4) is garbage
            }
            "garbage inner"
        }
        10 => {
            f.truncate(r.below(24));
            "tiny"
        }
        _ => {
            let extra = r.below(64);
            f.extend((0..extra).map(|_| r.u64() as u8));
            "trailing bytes"
        }
    };
    (f, what)
}

/// What a campaign did.
#[derive(Debug, Default)]
pub struct Report {
    pub frames: u64,
    /// BPF_PROG_TEST_RUN refused the input (shorter than an Ethernet header).
    pub refused_by_kernel: u64,
    pub actions: BTreeMap<&'static str, u64>,
    pub by_mutation: BTreeMap<&'static str, (u64, u64)>,
    /// Frames the program transmitted that the reference parser would not have, or changed beyond the MACs.
    pub violations: Vec<String>,
    pub secs: f64,
}

/// Runs `frames` frames (or until `deadline`) from `seed` through the program.
pub fn campaign(dp: &Dataplane, frames: u64, seed: u64, deadline: Option<Instant>) -> Report {
    let mut r = Rng::new(seed);
    let mut rep = Report::default();
    let start = Instant::now();
    while rep.frames < frames && deadline.is_none_or(|d| Instant::now() < d) {
        let (f, what) = frame(&mut r);
        rep.frames += 1;
        let Ok((action, out, _)) = dp.test_run(LB_PROGRAM, &f, 1) else {
            rep.refused_by_kernel += 1;
            continue;
        };
        let name = match action {
            XDP_TX => "tx",
            XDP_PASS => "pass",
            0 => "aborted",
            1 => "drop",
            _ => "other",
        };
        *rep.actions.entry(name).or_default() += 1;
        let e = rep.by_mutation.entry(what).or_default();
        e.0 += 1;
        if action == XDP_TX {
            e.1 += 1;
            let macs_only = out.len() == f.len()
                && out[12..] == f[12..]
                && out[6..12] == OUR_MAC
                && (1..=4).any(|id| out[..6] == real_mac(id));
            if !may_transmit(&f) || !macs_only {
                rep.violations.push(format!("{what}: {}", f.iter().map(|b| format!("{b:02x}")).collect::<String>()));
            }
        } else if action != XDP_PASS {
            rep.violations.push(format!("{what}: action {action}"));
        }
    }
    rep.secs = start.elapsed().as_secs_f64();
    rep
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} frames in {:.1} s ({:.0}/s); refused by the kernel (< 14 bytes): {}",
            self.frames,
            self.secs,
            self.frames as f64 / self.secs.max(1e-9),
            self.refused_by_kernel
        )?;
        writeln!(f, "actions: {:?}", self.actions)?;
        for (what, (n, tx)) in &self.by_mutation {
            writeln!(f, "  {what:<22} {n:>10} frames, {tx:>9} transmitted")?;
        }
        write!(f, "violations: {}", self.violations.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_parser_accepts_the_fixtures_and_refuses_their_breakage() {
        assert!(may_transmit(&Pkt::tcp(CLIENT, 1000, VIP, 80, TCP_ACK).frame()));
        assert!(may_transmit(&Pkt6::tcp(CLIENT6, 1000, VIP6, 80, TCP_ACK).frame()));
        assert!(may_transmit(&icmp_frag_needed([1, 2, 3, 4], &Pkt::tcp(VIP, 80, CLIENT, 1000, TCP_ACK), 1280)));
        assert!(!may_transmit(&Pkt::tcp(CLIENT, 1000, VIP, 443, TCP_ACK).frame()), "no such service");
        let mut frag = Pkt::tcp(CLIENT, 1000, VIP, 80, TCP_ACK).frame();
        frag[20] = 0x20;
        assert!(!may_transmit(&frag));
        let f = Pkt::tcp(CLIENT, 1000, VIP, 80, TCP_ACK).frame();
        assert!(!may_transmit(&f[..40]), "truncated");
    }
}
