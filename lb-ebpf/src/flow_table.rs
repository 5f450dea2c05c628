//! The flow table (CONN_TABLE): a packet's real is its flow's entry, else its client's persistence template, else
//! the service's Maglev slot; entries are stored at a flow's first non-SYN packet and their atime refreshed coarsely.

use lb_common::{flow_hash, fold_addr, ConnEntry, FlowKey, RealDef, FLOW_KIND_PERSIST, REAL_F_VALID, RING_SIZE};

use crate::maps::{CH_RINGS, CONN_TABLE, REALS, SVC_CFG};
use crate::parse::Packet;

/// A flow's atime is refreshed when it is older than this, so most packets do not write the entry.
const ATIME_REFRESH_NS: u64 = 1_000_000_000;
/// A SYN for a remembered tuple silent this long opens a new connection (a client reusing its port: Linux reuses a
/// TIME_WAIT port only a second or more after its last packet): it is placed by the current Maglev table, like any
/// new connection, and replaces the entry, so a removed or drained real gets no new connection. A SYN for a tuple
/// heard from more recently follows its flow and changes nothing (a duplicate, or spoofed).
const SYN_REUSE_NS: u64 = 1_000_000_000;

/// The real of a packet: its flow's entry, else its client's persistence template, else the Maglev table.
/// Returns (real id, its definition, 1 when a flow was stored anew) or None when the service has no usable real.
#[inline(always)]
pub fn place(p: &Packet, vip_num: u32, now: u64, seed: u32) -> Option<(u32, &'static RealDef, u64)> {
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
