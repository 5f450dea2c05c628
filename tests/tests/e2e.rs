//! End-to-end tests of the load balancer in network namespaces with real clients (curl), in native and skb mode.
use lb_tests::*;
use std::time::Duration;

fn every_real_answers(mode: Mode) {
    require_root();
    let mut l = context(LbLab::new(mode, 3), "lab");
    let cfg = context(l.write_config(&[0, 1, 2]), "config");
    context(l.start_lbd(&["--config", &cfg]), "lbd");
    let spread = context(l.spread(60), "curl through the VIP");
    for r in ["r1", "r2", "r3"] {
        assert!(spread.get(r).copied().unwrap_or(0) > 0, "{r} never answered: {spread:?}");
    }
    assert_eq!(spread.values().sum::<usize>(), 60, "every request got an answer from a real: {spread:?}");
    assert!(!spread.contains_key("FAIL"), "{spread:?}");
    // The dataplane's counters saw those flows, and lbd reports the mode it runs in.
    let list = l.list_json();
    let svc = &list[0];
    assert_eq!(svc["counters"]["new_flows"].as_u64(), Some(60), "{svc}");
    let stats: serde_json::Value = serde_json::from_str(&l.lbctl_ok(&["stats", "--json"])).unwrap();
    assert_eq!(stats["xdp_mode"], mode.flag());
    assert!(stats["forwarded"]["packets"].as_u64().unwrap() >= 60 * 4);
}

#[test]
fn native_every_real_answers_through_the_vip() {
    every_real_answers(Mode::Native);
}

#[test]
fn skb_every_real_answers_through_the_vip() {
    every_real_answers(Mode::Skb);
}

/// A long-lived connection keeps its real, without a reset, while a real is added and another removed.
fn long_lived_flow_keeps_its_real(mode: Mode) {
    require_root();
    let mut l = context(LbLab::new(mode, 4), "lab");
    let cfg = context(l.write_config(&[0, 1, 2]), "config");
    context(l.start_lbd(&["--config", &cfg]), "lbd");
    let client = l.lab.client();
    let url = format!("http://{VIP}/stream?secs=6");
    let pid =
        context(l.lab.spawn(&client, "stream.out", &["curl", "-sS", "--no-buffer", "--max-time", "20", &url]), "curl");
    context(wait_for(|| l.lab.log("stream.out").contains(" 0\n"), "first line of the stream"), "stream start");
    let first = l.lab.log("stream.out");
    let owner = first.split_whitespace().next().unwrap().to_string();
    let owner_idx: usize = owner[1..].parse::<usize>().unwrap() - 1;
    // Remove a real that is not the stream's, and add the fourth.
    let victim = (0..3).find(|i| *i != owner_idx).unwrap();
    let svc = format!("{VIP}:80");
    l.lbctl_ok(&["add-real", &svc, &real_ip(3)]);
    l.lbctl_ok(&["del-real", &svc, &real_ip(victim)]);
    // Not a wait for readiness: the changes are spaced out so the stream runs through each ring on its own.
    std::thread::sleep(Duration::from_millis(500));
    l.lbctl_ok(&["edit-real", &svc, &real_ip(owner_idx), "--weight", "5"]);
    let status = context(l.lab.wait(pid, Duration::from_secs(20)), "stream end");
    let body = l.lab.log("stream.out");
    assert!(status.success(), "curl failed ({status}), a reset or a stall: {body}");
    assert!(body.contains(&format!("{owner} done")), "stream did not complete on {owner}: {body}");
    for line in body.lines() {
        assert!(line.starts_with(&owner), "a line came from another real: {line:?} in {body}");
    }
    assert!(body.lines().count() >= 50, "too few lines: {body}");
    // New connections now land on the new real set only.
    let spread = context(l.spread(40), "curl after the change");
    assert!(!spread.contains_key(&format!("r{}", victim + 1)), "removed real got a new connection: {spread:?}");
    assert!(spread.get("r4").copied().unwrap_or(0) > 0, "added real never answered: {spread:?}");
}

#[test]
fn native_long_lived_flow_keeps_its_real_across_changes() {
    long_lived_flow_keeps_its_real(Mode::Native);
}

#[test]
fn skb_long_lived_flow_keeps_its_real_across_changes() {
    long_lived_flow_keeps_its_real(Mode::Skb);
}

fn del_real_gets_no_new_connection(mode: Mode) {
    require_root();
    let mut l = context(LbLab::new(mode, 3), "lab");
    let cfg = context(l.write_config(&[0, 1, 2]), "config");
    context(l.start_lbd(&["--config", &cfg]), "lbd");
    let before = context(l.spread(30), "curl");
    assert!(before.get("r2").copied().unwrap_or(0) > 0, "{before:?}");
    let out = l.lbctl_ok(&["del-real", &format!("{VIP}:80"), &real_ip(1)]);
    assert!(out.contains("deleted real"), "{out}");
    let after = context(l.spread(60), "curl after del-real");
    assert_eq!(after.get("r2"), None, "deleted real got new connections: {after:?}");
    assert_eq!(after.values().sum::<usize>(), 60);
    assert!(!after.contains_key("FAIL"), "{after:?}");
    let list = l.list_json();
    let reals: Vec<&str> = list[0]["reals"].as_array().unwrap().iter().map(|r| r["addr"].as_str().unwrap()).collect();
    assert_eq!(reals, vec![real_ip(0), real_ip(2)]);
}

#[test]
fn native_del_real_gets_no_new_connection() {
    del_real_gets_no_new_connection(Mode::Native);
}

#[test]
fn skb_del_real_gets_no_new_connection() {
    del_real_gets_no_new_connection(Mode::Skb);
}

/// Runtime changes go to the state file; a restarted lbd (no --config) restores them and forwards again.
#[test]
fn restarted_lbd_keeps_its_table() {
    require_root();
    let mut l = context(LbLab::new(Mode::Native, 3), "lab");
    // The VIP is already on the LB's interface: --manage-vips must accept that.
    context(l.start_lbd(&["--manage-vips"]), "lbd");
    let svc = format!("{VIP}:80");
    l.lbctl_ok(&["add-service", &svc]);
    l.lbctl_ok(&["add-real", &svc, &real_ip(0), "--weight", "2"]);
    l.lbctl_ok(&["add-real", &svc, &real_ip(2)]);
    l.lbctl_ok(&["add-service", &format!("{VIP}:53"), "--proto", "udp"]);
    // The table without its counters: (service, proto, [(real, weight)]).
    type Table = Vec<(String, String, Vec<(String, u64)>)>;
    let strip = |v: serde_json::Value| -> Table {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    format!("{}:{}", s["vip"], s["port"]),
                    s["proto"].to_string(),
                    s["reals"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| (r["addr"].to_string(), r["weight"].as_u64().unwrap()))
                        .collect(),
                )
            })
            .collect()
    };
    let before = strip(l.list_json());
    assert_eq!(before.len(), 2);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(l.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket must be private to root");
    let link = |l: &LbLab| {
        String::from_utf8_lossy(&l.lab.ip(&l.lab.lb(), &["link", "show", "eth0"]).unwrap().stdout).to_string()
    };
    assert!(link(&l).contains("xdp"), "lbd attached nothing: {}", link(&l));
    context(l.stop_lbd(libc::SIGTERM), "stop lbd");
    assert!(!link(&l).contains("xdp"), "SIGTERM left the program attached: {}", link(&l));
    assert!(!std::path::Path::new(&l.socket()).exists(), "socket left behind");
    let state = std::fs::read_to_string(l.state_file()).unwrap();
    assert!(state.contains(&real_ip(2)), "state file lacks a real: {state}");
    // With lbd stopped nothing is attached: the VIP is the LB's own address and nothing listens on it.
    context(l.start_lbd(&[]), "lbd restart");
    assert!(l.lbd_log().contains("restoring from the state file"), "{}", l.lbd_log());
    assert_eq!(strip(l.list_json()), before, "restarted lbd lost its table");
    let spread = context(l.spread(30), "curl after restart");
    assert_eq!(spread.get("r2"), None, "{spread:?}");
    assert_eq!(spread.get("r1").copied().unwrap_or(0) + spread.get("r3").copied().unwrap_or(0), 30, "{spread:?}");
}

/// Every bad input is refused with a clear message and a non-zero exit, and changes nothing.
#[test]
fn lbctl_bad_input_is_refused_and_changes_nothing() {
    require_root();
    let mut l = context(LbLab::new(Mode::Skb, 2), "lab");
    let cfg = context(l.write_config(&[0]), "config");
    context(l.start_lbd(&["--config", &cfg]), "lbd");
    let svc = format!("{VIP}:80");
    let before = l.list_json();
    let state_before = std::fs::read_to_string(l.state_file()).unwrap_or_default();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["add-service".into(), "10.99.0.100".into()], "VIP:PORT"),
        (vec!["add-service".into(), "10.99.0.300:80".into()], "VIP:PORT"),
        (vec!["add-service".into(), svc.clone(), "--proto".into(), "sctp".into()], "unknown protocol"),
        (vec!["add-service".into(), svc.clone()], "already exists"),
        (vec!["add-real".into(), svc.clone(), "10.99.0".into()], "bad real address"),
        (vec!["add-real".into(), "10.99.0.100:81".into(), real_ip(1)], "unknown service"),
        (vec!["add-real".into(), svc.clone(), real_ip(0)], "already exists"),
        (vec!["add-real".into(), svc.clone(), "192.168.55.5".into()], "not on a directly connected subnet"),
        (vec!["add-real".into(), svc.clone(), LB_IP.into()], "of eth0 itself"),
        (vec!["add-real".into(), svc.clone(), real_ip(1), "--weight".into(), "99999".into()], "out of range"),
        (vec!["edit-real".into(), svc.clone(), real_ip(1), "--weight".into(), "3".into()], "is not in service"),
        (vec!["del-real".into(), svc.clone(), real_ip(1)], "is not in service"),
        (vec!["del-service".into(), "10.99.0.100:8080".into()], "unknown service"),
    ];
    for (args, want) in &cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = l.lbctl(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "lbctl {a:?} succeeded");
        assert!(err.contains(want), "lbctl {a:?}: stderr {err:?} lacks {want:?}");
    }
    assert_eq!(l.list_json(), before, "a refused command changed the table");
    assert_eq!(std::fs::read_to_string(l.state_file()).unwrap_or_default(), state_before);
    // lbd refuses a broken config before touching anything, and lbctl says when lbd is not running.
    context(l.stop_lbd(libc::SIGTERM), "stop");
    let out = l.lbctl(&["list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is lbd running?"), "{out:?}");
    std::fs::remove_file(l.state_file()).unwrap();
    let bad = l.lab.dir.join("bad.toml");
    std::fs::write(&bad, "[[service]]\nvip = \"10.99.0.100:80\"\n[[service.real]]\naddr = \"192.168.55.5\"\n").unwrap();
    let lbd = lb_lab::bin_path("lbd");
    let out = context(
        l.lab.exec_status(
            &l.lab.lb(),
            &[
                lbd.to_str().unwrap(),
                "--iface",
                "eth0",
                "--socket",
                &l.socket(),
                "--config",
                bad.to_str().unwrap(),
                "--xdp-mode",
                "skb",
                "--conn-table-size",
                "1024",
            ],
        ),
        "lbd with a bad config",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "lbd accepted an off-subnet real");
    assert!(err.contains("not on a directly connected subnet"), "{err}");
    let attached = context(l.lab.ip(&l.lab.lb(), &["link", "show", "eth0"]), "ip link");
    assert!(!String::from_utf8_lossy(&attached.stdout).contains("xdp"), "a refused start left XDP attached");
    let out = context(
        l.lab.exec_status(&l.lab.lb(), &[lbd.to_str().unwrap(), "--iface", "nosuch0", "--socket", &l.socket()]),
        "lbd",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("interface nosuch0 not found"), "{out:?}");
}

/// A real's MAC changes (NIC swap): lbd follows the neighbour table and forwards to the new MAC. The LB's kernel
/// relearns the MAC from the real's next ARP broadcast (the real flushes its own cache when its address changes).
#[test]
fn a_real_whose_mac_changes_is_followed() {
    require_root();
    let mut l = context(LbLab::new(Mode::Native, 2), "lab");
    // Short reachable time on the LB, so the kernel marks the entry STALE in seconds rather than 15-45 s.
    context(
        l.lab.exec(&l.lab.lb(), &["sysctl", "-q", "-w", "net.ipv4.neigh.eth0.base_reachable_time_ms=1000"]),
        "sysctl",
    );
    let cfg = context(l.write_config(&[0, 1]), "config");
    context(l.start_lbd(&["--config", &cfg]), "lbd");
    let before = context(l.spread(20), "curl");
    assert!(before.get("r2").copied().unwrap_or(0) > 0, "{before:?}");
    let new_mac = "02:00:00:00:99:02";
    context(l.lab.ip(&l.lab.real(1), &["link", "set", "eth0", "address", new_mac]), "change r2's MAC");
    let mac_of_r2 = |l: &LbLab| l.list_json()[0]["reals"][1]["mac"].as_str().unwrap_or("").to_string();
    lb_lab::wait::wait_within(Duration::from_secs(40), "lbd to learn r2's new MAC", || mac_of_r2(&l) == new_mac)
        .unwrap_or_else(|e| panic!("{e}: lbd still has {} for r2:\n{}", mac_of_r2(&l), l.lbd_log()));
    let after = context(l.spread(30), "curl after the MAC change");
    assert!(!after.contains_key("FAIL"), "{after:?}");
    assert!(after.get("r2").copied().unwrap_or(0) > 0, "r2 gets nothing at its new MAC: {after:?}");
}

/// lbd hears of a neighbour-table change from the kernel's netlink event at once, not at its 30 s resync: an
/// operator's `ip neigh replace` on the LB shows in `lbctl list` within a second or two.
#[test]
fn a_neighbour_table_change_is_followed_from_its_netlink_event() {
    require_root();
    let mut l = context(LbLab::new(Mode::Skb, 2), "lab");
    let cfg = context(l.write_config(&[0, 1]), "config");
    context(l.start_lbd(&["--config", &cfg]), "lbd");
    let mac_of_r2 = |l: &LbLab| l.list_json()[0]["reals"][1]["mac"].as_str().unwrap_or("").to_string();
    assert_ne!(mac_of_r2(&l), "", "r2 resolved at start");
    let new_mac = "02:00:00:00:99:03";
    let r2 = real_ip(1);
    context(
        l.lab.ip(&l.lab.lb(), &["neigh", "replace", &r2, "lladdr", new_mac, "dev", "eth0", "nud", "reachable"]),
        "ip neigh replace",
    );
    context(lb_tests::health::wait_within(Duration::from_secs(3), "the new MAC", || mac_of_r2(&l) == new_mac), "event");
}

/// `--manage-vips` puts the VIP on the LB's interface (so the LB answers ARP for it), and `--max-services` is a
/// hard limit with a clear error that changes nothing; a deleted service's slot is reused.
#[test]
fn manage_vips_attracts_the_vip_and_the_service_limit_holds() {
    require_root();
    let mut l = context(LbLab::with_options(Mode::Skb, &LabOptions { reals: 2, vip_on_lb: false }), "lab");
    let addrs = |l: &LbLab| {
        String::from_utf8_lossy(&l.lab.ip(&l.lab.lb(), &["addr", "show", "eth0"]).unwrap().stdout).to_string()
    };
    assert!(!addrs(&l).contains(VIP), "the lab put the VIP on the LB already");
    context(l.start_lbd(&["--manage-vips", "--max-services", "2"]), "lbd");
    let svc = format!("{VIP}:80");
    l.lbctl_ok(&["add-service", &svc]);
    assert!(addrs(&l).contains(&format!("{VIP}/32")), "lbd did not add the VIP: {}", addrs(&l));
    l.lbctl_ok(&["add-real", &svc, &real_ip(0)]);
    l.lbctl_ok(&["add-real", &svc, &real_ip(1)]);
    let spread = context(l.spread(20), "curl through a VIP lbd attracted");
    assert_eq!(spread.get("r1").copied().unwrap_or(0) + spread.get("r2").copied().unwrap_or(0), 20, "{spread:?}");
    l.lbctl_ok(&["add-service", &format!("{VIP}:81")]);
    let before = l.list_json();
    let out = l.lbctl(&["add-service", &format!("{VIP}:82")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at most 2 services"), "{err}");
    assert_eq!(l.list_json(), before, "a refused add-service changed the table");
    l.lbctl_ok(&["del-service", &format!("{VIP}:81")]);
    l.lbctl_ok(&["add-service", &format!("{VIP}:82")]);
    let spread = context(l.spread(10), "curl after reusing a service slot");
    assert!(!spread.contains_key("FAIL"), "{spread:?}");
}

/// Native mode falls back to skb mode, with a warning, on a device whose driver has no XDP (a bridge).
#[test]
fn native_attach_falls_back_to_skb_where_the_driver_cannot() {
    require_root();
    let mut l = context(LbLab::new(Mode::Skb, 1), "lab");
    let sw = l.lab.switch();
    let pass = lb_lab::bin_path("lb-xdp-pass");
    let args = [pass.to_str().unwrap(), "--iface", "br0", "--xdp-mode", "native"];
    context(l.lab.spawn_ready(&sw, "pass-br0.log", &args, "attached", Duration::from_secs(10)), "lb-xdp-pass");
    let log = l.lab.log("pass-br0.log");
    assert!(log.contains("attached to br0 in skb mode"), "{log}");
    assert!(log.contains("native XDP is not available"), "no warning: {log}");
    let link = String::from_utf8_lossy(&l.lab.ip(&sw, &["link", "show", "br0"]).unwrap().stdout).to_string();
    assert!(link.contains("xdpgeneric"), "{link}");
}

/// `lbd --api ADDR`: another host drives lbd over HTTP with the socket's requests, only with the bearer token; an
/// API beyond loopback without a token is refused at start.
#[test]
fn the_http_control_api_needs_its_token_and_drives_lbd() {
    require_root();
    let mut l = context(LbLab::new(Mode::Skb, 2), "lab");
    let api = format!("{LB_IP}:9100");
    let lbd = lb_lab::bin_path("lbd");
    let open = l.lab.exec_status(
        &l.lab.lb(),
        &[lbd.to_str().unwrap(), "--iface", "eth0", "--no-pin", "--socket", "/tmp/never.sock", "--api", &api],
    );
    let open = context(open, "lbd without a token");
    assert!(!open.status.success(), "lbd served an API beyond loopback without a token");
    assert!(String::from_utf8_lossy(&open.stderr).contains("--api-token-file"), "{open:?}");
    let token_file = l.lab.dir.join("api.token");
    std::fs::write(&token_file, "s3cret-token-for-the-lab\n").unwrap();
    context(l.start_lbd(&["--api", &api, "--api-token-file", token_file.to_str().unwrap()]), "lbd");
    let client = l.lab.client();
    let curl = |args: &[&str]| -> (String, String) {
        let mut a = vec!["curl", "-sS", "-o", "/dev/stderr", "-w", "%{http_code}", "-m", "5"];
        a.extend_from_slice(args);
        let out = l.lab.exec_status(&client, &a).unwrap();
        (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let url = format!("http://{api}/api/v1/requests");
    let add_service = format!(r#"{{"cmd":"add-service","service":{{"vip":"{VIP}","port":80,"proto":"tcp"}}}}"#);
    let (code, body) = curl(&["-X", "POST", "-d", &add_service, &url]);
    assert_eq!(code, "401", "{body}");
    assert!(l.list_json().as_array().unwrap().is_empty(), "a request without the token changed lbd");
    let auth = "Authorization: Bearer s3cret-token-for-the-lab";
    let (code, body) = curl(&["-H", auth, "-X", "POST", "-d", &add_service, &url]);
    assert_eq!(code, "200", "{body}");
    for i in 0..2 {
        let add_real = format!(
            r#"{{"cmd":"add-real","service":{{"vip":"{VIP}","port":80,"proto":"tcp"}},"real":"{}","weight":1}}"#,
            real_ip(i)
        );
        // The second comes from a stream manager of term 5 (below).
        let term = if i == 1 { "X-Manager-Term: 5" } else { "X-Unrelated: 1" };
        let (code, body) = curl(&["-H", auth, "-H", term, "-X", "POST", "-d", &add_real, &url]);
        assert_eq!(code, "200", "{body}");
    }
    // A stream manager's term: a request of an older term than one accepted is refused with 409 and changes
    // nothing (svc::fence); the term shows in /metrics and /api/v1/stats.
    let del_real =
        format!(r#"{{"cmd":"del-real","service":{{"vip":"{VIP}","port":80,"proto":"tcp"}},"real":"{}"}}"#, real_ip(0));
    let (code, body) = curl(&["-H", auth, "-H", "X-Manager-Term: 4", "-X", "POST", "-d", &del_real, &url]);
    assert_eq!(code, "409", "{body}");
    assert!(body.contains("stale manager term 4: term 5 has acted here since"), "{body}");
    assert_eq!(l.list_json()[0]["reals"].as_array().unwrap().len(), 2, "a stale request changed lbd");
    let (code, metrics) = curl(&[&format!("http://{api}/metrics")]);
    assert_eq!(code, "200", "{metrics}");
    let parsed = svc::metrics::parse(&metrics).unwrap();
    assert_eq!(parsed["lbd_manager_term"][0].1, 5.0);
    assert_eq!(parsed["lbd_manager_commands_refused_total"][0].1, 1.0);
    let (code, body) = curl(&["-H", auth, &format!("http://{api}/api/v1/stats")]);
    assert_eq!(code, "200", "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["manager_term"], 5, "{body}");
    // A refused request says why, with 400, and changes nothing.
    let (code, body) = curl(&["-H", auth, "-X", "POST", "-d", &add_service, &url]);
    assert_eq!(code, "400", "{body}");
    assert!(body.contains("already exists"), "{body}");
    let (code, body) = curl(&["-H", auth, &format!("http://{api}/api/v1/services")]);
    assert_eq!(code, "200", "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list[0]["reals"].as_array().unwrap().len(), 2, "{list}");
    let spread = context(l.spread(10), "curl through the VIP set up over HTTP");
    assert_eq!(spread.get("r1").copied().unwrap_or(0) + spread.get("r2").copied().unwrap_or(0), 10, "{spread:?}");
}
