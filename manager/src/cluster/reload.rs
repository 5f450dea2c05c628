//! A reloaded configuration (SIGHUP) applied to the running cluster as a diff, without a failover: nodes, groups,
//! pools, `[lb]` and the timers change live; the settings the process was started with stay until the next start.

use super::*;

/// What a reload did: the changes applied (one phrase per change group) and the settings kept until the next
/// start.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    pub applied: Vec<String>,
    pub at_next_start: Vec<String>,
}

/// The settings a running smd cannot change: its sockets, identity, store and files.
fn keep_at_start(old: &Config, new: &mut Config, later: &mut Vec<String>) {
    macro_rules! keep {
        ($($field:ident),*) => {$(
            if old.$field != new.$field {
                later.push(stringify!($field).to_string());
                new.$field = old.$field.clone();
            }
        )*};
    }
    keep!(listen, name, advertise, store, state_file, history_file, history_sample);
    if old.token != new.token {
        later.push("token_file".into());
        new.token = old.token.clone();
    }
}

fn secs(d: Duration) -> String {
    format!("{d:?}")
}

impl Cluster {
    /// Applies `new` (already validated, like at a start) as a diff of the running configuration. A configured
    /// node removed from the file is forgotten like `remove-node` does (its LB reals go); an active member that is
    /// still a member stays active; a removed group's (or a member's removed from a group) sources are stopped at
    /// the next plan; timers take effect at once. Refused, changing nothing, when the file drops an edge that is
    /// still in service (its players would be cut by the LB): as `remove-node`, it goes into maintenance first.
    pub fn reload(&mut self, mut new: Config) -> Result<Reloaded, String> {
        for n in self.nodes.values().filter(|n| n.from_config && n.spec.role == Role::Edge) {
            let name = &n.spec.name;
            let empty = n.maintenance.as_ref().is_some_and(|m| m.empty || m.timed_out);
            if !new.nodes.iter().any(|x| &x.name == name) && n.health == Health::Up && !empty {
                return Err(format!(
                    "node {name} is removed from the file but is up and {}: put it into maintenance first (`smctl \
                     maintenance {name}`) and reload once it is empty",
                    if n.maintenance.is_some() { "still draining" } else { "in service" }
                ));
            }
        }
        let mut out = Reloaded::default();
        keep_at_start(&self.config, &mut new, &mut out.at_next_start);
        let old = std::mem::replace(&mut self.config, new);
        let new = self.config.clone();
        let applied = &mut out.applied;

        // Nodes.
        let old_nodes: BTreeMap<&str, &NodeSpec> = old.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        let new_nodes: BTreeMap<&str, &NodeSpec> = new.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        for name in old_nodes.keys().filter(|n| !new_nodes.contains_key(*n)) {
            if self.nodes.get(*name).is_some_and(|n| n.from_config) {
                self.forget(name, "removed from the configuration file (SIGHUP)");
                applied.push(format!("node {name} removed"));
            }
        }
        for (name, spec) in &new_nodes {
            match self.nodes.get_mut(*name) {
                None => {
                    self.nodes.insert(name.to_string(), NodeRt::new((*spec).clone(), true));
                    applied.push(format!("node {name} added"));
                }
                Some(n) => {
                    let was_registered = !n.from_config;
                    n.from_config = true;
                    n.registered_at = None;
                    if n.spec != **spec {
                        let moved = config::real_of(&n.spec) != config::real_of(spec) || n.spec.role != spec.role;
                        if n.spec.role == Role::Edge && moved {
                            // Its old address leaves the LB services (prune_removed forgets it once gone).
                            self.removed.push(n.spec.clone());
                        }
                        if n.spec.role != spec.role {
                            // Another kind of node under the same name: nothing heard from the old one applies.
                            *n = NodeRt::new((*spec).clone(), true);
                        } else {
                            n.spec = (*spec).clone();
                        }
                        applied.push(format!("node {name} changed"));
                    } else if was_registered {
                        applied.push(format!("node {name} now configured"));
                    }
                    self.dirty |= was_registered;
                }
            }
        }

        // Groups.
        let old_groups: BTreeMap<&str, &Group> = old.groups.iter().map(|g| (g.name.as_str(), g)).collect();
        for g in &old.groups {
            let now_group = new.groups.iter().find(|x| x.name == g.name);
            // Members that no longer serve this app under any group stop its sources at the next plan.
            for m in &g.members {
                let still = new.groups.iter().any(|x| x.app == g.app && x.priority_of(&m.node).is_some());
                if !still {
                    self.retired_sources.insert((m.node.clone(), g.app.clone()));
                }
            }
            if now_group.is_none() {
                self.groups.remove(&g.name);
                for k in self.missing_since.keys().filter(|(x, _)| x == &g.name).cloned().collect::<Vec<_>>() {
                    self.missing_since.remove(&k);
                }
                self.log.clear(AlarmKind::GroupNoActive, &g.name);
                for s in &g.sources {
                    self.log.clear(AlarmKind::SourceNotIngesting, &format!("{}/{}", g.name, s.key));
                }
                applied.push(format!("group {} removed", g.name));
            }
        }
        for g in &new.groups {
            let Some(o) = old_groups.get(g.name.as_str()) else {
                self.groups.insert(g.name.clone(), GroupRt::default());
                applied.push(format!("group {} added", g.name));
                continue;
            };
            let mut what = Vec::new();
            if o.members != g.members {
                what.push("members");
            }
            if o.app != g.app {
                what.push("app");
            }
            if o.sources != g.sources {
                what.push("sources");
            }
            if o.failback != g.failback {
                what.push("failback");
            }
            if o.replication != g.replication {
                what.push("replication");
            }
            if o.ingest != g.ingest {
                what.push("ingest");
            }
            if what.is_empty() {
                continue;
            }
            applied.push(format!("group {} {} changed", g.name, what.join(", ")));
            let rt = self.groups.entry(g.name.clone()).or_default();
            // The active member stays active while it is a member: no failover for an edit.
            if rt.active.as_ref().is_some_and(|a| g.priority_of(a).is_none()) {
                rt.active = None;
                rt.active_since_unix = None;
                self.dirty = true;
            }
            if rt.handover.as_ref().is_some_and(|h| g.priority_of(&h.to).is_none()) {
                rt.handover = None;
            }
            for s in o.sources.iter().filter(|s| !g.sources.iter().any(|x| x.key == s.key)) {
                self.missing_since.remove(&(g.name.clone(), s.key.clone()));
                self.log.clear(AlarmKind::SourceNotIngesting, &format!("{}/{}", g.name, s.key));
            }
        }
        // A member still serving the app in the new file needs no clean-up.
        let serving: BTreeSet<(String, String)> =
            new.groups.iter().flat_map(|g| g.members.iter().map(move |m| (m.node.clone(), g.app.clone()))).collect();
        self.retired_sources.retain(|k| !serving.contains(k));

        // Pools, [lb], timers and limits.
        if old.pools != new.pools {
            let names = |c: &Config| c.pools.iter().map(|p| p.name.clone()).collect::<BTreeSet<_>>();
            let (a, b) = (names(&old), names(&new));
            for p in b.difference(&a) {
                applied.push(format!("pool {p} added"));
            }
            for p in a.difference(&b) {
                applied.push(format!("pool {p} removed"));
            }
            for p in a.intersection(&b) {
                if old.pools.iter().find(|x| &x.name == p) != new.pools.iter().find(|x| &x.name == p) {
                    applied.push(format!("pool {p} changed"));
                }
            }
        }
        match (&old.lb, &new.lb) {
            (None, None) => {}
            (None, Some(_)) => applied.push("[lb] added".into()),
            (Some(_), None) => {
                self.lb.clear();
                applied.push("[lb] removed (smd leaves its services as they are)".into());
            }
            (Some(o), Some(n)) => {
                if o.apis != n.apis {
                    let keep: BTreeSet<String> = n.apis.iter().map(|a| a.to_string()).collect();
                    self.lb.retain(|api, _| keep.contains(api));
                    applied.push("[lb] api changed".into());
                }
                if o.token != n.token {
                    applied.push("[lb] token_file changed".into());
                }
                if o.services != n.services {
                    self.retired_services.extend(o.services.iter().filter(|s| !n.services.contains(s)).copied());
                    applied.push("[lb] services changed".into());
                }
                if o.weight != n.weight {
                    self.lb_weight_was = Some(o.weight);
                    applied.push(format!("[lb] weight {} -> {}", o.weight, n.weight));
                }
            }
        }
        // A group's ingest address that no group has any more: its origins leave it.
        let ingest = |c: &Config| c.groups.iter().filter_map(Group::ingest_service).collect::<BTreeSet<_>>();
        let now_ingest = ingest(&new);
        self.retired_services.extend(ingest(&old).into_iter().filter(|s| !now_ingest.contains(s)));
        let services: Vec<ServiceKey> =
            new.lb.iter().flat_map(|l| l.services.iter().copied()).chain(now_ingest.iter().copied()).collect();
        self.retired_services.retain(|s| !services.contains(s));
        macro_rules! timers {
            ($($field:ident),*) => {$(
                if old.$field != new.$field {
                    applied.push(format!("{} {} -> {}", stringify!($field), secs(old.$field), secs(new.$field)));
                }
            )*};
        }
        timers!(
            keepalive,
            failover_time,
            node_down_after,
            startup_hold,
            handover_timeout,
            source_alarm_after,
            drain_timeout,
            console_refresh,
            registration_expiry
        );
        if old.max_registered != new.max_registered {
            applied.push(format!("max_registered {} -> {}", old.max_registered, new.max_registered));
        }
        if old.events_kept != new.events_kept {
            self.log.set_kept(new.events_kept);
            applied.push(format!("events_kept {} -> {}", old.events_kept, new.events_kept));
        }
        self.generation += 1;
        Ok(out)
    }
}
