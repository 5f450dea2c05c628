//! The manager's loop: every keepalive (and at once when a node reports a change) it reads every node and the
//! LB, lets [`Cluster`] decide, carries the actions out concurrently and persists what must survive a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use api_types::lb::{Request, ServiceView};
use axum::http::Method;
use svc::client::{BaseUrl, Client};
use svc::Stopping;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::warn;

use crate::cluster::{Action, Cluster, NodeStatus, Observation, Persisted};
use crate::config::{Config, Role};
use crate::events::AlarmKind;

/// Rendered console pages by (view, newest event), with when they were rendered.
pub type ConsoleCache = BTreeMap<(String, u64), (Instant, Arc<String>)>;

/// Everything the API and the loop share.
pub struct Shared {
    cluster: Mutex<Cluster>,
    /// The console's graphs.
    pub history: Mutex<crate::history::History>,
    /// Wakes the loop before its next keepalive (a node reported a change, an operator asked for maintenance).
    pub wake: Notify,
    /// Console pages rendered in the last keepalive, by view and newest event: an open page is cheap to reload.
    pub console_cache: Mutex<ConsoleCache>,
    /// Whether this smd acts (always with a file store), and who leads.
    lead: Mutex<crate::leader::Leadership>,
    /// The etcd store of an HA deployment (None: the state file).
    pub store: Option<Arc<crate::store::Store>>,
    /// One store write at a time, and what the last one wrote (an unchanged state is not written again).
    written: tokio::sync::Mutex<Option<crate::store::StateDoc>>,
}

impl Shared {
    /// A manager on the file store: it always acts.
    pub fn new(cluster: Cluster, history: crate::history::History) -> Arc<Self> {
        Self::with_store(cluster, history, None)
    }

    /// A manager on `store` (etcd): a follower until it wins the election.
    pub fn with_store(
        mut cluster: Cluster,
        history: crate::history::History,
        store: Option<Arc<crate::store::Store>>,
    ) -> Arc<Self> {
        let me = api_types::manager::ManagerMember {
            name: cluster.config.name.clone(),
            api: cluster.config.advertise.clone(),
        };
        if store.is_some() {
            cluster.log.set_mirror();
        }
        Arc::new(Self {
            cluster: Mutex::new(cluster),
            history: Mutex::new(history),
            wake: Notify::new(),
            console_cache: Mutex::new(BTreeMap::new()),
            lead: Mutex::new(crate::leader::Leadership::new(me, store.as_ref().map(|s| s.lease_ttl()))),
            store,
            written: tokio::sync::Mutex::new(None),
        })
    }

    /// Who leads. Lock order: the cluster first, then this, when both are held.
    pub fn lead(&self) -> MutexGuard<'_, crate::leader::Leadership> {
        self.lead.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this smd may act now, and the term its commands carry.
    pub fn acting(&self) -> Option<Option<u64>> {
        let l = self.lead();
        l.acting(Instant::now()).then(|| l.term_header())
    }

    pub fn history(&self) -> MutexGuard<'_, crate::history::History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lock(&self) -> MutexGuard<'_, Cluster> {
        // The cluster is plain data: a panic in one handler leaves nothing half-done worth stopping for.
        self.cluster.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Samples the graphs every `history_sample` and writes their file every minute and when stopping.
pub async fn sample(shared: Arc<Shared>, mut stop: Stopping) {
    let (every, path) = {
        let c = shared.lock();
        (c.config.history_sample, c.config.history_file.clone())
    };
    let mut sampler = crate::console::Sampler::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut saved = Instant::now();
    let save = |shared: &Shared| {
        if let Some(p) = &path {
            if let Err(e) = shared.history().save(p) {
                warn!(path = %p.display(), error = %e, "cannot write the history file");
            }
        }
    };
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait() => {
                save(&shared);
                return;
            }
        }
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        {
            let c = shared.lock();
            sampler.sample(&c, &mut shared.history(), t);
        }
        if saved.elapsed() >= Duration::from_secs(60) {
            save(&shared);
            saved = Instant::now();
        }
    }
}

/// SIGHUP: `reread` loads and validates the whole file as a start would. A refused file is logged with the reason
/// and the running configuration kept; an accepted one is applied as a diff ([`Cluster::reload`]), in one log line
/// and a `config-reloaded` event, and the loop is woken (it follows a changed keepalive and `[lb]`). Settings that
/// only a start can change are named as such and keep their running values.
pub async fn watch_reloads(
    shared: Arc<Shared>,
    mut reloads: svc::reload::Reloads,
    mut reread: impl FnMut() -> Result<Config, String>,
    mut stop: Stopping,
) {
    loop {
        tokio::select! {
            more = reloads.next() => if !more { return },
            _ = stop.wait() => return,
        }
        let new = match reread() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: configuration refused; the running one is kept");
                continue;
            }
        };
        let r = {
            let mut c = shared.lock();
            let r = match c.reload(new) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: configuration refused; the running one is kept");
                    continue;
                }
            };
            if !r.applied.is_empty() {
                let me = c.config.name.clone();
                c.log.event(
                    crate::events::EventKind::ConfigReloaded,
                    &me,
                    format!("applied: {}", r.applied.join(", ")),
                );
            }
            r
        };
        if !r.at_next_start.is_empty() {
            warn!(settings = %r.at_next_start.join(", "), "SIGHUP: changed, applied at the next start (the running values are kept)");
        }
        if r.applied.is_empty() {
            if r.at_next_start.is_empty() {
                tracing::info!("SIGHUP: configuration valid and unchanged");
            }
            continue;
        }
        tracing::info!("SIGHUP: applied: {}", r.applied.join(", "));
        let _ = save(&shared).await;
        shared.wake.notify_one();
    }
}

/// Reads the state file, or starts empty when there is none; a corrupt file is an error (nothing is guessed).
pub fn load_state(path: Option<&Path>) -> anyhow::Result<Persisted> {
    let Some(path) = path else { return Ok(Persisted::default()) };
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            anyhow::anyhow!("state file {} is corrupt ({e}); move it away to start from the nodes", path.display())
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted::default()),
        Err(e) => Err(anyhow::anyhow!("reading state file {}: {e}", path.display())),
    }
}

/// Makes sure the state file can be written where the config puts it: its directory is created when missing (as
/// lbd does for its pins) and a probe file is written and removed there. Run by `--check` and by the start alike,
/// so a state file smd could never write is refused before anything runs, with the reason.
pub fn prepare_state_dir(path: Option<&Path>) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let what = || format!("state_file {}", path.display());
    std::fs::create_dir_all(dir).map_err(|e| {
        anyhow::anyhow!(
            "{}: cannot create its directory {}: {e}; create it or choose another path",
            what(),
            dir.display()
        )
    })?;
    if path.is_dir() {
        anyhow::bail!("{} is a directory; name a file in it", what());
    }
    let probe = path.with_extension("probe");
    std::fs::write(&probe, b"probe\n").map_err(|e| {
        anyhow::anyhow!(
            "{}: cannot write in {}: {e}; fix its permissions or free space, or choose another path",
            what(),
            dir.display()
        )
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn save_state(path: &Path, p: &Persisted) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(p)?)?;
    std::fs::rename(&tmp, path)
}

fn node_client(api: &str, token: &str, timeout: Duration) -> Result<Client, String> {
    let base = BaseUrl::parse(api).map_err(|e| e.to_string())?;
    Ok(Client::new(base, Some(token.to_string()), timeout))
}

/// An operator's manual switch of a key's source (`smctl switch-source APP/KEY ROLE`): sent at once to the active
/// member of the group serving `app`, with this smd's term. Ok: the relay's view of the key's sources; Err: the
/// HTTP status and the reason.
pub async fn switch_source(
    shared: &Shared,
    app: &str,
    key: &str,
    role: &str,
) -> Result<serde_json::Value, (u16, String)> {
    let (api, token, timeout) = {
        let c = shared.lock();
        let g = c.config.groups.iter().find(|g| g.app == app).ok_or_else(|| {
            (404, format!("no origin group serves app {app:?}: sources are switched on a group's active member"))
        })?;
        let active = c
            .groups
            .get(&g.name)
            .and_then(|rt| rt.active.clone())
            .ok_or_else(|| (409, format!("group {} has no active member now; nothing to switch", g.name)))?;
        let api = c.nodes.get(&active).map(|n| n.spec.api.clone()).unwrap_or_default();
        let timeout = c.config.keepalive.clamp(Duration::from_millis(500), Duration::from_secs(3));
        (api, c.config.token.clone(), timeout)
    };
    let term = shared.acting().ok_or_else(|| (503, "this smd does not lead now; ask the leader".to_string()))?;
    let mut client = node_client(&api, &token, timeout).map_err(|e| (500, e))?;
    if let Some(t) = term {
        client = client.with_header(api_types::manager::TERM_HEADER, t.to_string());
    }
    let body = api_types::relay::SwitchBody { role: role.to_string() };
    client.send(Method::POST, &format!("/sources/{app}/{key}/switch"), &body).await.map_err(|e| match &e {
        // The relay's own refusal (no such source, not ready): its status and words.
        svc::client::ClientError::Status { status, message, .. } => (*status, message.clone()),
        _ => (502, format!("the active origin did not answer: {e}")),
    })
}

/// One keepalive of a node: `/status`, and `/sources` on an origin.
async fn poll_node(client: Client, role: Role) -> Observation {
    let status = match client.get::<NodeStatus>("/status").await {
        Ok(s) => s,
        Err(e) => return Observation::Failed(e.to_string()),
    };
    let sources = match role {
        Role::Edge => None,
        Role::Origin => match client.get::<api_types::relay::SourcesList>("/sources").await {
            Ok(list) => Some(list.sources),
            // A relay without pull sources is still up: its groups can only be fed by publishers.
            Err(e) if e.status() == Some(404) => None,
            Err(e) => return Observation::Failed(e.to_string()),
        },
    };
    Observation::Ok { status, sources }
}

/// Runs until `stop` fires. A reload (a new [`Cluster::generation`]) rebuilds the LB clients and the keepalive timer.
pub async fn run(shared: Arc<Shared>, mut stop: Stopping) {
    let mut generation = None;
    let (mut config, mut lb, mut tick) = loop_setup(&shared, &mut generation);
    let mut last = BTreeSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.wake.notified() => {}
            _ = stop.wait() => return,
        }
        if generation != Some(shared.lock().generation) {
            (config, lb, tick) = loop_setup(&shared, &mut generation);
        }
        last = round(&shared, &config, &lb, &last).await;
    }
}

/// The loop's view of the configuration: the config, one client per LB node (by its API address, the key actions
/// name it by) and the keepalive timer.
fn loop_setup(shared: &Shared, generation: &mut Option<u64>) -> (Config, LbClients, tokio::time::Interval) {
    let (config, g) = {
        let c = shared.lock();
        (c.config.clone(), c.generation)
    };
    let keepalive = config.keepalive;
    let lb: LbClients = config
        .lb
        .iter()
        .flat_map(|l| {
            l.apis.iter().map(|a| {
                (a.to_string(), Client::new(a.clone(), Some(l.token.clone()), keepalive.max(Duration::from_secs(1))))
            })
        })
        .collect();
    // The first tick of a rebuilt timer is a keepalive from now: the round that follows a reload runs at once.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    if generation.is_none() {
        tick = tokio::time::interval(keepalive);
    }
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    *generation = Some(g);
    (config, lb, tick)
}

/// Reads everything, decides, acts; returns the actions taken. An action that repeats the previous round's (the
/// node accepted it but does not show the change) waits for the next keepalive instead of waking the loop at once.
/// lbd API clients by the address actions name.
pub type LbClients = std::collections::BTreeMap<String, Client>;

pub async fn round(
    shared: &Arc<Shared>,
    config: &Config,
    lb: &LbClients,
    previous: &BTreeSet<Action>,
) -> BTreeSet<Action> {
    let timeout = config.keepalive.clamp(Duration::from_millis(500), Duration::from_secs(3));
    let nodes: Vec<(String, String, Role)> =
        shared.lock().nodes.values().map(|n| (n.spec.name.clone(), n.spec.api.clone(), n.spec.role)).collect();
    let mut polls = JoinSet::new();
    for (name, api, role) in nodes {
        let client = node_client(&api, &config.token, timeout);
        polls.spawn(async move {
            let obs = match client {
                Ok(c) => poll_node(c, role).await,
                Err(e) => Observation::Failed(e),
            };
            (name, obs)
        });
    }
    let lb_views = async {
        let mut reads = JoinSet::new();
        for (api, c) in lb {
            let (api, c) = (api.clone(), c.clone());
            reads.spawn(async move { (api, c.get::<Vec<ServiceView>>("/api/v1/services").await) });
        }
        let mut out = Vec::new();
        while let Some(Ok(r)) = reads.join_next().await {
            out.push(r);
        }
        out
    };
    let (lb_views, mut results) = tokio::join!(lb_views, async {
        let mut v = Vec::new();
        while let Some(r) = polls.join_next().await {
            if let Ok(r) = r {
                v.push(r);
            }
        }
        v
    });
    let actions = {
        let mut c = shared.lock();
        let now = Instant::now();
        for (name, obs) in results.drain(..) {
            c.observe(&name, obs, now);
        }
        for (api, r) in lb_views {
            match r {
                Ok(v) => c.lb_seen(&api, v),
                Err(e) => c.lb_unreachable(&api, e.to_string()),
            }
        }
        // A follower reads the nodes (its views, and what it acts on if it takes over) but decides nothing.
        if shared.acting().is_some() {
            c.plan(now)
        } else {
            Vec::new()
        }
    };
    let _ = save(shared).await;
    let taken: BTreeSet<Action> = actions.iter().cloned().collect();
    if actions.is_empty() {
        return taken;
    }
    // Provider runs (start or stop an edge machine) take seconds to minutes: they run beside the loop with their
    // own deadline (`provider_timeout`), so polling, node-down, failover and LB changes never wait for them. The
    // plan does not repeat them meanwhile (the edge is in `starting`/`stopping` until the outcome is recorded).
    let (provider, actions): (Vec<Action>, Vec<Action>) =
        actions.into_iter().partition(|a| matches!(a, Action::ProviderStart { .. } | Action::ProviderStop { .. }));
    let members: Vec<String> = shared.lead().members.iter().map(|m| m.api.clone()).collect();
    for a in provider {
        let call = ProviderCall::of(&a, config, &members);
        let shared = shared.clone();
        tokio::spawn(async move {
            let r = match call {
                Some(call) => call.run().await,
                None => Err("the pool has no provider configured".to_string()),
            };
            if let Err(e) = &r {
                warn!(node = a.node(), error = %e, "action failed: {}", a.describe());
            }
            shared.lock().acted(&a, r);
            let _ = save(&shared).await;
            // The outcome may call for the next step (register wait, retry, stop): plan it now.
            shared.wake.notify_one();
        });
    }
    let mut work = JoinSet::new();
    let specs: std::collections::BTreeMap<String, String> =
        shared.lock().nodes.values().map(|n| (n.spec.name.clone(), n.spec.api.clone())).collect();
    // One task per node, its actions in order (an edge gets its origin list before it is asked to pull); nodes
    // and LB nodes proceed in parallel.
    let mut per_target: std::collections::BTreeMap<(String, String), Vec<Action>> = Default::default();
    for a in actions {
        let target = (a.node().to_string(), lb_of(&a).unwrap_or_default().to_string());
        per_target.entry(target).or_default().push(a);
    }
    for ((node, lb_key), list) in per_target {
        let api = specs.get(&node).cloned().unwrap_or_default();
        let token = config.token.clone();
        let lb = lb.get(&lb_key).cloned();
        let shared = shared.clone();
        work.spawn(async move {
            let mut done = Vec::new();
            for a in list {
                // Checked before every command: a leader whose lease is about to lapse sends nothing more, and
                // what it sends carries its term, which relays and lbd refuse once a newer leader has acted.
                let r = match shared.acting() {
                    Some(term) => act(&a, &api, &token, timeout, lb.as_ref(), term).await,
                    None => Err("not sent: this smd stopped leading".to_string()),
                };
                done.push((a, r));
            }
            done
        });
    }
    let mut again = false;
    while let Some(r) = work.join_next().await {
        for (a, r) in r.unwrap_or_default() {
            if let Err(e) = &r {
                warn!(node = a.node(), error = %e, "action failed: {}", a.describe());
            }
            // A source change or re-point shows up in the next read: do it now rather than a keepalive later.
            again |= matches!(a, Action::PutSource { .. } | Action::SetOrigins { .. })
                && r.is_ok()
                && !previous.contains(&a);
            // Only an accepted action can be "accepted but not shown"; a refused one was reported above.
            if previous.contains(&a) && r.is_ok() {
                warn!(
                    node = a.node(),
                    "the node accepted this action last round too but does not show it: {}",
                    a.describe()
                );
            }
            shared.lock().acted(&a, r);
        }
    }
    let _ = save(shared).await;
    if again {
        shared.wake.notify_one();
    }
    taken
}

/// Writes what must survive this smd: the state file (see [`persist`]), or with etcd the state document and the
/// new events, fenced by the leader's term. A follower writes nothing (Err says so); a leader whose write finds a
/// newer term steps down at once.
pub async fn save(shared: &Arc<Shared>) -> Result<(), String> {
    let Some(store) = shared.store.clone() else {
        return persist(&mut shared.lock());
    };
    let mut written = shared.written.lock().await;
    let (term, doc, events, kept) = {
        let c = shared.lock();
        let l = shared.lead();
        if !l.acting(Instant::now()) {
            return Err(format!(
                "{} does not lead now; {} keeps the state",
                l.me.name,
                l.leader.as_ref().map_or("the next leader", |m| m.name.as_str())
            ));
        }
        let doc = crate::store::StateDoc { persisted: c.persisted(), alarms: c.log.stored_alarms() };
        (l.term, doc, c.log.events_after(c.log.stored_upto()), c.config.events_kept)
    };
    if events.is_empty() && written.as_ref() == Some(&doc) {
        shared.lock().dirty = false;
        return Ok(());
    }
    match store.write(term, &doc, &events, kept).await {
        Ok(()) => {
            let mut c = shared.lock();
            if let Some(e) = events.last() {
                c.log.set_stored(e.seq);
            }
            if c.persisted() == doc.persisted {
                c.dirty = false;
            }
            *written = Some(doc);
            Ok(())
        }
        Err(e) => {
            crate::leader::fenced(shared, &e);
            *written = None;
            Err(format!("the state could not be written to etcd: {e}"))
        }
    }
}

/// Writes the state file when something persisted changed. A failed write keeps the state dirty (it is retried at
/// every keepalive and after every operator action), raises the `state-not-saved` alarm once per failure episode
/// (the alarm logs it; no warning per keepalive) and clears it once a write succeeds.
pub fn persist(c: &mut Cluster) -> Result<(), String> {
    if !c.dirty {
        return Ok(());
    }
    let Some(path) = c.config.state_file.clone() else {
        c.dirty = false;
        return Ok(());
    };
    match save_state(&path, &c.persisted()) {
        Ok(()) => {
            c.dirty = false;
            c.log.clear(AlarmKind::StateNotSaved, STATE_SUBJECT);
            Ok(())
        }
        Err(e) => {
            let why = format!(
                "cannot write the state file {}: {e}; a restart of smd would forget maintenance, active members \
                 and registered edges until it is written (retried every keepalive)",
                path.display()
            );
            c.log.raise(AlarmKind::StateNotSaved, STATE_SUBJECT, why.clone());
            Err(why)
        }
    }
}

/// The subject of the manager's own alarms (the state file).
pub const STATE_SUBJECT: &str = "smd";

/// Carries out one action, with the leader's term on the command when there is one.
async fn act(
    a: &Action,
    api: &str,
    token: &str,
    timeout: Duration,
    lb: Option<&Client>,
    term: Option<u64>,
) -> Result<(), String> {
    let termed = |c: Client| match term {
        Some(t) => c.with_header(api_types::manager::TERM_HEADER, t.to_string()),
        None => c,
    };
    let node = || node_client(api, token, timeout).map(termed);
    let lb = lb.cloned().map(termed);
    let lb = lb.as_ref();
    let e = |e: svc::client::ClientError| e.to_string();
    match a {
        Action::PutSource { app, key, body, .. } => {
            node()?.send(Method::PUT, &format!("/sources/{app}/{key}"), body).await.map_err(e)?;
        }
        Action::DeleteSource { app, key, .. } => {
            node()?.call(Method::DELETE, &format!("/sources/{app}/{key}"), None::<&()>).await.map_err(e)?;
        }
        Action::SetOrigins { origins, .. } => {
            let body = api_types::relay::OriginsBody { origins: origins.clone() };
            node()?.send(Method::PUT, "/origins", &body).await.map_err(e)?;
        }
        Action::PrePull { app, key, .. } => {
            node()?.call(Method::POST, &format!("/streams/{app}/{key}/pull"), None::<&()>).await.map_err(e)?;
        }
        Action::RelayMaintenance { on, .. } => {
            let m = if *on { Method::POST } else { Method::DELETE };
            node()?.call(m, "/maintenance", None::<&()>).await.map_err(e)?;
        }
        Action::ProviderStart { .. } | Action::ProviderStop { .. } => {
            return Err("a provider action runs as a ProviderCall".into())
        }
        Action::LbAdd { .. }
        | Action::LbDrain { .. }
        | Action::LbUndrain { .. }
        | Action::LbRemove { .. }
        | Action::LbWeight { .. } => {
            let lb = lb.ok_or("no such LB node configured")?;
            let req = lb_request(a)?;
            let r: api_types::lb::Response =
                serde_json::from_value(lb.send(Method::POST, "/api/v1/requests", &req).await.map_err(e)?)
                    .map_err(|x| format!("lbd answered something else: {x}"))?;
            if !r.ok {
                return Err(r.message);
            }
        }
    }
    Ok(())
}

/// One run of a pool's provider: `PROVIDER start|stop NODE POOL`, with the manager's and the LB's addresses and
/// the cluster token in its environment (see manager/README.md), killed at its timeout.
struct ProviderCall {
    exe: std::path::PathBuf,
    args: [String; 3],
    env: Vec<(String, String)>,
    timeout: Duration,
}

impl ProviderCall {
    /// `managers`: every smd's API of an HA deployment (the started edge registers with whichever answers).
    fn of(a: &Action, config: &Config, managers: &[String]) -> Option<ProviderCall> {
        let (verb, pool, node) = match a {
            Action::ProviderStart { pool, node } => ("start", pool, node),
            Action::ProviderStop { pool, node } => ("stop", pool, node),
            _ => return None,
        };
        let sc = config.pools.iter().find(|p| &p.name == pool)?.scale.as_ref()?;
        let mut env: Vec<(String, String)> = sc.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let api = if managers.is_empty() { config.advertise.clone() } else { managers.join(",") };
        env.push(("SM_API".into(), api));
        env.push(("SM_TOKEN".into(), config.token.clone()));
        env.push(("SM_POOL".into(), pool.clone()));
        env.push(("SM_NODE".into(), node.clone()));
        let lbs: Vec<String> = config.lb.iter().flat_map(|l| l.apis.iter().map(|a| a.to_string())).collect();
        env.push(("SM_LB_APIS".into(), lbs.join(" ")));
        Some(ProviderCall {
            exe: sc.provider.clone(),
            args: [verb.to_string(), node.clone(), pool.clone()],
            env,
            timeout: sc.provider_timeout.0,
        })
    }

    async fn run(self) -> Result<(), String> {
        let what = format!("{} {}", self.exe.display(), self.args.join(" "));
        let mut child = tokio::process::Command::new(&self.exe)
            .args(&self.args)
            .envs(self.env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{what}: cannot run: {e}"))?;
        let stdout = Collected::read(child.stdout.take());
        let stderr = Collected::read(child.stderr.take());
        // The provider's exit is its answer. Its output is read beside it and not to EOF: an edge it started in the
        // background may inherit the pipes and keep them open for its whole life.
        let status = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(r) => r.map_err(|e| format!("{what}: {e}"))?,
            // Dropping the child kills it (kill_on_drop).
            Err(_) => return Err(format!("{what}: no answer within {:?}, killed", self.timeout)),
        };
        let (out, err) = (stdout.last_line().await, stderr.last_line().await);
        if !status.success() {
            return Err(format!("{what}: {status} {err}"));
        }
        tracing::info!(provider = %what, output = %out, "provider done");
        Ok(())
    }
}

/// What a provider wrote on one pipe, kept up to 64 KiB, read by a task of its own.
struct Collected {
    buf: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collected {
    const MAX: usize = 64 << 10;

    fn read(pipe: Option<impl tokio::io::AsyncRead + Unpin + Send + 'static>) -> Self {
        use tokio::io::AsyncReadExt;
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let task = tokio::spawn(async move {
            let Some(mut pipe) = pipe else { return };
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
                let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
                let room = Self::MAX.saturating_sub(b.len());
                b.extend_from_slice(&chunk[..n.min(room)]);
            }
        });
        Self { buf, task }
    }

    /// The last line written, once the pipe closed or, if something else still holds it open, a moment after the
    /// provider exited.
    async fn last_line(self) -> String {
        let Collected { buf, mut task } = self;
        if tokio::time::timeout(Duration::from_millis(200), &mut task).await.is_err() {
            task.abort();
        }
        let b = buf.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&b).lines().last().unwrap_or("").trim().to_string()
    }
}

/// The LB node an action is for.
fn lb_of(a: &Action) -> Option<&str> {
    match a {
        Action::LbAdd { lb, .. }
        | Action::LbDrain { lb, .. }
        | Action::LbUndrain { lb, .. }
        | Action::LbWeight { lb, .. }
        | Action::LbRemove { lb, .. } => Some(lb),
        _ => None,
    }
}

/// The lbd request of an LB action.
fn lb_request(a: &Action) -> Result<Request, String> {
    Ok(match a {
        Action::LbAdd { service, real, weight, .. } => {
            Request::AddReal { service: *service, real: *real, weight: *weight }
        }
        Action::LbDrain { service, real, .. } => Request::Drain { service: *service, real: *real },
        Action::LbUndrain { service, real, .. } => Request::Undrain { service: *service, real: *real },
        Action::LbWeight { service, real, weight, .. } => {
            Request::EditReal { service: *service, real: *real, weight: *weight }
        }
        Action::LbRemove { service, real, .. } => Request::DelReal { service: *service, real: *real },
        _ => return Err("not an LB action".into()),
    })
}

#[cfg(test)]
mod tests;
