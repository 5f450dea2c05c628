//! The malformed-packet campaign: seeded random and mutated frames through the XDP program (BPF_PROG_TEST_RUN),
//! with a strict reference parser as oracle. XDP_TX is allowed only for a frame the parser accepts (a well-formed
//! IPv4/IPv6 TCP/UDP packet to a configured service, or an ICMP frag-needed / packet-too-big to a VIP quoting a
//! well-formed header sent from a configured service), and a transmitted frame may differ from its input only in its
//! two MAC addresses. Used by `cargo xtask fuzz dataplane` (benches/xdp_fuzz.rs) and tests/dataplane_fuzz.rs.
use crate::packet::{icmp6_packet_too_big, icmp_frag_needed, Pkt, Pkt6, TCP_ACK, TCP_SYN};
use crate::xdpobj::{action_name, XdpObject, XDP_PASS, XDP_TX};
use lb_common::{global, LbConfig, RealDef, VipKey, FAMILY_V4, FAMILY_V6, REAL_F_VALID, RING_SIZE};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

pub const VIP: [u8; 4] = [10, 0, 0, 100];
pub const VIP6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
/// (port, proto) of the services on both VIPs: TCP 80 and 443, UDP 53.
pub const SERVICES: [(u16, u8); 3] = [(80, 6), (443, 6), (53, 17)];
/// A VIP address with no service on it in the campaign (traffic to it must pass).
const NOT_VIP: [u8; 4] = [10, 0, 0, 101];
const CLIENT: [u8; 4] = [192, 168, 1, 7];
const CLIENT6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];

/// The LB's MAC (LB_CFG): the source MAC of every transmitted frame.
pub const SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

/// The MAC of real `id` (1..=8) in the campaign.
fn real_mac(m: &[u8]) -> bool {
    m[..5] == [2, 0xbb, 0, 0, 0] && (1..=8).contains(&m[5])
}

/// Writes the campaign's services (IPv4 and IPv6, each with 8 reals in its Maglev ring) and source MAC.
pub fn configure(obj: &XdpObject) -> anyhow::Result<()> {
    obj.set_cfg(LbConfig { src_mac: SRC_MAC, ..LbConfig::default() })?;
    let mut entries = Vec::new();
    for id in 1..=8u32 {
        let def =
            RealDef { addr: [0; 16], mac: [2, 0xbb, 0, 0, 0, id as u8], _pad: [0; 2], flags: REAL_F_VALID, _pad2: 0 };
        obj.set_real(id, def)?;
        entries.push(lb_userspace::maglev::Entry { id, addr: IpAddr::from([10, 0, 1, id as u8]), weight: 1 });
    }
    let ring = lb_userspace::maglev::build(&entries, RING_SIZE);
    let mut v4 = [0u8; 16];
    v4[..4].copy_from_slice(&VIP);
    let mut n = 0;
    for (addr, family) in [(v4, FAMILY_V4), (VIP6, FAMILY_V6)] {
        for (port, proto) in SERVICES {
            obj.set_service(VipKey { addr, port: port.to_be(), proto, family }, n, &ring)?;
            n += 1;
        }
    }
    Ok(())
}

/// The services `configure` wrote, as the oracle sees them: (family, port, proto).
pub fn configured() -> Vec<(u8, u16, u8)> {
    [FAMILY_V4, FAMILY_V6].iter().flat_map(|&f| SERVICES.iter().map(move |&(port, proto)| (f, port, proto))).collect()
}

/// splitmix64: a seeded generator, so a failing campaign is reproduced by its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.u64() % n as u64) as usize
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn byte(&mut self) -> u8 {
        self.u64() as u8
    }
}

/// What was done to a frame; a frame gets its base kind's name, then each mutation's.
pub const MUTATIONS: [&str; 14] = [
    "intact",
    "truncated",
    "tiny",
    "ip-total-length",
    "ipv6-payload-length",
    "ihl/ip-options",
    "fragment",
    "tcp-data-offset",
    "icmp-garbage-inner",
    "ipv6-ext-header",
    "vlan-tag",
    "bytes-flipped",
    "trailing-bytes",
    "random-bytes",
];

/// A well-formed frame to start from; its kind for the report.
fn base(rng: &mut Rng) -> (Vec<u8>, &'static str) {
    let client = [CLIENT[0], CLIENT[1], rng.byte(), rng.byte()];
    let mut client6 = CLIENT6;
    client6[12..].copy_from_slice(&(rng.u64() as u32).to_be_bytes());
    let sport = 1024 + rng.below(60000) as u16;
    let (port, proto) = SERVICES[rng.below(SERVICES.len())];
    let flags = [TCP_SYN, TCP_ACK, TCP_ACK | 0x08, TCP_SYN | 0x04, 0x01 | TCP_ACK, 0][rng.below(6)];
    let payload = [0, 0, 1, 7, 64, 512][rng.below(6)];
    let mut vip6 = VIP6;
    match rng.below(12) {
        0..=2 => {
            let mut p =
                if proto == 6 { Pkt::tcp(client, sport, VIP, port, flags) } else { Pkt::udp(client, sport, VIP, port) };
            p.payload = payload;
            (p.frame(), "ipv4-to-service")
        }
        3..=5 => {
            let mut p = if proto == 6 {
                Pkt6::tcp(client6, sport, vip6, port, flags)
            } else {
                Pkt6::udp(client6, sport, vip6, port)
            };
            p.payload = payload;
            (p.frame(), "ipv6-to-service")
        }
        6 => {
            // Not a service: another address, a port or protocol the VIP does not serve.
            let p = match rng.below(3) {
                0 => Pkt::tcp(client, sport, NOT_VIP, 80, flags),
                1 => Pkt::tcp(client, sport, VIP, 8080, flags),
                _ => Pkt::udp(client, sport, VIP, 80),
            };
            (p.frame(), "ipv4-not-service")
        }
        7 => {
            vip6[15] = 1;
            (Pkt6::tcp(client6, sport, vip6, 80, flags).frame(), "ipv6-not-service")
        }
        8 | 9 => {
            let quoted = if proto == 6 {
                Pkt::tcp(VIP, port, client, sport, TCP_ACK)
            } else {
                Pkt::udp(VIP, port, client, sport)
            };
            let mut f = icmp_frag_needed([10, 9, 9, 1], &quoted, 1280);
            if rng.chance(4) {
                f[34] = [0, 3, 5, 11, 8][rng.below(5)]; // another ICMP type
                f[35] = rng.below(16) as u8;
            }
            (f, "icmpv4-error")
        }
        10 => {
            let mut quoted = Pkt6::tcp(vip6, port, client6, sport, TCP_ACK);
            if proto == 17 {
                quoted = Pkt6::udp(vip6, port, client6, sport);
            }
            let mut f = icmp6_packet_too_big([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], &quoted, 1280);
            if rng.chance(4) {
                f[54] = [1, 3, 4, 128, 135][rng.below(5)];
            }
            (f, "icmpv6-error")
        }
        _ => {
            // Bytes with a plausible Ethernet header and EtherType, the rest random.
            let len = 14 + rng.below(120);
            let mut f: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            let et: u16 = [0x0800, 0x86dd, 0x8100, 0x0806, 0x88a8][rng.below(5)];
            f[12..14].copy_from_slice(&et.to_be_bytes());
            if et == 0x0800 && len > 15 {
                f[14] = 0x45;
            }
            if et == 0x86dd && len > 15 {
                f[14] = 0x60;
            }
            (f, "random-bytes")
        }
    }
}

fn is_v4(f: &[u8]) -> bool {
    f.len() >= 34 && f[12..14] == [0x08, 0x00]
}

fn is_v6(f: &[u8]) -> bool {
    f.len() >= 54 && f[12..14] == [0x86, 0xdd]
}

/// One mutation of `f`, by index into MUTATIONS (0 and 13 leave the frame as it is).
fn mutate(rng: &mut Rng, f: &mut Vec<u8>, m: usize) {
    match m {
        1 => {
            let n = rng.below(f.len() + 1);
            f.truncate(n);
        }
        2 => {
            let n = rng.below(20);
            f.truncate(n);
        }
        3 if is_v4(f) => {
            let v: u16 = match rng.below(4) {
                0 => rng.below(20) as u16,
                1 => (f.len() - 14 + 1 + rng.below(64)) as u16,
                2 => (f.len() - 14).saturating_sub(1 + rng.below(30)) as u16,
                _ => rng.u64() as u16,
            };
            f[16..18].copy_from_slice(&v.to_be_bytes());
        }
        4 if is_v6(f) => {
            let v: u16 = match rng.below(3) {
                0 => (f.len() - 54 + 1 + rng.below(64)) as u16,
                1 => (f.len() - 54).saturating_sub(1 + rng.below(30)) as u16,
                _ => rng.u64() as u16,
            };
            f[18..20].copy_from_slice(&v.to_be_bytes());
        }
        5 if is_v4(f) => {
            // A new IHL; with a larger IHL, real option bytes are inserted after the header half the time.
            let ihl = rng.below(16) as u8;
            f[14] = 0x40 | ihl;
            if ihl > 5 && rng.chance(2) {
                let extra = usize::from(ihl - 5) * 4;
                let opts: Vec<u8> =
                    (0..extra).map(|i| if i == 0 { [1, 7, 68, 148][rng.below(4)] } else { rng.byte() }).collect();
                f.splice(34..34, opts);
                let tot = u16::from_be_bytes([f[16], f[17]]).wrapping_add(extra as u16);
                f[16..18].copy_from_slice(&tot.to_be_bytes());
            }
        }
        6 if is_v4(f) => {
            let v: u16 = match rng.below(4) {
                0 => 0x2000,                                  // MF, offset 0: a first fragment
                1 => 0x2000 | (1 + rng.below(0x1fff)) as u16, // MF and offset
                2 => (1 + rng.below(0x1fff)) as u16,          // last fragment
                _ => 0x8000 | (rng.u64() as u16 & 0x7fff),    // reserved bit and anything
            };
            f[20..22].copy_from_slice(&v.to_be_bytes());
        }
        7 => {
            let l4 = if is_v4(f) && f[23] == 6 {
                Some(14 + usize::from(f[14] & 0xf) * 4)
            } else if is_v6(f) && f[20] == 6 {
                Some(54)
            } else {
                None
            };
            if let Some(at) = l4.map(|o| o + 12).filter(|&o| o < f.len()) {
                f[at] = ((rng.below(16) as u8) << 4) | (f[at] & 0xf);
            }
        }
        8 => {
            // Garbage in the quoted header (ICMP) or the L4 header (others): 1-8 random bytes after the outer header.
            let start = if is_v4(f) && f[23] == 1 {
                42
            } else if is_v6(f) && f[20] == 58 {
                62
            } else if is_v4(f) {
                34
            } else {
                54
            };
            if start < f.len() {
                for _ in 0..1 + rng.below(8) {
                    let i = start + rng.below((f.len() - start).min(48));
                    f[i] = rng.byte();
                }
            }
        }
        9 if is_v6(f) => {
            // An extension header between the IPv6 header and its payload (hop-by-hop, routing, fragment, dest
            // options, or one of unknown type), next header and payload length kept consistent.
            let kind = [0u8, 43, 44, 60, 135, 253][rng.below(6)];
            let next = f[20];
            let mut ext = vec![next, 0, 0, 0, 0, 0, 0, 0];
            if kind == 44 {
                let fo: u16 = if rng.chance(2) { 0 } else { (rng.below(0x1fff) as u16) << 3 };
                ext[2..4].copy_from_slice(&(fo | rng.below(2) as u16).to_be_bytes());
            } else if rng.chance(2) {
                ext[1] = 1;
                ext.extend((0..8).map(|_| rng.byte()));
            }
            let len = ext.len() as u16;
            f.splice(54..54, ext);
            f[20] = kind;
            let pl = u16::from_be_bytes([f[18], f[19]]).wrapping_add(len);
            f[18..20].copy_from_slice(&pl.to_be_bytes());
        }
        10 if f.len() >= 14 => {
            let mut tag = vec![0x81, 0x00, rng.byte() & 0x0f, rng.byte()];
            if rng.chance(4) {
                tag.splice(0..0, [0x88, 0xa8, 0, rng.byte()]); // QinQ
            }
            f.splice(12..12, tag);
        }
        11 => {
            for _ in 0..1 + rng.below(4) {
                if !f.is_empty() {
                    let i = rng.below(f.len().min(80));
                    f[i] ^= 1 << rng.below(8);
                }
            }
        }
        12 => {
            let n = 1 + rng.below(64);
            f.extend((0..n).map(|_| rng.byte()));
        }
        _ => {}
    }
}

/// The campaign's next frame: a base frame with zero to three mutations; the names of what was done.
pub fn frame(rng: &mut Rng) -> (Vec<u8>, Vec<&'static str>) {
    let (mut f, kind) = base(rng);
    let mut done = vec![kind];
    if kind == "random-bytes" {
        return (f, done);
    }
    let n = [0, 1, 1, 1, 2, 2, 3][rng.below(7)];
    if n == 0 {
        done.push(MUTATIONS[0]);
    }
    for _ in 0..n {
        let m = 1 + rng.below(MUTATIONS.len() - 2);
        mutate(rng, &mut f, m);
        done.push(MUTATIONS[m]);
    }
    (f, done)
}

/// The strict reference parser: Some(what) when XDP_TX of `f` is allowed, None otherwise.
pub fn may_transmit(f: &[u8], services: &[(u8, u16, u8)]) -> Option<&'static str> {
    if f.len() < 14 {
        return None;
    }
    let served = |family: u8, port: u16, proto: u8| services.contains(&(family, port, proto));
    match u16::from_be_bytes([f[12], f[13]]) {
        0x0800 => {
            let (ip, l4) = ipv4(&f[14..])?;
            if ip[16..20] != VIP {
                return None;
            }
            match ip[9] {
                6 | 17 => {
                    let dport = l4_ports(l4, ip[9])?.1;
                    served(FAMILY_V4, dport, ip[9]).then_some("ipv4")
                }
                1 => {
                    // ICMP type 3 code 4, 8-byte header, then a quoted IPv4 header (IHL 5, no later fragment) and 8
                    // L4 bytes, sent from a service.
                    if l4.len() < 8 + 28 || l4[0] != 3 || l4[1] != 4 {
                        return None;
                    }
                    let q = &l4[8..];
                    if q[0] != 0x45 || !(q[9] == 6 || q[9] == 17) || u16::from_be_bytes([q[6], q[7]]) & 0x1fff != 0 {
                        return None;
                    }
                    let sport = u16::from_be_bytes([q[20], q[21]]);
                    (q[12..16] == VIP && served(FAMILY_V4, sport, q[9])).then_some("icmpv4")
                }
                _ => None,
            }
        }
        0x86dd => {
            let ip = f.get(14..54)?;
            if ip[0] >> 4 != 6 || ip[24..40] != VIP6 {
                return None;
            }
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let l4 = f.get(54..54 + plen)?;
            match ip[6] {
                6 | 17 => {
                    let dport = l4_ports(l4, ip[6])?.1;
                    served(FAMILY_V6, dport, ip[6]).then_some("ipv6")
                }
                58 => {
                    // Type 2; its code is "set to 0 by the originator and ignored by the receiver" (RFC 4443 3.2).
                    if l4.len() < 8 + 48 || l4[0] != 2 {
                        return None;
                    }
                    let q = &l4[8..];
                    if q[0] >> 4 != 6 || !(q[6] == 6 || q[6] == 17) {
                        return None;
                    }
                    let sport = u16::from_be_bytes([q[40], q[41]]);
                    (q[8..24] == VIP6 && served(FAMILY_V6, sport, q[6])).then_some("icmpv6")
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// An IPv4 header with IHL 5, not a fragment, total length within the frame: (header, L4 bytes up to total length).
fn ipv4(p: &[u8]) -> Option<(&[u8], &[u8])> {
    let ip = p.get(..20)?;
    if ip[0] != 0x45 || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None;
    }
    let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if tot < 20 || tot > p.len() {
        return None;
    }
    Some((ip, &p[20..tot]))
}

/// (source, destination) port of a TCP (data offset >= 5 and within the packet) or UDP (8-byte header) header.
fn l4_ports(l4: &[u8], proto: u8) -> Option<(u16, u16)> {
    let need = if proto == 6 {
        let doff = usize::from(*l4.get(12)? >> 4) * 4;
        if doff < 20 {
            return None;
        }
        doff
    } else {
        8
    };
    if l4.len() < need {
        return None;
    }
    Some((u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]])))
}

/// What makes a frame with an ICMP error refused, for grouping violations (the usual kind of near miss).
fn violation_detail(f: &[u8]) -> &'static str {
    let q = if is_v4(f) && f[23] == 1 && f.len() >= 42 + 20 {
        &f[42..]
    } else if is_v6(f) && f[20] == 58 && f.len() >= 62 + 40 {
        return "ICMPv6 error";
    } else {
        return "not an ICMP error";
    };
    if u16::from_be_bytes([q[6], q[7]]) & 0x1fff != 0 {
        "ICMPv4 quoting a non-first fragment (no L4 header quoted)"
    } else if q[0] != 0x45 {
        "ICMPv4 quoting a header with IP options or a bad version/IHL"
    } else {
        "ICMPv4 error, other"
    }
}

/// Names of GLOBAL_STATS indexes, for the per-reason report.
pub fn reason_name(i: u32) -> &'static str {
    match i {
        global::TX => "tx",
        global::PASS_NOT_VIP => "pass: not for a service",
        global::PASS_MALFORMED => "pass: malformed",
        global::PASS_FRAG_OR_OPTIONS => "pass: fragment or IP options",
        global::PASS_NO_REAL => "pass: no usable real",
        global::TX_ICMP => "tx: ICMP error to the flow's real",
        global::PASS_EXT_HEADERS => "pass: IPv6 extension headers",
        _ => "other",
    }
}

#[derive(Default)]
pub struct Report {
    pub frames: u64,
    /// Refused by BPF_PROG_TEST_RUN itself (errno), e.g. shorter than an Ethernet header.
    pub refused: BTreeMap<i32, u64>,
    pub actions: BTreeMap<u32, u64>,
    /// Per base kind or mutation: (frames, transmitted).
    pub by_mutation: BTreeMap<&'static str, (u64, u64)>,
    /// Transmitted frames by what the reference parser accepted them as.
    pub tx_as: BTreeMap<&'static str, u64>,
    /// Violations (at most the first 20 are kept whole), and their count by what was wrong.
    pub violations: u64,
    pub violation_kinds: BTreeMap<String, u64>,
    pub examples: Vec<String>,
}

impl Report {
    pub fn print(&self) {
        println!("frames: {}", self.frames);
        for (errno, n) in &self.refused {
            println!("  refused by the kernel (errno {errno}): {n}");
        }
        for (a, n) in &self.actions {
            println!("  XDP_{}: {n}", action_name(*a));
        }
        println!("transmitted, as the reference parser reads them:");
        for (k, n) in &self.tx_as {
            println!("  {k}: {n}");
        }
        println!("by base frame and mutation (frames / transmitted):");
        for (k, (n, tx)) in &self.by_mutation {
            println!("  {k:<22} {n:>10} / {tx}");
        }
        println!("violations: {}", self.violations);
        for (k, n) in &self.violation_kinds {
            println!("  {n:>8}  {k}");
        }
        for e in &self.examples {
            println!("{e}");
        }
    }
}

pub fn hex(f: &[u8]) -> String {
    let mut s = String::with_capacity(f.len() * 2);
    for b in f {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Runs `frames` frames (or until `deadline`) from `seed` through the program `lb` of `obj`; counts and violations.
pub fn campaign(obj: &XdpObject, seed: u64, frames: u64, deadline: Option<std::time::Instant>) -> Report {
    let services = configured();
    let mut rng = Rng::new(seed);
    let mut r = Report::default();
    let mut out = vec![0u8; 4096];
    for n in 0..frames {
        if n % 4096 == 0 && deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            break;
        }
        let (f, done) = frame(&mut rng);
        r.frames += 1;
        let res = obj.run_once(lb_userspace::dataplane::LB_PROGRAM, &f, &mut out);
        let tx = matches!(res, Ok((XDP_TX, _)));
        for d in &done {
            let e = r.by_mutation.entry(d).or_default();
            e.0 += 1;
            e.1 += u64::from(tx);
        }
        let (action, len) = match res {
            Ok(x) => x,
            Err(errno) => {
                *r.refused.entry(errno).or_default() += 1;
                continue;
            }
        };
        *r.actions.entry(action).or_default() += 1;
        let mut bad = None;
        if action == XDP_TX {
            match may_transmit(&f, &services) {
                None => bad = Some("XDP_TX of a frame the reference parser refuses"),
                Some(k) => {
                    *r.tx_as.entry(k).or_default() += 1;
                    if len != f.len() || out[12..len] != f[12..] {
                        bad = Some("XDP_TX changed more than the MAC addresses");
                    } else if out[6..12] != SRC_MAC || !real_mac(&out[..6]) {
                        bad = Some("XDP_TX with MACs other than (a real's, the LB's)");
                    }
                }
            }
        } else if action == XDP_PASS {
            if len != f.len() || out[..len] != f[..] {
                bad = Some("XDP_PASS of a changed frame (the kernel would receive it altered)");
            }
        } else {
            // The program decides between TX and PASS only: anything else (ABORTED above all) is a fault.
            bad = Some("an action other than XDP_TX or XDP_PASS");
        }
        if let Some(why) = bad {
            r.violations += 1;
            *r.violation_kinds.entry(format!("{why}: {}", violation_detail(&f))).or_default() += 1;
            if r.examples.len() < 20 {
                r.examples.push(format!(
                    "VIOLATION (frame {n}, seed {seed:#x}, {}): {why}\n  in:  {}\n  out: {}",
                    done.join("+"),
                    hex(&f),
                    hex(&out[..len])
                ));
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_parser_accepts_well_formed_frames_and_refuses_their_defects() {
        let s = configured();
        let ok = Pkt::tcp(CLIENT, 40000, VIP, 80, TCP_SYN).frame();
        assert_eq!(may_transmit(&ok, &s), Some("ipv4"));
        assert_eq!(may_transmit(&Pkt::udp(CLIENT, 4000, VIP, 53).frame(), &s), Some("ipv4"));
        assert_eq!(may_transmit(&Pkt::udp(CLIENT, 4000, VIP, 80).frame(), &s), None, "UDP to a TCP-only port");
        assert_eq!(may_transmit(&Pkt::tcp(CLIENT, 4000, NOT_VIP, 80, TCP_SYN).frame(), &s), None);
        let mut frag = ok.clone();
        frag[20] = 0x20;
        assert_eq!(may_transmit(&frag, &s), None, "MF set");
        let mut df = ok.clone();
        df[20] = 0x40;
        assert_eq!(may_transmit(&df, &s), Some("ipv4"), "DF alone is not a fragment");
        let mut ihl = ok.clone();
        ihl[14] = 0x46;
        assert_eq!(may_transmit(&ihl, &s), None);
        let mut doff = ok.clone();
        doff[34 + 12] = 0x40;
        assert_eq!(may_transmit(&doff, &s), None, "data offset 4");
        doff[34 + 12] = 0x60;
        assert_eq!(may_transmit(&doff, &s), None, "data offset beyond the packet");
        let mut long = ok.clone();
        long[17] += 1;
        assert_eq!(may_transmit(&long, &s), None, "total length beyond the frame");
        assert_eq!(may_transmit(&ok[..ok.len() - 1], &s), None, "truncated");
        let mut vlan = ok.clone();
        vlan.splice(12..12, [0x81, 0, 0, 1]);
        assert_eq!(may_transmit(&vlan, &s), None);

        let v6 = Pkt6::tcp(CLIENT6, 40000, VIP6, 443, TCP_ACK).frame();
        assert_eq!(may_transmit(&v6, &s), Some("ipv6"));
        let mut ext = v6.clone();
        ext[20] = 0;
        assert_eq!(may_transmit(&ext, &s), None, "hop-by-hop header");
        assert_eq!(may_transmit(&v6[..v6.len() - 1], &s), None, "payload length beyond the frame");

        let icmp = icmp_frag_needed([10, 9, 9, 1], &Pkt::tcp(VIP, 80, CLIENT, 40000, TCP_ACK), 1280);
        assert_eq!(may_transmit(&icmp, &s), Some("icmpv4"));
        let other_port = icmp_frag_needed([10, 9, 9, 1], &Pkt::tcp(VIP, 81, CLIENT, 40000, TCP_ACK), 1280);
        assert_eq!(may_transmit(&other_port, &s), None, "quoted packet not from a service");
        let mut later_fragment = icmp.clone();
        later_fragment[42 + 7] = 0x80;
        assert_eq!(may_transmit(&later_fragment, &s), None, "quoting a non-first fragment: no ports quoted");
        later_fragment[42 + 7] = 0;
        later_fragment[42 + 6] = 0x20;
        assert_eq!(may_transmit(&later_fragment, &s), Some("icmpv4"), "a first fragment quotes its ports");
        let mut code = icmp.clone();
        code[35] = 1;
        assert_eq!(may_transmit(&code, &s), None, "host unreachable");
        let ptb = icmp6_packet_too_big(
            [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            &Pkt6::tcp(VIP6, 80, CLIENT6, 40000, TCP_ACK),
            1280,
        );
        assert_eq!(may_transmit(&ptb, &s), Some("icmpv6"));
        assert_eq!(may_transmit(&ptb[..ptb.len() - 1], &s), None);
    }

    #[test]
    fn mutations_produce_every_kind_and_stay_within_a_page() {
        let mut rng = Rng::new(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200_000 {
            let (f, done) = frame(&mut rng);
            assert!(f.len() < 2048, "{} bytes", f.len());
            seen.extend(done);
        }
        for m in MUTATIONS {
            assert!(seen.contains(m), "mutation {m} never happened");
        }
    }
}
