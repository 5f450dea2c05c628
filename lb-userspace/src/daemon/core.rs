//! The control task's decisions: services and reals, rings, health transitions, drains and events. It writes the
//! dataplane's maps (fast, through [`Maps`]) and asks for everything slow as an [`Effect`] that the run loop hands
//! to another task: MAC resolution, VIP addresses, probes, connection-table purges and state-file writes. It never
//! waits on I/O, so a real that never answers ARP delays nothing else.

use super::ids::Ids;
use super::maps::Maps;
use super::service::{out_reason, Real, RealHealth, RealSlot, Service};
use super::takeover::Plan;
use super::DaemonError;
use crate::api::{AnnounceWhen, Request, Response};
use crate::dataplane::conntable::{SweepRules, Swept};
use crate::dataplane::AttachMode;
use crate::events::{EventKind, EventLog};
use crate::health::{CheckResult, Health};
use crate::maglev;
use crate::model::{self, CheckSpec, LbState, ModelError, RealSpec, ServiceKey, VipKeyOf};
use crate::netinfo::{format_mac, Iface};
use lb_common::{RealDef, ServiceCfg, REAL_F_VALID, RING_SIZE};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Slow work the control task asks other tasks to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Learn this real's MAC and report every change of it (the resolver answers with a MAC or "unresolved").
    Watch(IpAddr),
    /// No service lists the real any more.
    Unwatch(IpAddr),
    /// Add the VIP to the interface so the LB answers ARP for it (--manage-vips).
    AddVip(IpAddr),
    /// The VIPs to announce to the routing daemon now (route health injection); the rest are withdrawn.
    Announce(BTreeSet<IpAddr>),
    /// Probe `real` of `service` with `check`; kind `none` stops its probes.
    Probe { service: ServiceKey, real: IpAddr, check: CheckSpec },
    /// Drop the flows of (slot, id) from the connection table, then report with [`Lb::purged`].
    Purge { slot: u32, id: u32, note: PurgeNote },
    /// The desired state changed: write the state file.
    Persist,
}

/// What a purge of a down real's flows completes: the real-down event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurgeNote {
    pub service: ServiceKey,
    pub real: IpAddr,
    /// The event's reason, to which the number of purged flows is appended.
    pub reason: String,
}

/// What became of a request.
#[derive(Debug)]
pub enum Handled {
    Answer(Response),
    /// Needs a census of the connection table (`list`, `stats`): answered when one arrives.
    NeedsCensus(Request),
    /// A real was added whose MAC is being resolved: answered with [`Lb::added`] when the resolver reports.
    AwaitMac {
        service: ServiceKey,
        real: IpAddr,
        weight: u32,
    },
}

/// What the decisions need besides the maps and the state.
pub struct Setup {
    pub iface: Iface,
    /// How the program is (or will be) attached, for `lbctl stats`.
    pub mode: AttachMode,
    /// Add each service's VIP to the interface.
    pub manage_vips: bool,
    pub events: EventLog,
    /// Route health injection: when a VIP may be announced, and the kernel table its route goes to.
    pub announce: Option<(AnnounceWhen, u32)>,
}

pub struct Lb<M> {
    pub(super) maps: M,
    pub(super) iface: Iface,
    pub(super) mode: AttachMode,
    manage_vips: bool,
    pub(super) services: BTreeMap<ServiceKey, Service>,
    pub(super) reals: BTreeMap<IpAddr, RealSlot>,
    ids: Ids,
    pub(super) events: EventLog,
    effects: Vec<Effect>,
    /// (slot, real id) pairs removed from their service whose flows may still be in the connection table: the
    /// flow sweep purges them once idle (see `--flow-idle-timeout`), and their persistence templates at once.
    pub(super) retired: BTreeSet<(u32, u32)>,
    /// Entries the flow sweep removed since start.
    pub(super) flows_expired: u64,
    /// Persistence was turned off or a persistent service removed since the last sweep began: templates to clear.
    stale_templates: bool,
    /// Route health injection: when a VIP may be announced, and the table it goes to (None: off).
    pub(super) announce: Option<(AnnounceWhen, u32)>,
    /// In maintenance: nothing is announced.
    pub(super) maintenance: bool,
    /// What was last asked to be announced.
    pub(super) announced: BTreeSet<IpAddr>,
    /// Flow-state sync counters and peers, when sync runs.
    pub(super) sync_stats: Option<std::sync::Arc<crate::sync::SyncStats>>,
    pub(super) sync_peers: Vec<std::net::SocketAddr>,
}

impl<M: Maps> Lb<M> {
    /// Applies `initial` to the dataplane following the takeover `plan`, with the MACs known so far. Everything is
    /// validated before the first write.
    pub fn new(
        maps: M,
        setup: Setup,
        initial: &LbState,
        plan: Plan,
        macs: &BTreeMap<IpAddr, [u8; 6]>,
    ) -> Result<Self, DaemonError> {
        let Setup { iface, mode, manage_vips, events, announce } = setup;
        validate(&iface, initial, maps.max_services())?;
        let mut lb = Lb {
            maps,
            iface,
            mode,
            manage_vips,
            services: BTreeMap::new(),
            reals: BTreeMap::new(),
            ids: plan.ids,
            events,
            effects: Vec::new(),
            retired: BTreeSet::new(),
            flows_expired: 0,
            stale_templates: false,
            announce,
            maintenance: false,
            announced: BTreeSet::new(),
            sync_stats: None,
            sync_peers: Vec::new(),
        };
        for (svc, slot) in &plan.stale {
            lb.maps.del_service(svc.vip_key(), *slot)?;
            lb.ids.release_slot(*slot);
        }
        for (key, reals) in &initial.services {
            let adopted = plan.slots.get(key).copied();
            lb.install_service(*key, initial.check(key), initial.persistence(key), adopted)?;
            for r in reals.values() {
                let pinned = plan.reals.get(&r.addr).copied();
                let mac = macs.get(&r.addr).copied().or(pinned.and_then(|(_, m)| m));
                lb.install_real(*key, r.clone(), mac, pinned.map(|(id, _)| id))?;
                // A real that was in the ring the earlier lbd left serves established flows now: it is taken as up,
                // so one slow probe after an upgrade does not take it down and purge its flows (`fall` failures do).
                if plan.serving.contains(&(*key, r.addr)) && !initial.check(key).is_none() {
                    if let Some(real) = lb.services.get_mut(key).and_then(|s| s.reals.get_mut(&r.addr)) {
                        real.health.tracker = crate::health::Tracker::assumed_up();
                    }
                }
            }
            lb.probe_all(key);
            lb.rebuild_ring(key)?;
        }
        lb.effects.push(Effect::Persist);
        lb.update_announcements();
        Ok(lb)
    }

    /// The VIPs this node may announce: none in maintenance; otherwise each VIP with a usable real in any (or, with
    /// `--announce-when all`, every) service of it.
    pub fn announceable(&self) -> BTreeSet<IpAddr> {
        let Some((when, _)) = self.announce else { return BTreeSet::new() };
        if self.maintenance {
            return BTreeSet::new();
        }
        let mut by_vip: BTreeMap<IpAddr, (bool, bool)> = BTreeMap::new();
        for s in self.services.values() {
            let usable = s.reals.values().any(|r| out_reason(self.reals.get(&r.spec.addr), r).is_none());
            let e = by_vip.entry(s.key.vip).or_insert((false, true));
            e.0 |= usable;
            e.1 &= usable;
        }
        by_vip
            .into_iter()
            .filter(|(_, (any, all))| match when {
                AnnounceWhen::Any => *any,
                AnnounceWhen::All => *all,
            })
            .map(|(vip, _)| vip)
            .collect()
    }

    /// Asks for the announcements to follow what is announceable now, recording each change as an event.
    fn update_announcements(&mut self) {
        if self.announce.is_none() {
            return;
        }
        let want = self.announceable();
        if want == self.announced {
            return;
        }
        for vip in want.difference(&self.announced).copied().collect::<Vec<_>>() {
            self.event(EventKind::VipAnnounced, None, Some(vip), "a service of the VIP has a usable real".into());
        }
        for vip in self.announced.difference(&want).copied().collect::<Vec<_>>() {
            let why = if self.maintenance { "node in maintenance" } else { "no usable real for the VIP" };
            self.event(EventKind::VipWithdrawn, None, Some(vip), why.into());
        }
        self.announced = want.clone();
        self.effects.push(Effect::Announce(want));
    }

    /// The effects decided since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The desired state, as the state file holds it.
    pub fn state(&self) -> LbState {
        let mut st = LbState::default();
        for (key, s) in &self.services {
            st.services.insert(*key, s.reals.iter().map(|(a, r)| (*a, r.spec.clone())).collect());
            if !s.check.is_none() {
                st.checks.insert(*key, s.check.clone());
            }
            if s.persist != 0 {
                st.persistence.insert(*key, s.persist);
            }
        }
        st
    }

    pub fn event(&mut self, kind: EventKind, service: Option<&ServiceKey>, real: Option<IpAddr>, why: String) {
        self.events.push(kind, service.map(|s| s.to_string()), real, why);
    }

    fn service(&self, key: &ServiceKey) -> Result<&Service, ModelError> {
        self.services.get(key).ok_or(ModelError::UnknownService(*key))
    }

    fn service_mut(&mut self, key: &ServiceKey) -> Result<&mut Service, ModelError> {
        self.services.get_mut(key).ok_or(ModelError::UnknownService(*key))
    }

    /// Installs a service at `at` (a slot the takeover plan reserved for it) or the lowest free slot.
    fn install_service(
        &mut self,
        key: ServiceKey,
        check: CheckSpec,
        persist: u32,
        at: Option<u32>,
    ) -> Result<(), DaemonError> {
        key.validate()?;
        check.validate()?;
        model::check_persistence(persist)?;
        if self.services.contains_key(&key) {
            return Err(ModelError::DuplicateService(key).into());
        }
        let slot = match at {
            Some(s) => s,
            None => self.ids.take_slot().ok_or(DaemonError::TooManyServices(self.maps.max_services()))?,
        };
        // Options first, so no packet of the service is placed without them.
        let written = self
            .maps
            .set_service_cfg(slot, ServiceCfg { persist_secs: persist, flags: 0 })
            .and_then(|()| self.maps.set_service(key.vip_key(), slot));
        if let Err(e) = written {
            if at.is_none() {
                self.ids.release_slot(slot);
            }
            return Err(e.into());
        }
        if self.manage_vips {
            self.effects.push(Effect::AddVip(key.vip));
        }
        self.services.insert(key, Service::new(key, slot, check, persist));
        Ok(())
    }

    /// Adds a real to a service, taking a dataplane id for its address unless another service has one already
    /// (`at`: the id an earlier lbd used, which the takeover plan reserved).
    fn install_real(
        &mut self,
        key: ServiceKey,
        spec: RealSpec,
        mac: Option<[u8; 6]>,
        at: Option<u32>,
    ) -> Result<(), DaemonError> {
        model::check_weight(spec.weight)?;
        model::check_family(key, spec.addr)?;
        let addr = spec.addr;
        let svc_slot = self.service(&key)?.slot;
        if self.service(&key)?.reals.contains_key(&addr) {
            return Err(ModelError::DuplicateReal { service: key, real: addr }.into());
        }
        match self.reals.get_mut(&addr) {
            Some(slot) => slot.refs += 1,
            None => {
                let id = match at {
                    Some(id) => id,
                    None => self.ids.take_real().ok_or(DaemonError::TooManyReals(lb_common::MAX_REALS - 1))?,
                };
                if let Err(e) = self.maps.set_real(id, real_def(addr, mac)) {
                    if at.is_none() {
                        self.ids.release_real(id);
                    }
                    return Err(e.into());
                }
                self.reals.insert(addr, RealSlot { id, refs: 1, mac });
                self.effects.push(Effect::Watch(addr));
            }
        }
        let id = self.reals[&addr].id;
        // Its own counters, zeroed; without a free counter slot the pair still forwards, uncounted.
        let dest = self.ids.take_dest().unwrap_or(0);
        if let Err(e) = self.maps.set_dest(svc_slot, id, dest) {
            tracing::warn!(service = %key, real = %addr, error = %e, "cannot give the real its counters");
        }
        self.retired.remove(&(svc_slot, id));
        let real = Real { spec, health: RealHealth::default(), dest };
        self.service_mut(&key)?.reals.insert(addr, real);
        Ok(())
    }

    /// A real left a service: its counters are freed, and its flows and templates are the sweep's to expire.
    fn retire(&mut self, slot: u32, addr: IpAddr, dest: u32) {
        let Some(id) = self.reals.get(&addr).map(|r| r.id) else { return };
        if let Err(e) = self.maps.set_dest(slot, id, 0) {
            tracing::warn!(real = %addr, error = %e, "clearing the real's counter slot failed");
        }
        self.ids.release_dest(dest);
        self.retired.insert((slot, id));
    }

    /// One reference less to a real's id; the last one frees it. The REALS entry stays: flows pinned to it go on
    /// (like IPVS) until they end or the id is reused.
    fn release_real(&mut self, addr: IpAddr) {
        let Some(slot) = self.reals.get_mut(&addr) else { return };
        slot.refs -= 1;
        if slot.refs == 0 {
            let id = slot.id;
            self.reals.remove(&addr);
            self.ids.release_real(id);
            self.effects.push(Effect::Unwatch(addr));
        }
    }

    /// Has every real of a service probed with its check (or stops them, for kind none).
    fn probe_all(&mut self, key: &ServiceKey) {
        let Some(s) = self.services.get_mut(key) else { return };
        for (addr, real) in s.reals.iter_mut() {
            if s.check.is_none() {
                real.health = RealHealth::default();
            }
            self.effects.push(Effect::Probe { service: *key, real: *addr, check: s.check.clone() });
        }
    }

    /// Recomputes a service's Maglev table from the reals that take new flows and writes the difference.
    /// Announces (once) when a service with reals has none left, and when it recovers.
    fn rebuild_ring(&mut self, key: &ServiceKey) -> Result<(), DaemonError> {
        let Some(s) = self.services.get(key) else { return Ok(()) };
        let entries: Vec<maglev::Entry> = s
            .reals
            .values()
            .filter_map(|r| {
                let slot = self.reals.get(&r.spec.addr);
                out_reason(slot, r).is_none().then(|| maglev::Entry {
                    id: slot.map_or(0, |s| s.id),
                    addr: r.spec.addr,
                    weight: r.spec.weight,
                })
            })
            .collect();
        let (slot, has_reals, was_down) = (s.slot, !s.reals.is_empty(), s.down);
        let written = self.maps.write_ring(slot, &maglev::build(&entries, RING_SIZE))?;
        tracing::debug!(service = %key, reals = entries.len(), slots_written = written, "ring updated");
        // A service without reals is not down, nor does losing its last real end a down it was announced in.
        let down = if entries.is_empty() { was_down || has_reals } else { false };
        if down && !was_down {
            let why: Vec<String> = self.services[key]
                .reals
                .values()
                .map(|r| format!("{} {}", r.spec.addr, out_reason(self.reals.get(&r.spec.addr), r).unwrap_or("?")))
                .collect();
            let why = format!(
                "no real can take new flows ({}); packets to the VIP go to the kernel, which resets TCP",
                why.join(", ")
            );
            self.event(EventKind::ServiceDown, Some(key), None, why);
        } else if was_down && !down {
            self.event(
                EventKind::ServiceUp,
                Some(key),
                None,
                format!("{} real(s) take new flows again", entries.len()),
            );
        }
        if let Some(s) = self.services.get_mut(key) {
            s.down = down;
        }
        self.update_announcements();
        Ok(())
    }

    fn rebuild_logged(&mut self, key: &ServiceKey) {
        if let Err(e) = self.rebuild_ring(key) {
            tracing::error!(service = %key, error = %e, "ring update failed");
        }
    }

    /// Applies one request. A refused request changes nothing.
    pub fn handle(&mut self, req: Request) -> Handled {
        let res = match req {
            Request::List | Request::Stats => return Handled::NeedsCensus(req),
            Request::Events { last } => {
                let mut r =
                    Response::ok(format!("{} event(s) kept, {} since start", self.events.len(), self.events.total()));
                r.events = Some(self.events.last(last));
                return Handled::Answer(r);
            }
            Request::AddReal { service, real, weight } => match self.add_real(service, real, weight) {
                Ok(true) => return Handled::Answer(Response::ok(self.added(service, real, weight))),
                Ok(false) => return Handled::AwaitMac { service, real, weight },
                Err(e) => Err(e),
            },
            Request::AddService { service, check, persistent } => self.add_service(service, check, persistent),
            Request::SetPersistence { service, persistent } => self.set_persistence(service, persistent),
            Request::SetCheck { service, check } => self.set_check(service, check),
            Request::Drain { service, real } => self.drain(service, real, true),
            Request::Undrain { service, real } => self.drain(service, real, false),
            Request::DelService { service } => self.del_service(service),
            Request::Maintenance { on } => self.set_maintenance(on),
            Request::EditReal { service, real, weight } => self.edit_real(service, real, weight),
            Request::DelReal { service, real } => self.del_real(service, real),
        };
        Handled::Answer(match res {
            Ok(msg) => {
                tracing::info!("{msg}");
                self.effects.push(Effect::Persist);
                Response::ok(msg)
            }
            Err(e) => {
                tracing::info!(error = %e, "request refused");
                Response::err(e.to_string())
            }
        })
    }

    fn add_service(&mut self, key: ServiceKey, check: CheckSpec, persist: u32) -> Result<String, DaemonError> {
        self.install_service(key, check.clone(), persist, None)?;
        let persistence = persistence_text(persist);
        self.event(
            EventKind::ServiceAdded,
            Some(&key),
            None,
            format!("lbctl add-service, check {}, {persistence}", check.summary()),
        );
        Ok(format!("added service {key} (check {}, {persistence})", check.summary()))
    }

    fn set_maintenance(&mut self, on: bool) -> Result<String, DaemonError> {
        if self.announce.is_none() {
            return Err(DaemonError::NoAnnounce);
        }
        if std::mem::replace(&mut self.maintenance, on) == on {
            return Ok(format!("maintenance was already {}", if on { "on" } else { "off" }));
        }
        let what = if on {
            "maintenance on: every VIP withdrawn, forwarding of the flows routed here goes on"
        } else {
            "maintenance off: healthy VIPs announced again"
        };
        self.event(EventKind::Maintenance, None, None, what.into());
        self.update_announcements();
        Ok(what.into())
    }

    fn set_persistence(&mut self, key: ServiceKey, persist: u32) -> Result<String, DaemonError> {
        model::check_persistence(persist)?;
        let slot = self.service(&key)?.slot;
        self.maps.set_service_cfg(slot, ServiceCfg { persist_secs: persist, flags: 0 })?;
        let old = std::mem::replace(&mut self.service_mut(&key)?.persist, persist);
        self.stale_templates |= old != 0 && persist == 0;
        let text = persistence_text(persist);
        if old != persist {
            self.event(EventKind::ConfigApplied, Some(&key), None, format!("lbctl set-persistence: {text}"));
        }
        Ok(format!("service {key}: {text}"))
    }

    fn set_check(&mut self, key: ServiceKey, check: CheckSpec) -> Result<String, DaemonError> {
        check.validate()?;
        self.service_mut(&key)?.check = check.clone();
        self.probe_all(&key);
        self.rebuild_ring(&key)?;
        self.event(EventKind::CheckChanged, Some(&key), None, format!("check is now {}", check.summary()));
        Ok(format!("service {key} is now checked with {}", check.summary()))
    }

    fn drain(&mut self, key: ServiceKey, addr: IpAddr, on: bool) -> Result<String, DaemonError> {
        let real =
            self.service_mut(&key)?.reals.get_mut(&addr).ok_or(ModelError::UnknownReal { service: key, real: addr })?;
        let was = std::mem::replace(&mut real.spec.drained, on);
        let weight = real.spec.weight;
        if was == on {
            return Ok(format!("real {addr} of {key} was already {}", if on { "drained" } else { "undrained" }));
        }
        if let Err(e) = self.rebuild_ring(&key) {
            if let Some(r) = self.services.get_mut(&key).and_then(|s| s.reals.get_mut(&addr)) {
                r.spec.drained = was;
            }
            return Err(e);
        }
        if on {
            self.event(
                EventKind::RealDrained,
                Some(&key),
                Some(addr),
                "lbctl drain: no new flows, established flows continue".into(),
            );
            Ok(format!(
                "drained real {addr} of {key}: no new flows, established flows continue (weight {weight} kept for undrain)"
            ))
        } else {
            self.event(
                EventKind::RealUndrained,
                Some(&key),
                Some(addr),
                format!("lbctl undrain: takes new flows again with weight {weight}"),
            );
            Ok(format!("undrained real {addr} of {key}: takes new flows again with weight {weight}"))
        }
    }

    fn del_service(&mut self, key: ServiceKey) -> Result<String, DaemonError> {
        let slot = self.service(&key)?.slot;
        self.maps.del_service(key.vip_key(), slot)?;
        let Some(s) = self.services.remove(&key) else { unreachable!("looked up above") };
        self.ids.release_slot(slot);
        self.stale_templates |= s.persist != 0;
        self.update_announcements();
        for (addr, r) in &s.reals {
            self.effects.push(Effect::Probe { service: key, real: *addr, check: CheckSpec::default() });
            self.retire(slot, *addr, r.dest);
            self.release_real(*addr);
        }
        self.event(
            EventKind::ServiceRemoved,
            Some(&key),
            None,
            format!("lbctl del-service ({} real(s))", s.reals.len()),
        );
        Ok(format!("deleted service {key} and its {} real(s)", s.reals.len()))
    }

    /// Adds a real; true when its MAC is known (the answer can go at once), false while it is being resolved.
    fn add_real(&mut self, key: ServiceKey, addr: IpAddr, weight: u32) -> Result<bool, DaemonError> {
        model::check_weight(weight)?;
        model::check_real_of(key, addr)?;
        if self.service(&key)?.reals.contains_key(&addr) {
            return Err(ModelError::DuplicateReal { service: key, real: addr }.into());
        }
        check_real(&self.iface, addr)?;
        let existed = self.reals.get(&addr).copied();
        let mac = existed.and_then(|s| s.mac);
        self.install_real(key, RealSpec { addr, weight, drained: false }, mac, None)?;
        // An unresolved real is not in the ring anyway; the ring (and a service-down, should it be the only real)
        // waits for the resolver's answer, so a resolution of a few milliseconds raises no false alarm.
        let rebuilt = if mac.is_some() { self.rebuild_ring(&key) } else { Ok(()) };
        if let Err(e) = rebuilt {
            // Undo, so a refused request changes nothing.
            if let Some(s) = self.services.get_mut(&key) {
                s.reals.remove(&addr);
            }
            self.release_real(addr);
            return Err(e);
        }
        let check = self.service(&key)?.check.clone();
        self.effects.push(Effect::Probe { service: key, real: addr, check });
        self.effects.push(Effect::Persist);
        if mac.is_none() && existed.is_some() {
            // A new address is watched by install_real; an unresolved one another service lists is asked again,
            // so this request gets its answer within the resolver's wait too.
            self.effects.push(Effect::Watch(addr));
        }
        Ok(mac.is_some())
    }

    /// The answer to an add-real, once the real's MAC is known or its resolution gave up; records the event.
    pub fn added(&mut self, key: ServiceKey, addr: IpAddr, weight: u32) -> String {
        let mac = self.reals.get(&addr).and_then(|s| s.mac);
        if !self.services.get(&key).is_some_and(|s| s.reals.contains_key(&addr)) {
            return format!("added real {addr} to {key} with weight {weight}; it has been removed since");
        }
        if mac.is_none() {
            self.rebuild_logged(&key);
        }
        let unresolved = if mac.is_none() { ", MAC not resolved yet" } else { "" };
        self.event(
            EventKind::RealAdded,
            Some(&key),
            Some(addr),
            format!("lbctl add-real, weight {weight}{unresolved}"),
        );
        let msg = match mac {
            Some(m) => format!("added real {addr} ({}) to {key} with weight {weight}", format_mac(&m)),
            None => format!(
                "added real {addr} to {key} with weight {weight}; its MAC is not resolved yet (no ARP answer), so it takes no flows until it answers"
            ),
        };
        tracing::info!("{msg}");
        msg
    }

    fn edit_real(&mut self, key: ServiceKey, addr: IpAddr, weight: u32) -> Result<String, DaemonError> {
        model::check_weight(weight)?;
        let real =
            self.service_mut(&key)?.reals.get_mut(&addr).ok_or(ModelError::UnknownReal { service: key, real: addr })?;
        let old = std::mem::replace(&mut real.spec.weight, weight);
        if let Err(e) = self.rebuild_ring(&key) {
            if let Some(r) = self.services.get_mut(&key).and_then(|s| s.reals.get_mut(&addr)) {
                r.spec.weight = old;
            }
            return Err(e);
        }
        if old != weight {
            self.event(
                EventKind::WeightChanged,
                Some(&key),
                Some(addr),
                format!("lbctl edit-real: weight {old} -> {weight}"),
            );
        }
        Ok(format!("real {addr} of {key} now has weight {weight}"))
    }

    fn del_real(&mut self, key: ServiceKey, addr: IpAddr) -> Result<String, DaemonError> {
        let removed = self.service_mut(&key)?.reals.remove(&addr);
        let Some(real) = removed else { return Err(ModelError::UnknownReal { service: key, real: addr }.into()) };
        if let Err(e) = self.rebuild_ring(&key) {
            if let Some(s) = self.services.get_mut(&key) {
                s.reals.insert(addr, real);
            }
            return Err(e);
        }
        self.effects.push(Effect::Probe { service: key, real: addr, check: CheckSpec::default() });
        let slot = self.service(&key)?.slot;
        self.retire(slot, addr, real.dest);
        self.release_real(addr);
        self.event(EventKind::RealRemoved, Some(&key), Some(addr), "lbctl del-real: established flows continue".into());
        Ok(format!("deleted real {addr} from {key}; its established flows continue, new ones go elsewhere"))
    }

    /// The resolver learned (or saw a change of) a real's MAC: rewrite its entry; a real that had none joins its
    /// services' rings.
    pub fn mac_learned(&mut self, addr: IpAddr, mac: [u8; 6]) {
        let Some(slot) = self.reals.get(&addr).copied() else { return };
        if slot.mac == Some(mac) {
            return;
        }
        if let Err(e) = self.maps.set_real(slot.id, real_def(addr, Some(mac))) {
            tracing::error!(real = %addr, error = %e, "updating the real's MAC failed");
            return;
        }
        tracing::info!(real = %addr, mac = %format_mac(&mac), previous = ?slot.mac.map(|m| format_mac(&m)), "real MAC learned");
        if let Some(s) = self.reals.get_mut(&addr) {
            s.mac = Some(mac);
        }
        if slot.mac.is_none() {
            let keys: Vec<ServiceKey> =
                self.services.values().filter(|s| s.reals.contains_key(&addr)).map(|s| s.key).collect();
            for key in keys {
                self.rebuild_logged(&key);
            }
        }
    }

    /// Applies one probe result (the caller dropped results of replaced probes): rise/fall, and on a change the
    /// ring, a purge of the real's flows and an event.
    pub fn on_check(&mut self, res: CheckResult) {
        let key = res.service;
        let Some(s) = self.services.get_mut(&key) else { return };
        let (slot, spec) = (s.slot, s.check.clone());
        let Some(real) = s.reals.get_mut(&res.real) else { return };
        let h = &mut real.health;
        h.last_detail = Some(res.detail.clone());
        h.last_latency = Some(res.latency);
        if res.ok {
            h.passed += 1;
        } else {
            h.failed += 1;
        }
        let before = h.tracker.health;
        let Some(now) = h.tracker.record(res.ok, spec.rise, spec.fall) else { return };
        match now {
            Health::Down => {
                let runs = if before == Health::Unknown { 1 } else { spec.fall };
                self.rebuild_logged(&key);
                // The real-down event is recorded when the purge is done, with how many flows it removed.
                let note = PurgeNote {
                    service: key,
                    real: res.real,
                    reason: format!("{} check failed {runs} time(s): {}; out of the ring", spec.kind, res.detail),
                };
                match self.reals.get(&res.real) {
                    Some(r) => self.effects.push(Effect::Purge { slot, id: r.id, note }),
                    None => self.purged(note, Ok(0)),
                }
            }
            Health::Up => {
                if before == Health::Down {
                    self.rebuild_logged(&key);
                }
                let runs = if before == Health::Unknown { 1 } else { spec.rise };
                self.event(
                    EventKind::RealUp,
                    Some(&key),
                    Some(res.real),
                    format!("{} check passed {runs} time(s): {}", spec.kind, res.detail),
                );
            }
            Health::Unknown => {}
        }
    }

    /// This node's numbering for flow-state sync: real ids and service slots by name, both ways.
    pub fn names(&self) -> crate::sync::Names {
        crate::sync::Names {
            real_addr: self.reals.iter().map(|(a, r)| (r.id, *a)).collect(),
            real_id: self.reals.iter().map(|(a, r)| (*a, r.id)).collect(),
            slot: self.services.iter().map(|(k, s)| (*k, s.slot)).collect(),
        }
    }

    /// Whether a sweep can remove anything: a walk of millions of entries is not made for nothing.
    pub fn needs_sweep(&self) -> bool {
        self.stale_templates
            || !self.retired.is_empty()
            || self.services.values().any(|s| s.persist != 0 || s.key.proto == model::Proto::Udp)
    }

    /// What the next flow sweep removes: idle flows of retired pairs and UDP flows, and expired templates.
    pub fn sweep_rules(&mut self, idle: std::time::Duration) -> SweepRules {
        self.stale_templates = false;
        SweepRules {
            idle_ns: idle.as_nanos().min(u64::MAX as u128) as u64,
            retired: self.retired.clone(),
            persist_ns: self
                .services
                .values()
                .filter(|s| s.persist != 0)
                .map(|s| (s.slot, u64::from(s.persist) * 1_000_000_000))
                .collect(),
        }
    }

    /// A sweep by `rules` finished: retired pairs it left without entries are forgotten (unless retired again since
    /// the sweep began, which `install_real` and `retire` keep exact).
    pub fn swept(&mut self, rules: &SweepRules, swept: Swept) {
        self.flows_expired += swept.removed as u64;
        if swept.removed > 0 {
            tracing::info!(removed = swept.removed, "flow sweep expired connection-table entries");
        }
        for pair in &rules.retired {
            if !swept.retired_left.contains(pair) {
                self.retired.remove(pair);
            }
        }
    }

    /// A purge of a down real's flows finished.
    pub fn purged(&mut self, note: PurgeNote, result: std::io::Result<usize>) {
        let n = result.unwrap_or_else(|e| {
            tracing::error!(service = %note.service, real = %note.real, error = %e, "purging the real's flows failed");
            0
        });
        self.event(
            EventKind::RealDown,
            Some(&note.service),
            Some(note.real),
            format!("{}, {n} flow(s) purged", note.reason),
        );
    }
}

fn persistence_text(secs: u32) -> String {
    match secs {
        0 => "no persistence".into(),
        s => format!("persistent {s} s"),
    }
}

/// Checks a whole state against the interface and the dataplane's size before anything is applied.
pub fn validate(iface: &Iface, state: &LbState, max_services: u32) -> Result<(), DaemonError> {
    if state.services.len() as u32 > max_services {
        return Err(DaemonError::TooManyServices(max_services));
    }
    state.real_addrs().into_iter().try_for_each(|addr| check_real(iface, addr))
}

/// A real must sit on a directly connected subnet of the interface, and not be the LB itself: direct routing
/// only rewrites the destination MAC.
fn check_real(iface: &Iface, addr: IpAddr) -> Result<(), DaemonError> {
    if iface.is_local(addr) {
        return Err(DaemonError::RealIsLocal { real: addr, iface: iface.name.clone() });
    }
    if !iface.on_link(addr) {
        return Err(DaemonError::OffSubnet { real: addr, iface: iface.name.clone(), nets: iface.subnets() });
    }
    if let Some((which, net)) = iface.subnet_edge(addr) {
        return Err(DaemonError::SubnetEdge { real: addr, which, net, iface: iface.name.clone() });
    }
    Ok(())
}

/// A REALS entry; without a MAC the entry is not valid and the program sends nothing to it.
pub(super) fn real_def(addr: IpAddr, mac: Option<[u8; 6]>) -> RealDef {
    RealDef {
        addr: model::addr_key(addr).0,
        mac: mac.unwrap_or_default(),
        _pad: [0; 2],
        flags: if mac.is_some() { REAL_F_VALID } else { 0 },
        _pad2: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::maps::MemMaps;
    use crate::daemon::takeover;
    use crate::dataplane::conntable::Census;
    use crate::model::{CheckKind, Proto};
    use std::time::Duration;

    const MAC1: [u8; 6] = [2, 0, 0, 0, 0, 11];
    const MAC2: [u8; 6] = [2, 0, 0, 0, 0, 12];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn key(s: &str) -> ServiceKey {
        ServiceKey::parse(s, Proto::Tcp).unwrap()
    }

    fn iface() -> Iface {
        Iface { name: "lb0".into(), index: 2, mac: [2, 0, 0, 0, 0, 1], nets: vec![("10.0.0.1".parse().unwrap(), 24)] }
    }

    fn setup() -> Setup {
        Setup { iface: iface(), mode: AttachMode::Skb, manage_vips: false, events: EventLog::new(64), announce: None }
    }

    /// An LB with `state` applied and the given MACs known.
    fn lb(state: &LbState, macs: &[(&str, [u8; 6])]) -> Lb<MemMaps> {
        let macs = macs.iter().map(|(a, m)| (ip(a), *m)).collect();
        let plan = takeover::plan(&takeover::Pinned::default(), state, 4, 16);
        let mut lb = Lb::new(MemMaps::new(4), setup(), state, plan, &macs).unwrap();
        lb.take_effects();
        lb
    }

    fn web_with(reals: &[&str]) -> LbState {
        let mut st = LbState::default();
        st.add_service(key("10.0.0.100:80")).unwrap();
        for r in reals {
            st.add_real(key("10.0.0.100:80"), ip(r), 1).unwrap();
        }
        st
    }

    fn kinds(lb: &Lb<MemMaps>) -> Vec<EventKind> {
        lb.events.last(None).iter().map(|e| e.kind).collect()
    }

    fn result(service: ServiceKey, real: &str, ok: bool) -> CheckResult {
        CheckResult {
            service,
            real: ip(real),
            generation: 1,
            ok,
            latency: Duration::from_millis(1),
            detail: "x".into(),
        }
    }

    fn ok(h: Handled) -> String {
        match h {
            Handled::Answer(r) if r.ok => r.message,
            other => panic!("expected a successful answer, got {other:?}"),
        }
    }

    #[test]
    fn slots_and_ids_are_reused_and_shared_reals_hold_one_id() {
        let mut lb = lb(&LbState::default(), &[]);
        let (a, b) = (key("10.0.0.100:80"), key("10.0.0.100:1935"));
        ok(lb.handle(Request::AddService { service: a, check: CheckSpec::default(), persistent: 0 }));
        ok(lb.handle(Request::AddService { service: b, check: CheckSpec::default(), persistent: 0 }));
        assert_eq!((lb.services[&a].slot, lb.services[&b].slot), (0, 1));
        lb.mac_learned(ip("10.0.0.11"), MAC1); // not watched yet: ignored
        assert!(matches!(
            lb.handle(Request::AddReal { service: a, real: ip("10.0.0.11"), weight: 1 }),
            Handled::AwaitMac { .. }
        ));
        assert!(lb.take_effects().contains(&Effect::Watch(ip("10.0.0.11"))));
        lb.mac_learned(ip("10.0.0.11"), MAC1);
        // The second service listing the address shares its id and its MAC: answered at once, no new watch.
        let msg = ok(lb.handle(Request::AddReal { service: b, real: ip("10.0.0.11"), weight: 1 }));
        assert!(msg.contains("02:00:00:00:00:0b"), "{msg}");
        assert!(!lb.take_effects().contains(&Effect::Watch(ip("10.0.0.11"))));
        assert_eq!(lb.reals[&ip("10.0.0.11")], RealSlot { id: 1, refs: 2, mac: Some(MAC1) });
        assert_eq!(lb.maps.ring_ids(0), [1].into());
        // Deleting a service frees its slot for the next one; the real keeps its id while b lists it.
        ok(lb.handle(Request::DelService { service: a }));
        assert_eq!(lb.reals[&ip("10.0.0.11")].refs, 1);
        ok(lb.handle(Request::AddService {
            service: key("10.0.0.101:80"),
            check: CheckSpec::default(),
            persistent: 0,
        }));
        assert_eq!(lb.services[&key("10.0.0.101:80")].slot, 0);
        ok(lb.handle(Request::DelReal { service: b, real: ip("10.0.0.11") }));
        assert!(lb.reals.is_empty());
        assert!(lb.take_effects().contains(&Effect::Unwatch(ip("10.0.0.11"))));
    }

    #[test]
    fn refused_requests_change_nothing() {
        let mut lb = lb(&web_with(&["10.0.0.11"]), &[("10.0.0.11", MAC1)]);
        let before = lb.state();
        let web = key("10.0.0.100:80");
        for req in [
            Request::AddService { service: web, check: CheckSpec::default(), persistent: 0 },
            Request::AddReal { service: web, real: ip("10.0.0.11"), weight: 1 },
            Request::AddReal { service: web, real: ip("192.168.1.5"), weight: 1 },
            Request::AddReal { service: web, real: ip("10.0.0.1"), weight: 1 },
            Request::AddReal { service: web, real: ip("10.0.0.12"), weight: 70_000 },
            Request::AddReal { service: key("10.0.0.100:81"), real: ip("10.0.0.12"), weight: 1 },
            Request::EditReal { service: web, real: ip("10.0.0.12"), weight: 1 },
            Request::DelReal { service: web, real: ip("10.0.0.12") },
            Request::Drain { service: web, real: ip("10.0.0.12") },
        ] {
            match lb.handle(req.clone()) {
                Handled::Answer(r) => assert!(!r.ok, "{req:?} was accepted: {}", r.message),
                other => panic!("{req:?}: {other:?}"),
            }
        }
        assert_eq!(lb.state(), before);
        assert!(!lb.take_effects().contains(&Effect::Persist), "nothing to save");
    }

    #[test]
    fn service_down_and_up_are_announced_once_each() {
        let web = key("10.0.0.100:80");
        let mut st = web_with(&["10.0.0.11", "10.0.0.12"]);
        st.set_check(web, CheckSpec { kind: CheckKind::Tcp, ..CheckSpec::default() }).unwrap();
        let mut lb = lb(&st, &[("10.0.0.11", MAC1), ("10.0.0.12", MAC2)]);
        assert_eq!(lb.maps.ring_ids(0), [1, 2].into());
        lb.on_check(result(web, "10.0.0.11", false));
        assert_eq!(lb.maps.ring_ids(0), [2].into(), "the first failure decides for a real never seen up");
        assert!(matches!(&lb.take_effects()[..], [Effect::Purge { slot: 0, id: 1, .. }]));
        ok(lb.handle(Request::Drain { service: web, real: ip("10.0.0.12") }));
        assert!(lb.maps.ring_ids(0).is_empty());
        assert_eq!(kinds(&lb).iter().filter(|k| **k == EventKind::ServiceDown).count(), 1);
        // Still down after another change: not announced again.
        lb.on_check(result(web, "10.0.0.12", true));
        assert_eq!(kinds(&lb).iter().filter(|k| **k == EventKind::ServiceDown).count(), 1);
        // 10.0.0.11 comes back after `rise` passes: the service is up again, announced once.
        lb.on_check(result(web, "10.0.0.11", true));
        assert!(!kinds(&lb).contains(&EventKind::ServiceUp), "rise is 2");
        lb.on_check(result(web, "10.0.0.11", true));
        assert_eq!(lb.maps.ring_ids(0), [1].into());
        assert_eq!(kinds(&lb).iter().filter(|k| **k == EventKind::ServiceUp).count(), 1);
        let list = lb.list(&Census::default()).list.unwrap();
        assert_eq!(list[0].usable_reals, 1);
        assert_eq!(list[0].reals[1].state, "drained");
    }

    #[test]
    fn a_pending_resolution_blocks_no_other_request_or_health_transition() {
        let web = key("10.0.0.100:80");
        let mut st = web_with(&["10.0.0.11"]);
        st.set_check(web, CheckSpec { kind: CheckKind::Tcp, ..CheckSpec::default() }).unwrap();
        let mut lb = lb(&st, &[("10.0.0.11", MAC1)]);
        // 10.0.0.77 never answers ARP: its add-real waits for the resolver...
        let pending = lb.handle(Request::AddReal { service: web, real: ip("10.0.0.77"), weight: 1 });
        assert!(matches!(pending, Handled::AwaitMac { real, .. } if real == ip("10.0.0.77")));
        let effects = lb.take_effects();
        assert!(effects.contains(&Effect::Watch(ip("10.0.0.77"))) && effects.contains(&Effect::Persist));
        // ...while everything else goes on: a list, an event query, a weight change and another real going down.
        assert!(matches!(lb.handle(Request::List), Handled::NeedsCensus(Request::List)));
        let list = lb.list(&Census::default()).list.unwrap();
        assert_eq!(list[0].reals[1].state, "unresolved");
        assert!(lb.handle(Request::Events { last: None }).is_answer());
        ok(lb.handle(Request::EditReal { service: web, real: ip("10.0.0.11"), weight: 2 }));
        lb.on_check(result(web, "10.0.0.11", false));
        assert_eq!(lb.services[&web].reals[&ip("10.0.0.11")].health.tracker.health, Health::Down);
        // The resolver gives up: the answer says so, and the real stays out of the ring until it answers.
        let msg = lb.added(web, ip("10.0.0.77"), 1);
        assert!(msg.contains("not resolved yet"), "{msg}");
        assert!(lb.maps.ring_ids(0).is_empty());
        lb.mac_learned(ip("10.0.0.77"), MAC2);
        assert_eq!(lb.maps.ring_ids(0), [lb.reals[&ip("10.0.0.77")].id].into(), "joins once its MAC is learned");
        assert_eq!(lb.maps.reals[&lb.reals[&ip("10.0.0.77")].id].flags, REAL_F_VALID);
    }

    #[test]
    fn a_takeover_keeps_the_pinned_slots_and_ids() {
        let (web, rtmp) = (key("10.0.0.100:80"), key("10.0.0.100:1935"));
        let mut st = web_with(&["10.0.0.11", "10.0.0.12"]);
        st.add_service(rtmp).unwrap();
        st.add_real(rtmp, ip("10.0.0.12"), 1).unwrap();
        let def = real_def(ip("10.0.0.12"), Some(MAC2));
        let pinned = takeover::Pinned {
            services: vec![(rtmp.vip_key(), lb_common::VipMeta { vip_num: 0, flags: 0 })],
            reals: vec![(9, def)],
            rings: BTreeMap::from([(0, [9].into())]),
        };
        let plan = takeover::plan(&pinned, &st, 4, 16);
        let macs = BTreeMap::from([(ip("10.0.0.11"), MAC1)]);
        let lb = Lb::new(MemMaps::new(4), setup(), &st, plan, &macs).unwrap();
        // The flows in the pinned connection table name slot 0 and real 9: both keep those numbers.
        assert_eq!((lb.services[&rtmp].slot, lb.services[&web].slot), (0, 1));
        assert_eq!(lb.reals[&ip("10.0.0.12")], RealSlot { id: 9, refs: 2, mac: Some(MAC2) });
        assert_eq!(lb.reals[&ip("10.0.0.11")].id, 1);
        assert_eq!(lb.maps.ring_ids(0), [9].into());
        assert_eq!(lb.maps.ring_ids(1), [1, 9].into());
    }

    #[test]
    fn after_a_takeover_one_failed_probe_does_not_take_a_serving_real_down() {
        let web = key("10.0.0.100:80");
        let mut st = web_with(&["10.0.0.11", "10.0.0.12"]);
        st.set_check(web, CheckSpec { kind: CheckKind::Tcp, ..CheckSpec::default() }).unwrap();
        // The earlier lbd had 10.0.0.11 (id 3) in the ring; 10.0.0.12 (id 4) was out (down then).
        let pinned = takeover::Pinned {
            services: vec![(web.vip_key(), lb_common::VipMeta { vip_num: 0, flags: 0 })],
            reals: vec![(3, real_def(ip("10.0.0.11"), Some(MAC1))), (4, real_def(ip("10.0.0.12"), Some(MAC2)))],
            rings: BTreeMap::from([(0, [3].into())]),
        };
        let plan = takeover::plan(&pinned, &st, 4, 16);
        let mut lb = Lb::new(MemMaps::new(4), setup(), &st, plan, &BTreeMap::new()).unwrap();
        lb.take_effects();
        for n in 1..CheckSpec::default().fall {
            lb.on_check(result(web, "10.0.0.11", false));
            assert!(lb.maps.ring_ids(0).contains(&3), "failure {n} of a serving real keeps it in the ring");
            assert!(!lb.take_effects().iter().any(|e| matches!(e, Effect::Purge { .. })), "and purges nothing");
        }
        lb.on_check(result(web, "10.0.0.11", false));
        assert!(!lb.maps.ring_ids(0).contains(&3), "`fall` failures take it down");
        // A real that was not serving is decided by its first result, as at any start.
        lb.on_check(result(web, "10.0.0.12", false));
        assert_eq!(lb.services[&web].reals[&ip("10.0.0.12")].health.tracker.health, Health::Down);
    }

    #[test]
    fn persistence_and_per_real_counters_reach_the_maps_and_removed_reals_are_retired() {
        let web = key("10.0.0.100:80");
        let mut st = web_with(&["10.0.0.11", "10.0.0.12"]);
        st.set_persistence(web, 300).unwrap();
        let mut lb = lb(&st, &[("10.0.0.11", MAC1), ("10.0.0.12", MAC2)]);
        assert_eq!(lb.maps.cfg[&0].persist_secs, 300);
        let (d11, d12) =
            (lb.services[&web].reals[&ip("10.0.0.11")].dest, lb.services[&web].reals[&ip("10.0.0.12")].dest);
        assert!(d11 != 0 && d12 != 0 && d11 != d12, "each pair has its own counters");
        assert_eq!(lb.maps.dests[&(0, 1)], d11);
        ok(lb.handle(Request::SetPersistence { service: web, persistent: 0 }));
        assert_eq!(lb.maps.cfg[&0].persist_secs, 0);
        assert_eq!(lb.state().persistence(&web), 0);
        assert!(!lb.handle(Request::SetPersistence { service: web, persistent: 100_000 }).is_answer());
        ok(lb.handle(Request::DelReal { service: web, real: ip("10.0.0.11") }));
        assert!(!lb.maps.dests.contains_key(&(0, 1)), "a removed pair is no longer counted");
        assert!(lb.retired.contains(&(0, 1)));
        let rules = lb.sweep_rules(std::time::Duration::from_secs(60));
        assert!(rules.retired.contains(&(0, 1)) && rules.persist_ns.is_empty());
        lb.swept(&rules, Swept { removed: 2, retired_left: Default::default() });
        assert!(lb.retired.is_empty() && lb.flows_expired == 2, "a pair without flows is forgotten");
        // A real of the other family is refused.
        let r = lb.handle(Request::AddReal { service: web, real: ip("fd00::11"), weight: 1 });
        assert!(!r.is_answer());
    }

    #[test]
    fn vips_are_announced_while_they_can_be_served_and_withdrawn_in_maintenance() {
        let (web, rtmp) = (key("10.0.0.100:80"), key("10.0.0.100:1935"));
        let mut st = web_with(&["10.0.0.11"]);
        st.add_service(rtmp).unwrap();
        st.add_real(rtmp, ip("10.0.0.12"), 1).unwrap();
        let announced = |lb: &mut Lb<MemMaps>| -> Option<BTreeSet<IpAddr>> {
            lb.take_effects().into_iter().rev().find_map(|e| match e {
                Effect::Announce(s) => Some(s),
                _ => None,
            })
        };
        let vip: BTreeSet<IpAddr> = [ip("10.0.0.100")].into();
        let macs = BTreeMap::from([(ip("10.0.0.11"), MAC1), (ip("10.0.0.12"), MAC2)]);
        let plan = takeover::plan(&takeover::Pinned::default(), &st, 4, 16);
        let mut any =
            Lb::new(MemMaps::new(4), Setup { announce: Some((AnnounceWhen::Any, 200)), ..setup() }, &st, plan, &macs)
                .unwrap();
        assert_eq!(announced(&mut any), Some(vip.clone()), "announced at start");
        ok(any.handle(Request::Drain { service: web, real: ip("10.0.0.11") }));
        assert_eq!(announced(&mut any), None, "one service of the VIP still serves: no change");
        ok(any.handle(Request::Drain { service: rtmp, real: ip("10.0.0.12") }));
        assert_eq!(announced(&mut any), Some(BTreeSet::new()), "no usable real: withdrawn");
        ok(any.handle(Request::Undrain { service: web, real: ip("10.0.0.11") }));
        assert_eq!(announced(&mut any), Some(vip.clone()));
        ok(any.handle(Request::Maintenance { on: true }));
        assert_eq!(announced(&mut any), Some(BTreeSet::new()), "maintenance withdraws");
        assert!(any.announceable().is_empty());
        ok(any.handle(Request::Maintenance { on: false }));
        assert_eq!(announced(&mut any), Some(vip.clone()));
        assert!(kinds(&any).contains(&EventKind::VipWithdrawn) && kinds(&any).contains(&EventKind::Maintenance));
        // `all`: one service without a usable real keeps the VIP withdrawn.
        let plan = takeover::plan(&takeover::Pinned::default(), &st, 4, 16);
        let mut all =
            Lb::new(MemMaps::new(4), Setup { announce: Some((AnnounceWhen::All, 200)), ..setup() }, &st, plan, &macs)
                .unwrap();
        assert_eq!(announced(&mut all), Some(vip));
        ok(all.handle(Request::Drain { service: rtmp, real: ip("10.0.0.12") }));
        assert_eq!(announced(&mut all), Some(BTreeSet::new()));
        // Without route injection, maintenance is refused with the reason.
        let mut off = lb(&st, &[("10.0.0.11", MAC1)]);
        assert!(!off.handle(Request::Maintenance { on: true }).is_answer());
    }

    #[test]
    fn the_state_follows_every_change() {
        let web = key("10.0.0.100:80");
        let mut lb = lb(&web_with(&["10.0.0.11"]), &[("10.0.0.11", MAC1)]);
        ok(lb.handle(Request::Drain { service: web, real: ip("10.0.0.11") }));
        ok(lb.handle(Request::SetCheck {
            service: web,
            check: CheckSpec { kind: CheckKind::Http, ..CheckSpec::default() },
        }));
        let st = lb.state();
        assert!(st.services[&web][&ip("10.0.0.11")].drained);
        assert_eq!(st.check(&web).kind, CheckKind::Http);
        assert_eq!(LbState::parse(&st.to_toml().unwrap(), "t").unwrap(), st);
        assert!(lb.take_effects().iter().filter(|e| **e == Effect::Persist).count() >= 2);
    }

    impl Handled {
        fn is_answer(&self) -> bool {
            matches!(self, Handled::Answer(r) if r.ok)
        }
    }
}
