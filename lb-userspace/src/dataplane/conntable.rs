//! The connection table outside the control task: walks with BPF_MAP_LOOKUP_BATCH and purges with
//! BPF_MAP_DELETE_BATCH on a duplicate of CONN_TABLE's fd (aya 0.14 has no batch operations), falling back to aya's
//! per-entry iterator where the kernel refuses batches; the census that `lbctl list`, `lbctl stats` and metrics
//! show; and a worker thread that runs walks and purges so the task owning the other maps never waits on millions
//! of entries.
//!
//! Deleting from this second handle while the control task writes other maps is safe: the kernel serialises map
//! operations per bucket, and the XDP program only ever inserts and refreshes entries.

use super::sys::{self, BatchToken};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use lb_common::{ConnEntry, FlowKey, FLOW_KIND_PERSIST, PROTO_UDP};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::sync::mpsc;

/// bpf(2) update flag: insert only when the key is absent.
const BPF_NOEXIST: u64 = 1;

/// Entries asked for per BPF_MAP_LOOKUP_BATCH call: 4096 x 56 bytes of buffers (224 KiB), about 500 calls for
/// 2,000,000 entries instead of 4,000,000 syscalls.
pub const BATCH: usize = 4096;
/// Largest buffer a walk grows to when the kernel says a hash bucket does not fit (ENOSPC); buckets hold a
/// handful of entries, so this is never reached in practice.
const MAX_BATCH: usize = 1 << 20;

/// How a walk reads the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Batches, or the per-entry iterator when the kernel refuses batch operations on this map.
    Auto,
    /// Only batches (an error when the kernel refuses them).
    Batch,
    /// aya's iterator: one get_next_key and one lookup syscall per entry, and per-entry deletes (lbd before batches).
    Iter,
}

/// One walk of the connection table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Entries seen (idle ones included).
    pub entries: u64,
    /// Flows seen within the activity horizon, per (service index, real id).
    pub active: HashMap<(u32, u32), u64>,
}

impl Census {
    /// Counts one entry; it is active when its last packet is at most `horizon_ns` before `now_ns` (both
    /// CLOCK_MONOTONIC, the clock bpf_ktime_get_ns reads).
    pub fn add(&mut self, e: &ConnEntry, now_ns: u64, horizon_ns: u64) {
        self.entries += 1;
        if now_ns.saturating_sub(e.atime_ns) <= horizon_ns {
            *self.active.entry((e.vip_num, e.real_id)).or_default() += 1;
        }
    }

    /// Active flows of a service on a real.
    pub fn active(&self, vip_num: u32, real_id: u32) -> u64 {
        self.active.get(&(vip_num, real_id)).copied().unwrap_or(0)
    }
}

/// CLOCK_MONOTONIC in ns: the clock bpf_ktime_get_ns reads.
pub fn monotonic_ns() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    // CLOCK_MONOTONIC cannot fail on Linux; a zero would only make every flow look active.
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |ts| ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
}

/// A handle on CONN_TABLE of its own (a duplicated fd), usable from any thread.
#[derive(Debug)]
pub struct ConnTable {
    fd: OwnedFd,
    /// Cleared once the kernel refuses a batch operation on this map, so later walks go straight to the iterator.
    batch_ok: AtomicBool,
}

impl ConnTable {
    /// Takes an fd of the connection table (a dup: closing it leaves the map to its other holders).
    pub fn new(fd: OwnedFd) -> Self {
        ConnTable { fd, batch_ok: AtomicBool::new(true) }
    }

    /// False once the kernel refused batch operations on this map (the iterator is used instead).
    pub fn batches_work(&self) -> bool {
        self.batch_ok.load(Ordering::Relaxed)
    }

    /// The map through aya (for the per-entry fallback, and to fill it in tests and benchmarks).
    fn aya_map(&self) -> io::Result<BpfHashMap<MapData, FlowKey, ConnEntry>> {
        let data = MapData::from_fd(self.fd.try_clone()?).map_err(io::Error::other)?;
        let map = Map::from_map_data(data).map_err(io::Error::other)?;
        BpfHashMap::try_from(map).map_err(io::Error::other)
    }

    /// Inserts or replaces entries one by one (tests and benchmarks; the XDP program is what fills the table).
    pub fn insert_all(&self, entries: impl IntoIterator<Item = (FlowKey, ConnEntry)>) -> io::Result<usize> {
        let mut map = self.aya_map()?;
        let mut n = 0;
        for (k, v) in entries {
            map.insert(k, v, 0).map_err(io::Error::other)?;
            n += 1;
        }
        Ok(n)
    }

    /// Inserts entries the table does not have yet (an existing entry, the local decision, is kept); returns how
    /// many were inserted.
    pub fn insert_new(&self, entries: impl IntoIterator<Item = (FlowKey, ConnEntry)>) -> io::Result<usize> {
        let mut map = self.aya_map()?;
        let mut n = 0;
        for (k, v) in entries {
            match map.insert(k, v, BPF_NOEXIST) {
                Ok(()) => n += 1,
                Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        Ok(n)
    }

    /// Walks the table once; `f` sees the entries a chunk at a time (keys and values side by side). An entry
    /// inserted or evicted during the walk may or may not be seen; with batches none is seen twice.
    pub fn walk(&self, method: Method, mut f: impl FnMut(&[FlowKey], &[ConnEntry])) -> io::Result<()> {
        if method != Method::Iter && (method == Method::Batch || self.batches_work()) {
            match self.walk_batch(&mut f) {
                Err(Refused::Unsupported(e)) if method == Method::Auto => self.refuse_batches("lookup", &e),
                Err(Refused::Unsupported(e) | Refused::Other(e)) => return Err(e),
                Ok(()) => return Ok(()),
            }
        }
        self.walk_iter(&mut f)
    }

    /// Counts the table: entries, and flows active within `horizon_ns` per service and real.
    pub fn census(&self, method: Method, horizon_ns: u64) -> io::Result<Census> {
        let now = monotonic_ns();
        let mut c = Census::default();
        self.walk(method, |keys, values| {
            for (k, v) in keys.iter().zip(values) {
                // Persistence templates are entries, not flows.
                if k.kind == FLOW_KIND_PERSIST {
                    c.entries += 1;
                } else {
                    c.add(v, now, horizon_ns);
                }
            }
        })?;
        Ok(c)
    }

    /// Removes what `rules` says has expired (see [`SweepRules`]).
    pub fn sweep(&self, method: Method, rules: &SweepRules) -> io::Result<Swept> {
        let now = monotonic_ns();
        let left = RefCell::new(BTreeSet::new());
        let removed = self.purge(method, |k, e| {
            let doomed = rules.expired(k, e, now);
            if !doomed && rules.retired.contains(&(e.vip_num, e.real_id)) {
                left.borrow_mut().insert((e.vip_num, e.real_id));
            }
            doomed
        })?;
        Ok(Swept { removed, retired_left: left.into_inner() })
    }

    /// Removes the entries `pred` selects; returns how many were removed (an entry evicted meanwhile is not
    /// counted). With batches each chunk's victims are deleted as the walk goes (the walk has passed their hash
    /// buckets, so it is not disturbed); the iterator would restart on a deleted key, so there they are
    /// collected first.
    pub fn purge(&self, method: Method, pred: impl Fn(&FlowKey, &ConnEntry) -> bool) -> io::Result<usize> {
        let mut doomed: Vec<FlowKey> = Vec::new();
        if method != Method::Iter && (method == Method::Batch || self.batches_work()) {
            let mut removed = 0;
            let mut err = None;
            let walked = self.walk_batch(&mut |keys: &[FlowKey], values: &[ConnEntry]| {
                doomed.extend(keys.iter().zip(values).filter(|(k, v)| pred(k, v)).map(|(k, _)| *k));
                if doomed.len() >= BATCH && err.is_none() {
                    match self.delete(method, &doomed) {
                        Ok(n) => removed += n,
                        Err(e) => err = Some(e),
                    }
                    doomed.clear();
                }
            });
            match walked {
                Ok(()) => {
                    if let Some(e) = err {
                        return Err(e);
                    }
                    return Ok(removed + self.delete(method, &doomed)?);
                }
                Err(Refused::Unsupported(e)) if method == Method::Auto => self.refuse_batches("lookup", &e),
                Err(Refused::Unsupported(e) | Refused::Other(e)) => return Err(e),
            }
        }
        self.walk_iter(&mut |keys: &[FlowKey], values: &[ConnEntry]| {
            doomed.extend(keys.iter().zip(values).filter(|(k, v)| pred(k, v)).map(|(k, _)| *k));
        })?;
        self.delete(method, &doomed)
    }

    /// Deletes `keys`; returns how many were there to delete.
    pub fn delete(&self, method: Method, keys: &[FlowKey]) -> io::Result<usize> {
        if keys.is_empty() {
            return Ok(0);
        }
        if method != Method::Iter && (method == Method::Batch || self.batches_work()) {
            match delete_all(keys, |chunk| sys::delete_batch(self.fd.as_fd(), chunk)) {
                Err(Refused::Unsupported(e)) if method == Method::Auto => self.refuse_batches("delete", &e),
                Err(Refused::Unsupported(e) | Refused::Other(e)) => return Err(e),
                Ok(n) => return Ok(n),
            }
        }
        let mut map = self.aya_map()?;
        Ok(keys.iter().filter(|k| map.remove(k).is_ok()).count())
    }

    fn refuse_batches(&self, what: &str, e: &io::Error) {
        if self.batch_ok.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %e, "the kernel refuses batch {what} on the connection table; walking it entry by entry (slow with millions of flows)");
        }
    }

    fn walk_iter(&self, f: &mut impl FnMut(&[FlowKey], &[ConnEntry])) -> io::Result<()> {
        let map = self.aya_map()?;
        let (mut keys, mut values) = (Vec::with_capacity(BATCH), Vec::with_capacity(BATCH));
        // An entry evicted while we walk is simply skipped.
        for (k, v) in map.iter().flatten() {
            keys.push(k);
            values.push(v);
            if keys.len() == BATCH {
                f(&keys, &values);
                keys.clear();
                values.clear();
            }
        }
        f(&keys, &values);
        Ok(())
    }

    /// BPF_MAP_LOOKUP_BATCH from the first bucket to the last.
    fn walk_batch(&self, f: &mut impl FnMut(&[FlowKey], &[ConnEntry])) -> Result<(), Refused> {
        let mut cap = BATCH;
        let mut keys = vec![FlowKey::default(); cap];
        let mut values = vec![ConnEntry::default(); cap];
        // Two positions: the previous call's `next` is this call's `resume`.
        let mut tokens: [BatchToken; 2] = [[0; 8]; 2];
        let mut cur = 0;
        let mut first = true;
        loop {
            let (a, b) = tokens.split_at_mut(1);
            let (resume, next) = if cur == 0 { (&a[0], &mut b[0]) } else { (&b[0], &mut a[0]) };
            let resume = (!first).then_some(resume);
            let (r, n) = sys::lookup_batch(self.fd.as_fd(), resume, next, &mut keys[..cap], &mut values[..cap]);
            match r {
                Ok(()) => {
                    f(&keys[..n], &values[..n]);
                    cur = 1 - cur;
                    first = false;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    f(&keys[..n], &values[..n]);
                    return Ok(());
                }
                // The next bucket holds more entries than the buffers: retry the same position with more room.
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && n == 0 && cap < MAX_BATCH => {
                    cap *= 2;
                    keys.resize(cap, FlowKey::default());
                    values.resize(cap, ConnEntry::default());
                }
                Err(e) if first && unsupported(&e) => return Err(Refused::Unsupported(e)),
                Err(e) => return Err(Refused::Other(e)),
            }
        }
    }
}

/// Why a batch operation failed: the kernel does not do it on this map (fall back), or anything else.
enum Refused {
    Unsupported(io::Error),
    Other(io::Error),
}

/// Errors meaning "no batch operations here": an old kernel or a map type without them. 524 is the kernel's
/// internal ENOTSUPP, which some paths let escape to userspace.
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS | 524))
}

/// Deletes `keys` with as many batch calls as needed. The kernel stops a batch at the first key it cannot
/// delete; ENOENT there means the entry went away by itself (LRU eviction), so that key is skipped and the rest
/// deleted. Returns how many keys were deleted.
fn delete_all<K>(keys: &[K], mut call: impl FnMut(&[K]) -> (io::Result<()>, usize)) -> Result<usize, Refused> {
    let (mut at, mut deleted) = (0, 0);
    while at < keys.len() {
        let (r, done) = call(&keys[at..]);
        let done = done.min(keys.len() - at);
        deleted += done;
        match r {
            Ok(()) => at += done.max(1),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => at += done + 1,
            Err(e) if at == 0 && done == 0 && unsupported(&e) => return Err(Refused::Unsupported(e)),
            Err(e) => return Err(Refused::Other(e)),
        }
    }
    Ok(deleted)
}

/// What the periodic flow sweep removes (IPVS's expire_nodest_conn and UDP timeout, and template expiry).
#[derive(Clone, Debug, Default)]
pub struct SweepRules {
    /// Idle time after which a flow of a retired pair, or a UDP flow, is removed (0: never).
    pub idle_ns: u64,
    /// (service slot, real id) pairs whose real left the service: their flows go once idle, their persistence
    /// templates at once (a client must not be sent back to a removed real).
    pub retired: BTreeSet<(u32, u32)>,
    /// Persistence timeout per service slot; templates of other slots (persistence turned off, service gone) go.
    pub persist_ns: HashMap<u32, u64>,
}

impl SweepRules {
    pub fn expired(&self, k: &FlowKey, e: &ConnEntry, now_ns: u64) -> bool {
        let idle = now_ns.saturating_sub(e.atime_ns);
        let retired = self.retired.contains(&(e.vip_num, e.real_id));
        if k.kind == FLOW_KIND_PERSIST {
            // A template of a service without persistence (turned off, or the service is gone) goes at once.
            return retired || self.persist_ns.get(&e.vip_num).is_none_or(|t| idle > *t);
        }
        self.idle_ns != 0 && (retired || k.proto == PROTO_UDP) && idle > self.idle_ns
    }
}

/// What a sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub removed: usize,
    /// Retired pairs that still have entries after the sweep.
    pub retired_left: BTreeSet<(u32, u32)>,
}

/// Work for the connection-table worker.
enum Job<T> {
    Census { horizon_ns: u64 },
    Purge { vip_num: u32, real_id: u32, tag: T },
    Sweep { rules: Box<SweepRules> },
}

/// What the worker did, for the control task.
#[derive(Debug)]
pub enum Done<T> {
    /// A census, requested at `requested`; the walk started at or after that instant.
    Census { requested: Instant, census: io::Result<Census>, took: std::time::Duration },
    /// The flows of (vip_num, real_id) were purged; `tag` is what the requester attached.
    Purged { tag: T, purged: io::Result<usize>, took: std::time::Duration },
    /// A sweep by `rules` finished.
    Swept { rules: Box<SweepRules>, swept: io::Result<Swept>, took: std::time::Duration },
}

/// The control task's side of the connection-table worker: a thread that owns a handle on the table and runs
/// walks and purges one after another, in the order asked (so a census asked after a purge does not see the
/// purged flows). The thread ends when this is dropped, after the job it is running.
pub struct Worker<T> {
    jobs: std::sync::mpsc::Sender<(Instant, Job<T>)>,
}

impl<T: Send + 'static> Worker<T> {
    /// Starts the thread; results arrive on the returned receiver.
    pub fn spawn(table: ConnTable) -> io::Result<(Self, mpsc::UnboundedReceiver<Done<T>>)> {
        let (jobs, rx) = std::sync::mpsc::channel::<(Instant, Job<T>)>();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        std::thread::Builder::new().name("lbd-conntable".into()).spawn(move || {
            while let Ok((requested, job)) = rx.recv() {
                let t = Instant::now();
                let done = match job {
                    Job::Census { horizon_ns } => {
                        Done::Census { requested, census: table.census(Method::Auto, horizon_ns), took: t.elapsed() }
                    }
                    Job::Purge { vip_num, real_id, tag } => {
                        let purged = table.purge(Method::Auto, |_, e| e.vip_num == vip_num && e.real_id == real_id);
                        Done::Purged { tag, purged, took: t.elapsed() }
                    }
                    Job::Sweep { rules } => {
                        let swept = table.sweep(Method::Auto, &rules);
                        Done::Swept { rules, swept, took: t.elapsed() }
                    }
                };
                if done_tx.send(done).is_err() {
                    break;
                }
            }
        })?;
        Ok((Worker { jobs }, done_rx))
    }

    /// Asks for a census; returns the instant it was asked (the walk starts at or after it), or None when the
    /// thread is gone.
    pub fn census(&self, horizon_ns: u64) -> Option<Instant> {
        let now = Instant::now();
        self.jobs.send((now, Job::Census { horizon_ns })).ok().map(|_| now)
    }

    /// Asks for the flows of a service on a real to be purged. Gives the tag back when the thread is gone.
    pub fn purge(&self, vip_num: u32, real_id: u32, tag: T) -> Result<(), T> {
        self.jobs.send((Instant::now(), Job::Purge { vip_num, real_id, tag })).map_err(|e| match e.0 .1 {
            Job::Purge { tag, .. } => tag,
            _ => unreachable!("a purge job was sent"),
        })
    }

    /// Asks for a sweep; false when the thread is gone.
    pub fn sweep(&self, rules: SweepRules) -> bool {
        self.jobs.send((Instant::now(), Job::Sweep { rules: Box::new(rules) })).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(vip_num: u32, real_id: u32, atime_ns: u64) -> ConnEntry {
        ConnEntry { real_id, vip_num, atime_ns }
    }

    #[test]
    fn the_sweep_expires_idle_flows_of_removed_reals_idle_udp_and_old_templates_only() {
        const S: u64 = 1_000_000_000;
        let key = |proto: u8, kind: u8| FlowKey { proto, kind, ..FlowKey::default() };
        let rules = SweepRules { idle_ns: 60 * S, retired: [(0, 2)].into(), persist_ns: [(0, 300 * S)].into() };
        let now = 1000 * S;
        let tcp = key(lb_common::PROTO_TCP, 0);
        let udp = key(PROTO_UDP, 0);
        let tpl = key(lb_common::PROTO_TCP, FLOW_KIND_PERSIST);
        // An idle TCP flow of a real still in its service stays; of a removed real it goes once idle.
        assert!(!rules.expired(&tcp, &entry(0, 1, now - 600 * S), now));
        assert!(!rules.expired(&tcp, &entry(0, 2, now - 30 * S), now), "a removed real's active flow continues");
        assert!(rules.expired(&tcp, &entry(0, 2, now - 61 * S), now));
        // UDP flows go once idle, whatever their real.
        assert!(!rules.expired(&udp, &entry(0, 1, now - 59 * S), now));
        assert!(rules.expired(&udp, &entry(0, 1, now - 61 * S), now));
        // Templates: by their service's timeout, at once for a removed real, and for a service without persistence.
        assert!(!rules.expired(&tpl, &entry(0, 1, now - 299 * S), now));
        assert!(rules.expired(&tpl, &entry(0, 1, now - 301 * S), now));
        assert!(rules.expired(&tpl, &entry(0, 2, now), now));
        assert!(rules.expired(&tpl, &entry(1, 1, now), now));
        // A timeout of 0 keeps every flow (templates still follow their own timeouts).
        let never = SweepRules { idle_ns: 0, ..rules };
        assert!(!never.expired(&udp, &entry(0, 2, 0), now));
    }

    #[test]
    fn census_counts_entries_and_recent_flows_per_service_and_real() {
        let mut c = Census::default();
        let now = 1_000_000_000_000;
        let horizon = 120_000_000_000;
        c.add(&entry(0, 1, now), now, horizon);
        c.add(&entry(0, 1, now - horizon), now, horizon);
        c.add(&entry(0, 1, now - horizon - 1), now, horizon);
        c.add(&entry(1, 1, now + 5), now, horizon); // stamped after our clock read: active
        c.add(&entry(0, 2, 0), now, horizon);
        assert_eq!(c.entries, 5);
        assert_eq!((c.active(0, 1), c.active(1, 1), c.active(0, 2), c.active(9, 9)), (2, 1, 0, 0));
    }

    fn os(code: i32) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(code))
    }

    #[test]
    fn delete_all_in_one_call() {
        let keys: Vec<u32> = (0..10).collect();
        let mut calls = 0;
        let n = delete_all(&keys, |c| {
            calls += 1;
            (Ok(()), c.len())
        });
        assert_eq!((n.ok(), calls), (Some(10), 1));
    }

    #[test]
    fn delete_all_skips_keys_that_vanished() {
        // Keys 3 and 7 were evicted before the delete: the kernel stops at each with ENOENT.
        let keys: Vec<u32> = (0..10).collect();
        let gone = [3u32, 7];
        let mut seen = Vec::new();
        let n = delete_all(&keys, |c| {
            seen.push(c[0]);
            match c.iter().position(|k| gone.contains(k)) {
                Some(i) => (os(libc::ENOENT), i),
                None => (Ok(()), c.len()),
            }
        });
        assert_eq!(n.ok(), Some(8));
        assert_eq!(seen, vec![0, 4, 8]);
    }

    #[test]
    fn delete_all_ends_on_a_vanished_last_key() {
        let keys: Vec<u32> = (0..3).collect();
        let n = delete_all(&keys, |c| if c.len() == 3 { (os(libc::ENOENT), 2) } else { unreachable!() });
        assert_eq!(n.ok(), Some(2));
    }

    #[test]
    fn delete_all_reports_unsupported_only_before_any_progress() {
        let keys: Vec<u32> = (0..4).collect();
        assert!(matches!(delete_all(&keys, |_| (os(libc::EINVAL), 0)), Err(Refused::Unsupported(_))));
        let mut first = true;
        let r =
            delete_all(
                &keys,
                |_| {
                    if std::mem::take(&mut first) {
                        (os(libc::ENOENT), 1)
                    } else {
                        (os(libc::EINVAL), 0)
                    }
                },
            );
        assert!(
            matches!(r, Err(Refused::Other(_))),
            "an error after progress is not a reason to redo the work per entry"
        );
        assert!(matches!(delete_all(&keys, |_| (os(libc::EPERM), 0)), Err(Refused::Other(_))));
    }

    #[test]
    fn delete_all_never_trusts_an_oversized_count() {
        let keys: Vec<u32> = (0..4).collect();
        assert_eq!(delete_all(&keys, |_| (Ok(()), 99)).ok(), Some(4));
    }

    #[test]
    fn unsupported_errors() {
        for code in [libc::EINVAL, libc::EOPNOTSUPP, libc::ENOSYS, 524] {
            assert!(unsupported(&io::Error::from_raw_os_error(code)), "{code}");
        }
        for code in [libc::ENOENT, libc::EPERM, libc::EFAULT, libc::ENOSPC] {
            assert!(!unsupported(&io::Error::from_raw_os_error(code)), "{code}");
        }
    }
}
