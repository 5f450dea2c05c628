//! One service as lbd runs it: its dataplane slot, its check and its reals with their health, in one struct, so
//! nothing about a service lives in a map beside it that could drift. Reals' dataplane entries are per address
//! (shared by every service that lists the address) and live in [`RealSlot`].

use crate::health::{Health, Tracker};
use crate::model::{CheckSpec, RealSpec, ServiceKey};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// Health of one real in one service.
#[derive(Clone, Debug, Default)]
pub struct RealHealth {
    pub tracker: Tracker,
    /// What the last probe said ("200", "connect ...: Connection refused").
    pub last_detail: Option<String>,
    pub last_latency: Option<Duration>,
    pub passed: u64,
    pub failed: u64,
}

#[derive(Clone, Debug)]
pub struct Real {
    pub spec: RealSpec,
    pub health: RealHealth,
    /// Index of this (service, real) pair's counters in DEST_STATS (0: not counted).
    pub dest: u32,
}

#[derive(Clone, Debug)]
pub struct Service {
    pub key: ServiceKey,
    /// Index in VIPS, CH_RINGS and SVC_STATS.
    pub slot: u32,
    pub check: CheckSpec,
    /// Persistence timeout in seconds (0: none).
    pub persist: u32,
    pub reals: BTreeMap<IpAddr, Real>,
    /// Announced as having no usable real (so its recovery is announced once too).
    pub down: bool,
}

impl Service {
    pub fn new(key: ServiceKey, slot: u32, check: CheckSpec, persist: u32) -> Self {
        Service { key, slot, check, persist, reals: BTreeMap::new(), down: false }
    }
}

/// A real server's dataplane entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealSlot {
    /// Index in REALS and REAL_STATS, written into rings and flows.
    pub id: u32,
    /// Services that list this address; the id is freed when none does.
    pub refs: u32,
    /// From the neighbour table; a real without one takes no new flows.
    pub mac: Option<[u8; 6]>,
}

/// Why a real takes no new flows, or None when it does.
pub fn out_reason(slot: Option<&RealSlot>, real: &Real) -> Option<&'static str> {
    if slot.is_none_or(|s| s.mac.is_none()) {
        Some("unresolved")
    } else if real.health.tracker.health == Health::Down {
        Some("down")
    } else if real.spec.drained {
        Some("drained")
    } else if real.spec.weight == 0 {
        Some("weight 0")
    } else {
        None
    }
}
