//! XDP dataplane: finds the service of a packet, picks its real by connection table, persistence or Maglev,
//! rewrites MACs, XDP_TX.
//!
//! Direct routing (LVS-DR): the IP packet is untouched, only the Ethernet addresses change, and the real server
//! (holding the VIP on its loopback) answers the client itself. IPv4 and IPv6 TCP/UDP packets for a configured
//! service are balanced; an ICMP "fragmentation needed" (v4) or "packet too big" (v6) about a balanced flow goes to
//! that flow's real, so path-MTU discovery works through the VIP. Anything else goes to the kernel unchanged.
#![no_std]
#![no_main]
// Map helpers take `impl Borrow<K>`; a reference keeps one copy of each key on the BPF stack.
#![expect(clippy::needless_borrows_for_generic_args, reason = "keys are passed by reference on purpose")]

use aya_ebpf::{
    bindings::xdp_action::{XDP_PASS, XDP_TX},
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use lb_common::{
    flow_hash, fold_addr, global, ConnEntry, Counters, FlowKey, LbConfig, NewFlow, RealDef, ServiceCfg, VipKey,
    VipMeta, DEFAULT_CONN_TABLE_SIZE, DEFAULT_MAX_SERVICES, FAMILY_V4, FAMILY_V6, FLOW_KIND_CONN, FLOW_KIND_PERSIST,
    LB_F_SYNC, MAX_DESTS, MAX_REALS, NEW_FLOWS_BYTES, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, REAL_F_VALID,
    RING_SIZE,
};

/// Services: (VIP, port, proto) -> index of its ring and counters.
#[map]
static VIPS: HashMap<VipKey, VipMeta> = HashMap::with_max_entries(DEFAULT_MAX_SERVICES, 0);

/// Maglev tables, flat: service n owns slots [n * RING_SIZE, (n + 1) * RING_SIZE); each slot holds a real id.
#[map]
static CH_RINGS: Array<u32> = Array::with_max_entries(DEFAULT_MAX_SERVICES * RING_SIZE, 0);

/// Real servers by id (0 reserved): their MACs.
#[map]
static REALS: Array<RealDef> = Array::with_max_entries(MAX_REALS, 0);

/// Connection table: flow -> real, so a flow keeps its real when the real set changes, plus the persistence
/// templates of persistent services. LRU evicts idle entries.
/// One common LRU list: BPF_F_NO_COMMON_LRU measured slower for inserts here (BENCHMARKS.md).
#[map]
static CONN_TABLE: LruHashMap<FlowKey, ConnEntry> = LruHashMap::with_max_entries(DEFAULT_CONN_TABLE_SIZE, 0);

/// Global settings: the LB interface's MAC (single entry).
#[map]
static LB_CFG: Array<LbConfig> = Array::with_max_entries(1, 0);

/// Per-service options (persistence), indexed like the rings.
#[map]
static SVC_CFG: Array<ServiceCfg> = Array::with_max_entries(DEFAULT_MAX_SERVICES, 0);

/// Per-service counters, indexed like the rings.
#[map]
static SVC_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(DEFAULT_MAX_SERVICES, 0);

/// Per-real counters, indexed by real id. Kept (unwritten) so pins of earlier versions stay adoptable.
#[map]
static REAL_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_REALS, 0);

/// Counter slot of each (service, real) pair: index `vip_num * MAX_REALS + real_id`, value a DEST_STATS index
/// (0: not counted). userspace gives a pair its slot and zeroes the counters when it reuses one.
#[map]
static DEST_IDX: Array<u32> = Array::with_max_entries(DEFAULT_MAX_SERVICES * MAX_REALS, 0);

/// Per-(service, real) counters, like `ipvsadm --stats`.
#[map]
static DEST_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_DESTS, 0);

/// Flows stored in CONN_TABLE, for lbd to share with the other LB nodes (only with LB_F_SYNC; lossy when full).
#[map]
static NEW_FLOWS: RingBuf = RingBuf::with_byte_size(NEW_FLOWS_BYTES, 0);

/// Why packets were or were not forwarded (lb_common::global indexes).
#[map]
static GLOBAL_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(global::COUNT, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// An ICMP error header: type, code, checksum and 4 bytes (unused / next-hop MTU / MTU).
const ICMP_HLEN: usize = 8;
/// What an ICMP error quotes of the original L4 header at least: its 8 first bytes (both ports).
const QUOTED_L4: usize = 8;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_PKT_TOOBIG: u8 = 2;
/// More-fragments flag and fragment offset bits of the IPv4 frag_off field (host order).
const IP_MF_OFFSET_MASK: u16 = 0x3fff;
/// Fragment offset bits alone.
const IP_OFFSET_MASK: u16 = 0x1fff;
/// A flow's atime is refreshed when it is older than this, so most packets do not write the entry.
const ATIME_REFRESH_NS: u64 = 1_000_000_000;
/// A SYN for a remembered tuple silent this long opens a new connection (a client reusing its port: Linux reuses a
/// TIME_WAIT port only a second or more after its last packet): it is placed by the current Maglev table, like any
/// new connection, and replaces the entry, so a removed or drained real gets no new connection. A SYN for a tuple
/// heard from more recently follows its flow and changes nothing (a duplicate, or spoofed).
const SYN_REUSE_NS: u64 = 1_000_000_000;

#[xdp]
pub fn lb(ctx: XdpContext) -> u32 {
    let (action, idx) = process(&ctx);
    if idx != global::TX {
        count(&GLOBAL_STATS, idx, frame_len(&ctx), 0);
    }
    action
}

/// A program that passes everything. Native-mode XDP_TX on a veth needs an XDP program on the peer, so the lab and
/// tests attach this there; the benchmark also uses it as the floor of the harness cost.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

#[inline(always)]
fn frame_len(ctx: &XdpContext) -> u64 {
    (ctx.data_end() - ctx.data()) as u64
}

/// Pointer to a `len`-byte header at `offset`, or None when the packet is too short.
#[inline(always)]
fn ptr_at(ctx: &XdpContext, offset: usize, len: usize) -> Option<*mut u8> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + len > end {
        return None;
    }
    Some((start + offset) as *mut u8)
}

#[inline(always)]
fn be16(p: *const u8) -> u16 {
    // SAFETY: callers only pass pointers inside a bounds-checked header.
    unsafe { u16::from_be_bytes([*p, *p.add(1)]) }
}

/// Two bytes as they are on the wire (a port in network order, as the keys hold it).
#[inline(always)]
fn ne16(p: *const u8) -> u16 {
    // SAFETY: as above.
    unsafe { u16::from_ne_bytes([*p, *p.add(1)]) }
}

#[inline(always)]
fn word(p: *const u8) -> u32 {
    // SAFETY: as above.
    unsafe { u32::from_ne_bytes([*p, *p.add(1), *p.add(2), *p.add(3)]) }
}

/// An IPv4 address in the 16-byte key form, built from whole words (no byte-wise zeroing).
#[inline(always)]
fn addr_v4(p: *const u8) -> [u8; 16] {
    // SAFETY: [u32; 4] and [u8; 16] have the same size; any bit pattern is valid for both.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>([word(p), 0, 0, 0]) }
}

#[inline(always)]
fn addr_v6(p: *const u8) -> [u8; 16] {
    // SAFETY: as above; p spans 16 bytes.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>([word(p), word(p.add(4)), word(p.add(8)), word(p.add(12))]) }
}

#[inline(always)]
fn count(map: &PerCpuArray<Counters>, idx: u32, bytes: u64, new_flows: u64) {
    if let Some(c) = map.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            (*c).new_flows += new_flows;
        }
    }
}

/// A packet reduced to what placing it needs: its flow as the client sent it, and what it may do to the table.
struct Packet {
    flow: FlowKey,
    /// The service's index (its ring, counters and options).
    vip_num: u32,
    /// May create connection-table entries: false for SYNs (vc5's rule: a flow is stored at its first non-SYN
    /// packet, so spoofed SYNs never evict or move established flows), resets and ICMP errors.
    store: bool,
    /// A TCP SYN: a remembered tuple that has been silent for SYN_REUSE_NS is a new connection (port reuse).
    syn: bool,
    /// TX_ICMP for a forwarded ICMP error, else TX.
    tx_reason: u32,
}

/// Decides the packet's fate; returns the XDP action and the GLOBAL_STATS index that explains it.
#[inline(always)]
fn process(ctx: &XdpContext) -> (u32, u32) {
    let Some(eth) = ptr_at(ctx, 0, ETH_HLEN) else {
        return (XDP_PASS, global::PASS_MALFORMED);
    };
    // SAFETY: eth spans ETH_HLEN bytes.
    let ethertype = be16(unsafe { eth.add(12) });
    let pkt = if ethertype == ETH_P_IP {
        parse_v4(ctx)
    } else if ethertype == ETH_P_IPV6 {
        parse_v6(ctx)
    } else {
        return (XDP_PASS, global::PASS_NOT_VIP);
    };
    match pkt {
        Ok(p) => forward(ctx, eth, &p),
        Err(reason) => (XDP_PASS, reason),
    }
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
fn tcp_store(proto: u8, flags: u8) -> bool {
    proto != PROTO_TCP || flags & (TCP_SYN | TCP_RST) == 0
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext) -> Result<Packet, u32> {
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
        return icmp_v4(ctx, daddr, room);
    }
    let (sport, dport, flags) = ports(ctx, ETH_HLEN + IPV4_HLEN, proto, room)?;
    let dst = addr_v4(daddr);
    // The service first: traffic for no VIP leaves before a flow key is built.
    let vip_num = service(dst, dport, proto, FAMILY_V4)?;
    Ok(Packet {
        vip_num,
        flow: FlowKey {
            src: addr_v4(saddr),
            dst,
            sport,
            dport,
            proto,
            family: FAMILY_V4,
            kind: FLOW_KIND_CONN,
            _pad: 0,
        },
        store: tcp_store(proto, flags),
        syn: proto == PROTO_TCP && flags & TCP_SYN != 0,
        tx_reason: global::TX,
    })
}

/// An ICMPv4 "fragmentation needed" about a packet the VIP sent (a real's answer, sent with the VIP as source):
/// the flow is the quoted packet's, reversed.
#[inline(always)]
fn icmp_v4(ctx: &XdpContext, outer_dst: *const u8, room: usize) -> Result<Packet, u32> {
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
    let vip = addr_v4(src);
    let vip_num = service(vip, vport, proto, FAMILY_V4)?;
    Ok(Packet {
        vip_num,
        flow: FlowKey {
            src: addr_v4(dst),
            dst: vip,
            sport: cport,
            dport: vport,
            proto,
            family: FAMILY_V4,
            kind: FLOW_KIND_CONN,
            _pad: 0,
        },
        store: false,
        syn: false,
        tx_reason: global::TX_ICMP,
    })
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext) -> Result<Packet, u32> {
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
        return icmp_v6(ctx, daddr, room);
    }
    let (sport, dport, flags) = ports(ctx, ETH_HLEN + IPV6_HLEN, next, room)?;
    let dst = addr_v6(daddr);
    let vip_num = service(dst, dport, next, FAMILY_V6)?;
    Ok(Packet {
        vip_num,
        flow: FlowKey {
            src: addr_v6(saddr),
            dst,
            sport,
            dport,
            proto: next,
            family: FAMILY_V6,
            kind: FLOW_KIND_CONN,
            _pad: 0,
        },
        store: tcp_store(next, flags),
        syn: next == PROTO_TCP && flags & TCP_SYN != 0,
        tx_reason: global::TX,
    })
}

#[inline(always)]
fn is_ext_header(next: u8) -> bool {
    matches!(next, 0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140)
}

/// An ICMPv6 "packet too big" about a packet the VIP sent.
#[inline(always)]
fn icmp_v6(ctx: &XdpContext, outer_dst: *const u8, room: usize) -> Result<Packet, u32> {
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
    let (inner_src, outer) = (addr_v6(src), addr_v6(outer_dst));
    if inner_src != outer {
        return Err(global::PASS_MALFORMED);
    }
    // SAFETY: inside the quoted L4 bytes.
    let (vport, cport) = unsafe { (ne16(ip.add(IPV6_HLEN)), ne16(ip.add(IPV6_HLEN + 2))) };
    let vip_num = service(inner_src, vport, next, FAMILY_V6)?;
    Ok(Packet {
        vip_num,
        flow: FlowKey {
            src: addr_v6(dst),
            dst: inner_src,
            sport: cport,
            dport: vport,
            proto: next,
            family: FAMILY_V6,
            kind: FLOW_KIND_CONN,
            _pad: 0,
        },
        store: false,
        syn: false,
        tx_reason: global::TX_ICMP,
    })
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

/// Picks the packet's real, rewrites the MACs and counts.
#[inline(always)]
fn forward(ctx: &XdpContext, eth: *mut u8, p: &Packet) -> (u32, u32) {
    let vip_num = p.vip_num;
    let Some(cfg) = LB_CFG.get(0) else {
        return (XDP_PASS, global::PASS_NO_REAL);
    };
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let (real_id, real, new_flow) = match place(p, vip_num, now, cfg.hash_seed) {
        Some(x) => x,
        None => return (XDP_PASS, global::PASS_NO_REAL),
    };
    if new_flow != 0 && cfg.flags & LB_F_SYNC != 0 {
        // Lossy by design: a full ring drops the report, and the peer then places the flow by Maglev.
        let _ = NEW_FLOWS.output::<NewFlow>(&NewFlow { key: p.flow, real_id, vip_num }, 0);
    }
    let src_mac = cfg.src_mac;
    // SAFETY: eth spans ETH_HLEN bytes.
    unsafe {
        core::ptr::copy_nonoverlapping(real.mac.as_ptr(), eth, 6);
        core::ptr::copy_nonoverlapping(src_mac.as_ptr(), eth.add(6), 6);
    }
    let bytes = frame_len(ctx);
    if p.tx_reason != global::TX {
        // Counted by the caller, like every reason other than TX.
        return (XDP_TX, p.tx_reason);
    }
    count(&SVC_STATS, vip_num, bytes, new_flow);
    if let Some(dest) = DEST_IDX.get(vip_num.wrapping_mul(MAX_REALS).wrapping_add(real_id)) {
        count(&DEST_STATS, *dest, bytes, new_flow);
    }
    count(&GLOBAL_STATS, global::TX, bytes, new_flow);
    (XDP_TX, global::TX)
}

/// The real of a packet: its flow's entry, else its client's persistence template, else the Maglev table.
/// Returns (real id, its definition, 1 when a flow was stored anew) or None when the service has no usable real.
#[inline(always)]
fn place(p: &Packet, vip_num: u32, now: u64, seed: u32) -> Option<(u32, &'static RealDef, u64)> {
    let f = &p.flow;
    let mut reuse = false;
    if let Some(entry) = CONN_TABLE.get_ptr_mut(f) {
        // SAFETY: the entry pointer is valid for this program run; a racing update only affects atime.
        let (id, atime) = unsafe { ((*entry).real_id, (*entry).atime_ns) };
        reuse = p.syn && now.wrapping_sub(atime) >= SYN_REUSE_NS;
        let real = if reuse { None } else { usable(id) };
        if let Some(real) = real {
            unsafe {
                if now.wrapping_sub((*entry).atime_ns) > ATIME_REFRESH_NS {
                    (*entry).atime_ns = now;
                    // A persistent client stays persistent while any of its connections is active.
                    if let Some(cfg) = SVC_CFG.get(vip_num) {
                        if cfg.persist_secs != 0 {
                            touch_template(f, now);
                        }
                    }
                }
            }
            return Some((id, real, 0));
        }
    }
    let persist_ns = match SVC_CFG.get(vip_num) {
        Some(cfg) => cfg.persist_secs as u64 * 1_000_000_000,
        None => 0,
    };
    let mut id = 0;
    if persist_ns != 0 {
        let t = template_of(f);
        if let Some(e) = CONN_TABLE.get_ptr_mut(&t) {
            // SAFETY: as above.
            unsafe {
                if now.wrapping_sub((*e).atime_ns) < persist_ns && usable((*e).real_id).is_some() {
                    id = (*e).real_id;
                    (*e).atime_ns = now;
                }
            }
        }
    }
    if id == 0 {
        // A persistent service hashes the client address alone, so all of a client's connections agree even
        // before a template exists (connections opened in parallel).
        let ports = if persist_ns != 0 { 0 } else { u32::from(f.sport) | (u32::from(f.dport) << 16) };
        let hash = flow_hash(seed, fold_addr(&f.src), fold_addr(&f.dst), ports, f.proto as u32);
        let slot = vip_num.wrapping_mul(RING_SIZE).wrapping_add(hash % RING_SIZE);
        id = match CH_RINGS.get(slot) {
            Some(id) => *id,
            None => 0,
        };
        if p.store && persist_ns != 0 {
            let _ = CONN_TABLE.insert(&template_of(f), &ConnEntry { real_id: id, vip_num, atime_ns: now }, 0);
        }
    }
    let real = usable(id)?;
    if !p.store && !reuse {
        return Some((id, real, 0));
    }
    // A full LRU evicts the oldest entry; an error here only means this flow is placed again next packet. A flow
    // counts as new here, when it is stored: a TCP connection at its first ACK, not at its SYN.
    let _ = CONN_TABLE.insert(f, &ConnEntry { real_id: id, vip_num, atime_ns: now }, 0);
    Some((id, real, 1))
}

/// The persistence template key of a flow: its client and service, without the client's port.
#[inline(always)]
fn template_of(f: &FlowKey) -> FlowKey {
    FlowKey { sport: 0, kind: FLOW_KIND_PERSIST, ..*f }
}

#[inline(always)]
fn touch_template(f: &FlowKey, now: u64) {
    if let Some(e) = CONN_TABLE.get_ptr_mut(&template_of(f)) {
        // SAFETY: as in `place`.
        unsafe { (*e).atime_ns = now };
    }
}

/// The definition of real `id` when it can take packets (one REALS lookup).
#[inline(always)]
fn usable(id: u32) -> Option<&'static RealDef> {
    if id == 0 {
        return None;
    }
    let r = REALS.get(id)?;
    if r.flags & REAL_F_VALID != 0 {
        Some(r)
    } else {
        None
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
