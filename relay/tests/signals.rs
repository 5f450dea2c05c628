//! The relay under an operator's signals, with real clients (ffmpeg publishing, curl playing HTTP-FLV): SIGHUP
//! swaps the reloadable settings (a limit, the API token) while a player keeps receiving, and SIGTERM drains
//! (listeners closed, players served until they leave or `--drain-timeout`), or stops at once with 0.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// curl playing `url` into `out` (HTTP-FLV), retrying until the stream is there.
fn player(dir: &TempDir, url: &str, out: &Path) -> Proc {
    require("curl");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", out.to_str().unwrap(), "--retry", "20", "--retry-all-errors", "--retry-delay", "0", url]);
    cmd.stdout(Stdio::null());
    Proc::spawn(&format!("curl {url}"), cmd, Some(dir.path(&format!("curl-{}.log", free_port()))))
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Waits until `file` grew by `by` bytes from now.
fn grows(file: &Path, by: u64, what: &str) {
    let before = size(file);
    wait_for(what, Duration::from_secs(15), || (size(file) >= before + by).then_some(()));
}

/// A stream manager that answers every request `200 {}` and records each request line.
fn fake_manager() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut r = BufReader::new(c.try_clone().unwrap());
            let (mut first, mut len) = (String::new(), 0usize);
            let _ = r.read_line(&mut first);
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            s.lock().unwrap().push(first.trim().to_string());
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
        }
    });
    (addr, seen)
}

fn signal(p: &Proc, sig: i32) {
    // SAFETY: kill(2) of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(p.pid() as i32, sig) }, 0);
}

fn wait_log(p: &Proc, text: &str, n: usize) {
    wait_for(&format!("{n} log lines with {text:?}"), Duration::from_secs(10), || {
        (p.log_text().matches(text).count() >= n).then_some(())
    });
}

fn write_config(path: &PathBuf, http: SocketAddr, token: &str, max_connections: u32) {
    std::fs::write(
        path,
        format!("http-listen = \"{http}\"\napi-token = \"{token}\"\nmax-connections = {max_connections}\n"),
    )
    .unwrap();
}

#[test]
fn sighup_swaps_limits_and_the_token_while_a_player_keeps_playing() {
    let _g = serial();
    let dir = TempDir::new("hup");
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let conf = dir.path("origin.toml");
    let (old, new) = ("old-token-0123456789", "new-token-9876543210");
    write_config(&conf, http, old, 100);
    let mut origin = Relay::origin(&dir, &["--config", conf.to_str().unwrap()]);
    let _pub = publish(&dir, &origin.url("hup"), &[]);
    let bearer = |t: &str| format!("Bearer {t}");
    let status = |t: &str| http_with("GET", origin.api, "/status", &[("Authorization", &bearer(t))]).0;
    assert_eq!(status(old), 200);
    let flv = format!("http://{http}/live/hup.flv");
    let out = dir.path("play.flv");
    let mut play = player(&dir, &flv, &out);
    grows(&out, 50_000, "the player to receive");
    let pid = origin.proc.pid();

    // Two media connections are open (the publisher and the player): a limit of 2 leaves no room for a third.
    write_config(&conf, http, new, 2);
    signal(&origin.proc, libc::SIGHUP);
    wait_log(&origin.proc, "SIGHUP: applied", 1);
    let log = origin.proc.log_text();
    let line = log.lines().find(|l| l.contains("SIGHUP: applied")).unwrap();
    assert!(line.contains("api_token") && line.contains("max_connections"), "{line}");
    assert!(!log.contains(new) && !log.contains(old), "a token value reached the log:\n{log}");
    assert!(!log.contains("applied at the next start"), "{log}");

    // The player saw nothing: same process, same curl, its bytes keep growing.
    grows(&out, 100_000, "the player to keep receiving across the reload");
    assert!(play.is_running(), "the player was cut");
    assert!(origin.proc.is_running());
    assert_eq!(origin.proc.pid(), pid);
    // The API wants the new token now.
    assert_eq!(status(old), 401);
    assert_eq!(status(new), 200);
    // The new limit holds for a new player: closed at accept.
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "-o", "/dev/null", &flv]);
    let (ok, _, err) = run_limited(cmd, Duration::from_secs(10));
    assert!(!ok, "a third media connection was served past max-connections 2");
    assert!(err.contains("Empty reply") || err.contains("reset") || err.contains("Recv failure"), "{err}");
    wait_log(&origin.proc, "connection limit reached (--max-connections)", 1);
    grows(&out, 50_000, "the first player to still receive");

    // A limit out of its range is refused with the reason; the running settings stay.
    write_config(&conf, http, new, 0);
    signal(&origin.proc, libc::SIGHUP);
    wait_log(&origin.proc, "SIGHUP: configuration refused", 1);
    assert!(origin.proc.log_text().contains("--max-connections"), "{}", origin.proc.log_text());
    assert_eq!(status(new), 200);
    play.kill();
}

/// An edge of `origin` with HTTP-FLV and these extra flags; returns it and its HTTP-FLV URL of live/`key`.
fn edge(dir: &TempDir, origin: &Relay, key: &str, extra: &[&str]) -> (Relay, SocketAddr, String) {
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let hs = http.to_string();
    let mut args = vec!["--http-listen", hs.as_str()];
    args.extend_from_slice(extra);
    let e = Relay::edge(dir, &[origin.rtmp], &args);
    wait_port(http, Duration::from_secs(10));
    (e, http, format!("http://{http}/live/{key}.flv"))
}

#[test]
fn sigterm_drains_players_until_they_leave_or_the_timeout_and_zero_stops_at_once() {
    let _g = serial();
    let dir = TempDir::new("drain");
    let origin = Relay::origin(&dir, &[]);
    let _pub = publish(&dir, &origin.url("d"), &[]);
    wait_live(origin.api, "d");

    // 1. A player that stays: served through the drain, the relay exits at the timeout.
    let (mut e, http, flv) = edge(&dir, &origin, "d", &["--drain-timeout", "3s"]);
    let out = dir.path("p1.flv");
    let _p1 = player(&dir, &flv, &out);
    grows(&out, 50_000, "player 1 to receive");
    let t = Instant::now();
    signal(&e.proc, libc::SIGTERM);
    wait_log(&e.proc, "draining", 1);
    grows(&out, 50_000, "player 1 to keep receiving while the edge drains");
    assert!(TcpStream::connect_timeout(&e.rtmp, Duration::from_secs(1)).is_err(), "RTMP still accepts");
    assert!(TcpStream::connect_timeout(&http, Duration::from_secs(1)).is_err(), "HTTP media still accepts");
    let st =
        e.proc.wait_timeout(Duration::from_secs(3 + 2 + 1)).expect("the edge did not exit after its drain timeout");
    let took = t.elapsed();
    assert_eq!(st.code(), Some(0));
    assert!(took >= Duration::from_millis(2900), "exited after {took:?}, before the drain timeout of 3 s");
    assert!(took <= Duration::from_secs(5), "exited after {took:?}, past the drain timeout + 2 s");
    assert!(e.proc.log_text().contains("drain timeout passed"), "{}", e.proc.log_text());

    // 2. A player that leaves: the relay exits soon after it, long before the timeout. Under a manager, the drain
    // starts by asking the manager for the node's maintenance.
    let (manager, requests) = fake_manager();
    let manager = format!("http://{manager}");
    let (mut e, _, flv) = edge(
        &dir,
        &origin,
        "d",
        &["--drain-timeout", "60s", "--manager", &manager, "--node-name", "e7", "--api-token", "edge-token-0123456789"],
    );
    wait_for("the edge to register", Duration::from_secs(10), || {
        requests.lock().unwrap().iter().any(|r| r.starts_with("POST /api/v1/nodes ")).then_some(())
    });
    let out = dir.path("p2.flv");
    let mut p2 = player(&dir, &flv, &out);
    grows(&out, 50_000, "player 2 to receive");
    signal(&e.proc, libc::SIGTERM);
    wait_log(&e.proc, "draining", 1);
    grows(&out, 30_000, "player 2 to keep receiving while the edge drains");
    assert!(e.proc.is_running());
    let left = Instant::now();
    p2.kill();
    let st = e.proc.wait_timeout(Duration::from_secs(3)).expect("the edge did not exit once its player left");
    assert_eq!(st.code(), Some(0));
    assert!(left.elapsed() <= Duration::from_secs(2), "exited {:?} after the player left", left.elapsed());
    assert!(e.proc.log_text().contains("drained: no player left"), "{}", e.proc.log_text());
    let asked = requests.lock().unwrap().clone();
    assert!(asked.iter().any(|r| r.starts_with("POST /api/v1/nodes/e7/maintenance ")), "{asked:?}");

    // 3. --drain-timeout 0: it stops at once, players or not.
    let (mut e, _, flv) = edge(&dir, &origin, "d", &["--drain-timeout", "0"]);
    let out = dir.path("p3.flv");
    let _p3 = player(&dir, &flv, &out);
    grows(&out, 50_000, "player 3 to receive");
    let t = Instant::now();
    signal(&e.proc, libc::SIGTERM);
    let st = e.proc.wait_timeout(Duration::from_secs(3)).expect("the edge did not stop at once");
    assert_eq!(st.code(), Some(0));
    assert!(t.elapsed() <= Duration::from_secs(2), "took {:?}", t.elapsed());
    assert!(!e.proc.log_text().contains("draining"), "{}", e.proc.log_text());

    // Out of range: refused with the reason.
    let out = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["edge", "--listen", "127.0.0.1:1", "--origin", "rtmp://127.0.0.1:1/live", "--drain-timeout", "61m"])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--drain-timeout") && err.contains("range"), "{err}");
}
