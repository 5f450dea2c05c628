//! Builds Ethernet IPv4/IPv6 TCP/UDP frames and ICMP errors about them for packet fixtures and the XDP benchmark.

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
        f
    }
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

    /// The frame as it arrives at the LB (the L4 checksum is left zero: the dataplane does not read it).
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
/// L4 bytes (the ICMPv6 checksum is left zero: the dataplane does not read it).
pub fn icmp6_packet_too_big(router: [u8; 16], quoted: &Pkt6, mtu: u32) -> Vec<u8> {
    let inner = &quoted.frame()[14..14 + 40 + 8];
    let mut icmp = vec![2, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(inner);
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
