//! Fan-out benchmark: N players of one stream on one edge pinned to CPU 0, our relay beside nginx-rtmp in the
//! same run; prints CPU per player, memory per player and time to first frame.
//!
//! Run: `cargo bench -p relay --bench relay -- [--players 100,500,1000] [--secs 10] [--bitrate-kbps 1000]
//! [--merge-ms 0,100,350] [--compare NAME=PATH_TO_RELAY_BINARY]...`
//! Lag columns: per player, the mean and max of how late its video frames arrive above its best frame
//! (median over players); the difference to the `relay merge 0ms` row is the latency merging adds.
//! Layout: edge under test on CPU 0; our origin, the ffmpeg publisher (stream copy of a pre-encoded clip) and
//! this process (the player load generator, one thread) on CPU 1. Both edges pull from the same origin.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay::loadgen::{LoadStats, PlayUrl};

#[allow(dead_code, reason = "each bench uses a subset of the helpers")]
mod common;
use common::{cpu_secs, free_port, pin_self, require, rss_kib, spawn, wait_port};

const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
const EDGE_CPU: usize = 0;
const AUX_CPU: usize = 1;

struct Opts {
    players: Vec<usize>,
    secs: u64,
    bitrate_kbps: u32,
    connect_rate: u32,
    /// Other `relay` builds measured in the same run (`--compare NAME=PATH`), for A/B comparisons that share
    /// the machine's conditions with this build and nginx-rtmp.
    compare: Vec<(String, String)>,
    /// `--merge-ms` values this build's edge runs with, each a row (0 = merging off; `--compare` builds run with
    /// their own defaults).
    merge_ms: Vec<u64>,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        players: vec![100, 500, 1000],
        secs: 10,
        bitrate_kbps: 1000,
        connect_rate: 500,
        compare: Vec::new(),
        merge_ms: vec![0, 100, 350],
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--players" => o.players = val().split(',').map(|n| n.trim().parse().expect("--players 100,500")).collect(),
            "--secs" => o.secs = val().parse().expect("--secs N"),
            "--bitrate-kbps" => o.bitrate_kbps = val().parse().expect("--bitrate-kbps N"),
            "--connect-rate" => o.connect_rate = val().parse().expect("--connect-rate N"),
            "--merge-ms" => {
                o.merge_ms = val().split(',').map(|n| n.trim().parse().expect("--merge-ms 0,100,350")).collect()
            }
            "--compare" => {
                let v = val();
                let (name, path) = v.split_once('=').expect("--compare NAME=PATH");
                assert!(Path::new(path).is_file(), "--compare {name}: no relay binary at {path}");
                o.compare.push((name.to_string(), path.to_string()));
            }
            // cargo bench passes --bench to harness = false targets.
            "--bench" => {}
            other => {
                panic!("unknown argument {other}; use --players, --secs, --bitrate-kbps, --connect-rate, --merge-ms, --compare")
            }
        }
    }
    o
}

struct Row {
    server: String,
    players: usize,
    started: usize,
    failed: usize,
    cpu_core_pct: f64,
    cpu_per_player_pct: f64,
    rss_base_mib: f64,
    rss_per_player_kib: f64,
    ttff_p50_ms: f64,
    ttff_p95_ms: f64,
    kbps_per_player: f64,
    /// Median over players of their mean / max video lag above their best frame (see `relay::loadgen::Lag`).
    lag_mean_ms: f64,
    lag_max_ms: f64,
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
}

/// Runs players against `port` with the edge process `pid`, measuring over `secs`.
fn measure(rt: &tokio::runtime::Runtime, server: &str, pid: u32, port: u16, n: usize, o: &Opts) -> Row {
    let url = PlayUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/bench")).unwrap();
    // One warm-up player makes the edge pull and fill its cache; the baseline is taken with it attached.
    let (stop, stopping) = svc::Shutdown::new();
    let warm = Arc::new(LoadStats::default());
    let h_warm = rt.spawn(relay::loadgen::run(url.clone(), 1, 1, warm.clone(), stopping.clone()));
    let end = Instant::now() + Duration::from_secs(15);
    while warm.started.load(Ordering::Relaxed) < 1 {
        assert!(Instant::now() < end, "{server}: warm-up player got no frame");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Settling time, not a readiness wait: the edge fills its cache with a whole GOP (2 s) before the baseline.
    std::thread::sleep(Duration::from_secs(2));
    let rss_base = rss_kib(pid);
    let stats = Arc::new(LoadStats::default());
    let h = rt.spawn(relay::loadgen::run(url, n, o.connect_rate, stats.clone(), stopping));
    let end = Instant::now() + Duration::from_secs(10 + (n as u64) / o.connect_rate.max(1) as u64 * 2);
    while stats.started.load(Ordering::Relaxed) + stats.failed.load(Ordering::Relaxed) < n && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Settling time: the last players' start-up (handshake, cached GOP burst) stays out of the measured window.
    std::thread::sleep(Duration::from_secs(2));
    let (c0, b0, t0) = (cpu_secs(pid), stats.bytes.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(Duration::from_secs(o.secs));
    let (c1, b1, dt) = (cpu_secs(pid), stats.bytes.load(Ordering::Relaxed), t0.elapsed().as_secs_f64());
    let rss = rss_kib(pid);
    stop.trigger();
    let _ = rt.block_on(h);
    let _ = rt.block_on(h_warm);
    let started = stats.started.load(Ordering::Relaxed);
    let mut ttff = stats.ttff.lock().unwrap().clone();
    let lags: Vec<(f64, f64)> =
        stats.lags.lock().unwrap().iter().filter_map(|l| l.lock().unwrap().above_best()).collect();
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let core = (c1 - c0) / dt * 100.0;
    Row {
        server: server.to_string(),
        players: n,
        started,
        failed: stats.failed.load(Ordering::Relaxed),
        cpu_core_pct: core,
        cpu_per_player_pct: core / n as f64,
        rss_base_mib: rss_base as f64 / 1024.0,
        rss_per_player_kib: (rss as f64 - rss_base as f64) / n as f64,
        ttff_p50_ms: pct(&mut ttff, 0.5),
        ttff_p95_ms: pct(&mut ttff, 0.95),
        kbps_per_player: (b1 - b0) as f64 * 8.0 / dt / 1000.0 / started.max(1) as f64,
        lag_mean_ms: median(lags.iter().map(|l| l.0).collect()),
        lag_max_ms: median(lags.iter().map(|l| l.1).collect()),
    }
}

fn nginx_conf(dir: &Path, port: u16, origin: u16) -> PathBuf {
    let conf = format!(
        "load_module {RTMP_MODULE};
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 8192; }}
rtmp {{
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{
            live on;
            pull rtmp://127.0.0.1:{origin}/live;
        }}
    }}
}}
",
        d = dir.display()
    );
    let p = dir.join(format!("nginx-{port}.conf"));
    std::fs::write(&p, conf).unwrap();
    p
}

fn main() {
    let o = parse_opts();
    for t in ["ffmpeg", "nginx", "taskset"] {
        require(t);
    }
    assert!(Path::new(RTMP_MODULE).is_file(), "{RTMP_MODULE} missing: install libnginx-mod-rtmp");
    assert!(
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) >= 2,
        "needs 2 CPUs (edge on 0, rest on 1)"
    );
    pin_self(AUX_CPU);
    let relay_bin = env!("CARGO_BIN_EXE_relay");
    let dir = std::env::temp_dir().join(format!("relay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display().to_string();

    let (_origin, _publisher, origin_port) = common::origin_with_stream(relay_bin, &dir, o.bitrate_kbps, AUX_CPU);

    // One worker thread (inherits the CPU 1 pin) drives the players while this thread measures.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut rows = Vec::new();
    // Each N: this build, then any --compare builds, then nginx-rtmp.
    let mut servers: Vec<(String, Option<&str>, Option<u64>)> =
        o.merge_ms.iter().map(|&m| (format!("relay merge {m}ms"), Some(relay_bin), Some(m))).collect();
    servers.extend(o.compare.iter().map(|(n, p)| (n.clone(), Some(p.as_str()), None)));
    servers.push(("nginx-rtmp".to_string(), None, None));
    for &n in &o.players {
        for (server, bin, merge) in &servers {
            let port = free_port();
            let mut args = vec![
                "edge".to_string(),
                "--listen".to_string(),
                format!("127.0.0.1:{port}"),
                "--origin".to_string(),
                format!("rtmp://127.0.0.1:{origin_port}/live"),
            ];
            if let Some(m) = merge {
                args.extend(["--merge-ms".to_string(), m.to_string()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let edge = match bin {
                Some(bin) => {
                    spawn(EDGE_CPU, bin, &args, &dir.join(format!("edge-{}-{n}.log", server.replace(' ', "-"))))
                }
                None => {
                    let conf = nginx_conf(&dir, port, origin_port);
                    let early = format!("{d}/nginx-early.log");
                    spawn(
                        EDGE_CPU,
                        "nginx",
                        &["-p", &d, "-e", &early, "-c", conf.to_str().unwrap()],
                        &dir.join(format!("nginx-{n}.log")),
                    )
                }
            };
            wait_port(port);
            eprintln!("{server}: {n} players ...");
            let row = measure(&rt, server, edge.pid(), port, n, &o);
            drop(edge);
            rows.push(row);
        }
    }

    println!();
    println!(
        "one stream at ~{} kbit/s, edge pinned to CPU {EDGE_CPU}, {} s window; CPU % is of one core",
        o.bitrate_kbps, o.secs
    );
    println!("| server | players | started/failed | edge CPU % | CPU %/player | RSS base MiB | RSS KiB/player | TTFF p50 ms | TTFF p95 ms | kbit/s per player | lag mean ms | lag max ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {}/{} | {:.1} | {:.4} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.server,
            r.players,
            r.started,
            r.failed,
            r.cpu_core_pct,
            r.cpu_per_player_pct,
            r.rss_base_mib,
            r.rss_per_player_kib,
            r.ttff_p50_ms,
            r.ttff_p95_ms,
            r.kbps_per_player,
            r.lag_mean_ms,
            r.lag_max_ms
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
