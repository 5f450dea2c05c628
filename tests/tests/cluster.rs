//! Several LB nodes behind a router that spreads flows over them by ECMP, with BIRD 2 as the routing daemon in the
//! router and in every LB namespace: lbd's route health injection, maintenance, and a node failure after the real
//! set changed, which moves flows to the other node without moving them between reals (flow-state sync).
use lb_lab::{bin_path, LB_IP};
use lb_tests::*;
use std::collections::BTreeMap;
use std::time::Duration;

const LB2_IP: &str = "10.99.0.3";
const ROUTER_IP: &str = "10.99.0.1";
const TABLE: &str = "200";

/// The router's BIRD: BGP with both LB nodes (short timers, so a dead node is noticed within seconds), and the
/// VIP routes they announce merged into one multipath kernel route.
fn router_conf() -> String {
    let mut c = format!(
        "router id {ROUTER_IP};\nprotocol device {{ scan time 1; }}\n\
         protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths yes; }}\n"
    );
    for (name, ip) in [("lb1", LB_IP), ("lb2", LB2_IP)] {
        c.push_str(&format!(
            "protocol bgp {name} {{ local {ROUTER_IP} as 65000; neighbor {ip} as 65001; hold time 3; \
             keepalive time 1; connect retry time 1; ipv4 {{ import all; export none; }}; }}\n"
        ));
    }
    c
}

/// An LB node's BIRD: learns the routes lbd keeps in table 200 and exports exactly those to the router.
fn lb_conf(ip: &str) -> String {
    format!(
        "router id {ip};\nprotocol device {{ scan time 1; }}\n\
         protocol kernel vips {{ kernel table {TABLE}; learn; scan time 1; ipv4 {{ import all; export none; }}; }}\n\
         protocol bgp uplink {{ local {ip} as 65001; neighbor {ROUTER_IP} as 65000; hold time 3; keepalive time 1; \
         connect retry time 1; ipv4 {{ import none; export where proto = \"vips\"; }}; }}\n"
    )
}

/// Next hops of the router's route to the VIP.
fn next_hops(l: &LbLab) -> Vec<String> {
    let rt = l.lab.ns("rt");
    let out = l.lab.ip(&rt, &["route", "show", VIP]).map(|o| String::from_utf8_lossy(&o.stdout).to_string());
    let text = out.unwrap_or_default();
    let mut hops: Vec<String> =
        text.split_whitespace().collect::<Vec<_>>().windows(2).filter(|w| w[0] == "via").map(|w| w[1].into()).collect();
    hops.sort();
    hops
}

fn wait_hops(l: &LbLab, want: &[&str], limit: Duration) -> Duration {
    lb_lab::wait::wait_within(limit, &format!("router next hops {want:?}"), || next_hops(l) == want)
        .unwrap_or_else(|e| panic!("{e}: they are {:?}", next_hops(l)))
}

fn forwarded(l: &LbLab, sock: &str) -> u64 {
    let out = std::process::Command::new(bin_path("lbctl")).args(["--socket", sock, "stats", "--json"]).output();
    let stats: serde_json::Value = serde_json::from_slice(&out.unwrap().stdout).unwrap_or_default();
    let _ = l;
    stats["forwarded"]["packets"].as_u64().unwrap_or(0)
}

#[test]
fn ecmp_over_two_lb_nodes_with_route_health_injection_maintenance_sync_and_a_node_failure() {
    require_root();
    let mut l = context(LbLab::with_options(Mode::Skb, &LabOptions { reals: 4, vip_on_lb: false }), "lab");
    let lb2 = context(l.lab.add_host("lb2", LB2_IP, "fd00:99::3"), "second LB node");
    let client = context(l.lab.add_routed_client(1500), "router and client");
    let rt = l.lab.ns("rt");
    // The router hashes flows over the next hops by their 5-tuple.
    context(l.lab.exec(&rt, &["sysctl", "-q", "-w", "net.ipv4.fib_multipath_hash_policy=1"]), "L4 ECMP hash");
    let cfg = context(l.write_config(&[0, 1, 2]), "config");
    let seed = l.lab.dir.join("seed");
    std::fs::write(&seed, "5f3a91c2\n").unwrap();
    let seed = seed.to_str().unwrap().to_string();
    let key = l.lab.dir.join("sync.key");
    std::fs::write(&key, "a shared secret for the lab's sync\n").unwrap();
    let key = key.to_str().unwrap().to_string();
    let common = ["--config", &cfg, "--announce-table", TABLE, "--hash-seed-file", &seed, "--sync-key-file", &key];
    let (sync1, sync2) = (format!("{LB_IP}:7946"), format!("{LB2_IP}:7946"));
    let mut args1 = common.to_vec();
    args1.extend_from_slice(&["--sync-listen", &sync1, "--sync-peer", &sync2]);
    context(l.start_lbd(&args1), "lbd on lb1");
    let sock2 = l.lab.dir.join("lbd2.sock").display().to_string();
    let lbd = bin_path("lbd");
    let mut args2 = vec![lbd.to_str().unwrap(), "--iface", "eth0", "--xdp-mode", "skb", "--no-pin", "--socket", &sock2];
    args2.extend_from_slice(&common);
    args2.extend_from_slice(&["--sync-listen", &sync2, "--sync-peer", &sync1]);
    context(l.lab.spawn_ready(&lb2, "lbd2.log", &args2, "lbd ready", Duration::from_secs(30)), "lbd on lb2");
    // BIRD everywhere, each with its own control socket.
    for (ns, name, conf) in
        [(rt.clone(), "rt", router_conf()), (l.lab.lb(), "lb1", lb_conf(LB_IP)), (lb2.clone(), "lb2", lb_conf(LB2_IP))]
    {
        let path = l.lab.dir.join(format!("bird-{name}.conf"));
        std::fs::write(&path, conf).unwrap();
        let ctl = l.lab.dir.join(format!("bird-{name}.ctl"));
        let args = ["bird", "-f", "-c", path.to_str().unwrap(), "-s", ctl.to_str().unwrap()];
        context(l.lab.spawn(&ns, &format!("bird-{name}.log"), &args), "bird");
    }
    let both = [LB_IP, LB2_IP];
    let took = wait_hops(&l, &both, Duration::from_secs(20));
    eprintln!("both LB nodes announced the VIP; the router had 2 next hops after {took:?}");

    // Many connections: spread over both nodes, and every real answers.
    let url = format!("http://{VIP}/");
    let script = format!("for i in $(seq 60); do curl -sS --max-time 3 {url} || echo FAIL; done");
    let out = context(l.lab.exec(&client, &["bash", "-c", &script]), "curl loop");
    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        *spread.entry(line.trim().into()).or_default() += 1;
    }
    assert!(!spread.contains_key("FAIL"), "{spread:?}");
    assert_eq!(spread.len(), 3, "every real of the service answers: {spread:?}");
    let (f1, f2) = (forwarded(&l, &l.socket()), forwarded(&l, &sock2));
    assert!(f1 > 0 && f2 > 0, "ECMP used one node only: lb1 {f1}, lb2 {f2} packets");

    // Maintenance of lb1: its route goes, new connections still work through lb2; off brings it back.
    l.lbctl_ok(&["maintenance", "on"]);
    wait_hops(&l, &[LB2_IP], Duration::from_secs(10));
    let stats = l.lbctl_ok(&["stats"]);
    assert!(stats.contains("(maintenance): none"), "{stats}");
    let out = context(l.lab.exec(&client, &["bash", "-c", &script.replace("seq 60", "seq 10")]), "curl in maintenance");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("FAIL"));
    l.lbctl_ok(&["maintenance", "off"]);
    wait_hops(&l, &both, Duration::from_secs(10));

    // Every real down in lb2's view (its check probes a port nothing listens on): lb2 withdraws, and clients are
    // served through lb1 alone; its check fixed, it announces again.
    let lbctl2 = |args: &[&str]| {
        let out =
            std::process::Command::new(bin_path("lbctl")).arg("--socket").arg(&sock2).args(args).output().unwrap();
        assert!(out.status.success(), "lbctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let svc = format!("{VIP}:80");
    lbctl2(&[
        "set-check",
        &svc,
        "--check",
        "tcp",
        "--check-port",
        "9999",
        "--check-interval",
        "300ms",
        "--check-timeout",
        "200ms",
    ]);
    wait_hops(&l, &[LB_IP], Duration::from_secs(10));
    let out = context(l.lab.exec(&client, &["bash", "-c", &script.replace("seq 60", "seq 20")]), "curl via lb1");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("FAIL"), "{}", String::from_utf8_lossy(&out.stdout));
    lbctl2(&["set-check", &svc, "--check", "none"]);
    wait_hops(&l, &both, Duration::from_secs(10));

    // A forged sync datagram (garbage, or a peer with another key) is refused and counted, and inserts nothing.
    let forged = format!(
        "printf 'LBS1garbage-that-is-not-a-sync-datagram-at-all-xxxxxxxxxxxxxxxxxxxxx' > /dev/udp/{LB_IP}/7946"
    );
    context(l.lab.exec(&client, &["bash", "-c", &forged]), "forged datagram");
    let refused = |sock: &str| -> u64 {
        let out = std::process::Command::new(bin_path("lbctl")).args(["--socket", sock, "stats", "--json"]).output();
        let stats: serde_json::Value = serde_json::from_slice(&out.unwrap().stdout).unwrap_or_default();
        stats["sync"]["dropped_auth"].as_u64().unwrap_or(0)
    };
    context(wait_for(|| refused(&l.socket()) >= 1, "the forged datagram counted"), "sync auth");
    let stats = l.lbctl_ok(&["stats"]);
    assert!(stats.contains(&format!("flow-state sync with {LB2_IP}:7946")), "{stats}");

    // Long streams through both nodes; then a fourth real joins (the ring changes on both nodes, so a flow that lost
    // its node would be placed elsewhere by Maglev), and lb1 dies (its link down, then its BIRD and lbd). Its flows
    // reach lb2, which learned them by flow-state sync: no stream is reset or moves to another real.
    let mut streams = Vec::new();
    for i in 0..16 {
        let log = format!("stream-{i}.out");
        let pid = context(
            l.lab.spawn(
                &client,
                &log,
                &["curl", "-sS", "--no-buffer", "--max-time", "40", &format!("{url}stream?secs=15")],
            ),
            "stream",
        );
        streams.push((pid, log));
    }
    for (_, log) in &streams {
        context(wait_for(|| l.lab.log(log).contains(" 0\n"), "first line"), "stream start");
    }
    let r4 = real_ip(3);
    l.lbctl_ok(&["add-real", &format!("{VIP}:80"), &r4]);
    let out = std::process::Command::new(bin_path("lbctl"))
        .args(["--socket", &sock2, "add-real", &format!("{VIP}:80"), &r4])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let synced = |sock: &str| -> u64 {
        let out = std::process::Command::new(bin_path("lbctl")).args(["--socket", sock, "stats", "--json"]).output();
        let stats: serde_json::Value = serde_json::from_slice(&out.unwrap().stdout).unwrap_or_default();
        stats["sync"]["inserted"].as_u64().unwrap_or(0)
    };
    context(wait_for(|| synced(&sock2) > 0, "lb2 inserting lb1's flows"), "flow-state sync");
    let before = forwarded(&l, &sock2);
    // The node dies as a host does: its link goes first (no BGP notification, no TCP reset gets out), then its
    // processes. The router notices by the BGP hold timer.
    context(l.lab.ip(&l.lab.lb(), &["link", "set", "eth0", "down"]), "lb1 link down");
    if let Some(pid) = l.lab.pid_of("bird-lb1.log") {
        l.lab.stop(pid, libc::SIGKILL).unwrap();
    }
    l.stop_lbd(libc::SIGKILL).unwrap();
    let gap = wait_hops(&l, &[LB2_IP], Duration::from_secs(15));
    eprintln!("lb1 died: the router withdrew it after {gap:?} (BGP hold time 3 s)");
    assert!(gap >= Duration::from_secs(1), "withdrawn at once: the failure was announced, not detected ({gap:?})");
    for (pid, log) in streams {
        let status = context(l.lab.wait(pid, Duration::from_secs(40)), "stream end");
        let body = l.lab.log(&log);
        let owner = body.split_whitespace().next().unwrap_or("?").to_string();
        assert!(status.success(), "a stream failed across the node failure ({status}): {body}");
        assert!(body.contains(&format!("{owner} done")), "stream did not complete: {body}");
        assert!(body.lines().all(|line| line.starts_with(&owner)), "a stream moved to another real: {body}");
    }
    assert!(forwarded(&l, &sock2) > before, "lb2 took over no traffic");
}

/// The BIRD configs we ship for operators parse with the BIRD the tests use.
#[test]
fn shipped_bird_configs_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bird");
    for f in ["lb-node.conf", "router.conf"] {
        let out = std::process::Command::new("bird").arg("-p").arg("-c").arg(dir.join(f)).output().expect("bird");
        assert!(out.status.success(), "{f}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Anycast: three sites, each an LB node with its own real, announce the same VIP; the core router prefers site 1,
/// then 2, then 3 (BGP local preference). Clients reach site 1; when it dies, new connections reach site 2 within the
/// hold time. Site 3 syncs with a wrong key: site 1 refuses and counts its datagrams.
#[test]
fn anycast_sites_fail_over_in_preference_order_and_a_wrong_sync_key_is_refused() {
    require_root();
    const LB3_IP: &str = "10.99.0.4";
    let mut l = context(LbLab::with_options(Mode::Skb, &LabOptions { reals: 3, vip_on_lb: false }), "lab");
    let lb2 = context(l.lab.add_host("lb2", LB2_IP, "fd00:99::3"), "site 2");
    let lb3 = context(l.lab.add_host("lb3", LB3_IP, "fd00:99::4"), "site 3");
    let client = context(l.lab.add_routed_client(1500), "router and client");
    let rt = l.lab.ns("rt");
    let sites = [(l.lab.lb(), LB_IP, 300), (lb2.clone(), LB2_IP, 200), (lb3.clone(), LB3_IP, 100)];
    let mut router = format!(
        "router id {ROUTER_IP};\nprotocol device {{ scan time 1; }}\nprotocol kernel {{ ipv4 {{ import none; export all; }}; }}\n"
    );
    for (i, (_, ip, pref)) in sites.iter().enumerate() {
        router.push_str(&format!(
            "protocol bgp site{i} {{ local {ROUTER_IP} as 65000; neighbor {ip} as 6500{} ; hold time 3; keepalive time 1; \
             connect retry time 1; ipv4 {{ import filter {{ bgp_local_pref = {pref}; accept; }}; export none; }}; }}\n",
            i + 1
        ));
    }
    let dir = l.lab.dir.clone();
    let (good, bad) = (dir.join("good.key"), dir.join("bad.key"));
    std::fs::write(&good, "the sites' shared secret\n").unwrap();
    std::fs::write(&bad, "a different secret, not the sites'\n").unwrap();
    let lbd = bin_path("lbd");
    for (i, (ns, ip, _)) in sites.iter().enumerate() {
        let cfg = dir.join(format!("site{i}.toml"));
        std::fs::write(&cfg, format!("[[service]]\nvip = \"{VIP}:80\"\n[[service.real]]\naddr = \"{}\"\n", real_ip(i)))
            .unwrap();
        let sock = dir.join(format!("site{i}.sock")).display().to_string();
        // Site 1 sends its flows to sites 2 and 3; site 3 has the wrong key.
        let listen = format!("{ip}:7946");
        let (p1, p2) = match i {
            0 => (format!("{LB2_IP}:7946"), format!("{LB3_IP}:7946")),
            _ => (format!("{LB_IP}:7946"), format!("{LB_IP}:7946")),
        };
        let key = if i == 2 { &bad } else { &good };
        let mut args = vec![lbd.to_str().unwrap(), "--iface", "eth0", "--xdp-mode", "skb", "--no-pin", "--socket"];
        args.extend_from_slice(&[&sock, "--config", cfg.to_str().unwrap(), "--announce-table", TABLE]);
        args.extend_from_slice(&["--sync-listen", &listen, "--sync-peer", &p1, "--sync-peer", &p2]);
        args.extend_from_slice(&["--sync-key-file", key.to_str().unwrap()]);
        context(l.lab.spawn_ready(ns, &format!("site{i}.log"), &args, "lbd ready", Duration::from_secs(30)), "lbd");
        let conf = dir.join(format!("bird-site{i}.conf"));
        std::fs::write(&conf, lb_conf(ip).replace("as 65001", &format!("as 6500{}", i + 1))).unwrap();
        let ctl = dir.join(format!("bird-site{i}.ctl"));
        let a = ["bird", "-f", "-c", conf.to_str().unwrap(), "-s", ctl.to_str().unwrap()];
        context(l.lab.spawn(ns, &format!("bird-site{i}.log"), &a), "bird");
    }
    let conf = dir.join("bird-rt.conf");
    std::fs::write(&conf, router).unwrap();
    let ctl = dir.join("bird-rt.ctl");
    context(
        l.lab.spawn(&rt, "bird-rt.log", &["bird", "-f", "-c", conf.to_str().unwrap(), "-s", ctl.to_str().unwrap()]),
        "bird",
    );
    wait_hops(&l, &[LB_IP], Duration::from_secs(20));
    let ask = |l: &LbLab| -> String {
        let out = l.lab.exec_status(&client, &["curl", "-sS", "--max-time", "1", &format!("http://{VIP}/")]).unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for _ in 0..5 {
        assert_eq!(ask(&l), "r1", "clients reach the preferred site");
    }
    // Site 1 dies; new connections reach site 2 once the router has withdrawn site 1.
    context(l.lab.ip(&l.lab.lb(), &["link", "set", "eth0", "down"]), "site 1 link down");
    let took = context(
        lb_lab::wait::wait_within(Duration::from_secs(15), "site 2 to take over", || ask(&l) == "r2"),
        "anycast failover",
    );
    eprintln!("anycast: site 1 died; new connections reached site 2 after {took:?}");
    assert!(took <= Duration::from_secs(6), "took {took:?}: more than the hold time and a retry");
    // Site 1's flows reached site 2 (same key) and were refused by site 3 (another key), which inserted nothing.
    let stats = |i: usize| -> serde_json::Value {
        let sock = dir.join(format!("site{i}.sock")).display().to_string();
        let out = std::process::Command::new(bin_path("lbctl")).args(["--socket", &sock, "stats", "--json"]).output();
        serde_json::from_slice(&out.unwrap().stdout).unwrap()
    };
    let (s2, s3) = (stats(1), stats(2));
    assert!(s2["sync"]["received"].as_u64().unwrap() > 0, "{s2}");
    assert!(s3["sync"]["dropped_auth"].as_u64().unwrap() > 0, "{s3}");
    assert_eq!(s3["sync"]["received"].as_u64(), Some(0), "{s3}");
    assert_eq!(s3["sync"]["inserted"].as_u64(), Some(0), "{s3}");
}
