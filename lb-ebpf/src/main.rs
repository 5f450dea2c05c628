//! XDP dataplane: finds the service of a packet, picks its real by connection table or Maglev, rewrites MACs, XDP_TX.
//!
//! Direct routing (LVS-DR): the IP packet is untouched, only the Ethernet addresses change, and the real server
//! (holding the VIP on its loopback) answers the client itself. Anything that is not a well-formed, unfragmented
//! IPv4 TCP/UDP packet for a configured service goes to the kernel unchanged.
#![no_std]
#![no_main]
// Map helpers take `impl Borrow<K>`; a reference keeps one copy of each key on the BPF stack.
#![expect(clippy::needless_borrows_for_generic_args, reason = "keys are passed by reference on purpose")]

use aya_ebpf::{
    bindings::xdp_action::{XDP_PASS, XDP_TX},
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{
    flow_hash, global, ConnEntry, Counters, FlowKey, LbConfig, RealDef, VipKey, VipMeta, DEFAULT_CONN_TABLE_SIZE,
    DEFAULT_MAX_SERVICES, FAMILY_V4, MAX_REALS, PROTO_TCP, PROTO_UDP, REAL_F_VALID, RING_SIZE,
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

/// Connection table: flow -> real, so a flow keeps its real when the real set changes. LRU evicts idle flows.
/// One common LRU list: BPF_F_NO_COMMON_LRU measured slower for inserts here (BENCHMARKS.md).
#[map]
static CONN_TABLE: LruHashMap<FlowKey, ConnEntry> = LruHashMap::with_max_entries(DEFAULT_CONN_TABLE_SIZE, 0);

/// Global settings: the LB interface's MAC (single entry).
#[map]
static LB_CFG: Array<LbConfig> = Array::with_max_entries(1, 0);

/// Per-service counters, indexed like the rings.
#[map]
static SVC_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(DEFAULT_MAX_SERVICES, 0);

/// Per-real counters, indexed by real id.
#[map]
static REAL_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_REALS, 0);

/// Why packets were or were not forwarded (lb_common::global indexes).
#[map]
static GLOBAL_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(global::COUNT, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IPV4_HLEN: usize = 20;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// More-fragments flag and fragment offset bits of the IPv4 frag_off field (host order).
const IP_MF_OFFSET_MASK: u16 = 0x3fff;
/// A flow's atime is refreshed when it is older than this, so most packets do not write the entry.
const ATIME_REFRESH_NS: u64 = 1_000_000_000;

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

#[inline(always)]
fn raw4(p: *const u8) -> [u8; 4] {
    // SAFETY: as above.
    unsafe { [*p, *p.add(1), *p.add(2), *p.add(3)] }
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

/// Decides the packet's fate; returns the XDP action and the GLOBAL_STATS index that explains it.
#[inline(always)]
fn process(ctx: &XdpContext) -> (u32, u32) {
    let Some(eth) = ptr_at(ctx, 0, ETH_HLEN) else {
        return (XDP_PASS, global::PASS_MALFORMED);
    };
    // SAFETY: eth spans ETH_HLEN bytes.
    if be16(unsafe { eth.add(12) }) != ETH_P_IP {
        return (XDP_PASS, global::PASS_NOT_VIP);
    }
    let Some(ip) = ptr_at(ctx, ETH_HLEN, IPV4_HLEN) else {
        return (XDP_PASS, global::PASS_MALFORMED);
    };
    // SAFETY: ip spans IPV4_HLEN bytes; every read below is inside it.
    let (vihl, tot_len, frag_off, proto, saddr, daddr) =
        unsafe { (*ip, be16(ip.add(2)), be16(ip.add(6)), *ip.add(9), raw4(ip.add(12)), raw4(ip.add(16))) };
    if vihl >> 4 != 4 || vihl & 0x0f < 5 {
        return (XDP_PASS, global::PASS_MALFORMED);
    }
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return (XDP_PASS, global::PASS_NOT_VIP);
    }
    // Options would shift the L4 header and fragments may not carry ports: neither is ever forwarded.
    if vihl & 0x0f != 5 || frag_off & IP_MF_OFFSET_MASK != 0 {
        return (XDP_PASS, global::PASS_FRAG_OR_OPTIONS);
    }
    let l4_len = if proto == PROTO_TCP { TCP_HLEN } else { UDP_HLEN };
    // The IP total length must cover the L4 header and fit in the frame (a truncated packet is malformed).
    let frame = ctx.data_end() - ctx.data();
    if (tot_len as usize) < IPV4_HLEN + l4_len || ETH_HLEN + tot_len as usize > frame {
        return (XDP_PASS, global::PASS_MALFORMED);
    }
    let Some(l4) = ptr_at(ctx, ETH_HLEN + IPV4_HLEN, l4_len) else {
        return (XDP_PASS, global::PASS_MALFORMED);
    };
    // SAFETY: l4 spans at least UDP_HLEN bytes; the TCP data offset read is inside TCP_HLEN when proto is TCP.
    let (sport_raw, dport_raw) = unsafe { ([*l4, *l4.add(1)], [*l4.add(2), *l4.add(3)]) };
    let mut syn = false;
    if proto == PROTO_TCP {
        // SAFETY: l4 spans TCP_HLEN bytes here.
        let (doff, flags) = unsafe { (*l4.add(12) >> 4, *l4.add(13)) };
        if doff < 5 || ETH_HLEN + IPV4_HLEN + (doff as usize) * 4 > frame {
            return (XDP_PASS, global::PASS_MALFORMED);
        }
        syn = flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    }
    let mut vip = VipKey { addr: [0; 16], port: u16::from_ne_bytes(dport_raw), proto, family: FAMILY_V4 };
    vip.addr[..4].copy_from_slice(&daddr);
    // SAFETY: VIPS values are plain data written whole by userspace.
    let Some(meta) = (unsafe { VIPS.get(&vip) }) else {
        return (XDP_PASS, global::PASS_NOT_VIP);
    };
    let vip_num = meta.vip_num;

    let mut flow = FlowKey {
        src: [0; 16],
        dst: [0; 16],
        sport: u16::from_ne_bytes(sport_raw),
        dport: vip.port,
        proto,
        family: FAMILY_V4,
        _pad: [0; 2],
    };
    flow.src[..4].copy_from_slice(&saddr);
    flow.dst[..4].copy_from_slice(&daddr);

    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let mut real_id = 0u32;
    let mut new_flow = 0u64;
    // A SYN opens a new connection even when its 5-tuple is still remembered (port reuse): it is placed by the
    // current Maglev table, so a removed or drained real never receives a new connection (Katran does the same).
    let entry = if syn { None } else { CONN_TABLE.get_ptr_mut(&flow) };
    if let Some(entry) = entry {
        // SAFETY: the entry pointer is valid for this program run; a racing update only affects atime.
        let id = unsafe { (*entry).real_id };
        if real_valid(id) {
            real_id = id;
            unsafe {
                if now.wrapping_sub((*entry).atime_ns) > ATIME_REFRESH_NS {
                    (*entry).atime_ns = now;
                }
            }
        }
    }
    if real_id == 0 {
        let ports = u32::from_ne_bytes([sport_raw[0], sport_raw[1], dport_raw[0], dport_raw[1]]);
        let hash = flow_hash(u32::from_ne_bytes(saddr), u32::from_ne_bytes(daddr), ports, proto as u32);
        let slot = vip_num.wrapping_mul(RING_SIZE).wrapping_add(hash % RING_SIZE);
        let id = match CH_RINGS.get(slot) {
            Some(id) => *id,
            None => 0,
        };
        if !real_valid(id) {
            return (XDP_PASS, global::PASS_NO_REAL);
        }
        real_id = id;
        new_flow = 1;
        let entry = ConnEntry { real_id, vip_num, atime_ns: now };
        // A full LRU evicts the oldest flow; an error here only means this flow is hashed again next packet.
        let _ = CONN_TABLE.insert(&flow, &entry, 0);
    }

    let Some(real) = REALS.get(real_id) else {
        return (XDP_PASS, global::PASS_NO_REAL);
    };
    let src_mac = match LB_CFG.get(0) {
        Some(cfg) => cfg.src_mac,
        None => return (XDP_PASS, global::PASS_NO_REAL),
    };
    // SAFETY: eth spans ETH_HLEN bytes.
    unsafe {
        core::ptr::copy_nonoverlapping(real.mac.as_ptr(), eth, 6);
        core::ptr::copy_nonoverlapping(src_mac.as_ptr(), eth.add(6), 6);
    }
    let bytes = frame as u64;
    count(&SVC_STATS, vip_num, bytes, new_flow);
    count(&REAL_STATS, real_id, bytes, new_flow);
    count(&GLOBAL_STATS, global::TX, bytes, new_flow);
    (XDP_TX, global::TX)
}

#[inline(always)]
fn real_valid(id: u32) -> bool {
    id != 0
        && match REALS.get(id) {
            Some(r) => r.flags & REAL_F_VALID != 0,
            None => false,
        }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
