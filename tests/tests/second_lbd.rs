//! A second lbd started by mistake beside a running one (issue 29, item 1): on the same socket, the same pin
//! directory or the same interface it is refused with the reason before it touches any map, while traffic through
//! the VIPs goes on with no failed request and the running lbd's services and pinned maps stay as they were.
//! Run as root, serially: `--test-threads=1`.
use lb_lab::bin_path;
use lb_tests::health::BpfMount;
use lb_tests::{context, real_ip, require_root, LbLab, Mode, VIP};
use std::time::Duration;

/// The pinned VIPS map's entries (bpftool's JSON dump, keys and values as bytes), sorted.
fn vips_map(pins: &str) -> Vec<String> {
    let path = format!("{pins}/VIPS");
    let out = std::process::Command::new("bpftool").args(["-j", "map", "dump", "pinned", &path]).output().unwrap();
    assert!(out.status.success(), "bpftool map dump {path}: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    let mut entries: Vec<String> = v.as_array().expect("an array of entries").iter().map(|e| e.to_string()).collect();
    entries.sort();
    entries
}

/// The services lbctl lists: "VIP:PORT" -> its reals, sorted.
fn services(l: &LbLab) -> Vec<(String, Vec<String>)> {
    let mut s: Vec<(String, Vec<String>)> = l
        .list_json()
        .as_array()
        .expect("list --json is an array")
        .iter()
        .map(|svc| {
            let mut reals: Vec<String> = svc["reals"]
                .as_array()
                .map(|r| r.iter().map(|x| x["addr"].as_str().unwrap_or("").to_string()).collect())
                .unwrap_or_default();
            reals.sort();
            (format!("{}:{}", svc["vip"].as_str().unwrap_or(""), svc["port"]), reals)
        })
        .collect();
    s.sort();
    s
}

#[test]
fn a_second_lbd_is_refused_before_it_touches_the_running_ones_dataplane() {
    require_root();
    let mut l = context(LbLab::new(Mode::Native, 2), "lab");
    context(l.lab.start_http(8080), "httpd on 8080");
    let bpf = context(BpfMount::new(&l), "bpffs");
    let pins = bpf.pin_dir();
    let two = l.lab.dir.join("two.toml");
    let mut cfg = String::new();
    for port in [80, 8080] {
        cfg.push_str(&format!("[[service]]\nvip = \"{VIP}:{port}\"\nproto = \"tcp\"\n"));
        for i in 0..2 {
            cfg.push_str(&format!("[[service.real]]\naddr = \"{}\"\nweight = 1\n", real_ip(i)));
        }
    }
    std::fs::write(&two, cfg).unwrap();
    let a = context(l.start_lbd(&["--config", two.to_str().unwrap(), "--pin-dir", &pins]), "lbd A");
    let before = services(&l);
    let want: Vec<String> = vec![real_ip(0), real_ip(1)];
    assert_eq!(
        before,
        vec![(format!("{VIP}:80"), want.clone()), (format!("{VIP}:8080"), want.clone())],
        "A serves both services"
    );
    let vips_before = vips_map(&pins);
    assert_eq!(vips_before.len(), 2, "two services pinned: {vips_before:?}");

    // Traffic to both services for the whole test; the loop stops when the stop file appears (or after 60 s).
    let stop = l.lab.dir.join("stop-traffic");
    let script = format!(
        "end=$((SECONDS+60)); n=0; while [ ! -e {stop} ] && [ $SECONDS -lt $end ]; do \
         for p in 80 8080; do curl -sS -o /dev/null --max-time 2 http://{VIP}:$p/ && echo OK || echo FAIL; done; \
         n=$((n+1)); done",
        stop = stop.display()
    );
    let client = l.lab.client();
    let traffic = context(l.lab.spawn(&client, "traffic.log", &["bash", "-c", &script]), "traffic");
    context(
        lb_tests::wait_for(|| l.lab.log("traffic.log").matches("OK").count() >= 10, "traffic through the VIPs"),
        "traffic",
    );

    // One service in the second lbd's config: what the refused lbd used to write over A's two.
    let one = l.lab.dir.join("one.toml");
    std::fs::write(
        &one,
        format!("[[service]]\nvip = \"{VIP}:80\"\nproto = \"tcp\"\n[[service.real]]\naddr = \"{}\"\n", real_ip(0)),
    )
    .unwrap();
    let other_pins = format!("{}/other", bpf.root.display());
    let other_sock = l.lab.dir.join("other.sock").display().to_string();
    let sock = l.socket();
    let one = one.display().to_string();
    let a_pid = format!("pid {a}");
    let cases: [(&str, Vec<&str>, &str); 4] = [
        ("same socket and pin directory", vec!["--socket", &sock, "--pin-dir", &pins], "is serving this socket"),
        ("another socket, same pin directory", vec!["--socket", &other_sock, "--pin-dir", &pins], "is using it"),
        (
            "another socket and pin directory, same interface",
            vec!["--socket", &other_sock, "--pin-dir", &other_pins],
            "already has an XDP program attached",
        ),
        ("same interface, nothing pinned", vec!["--socket", &other_sock, "--no-pin"], "already has an XDP program"),
    ];
    let lbd = bin_path("lbd");
    for (what, flags, reason) in &cases {
        let mut args = vec![lbd.to_str().unwrap(), "--iface", "eth0", "--config", &one, "--xdp-mode", "native"];
        args.extend_from_slice(&["--conn-table-size", "65536", "--max-services", "8"]);
        args.extend_from_slice(flags);
        let out = context(l.lab.exec_status(&l.lab.lb(), &args), what);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
        assert!(err.contains(reason), "{what}: want {reason:?} in: {err}");
        if !reason.contains("XDP program") {
            assert!(err.contains(&a_pid), "{what}: the holder ({a_pid}) is named: {err}");
        } else {
            assert!(err.contains("ip link show eth0") && err.contains("bpftool net"), "{what}: how to see it: {err}");
        }
        assert!(!err.contains("took over"), "{what}: touched the pinned maps: {err}");
        assert!(!std::path::Path::new(&other_sock).exists(), "{what}: left its socket file behind");
        assert!(!std::path::Path::new(&other_pins).exists(), "{what}: left a pin directory behind");
        assert_eq!(services(&l), before, "{what}: A's services changed");
        assert_eq!(vips_map(&pins), vips_before, "{what}: the pinned VIPS map changed");
        assert!(l.lab.alive(a), "{what}: A died");
    }

    // `lbd --cleanup` of a running lbd's pins is refused the same way: it would detach A.
    let out =
        context(l.lab.exec_status(&l.lab.lb(), &[lbd.to_str().unwrap(), "--cleanup", "--pin-dir", &pins]), "cleanup");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "cleanup under a running lbd: {out:?}");
    assert!(err.contains("is using it") && err.contains(&a_pid), "{err}");
    assert_eq!(vips_map(&pins), vips_before, "cleanup touched the pins");
    assert!(std::path::Path::new(&pins).join("link").exists(), "cleanup removed the link");

    std::fs::write(&stop, "").unwrap();
    let st = context(l.lab.wait(traffic, Duration::from_secs(10)), "traffic ends");
    assert!(st.success(), "{st}");
    let log = l.lab.log("traffic.log");
    let (ok, failed) = (log.matches("OK").count(), log.matches("FAIL").count());
    assert_eq!(failed, 0, "requests through the VIPs failed while the second lbds were refused:\n{log}");
    assert!(ok >= 10 && ok % 2 == 0, "both services were asked each round: {ok} answers");
    // A goes on: a change through its socket lands in the map it still owns.
    l.lbctl_ok(&["del-service", &format!("{VIP}:8080")]);
    assert_eq!(vips_map(&pins).len(), 1);
    context(l.stop_lbd(libc::SIGTERM), "stop A");
    drop(bpf);
}
