//! XDP dataplane: finds the service of a packet, picks its real by connection table, persistence or Maglev,
//! rewrites MACs, XDP_TX.
//!
//! Direct routing (LVS-DR): the IP packet is untouched, only the Ethernet addresses change, and the real server
//! (holding the VIP on its loopback) answers the client itself. IPv4 and IPv6 TCP/UDP packets for a configured
//! service are balanced; an ICMP "fragmentation needed" (v4) or "packet too big" (v6) about a balanced flow goes to
//! that flow's real, so path-MTU discovery works through the VIP. Anything else goes to the kernel unchanged.
//!
//! Laid out as Katran lays out its program: `maps` (every map, the pinned layout), `parse` (headers, the service
//! lookup and the one flow-key constructor of both families), `icmp` (errors about balanced flows), `flow_table`
//! (connection table, persistence, Maglev) and `forward` (MAC rewrite, sync report, counters); this file holds the
//! entry points.
#![no_std]
#![no_main]
// Map helpers take `impl Borrow<K>`; a reference keeps one copy of each key on the BPF stack.
#![expect(clippy::needless_borrows_for_generic_args, reason = "keys are passed by reference on purpose")]

mod flow_table;
mod forward;
mod icmp;
mod maps;
mod parse;

use aya_ebpf::{bindings::xdp_action::XDP_PASS, macros::xdp, programs::XdpContext};
use lb_common::global;

use maps::{count, GLOBAL_STATS};
use parse::{be16, frame_len, ptr_at, ETH_HLEN, ETH_P_IP, ETH_P_IPV6};

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

/// Decides the packet's fate; returns the XDP action and the GLOBAL_STATS index that explains it.
#[inline(always)]
fn process(ctx: &XdpContext) -> (u32, u32) {
    let Some(eth) = ptr_at(ctx, 0, ETH_HLEN) else {
        return (XDP_PASS, global::PASS_MALFORMED);
    };
    // SAFETY: eth spans ETH_HLEN bytes.
    let ethertype = be16(unsafe { eth.add(12) });
    let pkt = if ethertype == ETH_P_IP {
        parse::parse_v4(ctx)
    } else if ethertype == ETH_P_IPV6 {
        parse::parse_v6(ctx)
    } else {
        return (XDP_PASS, global::PASS_NOT_VIP);
    };
    match pkt {
        Ok(p) => forward::forward(ctx, eth, &p),
        Err(reason) => (XDP_PASS, reason),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
