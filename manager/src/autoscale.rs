//! Edge autoscaling and bursting, as decisions of the [`Cluster`]: per pool, the load of the edges in service
//! against their capacity starts an edge through the pool's provider (above `scale_out_at`, within max, after the
//! cooldown, one warm-up at a time) or drains and then stops a started one (below `scale_in_at`, never below min,
//! never before its `min_lifetime`, never with players on it). An overflow pool starts only when the pool it
//! overflows is at its max, and is emptied first. Every decision is an event with its reason and the signal.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cluster::{Action, Cluster, Health, Maintenance};
use crate::config::{Pool, Role, Scale, Signal};
use crate::events::{AlarmKind, EventKind};

/// An edge the manager started (persisted: a restarted manager still knows what it may stop).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub pool: String,
    /// Unix seconds of the start request.
    pub at: u64,
}

#[derive(Debug, Default)]
pub struct Scaling {
    pub started: BTreeMap<String, Started>,
    /// Start requested, not registered and up yet: (pool, when).
    pub starting: BTreeMap<String, (String, Instant)>,
    /// Scale-in in progress: drained, stopped once empty. The flag: the stop was sent.
    pub stopping: BTreeMap<String, bool>,
    pub last_action: BTreeMap<String, Instant>,
    /// A failing provider: no new attempt for the pool before this, and the next wait.
    pub backoff: BTreeMap<String, (Instant, Duration)>,
    /// Manual starts waiting for room (POST /api/v1/pools/{pool}/start).
    pub manual: BTreeMap<String, usize>,
    pub seq: u64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What a pool carries and can carry now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Sum of the signal over the edges in service.
    pub load: f64,
    pub in_service: usize,
    /// Edges of the pool, starting ones included (what counts toward max).
    pub count: usize,
    /// Edges of the pool that are not down, starting ones included (what counts toward min: a dead always-on edge
    /// serves nobody, so the pool must start one in its place).
    pub alive: usize,
}

impl Load {
    pub fn utilisation(&self, capacity: f64) -> f64 {
        if self.in_service == 0 {
            return if self.load > 0.0 { f64::INFINITY } else { 0.0 };
        }
        self.load / (capacity * self.in_service as f64)
    }
}

fn fmt_signal(s: Signal, v: f64) -> String {
    match s {
        Signal::Bitrate => format!("{:.1} Mbit/s", v / 1e6),
        Signal::Players => format!("{v:.0} players"),
    }
}

impl Cluster {
    /// The load of `pool` by its policy's signal.
    pub fn pool_load(&self, pool: &str, signal: Signal) -> Load {
        let edges = self.pool_edges(pool);
        let mut load = 0.0;
        let mut in_service = 0;
        for n in edges.iter().filter(|n| n.eligible()) {
            in_service += 1;
            if let Some(st) = &n.status {
                load += match signal {
                    Signal::Bitrate => st.bitrate_out_kbps as f64 * 1000.0,
                    Signal::Players => st.players as f64,
                };
            }
        }
        let starting = self.scaling.starting.values().filter(|(p, _)| p == pool).count();
        let alive = edges
            .iter()
            .filter(|n| n.health != Health::Down && !self.scaling.starting.contains_key(&n.spec.name))
            .count();
        Load { load, in_service, count: edges.len() + starting, alive: alive + starting }
    }

    /// A manual start (POST /api/v1/pools/{pool}/start): refused at max, else queued for the next round.
    pub fn manual_start(&mut self, pool: &str) -> Result<String, String> {
        let p = self.config.pools.iter().find(|p| p.name == pool).ok_or_else(|| format!("unknown pool {pool:?}"))?;
        let (Some(sc), Some(max)) = (&p.scale, p.max) else {
            return Err(format!("pool {pool} has no [pool.scale] provider"));
        };
        let load = self.pool_load(pool, sc.signal);
        let queued = self.scaling.manual.get(pool).copied().unwrap_or(0);
        if load.count + queued >= max {
            return Err(format!("pool {pool} is at its max of {max} edges"));
        }
        *self.scaling.manual.entry(pool.to_string()).or_default() += 1;
        Ok(format!("an edge of pool {pool} starts at the next round"))
    }

    /// A manual stop (POST /api/v1/pools/{pool}/stop/{name}): the started edge is drained, then stopped.
    pub fn manual_stop(&mut self, pool: &str, name: &str) -> Result<String, String> {
        match self.scaling.started.get(name) {
            Some(s) if s.pool == pool => {}
            Some(s) => return Err(format!("{name} belongs to pool {}, not {pool}", s.pool)),
            None => {
                return Err(format!(
                    "{name} was not started by the manager in pool {pool}; always-on edges are not stopped"
                ))
            }
        }
        let min = self.config.pools.iter().find(|p| p.name == pool).map_or(0, |p| p.min);
        let load = self.pool_load(pool, Signal::Players);
        if load.in_service <= min && !self.scaling.stopping.contains_key(name) {
            return Err(format!("pool {pool} would go below its min of {min}"));
        }
        self.begin_scale_in(pool, name, "manual stop".into());
        Ok(format!("{name} is drained, then stopped once empty"))
    }

    fn begin_scale_in(&mut self, pool: &str, name: &str, reason: String) {
        if self.scaling.stopping.contains_key(name) {
            return;
        }
        self.scaling.stopping.insert(name.to_string(), false);
        if let Some(n) = self.nodes.get_mut(name) {
            if n.maintenance.is_none() {
                n.maintenance = Some(Maintenance { since: unix_now(), empty: false, timed_out: false });
            }
        }
        self.scaling.last_action.insert(pool.to_string(), Instant::now());
        self.log.event(EventKind::ScaleIn, pool, format!("{reason}: draining {name}, stopped once empty"));
        self.dirty = true;
    }

    /// One round of scaling decisions for every pool with a policy.
    pub fn plan_scaling(&mut self, now: Instant, actions: &mut Vec<Action>) {
        self.finish_starts(now, actions);
        let pools: Vec<Pool> = self.config.pools.iter().filter(|p| p.scale.is_some()).cloned().collect();
        for p in &pools {
            let sc = p.scale.as_ref().expect("filtered");
            self.scale_pool(p, sc, &pools, now, actions);
        }
        // Drained scale-in edges are stopped once empty (or at drain_timeout, which its alarm reports).
        let mut stops = Vec::new();
        for (name, sent) in &self.scaling.stopping {
            // Empty (or out of time) and out of every LB node first, so no flow is sent to a stopped edge.
            let ready = self.nodes.get(name).is_none_or(|n| {
                let drained =
                    n.health == Health::Down || n.maintenance.as_ref().is_some_and(|m| m.empty || m.timed_out);
                let ip = crate::config::real_of(&n.spec);
                let in_lb = self.lb.values().flatten().flatten().any(|s| s.reals.iter().any(|r| r.addr == ip));
                drained && !in_lb
            });
            if ready && !*sent {
                let pool = self.scaling.started.get(name).map(|s| s.pool.clone()).unwrap_or_default();
                stops.push((name.clone(), pool));
            }
        }
        for (node, pool) in stops {
            self.scaling.stopping.insert(node.clone(), true);
            actions.push(Action::ProviderStop { pool, node });
        }
    }

    /// Registered starts leave `starting`; starts that did not come up within the warm-up are given up (and their
    /// leftovers stopped) with an alarm.
    fn finish_starts(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let mut done = Vec::new();
        let mut late = Vec::new();
        for (name, (pool, since)) in &self.scaling.starting {
            let warm_up = self.policy(pool).map_or(Duration::from_secs(60), |s| s.warm_up.0);
            if self.nodes.get(name).is_some_and(|n| n.health == Health::Up) {
                done.push((name.clone(), pool.clone(), now.saturating_duration_since(*since)));
            } else if now.saturating_duration_since(*since) >= warm_up {
                late.push((name.clone(), pool.clone(), warm_up));
            }
        }
        for (name, pool, took) in done {
            self.scaling.starting.remove(&name);
            self.log.event(
                EventKind::ScaleOutDone,
                &pool,
                format!("{name} is up and in service {:.1} s after the start", took.as_secs_f64()),
            );
            self.log.clear(AlarmKind::ProviderFailed, &pool);
        }
        for (name, pool, warm_up) in late {
            self.scaling.starting.remove(&name);
            self.scaling.started.remove(&name);
            let msg = format!("{name} did not come up within warm_up {warm_up:?}: stopping what was started, retrying after a backoff");
            self.log.event(EventKind::ProviderFailed, &pool, msg.clone());
            self.log.raise(AlarmKind::ProviderFailed, &pool, msg);
            self.back_off(&pool, now);
            actions.push(Action::ProviderStop { pool, node: name });
            self.dirty = true;
        }
    }

    fn policy(&self, pool: &str) -> Option<&Scale> {
        self.config.pools.iter().find(|p| p.name == pool).and_then(|p| p.scale.as_ref())
    }

    fn back_off(&mut self, pool: &str, now: Instant) {
        let base = self.policy(pool).map_or(Duration::from_secs(10), |s| s.cooldown.0);
        let next = match self.scaling.backoff.get(pool) {
            Some((_, d)) => (*d * 2).min(Duration::from_secs(600)),
            None => base,
        };
        self.scaling.backoff.insert(pool.to_string(), (now + next, next));
    }

    fn scale_pool(&mut self, p: &Pool, sc: &Scale, pools: &[Pool], now: Instant, actions: &mut Vec<Action>) {
        let max = p.max.unwrap_or(p.min);
        let mut load = self.pool_load(&p.name, sc.signal);
        // An overflow pool looks at the load of the pool it overflows and its own, and starts only when that
        // pool is at its max.
        let mut primary_full = true;
        if let Some(o) = &sc.overflow_of {
            let op = self.config.pools.iter().find(|x| &x.name == o);
            let ol = self.pool_load(o, sc.signal);
            primary_full = op.is_some_and(|op| ol.count >= op.max.unwrap_or(op.min));
            load.load += ol.load;
            load.in_service += ol.in_service;
        }
        let util = load.utilisation(sc.capacity);
        let starting = self.scaling.starting.values().any(|(x, _)| x == &p.name);
        let cooled =
            self.scaling.last_action.get(&p.name).is_none_or(|t| now.saturating_duration_since(*t) >= sc.cooldown.0);
        let backing_off = self.scaling.backoff.get(&p.name).is_some_and(|(until, _)| now < *until);
        let manual = self.scaling.manual.get(&p.name).copied().unwrap_or(0);
        let signal = fmt_signal(sc.signal, load.load);
        let reason = if manual > 0 && load.count < max {
            Some("manual start".to_string())
        } else if load.alive < p.min && !starting && !backing_off && self.settled(now) {
            // Only once every always-on edge has had startup_hold to register after a (re)start. Down edges do not
            // count: a lost always-on edge is replaced.
            Some(format!("{} edges up, below the pool's min {}", load.alive, p.min))
        } else if util >= sc.scale_out_at && load.count < max && !starting && cooled && !backing_off && primary_full {
            Some(format!(
                "load {signal} is {:.0}% of {} edges x {} (threshold {:.0}%)",
                util * 100.0,
                load.in_service,
                fmt_signal(sc.signal, sc.capacity),
                sc.scale_out_at * 100.0
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            if manual > 0 {
                self.scaling.manual.insert(p.name.clone(), manual - 1);
            }
            self.scaling.seq += 1;
            let node = format!("{}-{}", p.name, self.scaling.seq);
            self.scaling.starting.insert(node.clone(), (p.name.clone(), now));
            self.scaling.started.insert(node.clone(), Started { pool: p.name.clone(), at: unix_now() });
            self.scaling.last_action.insert(p.name.clone(), now);
            self.log.event(
                EventKind::ScaleOut,
                &p.name,
                format!("{reason}: starting {node} ({} of max {max})", load.count + 1),
            );
            actions.push(Action::ProviderStart { pool: p.name.clone(), node });
            self.dirty = true;
            return;
        }
        // Scale in: the load would fit under scale_in_at with one edge fewer; never below min; the overflow pool
        // of this pool is emptied first; only started edges older than min_lifetime, the newest first.
        if starting || !cooled || load.alive <= p.min || load.in_service <= 1 {
            return;
        }
        let own = self.pool_load(&p.name, sc.signal);
        let after = load.load / (sc.capacity * (load.in_service - 1) as f64);
        if after >= sc.scale_in_at || own.alive <= p.min {
            return;
        }
        let overflow_busy = pools.iter().any(|x| {
            x.scale.as_ref().and_then(|s| s.overflow_of.as_deref()) == Some(p.name.as_str())
                && self.scaling.started.values().any(|s| s.pool == x.name)
        });
        if overflow_busy {
            return;
        }
        let lifetime = sc.min_lifetime.0.as_secs();
        let candidate = self
            .scaling
            .started
            .iter()
            .filter(|(n, s)| {
                s.pool == p.name && !self.scaling.stopping.contains_key(*n) && !self.scaling.starting.contains_key(*n)
            })
            .filter(|(_, s)| unix_now().saturating_sub(s.at) >= lifetime)
            .max_by_key(|(_, s)| s.at)
            .map(|(n, _)| n.clone());
        if let Some(name) = candidate {
            let reason = format!(
                "load {signal} would be {:.0}% of {} edges (threshold {:.0}%)",
                after * 100.0,
                load.in_service - 1,
                sc.scale_in_at * 100.0
            );
            self.begin_scale_in(&p.name, &name, reason);
        }
    }

    /// A provider call's outcome.
    pub fn provider_done(&mut self, action: &Action, result: &Result<(), String>, now: Instant) {
        match (action, result) {
            (Action::ProviderStart { pool, node }, Ok(())) => {
                self.log.event(
                    EventKind::ScaleOut,
                    pool,
                    format!("provider started {node}; waiting for it to register"),
                );
                self.scaling.backoff.remove(pool);
            }
            (Action::ProviderStart { pool, node }, Err(e)) if self.nodes.contains_key(node) => {
                // The start failed or timed out but its edge registered: it is running and it is ours, so it stays
                // a started edge (scale-in and pool-stop may stop it), never an always-on one nobody stops.
                self.scaling.starting.remove(node);
                let msg = format!(
                    "provider start of {node} failed: {e}; {node} registered anyway and is kept as a started edge"
                );
                self.log.event(EventKind::ProviderFailed, pool, msg.clone());
                self.log.raise(AlarmKind::ProviderFailed, pool, msg);
                self.back_off(pool, now);
                self.dirty = true;
            }
            (Action::ProviderStart { pool, node }, Err(e)) => {
                self.scaling.starting.remove(node);
                self.scaling.started.remove(node);
                let msg = format!("provider start of {node} failed: {e}");
                self.log.event(EventKind::ProviderFailed, pool, msg.clone());
                self.log.raise(AlarmKind::ProviderFailed, pool, msg);
                self.back_off(pool, now);
                self.dirty = true;
            }
            (Action::ProviderStop { pool, node }, Ok(())) => {
                self.scaling.stopping.remove(node);
                self.scaling.started.remove(node);
                self.nodes.remove(node);
                self.log.event(EventKind::ScaleInDone, pool, format!("{node} stopped and forgotten"));
                self.dirty = true;
            }
            (Action::ProviderStop { pool, node }, Err(e)) => {
                // Try again after the backoff: the edge stays drained, so no player lands on it meanwhile.
                self.scaling.stopping.insert(node.clone(), false);
                let msg = format!("provider stop of {node} failed: {e}");
                self.log.event(EventKind::ProviderFailed, pool, msg.clone());
                self.log.raise(AlarmKind::ProviderFailed, pool, msg);
                self.back_off(pool, now);
            }
            _ => {}
        }
    }

    /// Edges of a pool that were started by the manager (the rest are always-on).
    pub fn started_in(&self, pool: &str) -> BTreeSet<String> {
        self.scaling.started.iter().filter(|(_, s)| s.pool == pool).map(|(n, _)| n.clone()).collect()
    }

    /// The pool a registering edge belongs to, when the manager started it.
    pub fn pool_of_started(&self, name: &str) -> Option<String> {
        self.scaling.started.get(name).map(|s| s.pool.clone())
    }

    /// Whether an edge is an edge at all (for the role check of registrations).
    pub fn is_edge(&self, name: &str) -> bool {
        self.nodes.get(name).is_some_and(|n| n.spec.role == Role::Edge)
    }
}
