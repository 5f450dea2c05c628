//! smd's state file and registrations without a lab (issue 29, items 2 and 19): a state file that becomes unwritable
//! raises an alarm and the maintenance asked meanwhile says it is not saved; once writable again the alarm clears
//! and a restart keeps the maintenance. Registrations past max_registered are refused, never-up ones expire, and
//! `smctl remove-node` forgets one. Runs smd on loopback with a configured edge that does not answer.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lb_lab::bin_path;

const TOKEN: &str = "0123456789abcdef-state-test";

struct Smd {
    child: Child,
    log: PathBuf,
}

impl Drop for Smd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    lb_lab::ports::free_port()
}

fn start(dir: &Path, port: u16, n: usize) -> Smd {
    let log = dir.join(format!("smd-{n}.log"));
    let child = Command::new(bin_path("smd"))
        .args(["--config", &dir.join("smd.toml").display().to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting smd");
    let smd = Smd { child, log };
    wait("smd answers /healthz", Duration::from_secs(10), || curl(port, "GET", "/healthz").0 == 200);
    smd
}

/// (status, body) of a request with the token.
fn curl(port: u16, method: &str, path: &str) -> (u16, String) {
    curl_body(port, method, path, None)
}

fn curl_body(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", "\n%{http_code}", "-X", method, "-H", &format!("Authorization: Bearer {TOKEN}")]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data", b]);
    }
    let out = cmd.arg(format!("http://127.0.0.1:{port}{path}")).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A registration over a plain socket (a flood is faster than a curl per request), one connection each.
fn raw_register(port: u16, name: &str) -> (u16, String) {
    use std::io::Write;
    let body = format!(r#"{{"name":"{name}","role":"edge","api":"http://127.0.0.1:1","rtmp":"127.0.0.2:1935"}}"#);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /api/v1/nodes HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: \
         application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let code = answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, answer.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_string()))
}

fn json(port: u16, path: &str) -> serde_json::Value {
    let (code, body) = curl(port, "GET", path);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits for `f` within `within`, failing the test with what it waited for.
fn wait(what: &str, within: Duration, f: impl FnMut() -> bool) {
    lb_tests::health::wait_within(within, what, f).unwrap_or_else(|e| panic!("{e}"));
}

fn raised(port: u16, kind: &str) -> bool {
    json(port, "/api/v1/alarms")["raised"].as_array().unwrap().iter().any(|a| a["kind"] == kind)
}

fn smctl(dir: &Path, port: u16, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin_path("smctl"))
        .args(["--api", &format!("http://127.0.0.1:{port}"), "--token-file", &dir.join("token").display().to_string()])
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("smctl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn setup(tag: &str) -> (Dir, u16) {
    setup_with(tag, "1s")
}

fn setup_with(tag: &str, expiry: &str) -> (Dir, u16) {
    let dir = std::env::temp_dir().join(format!("smd-state-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    std::fs::write(
        dir.join("smd.toml"),
        format!(
            r#"listen = "127.0.0.1:{port}"
token_file = "token"
state_file = "state/state.json"
keepalive = "200ms"
failover_time = "1s"
max_registered = 3
registration_expiry = "{expiry}"
[[pool]]
name = "edges"
[[node]]
name = "e1"
role = "edge"
api = "http://127.0.0.1:1"
rtmp = "127.0.0.1:1935"
"#
        ),
    )
    .unwrap();
    (Dir(dir), port)
}

#[test]
fn a_state_file_that_cannot_be_written_is_alarmed_reported_and_retried_and_a_restart_keeps_maintenance() {
    let (dir, port) = setup("write");
    let d = dir.0.clone();
    let state_dir = d.join("state");

    // --check runs the start's checks: the missing directory is created and a write probed there.
    let check = Command::new(bin_path("smd"))
        .args(["--config", &d.join("smd.toml").display().to_string(), "--check"])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(state_dir.is_dir(), "--check created the state directory");

    let smd = start(&d, port, 1);
    // The state directory becomes a file: every write fails, even for root.
    std::fs::remove_dir_all(&state_dir).unwrap();
    std::fs::write(&state_dir, "not a directory\n").unwrap();

    let (code, body) = curl(port, "POST", "/api/v1/nodes/e1/maintenance");
    assert_eq!(code, 500, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["message"], "maintenance on");
    assert_eq!(v["node"], "e1");
    let err = v["error"].as_str().unwrap();
    assert!(err.starts_with("maintenance on, but it is not saved: cannot write the state file"), "{err}");
    assert!(err.contains("a restart of smd would forget"), "{err}");
    assert!(raised(port, "state-not-saved"), "the alarm is raised");

    // Visible everywhere: metrics, smctl alarms, smctl check manager, and smctl's own answer (non-zero exit).
    let (_, metrics) = curl(port, "GET", "/metrics");
    assert!(metrics.contains("sm_alarms_active{kind=\"state-not-saved\"} 1"), "{metrics}");
    let (code, out) = smctl(&d, port, &["alarms"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("RAISED  state-not-saved"), "{out}");
    let (code, out) = smctl(&d, port, &["maintenance", "e1"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("already in maintenance, but it is not saved"), "{out}");
    let (code, out) = smctl(&d, port, &["check", "manager"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("MANAGER CRITICAL - manager: state-not-saved: cannot write the state file"), "{out}");

    // Retried every keepalive (200 ms), logged once for the episode: e1's node-down comes after failover_time
    // (1 s, five keepalives or more), each of them a failed write.
    wait("e1 down", Duration::from_secs(5), || raised(port, "node-down"));
    assert!(raised(port, "state-not-saved"), "still raised while the writes fail");

    // The directory comes back: the next keepalive writes, the alarm clears.
    std::fs::remove_file(&state_dir).unwrap();
    std::fs::create_dir(&state_dir).unwrap();
    wait("state-not-saved cleared", Duration::from_secs(5), || !raised(port, "state-not-saved"));
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("state.json")).unwrap()).unwrap();
    assert!(saved["maintenance"]["e1"]["since"].as_u64().is_some(), "{saved}");
    let log = std::fs::read_to_string(&smd.log).unwrap();
    assert_eq!(log.matches("alarm raised: cannot write the state file").count(), 1, "one warning per episode: {log}");
    let (code, out) = smctl(&d, port, &["check", "manager"]);
    assert_eq!(code, 1, "only e1's node-down is left, a warning: {out}");
    assert!(out.starts_with("MANAGER WARNING - manager: 1 alarms raised (node-down) | alarms=1;;;0"), "{out}");

    // A restart keeps the maintenance.
    drop(smd);
    let _smd = start(&d, port, 2);
    let e1 = json(port, "/api/v1/nodes/e1");
    assert!(e1["maintenance_since"].as_u64().is_some(), "{e1}");
    assert_ne!(e1["state"], "up");
}

#[test]
fn registrations_are_capped_expire_and_can_be_removed() {
    // Registrations expire after 3 s here: time to flood and remove before they do.
    let (dir, port) = setup_with("reg", "3s");
    let d = dir.0.clone();
    let smd = start(&d, port, 1);
    let reg = |name: &str| {
        let body = format!(r#"{{"name":"{name}","role":"edge","api":"http://127.0.0.1:1","rtmp":"127.0.0.2:1935"}}"#);
        curl_body(port, "POST", "/api/v1/nodes", Some(&body))
    };
    for n in ["r1", "r2", "r3"] {
        let (code, body) = reg(n);
        assert_eq!(code, 200, "{n}: {body}");
    }
    let (code, body) = reg("r4");
    assert_eq!(code, 409, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("3 self-registered nodes already (max_registered = 3)"), "{body}");
    assert_eq!(json(port, "/api/v1/nodes").as_array().unwrap().len(), 4, "e1 and r1-r3, not r4");
    // A flood past the cap: every one refused the same way, and the manager does not grow.
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", smd.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().to_string();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
    };
    let before = rss();
    for k in 0..300 {
        let (code, body) = raw_register(port, &format!("flood{k}"));
        assert_eq!(code, 409, "flood{k}: {body}");
        assert!(body.contains("registration refused"), "{body}");
    }
    let grown = rss().saturating_sub(before);
    assert!(grown < 20_000, "RSS grew {grown} kB over 300 refused registrations");
    assert_eq!(json(port, "/api/v1/nodes").as_array().unwrap().len(), 4);
    assert_eq!(json(port, "/api/v1/events?kind=node-registered").as_array().unwrap().len(), 3);

    // Removal: refused for a configured node, done for a registered one (API and smctl).
    let (code, body) = curl(port, "DELETE", "/api/v1/nodes/e1");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("is in the configuration file"), "{body}");
    let (code, out) = smctl(&d, port, &["remove-node", "r1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("node r1 removed"), "{out}");
    let (code, out) = smctl(&d, port, &["remove-node", "nope"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unknown node"), "{out}");

    // Never up: forgotten after registration_expiry (3 s), with an event each.
    wait("r2 and r3 expire", Duration::from_secs(10), || json(port, "/api/v1/nodes").as_array().unwrap().len() == 1);
    let removed = json(port, "/api/v1/events?kind=node-removed");
    assert_eq!(removed.as_array().unwrap().len(), 3, "{removed}");
    let (code, body) = reg("r5");
    assert_eq!(code, 200, "room again after expiry: {body}");
}

#[test]
fn smctl_reports_its_mistakes_clearly() {
    let (dir, port) = setup("ctl");
    let d = dir.0.clone();
    let _smd = start(&d, port, 1);
    // Global flags after the subcommand.
    let (code, out) = smctl(&d, port, &["events", "--json"]);
    assert_eq!(code, 0, "{out}");
    assert!(serde_json::from_str::<serde_json::Value>(&out).unwrap().is_array(), "{out}");
    // The missing argument is named in the Nagios line.
    let (code, out) = smctl(&d, port, &["check", "group"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("<NAME>"), "{out}");
    // A wrong token is an authentication failure, for commands and checks.
    std::fs::write(d.join("token"), "wrong-token-0123456789\n").unwrap();
    let (code, out) = smctl(&d, port, &["nodes"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("authentication failed"), "{out}");
    let (code, out) = smctl(&d, port, &["check", "pool", "edges"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("authentication failed") && !out.contains("did not answer"), "{out}");
    std::fs::write(d.join("token"), format!("{TOKEN}\n")).unwrap();
    // A closed pipe (`smctl nodes | head -0`) ends it quietly.
    let mut child = Command::new(bin_path("smctl"))
        .args(["--api", &format!("http://127.0.0.1:{port}"), "--token-file", &d.join("token").display().to_string()])
        .arg("nodes")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let st = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(st.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
}
