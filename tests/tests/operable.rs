//! Running the daemons as a service would (issue 26): `--version` of every binary, logs without colour codes off a
//! terminal and as JSON, systemd's readiness protocol, SIGHUP as a reload that never ends a daemon nor its players,
//! and the shipped units accepted by `systemd-analyze verify`. Root-free: loopback only.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lb_lab::bin_path;
use lb_tests::health::wait_within;

const BINARIES: [&str; 5] = ["lbd", "lbctl", "relay", "smd", "smctl"];

fn free_port() -> u16 {
    lb_lab::ports::free_port()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lbx-operable-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A daemon started by this test, its stderr in a file; killed by PID when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(bin: &str, args: &[&str], log: PathBuf, env: &[(&str, &Path)]) -> Daemon {
        let mut cmd = Command::new(bin_path(bin));
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
        cmd.env_remove("RUST_LOG").env_remove("LOG_FORMAT").env_remove("NO_COLOR");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon { child: cmd.spawn().unwrap_or_else(|e| panic!("{bin}: {e}")), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) of a child this test started.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits until the log has `n` lines containing `text`.
    fn wait_log(&self, text: &str, n: usize) {
        wait_within(Duration::from_secs(10), text, || self.log().matches(text).count() >= n)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_binary_says_its_own_name_version_and_commit() {
    let want_version = env!("CARGO_PKG_VERSION");
    for b in BINARIES {
        let out = Command::new(bin_path(b)).arg("--version").output().unwrap();
        assert!(out.status.success(), "{b} --version: {out:?}");
        let line = String::from_utf8(out.stdout).unwrap();
        let (name, rest) = line.trim().split_once(' ').unwrap_or_else(|| panic!("{b}: {line:?}"));
        assert_eq!(name, b);
        let (version, commit) = rest.split_once(' ').unwrap_or_else(|| panic!("{b}: {line:?}"));
        assert_eq!(version, want_version, "{b}");
        let commit = commit.strip_prefix('(').and_then(|c| c.strip_suffix(')')).unwrap();
        assert!(
            commit == "unknown" || (commit.len() == 7 && commit.bytes().all(|c| c.is_ascii_hexdigit())),
            "{b}: {commit:?}"
        );
    }
}

#[test]
fn logs_are_plain_without_colour_off_a_terminal_or_json_on_request() {
    let dir = scratch("logs");
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let plain = Daemon::start("relay", &["origin", "--listen", &listen], dir.join("plain.log"), &[]);
    plain.wait_log("relay listening", 1);
    let text = plain.log();
    assert!(!text.contains('\u{1b}'), "escape codes in a log file: {text:?}");
    assert!(text.contains(" INFO "), "{text}");
    drop(plain);

    let json = Daemon::start("relay", &["origin", "--listen", &listen, "--log-format", "json"], dir.join("j.log"), &[]);
    json.wait_log("relay listening", 1);
    json.signal(libc::SIGHUP);
    json.wait_log("SIGHUP: configuration valid and unchanged", 1);
    let text = json.log();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 3, "{text}");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string() && v["target"].is_string(), "{l}");
        assert!(v["fields"]["message"].is_string(), "{l}");
    }
    let listening = lines.iter().find(|l| l.contains("relay listening")).unwrap();
    let v: serde_json::Value = serde_json::from_str(listening).unwrap();
    assert_eq!(v["fields"]["role"], "origin");
    assert_eq!(v["fields"]["rtmp"], listen.as_str());
    drop(json);

    // A wrong format is the parser's refusal, with the choices.
    let out = Command::new(bin_path("smd")).args(["--log-format", "xml", "--config", "/nonexistent"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plain") && err.contains("json"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn systemd_hears_ready_and_stopping() {
    let dir = scratch("notify");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut relay =
        Daemon::start("relay", &["origin", "--listen", &listen], dir.join("r.log"), &[("NOTIFY_SOCKET", &sock_path)]);
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).unwrap_or_else(|e| panic!("no READY=1: {e}\n{}", relay.log()));
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert_eq!(msg, format!("READY=1\nSTATUS=relay origin on {listen}"));
    // Ready means serving: the RTMP port accepts.
    std::net::TcpStream::connect(&listen).unwrap();
    relay.signal(libc::SIGTERM);
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    wait_within(Duration::from_secs(10), "the relay to exit", || !relay.running()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_rereads_the_config_and_never_ends_a_daemon_or_its_players() {
    let dir = scratch("hup");
    let conf = dir.join("origin.toml");
    let port = free_port();
    let http = free_port();
    std::fs::write(&conf, format!("listen = \"127.0.0.1:{port}\"\nhttp-listen = \"127.0.0.1:{http}\"\n")).unwrap();
    let mut relay = Daemon::start("relay", &["origin", "--config", conf.to_str().unwrap()], dir.join("r.log"), &[]);
    relay.wait_log("relay listening", 1);

    // A publisher and an HTTP-FLV player.
    let mut publish: Vec<String> = lb_lab::FFMPEG_PUBLISH.iter().map(|s| s.to_string()).collect();
    publish.push(format!("rtmp://127.0.0.1:{port}/live/hup"));
    let mut ffmpeg = Command::new(&publish[0]);
    ffmpeg.args(&publish[1..]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut ffmpeg = ffmpeg.spawn().unwrap();
    let out = dir.join("play.flv");
    let mut curl = Command::new("curl")
        .args(["-sS", "-o", out.to_str().unwrap(), "--retry", "20", "--retry-all-errors", "--retry-delay", "0"])
        .arg(format!("http://127.0.0.1:{http}/live/hup.flv"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let size = || std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    wait_within(Duration::from_secs(20), "the player to get data", || size() > 50_000)
        .unwrap_or_else(|e| panic!("{e}\n{}", relay.log()));

    // Unchanged, broken, then changed: the relay stays, the player keeps receiving.
    relay.signal(libc::SIGHUP);
    relay.wait_log("SIGHUP: configuration valid and unchanged", 1);
    std::fs::write(&conf, format!("listen = \"127.0.0.1:{port}\"\nmax-pull = 5\n")).unwrap();
    relay.signal(libc::SIGHUP);
    relay.wait_log("SIGHUP: configuration refused", 1);
    let log = relay.log();
    assert!(log.contains("max_pull") || log.contains("max-pull"), "the refusal names the key:\n{log}");
    std::fs::write(
        &conf,
        format!(
            "listen = \"127.0.0.1:{port}\"\nhttp-listen = \"127.0.0.1:{http}\"\nmax-connections = 500\nhls-window = 8\n"
        ),
    )
    .unwrap();
    relay.signal(libc::SIGHUP);
    relay.wait_log("applied at the next start", 1);
    let log = relay.log();
    // A limit applies at once; the HLS window (the packagers are built at the start) waits.
    let line = log.lines().find(|l| l.contains("SIGHUP: applied")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("max_connections"), "{line}");
    let line = log.lines().find(|l| l.contains("applied at the next start")).unwrap();
    assert!(line.contains("hls_window") && !line.contains("max_connections"), "{line}");
    assert!(relay.running(), "the relay ended on SIGHUP:\n{log}");
    let before = size();
    wait_within(Duration::from_secs(10), "the player to keep receiving", || size() > before + 50_000).unwrap();
    assert!(curl.try_wait().unwrap().is_none(), "the player was cut");
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    let _ = curl.kill();
    let mut err = String::new();
    let _ = curl.stderr.take().unwrap().read_to_string(&mut err);
    let _ = curl.wait();
    drop(relay);

    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET /api/v1/nodes` of an smd on loopback, through curl: the node names it lists.
fn smd_nodes(api: u16, token: &str) -> Vec<String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("http://127.0.0.1:{api}/api/v1/nodes"))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let mut names: Vec<String> =
        v.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    names
}

#[test]
fn sighup_applies_an_edited_smd_config_live_and_refuses_a_broken_one() {
    let dir = scratch("smd-hup");
    let token = "0123456789abcdef-token";
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
    let api = free_port();
    // Nodes on ports nothing listens on: they refuse connections (down), which a reload does not care about.
    let node = |name: &str, role: &str, port: u16| {
        format!("[[node]]\nname = \"{name}\"\nrole = \"{role}\"\napi = \"http://127.0.0.1:{port}\"\nrtmp = \"127.0.0.1:{port}\"\n")
    };
    let base = format!(
        "listen = \"127.0.0.1:{api}\"\ntoken_file = \"token\"\nkeepalive = \"3s\"\n{}",
        node("e1", "edge", free_port())
    );
    let conf = dir.join("smd.toml");
    std::fs::write(&conf, &base).unwrap();
    let mut smd = Daemon::start("smd", &["--config", conf.to_str().unwrap()], dir.join("smd.log"), &[]);
    let pid = smd.child.id();
    wait_within(Duration::from_secs(10), "smd's API", || std::net::TcpStream::connect(("127.0.0.1", api)).is_ok())
        .unwrap_or_else(|e| panic!("{e}\n{}", smd.log()));
    assert_eq!(smd_nodes(api, token), ["e1"]);

    // A node added, the keepalive shortened and the listen address changed: the first two apply, the third waits.
    let other = free_port();
    let edited =
        base.replace("keepalive = \"3s\"", "keepalive = \"1s\"").replace(&format!(":{api}\""), &format!(":{other}\""))
            + &node("e9", "edge", free_port());
    std::fs::write(&conf, &edited).unwrap();
    smd.signal(libc::SIGHUP);
    smd.wait_log("SIGHUP: applied", 1);
    assert_eq!(smd_nodes(api, token), ["e1", "e9"], "the node is listed without a restart");
    assert!(smd.running(), "smd ended on SIGHUP:\n{}", smd.log());
    assert_eq!(smd.child.id(), pid);
    let log = smd.log();
    let applied = log.lines().find(|l| l.contains("SIGHUP: applied")).unwrap();
    assert!(applied.contains("node e9 added") && applied.contains("keepalive 3s -> 1s"), "{applied}");
    let later = log.lines().find(|l| l.contains("applied at the next start")).unwrap_or_else(|| panic!("{log}"));
    assert!(later.contains("listen") && !later.contains("node"), "{later}");
    // The event says so too.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("http://127.0.0.1:{api}/api/v1/events?kind=config-reloaded"))
        .output()
        .unwrap();
    let events: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(events.as_array().map(Vec::len), Some(1), "{events}");
    assert!(events[0]["message"].as_str().unwrap().contains("node e9 added"), "{events}");

    // A broken file: refused with the reason, smd keeps running with the nodes it has.
    std::fs::write(&conf, format!("{edited}keepalive = \"nonsense\"\n")).unwrap();
    smd.signal(libc::SIGHUP);
    smd.wait_log("SIGHUP: configuration refused", 1);
    let refused = smd.log().lines().find(|l| l.contains("configuration refused")).unwrap().to_string();
    assert!(refused.contains("keepalive"), "{refused}");
    // A member naming an unknown node: the whole file is checked as a start would.
    std::fs::write(
        &conf,
        format!("{edited}[[group]]\nname = \"g\"\napp = \"live\"\nmembers = [{{ node = \"nope\", priority = 1 }}]\n"),
    )
    .unwrap();
    smd.signal(libc::SIGHUP);
    smd.wait_log("SIGHUP: configuration refused", 2);
    assert!(smd.log().contains("nope"), "{}", smd.log());
    assert!(smd.running(), "smd ended on a broken file:\n{}", smd.log());
    assert_eq!(smd_nodes(api, token), ["e1", "e9"]);

    // The node leaves the file: forgotten live.
    std::fs::write(&conf, &base).unwrap();
    smd.signal(libc::SIGHUP);
    smd.wait_log("SIGHUP: applied", 2);
    assert_eq!(smd_nodes(api, token), ["e1"]);
    assert!(smd.log().contains("node e9 removed"), "{}", smd.log());
    drop(smd);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_shipped_units_pass_systemd_analyze_verify() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let units = root.join("scripts/systemd");
    let dir = scratch("units");
    let mut seen = 0;
    for e in std::fs::read_dir(&units).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("service") {
            continue;
        }
        // verify checks that ExecStart's program exists: point the packaged paths at this build.
        let text = std::fs::read_to_string(&p).unwrap();
        let mut text = text.replace("/usr/sbin/lbd", bin_path("lbd").to_str().unwrap());
        for b in ["relay", "smd"] {
            text = text.replace(&format!("/usr/bin/{b}"), bin_path(b).to_str().unwrap());
        }
        let name = p.file_name().unwrap().to_str().unwrap().replace("@.service", "@edge.service");
        let copy = dir.join(&name);
        std::fs::write(&copy, text).unwrap();
        let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&copy).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.trim().is_empty(), "{name}: {err}");
        let text = std::fs::read_to_string(&copy).unwrap();
        assert!(text.contains("Type=notify") && text.contains("ExecReload=/bin/kill -HUP $MAINPID"), "{name}");
        seen += 1;
    }
    assert_eq!(seen, 3, "lbd, relay@ and smd units");
    let _ = std::fs::remove_dir_all(&dir);
}
