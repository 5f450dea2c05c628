//! Forwarding a placed packet: the MAC rewrite of direct routing, the new-flow report for sync, and the counters.

use aya_ebpf::{
    bindings::xdp_action::{XDP_PASS, XDP_TX},
    helpers::bpf_ktime_get_coarse_ns,
    programs::XdpContext,
};
use lb_common::{global, NewFlow, LB_F_SYNC, MAX_REALS};

use crate::flow_table::place;
use crate::maps::{count, DEST_IDX, DEST_STATS, GLOBAL_STATS, LB_CFG, NEW_FLOWS, SVC_STATS};
use crate::parse::{frame_len, Packet};

/// Picks the packet's real, rewrites the MACs and counts; returns the XDP action and its GLOBAL_STATS reason
/// (TX is counted here, every other reason by the caller).
#[inline(always)]
pub fn forward(ctx: &XdpContext, eth: *mut u8, p: &Packet) -> (u32, u32) {
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
