//! HLS benchmark: N HLS players (relay::hlsload; a share of them LL-HLS with blocking reloads) of one ~1 Mbit/s
//! stream, served by nginx + nginx-rtmp's HLS from tmpfs and by our relay edge, in the same run; prints CPU and RSS
//! per viewer, RSS per stream, requests/s, response times, and the ratio ours/nginx.
//!
//! Run: `cargo xtask bench hls -- [--clients 1000] [--ll-share 0.5] [--secs 20] [--runs 3] [--connect-rate 500]
//! [--observer-ms 5] [--bitrate-kbps 1000] [--relay-arg ARG]...`
//! Layout: the server under test on CPU 0 (one nginx process, `master_process off`, one worker; or our edge); our
//! origin, the ffmpeg publisher and this process (clients on one tokio thread, the part observer on its own thread)
//! on CPU 1. Both servers pull the same stream from the origin. Per run the servers go in alternating order; the
//! summary is the median of the runs.
//! Rows: `nginx HLS` (plain clients only: nginx-rtmp has no LL-HLS), `relay HLS` (the same plain load, for the
//! ratio) and `relay LL mix` (the `--ll-share` of clients on LL-HLS). The relay rows are skipped, with the reason,
//! while the relay serves no playlist at /live/bench/index.m3u8.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay::hlsload::{DelaySummary, HlsStats, HlsUrl, Kind, KindSummary, LoadConfig, Playlist};

#[allow(dead_code, reason = "each bench uses a subset of the helpers")]
mod common;
use common::{cpu_secs, free_port, http, pin_self, require, rss_kib, spawn, wait_port, Proc};

const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
const SERVER_CPU: usize = 0;
const AUX_CPU: usize = 1;
/// The stream's playlist path on both servers.
const PLAYLIST: &str = "/live/bench/index.m3u8";
/// Segments the playlist must list before a server counts as warm (nginx-rtmp writes its first fragment after one
/// target duration; three make the window of a real player).
const WARM_SEGMENTS: usize = 3;
/// Window over which the server's CPU is measured with the stream and no viewer.
const IDLE_SECS: u64 = 5;

struct Opts {
    clients: usize,
    ll_share: f64,
    secs: u64,
    runs: usize,
    connect_rate: u32,
    observer_ms: u64,
    bitrate_kbps: u32,
    /// Extra arguments for our edge (`--relay-arg --hls-part-ms --relay-arg 333`), for HLS knobs.
    relay_args: Vec<String>,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        clients: 1000,
        ll_share: 0.5,
        secs: 20,
        runs: 3,
        connect_rate: 500,
        observer_ms: 5,
        bitrate_kbps: 1000,
        relay_args: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--clients" => o.clients = val().parse().expect("--clients N (a whole number)"),
            "--ll-share" => o.ll_share = val().parse().expect("--ll-share F (0 to 1)"),
            "--secs" => o.secs = val().parse().expect("--secs N"),
            "--runs" => o.runs = val().parse().expect("--runs N"),
            "--connect-rate" => o.connect_rate = val().parse().expect("--connect-rate N"),
            "--observer-ms" => o.observer_ms = val().parse().expect("--observer-ms N"),
            "--bitrate-kbps" => o.bitrate_kbps = val().parse().expect("--bitrate-kbps N"),
            "--relay-arg" => o.relay_args.push(val()),
            // cargo bench passes --bench to harness = false targets.
            "--bench" => {}
            other => panic!(
                "unknown argument {other}; use --clients, --ll-share, --secs, --runs, --connect-rate, --observer-ms, \
                 --bitrate-kbps, --relay-arg"
            ),
        }
    }
    assert!((0.0..=1.0).contains(&o.ll_share), "--ll-share {} is outside 0..=1", o.ll_share);
    assert!(o.clients >= 1 && o.runs >= 1 && o.secs >= 1, "--clients, --runs and --secs must be at least 1");
    assert!((1..=1000).contains(&o.observer_ms), "--observer-ms {} is outside 1..=1000", o.observer_ms);
    o
}

/// Removes a directory on drop (the HLS files on tmpfs, the logs), even when the bench fails.
struct DirGuard(PathBuf);
impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one server configuration serves with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Server {
    Nginx,
    /// Our edge, plain clients only (the same load as nginx's, for the ratio).
    Relay,
    /// Our edge, `--ll-share` of the clients on LL-HLS.
    RelayMix,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Nginx => "nginx HLS",
            Server::Relay => "relay HLS",
            Server::RelayMix => "relay LL mix",
        }
    }
}

/// One server's figures in one run.
#[derive(Clone)]
struct Row {
    server: Server,
    clients: usize,
    ll_clients: usize,
    started: usize,
    cpu_pct: f64,
    /// Milliseconds of CPU per viewer per second (= % of a core per viewer x 10).
    cpu_ms_per_viewer_s: f64,
    /// The server's CPU with the stream and no viewer (ingest, packaging), % of a core.
    cpu_idle_pct: f64,
    rss_idle_mib: f64,
    rss_stream_kib: f64,
    /// nginx only: the HLS files on tmpfs (memory outside the process's RSS).
    tmpfs_kib: f64,
    rss_per_viewer_kib: f64,
    segments_listed: usize,
    req_s: f64,
    kinds: Vec<KindSummary>,
    delays: DelaySummary,
    early: u64,
    errors: u64,
    loadgen_pct: f64,
    observer_polls: u64,
}

impl Row {
    /// CPU per viewer above the no-viewer cost, ms per viewer per second.
    fn marginal(&self) -> f64 {
        (self.cpu_pct - self.cpu_idle_pct) * 10.0 / self.clients as f64
    }

    fn kind(&self, k: Kind) -> KindSummary {
        *self.kinds.iter().find(|s| s.kind == k).expect("every kind is summarised")
    }
}

fn nginx_conf(dir: &Path, hls_dir: &Path, rtmp: u16, http: u16, origin: u16) -> PathBuf {
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
        listen 127.0.0.1:{rtmp};
        chunk_size 4096;
        application live {{
            live on;
            pull rtmp://127.0.0.1:{origin}/live/bench name=bench static;
            hls on;
            hls_path {h};
            hls_nested on;
            hls_fragment 2s;
            hls_playlist_length 10s;
        }}
    }}
}}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    types {{
        application/vnd.apple.mpegurl m3u8;
        video/mp2t ts;
    }}
    server {{
        listen 127.0.0.1:{http};
        location /live/ {{
            alias {h}/;
            add_header Cache-Control no-cache;
        }}
    }}
}}
",
        d = dir.display(),
        h = hls_dir.display()
    );
    let p = dir.join(format!("nginx-{http}.conf"));
    std::fs::write(&p, conf).unwrap();
    p
}

/// Bytes of the files under `dir` (nginx-rtmp's fragments and playlist on tmpfs).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The playlist at `port` once it satisfies `ready`, or why not by the deadline.
fn wait_playlist(port: u16, secs: u64, ready: impl Fn(&Playlist) -> bool) -> Result<Playlist, String> {
    let end = Instant::now() + Duration::from_secs(secs);
    let mut last = String::from("no answer");
    while Instant::now() < end {
        match http(port, "GET", PLAYLIST) {
            Some((200, body)) => match Playlist::parse(&body) {
                Ok(p) if ready(&p) => return Ok(p),
                Ok(p) => last = format!("playlist lists {} segments", p.segments.len()),
                Err(e) => last = format!("playlist does not parse: {e}"),
            },
            Some((status, _)) => last = format!("GET {PLAYLIST} answered {status}"),
            None => last = format!("GET {PLAYLIST}: no answer"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last)
}

struct Env<'a> {
    o: &'a Opts,
    rt: tokio::runtime::Runtime,
    dir: PathBuf,
    relay_bin: &'a str,
    origin_port: u16,
}

/// Starts `server`, loads it with the clients and measures over `--secs`; Err says why the server could not be
/// measured (our relay without HLS).
fn measure(env: &Env, server: Server, run: usize) -> Result<Row, String> {
    let o = env.o;
    let http_port = free_port();
    let tag = format!("{}-{run}", server.name().replace(' ', "-"));
    let hls_dir = PathBuf::from(format!("/dev/shm/hls-bench-{}-{tag}", std::process::id()));
    let _hls_guard = DirGuard(hls_dir.clone());
    let (proc_, warm_secs): (Proc, u64) = match server {
        Server::Nginx => {
            std::fs::create_dir_all(&hls_dir).unwrap();
            let conf = nginx_conf(&env.dir, &hls_dir, free_port(), http_port, env.origin_port);
            let d = env.dir.display().to_string();
            let early = format!("{d}/nginx-early.log");
            let p = spawn(
                SERVER_CPU,
                "nginx",
                &["-p", &d, "-e", &early, "-c", conf.to_str().unwrap()],
                &env.dir.join(format!("{tag}.log")),
            );
            (p, 30)
        }
        Server::Relay | Server::RelayMix => {
            let api = free_port();
            let mut args = vec![
                "edge".to_string(),
                "--listen".to_string(),
                format!("127.0.0.1:{}", free_port()),
                "--http-listen".to_string(),
                format!("127.0.0.1:{http_port}"),
                "--api".to_string(),
                format!("127.0.0.1:{api}"),
                "--origin".to_string(),
                format!("rtmp://127.0.0.1:{}/live", env.origin_port),
            ];
            args.extend(o.relay_args.iter().cloned());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let p = spawn(SERVER_CPU, env.relay_bin, &args, &env.dir.join(format!("{tag}.log")));
            wait_port(api);
            // Pre-pull as the manager does; a relay that starts the pull on the first playlist request needs none.
            let _ = http(api, "POST", "/streams/live/bench/pull");
            (p, 20)
        }
    };
    let pid = proc_.pid();
    wait_port(http_port);
    let rss_idle = rss_kib(pid);
    let warm = wait_playlist(http_port, warm_secs, |p| p.segments.len() >= WARM_SEGMENTS)
        .map_err(|e| format!("{}: {e}", server.name()))?;
    // The stream's memory is measured with its window full: once the playlist's window first slides.
    let full = wait_playlist(http_port, 40, |p| p.media_sequence > warm.media_sequence)
        .map_err(|e| format!("{}: the playlist's window did not slide: {e}", server.name()))?;
    let segments_listed = full.segments.len();
    // The cost of the stream alone (ingest, packaging), no viewer: the base the viewers' cost adds to.
    let (i0, ti) = (cpu_secs(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(IDLE_SECS));
    let cpu_idle_pct = (cpu_secs(pid) - i0) / ti.elapsed().as_secs_f64() * 100.0;
    let rss_base = rss_kib(pid);
    let tmpfs = if server == Server::Nginx { dir_bytes(&hls_dir) } else { 0 };

    let url = HlsUrl::parse(&format!("http://127.0.0.1:{http_port}{PLAYLIST}")).unwrap();
    let ll_share = if server == Server::RelayMix { o.ll_share } else { 0.0 };
    let cfg = LoadConfig {
        url,
        clients: o.clients,
        ll_share,
        connect_per_sec: o.connect_rate,
        observer_poll: (ll_share > 0.0).then(|| Duration::from_millis(o.observer_ms)),
    };
    let ll_clients = cfg.ll_count();
    let stats = Arc::new(HlsStats::default());
    let (stop, stopping) = svc::Shutdown::new();
    let h = env.rt.spawn(relay::hlsload::run(cfg, stats.clone(), stopping));
    let end = Instant::now() + Duration::from_secs(15 + o.clients as u64 / o.connect_rate.max(1) as u64 * 2);
    while stats.started.load(Ordering::Relaxed) < o.clients && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Settling time: the clients' start-up (first playlist, init, newest segment) stays out of the window, and
    // their reload phases spread over a target duration.
    std::thread::sleep(Duration::from_secs(3));
    stats.recording.store(true, Ordering::Relaxed);
    let (c0, l0, t0) = (cpu_secs(pid), cpu_secs("self"), Instant::now());
    std::thread::sleep(Duration::from_secs(o.secs));
    let (c1, l1, dt) = (cpu_secs(pid), cpu_secs("self"), t0.elapsed().as_secs_f64());
    stats.recording.store(false, Ordering::Relaxed);
    let rss_end = rss_kib(pid);
    stop.trigger();
    let _ = env.rt.block_on(h);
    drop(proc_);

    let kinds = stats.summary();
    let requests: u64 = kinds.iter().map(|k| k.count).sum();
    let errors: u64 = kinds.iter().map(|k| k.non_2xx + k.parse + k.conn).sum();
    let cpu_pct = (c1 - c0) / dt * 100.0;
    let n = o.clients as f64;
    Ok(Row {
        server,
        clients: o.clients,
        ll_clients,
        started: stats.started.load(Ordering::Relaxed),
        cpu_pct,
        cpu_ms_per_viewer_s: (c1 - c0) / dt / n * 1000.0,
        cpu_idle_pct,
        rss_idle_mib: rss_idle as f64 / 1024.0,
        rss_stream_kib: rss_base as f64 - rss_idle as f64,
        tmpfs_kib: tmpfs as f64 / 1024.0,
        rss_per_viewer_kib: (rss_end as f64 - rss_base as f64) / n,
        segments_listed,
        req_s: requests as f64 / dt,
        delays: stats.delays(),
        early: stats.early.load(Ordering::Relaxed),
        kinds,
        errors,
        loadgen_pct: (l1 - l0) / dt * 100.0,
        observer_polls: stats.observer_polls.load(Ordering::Relaxed),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn print_rows(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!(
        "| server | clients (LL) | started | server CPU % | CPU ms/viewer/s | no-viewer CPU % | marginal ms/viewer/s | RSS idle MiB | RSS stream KiB (+tmpfs) | \
         RSS KiB/viewer | req/s | playlist p50/p99 ms | segment p50/p99 ms | part p50/p99 ms | blocking p50/p99 ms | \
         reload after part p50/p99 ms (res.); first answer per part p50/p99; burst p50 | errors | loadgen CPU % |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let (pl, sg, pa, bl) =
            (r.kind(Kind::Playlist), r.kind(Kind::Segment), r.kind(Kind::Part), r.kind(Kind::Blocking));
        let pair = |k: KindSummary| {
            if k.count == 0 {
                "-".to_string()
            } else {
                format!("{:.2} / {:.2}", k.p50_ms, k.p99_ms)
            }
        };
        let delay = if r.delays.matched == 0 {
            "-".to_string()
        } else {
            format!(
                "{:.1} / {:.1} ({:.1}); first {:.1} / {:.1}; burst {:.1}",
                r.delays.p50_ms,
                r.delays.p99_ms,
                r.delays.resolution_ms,
                r.delays.first_p50_ms,
                r.delays.first_p99_ms,
                r.delays.spread_p50_ms
            )
        };
        let tmpfs = if r.tmpfs_kib > 0.0 { format!(" (+{:.0})", r.tmpfs_kib) } else { String::new() };
        println!(
            "| {} | {} ({}) | {} | {:.1} | {:.4} | {:.2} | {:.4} | {:.1} | {:.0}{tmpfs} | {:.1} | {:.0} | {} | {} | {} | {} | {} | {} | {:.1} |",
            r.server.name(),
            r.clients,
            r.ll_clients,
            r.started,
            r.cpu_pct,
            r.cpu_ms_per_viewer_s,
            r.cpu_idle_pct,
            r.marginal(),
            r.rss_idle_mib,
            r.rss_stream_kib,
            r.rss_per_viewer_kib,
            r.req_s,
            pair(pl),
            pair(sg),
            pair(pa),
            pair(bl),
            delay,
            r.errors,
            r.loadgen_pct
        );
    }
}

/// Per-request-type detail of one row (counts, bytes, error classes), and the reload matching.
fn print_detail(r: &Row) {
    eprintln!(
        "  {}: segments listed at warm-up {}, observer polls {}, early answers {}",
        r.server.name(),
        r.segments_listed,
        r.observer_polls,
        r.early
    );
    for k in &r.kinds {
        if k.count > 0 {
            eprintln!(
                "    {:<16} {:>7} requests {:>9.1} MiB  non-2xx {} parse {} conn {}  p50 {:.2} ms p99 {:.2} ms",
                k.kind.name(),
                k.count,
                k.bytes as f64 / 1048576.0,
                k.non_2xx,
                k.parse,
                k.conn,
                k.p50_ms,
                k.p99_ms
            );
        }
    }
    let d = &r.delays;
    if d.matched + d.not_blocked + d.unmatched > 0 {
        eprintln!(
            "    reloads: matched {} (p50 {:.1} p99 {:.1} max {:.1} ms, resolution {:.1} ms), not blocked {}, unmatched {}",
            d.matched, d.p50_ms, d.p99_ms, d.max_ms, d.resolution_ms, d.not_blocked, d.unmatched
        );
    }
}

fn main() {
    let o = parse_opts();
    for t in ["ffmpeg", "nginx", "taskset"] {
        require(t);
    }
    assert!(Path::new(RTMP_MODULE).is_file(), "{RTMP_MODULE} missing: install libnginx-mod-rtmp");
    assert!(Path::new("/dev/shm").is_dir(), "/dev/shm (tmpfs) missing: nginx's HLS files are written there");
    assert!(
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) >= 2,
        "needs 2 CPUs (server on 0, rest on 1)"
    );
    pin_self(AUX_CPU);
    let relay_bin = env!("CARGO_BIN_EXE_relay");
    let dir = std::env::temp_dir().join(format!("hls-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _dir_guard = DirGuard(dir.clone());
    let (_origin, _publisher, origin_port) = common::origin_with_stream(relay_bin, &dir, o.bitrate_kbps, AUX_CPU);

    // One worker thread (inherits the CPU 1 pin) drives the clients while this thread measures.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let env = Env { o: &o, rt, dir: dir.clone(), relay_bin, origin_port };
    let mut servers = vec![Server::Nginx, Server::Relay];
    if o.ll_share > 0.0 {
        servers.push(Server::RelayMix);
    }
    let mut relay_missing: Option<String> = None;
    let mut runs: Vec<Vec<Row>> = Vec::new();
    for run in 0..o.runs {
        // Alternate the order so drift of the machine over a run does not favour one server.
        let order: Vec<Server> = if run % 2 == 0 { servers.clone() } else { servers.iter().rev().copied().collect() };
        let mut rows = Vec::new();
        for &s in &order {
            if s != Server::Nginx && relay_missing.is_some() {
                continue;
            }
            eprintln!("run {}/{}: {} with {} clients ...", run + 1, o.runs, s.name(), o.clients);
            match measure(&env, s, run) {
                Ok(r) => {
                    print_detail(&r);
                    rows.push(r);
                }
                Err(e) if s != Server::Nginx => {
                    eprintln!("  skipping our relay: {e}");
                    relay_missing = Some(e);
                }
                Err(e) => panic!("{e} (see the logs in {})", dir.display()),
            }
        }
        rows.sort_by_key(|r| r.server as u8);
        print_rows(&format!("run {}", run + 1), &rows);
        runs.push(rows);
    }

    // Medians per server over the runs, and the median of the per-run CPU ratios relay/nginx (plain vs plain).
    let all: Vec<&Row> = runs.iter().flatten().collect();
    let mut med = Vec::new();
    for &s in &servers {
        let rs: Vec<&Row> = all.iter().copied().filter(|r| r.server == s).collect();
        let Some(first) = rs.first() else { continue };
        let m = |f: &dyn Fn(&Row) -> f64| median(rs.iter().map(|r| f(r)).collect());
        let mk = |k: Kind| KindSummary {
            p50_ms: m(&|r| r.kind(k).p50_ms),
            p99_ms: m(&|r| r.kind(k).p99_ms),
            count: m(&|r| r.kind(k).count as f64) as u64,
            ..first.kind(k)
        };
        med.push(Row {
            server: s,
            clients: first.clients,
            ll_clients: first.ll_clients,
            started: m(&|r| r.started as f64) as usize,
            cpu_pct: m(&|r| r.cpu_pct),
            cpu_ms_per_viewer_s: m(&|r| r.cpu_ms_per_viewer_s),
            cpu_idle_pct: m(&|r| r.cpu_idle_pct),
            rss_idle_mib: m(&|r| r.rss_idle_mib),
            rss_stream_kib: m(&|r| r.rss_stream_kib),
            tmpfs_kib: m(&|r| r.tmpfs_kib),
            rss_per_viewer_kib: m(&|r| r.rss_per_viewer_kib),
            segments_listed: first.segments_listed,
            req_s: m(&|r| r.req_s),
            kinds: Kind::ALL.iter().map(|&k| mk(k)).collect(),
            delays: DelaySummary {
                matched: m(&|r| r.delays.matched as f64) as u64,
                p50_ms: m(&|r| r.delays.p50_ms),
                p99_ms: m(&|r| r.delays.p99_ms),
                max_ms: m(&|r| r.delays.max_ms),
                resolution_ms: m(&|r| r.delays.resolution_ms),
                first_p50_ms: m(&|r| r.delays.first_p50_ms),
                first_p99_ms: m(&|r| r.delays.first_p99_ms),
                spread_p50_ms: m(&|r| r.delays.spread_p50_ms),
                ..first.delays
            },
            early: m(&|r| r.early as f64) as u64,
            errors: m(&|r| r.errors as f64) as u64,
            loadgen_pct: m(&|r| r.loadgen_pct),
            observer_polls: first.observer_polls,
        });
    }
    println!(
        "\none stream at ~{} kbit/s, server pinned to CPU {SERVER_CPU}, {} s window, {} clients ({} connecting/s), \
         observer every {} ms; CPU % is of one core",
        o.bitrate_kbps, o.secs, o.clients, o.connect_rate, o.observer_ms
    );
    print_rows(&format!("median of {} runs", o.runs), &med);
    let ratio = |f: &dyn Fn(&Row) -> f64| -> Vec<f64> {
        runs.iter()
            .filter_map(|rows| {
                let n = rows.iter().find(|r| r.server == Server::Nginx)?;
                let r = rows.iter().find(|r| r.server == Server::Relay)?;
                Some(f(r) / f(n))
            })
            .collect()
    };
    let ratios = ratio(&|r| r.cpu_ms_per_viewer_s);
    let marginal = ratio(&|r| r.marginal());
    if ratios.is_empty() {
        println!("\nno ratio ours/nginx: {}", relay_missing.as_deref().unwrap_or("the relay rows did not run"));
    } else {
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "\nCPU per viewer ours/nginx (plain clients, same run): median {:.2} (runs: {})",
            median(ratios.clone()),
            shown.join(", ")
        );
        let shown: Vec<String> = marginal.iter().map(|r| format!("{r:.2}")).collect();
        println!("above the no-viewer cost: median {:.2} (runs: {})", median(marginal.clone()), shown.join(", "));
    }
}
