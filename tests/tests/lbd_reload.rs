//! lbd under SIGHUP (issue 26): its settings file is read and checked again; `--events` and
//! `--flow-idle-timeout` apply to the running daemon at once (the history is trimmed to the new size), the other
//! settings wait for the next start, a broken file is refused with the reason, and lbd keeps forwarding.
//! Run as root, serially: `--test-threads=1`.
use lb_tests::health::wait_within;
use lb_tests::{context, real_ip, require_root, LbLab, Mode, VIP};
use std::time::Duration;

fn events(l: &LbLab) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&l.lbctl_ok(&["events", "--json"])).expect("events --json");
    v.as_array().expect("an array").clone()
}

fn hup(l: &LbLab) {
    let pid = l.lbd_pid.expect("lbd runs");
    // SAFETY: kill(2) of the lbd this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
}

fn wait_log(l: &LbLab, text: &str, n: usize) {
    wait_within(Duration::from_secs(10), text, || l.lbd_log().matches(text).count() >= n)
        .unwrap_or_else(|e| panic!("{e}\n{}", l.lbd_log()));
}

#[test]
fn sighup_applies_events_and_flow_idle_timeout_live_and_refuses_a_broken_file() {
    require_root();
    let mut l = context(LbLab::new(Mode::Native, 1), "lab");
    let svc = format!("{VIP}:80");
    let service =
        format!("[[service]]\nvip = \"{svc}\"\nproto = \"tcp\"\n[[service.real]]\naddr = \"{}\"\n", real_ip(0));
    let conf = l.lab.dir.join("lbd.toml");
    let write = |top: &str| std::fs::write(&conf, format!("{top}\n{service}")).unwrap();
    write("events = 100\nflow-idle-timeout = \"60s\"\ncheck-concurrency = 64");
    context(l.start_lbd(&["--config", conf.to_str().unwrap()]), "lbd");
    let pid = l.lbd_pid;
    for _ in 0..3 {
        l.lbctl_ok(&["drain", &svc, &real_ip(0)]);
        l.lbctl_ok(&["undrain", &svc, &real_ip(0)]);
    }
    let before = events(&l).len();
    assert!(before >= 6, "{before} events");

    write("events = 3\nflow-idle-timeout = \"5s\"\ncheck-concurrency = 7");
    hup(&l);
    wait_log(&l, "SIGHUP: applied", 1);
    let log = l.lbd_log();
    let applied = log.lines().find(|x| x.contains("SIGHUP: applied")).unwrap();
    assert!(applied.contains("events") && applied.contains("flow_idle_timeout"), "{applied}");
    let later = log.lines().find(|x| x.contains("applied at the next start")).unwrap_or_else(|| panic!("{log}"));
    assert!(later.contains("check_concurrency") && !later.contains("events"), "{later}");
    // The running history is trimmed to the new size at once, and stays there.
    wait_within(Duration::from_secs(5), "the history trimmed to 3", || events(&l).len() == 3)
        .unwrap_or_else(|e| panic!("{e}: {:?}", events(&l)));
    l.lbctl_ok(&["drain", &svc, &real_ip(0)]);
    let now = events(&l);
    assert_eq!(now.len(), 3, "{now:?}");
    assert_eq!(now[2]["kind"], "real-drained", "{now:?}");

    // A broken file: refused with the reason, lbd goes on with what it runs.
    write("events = 0");
    hup(&l);
    wait_log(&l, "SIGHUP: configuration refused", 1);
    let refused = l.lbd_log().lines().find(|x| x.contains("configuration refused")).unwrap().to_string();
    assert!(refused.contains("events"), "{refused}");
    assert_eq!(l.lbd_pid, pid);
    assert_eq!(l.list_json().as_array().map(Vec::len), Some(1));
    l.lbctl_ok(&["undrain", &svc, &real_ip(0)]);
    assert_eq!(events(&l).len(), 3);
}
