//! `lbctl check` as Nagios runs it, against lbd in the namespace lab: exit codes, status lines and perfdata over the
//! control socket and over lbd's HTTP API, with all reals up, one down, none usable, lbd unreachable and bad input.
use lb_lab::bin_path;
use lb_tests::health::{health, wait_within};
use lb_tests::{context, real_ip, require_root, LbLab, Mode, LB_IP, VIP};
use std::collections::BTreeMap;
use std::time::Duration;

const TOKEN: &str = "nagios-check-token-0123";

/// A check's exit code, status text (before `|`) and perfdata by label (the fields after `=`, split at `;`).
struct Out {
    code: i32,
    status: String,
    perf: BTreeMap<String, Vec<String>>,
}

impl Out {
    fn perf(&self, label: &str) -> String {
        self.perf.get(label).unwrap_or_else(|| panic!("no {label} in perfdata of {:?}", self.status)).join(";")
    }
}

fn parse(out: std::process::Output) -> Out {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "a plugin prints one line: {stdout:?} (stderr {:?})",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, perfdata) = lines[0].split_once(" | ").unwrap_or((lines[0], ""));
    let perf = perfdata
        .split_whitespace()
        .map(|item| {
            let (label, rest) = item.split_once('=').expect("label=value");
            (label.to_string(), rest.split(';').map(str::to_string).collect())
        })
        .collect();
    Out { code: out.status.code().expect("exit code"), status: status.to_string(), perf }
}

/// `lbctl check ARGS` over the socket, as a local check (NRPE) runs it.
fn socket_check(l: &LbLab, args: &[&str]) -> Out {
    parse(l.lbctl(&[&["check"], args].concat()))
}

/// `lbctl check ARGS` from the client namespace (pass `--api`), as a central Nagios on another host runs it.
fn http_check(l: &LbLab, args: &[&str]) -> Out {
    let lbctl = bin_path("lbctl");
    let mut a = vec![lbctl.to_str().unwrap(), "check"];
    a.extend_from_slice(args);
    parse(context(l.lab.exec_status(&l.lab.client(), &a), "lbctl check in the client namespace"))
}

#[test]
fn lbctl_check_reports_ok_warning_critical_and_unknown() {
    require_root();
    let mut l = context(LbLab::new(Mode::Skb, 2), "lab");
    let cfg = l.lab.dir.join("lb.toml");
    let mut toml = format!(
        "[[service]]\nvip = \"{VIP}:80\"\n[service.check]\nkind = \"http\"\ninterval = \"500ms\"\ntimeout = \"300ms\"\nrise = 2\nfall = 2\n"
    );
    for i in 0..2 {
        toml.push_str(&format!("[[service.real]]\naddr = \"{}\"\n", real_ip(i)));
    }
    std::fs::write(&cfg, toml).unwrap();
    let token_file = l.lab.dir.join("api.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let token = token_file.to_str().unwrap().to_string();
    let api = format!("http://{LB_IP}:9100");
    let listen = format!("{LB_IP}:9100");
    context(l.start_lbd(&["--config", cfg.to_str().unwrap(), "--api", &listen, "--api-token-file", &token]), "lbd");
    let svc = format!("{VIP}:80");
    context(
        wait_within(Duration::from_secs(10), "both reals up", || (0..2).all(|i| health(&l, &svc, &real_ip(i)) == "up")),
        "first checks",
    );
    let spread = context(l.spread(6), "traffic through the VIP");
    assert_eq!(spread.values().sum::<usize>(), 6, "{spread:?}");

    let lbctl = bin_path("lbctl");
    for (how, c) in [
        ("socket", socket_check(&l, &[&svc])),
        ("http", http_check(&l, &[&svc, "--api", &api, "--token-file", &token])),
    ] {
        assert_eq!(c.code, 0, "{how}: {}", c.status);
        assert_eq!(c.status, format!("LB OK - tcp {svc}: 2 of 2 reals usable"), "{how}");
        assert_eq!(c.perf("usable_reals"), "2;2:;1:;0;2", "{how}");
        assert_eq!(c.perf("reals"), "2;;;0", "{how}");
        assert_eq!(c.perf("new_flows"), "6c", "{how}: six connections went through");
        let packets = c.perf("packets");
        assert!(packets.ends_with('c') && packets.trim_end_matches('c').parse::<u64>().unwrap() >= 6 * 4, "{packets}");
        let bytes = c.perf("bytes");
        assert!(bytes.ends_with('c') && bytes.trim_end_matches('c').parse::<u64>().unwrap() > 0, "{bytes}");
        let active = c.perf("active_flows");
        assert!(active.ends_with(";;;0") && active.split(';').next().unwrap().parse::<u64>().is_ok(), "{active}");
    }

    // One of two reals down: WARNING by default, OK with thresholds that accept one.
    let pid = l.lab.pid_of("httpd-r2.log").expect("r2's httpd runs");
    context(l.lab.stop(pid, libc::SIGKILL).map(|_| ()), "stop r2's server");
    let r2 = real_ip(1);
    context(wait_within(Duration::from_secs(10), "r2 down", || health(&l, &svc, &r2) == "down"), "r2 down");
    let c = http_check(&l, &[&svc, "--api", &api, "--token-file", &token]);
    assert_eq!(c.code, 1, "{}", c.status);
    assert_eq!(c.status, format!("LB WARNING - tcp {svc}: 1 of 2 reals usable (not usable: {r2} down)"));
    assert_eq!(c.perf("usable_reals"), "1;2:;1:;0;2");
    let c = socket_check(&l, &[&svc, "--warning", "1:", "--critical", "@0"]);
    assert_eq!((c.code, c.perf("usable_reals")), (0, "1;1:;@0:0;0;2".to_string()), "{}", c.status);

    // None usable: CRITICAL.
    let pid = l.lab.pid_of("httpd-r1.log").expect("r1's httpd runs");
    context(l.lab.stop(pid, libc::SIGKILL).map(|_| ()), "stop r1's server");
    let r1 = real_ip(0);
    context(wait_within(Duration::from_secs(10), "r1 down", || health(&l, &svc, &r1) == "down"), "r1 down");
    let c = socket_check(&l, &[&svc]);
    assert_eq!(c.code, 2, "{}", c.status);
    assert_eq!(
        c.status,
        format!(
            "LB CRITICAL - tcp {svc}: 0 of 2 reals usable (not usable: {r1} down, {r2} down); SERVICE DOWN, new \
             connections to the VIP are reset"
        )
    );
    assert_eq!(c.perf("usable_reals"), "0;2:;1:;0;2");
    // A service lbd does not have is CRITICAL too: someone removed what Nagios watches.
    let c = http_check(&l, &[&format!("{VIP}:81/udp"), "--api", &api, "--token-file", &token]);
    assert_eq!(
        (c.code, c.status.as_str()),
        (2, format!("LB CRITICAL - udp {VIP}:81: no such service on lbd").as_str())
    );

    // UNKNOWN: an API that does not answer, a wrong token, no lbd on the socket, bad arguments.
    let c = http_check(&l, &[&format!("{VIP}:81"), "--api", &format!("http://{LB_IP}:9199"), "-t", "3s"]);
    assert_eq!(c.code, 3, "{}", c.status);
    assert!(
        c.status.starts_with(&format!("LB UNKNOWN - tcp {VIP}:81: GET http://{LB_IP}:9199/api/v1/services: ")),
        "{}",
        c.status
    );
    assert!(c.status.contains("refused"), "{}", c.status);
    assert!(c.perf.is_empty());
    let wrong = l.lab.dir.join("wrong.token");
    std::fs::write(&wrong, "not-the-token-of-this-lbd\n").unwrap();
    let c = http_check(&l, &[&svc, "--api", &api, "--token-file", wrong.to_str().unwrap()]);
    assert_eq!(c.code, 3, "{}", c.status);
    assert!(c.status.contains("HTTP 401"), "{}", c.status);
    let c = parse(
        std::process::Command::new(&lbctl)
            .args(["--socket", &l.lab.dir.join("nothing.sock").display().to_string(), "check", &svc])
            .output()
            .unwrap(),
    );
    assert_eq!(c.code, 3, "{}", c.status);
    assert!(c.status.starts_with(&format!("LB UNKNOWN - tcp {svc}: cannot reach lbd at ")), "{}", c.status);
    for (args, why) in [
        (vec![VIP], format!("LB UNKNOWN - bad argument: bad service address \"{VIP}\"")),
        (
            vec![svc.as_str(), "--warning", "5:1"],
            "LB UNKNOWN - bad argument: --warning: bad threshold range \"5:1\": its start is above its end".into(),
        ),
        (
            vec![svc.as_str(), "--critical", "many"],
            "LB UNKNOWN - bad argument: --critical: bad threshold range \"many\"".into(),
        ),
        (
            vec![svc.as_str(), "--frobnicate"],
            "LB UNKNOWN - bad argument: unexpected argument '--frobnicate' found".into(),
        ),
        (vec![], "LB UNKNOWN - bad argument: the following required arguments were not provided: <SERVICE>".into()),
    ] {
        let c = socket_check(&l, &args);
        assert_eq!(c.code, 3, "{args:?}: {}", c.status);
        assert!(c.status.starts_with(&why), "{args:?}: {}", c.status);
    }
}
