//! End-to-end tests of the dataplane features in namespaces with real clients: IPv6 beside IPv4, ICMP for balanced
//! flows (path-MTU discovery through the VIP), persistence, and the flow sweep.
use lb_lab::{real_ip6, VIP6};
use lb_tests::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// `n` new connections from the client to `url`, with extra curl flags; how many each real answered.
fn spread_url(l: &LbLab, ns: &str, url: &str, flags: &str, n: usize) -> BTreeMap<String, usize> {
    let script = format!("for i in $(seq {n}); do curl -sS --max-time 3 {flags} '{url}' || echo FAIL; done");
    let out = context(l.lab.exec(ns, &["bash", "-c", &script]), "curl loop");
    let mut m = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        *m.entry(line.trim().to_string()).or_insert(0) += 1;
    }
    m
}

#[test]
fn ipv6_and_ipv4_services_are_balanced_side_by_side() {
    require_root();
    let mut l = context(LbLab::new(Mode::Native, 3), "lab");
    let cfg = format!(
        "[[service]]\nvip = \"{VIP}:80\"\n[[service.real]]\naddr = \"{}\"\n[[service.real]]\naddr = \"{}\"\n\
         [[service]]\nvip = \"[{VIP6}]:80\"\n[[service.real]]\naddr = \"{}\"\n[[service.real]]\naddr = \"{}\"\n",
        real_ip(0),
        real_ip(1),
        real_ip6(1),
        real_ip6(2)
    );
    let path = l.lab.dir.join("lb.toml");
    std::fs::write(&path, cfg).unwrap();
    context(l.start_lbd(&["--config", path.to_str().unwrap()]), "lbd");
    let client = l.lab.client();
    let v6 = spread_url(&l, &client, &format!("http://[{VIP6}]/"), "-6", 40);
    assert_eq!(v6.get("r2").copied().unwrap_or(0) + v6.get("r3").copied().unwrap_or(0), 40, "{v6:?}");
    assert!(v6["r2"] > 0 && v6["r3"] > 0, "both IPv6 reals answer: {v6:?}");
    let v4 = spread_url(&l, &client, &format!("http://{VIP}/"), "-4", 40);
    assert_eq!(v4.get("r1").copied().unwrap_or(0) + v4.get("r2").copied().unwrap_or(0), 40, "{v4:?}");
    // The IPv6 reals' MACs came from the neighbour table (NDP), and the service counted its own flows.
    let list = l.list_json();
    let svc6 = list.as_array().unwrap().iter().find(|s| s["vip"] == VIP6).expect("IPv6 service listed");
    for r in svc6["reals"].as_array().unwrap() {
        assert!(r["mac"].is_string(), "no MAC learned by NDP: {r}");
        assert!(r["counters"]["new_flows"].as_u64().unwrap() > 0, "per-real counters: {r}");
    }
    assert_eq!(svc6["counters"]["new_flows"].as_u64(), Some(40), "{svc6}");
    // lbctl takes the bracketed form and refuses a real of the other family with the reason.
    let svc = format!("[{VIP6}]:80");
    let out = l.lbctl(&["add-real", &svc, &real_ip(2)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("different IP families"), "{out:?}");
    // Health checks reach IPv6 reals (an http check sends a bracketed Host).
    l.lbctl_ok(&["set-check", &svc, "--check", "http", "--check-interval", "500ms"]);
    let reals6 = || {
        let list = l.list_json();
        list.as_array().unwrap().iter().find(|s| s["vip"] == VIP6).unwrap()["reals"].clone()
    };
    let up = wait_for(
        || reals6().as_array().unwrap().iter().all(|r| r["health"] == "up" && r["last_check"] == "200"),
        "IPv6 reals up by their http check",
    );
    assert!(up.is_ok(), "http check over IPv6: {}", reals6());
    l.lbctl_ok(&["del-real", &svc, &real_ip6(1)]);
    let v6 = spread_url(&l, &client, &format!("http://[{VIP6}]/"), "-6", 10);
    assert_eq!(v6.get("r3").copied(), Some(10), "{v6:?}");
}

/// A client behind a 1280-byte link downloads 5 MB through the VIP: the router's "fragmentation needed" /
/// "packet too big" goes to the VIP, and the LB must hand it to the real that serves the flow.
fn download_through_a_small_mtu(v6: bool) {
    require_root();
    let mut l = context(LbLab::new(Mode::Native, 2), "lab");
    let c2 = context(l.lab.add_routed_client(1280), "router and client");
    let cfg = format!(
        "[[service]]\nvip = \"{VIP}:80\"\n[[service.real]]\naddr = \"{}\"\n[[service.real]]\naddr = \"{}\"\n\
         [[service]]\nvip = \"[{VIP6}]:80\"\n[[service.real]]\naddr = \"{}\"\n[[service.real]]\naddr = \"{}\"\n",
        real_ip(0),
        real_ip(1),
        real_ip6(0),
        real_ip6(1)
    );
    let path = l.lab.dir.join("lb.toml");
    std::fs::write(&path, cfg).unwrap();
    context(l.start_lbd(&["--config", path.to_str().unwrap()]), "lbd");
    let url = if v6 { format!("http://[{VIP6}]/bytes?n=5000000") } else { format!("http://{VIP}/bytes?n=5000000") };
    let out = context(
        l.lab.exec_status(&c2, &["curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{size_download}", &url]),
        "curl",
    );
    let got = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && got == "5000000",
        "download stalled: {got:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_str(&l.lbctl_ok(&["stats", "--json"])).unwrap();
    assert!(stats["icmp_forwarded"]["packets"].as_u64().unwrap() > 0, "no ICMP error was forwarded: {stats}");
}

#[test]
fn a_download_through_a_1280_byte_link_completes_ipv4() {
    download_through_a_small_mtu(false);
}

#[test]
fn a_download_through_a_1280_byte_link_completes_ipv6() {
    download_through_a_small_mtu(true);
}

#[test]
fn a_persistent_service_keeps_each_client_on_one_real() {
    require_root();
    let mut l = context(LbLab::new(Mode::Native, 3), "lab");
    context(l.start_lbd(&[]), "lbd");
    let svc = format!("{VIP}:80");
    l.lbctl_ok(&["add-service", &svc, "--persistent", "30"]);
    for i in 0..3 {
        l.lbctl_ok(&["add-real", &svc, &real_ip(i)]);
    }
    let client = l.lab.client();
    // One client: every connection (each from a new port) lands on the same real.
    let one = spread_url(&l, &client, &format!("http://{VIP}/"), "", 20);
    assert_eq!(one.len(), 1, "one client spread over several reals: {one:?}");
    let owner = one.keys().next().unwrap().clone();
    // A weight change moves ring slots, but the client's template keeps it where it was.
    l.lbctl_ok(&["edit-real", &svc, &real_ip(0), "--weight", "3"]);
    let again = spread_url(&l, &client, &format!("http://{VIP}/"), "", 10);
    assert_eq!(again, BTreeMap::from([(owner.clone(), 10)]), "the client moved after a ring change");
    // Many clients (source addresses): spread over the reals, each one sticky.
    let mut owners = BTreeMap::new();
    for i in 0..24 {
        let src = format!("10.99.0.{}", 150 + i);
        context(l.lab.ip(&client, &["addr", "add", &format!("{src}/24"), "dev", "eth0"]), "client address");
        let m = spread_url(&l, &client, &format!("http://{VIP}/"), &format!("--interface {src}"), 4);
        assert_eq!(m.len(), 1, "client {src} spread over several reals: {m:?}");
        *owners.entry(m.keys().next().unwrap().clone()).or_insert(0) += 1;
    }
    assert!(owners.len() >= 2, "24 clients all went to one real: {owners:?}");
    assert!(!owners.contains_key("FAIL"), "{owners:?}");
    let list = l.list_json();
    assert_eq!(list[0]["persistent"].as_u64(), Some(30), "{list}");
    // Turning persistence off spreads one client's connections again.
    l.lbctl_ok(&["set-persistence", &svc, "0"]);
    let spread = spread_url(&l, &client, &format!("http://{VIP}/"), "", 30);
    assert!(spread.len() >= 2, "without persistence one client's connections spread: {spread:?}");
}

#[test]
fn idle_udp_flows_of_a_drained_real_end_and_the_client_is_placed_again() {
    require_root();
    let mut l = context(LbLab::new(Mode::Native, 2), "lab");
    context(l.lab.start_udp(5353), "UDP servers");
    context(l.start_lbd(&["--flow-idle-timeout", "2s"]), "lbd");
    let svc = format!("{VIP}:5353");
    l.lbctl_ok(&["add-service", &svc, "--proto", "udp"]);
    for i in 0..2 {
        l.lbctl_ok(&["add-real", &svc, &real_ip(i), "--proto", "udp"]);
    }
    let client = l.lab.client();
    let udp = lb_lab::bin_path("lab-udp");
    let ask = |l: &LbLab| -> String {
        let out = context(
            l.lab.exec(&client, &[udp.to_str().unwrap(), "ask", &format!("{VIP}:5353"), "--from-port", "40000"]),
            "lab-udp ask",
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let first = ask(&l);
    assert!(first == "r1" || first == "r2", "{first:?}");
    let idx: usize = first[1..].parse::<usize>().unwrap() - 1;
    let expired = |l: &LbLab| -> u64 {
        let stats: serde_json::Value = serde_json::from_str(&l.lbctl_ok(&["stats", "--json"])).unwrap();
        stats["flows_expired"].as_u64().unwrap_or_else(|| panic!("no flows_expired in {stats}"))
    };
    assert_eq!(expired(&l), 0, "a flow expired before any was idle");
    l.lbctl_ok(&["drain", &svc, &real_ip(idx), "--proto", "udp"]);
    // An active flow stays on its drained real, asked again and again for longer than --flow-idle-timeout (2 s)...
    let stayed =
        lb_lab::wait::holds_for(Duration::from_millis(2500), "the active UDP flow on its drained real", || {
            ask(&l) == first
        });
    context(stayed, "active flow");
    let last_asked = std::time::Instant::now();
    assert_eq!(expired(&l), 0, "the sweep ended an active flow");
    // ...and once idle beyond --flow-idle-timeout the sweep ends it: the next datagram is placed anew.
    context(
        lb_lab::wait::wait_within(Duration::from_secs(5), "the sweep to expire the idle flow", || expired(&l) >= 1),
        "flow sweep",
    );
    let idle = last_asked.elapsed();
    // Not before it was idle for the timeout, less the XDP program's atime granularity (it refreshes a flow's
    // atime only once that is 1 s old) and a margin for the kernel's coarse clock.
    assert!(idle >= Duration::from_millis(900), "the flow was expired after {idle:?} idle, timeout 2 s");
    assert_eq!(expired(&l), 1, "one flow was idle");
    let other = if idx == 0 { "r2" } else { "r1" };
    assert_eq!(ask(&l), other, "the idle flow still went to the drained real");
}

/// `--manage-vips` with an IPv6 VIP: lbd adds it deprecated, so the LB's own connections (health checks) never
/// leave with the VIP as source, which a real would answer locally.
#[test]
fn manage_vips_adds_an_ipv6_vip_that_health_checks_do_not_use_as_source() {
    require_root();
    let mut l = context(LbLab::with_options(Mode::Native, &LabOptions { reals: 2, vip_on_lb: false }), "lab");
    context(l.start_lbd(&["--manage-vips"]), "lbd");
    let svc = format!("[{VIP6}]:80");
    l.lbctl_ok(&["add-service", &svc, "--check", "http", "--check-interval", "500ms"]);
    l.lbctl_ok(&["add-real", &svc, &real_ip6(0)]);
    l.lbctl_ok(&["add-real", &svc, &real_ip6(1)]);
    let addrs =
        String::from_utf8_lossy(&l.lab.ip(&l.lab.lb(), &["-6", "addr", "show", "eth0"]).unwrap().stdout).to_string();
    assert!(addrs.contains(&format!("{VIP6}/128")) && addrs.contains("deprecated"), "{addrs}");
    let up = wait_for(|| l.list_json()[0]["usable_reals"].as_u64() == Some(2), "both IPv6 reals up");
    assert!(up.is_ok(), "{}", l.list_json());
    let spread = spread_url(&l, &l.lab.client(), &format!("http://[{VIP6}]/"), "-6", 20);
    assert_eq!(spread.get("r1").copied().unwrap_or(0) + spread.get("r2").copied().unwrap_or(0), 20, "{spread:?}");
}

/// While 3 million SYNs from random sources hit the VIP, long-lived connections to a drained real and to a removed
/// real keep working on their real: SYNs store no flow, so the flood neither evicts nor moves them (the lab's
/// connection table holds 65536 entries, 2% of the flood).
#[test]
fn a_syn_flood_neither_evicts_nor_moves_established_flows() {
    require_root();
    let mut l = context(LbLab::new(Mode::Native, 3), "lab");
    let cfg = context(l.write_config(&[0, 1, 2]), "config");
    context(l.start_lbd(&["--config", &cfg]), "lbd");
    let client = l.lab.client();
    // Long streams until two of them sit on different reals.
    let mut owners: Vec<(u32, String, String)> = Vec::new();
    for i in 0..12 {
        let log = format!("stream-{i}.out");
        let url = format!("http://{VIP}/stream?secs=40");
        let pid =
            context(l.lab.spawn(&client, &log, &["curl", "-sS", "--no-buffer", "--max-time", "60", &url]), "curl");
        context(wait_for(|| l.lab.log(&log).contains(" 0\n"), "first line of a stream"), "stream start");
        let owner = l.lab.log(&log).split_whitespace().next().unwrap().to_string();
        owners.push((pid, log, owner));
        let distinct: std::collections::BTreeSet<&String> = owners.iter().map(|o| &o.2).collect();
        if distinct.len() >= 2 {
            break;
        }
    }
    let drained = owners[0].2.clone();
    let removed = owners.iter().map(|o| o.2.clone()).find(|o| *o != drained).expect("streams on two reals");
    let idx = |name: &str| name[1..].parse::<usize>().unwrap() - 1;
    let svc = format!("{VIP}:80");
    l.lbctl_ok(&["drain", &svc, &real_ip(idx(&drained))]);
    l.lbctl_ok(&["del-real", &svc, &real_ip(idx(&removed))]);
    let flood = lb_lab::bin_path("lab-synflood");
    let out = context(
        l.lab.exec(
            &client,
            &[
                flood.to_str().unwrap(),
                "--dst",
                &format!("{VIP}:80"),
                "--src-net",
                "10.200.0.0/16",
                "--count",
                "3000000",
            ],
        ),
        "SYN flood",
    );
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(report.contains("sent 3000000"), "{report}");
    eprintln!("lab-synflood: {}", report.trim());
    // The LB saw the flood (passed to a real by Maglev: counted as forwarded) and stored none of it.
    let stats: serde_json::Value = serde_json::from_str(&l.lbctl_ok(&["stats", "--json"])).unwrap();
    assert!(stats["forwarded"]["packets"].as_u64().unwrap() >= 2_000_000, "the flood did not reach the LB: {stats}");
    assert!(stats["conn_table_entries"].as_u64().unwrap() < 1000, "SYNs were stored: {stats}");
    for (pid, log, owner) in owners {
        let status = context(l.lab.wait(pid, Duration::from_secs(60)), "stream end");
        let body = l.lab.log(&log);
        assert!(status.success(), "stream on {owner} failed ({status}): {body}");
        assert!(body.contains(&format!("{owner} done")), "stream did not complete on {owner}: {body}");
        assert!(body.lines().all(|line| line.starts_with(&owner)), "a stream moved off {owner}: {body}");
    }
}
