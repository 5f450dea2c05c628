//! Builds Ethernet/IPv4/TCP/UDP frames for packet fixtures and the XDP benchmark.

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
