//! Builds Ethernet IPv4/IPv6 TCP/UDP frames and ICMP errors about them for packet fixtures and the XDP benchmark.
//! Every checksum (IPv4 header, TCP/UDP over the pseudo-header, ICMP, ICMPv6) is correct, so a frame that leaves a
//! namespace test's XDP_TX is accepted by a real server's kernel, and the fuzz campaign's mutations start from valid.

pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

#[derive(Clone, Debug)]
pub struct Pkt {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    pub payload: usize,
}

impl Pkt {
    pub fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Self {
        Pkt { src, dst, sport, dport, proto: 6, tcp_flags: flags, payload: 0 }
    }
    pub fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Self {
        Pkt { src, dst, sport, dport, proto: 17, tcp_flags: 0, payload: 16 }
    }

    /// The frame as it arrives at the LB: to the LB's MAC from the client's.
    pub fn frame(&self) -> Vec<u8> {
        let l4 = if self.proto == 6 { 20 } else { 8 };
        let tot = 20 + l4 + self.payload;
        let mut f = Vec::with_capacity(14 + tot);
        f.extend_from_slice(&LB_MAC);
        f.extend_from_slice(&CLIENT_MAC);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, self.proto, 0, 0];
        ip[2..4].copy_from_slice(&(tot as u16).to_be_bytes());
        ip.extend_from_slice(&self.src);
        ip.extend_from_slice(&self.dst);
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&self.sport.to_be_bytes());
        f.extend_from_slice(&self.dport.to_be_bytes());
        if self.proto == 6 {
            f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, self.tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
        } else {
            f.extend_from_slice(&((8 + self.payload) as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
        }
        f.resize(14 + tot, 0xab);
        let mut pseudo = Vec::with_capacity(12);
        pseudo.extend_from_slice(&self.src);
        pseudo.extend_from_slice(&self.dst);
        pseudo.extend_from_slice(&[0, self.proto]);
        pseudo.extend_from_slice(&((l4 + self.payload) as u16).to_be_bytes());
        set_l4_checksum(&pseudo, &mut f[34..], self.proto);
        f
    }
}

/// Writes the TCP (offset 16) or UDP (offset 6) checksum of `seg` over `pseudo` + `seg`; UDP's 0 is sent as 0xffff.
fn set_l4_checksum(pseudo: &[u8], seg: &mut [u8], proto: u8) {
    let at = if proto == 6 { 16 } else { 6 };
    seg[at..at + 2].copy_from_slice(&[0, 0]);
    let mut sum = checksum_parts(&[pseudo, seg]);
    if proto == 17 && sum == 0 {
        sum = 0xffff;
    }
    seg[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// The Internet checksum of several buffers laid end to end (each starting at an even offset but the last).
fn checksum_parts(parts: &[&[u8]]) -> u16 {
    let mut s: u64 = 0;
    for p in parts {
        s += p.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u64).sum::<u64>();
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The IPv6 pseudo-header of an upper-layer packet (RFC 8200 8.1).
fn pseudo6(src: &[u8; 16], dst: &[u8; 16], len: usize, next: u8) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, next]);
    p
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An IPv6 TCP/UDP packet (no extension headers).
#[derive(Clone, Debug)]
pub struct Pkt6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    pub payload: usize,
}

impl Pkt6 {
    pub fn tcp(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16, flags: u8) -> Self {
        Pkt6 { src, dst, sport, dport, proto: 6, tcp_flags: flags, payload: 0 }
    }
    pub fn udp(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16) -> Self {
        Pkt6 { src, dst, sport, dport, proto: 17, tcp_flags: 0, payload: 16 }
    }

    /// The frame as it arrives at the LB: to the LB's MAC from the client's.
    pub fn frame(&self) -> Vec<u8> {
        let l4 = if self.proto == 6 { 20 } else { 8 };
        let plen = l4 + self.payload;
        let mut f = Vec::with_capacity(14 + 40 + plen);
        f.extend_from_slice(&LB_MAC);
        f.extend_from_slice(&CLIENT_MAC);
        f.extend_from_slice(&0x86ddu16.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(plen as u16).to_be_bytes());
        f.extend_from_slice(&[self.proto, 64]);
        f.extend_from_slice(&self.src);
        f.extend_from_slice(&self.dst);
        f.extend_from_slice(&self.sport.to_be_bytes());
        f.extend_from_slice(&self.dport.to_be_bytes());
        if self.proto == 6 {
            f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, self.tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
        } else {
            f.extend_from_slice(&(plen as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
        }
        f.resize(14 + 40 + plen, 0xab);
        let pseudo = pseudo6(&self.src, &self.dst, plen, self.proto);
        set_l4_checksum(&pseudo, &mut f[54..], self.proto);
        f
    }
}

/// An ICMPv4 "fragmentation needed" (type 3 code 4) from `router` to the source of `quoted` (a packet the VIP
/// sent to a client), quoting its IP header and first 8 L4 bytes, as a router on the way to the client sends it.
pub fn icmp_frag_needed(router: [u8; 4], quoted: &Pkt, mtu: u16) -> Vec<u8> {
    let inner = &quoted.frame()[14..14 + 20 + 8];
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(inner);
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let tot = 20 + icmp.len();
    let mut f = Vec::with_capacity(14 + tot);
    f.extend_from_slice(&LB_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = vec![0x45, 0xc0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&(tot as u16).to_be_bytes());
    ip.extend_from_slice(&router);
    ip.extend_from_slice(&quoted.src);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

/// An ICMPv6 "packet too big" (type 2) from `router` to the source of `quoted`, quoting its IPv6 header and first 8
/// L4 bytes.
pub fn icmp6_packet_too_big(router: [u8; 16], quoted: &Pkt6, mtu: u32) -> Vec<u8> {
    let inner = &quoted.frame()[14..14 + 40 + 8];
    let mut icmp = vec![2, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(inner);
    let sum = checksum_parts(&[&pseudo6(&router, &quoted.src, icmp.len(), 58), &icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&LB_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 64]);
    f.extend_from_slice(&router);
    f.extend_from_slice(&quoted.src);
    f.extend_from_slice(&icmp);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer whose checksum field holds its checksum sums to zero (complemented): the receiver's check.
    fn verifies(parts: &[&[u8]]) -> bool {
        checksum_parts(parts) == 0
    }

    fn pseudo4(f: &[u8]) -> Vec<u8> {
        let ihl = usize::from(f[14] & 0xf) * 4;
        let tot = usize::from(u16::from_be_bytes([f[16], f[17]]));
        let mut p = f[26..34].to_vec();
        p.extend_from_slice(&[0, f[23]]);
        p.extend_from_slice(&((tot - ihl) as u16).to_be_bytes());
        p
    }

    #[test]
    fn ipv4_frames_have_valid_checksums() {
        for p in [
            Pkt::tcp([192, 168, 1, 7], 40000, [10, 0, 0, 100], 80, TCP_SYN),
            Pkt::udp([1, 2, 3, 4], 5, [6, 7, 8, 9], 53),
        ] {
            let f = p.frame();
            assert!(verifies(&[&f[14..34]]), "IPv4 header checksum");
            assert!(verifies(&[&pseudo4(&f), &f[34..]]), "L4 checksum of {p:?}");
        }
    }

    #[test]
    fn ipv6_frames_have_valid_checksums() {
        let (a, b) = (
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
            [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
        );
        for p in [Pkt6::tcp(a, 40000, b, 80, TCP_ACK), Pkt6::udp(a, 40000, b, 53)] {
            let f = p.frame();
            assert_eq!(u16::from_be_bytes([f[12], f[13]]), 0x86dd);
            assert_eq!(usize::from(u16::from_be_bytes([f[18], f[19]])), f.len() - 54, "payload length");
            assert_eq!(f[20], p.proto);
            assert!(verifies(&[&pseudo6(&a, &b, f.len() - 54, p.proto), &f[54..]]), "L4 checksum of {p:?}");
        }
    }

    #[test]
    fn icmp_errors_quote_the_packet_and_have_valid_checksums() {
        let quoted = Pkt::tcp([10, 0, 0, 100], 80, [192, 168, 1, 7], 40000, TCP_ACK);
        let f = icmp_frag_needed([10, 0, 9, 1], &quoted, 1280);
        assert!(verifies(&[&f[14..34]]), "outer IPv4 header checksum");
        assert_eq!(&f[30..34], &[10, 0, 0, 100], "addressed to the VIP");
        assert_eq!((f[34], f[35]), (3, 4));
        assert_eq!(u16::from_be_bytes([f[40], f[41]]), 1280, "next-hop MTU");
        assert!(verifies(&[&f[34..]]), "ICMP checksum");
        assert_eq!(&f[42..], &quoted.frame()[14..14 + 28], "quotes the IP header and 8 L4 bytes");
        assert!(verifies(&[&f[42..62]]), "quoted IPv4 header checksum");

        let (vip, client, router) = (
            [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
            [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        );
        let quoted = Pkt6::tcp(vip, 80, client, 40000, TCP_ACK);
        let f = icmp6_packet_too_big(router, &quoted, 1280);
        assert_eq!((f[20], f[54], f[55]), (58, 2, 0));
        assert_eq!(&f[38..54], &vip, "addressed to the VIP");
        assert_eq!(u32::from_be_bytes([f[58], f[59], f[60], f[61]]), 1280, "MTU");
        assert_eq!(usize::from(u16::from_be_bytes([f[18], f[19]])), f.len() - 54, "payload length");
        assert!(verifies(&[&pseudo6(&router, &vip, f.len() - 54, 58), &f[54..]]), "ICMPv6 checksum");
        assert_eq!(&f[62..], &quoted.frame()[14..14 + 48]);
    }
}
