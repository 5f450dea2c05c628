//! Who acts among several smd sharing an etcd store: each holds a session (a lease it renews), campaigns for the
//! election key on it, and either leads (decides, commands, writes the state, fenced by its term) or follows
//! (reads the nodes, mirrors the leader's state and history, forwards writes). A leader that cannot renew stops
//! acting before its lease can lapse at etcd, so two never act at once; relays and lbd also refuse commands of an
//! older term than one they accepted (the `X-Manager-Term` header), for commands already on the wire.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api_types::manager::{EventKind, LeaderView, ManagerMember};
use svc::Stopping;
use tracing::{info, warn};

use crate::driver::Shared;
use crate::events::AlarmKind;
use crate::store::{Campaign, Store, WriteError};

/// The subject of the store's alarm (the manager itself).
pub const SUBJECT: &str = "smd";

/// This smd's part in the election, as the API, the metrics, the loop and the forwarding read it.
#[derive(Debug, Clone)]
pub struct Leadership {
    pub me: ManagerMember,
    /// `file` (one smd, always leading, no term) or `etcd`.
    pub etcd: bool,
    pub leader: Option<ManagerMember>,
    pub term: u64,
    /// While leading: acting is allowed until then (the lease's last renewal + its TTL, less a margin).
    pub until: Option<Instant>,
    pub store_ok: bool,
    /// The last successful exchange with the store: one failed request (a member just died, etcd electing a new
    /// raft leader) is not an outage; none for a whole lease is.
    pub store_seen: Instant,
    /// How long without a successful exchange makes an outage (the lease).
    pub outage_after: Duration,
    pub members: Vec<ManagerMember>,
}

impl Leadership {
    /// `lease`: the store's lease (None: a file store).
    pub fn new(me: ManagerMember, lease: Option<Duration>) -> Self {
        let etcd = lease.is_some();
        let leader = (!etcd).then(|| me.clone());
        Self {
            me,
            etcd,
            leader,
            term: 0,
            until: None,
            store_ok: true,
            store_seen: Instant::now(),
            outage_after: lease.unwrap_or(Duration::MAX),
            members: Vec::new(),
        }
    }

    /// Whether the store answers, as of now: a loop stuck in a request that will time out already counts.
    pub fn store_up(&self) -> bool {
        !self.etcd || (self.store_ok && self.store_seen.elapsed() < self.outage_after)
    }

    /// The leader as of now: this smd's own leadership ends when it may no longer act, even before its loop
    /// has noticed.
    pub fn leader_now(&self) -> Option<&ManagerMember> {
        self.leader.as_ref().filter(|m| *m != &self.me || self.acting(Instant::now()))
    }

    /// Whether this smd may act now.
    pub fn acting(&self, now: Instant) -> bool {
        !self.etcd || self.until.is_some_and(|u| now < u)
    }

    /// The term to put on commands (none with a file store: nothing to fence).
    pub fn term_header(&self) -> Option<u64> {
        self.etcd.then_some(self.term)
    }

    pub fn view(&self) -> LeaderView {
        LeaderView {
            me: self.me.name.clone(),
            leader: self.leader_now().map(|m| m.name.clone()),
            leader_api: self.leader_now().map(|m| m.api.clone()),
            term: self.term,
            leading: self.acting(Instant::now()),
            store: if self.etcd { "etcd" } else { "file" }.into(),
            store_ok: self.store_up(),
            members: self.members.clone(),
        }
    }
}

/// How often a follower campaigns and reads the leader's state, and a leader checks its session.
const TICK: Duration = Duration::from_millis(200);

/// Runs the session, the campaign and the follower's mirror until `stop`; a leader resigns when stopping.
pub async fn run(shared: Arc<Shared>, store: Arc<Store>, mut stop: Stopping) {
    let ttl = store.lease_ttl();
    // Renew four times per lease; stop acting a fifth of the lease (at least 500 ms) before it could lapse at etcd,
    // counted from when the last successful renewal was sent (etcd counts from when it received it, later).
    let renew_every = ttl / 4;
    let margin = (ttl / 5).max(Duration::from_millis(500));
    let me = shared.lead().me.clone();
    let mut session: Option<(i64, Instant)> = None; // (lease, valid until)
    let mut next_renew = Instant::now();
    let mut state_rev = -1i64;
    let mut members_read = Instant::now() - Duration::from_secs(60);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait() => {
                let (term, leading) = { let l = shared.lead(); (l.term, l.acting(Instant::now())) };
                if let Some((lease, _)) = session {
                    if leading {
                        step_down(&shared, "smd is stopping: it resigned so another takes over at once");
                        store.resign(term, lease).await;
                    } else {
                        store.revoke(lease).await;
                    }
                }
                return;
            }
        }
        let now = Instant::now();
        // 1. A session: a lease, announced.
        let (lease, valid) = match session {
            Some(s) => s,
            None => match store.grant().await {
                Ok((lease, granted)) => {
                    if granted > ttl {
                        warn!(asked = ?ttl, granted = ?granted, "etcd granted a longer lease than lease_ttl (its minimum)");
                    }
                    let valid = now + ttl.min(granted);
                    if let Err(e) = store.announce(lease, &me).await {
                        unreachable(&shared, &store, &e).await;
                        continue;
                    }
                    reachable(&shared);
                    session = Some((lease, valid));
                    next_renew = now + renew_every;
                    (lease, valid)
                }
                Err(e) => {
                    unreachable(&shared, &store, &e).await;
                    continue;
                }
            },
        };
        // 2. Keep it: renew on time; a lapsed one ends leadership and the session.
        let mut valid = valid;
        if now >= next_renew {
            match store.renew(lease).await {
                Ok(true) => {
                    valid = now + ttl;
                    session = Some((lease, valid));
                    next_renew = now + renew_every;
                    reachable(&shared);
                }
                Ok(false) => {
                    session = None;
                    step_down(&shared, "its lease expired at etcd");
                    continue;
                }
                Err(e) => {
                    next_renew = now + TICK;
                    unreachable(&shared, &store, &e).await;
                }
            }
        }
        if Instant::now() + margin >= valid {
            session = None;
            step_down(&shared, "it could not renew its lease in time (etcd unreachable or too slow)");
            continue;
        }
        // 3. Lead or follow (both list the running smd now and then: the console, the providers' SM_API).
        if members_read.elapsed() >= Duration::from_secs(2) {
            if let Ok(m) = store.members().await {
                shared.lead().members = m;
                members_read = Instant::now();
            }
        }
        let leading = shared.lead().acting(Instant::now());
        if leading {
            shared.lead().until = Some(valid - margin);
            continue;
        }
        match store.campaign(lease, &me).await {
            Ok(Campaign::Won(term)) => {
                reachable(&shared);
                if let Err(e) = take_over(&shared, &store, term, valid - margin).await {
                    // Not a leader that cannot read the state: give the key back and try again.
                    warn!(error = %e, "elected, but the stored state could not be read; resigning");
                    step_down(&shared, "the stored state could not be read");
                    store.resign(term, lease).await;
                    unreachable(&shared, &store, &e).await;
                    session = None;
                }
                state_rev = -1;
            }
            Ok(Campaign::Lost { leader, state_rev: rev }) => {
                reachable(&shared);
                {
                    let mut l = shared.lead();
                    l.leader = leader.as_ref().map(|(m, _)| m.clone());
                    l.term = leader.as_ref().map_or(l.term, |(_, t)| *t);
                }
                if rev != state_rev {
                    match follow(&shared, &store).await {
                        Ok(()) => state_rev = rev,
                        Err(e) => warn!(error = %e, "cannot read the leader's state"),
                    }
                }
            }
            Err(e) => unreachable(&shared, &store, &e).await,
        }
    }
}

/// Elected: read the stored state and history, take them over, say so, write at once (which also proves the term).
async fn take_over(shared: &Arc<Shared>, store: &Store, term: u64, until: Instant) -> Result<(), String> {
    let (doc, _) = store.state().await?;
    let events = store.events_after(0).await?;
    let me = {
        let mut c = shared.lock();
        c.take_over(doc.persisted, events, doc.alarms);
        let mut l = shared.lead();
        l.term = term;
        l.leader = Some(l.me.clone());
        l.until = Some(until);
        let me = l.me.name.clone();
        drop(l);
        c.log.event(EventKind::LeaderElected, &me, format!("{me} leads (term {term}); it acts from now on"));
        c.dirty = true;
        me
    };
    info!(term, smd = %me, "elected leader");
    if let Err(e) = crate::driver::save(shared).await {
        warn!(error = %e, "the new leader's first write failed");
    }
    shared.wake.notify_one();
    Ok(())
}

/// A follower mirrors the leader's state and the events it has not seen.
async fn follow(shared: &Arc<Shared>, store: &Store) -> Result<(), String> {
    let (doc, _) = store.state().await?;
    let last = shared.lock().log.last_seq();
    let mut events = store.events_after(last).await?;
    let mut whole = false;
    if events.is_empty() && last > 0 {
        // Nothing newer; a store reset shows as a history that ends below ours.
        let newest = store.events_after(0).await?;
        if newest.last().is_some_and(|e| e.seq < last) {
            events = newest;
            whole = true;
        }
    }
    let mut c = shared.lock();
    c.adopt(doc.persisted, Instant::now());
    c.log.mirror_events(events, doc.alarms, whole);
    c.log.clear_own();
    Ok(())
}

/// Stops acting (nothing more is decided, commanded or written by this smd) and becomes a follower.
fn step_down(shared: &Shared, why: &str) {
    let was = {
        let mut l = shared.lead();
        let was = l.acting(Instant::now()) || l.until.is_some();
        l.until = None;
        if l.leader.as_ref() == Some(&l.me) {
            l.leader = None;
        }
        was
    };
    let mut c = shared.lock();
    if was {
        let me = shared.lead().me.name.clone();
        warn!(smd = %me, "no longer leading: {why}");
        c.log.event(EventKind::LeaderLost, &me, format!("{me} stopped acting: {why}"));
    }
    c.log.set_mirror();
}

/// A failed exchange with etcd: the next attempt goes to the next member (the store talks to one at a time). The
/// store is unreachable (alarm, `sm_store_up 0`) once nothing has succeeded for a whole lease: losing one member of
/// three costs etcd an election of its own (a second or two), which is not an outage.
async fn unreachable(shared: &Shared, store: &Store, e: &str) {
    store.reset().await;
    let outage = {
        let mut l = shared.lead();
        let since = l.store_seen.elapsed();
        let outage = l.store_ok && since >= store.lease_ttl();
        if outage {
            l.store_ok = false;
        }
        outage.then_some(since)
    };
    if let Some(since) = outage {
        let why = format!(
            "etcd has not answered for {:.1} s ({e}): nothing is decided or changed until it does; the data plane \
             keeps running",
            since.as_secs_f64()
        );
        shared.lock().log.raise(AlarmKind::StoreUnreachable, SUBJECT, why);
    } else {
        tracing::debug!(error = %e, "an etcd request failed; retrying");
    }
}

fn reachable(shared: &Shared) {
    let was = {
        let mut l = shared.lead();
        l.store_seen = Instant::now();
        std::mem::replace(&mut l.store_ok, true)
    };
    if !was {
        shared.lock().log.clear(AlarmKind::StoreUnreachable, SUBJECT);
    }
}

/// A leader's write that found its term fenced: stop at once.
pub fn fenced(shared: &Shared, e: &WriteError) {
    if *e == WriteError::Fenced {
        step_down(shared, "a newer leader holds the election key");
    }
}
