//! Types shared by the XDP dataplane (lb-ebpf) and the daemon (lb-userspace): map keys, values and limits.
//!
//! Every type is `#[repr(C)]`, `Copy`, holds no `bool`/`Option`/enum, and spells out its padding so the kernel
//! and userspace agree byte for byte. Addresses are 16 bytes wide so IPv6 fits without a layout change; an IPv4
//! address sits in the first 4 bytes in network order and the rest is zero.
#![no_std]

/// Slots in one service's Maglev table. Prime, as Maglev requires; Katran uses the same size.
pub const RING_SIZE: u32 = 65_537;
/// Services (VIP, port, proto) the dataplane holds by default; lbd can raise it at load time.
pub const DEFAULT_MAX_SERVICES: u32 = 64;
/// Real servers (distinct addresses over all services). Id 0 is reserved for "no real".
pub const MAX_REALS: u32 = 4_096;
/// (service, real) pairs that have their own counters (DEST_STATS). Id 0 is reserved for "not counted".
pub const MAX_DESTS: u32 = 16_384;
/// Connection-table entries by default (LRU). 2M entries of 40+16 bytes each: about 200 MiB with hash overhead.
pub const DEFAULT_CONN_TABLE_SIZE: u32 = 2_000_000;

/// `family` value for IPv4 keys.
pub const FAMILY_V4: u8 = 4;
/// `family` value for IPv6 keys.
pub const FAMILY_V6: u8 = 6;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_UDP: u8 = 17;

/// Key of the VIPS map: one load-balanced service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    /// Virtual IP, network byte order (IPv4 in addr[0..4]).
    pub addr: [u8; 16],
    /// Destination port, network byte order.
    pub port: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    /// FAMILY_V4 or FAMILY_V6.
    pub family: u8,
}

/// Value of the VIPS map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipMeta {
    /// Index of the service: its Maglev table starts at `vip_num * RING_SIZE` in CH_RINGS, and its counters
    /// live at `vip_num` in SVC_STATS.
    pub vip_num: u32,
    /// Reserved for per-service options (0 today; the program ignores it), so adding one changes no layout and
    /// a pinned VIPS map stays adoptable.
    pub flags: u32,
}

/// Key of the connection table: one flow as the client sent it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Client address, network byte order.
    pub src: [u8; 16],
    /// Virtual IP, network byte order.
    pub dst: [u8; 16],
    /// Client port, network byte order.
    pub sport: u16,
    /// Virtual port, network byte order.
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    /// FLOW_KIND_*: a connection, or a persistence template (one per client and service, `sport` 0).
    pub kind: u8,
    pub _pad: u8,
}

/// A connection-table entry for one connection.
pub const FLOW_KIND_CONN: u8 = 0;
/// A persistence template: the real a client of a persistent service was last sent to (like IPVS's templates).
pub const FLOW_KIND_PERSIST: u8 = 1;

/// Per-service options the program reads when it places a new flow (SVC_CFG, indexed like the rings).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceCfg {
    /// Persistence timeout in seconds (0: none): a new connection of a client seen within it goes to the same real.
    pub persist_secs: u32,
    pub flags: u32,
}

/// Value of the connection table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnEntry {
    /// Real id the flow is pinned to (index into REALS).
    pub real_id: u32,
    /// Service index, so userspace can count and purge a service's flows.
    pub vip_num: u32,
    /// Last time a packet of the flow was seen, in CLOCK_MONOTONIC ns, updated at most about once a second
    /// so the hot path rarely writes.
    pub atime_ns: u64,
}

/// One real server: where its packets go.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RealDef {
    /// Real's address, network byte order (informational for the dataplane; DR only needs the MAC).
    pub addr: [u8; 16],
    /// Real's MAC address: the new destination MAC.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// REAL_F_* bits; 0 means the slot is unused and flows pinned to it are rehashed.
    pub flags: u32,
    pub _pad2: u32,
}

/// The slot holds a real whose MAC is known.
pub const REAL_F_VALID: u32 = 1;

/// Global settings of the dataplane (single entry in LB_CFG).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LbConfig {
    /// MAC of the LB interface: the new source MAC, set from config so the rewrite is idempotent.
    pub src_mac: [u8; 6],
    /// LAYOUT_VERSION of the lbd that wrote this entry (0: the first release, whose layouts this one shares); the
    /// program ignores it. A later lbd reads it before it reuses pinned maps.
    pub layout: u16,
    /// Seed of the flow hash, the same on every LB node of a cluster (so an ECMP rehash moves no flow) and secret
    /// (so clients cannot pick tuples that all land on one real). 0 hashes as releases before the seed did.
    pub hash_seed: u32,
    /// LB_F_* bits.
    pub flags: u32,
}

/// Report every flow stored in the connection table on NEW_FLOWS, for flow-state sync with the other LB nodes.
pub const LB_F_SYNC: u32 = 1;

/// A flow the program stored, as reported on the NEW_FLOWS ring buffer for flow-state sync.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NewFlow {
    pub key: FlowKey,
    pub real_id: u32,
    pub vip_num: u32,
}

/// Bytes of the NEW_FLOWS ring buffer: 64 Ki flows of 48 bytes (+8 of header each); a full ring drops reports.
pub const NEW_FLOWS_BYTES: u32 = 4 << 20;

/// Version of the meaning of the pinned maps' contents. Sizes and types are checked map by map as well; this
/// changes when a field's meaning changes with no size change, so no lbd reinterprets live entries.
pub const LAYOUT_VERSION: u16 = 2;

/// Packet/byte/new-flow counters; per CPU in the maps, summed by userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

impl Counters {
    pub fn add(&mut self, other: &Counters) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
        self.new_flows = self.new_flows.wrapping_add(other.new_flows);
    }
}

/// Indexes of GLOBAL_STATS: why packets were not forwarded, or that they were.
pub mod global {
    /// Forwarded to a real (XDP_TX).
    pub const TX: u32 = 0;
    /// Not for a configured service: passed to the kernel.
    pub const PASS_NOT_VIP: u32 = 1;
    /// Truncated or malformed header (bad IHL, short TCP header, ...): passed to the kernel, never forwarded.
    pub const PASS_MALFORMED: u32 = 2;
    /// IPv4 fragment or IP options: passed to the kernel, never forwarded.
    pub const PASS_FRAG_OR_OPTIONS: u32 = 3;
    /// For a service that has no usable real: passed to the kernel (which answers TCP with a reset).
    pub const PASS_NO_REAL: u32 = 4;
    /// An ICMP "fragmentation needed" / ICMPv6 "packet too big" about a balanced flow, sent on to the flow's real.
    pub const TX_ICMP: u32 = 5;
    /// IPv6 with extension headers before TCP/UDP: passed to the kernel, never forwarded.
    pub const PASS_EXT_HEADERS: u32 = 6;
    pub const COUNT: u32 = 8;
}

/// Compile-time layout checks: the kernel and userspace must agree on these sizes.
const _: () = {
    assert!(core::mem::size_of::<VipKey>() == 20);
    assert!(core::mem::size_of::<VipMeta>() == 8);
    assert!(core::mem::size_of::<FlowKey>() == 40);
    assert!(core::mem::size_of::<ConnEntry>() == 16);
    assert!(core::mem::size_of::<RealDef>() == 32);
    assert!(core::mem::size_of::<LbConfig>() == 16);
    assert!(core::mem::size_of::<Counters>() == 24);
    assert!(core::mem::size_of::<ServiceCfg>() == 8);
    assert!(core::mem::size_of::<NewFlow>() == 48);
};

/// Flow hash used to pick a Maglev slot. Shared so userspace tests and tools compute the same slot as the
/// dataplane. A murmur3-style mix: cheap, no tables, good avalanche on the 5-tuple.
#[inline(always)]
pub fn flow_hash(seed: u32, src: u32, dst: u32, ports: u32, proto: u32) -> u32 {
    let mut h: u32 = 0x9747_b28c ^ proto ^ seed;
    h = mix(h, src);
    h = mix(h, dst);
    h = mix(h, ports);
    fmix(h)
}

/// Folds a 16-byte address into the 32 bits `flow_hash` takes: an IPv4 address (zero beyond its 4 bytes) folds
/// to itself, so IPv4 flows hash as they always did.
#[inline(always)]
pub fn fold_addr(a: &[u8; 16]) -> u32 {
    let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    w(0) ^ w(4) ^ w(8) ^ w(12)
}

#[inline(always)]
fn mix(h: u32, k: u32) -> u32 {
    let mut k = k.wrapping_mul(0xcc9e_2d51);
    k = k.rotate_left(15);
    k = k.wrapping_mul(0x1b87_3593);
    let h = h ^ k;
    h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for VipKey {}
    unsafe impl aya::Pod for VipMeta {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for ConnEntry {}
    unsafe impl aya::Pod for RealDef {}
    unsafe impl aya::Pod for LbConfig {}
    unsafe impl aya::Pod for Counters {}
    unsafe impl aya::Pod for ServiceCfg {}
    unsafe impl aya::Pod for NewFlow {}
}
