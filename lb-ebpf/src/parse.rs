//! Packet parsing: bounds-checked header access, the IPv4 and IPv6 TCP/UDP paths, the service lookup, and the one
//! constructor of a packet's flow key for both families (ICMP errors build theirs with it too, see icmp.rs).

use aya_ebpf::programs::XdpContext;
use lb_common::{
    global, FlowKey, VipKey, FAMILY_V4, FAMILY_V6, FLOW_KIND_CONN, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};

use crate::{icmp, maps::VIPS};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
/// More-fragments flag and fragment offset bits of the IPv4 frag_off field (host order).
const IP_MF_OFFSET_MASK: u16 = 0x3fff;
/// Fragment offset bits alone.
pub const IP_OFFSET_MASK: u16 = 0x1fff;

/// A packet reduced to what placing it needs: its flow as the client sent it, and what it may do to the table.
pub struct Packet {
    pub flow: FlowKey,
    /// The service's index (its ring, counters and options).
    pub vip_num: u32,
    /// May create connection-table entries: false for SYNs (vc5's rule: a flow is stored at its first non-SYN
    /// packet, so spoofed SYNs never evict or move established flows), resets and ICMP errors.
    pub store: bool,
    /// A TCP SYN: a remembered tuple that has been silent for SYN_REUSE_NS is a new connection (port reuse).
    pub syn: bool,
    /// TX_ICMP for a forwarded ICMP error, else TX.
    pub tx_reason: u32,
}

/// Who sent a packet, which decides what it may do to the connection table.
#[derive(Clone, Copy)]
pub enum Sender {
    /// The client: a TCP segment with its flags, or a UDP datagram (flags 0).
    Client { tcp_flags: u8 },
    /// A router on the path, with an ICMP error about the flow: it follows the flow and never stores one.
    IcmpError,
}

/// An address family: its key tag and how its addresses become the keys' 16-byte form.
pub trait Family {
    const ID: u8;
    /// The address at `p` in key form (`p` spans the family's address length).
    fn addr(p: *const u8) -> [u8; 16];
}

pub struct V4;
pub struct V6;

impl Family for V4 {
    const ID: u8 = FAMILY_V4;
    /// Built from whole words (no byte-wise zeroing of the unused 12 bytes).
    #[inline(always)]
    fn addr(p: *const u8) -> [u8; 16] {
        // SAFETY: [u32; 4] and [u8; 16] have the same size; any bit pattern is valid for both.
        unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>([word(p), 0, 0, 0]) }
    }
}

impl Family for V6 {
    const ID: u8 = FAMILY_V6;
    #[inline(always)]
    fn addr(p: *const u8) -> [u8; 16] {
        // SAFETY: as for V4; p spans 16 bytes.
        unsafe {
            core::mem::transmute::<[u32; 4], [u8; 16]>([word(p), word(p.add(4)), word(p.add(8)), word(p.add(12))])
        }
    }
}

impl Packet {
    /// The packet of a flow from the client at `client` (an address in the packet), port `cport`, to service
    /// (`vip`, `vport`, `proto`): the one key constructor of both families. The service is looked up first, so
    /// traffic for no VIP leaves before the client's address is read; PASS_NOT_VIP when there is none.
    #[inline(always)]
    pub fn to_service<F: Family>(
        vip: [u8; 16],
        vport: u16,
        proto: u8,
        client: *const u8,
        cport: u16,
        sender: Sender,
    ) -> Result<Packet, u32> {
        let vip_num = service(vip, vport, proto, F::ID)?;
        // Fields in this order (key, then flags), as the per-family blocks this replaced: the compiler keeps the
        // registers it used then (measured in the object's instructions).
        Ok(Packet {
            vip_num,
            flow: FlowKey {
                src: F::addr(client),
                dst: vip,
                sport: cport,
                dport: vport,
                proto,
                family: F::ID,
                kind: FLOW_KIND_CONN,
                _pad: 0,
            },
            store: match sender {
                Sender::Client { tcp_flags } => proto != PROTO_TCP || tcp_flags & (TCP_SYN | TCP_RST) == 0,
                Sender::IcmpError => false,
            },
            syn: match sender {
                Sender::Client { tcp_flags } => proto == PROTO_TCP && tcp_flags & TCP_SYN != 0,
                Sender::IcmpError => false,
            },
            tx_reason: match sender {
                Sender::Client { .. } => global::TX,
                Sender::IcmpError => global::TX_ICMP,
            },
        })
    }
}

/// The index of the service (VIP, port, proto), or PASS_NOT_VIP.
#[inline(always)]
fn service(addr: [u8; 16], port: u16, proto: u8, family: u8) -> Result<u32, u32> {
    // SAFETY: VIPS values are plain data written whole by userspace.
    match unsafe { VIPS.get(&VipKey { addr, port, proto, family }) } {
        Some(meta) => Ok(meta.vip_num),
        None => Err(global::PASS_NOT_VIP),
    }
}

#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> u64 {
    (ctx.data_end() - ctx.data()) as u64
}

/// Pointer to a `len`-byte header at `offset`, or None when the packet is too short.
#[inline(always)]
pub fn ptr_at(ctx: &XdpContext, offset: usize, len: usize) -> Option<*mut u8> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + len > end {
        return None;
    }
    Some((start + offset) as *mut u8)
}

#[inline(always)]
pub fn be16(p: *const u8) -> u16 {
    // SAFETY: callers only pass pointers inside a bounds-checked header.
    unsafe { u16::from_be_bytes([*p, *p.add(1)]) }
}

/// Two bytes as they are on the wire (a port in network order, as the keys hold it).
#[inline(always)]
pub fn ne16(p: *const u8) -> u16 {
    // SAFETY: as above.
    unsafe { u16::from_ne_bytes([*p, *p.add(1)]) }
}

#[inline(always)]
pub fn word(p: *const u8) -> u32 {
    // SAFETY: as above.
    unsafe { u32::from_ne_bytes([*p, *p.add(1), *p.add(2), *p.add(3)]) }
}

/// Checks a TCP/UDP header at `l4_off` (inside a packet of `l4_room` bytes from there): returns (sport, dport,
/// TCP flags). Each protocol has its own bounds check with a constant length, which the verifier can follow.
#[inline(always)]
fn ports(ctx: &XdpContext, l4_off: usize, proto: u8, l4_room: usize) -> Result<(u16, u16, u8), u32> {
    if proto != PROTO_TCP {
        if l4_room < UDP_HLEN {
            return Err(global::PASS_MALFORMED);
        }
        let l4 = ptr_at(ctx, l4_off, UDP_HLEN).ok_or(global::PASS_MALFORMED)?;
        // SAFETY: l4 spans UDP_HLEN bytes.
        return Ok((ne16(l4), ne16(unsafe { l4.add(2) }), 0));
    }
    if l4_room < TCP_HLEN {
        return Err(global::PASS_MALFORMED);
    }
    let l4 = ptr_at(ctx, l4_off, TCP_HLEN).ok_or(global::PASS_MALFORMED)?;
    // SAFETY: l4 spans TCP_HLEN bytes.
    let (sport, dport, doff, flags) = unsafe { (ne16(l4), ne16(l4.add(2)), *l4.add(12) >> 4, *l4.add(13)) };
    if doff < 5 || (doff as usize) * 4 > l4_room {
        return Err(global::PASS_MALFORMED);
    }
    Ok((sport, dport, flags))
}

#[inline(always)]
pub fn parse_v4(ctx: &XdpContext) -> Result<Packet, u32> {
    let ip = ptr_at(ctx, ETH_HLEN, IPV4_HLEN).ok_or(global::PASS_MALFORMED)?;
    // SAFETY: ip spans IPV4_HLEN bytes; every read below is inside it.
    let (vihl, tot_len, frag_off, proto) = unsafe { (*ip, be16(ip.add(2)), be16(ip.add(6)), *ip.add(9)) };
    if vihl >> 4 != 4 || vihl & 0x0f < 5 {
        return Err(global::PASS_MALFORMED);
    }
    if proto != PROTO_TCP && proto != PROTO_UDP && proto != PROTO_ICMP {
        return Err(global::PASS_NOT_VIP);
    }
    // Options would shift the L4 header and fragments may not carry ports: neither is ever forwarded.
    if vihl & 0x0f != 5 || frag_off & IP_MF_OFFSET_MASK != 0 {
        return Err(global::PASS_FRAG_OR_OPTIONS);
    }
    // The IP total length must cover the IP header and fit in the frame (a truncated packet is malformed).
    let frame = ctx.data_end() - ctx.data();
    let tot = tot_len as usize;
    if tot < IPV4_HLEN || ETH_HLEN + tot > frame {
        return Err(global::PASS_MALFORMED);
    }
    let room = tot - IPV4_HLEN;
    // SAFETY: inside the IPv4 header.
    let (saddr, daddr) = unsafe { (ip.add(12), ip.add(16)) };
    if proto == PROTO_ICMP {
        return icmp::icmp_v4(ctx, daddr, room);
    }
    let (sport, dport, tcp_flags) = ports(ctx, ETH_HLEN + IPV4_HLEN, proto, room)?;
    Packet::to_service::<V4>(V4::addr(daddr), dport, proto, saddr, sport, Sender::Client { tcp_flags })
}

#[inline(always)]
pub fn parse_v6(ctx: &XdpContext) -> Result<Packet, u32> {
    let ip = ptr_at(ctx, ETH_HLEN, IPV6_HLEN).ok_or(global::PASS_MALFORMED)?;
    // SAFETY: ip spans IPV6_HLEN bytes.
    let (ver, payload_len, next) = unsafe { (*ip >> 4, be16(ip.add(4)), *ip.add(6)) };
    if ver != 6 {
        return Err(global::PASS_MALFORMED);
    }
    let frame = ctx.data_end() - ctx.data();
    let room = payload_len as usize;
    if ETH_HLEN + IPV6_HLEN + room > frame {
        return Err(global::PASS_MALFORMED);
    }
    if next != PROTO_TCP && next != PROTO_UDP && next != PROTO_ICMPV6 {
        // Hop-by-hop, routing, fragment or destination options before L4: the kernel handles them.
        return Err(if is_ext_header(next) { global::PASS_EXT_HEADERS } else { global::PASS_NOT_VIP });
    }
    // SAFETY: inside the IPv6 header.
    let (saddr, daddr) = unsafe { (ip.add(8), ip.add(24)) };
    if next == PROTO_ICMPV6 {
        return icmp::icmp_v6(ctx, daddr, room);
    }
    let (sport, dport, tcp_flags) = ports(ctx, ETH_HLEN + IPV6_HLEN, next, room)?;
    Packet::to_service::<V6>(V6::addr(daddr), dport, next, saddr, sport, Sender::Client { tcp_flags })
}

#[inline(always)]
fn is_ext_header(next: u8) -> bool {
    matches!(next, 0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140)
}
