//! ICMP errors about balanced flows: an ICMPv4 "fragmentation needed" or ICMPv6 "packet too big" that a router sent
//! about a packet the VIP sent (a real's answer, with the VIP as source) goes to that flow's real, so path-MTU
//! discovery works through the VIP. The flow is the quoted packet's, reversed.

use aya_ebpf::programs::XdpContext;
use lb_common::{global, PROTO_TCP, PROTO_UDP};

use crate::parse::{
    be16, ne16, ptr_at, word, Family, Packet, Sender, ETH_HLEN, IPV4_HLEN, IPV6_HLEN, IP_OFFSET_MASK, V4, V6,
};

/// An ICMP error header: type, code, checksum and 4 bytes (unused / next-hop MTU / MTU).
const ICMP_HLEN: usize = 8;
/// What an ICMP error quotes of the original L4 header at least: its 8 first bytes (both ports).
const QUOTED_L4: usize = 8;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_PKT_TOOBIG: u8 = 2;

/// An ICMPv4 "fragmentation needed" about a packet the VIP sent; `outer_dst` points at the outer destination
/// address, `room` is what follows the outer IPv4 header.
#[inline(always)]
pub fn icmp_v4(ctx: &XdpContext, outer_dst: *const u8, room: usize) -> Result<Packet, u32> {
    const ICMP: usize = ETH_HLEN + IPV4_HLEN;
    const INNER: usize = ICMP + ICMP_HLEN;
    let icmp = ptr_at(ctx, ICMP, ICMP_HLEN).ok_or(global::PASS_MALFORMED)?;
    // SAFETY: icmp spans ICMP_HLEN bytes.
    let (ty, code) = unsafe { (*icmp, *icmp.add(1)) };
    if ty != ICMP_DEST_UNREACH || code != ICMP_FRAG_NEEDED {
        return Err(global::PASS_NOT_VIP);
    }
    if room < ICMP_HLEN + IPV4_HLEN + QUOTED_L4 {
        return Err(global::PASS_MALFORMED);
    }
    let ip = ptr_at(ctx, INNER, IPV4_HLEN + QUOTED_L4).ok_or(global::PASS_MALFORMED)?;
    // SAFETY: ip spans the inner IPv4 header and the quoted ports.
    let (vihl, frag, proto, src, dst) = unsafe { (*ip, be16(ip.add(6)), *ip.add(9), ip.add(12), ip.add(16)) };
    // A quoted fragment other than the first carries payload, not ports: it names no flow.
    if vihl != 0x45 || frag & IP_OFFSET_MASK != 0 || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return Err(global::PASS_MALFORMED);
    }
    // The error must be about a packet from the address it was sent to (the VIP).
    if word(src) != word(outer_dst) {
        return Err(global::PASS_MALFORMED);
    }
    // SAFETY: inside the quoted L4 bytes.
    let (vport, cport) = unsafe { (ne16(ip.add(IPV4_HLEN)), ne16(ip.add(IPV4_HLEN + 2))) };
    Packet::to_service::<V4>(V4::addr(src), vport, proto, dst, cport, Sender::IcmpError)
}

/// An ICMPv6 "packet too big" about a packet the VIP sent; arguments as for [`icmp_v4`].
#[inline(always)]
pub fn icmp_v6(ctx: &XdpContext, outer_dst: *const u8, room: usize) -> Result<Packet, u32> {
    const ICMP: usize = ETH_HLEN + IPV6_HLEN;
    const INNER: usize = ICMP + ICMP_HLEN;
    let icmp = ptr_at(ctx, ICMP, ICMP_HLEN).ok_or(global::PASS_MALFORMED)?;
    // SAFETY: icmp spans ICMP_HLEN bytes.
    if unsafe { *icmp } != ICMPV6_PKT_TOOBIG {
        return Err(global::PASS_NOT_VIP);
    }
    if room < ICMP_HLEN + IPV6_HLEN + QUOTED_L4 {
        return Err(global::PASS_MALFORMED);
    }
    let ip = ptr_at(ctx, INNER, IPV6_HLEN + QUOTED_L4).ok_or(global::PASS_MALFORMED)?;
    // SAFETY: ip spans the inner IPv6 header and the quoted ports.
    let (ver, next, src, dst) = unsafe { (*ip >> 4, *ip.add(6), ip.add(8), ip.add(24)) };
    if ver != 6 || (next != PROTO_TCP && next != PROTO_UDP) {
        return Err(global::PASS_MALFORMED);
    }
    let (vip, outer) = (V6::addr(src), V6::addr(outer_dst));
    if vip != outer {
        return Err(global::PASS_MALFORMED);
    }
    // SAFETY: inside the quoted L4 bytes.
    let (vport, cport) = unsafe { (ne16(ip.add(IPV6_HLEN)), ne16(ip.add(IPV6_HLEN + 2))) };
    Packet::to_service::<V6>(vip, vport, next, dst, cport, Sender::IcmpError)
}
