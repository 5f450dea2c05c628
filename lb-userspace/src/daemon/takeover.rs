//! The takeover plan: what a starting lbd keeps of the dataplane an earlier lbd pinned. Services and reals keep
//! their slots and ids, because the connection table refers to them: that is what lets established flows survive
//! a restart or an upgrade. Pure: it reads what was pinned and the state to apply, and decides.

use super::ids::Ids;
use crate::model::{self, LbState, Proto, ServiceKey};
use lb_common::{RealDef, VipKey, VipMeta, REAL_F_VALID};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// What an earlier lbd left in the pinned maps.
#[derive(Clone, Debug, Default)]
pub struct Pinned {
    pub services: Vec<(VipKey, VipMeta)>,
    /// Used REALS entries by id.
    pub reals: Vec<(u32, RealDef)>,
    /// The real ids in each pinned service's ring, by slot.
    pub rings: BTreeMap<u32, BTreeSet<u32>>,
}

#[derive(Clone, Debug)]
pub struct Plan {
    /// Services of the new state that the earlier lbd had: they keep their slot.
    pub slots: BTreeMap<ServiceKey, u32>,
    /// Pinned services the new state no longer has: removed from the dataplane first.
    pub stale: Vec<(ServiceKey, u32)>,
    /// Reals the earlier lbd had, by address: their id, and their MAC when it was valid.
    pub reals: BTreeMap<IpAddr, (u32, Option<[u8; 6]>)>,
    /// (service, real) pairs of the new state that were in the service's pinned ring: they serve flows now.
    pub serving: BTreeSet<(ServiceKey, IpAddr)>,
    /// The allocator, with the earlier lbd's numbers taken out: kept services and reals are installed at theirs
    /// (see `slots` and `reals`), stale slots are freed once their services are removed.
    pub ids: Ids,
}

/// The service of a VIPS key an earlier lbd wrote (None for a family or protocol this lbd does not handle).
pub fn service_of(k: &VipKey) -> Option<ServiceKey> {
    let vip = model::addr_of_key(&k.addr, k.family)?;
    let proto = match k.proto {
        lb_common::PROTO_TCP => Proto::Tcp,
        lb_common::PROTO_UDP => Proto::Udp,
        _ => return None,
    };
    Some(ServiceKey { vip, port: u16::from_be(k.port), proto })
}

/// A REALS entry's address. The family is not stored: an address whose last 12 bytes are zero is IPv4 (no usable
/// IPv6 real address has that form: it would be in ::/32, which holds no unicast space).
fn real_addr(def: &RealDef) -> IpAddr {
    let family = if def.addr[4..] == [0; 12] { lb_common::FAMILY_V4 } else { lb_common::FAMILY_V6 };
    model::addr_of_key(&def.addr, family).unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// Decides what to keep. Without pinned maps (`pinned` empty) this is a fresh allocator.
pub fn plan(pinned: &Pinned, wanted: &LbState, max_services: u32, max_reals: u32) -> Plan {
    let mut ids = Ids::new(max_services, max_reals);
    let mut slots = BTreeMap::new();
    let mut stale = Vec::new();
    for (k, meta) in &pinned.services {
        let Some(svc) = service_of(k) else { continue };
        if meta.vip_num >= max_services || !ids.reserve_slot(meta.vip_num) {
            continue; // out of range, or a duplicate slot: not something this lbd can have written
        }
        if wanted.services.contains_key(&svc) {
            slots.insert(svc, meta.vip_num);
        } else {
            stale.push((svc, meta.vip_num));
        }
    }
    let reals: BTreeMap<IpAddr, (u32, Option<[u8; 6]>)> = pinned
        .reals
        .iter()
        .map(|(id, def)| (real_addr(def), (*id, (def.flags & REAL_F_VALID != 0).then_some(def.mac))))
        .collect();
    let keep = wanted.real_addrs();
    let in_use: BTreeSet<u32> = reals.values().map(|(id, _)| *id).collect();
    // Ids of reals gone from the state keep serving their flows as long as possible: reused last.
    let unwanted: BTreeSet<u32> = reals.iter().filter(|(a, _)| !keep.contains(a)).map(|(_, (id, _))| *id).collect();
    ids.reserve_reals(&in_use, &unwanted);
    let mut serving = BTreeSet::new();
    for (svc, slot) in &slots {
        let Some(ring) = pinned.rings.get(slot) else { continue };
        for addr in wanted.services[svc].keys() {
            if reals.get(addr).is_some_and(|(id, mac)| mac.is_some() && ring.contains(id)) {
                serving.insert((*svc, *addr));
            }
        }
    }
    Plan { slots, stale, reals, serving, ids }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ServiceKey, VipKeyOf};

    fn svc(s: &str) -> ServiceKey {
        ServiceKey::parse(s, Proto::Tcp).unwrap()
    }

    fn real(addr: [u8; 4], mac: Option<[u8; 6]>) -> RealDef {
        crate::daemon::core::real_def(IpAddr::from(addr), mac)
    }

    #[test]
    fn kept_services_and_reals_keep_their_numbers_and_the_rest_is_cleared() {
        let web = svc("10.0.0.100:80");
        let gone = svc("10.0.0.100:8080");
        let mut ipv6_key = gone.vip_key();
        ipv6_key.family = 10;
        let pinned = Pinned {
            services: vec![
                (web.vip_key(), VipMeta { vip_num: 2, flags: 0 }),
                (gone.vip_key(), VipMeta { vip_num: 0, flags: 0 }),
                (ipv6_key, VipMeta { vip_num: 1, flags: 0 }),
            ],
            reals: vec![(5, real([10, 0, 0, 11], Some([2, 0, 0, 0, 0, 11]))), (7, real([10, 0, 0, 12], None))],
            rings: BTreeMap::from([(2, BTreeSet::from([5]))]),
        };
        let mut wanted = LbState::default();
        wanted.add_service(web).unwrap();
        wanted.add_real(web, "10.0.0.11".parse().unwrap(), 1).unwrap();
        wanted.add_real(web, "10.0.0.13".parse().unwrap(), 1).unwrap();
        let mut p = plan(&pinned, &wanted, 4, 10);
        assert_eq!(p.slots, BTreeMap::from([(web, 2)]));
        assert_eq!(p.stale, vec![(gone, 0)]);
        assert_eq!(p.reals[&"10.0.0.11".parse::<IpAddr>().unwrap()], (5, Some([2, 0, 0, 0, 0, 11])));
        assert_eq!(p.reals[&"10.0.0.12".parse::<IpAddr>().unwrap()], (7, None), "no valid MAC: none adopted");
        // Slots 0 (stale, not yet released) and 2 are held; 1 belonged to a family we do not handle, so it is free.
        assert_eq!(p.ids.take_slot(), Some(1));
        assert_eq!(p.ids.take_slot(), Some(3));
        // Ids 5 and 7 are held; 7 (its real is gone from the state) is reused only after every other id.
        let order: Vec<u32> = std::iter::from_fn(|| p.ids.take_real()).collect();
        assert_eq!(order, vec![1, 2, 3, 4, 6, 8, 9, 7]);
    }

    #[test]
    fn nothing_pinned_is_a_fresh_start() {
        let mut p = plan(&Pinned::default(), &LbState::default(), 2, 3);
        assert!(p.slots.is_empty() && p.stale.is_empty() && p.reals.is_empty());
        assert_eq!((p.ids.take_slot(), p.ids.take_real()), (Some(0), Some(1)));
    }

    #[test]
    fn out_of_range_or_duplicate_slots_are_ignored() {
        let a = svc("10.0.0.1:80");
        let b = svc("10.0.0.2:80");
        let pinned = Pinned {
            services: vec![
                (a.vip_key(), VipMeta { vip_num: 9, flags: 0 }),
                (b.vip_key(), VipMeta { vip_num: 9, flags: 0 }),
            ],
            reals: vec![],
            rings: BTreeMap::new(),
        };
        let mut wanted = LbState::default();
        wanted.add_service(a).unwrap();
        wanted.add_service(b).unwrap();
        let p = plan(&pinned, &wanted, 4, 3);
        assert!(p.slots.is_empty(), "slot 9 is beyond --max-services 4");
    }
}
