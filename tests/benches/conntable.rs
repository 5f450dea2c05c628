//! `cargo xtask bench conntable`: how long lbd takes to walk, count and purge a connection table of N flows, with
//! the per-entry iterator lbd used before (one get_next_key and one lookup syscall per entry, per-entry deletes)
//! and with BPF_MAP_LOOKUP_BATCH / BPF_MAP_DELETE_BATCH. Prints medians of several runs. Root: it loads the XDP
//! object (nothing is attached).
//!
//! Options: --sizes 100000,1000000,2000000  --runs 5  --table 2000000 (CONN_TABLE max entries, lbd's default)
use lb_common::{ConnEntry, FlowKey, FAMILY_V4, PROTO_TCP};
use lb_userspace::dataplane::conntable::{monotonic_ns, ConnTable, Method};
use lb_userspace::dataplane::{Dataplane, Limits};
use std::time::{Duration, Instant};

/// The activity horizon of `lbctl list` (120 s).
const HORIZON_NS: u64 = 120_000_000_000;

/// Flow number `i`: distinct 5-tuples (client 10.x.y.z, ports), spread over 2 services and 9 reals; a third of
/// them (reals 3, 6 and 9) is what the purge removes; half are older than the activity horizon.
fn flow(i: u32, now: u64) -> (FlowKey, ConnEntry) {
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&[10, 99, 0, 100]);
    let key = FlowKey {
        src,
        dst,
        sport: (1024 + (i >> 24) as u16).to_be(),
        dport: if i.is_multiple_of(2) { 80u16.to_be() } else { 1935u16.to_be() },
        proto: PROTO_TCP,
        family: FAMILY_V4,
        kind: 0,
        _pad: 0,
    };
    let atime_ns = if i % 4 < 2 { now } else { now.saturating_sub(2 * HORIZON_NS) };
    (key, ConnEntry { real_id: i % 9 + 1, vip_num: i % 2, atime_ns })
}

fn doomed(e: &ConnEntry) -> bool {
    e.real_id.is_multiple_of(3)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Fills the table with flows 0..n (the ones already there are rewritten).
fn fill(table: &ConnTable, n: u32) {
    let now = monotonic_ns();
    table.insert_all((0..n).map(|i| flow(i, now))).expect("fill the connection table");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let sizes: Vec<u32> = arg("--sizes")
        .unwrap_or_else(|| "100000,1000000,2000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("--sizes: comma-separated numbers"))
        .collect();
    let runs: usize = arg("--runs").and_then(|v| v.parse().ok()).unwrap_or(5);
    let table_size: u32 = arg("--table").and_then(|v| v.parse().ok()).unwrap_or(lb_common::DEFAULT_CONN_TABLE_SIZE);
    let table_size = table_size.max(sizes.iter().copied().max().unwrap_or(0));

    let dp = Dataplane::load(Limits { max_services: 4, conn_table_size: table_size }).expect("load (run as root)");
    let table = dp.conn_table().expect("connection table");
    println!(
        "connection table: LRU hash, {table_size} max entries, key 40 B, value 16 B; {runs} runs per figure, medians"
    );
    println!("{:>9} {:>8}  {:<28} {:>12} {:>12} {:>8}", "flows", "seen", "operation", "iterator", "batch", "speed-up");
    for &n in &sizes {
        fill(&table, n);
        // The LRU may evict a few entries near its limit: report what the walk really sees.
        let seen = table.census(Method::Batch, HORIZON_NS).expect("batch census").entries;
        let check = table.census(Method::Iter, HORIZON_NS).expect("iterator census");
        assert_eq!(check, table.census(Method::Batch, HORIZON_NS).unwrap(), "batch and iterator disagree");
        assert!(seen as f64 >= n as f64 * 0.99, "only {seen} of {n} entries in the table");

        let time = |f: &mut dyn FnMut()| -> Duration {
            let t = Instant::now();
            f();
            t.elapsed()
        };
        let mut rows = Vec::new();
        for (name, op) in [("walk (no-op per entry)", 0), ("census (list/stats/metrics)", 1)] {
            let mut figures = Vec::new();
            for method in [Method::Iter, Method::Batch] {
                let v: Vec<Duration> = (0..runs)
                    .map(|_| {
                        time(&mut || {
                            if op == 0 {
                                let mut k = 0usize;
                                table.walk(method, |keys, _| k += keys.len()).unwrap();
                                std::hint::black_box(k);
                            } else {
                                std::hint::black_box(table.census(method, HORIZON_NS).unwrap());
                            }
                        })
                    })
                    .collect();
                figures.push(median(v));
            }
            rows.push((name, figures[0], figures[1]));
        }
        // Purge: a third of the entries, refilled between runs (the refill is not timed).
        let mut purge = Vec::new();
        let mut removed = (0, 0);
        for method in [Method::Iter, Method::Batch] {
            let v: Vec<Duration> = (0..runs)
                .map(|_| {
                    fill(&table, n);
                    let t = Instant::now();
                    let r = table.purge(method, |_, e| doomed(e)).unwrap();
                    let d = t.elapsed();
                    if method == Method::Iter {
                        removed.0 = r
                    } else {
                        removed.1 = r
                    }
                    d
                })
                .collect();
            purge.push(median(v));
        }
        // At the table's limit the LRU evicts a few entries on each refill, so the counts may differ slightly.
        let third = seen as f64 / 3.0;
        for r in [removed.0, removed.1] {
            assert!((r as f64 - third).abs() <= third * 0.01, "purged {r}, want about {third:.0}");
        }
        assert!(table.census(Method::Batch, HORIZON_NS).unwrap().active.keys().all(|(_, real)| real % 3 != 0));
        rows.push(("purge 1/3 (down real)", purge[0], purge[1]));
        for (name, it, b) in rows {
            println!(
                "{n:>9} {seen:>8}  {name:<28} {:>12} {:>12} {:>7.1}x",
                ms(it),
                ms(b),
                it.as_secs_f64() / b.as_secs_f64()
            );
        }
        println!("{:>9} {:>8}  purged {} (iterator) / {} (batch) flows in the last run", "", "", removed.0, removed.1);
    }
}
