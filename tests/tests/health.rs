//! Issue 4 end to end, in network namespaces with real clients: health checks (tcp, http, rtmp against nginx-rtmp,
//! rtsp against lab-rtsp), purge of a dead real's flows, all reals down, drain, 3:1 weights, metrics, and restarts
//! (kill -9, --keep-on-exit, --cleanup) that keep flows. Run as root, serially: `--test-threads=1`.
use lb_lab::bin_path;
use lb_tests::health::{count_events, events, health, reals, scrape, start_stream, stream_real, wait_within, BpfMount};
use lb_tests::{context, real_ip, require_root, LbLab, Mode, VIP};
use std::time::{Duration, Instant};

/// Check timing used by the tests: fast enough to test, slow enough for a loaded 2-core machine.
const INTERVAL_MS: u64 = 500;
const TIMEOUT_MS: u64 = 300;
const RISE: u64 = 2;
const FALL: u64 = 3;
/// Scheduling, polling and process start-up on top of the check arithmetic.
const SLACK_MS: u64 = 800;

fn svc80() -> String {
    format!("{VIP}:80")
}

fn check_toml(kind: &str, extra: &str) -> String {
    format!(
        "[service.check]\nkind = \"{kind}\"\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"{TIMEOUT_MS}ms\"\nrise = {RISE}\nfall = {FALL}\n{extra}"
    )
}

/// Writes lb.toml with VIP:port over `reals` (index, weight) and the given `[service.check]` section.
fn write_service(l: &LbLab, port: u16, reals: &[(usize, u32)], check: &str) -> String {
    let mut s = format!("[[service]]\nvip = \"{VIP}:{port}\"\nproto = \"tcp\"\n{check}");
    for (i, w) in reals {
        s.push_str(&format!("[[service.real]]\naddr = \"{}\"\nweight = {w}\n", real_ip(*i)));
    }
    let path = l.lab.dir.join("lb.toml");
    std::fs::write(&path, s).unwrap();
    path.display().to_string()
}

fn restart_httpd(l: &mut LbLab, i: usize, log: &str) {
    let httpd = bin_path("lab-httpd");
    let ns = l.lab.real(i);
    let name = format!("r{}", i + 1);
    context(l.lab.spawn(&ns, log, &[httpd.to_str().unwrap(), "--name", &name, "--port", "80"]), "start httpd");
    context(l.lab.wait_port(&ns, &real_ip(i), 80), "httpd listens");
}

fn all_up(l: &LbLab, svc: &str, n: usize) -> bool {
    (0..n).all(|i| health(l, svc, &real_ip(i)) == "up")
}

/// Stop a real's server: it is down within interval x fall + timeout and gets no new connection; start it again:
/// it is back within interval x rise. Then every real down: loud, and the kernel refuses the VIP at once.
#[test]
fn http_check_takes_a_stopped_server_out_and_back() {
    require_root();
    let mut l = context(LbLab::new(Mode::Skb, 3), "lab");
    let cfg = write_service(&l, 80, &[(0, 1), (1, 1), (2, 1)], &check_toml("http", "path = \"/\"\nexpect = 200\n"));
    context(l.start_lbd(&["--config", &cfg]), "lbd");
    let svc = svc80();
    context(wait_within(Duration::from_secs(5), "all reals up", || all_up(&l, &svc, 3)), "first checks");

    let r2 = real_ip(1);
    let pid = l.lab.pid_of("httpd-r2.log").expect("r2's httpd runs");
    let t0 = Instant::now();
    context(l.lab.stop(pid, libc::SIGKILL).map(|_| ()), "stop r2's server");
    context(wait_within(Duration::from_secs(10), "r2 down", || health(&l, &svc, &r2) == "down"), "r2 down");
    let took = t0.elapsed();
    let limit = Duration::from_millis(INTERVAL_MS * FALL + TIMEOUT_MS + SLACK_MS);
    assert!(took <= limit, "r2 marked down after {took:?}, limit {limit:?}");
    let spread = context(l.spread(30), "curl with r2 down");
    assert_eq!(spread.get("r2"), None, "a new connection reached the down real: {spread:?}");
    assert_eq!(spread.get("FAIL"), None, "{spread:?}");
    assert_eq!(reals(&l)[&(svc.clone(), r2.clone())]["state"], "down");

    restart_httpd(&mut l, 1, "httpd-r2-again.log");
    let t1 = Instant::now();
    context(wait_within(Duration::from_secs(10), "r2 up", || health(&l, &svc, &r2) == "up"), "r2 back");
    let took = t1.elapsed();
    let limit = Duration::from_millis(INTERVAL_MS * RISE + TIMEOUT_MS + SLACK_MS);
    assert!(took <= limit, "r2 back after {took:?}, limit {limit:?}");
    let spread = context(l.spread(45), "curl with r2 back");
    assert!(spread.get("r2").copied().unwrap_or(0) > 0, "r2 gets no connection after coming back: {spread:?}");

    // One event per change, not per check.
    let evs = events(&l);
    assert_eq!(count_events(&evs, "real-down", Some(&r2)), 1, "{evs:#?}");
    assert_eq!(count_events(&evs, "real-up", Some(&r2)), 2, "first pass and recovery: {evs:#?}");
    assert_eq!(l.lbd_log().matches("real down").count(), 1, "{}", l.lbd_log());
    let text = l.lbctl_ok(&["events"]);
    assert!(text.contains("real-down") && text.contains("http check failed"), "{text}");

    // Every real down: an event, a loud log line, list says so, and the kernel resets connections to the VIP.
    for log in ["httpd-r1.log", "httpd-r2-again.log", "httpd-r3.log"] {
        let pid = l.lab.pid_of(log).expect("httpd runs");
        context(l.lab.stop(pid, libc::SIGKILL).map(|_| ()), "stop httpd");
    }
    context(
        wait_within(Duration::from_secs(10), "service down", || count_events(&events(&l), "service-down", None) == 1),
        "service-down event",
    );
    assert!(l.lbd_log().contains("SERVICE HAS NO USABLE REAL"), "{}", l.lbd_log());
    assert!(l.lbctl_ok(&["list"]).contains("NO USABLE REAL"));
    let t2 = Instant::now();
    let out =
        l.lab.exec_status(&l.lab.client(), &["curl", "-sS", "--max-time", "5", &format!("http://{VIP}/")]).unwrap();
    assert_eq!(out.status.code(), Some(7), "curl should fail to connect (reset by the kernel): {out:?}");
    assert!(t2.elapsed() < Duration::from_secs(2), "the VIP should be refused at once, took {:?}", t2.elapsed());
}

/// A real whose host dies (no RST from it) goes down by timeouts, and its flows are purged: a client that keeps
/// sending on an established connection is reset within seconds instead of hanging.
#[test]
fn dead_real_is_taken_out_and_its_flows_purged() {
    require_root();
    let mut l = context(LbLab::new(Mode::Skb, 3), "lab");
    let cfg = write_service(&l, 80, &[(0, 1), (1, 1), (2, 1)], &check_toml("tcp", ""));
    context(l.start_lbd(&["--config", &cfg]), "lbd");
    let svc = svc80();
    context(wait_within(Duration::from_secs(5), "all reals up", || all_up(&l, &svc, 3)), "first checks");
    // Drain the others so the long connection surely lands on r2, then undrain them.
    for i in [0, 2] {
        l.lbctl_ok(&["drain", &svc, &real_ip(i)]);
    }
    let script = format!(
        "exec 3<>/dev/tcp/{VIP}/80; printf 'GET /stream?secs=60 HTTP/1.0\\r\\n\\r\\n' >&3; \
         head -c 5 <&3 >/dev/null; echo OPEN; while printf x >&3 2>/dev/null; do sleep 0.2; done; echo CLOSED"
    );
    let client = l.lab.client();
    let pid = context(l.lab.spawn(&client, "writer.log", &["bash", "-c", &script]), "writer");
    context(wait_within(Duration::from_secs(5), "writer open", || l.lab.log("writer.log").contains("OPEN")), "open");
    for i in [0, 2] {
        l.lbctl_ok(&["undrain", &svc, &real_ip(i)]);
    }
    let r2 = real_ip(1);
    assert!(reals(&l)[&(svc.clone(), r2.clone())]["active_flows"].as_u64().unwrap() >= 1, "{:?}", l.list_json());

    let t0 = Instant::now();
    context(l.lab.ip(&l.lab.real(1), &["link", "set", "eth0", "down"]).map(|_| ()), "r2's link down");
    context(wait_within(Duration::from_secs(10), "r2 down", || health(&l, &svc, &r2) == "down"), "r2 down");
    let took = t0.elapsed();
    let limit = Duration::from_millis(INTERVAL_MS * FALL + TIMEOUT_MS + SLACK_MS);
    assert!(took <= limit, "dead r2 marked down after {took:?}, limit {limit:?}");
    context(l.lab.wait(pid, Duration::from_secs(5)).map(|_| ()), "the writer is reset, not left hanging");
    assert!(l.lab.log("writer.log").contains("CLOSED"), "{}", l.lab.log("writer.log"));
    let evs = events(&l);
    let down = evs.iter().find(|e| e["kind"] == "real-down").expect("real-down event");
    assert!(down["reason"].as_str().unwrap().contains("1 flow(s) purged"), "{down}");
    let spread = context(l.spread(20), "curl with r2 dead");
    assert_eq!(spread.get("r2"), None, "{spread:?}");
    assert_eq!(spread.get("FAIL"), None, "{spread:?}");
}

/// Drain: an established connection continues to its end while no new connection reaches the drained real;
/// undrain restores it with its weight.
#[test]
fn drain_keeps_established_flows_and_takes_no_new_one() {
    require_root();
    let mut l = context(LbLab::new(Mode::Native, 2), "lab");
    let cfg = context(l.write_config(&[0, 1]), "config");
    context(l.start_lbd(&["--config", &cfg]), "lbd");
    let svc = svc80();
    let pid = context(start_stream(&mut l, 5, "stream.log"), "stream");
    let name = context(stream_real(&l, "stream.log"), "stream's real");
    let idx: usize = name.trim_start_matches('r').parse::<usize>().unwrap() - 1;
    let real = real_ip(idx);
    l.lbctl_ok(&["edit-real", &svc, &real, "--weight", "4"]);
    let msg = l.lbctl_ok(&["drain", &svc, &real]);
    assert!(msg.contains("drained"), "{msg}");
    let r = &reals(&l)[&(svc.clone(), real.clone())];
    assert_eq!(
        (r["drained"].as_bool(), r["state"].as_str(), r["weight"].as_u64()),
        (Some(true), Some("drained"), Some(4))
    );
    assert!(r["active_flows"].as_u64().unwrap() >= 1, "{r}");
    // The text table shows the drained real's row as drained, with the weight kept: `-> ADDR Route 4 drained ... yes`.
    let table = l.lbctl_ok(&["list"]);
    let row = table.lines().find(|line| line.contains(&format!("-> {real} "))).unwrap_or_else(|| panic!("{table}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[2..7], ["Route", "4", "drained", "unknown", "yes"], "{row}");
    let spread = context(l.spread(40), "curl while drained");
    assert_eq!(spread.get(&name), None, "a new connection reached the drained real: {spread:?}");
    assert_eq!(spread.get("FAIL"), None, "{spread:?}");
    let st = context(l.lab.wait(pid, Duration::from_secs(20)), "stream ends");
    assert!(st.success(), "the established stream broke: {}", l.lab.log("stream.log"));
    assert!(l.lab.log("stream.log").contains(&format!("{name} done")), "{}", l.lab.log("stream.log"));
    // The drain survives a restart through the state file, and undrain brings the weight back.
    assert!(std::fs::read_to_string(l.state_file()).unwrap().contains("drained = true"));
    l.lbctl_ok(&["undrain", &svc, &real]);
    let r = &reals(&l)[&(svc.clone(), real.clone())];
    assert_eq!((r["drained"].as_bool(), r["state"].as_str(), r["weight"].as_u64()), (Some(false), Some("up"), Some(4)));
    let spread = context(l.spread(40), "curl after undrain");
    assert!(spread.get(&name).copied().unwrap_or(0) > 20, "weight 4 of 5 should take most: {spread:?}");
    let evs = events(&l);
    assert_eq!(count_events(&evs, "real-drained", Some(&real)), 1);
    assert_eq!(count_events(&evs, "real-undrained", Some(&real)), 1);
    assert_eq!(count_events(&evs, "weight-changed", Some(&real)), 1);
}

/// Weights 3:1 over 800 new connections land within 5 points of 75/25.
#[test]
fn weights_three_to_one_shape_new_flows() {
    require_root();
    let l = context(LbLab::new(Mode::Skb, 2), "lab");
    let cfg = write_service(&l, 80, &[(0, 3), (1, 1)], "");
    let mut l = l;
    context(l.start_lbd(&["--config", &cfg]), "lbd");
    let n = 800;
    let spread = context(l.spread(n), "curl");
    assert_eq!(spread.get("FAIL"), None, "{spread:?}");
    let r1 = spread.get("r1").copied().unwrap_or(0) as f64 * 100.0 / n as f64;
    assert!((70.0..=80.0).contains(&r1), "r1 got {r1:.1}% of new flows, want 75 +- 5: {spread:?}");
}

/// The metrics endpoint parses as Prometheus text and its counters move with traffic.
#[test]
fn metrics_parse_and_move_with_traffic() {
    require_root();
    let mut l = context(LbLab::new(Mode::Skb, 2), "lab");
    let cfg = write_service(&l, 80, &[(0, 1), (1, 1)], &check_toml("tcp", ""));
    let addr = "127.0.0.1:9101";
    context(l.start_lbd(&["--config", &cfg, "--metrics", addr]), "lbd");
    let svc = svc80();
    context(wait_within(Duration::from_secs(5), "reals up", || all_up(&l, &svc, 2)), "first checks");
    let before = svc::metrics::parse(&context(scrape(&l, addr), "scrape")).unwrap_or_else(|e| panic!("{e}"));
    let text = context(scrape(&l, addr), "scrape");
    for line in text.lines().filter(|l| l.starts_with("# TYPE") && l.ends_with("counter")) {
        assert!(line.split_whitespace().nth(2).unwrap().ends_with("_total"), "{line}");
    }
    for name in [
        "lbd_service_packets_total",
        "lbd_service_bytes_total",
        "lbd_service_new_flows_total",
        "lbd_real_packets_total",
        "lbd_real_bytes_total",
        "lbd_real_new_flows_total",
        "lbd_real_up",
        "lbd_real_check_duration_seconds",
        "lbd_real_checks_total",
        "lbd_service_up",
        "lbd_conn_table_entries",
        "lbd_conn_table_capacity",
        "lbd_packets_total",
        "lbd_events_total",
    ] {
        assert!(before.contains_key(name), "metric {name} missing:\n{text}");
    }
    let sum = |m: &svc::metrics::Parsed, name: &str| -> f64 {
        m.get(name).map(|v| v.iter().map(|(_, x)| x).sum()).unwrap_or(0.0)
    };
    assert_eq!(sum(&before, "lbd_real_up"), 2.0);
    assert!(before["lbd_real_check_duration_seconds"].iter().all(|(_, v)| *v > 0.0 && *v < 0.3));
    let spread = context(l.spread(20), "curl");
    assert_eq!(spread.get("FAIL"), None, "{spread:?}");
    let after = svc::metrics::parse(&context(scrape(&l, addr), "scrape")).unwrap_or_else(|e| panic!("{e}"));
    let moved = |name: &str| sum(&after, name) - sum(&before, name);
    assert!(moved("lbd_service_new_flows_total") >= 20.0, "{}", moved("lbd_service_new_flows_total"));
    assert!(moved("lbd_real_new_flows_total") >= 20.0);
    assert!(moved("lbd_service_packets_total") >= 60.0, "{}", moved("lbd_service_packets_total"));
    assert!(moved("lbd_service_bytes_total") >= 60.0 * 54.0);
    // Every real passed its first check, and checks go on: the pass counters move while nothing else happens.
    for (labels, v) in &before["lbd_real_checks_total"] {
        if labels.contains(&("result".to_string(), "pass".to_string())) {
            assert!(*v >= 1.0, "{labels:?} {v}");
        }
    }
    context(
        wait_within(Duration::from_secs(5), "more checks", || {
            let now = svc::metrics::parse(&scrape(&l, addr).unwrap_or_default()).unwrap_or_default();
            sum(&now, "lbd_real_checks_total") >= sum(&before, "lbd_real_checks_total") + 2.0
        }),
        "checks keep running",
    );
    // Scrapes may reuse a count of the connection table up to 200 ms old: the 20 flows show by the next one.
    context(
        wait_within(Duration::from_secs(2), "20 flows counted", || {
            let now = svc::metrics::parse(&scrape(&l, addr).unwrap_or_default()).unwrap_or_default();
            sum(&now, "lbd_conn_table_entries") >= 20.0
        }),
        "connection-table count",
    );
    assert_eq!(sum(&after, "lbd_conn_table_capacity"), 65536.0);
    // A second lbd cannot take the metrics port, and says so before touching anything.
    let lbd = bin_path("lbd");
    let out = l
        .lab
        .exec_status(
            &l.lab.lb(),
            &[
                lbd.to_str().unwrap(),
                "--iface",
                "eth0",
                "--no-pin",
                "--socket",
                "/tmp/lbd-other.sock",
                "--metrics",
                addr,
            ],
        )
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot serve metrics on"), "{out:?}");
}

/// kill -9 lbd during a transfer: the transfer completes, new connections work with no lbd, and a restarted lbd
/// takes over the pinned link and maps (the flow is still in its table). A plain SIGTERM detaches and removes the
/// pins; --keep-on-exit keeps forwarding until `lbd --cleanup`.
#[test]
fn kill_9_and_restarts_keep_flows() {
    require_root();
    let mut l = context(LbLab::new(Mode::Native, 3), "lab");
    let bpf = context(BpfMount::new(&l), "bpffs");
    let pins = bpf.pin_dir();
    let cfg = context(l.write_config(&[0, 1, 2]), "config");
    context(l.start_lbd(&["--config", &cfg, "--pin-dir", &pins]), "lbd");
    for name in ["link", "CONN_TABLE", "CH_RINGS", "REALS", "VIPS"] {
        assert!(std::path::Path::new(&pins).join(name).exists(), "{name} not pinned");
    }
    let pid = context(start_stream(&mut l, 6, "stream.log"), "stream");
    let name = context(stream_real(&l, "stream.log"), "stream's real");
    context(l.stop_lbd(libc::SIGKILL), "kill -9 lbd");
    let spread = context(l.spread(20), "curl with no lbd");
    assert_eq!(spread.get("FAIL"), None, "new connections failed while no lbd ran: {spread:?}");
    assert_eq!(spread.values().sum::<usize>(), 20);
    // Restart while the transfer still runs: the new lbd adopts the link and the connection table.
    context(l.start_lbd(&["--pin-dir", &pins]), "lbd restart");
    assert!(l.lbd_log().contains("took over the pinned XDP link"), "{}", l.lbd_log());
    let idx: usize = name.trim_start_matches('r').parse::<usize>().unwrap() - 1;
    let flows = reals(&l)[&(svc80(), real_ip(idx))]["active_flows"].as_u64().unwrap();
    assert!(flows >= 1, "the restarted lbd lost the connection table");
    let st = context(l.lab.wait(pid, Duration::from_secs(20)), "stream ends");
    assert!(st.success() && l.lab.log("stream.log").contains(&format!("{name} done")), "{}", l.lab.log("stream.log"));
    let spread = context(l.spread(20), "curl after restart");
    assert_eq!(spread.get("FAIL"), None, "{spread:?}");

    // --keep-on-exit: a deliberate stop for an upgrade keeps forwarding.
    context(l.stop_lbd(libc::SIGTERM), "stop");
    context(l.start_lbd(&["--pin-dir", &pins, "--keep-on-exit"]), "lbd keep-on-exit");
    let pid = context(start_stream(&mut l, 4, "stream2.log"), "stream 2");
    let name2 = context(stream_real(&l, "stream2.log"), "stream 2's real");
    context(l.stop_lbd(libc::SIGTERM), "SIGTERM with --keep-on-exit");
    assert!(std::path::Path::new(&pins).join("link").exists());
    let spread = context(l.spread(10), "curl after a kept stop");
    assert_eq!(spread.get("FAIL"), None, "{spread:?}");
    let st = context(l.lab.wait(pid, Duration::from_secs(20)), "stream 2 ends");
    assert!(
        st.success() && l.lab.log("stream2.log").contains(&format!("{name2} done")),
        "{}",
        l.lab.log("stream2.log")
    );
    // lbd --cleanup detaches: the VIP is the LB's own address again, and nothing listens on port 80 there.
    let lbd = bin_path("lbd");
    let out = context(l.lab.exec(&l.lab.lb(), &[lbd.to_str().unwrap(), "--cleanup", "--pin-dir", &pins]), "cleanup");
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed link"), "{out:?}");
    assert!(!std::path::Path::new(&pins).exists());
    let out =
        l.lab.exec_status(&l.lab.client(), &["curl", "-sS", "--max-time", "3", &format!("http://{VIP}/")]).unwrap();
    assert_eq!(out.status.code(), Some(7), "still forwarded after --cleanup: {out:?}");
    let out =
        context(l.lab.exec(&l.lab.lb(), &[lbd.to_str().unwrap(), "--cleanup", "--pin-dir", &pins]), "cleanup again");
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing pinned"), "{out:?}");

    // Without --keep-on-exit, SIGTERM detaches and removes the pins.
    context(l.start_lbd(&["--pin-dir", &pins]), "lbd again");
    let spread = context(l.spread(5), "curl after the fresh start");
    assert!(!spread.contains_key("FAIL"), "{spread:?}");
    context(l.stop_lbd(libc::SIGTERM), "plain SIGTERM");
    assert!(!std::path::Path::new(&pins).exists(), "pins left after a plain stop");
    let out =
        l.lab.exec_status(&l.lab.client(), &["curl", "-sS", "--max-time", "3", &format!("http://{VIP}/")]).unwrap();
    assert_eq!(out.status.code(), Some(7), "still forwarded after SIGTERM: {out:?}");
    drop(bpf);
}

fn nginx_rtmp_conf(dir: &std::path::Path) -> String {
    let conf = dir.join("nginx-rtmp.conf");
    let text = format!(
        "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\n\
         error_log {d}/nginx-error.log info;\nevents {{ worker_connections 64; }}\n\
         rtmp {{ server {{ listen 1935; application live {{ live on; }} }} }}\n",
        d = dir.display()
    );
    std::fs::write(&conf, text).unwrap();
    conf.display().to_string()
}

/// An rtmp check against nginx-rtmp and an rtsp check against lab-rtsp pass, and fail when the server is gone.
#[test]
fn rtmp_and_rtsp_checks_follow_real_servers() {
    require_root();
    let mut l = context(LbLab::new(Mode::Skb, 2), "lab");
    let dir = l.lab.dir.clone();
    let conf = nginx_rtmp_conf(&dir);
    let r1 = l.lab.real(0);
    let nginx = context(
        l.lab.spawn(
            &r1,
            "nginx.log",
            &["nginx", "-c", &conf, "-p", dir.to_str().unwrap(), "-e", &format!("{}/nginx-error.log", dir.display())],
        ),
        "nginx-rtmp on r1",
    );
    context(l.lab.wait_port(&r1, &real_ip(0), 1935), "nginx-rtmp listens");
    let r2 = l.lab.real(1);
    let rtsp = bin_path("lab-rtsp");
    let rtsp_pid = context(l.lab.spawn(&r2, "rtsp.log", &[rtsp.to_str().unwrap(), "--port", "554"]), "lab-rtsp on r2");
    context(l.lab.wait_port(&r2, &real_ip(1), 554), "lab-rtsp listens");
    context(l.start_lbd(&[]), "lbd");
    let rtmp_svc = format!("{VIP}:1935");
    let rtsp_svc = format!("{VIP}:554");
    let timing = ["--check-interval", "500ms", "--check-timeout", "300ms", "--check-rise", "2", "--check-fall", "3"];
    let mut a = vec!["add-service", rtmp_svc.as_str(), "--check", "rtmp"];
    a.extend(timing);
    l.lbctl_ok(&a);
    let mut a = vec!["add-service", rtsp_svc.as_str(), "--check", "rtsp"];
    a.extend(timing);
    l.lbctl_ok(&a);
    // Each server runs on one real only: the other real fails the check of that service.
    for s in [&rtmp_svc, &rtsp_svc] {
        for i in 0..2 {
            l.lbctl_ok(&["add-real", s, &real_ip(i)]);
        }
    }
    context(
        wait_within(Duration::from_secs(5), "checks settle", || {
            health(&l, &rtmp_svc, &real_ip(0)) == "up"
                && health(&l, &rtmp_svc, &real_ip(1)) == "down"
                && health(&l, &rtsp_svc, &real_ip(1)) == "up"
                && health(&l, &rtsp_svc, &real_ip(0)) == "down"
        }),
        &format!("rtmp/rtsp health: {:#?}", l.list_json()),
    );
    let list = reals(&l);
    assert_eq!(list[&(rtmp_svc.clone(), real_ip(0))]["last_check"], "S0+S1");
    assert_eq!(list[&(rtsp_svc.clone(), real_ip(1))]["last_check"], "200");
    assert!(l.lbctl_ok(&["list"]).contains("rtmp 500ms/300ms rise 2 fall 3"));
    // A real RTSP client through the VIP reaches lab-rtsp on r2 (the only usable real).
    let out = context(
        l.lab.exec(&l.lab.client(), &["curl", "-sS", "-i", "--max-time", "3", &format!("rtsp://{VIP}:554/")]),
        "curl rtsp OPTIONS through the VIP",
    );
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(reply.starts_with("RTSP/1.0 200 OK") && reply.contains("Public: OPTIONS, DESCRIBE"), "{reply:?}");
    context(l.lab.stop(nginx, libc::SIGTERM).map(|_| ()), "stop nginx");
    context(l.lab.stop(rtsp_pid, libc::SIGTERM).map(|_| ()), "stop lab-rtsp");
    context(
        wait_within(Duration::from_secs(5), "both down", || {
            health(&l, &rtmp_svc, &real_ip(0)) == "down" && health(&l, &rtsp_svc, &real_ip(1)) == "down"
        }),
        "servers gone",
    );
    let evs = events(&l);
    assert_eq!(count_events(&evs, "service-down", None), 2, "{evs:#?}");
}

/// Bad input for the new commands and flags is refused with a clear message, a non-zero exit, and no change.
#[test]
fn health_bad_input_is_refused_and_changes_nothing() {
    require_root();
    let mut l = context(LbLab::new(Mode::Skb, 2), "lab");
    let cfg = context(l.write_config(&[0]), "config");
    context(l.start_lbd(&["--config", &cfg]), "lbd");
    let svc = svc80();
    let before = l.list_json();
    let state_before = std::fs::read_to_string(l.state_file()).unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["add-service", "10.99.0.100:81", "--check", "icmp"], "unknown kind"),
        (vec!["add-service", "10.99.0.100:81", "--check", "tcp", "--check-path", "/x"], "only apply to --check http"),
        (vec!["add-service", "10.99.0.100:81", "--check-port", "81"], "need --check"),
        (vec!["add-service", "10.99.0.100:81", "--check", "tcp", "--check-interval", "soon"], "bad duration"),
        (vec!["add-service", "10.99.0.100:81", "--check", "tcp", "--check-interval", "10ms"], "below 50ms"),
        (vec!["add-service", "10.99.0.100:81", "--check", "http", "--check-path", "nope"], "must start with /"),
        (vec!["add-service", "10.99.0.100:81", "--check", "tcp", "--check-fall", "0"], "within 1..=100"),
        (vec!["set-check", "10.99.0.100:81", "--check", "tcp"], "unknown service"),
        (vec!["drain", &svc, "10.99.0.12"], "is not in service"),
        (vec!["drain", "10.99.0.100:81", "10.99.0.11"], "unknown service"),
        (vec!["undrain", &svc, "10.99.0"], "bad real address"),
        // Issue 29: addresses that name no host, a removal nobody asked for, a timeout that was not the one used.
        (vec!["add-real", &svc, "10.99.0.0"], "is the network address of 10.99.0.0/24 on eth0"),
        (vec!["add-real", &svc, "10.99.0.255"], "is the broadcast address of 10.99.0.0/24 on eth0"),
        (vec!["add-real", &svc, "10.99.0.100"], "is the VIP of service"),
        (vec!["add-service", "255.255.255.255:85"], "limited broadcast address"),
        (vec!["set-check", &svc], "set-check needs --check KIND"),
        (
            vec!["set-check", &svc, "--check", "tcp", "--check-interval", "2s", "--check-timeout", "5s"],
            "timeout 5s is longer than the interval 2s",
        ),
    ];
    for (args, want) in &cases {
        let out = l.lbctl(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "lbctl {args:?} succeeded");
        assert!(err.contains(want), "lbctl {args:?}: stderr {err:?} lacks {want:?}");
    }
    assert_eq!(l.list_json(), before, "a refused command changed the table");
    assert_eq!(std::fs::read_to_string(l.state_file()).unwrap(), state_before);
    // A reader that has gone (`lbctl list | head -1`): lbctl ends quietly, no panic on EPIPE.
    for cmd in ["list", "events", "stats"] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(bin_path("lbctl"))
            .args(["--socket", &l.socket(), cmd])
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "lbctl {cmd} into a closed pipe: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "lbctl {cmd} into a closed pipe");
    }
    // Global flags go after the subcommand too.
    let out = std::process::Command::new(bin_path("lbctl")).args(["list", "--json", "--socket", &l.socket()]).output();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.unwrap().stdout).unwrap(), before);
    // lbd refuses a pin directory that is not on a bpf filesystem, and a broken check in its config.
    let lbd = bin_path("lbd");
    let out = l
        .lab
        .exec_status(
            &l.lab.lb(),
            &[
                lbd.to_str().unwrap(),
                "--iface",
                "eth0",
                "--socket",
                "/tmp/lbd-x.sock",
                "--pin-dir",
                "/tmp/not-bpffs/lbd",
            ],
        )
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not on a bpf filesystem"), "{out:?}");
    let bad = l.lab.dir.join("bad.toml");
    std::fs::write(&bad, format!("[[service]]\nvip = \"{VIP}:80\"\n[service.check]\nkind = \"tcp\"\nrise = 0\n"))
        .unwrap();
    let out = l
        .lab
        .exec_status(
            &l.lab.lb(),
            &[
                lbd.to_str().unwrap(),
                "--iface",
                "eth0",
                "--no-pin",
                "--socket",
                "/tmp/lbd-y.sock",
                "--config",
                bad.to_str().unwrap(),
            ],
        )
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rise 0"), "{out:?}");
    // A check set at run time shows in list and survives in the state file.
    l.lbctl_ok(&["set-check", &svc, "--check", "http", "--check-path", "/", "--check-interval", "1s"]);
    assert!(std::fs::read_to_string(l.state_file()).unwrap().contains("kind = \"http\""));
    assert_eq!(count_events(&events(&l), "check-changed", None), 1);
}

/// `lbctl add-real` of reals that never answer ARP waits for the resolver (3 s each) in its own request only:
/// meanwhile `lbctl list` is answered and another real's failing check takes it down on time. (lbd used to wait
/// for ARP in the task that owns the maps, stalling both.)
#[test]
fn an_unresolvable_real_delays_no_other_request_or_health_transition() {
    require_root();
    let mut l = context(LbLab::new(Mode::Skb, 2), "lab");
    let cfg = write_service(&l, 80, &[(0, 1), (1, 1)], &check_toml("http", "path = \"/\"\nexpect = 200\n"));
    context(l.start_lbd(&["--config", &cfg]), "lbd");
    let svc = svc80();
    context(wait_within(Duration::from_secs(5), "all reals up", || all_up(&l, &svc, 2)), "first checks");
    // On the lab's subnet, but no host has them: no ARP answer ever comes.
    let ghosts = ["10.99.0.77", "10.99.0.78", "10.99.0.79"];
    let (lbctl, socket) = (bin_path("lbctl"), l.socket());
    let adds = std::thread::spawn(move || {
        ghosts.map(|g| {
            std::process::Command::new(&lbctl)
                .args(["--socket", &socket, "add-real", &format!("{VIP}:80"), g])
                .output()
                .expect("running lbctl")
        })
    });
    // The first add is in flight (its real is listed as unresolved) while list answers.
    context(
        wait_within(Duration::from_secs(2), "the first ghost listed", || {
            reals(&l).contains_key(&(svc.clone(), ghosts[0].into()))
        }),
        "add-real in flight",
    );
    assert_eq!(reals(&l)[&(svc.clone(), ghosts[0].into())]["state"], "unresolved");
    assert!(!adds.is_finished(), "list was answered only after the add-reals (9 s of ARP waits) were done");
    // r2's server dies: it is down within interval x fall + timeout, while the add-reals still wait.
    let r2 = real_ip(1);
    let pid = l.lab.pid_of("httpd-r2.log").expect("r2's httpd runs");
    let t0 = Instant::now();
    context(l.lab.stop(pid, libc::SIGKILL).map(|_| ()), "stop r2's server");
    context(wait_within(Duration::from_secs(10), "r2 down", || health(&l, &svc, &r2) == "down"), "r2 down");
    let took = t0.elapsed();
    let limit = Duration::from_millis(INTERVAL_MS * FALL + TIMEOUT_MS + SLACK_MS);
    assert!(took <= limit, "r2 marked down after {took:?}, limit {limit:?}, with add-reals pending");
    assert!(!adds.is_finished(), "the add-reals finished before r2 went down: the test proved nothing");
    for (g, out) in ghosts.iter().zip(adds.join().expect("add-real thread")) {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "add-real {g}: {text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("not resolved yet"), "add-real {g}: {text}");
        assert_eq!(reals(&l)[&(svc.clone(), g.to_string())]["state"], "unresolved");
    }
    // The flows go to r1 alone: the ghosts take none, r2 is down.
    let spread = context(l.spread(10), "curl");
    assert_eq!(spread.get("r1"), Some(&10), "{spread:?}");
}
