//! The XDP program's maps (names, key and value types and sizes are the pinned layout lbd checks: change none of
//! them without a new layout) and the per-CPU counter helper.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use lb_common::{
    global, ConnEntry, Counters, FlowKey, LbConfig, RealDef, ServiceCfg, VipKey, VipMeta, DEFAULT_CONN_TABLE_SIZE,
    DEFAULT_MAX_SERVICES, MAX_DESTS, MAX_REALS, NEW_FLOWS_BYTES, RING_SIZE,
};

/// Services: (VIP, port, proto) -> index of its ring and counters.
#[map]
pub static VIPS: HashMap<VipKey, VipMeta> = HashMap::with_max_entries(DEFAULT_MAX_SERVICES, 0);

/// Maglev tables, flat: service n owns slots [n * RING_SIZE, (n + 1) * RING_SIZE); each slot holds a real id.
#[map]
pub static CH_RINGS: Array<u32> = Array::with_max_entries(DEFAULT_MAX_SERVICES * RING_SIZE, 0);

/// Real servers by id (0 reserved): their MACs.
#[map]
pub static REALS: Array<RealDef> = Array::with_max_entries(MAX_REALS, 0);

/// Connection table: flow -> real, so a flow keeps its real when the real set changes, plus the persistence
/// templates of persistent services. LRU evicts idle entries.
/// One common LRU list: BPF_F_NO_COMMON_LRU measured slower for inserts here (BENCHMARKS.md).
#[map]
pub static CONN_TABLE: LruHashMap<FlowKey, ConnEntry> = LruHashMap::with_max_entries(DEFAULT_CONN_TABLE_SIZE, 0);

/// Global settings: the LB interface's MAC (single entry).
#[map]
pub static LB_CFG: Array<LbConfig> = Array::with_max_entries(1, 0);

/// Per-service options (persistence), indexed like the rings.
#[map]
pub static SVC_CFG: Array<ServiceCfg> = Array::with_max_entries(DEFAULT_MAX_SERVICES, 0);

/// Per-service counters, indexed like the rings.
#[map]
pub static SVC_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(DEFAULT_MAX_SERVICES, 0);

/// Per-real counters, indexed by real id. Kept (unwritten) so pins of earlier versions stay adoptable.
#[map]
pub static REAL_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_REALS, 0);

/// Counter slot of each (service, real) pair: index `vip_num * MAX_REALS + real_id`, value a DEST_STATS index
/// (0: not counted). userspace gives a pair its slot and zeroes the counters when it reuses one.
#[map]
pub static DEST_IDX: Array<u32> = Array::with_max_entries(DEFAULT_MAX_SERVICES * MAX_REALS, 0);

/// Per-(service, real) counters, like `ipvsadm --stats`.
#[map]
pub static DEST_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_DESTS, 0);

/// Flows stored in CONN_TABLE, for lbd to share with the other LB nodes (only with LB_F_SYNC; lossy when full).
#[map]
pub static NEW_FLOWS: RingBuf = RingBuf::with_byte_size(NEW_FLOWS_BYTES, 0);

/// Why packets were or were not forwarded (lb_common::global indexes).
#[map]
pub static GLOBAL_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(global::COUNT, 0);

/// Adds one packet of `bytes` (and `new_flows` stored flows) to counter slot `idx` of this CPU.
#[inline(always)]
pub fn count(map: &PerCpuArray<Counters>, idx: u32, bytes: u64, new_flows: u64) {
    if let Some(c) = map.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            (*c).new_flows += new_flows;
        }
    }
}
