//! Test harness: real processes (relay, ffmpeg, ffprobe, nginx) on loopback ports, killed on drop.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Tests in one file share two cores with x264 encoders: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fails (never skips) when a required external tool is missing.
pub fn require(tool: &str) {
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false)
            || Path::new(tool).is_file();
    assert!(found, "required tool {tool:?} not found: install Debian packages ffmpeg nginx-core libnginx-mod-rtmp (cargo xtask setup)");
}

/// A loopback port nobody listens on right now, never one a client's connection can take meanwhile.
pub fn free_port() -> u16 {
    lb_lab::ports::free_port()
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("relay-test-{}-{}-{}", std::process::id(), tag, free_port()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (SIGKILL) and reaped on drop, including during a panic.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: Option<PathBuf>,
}

impl Proc {
    /// Spawns with stderr (and stdout unless piped by the caller) going to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: Option<PathBuf>) -> Self {
        cmd.stdin(Stdio::null());
        if let Some(l) = &log {
            let f = std::fs::File::create(l).unwrap();
            cmd.stderr(f.try_clone().unwrap());
        } else {
            cmd.stderr(Stdio::null());
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Self { name: name.to_string(), child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        self.log.as_ref().and_then(|l| std::fs::read_to_string(l).ok()).unwrap_or_default()
    }

    /// Waits up to `limit` for exit; None if still running.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let what = format!("{} to exit", self.name);
        lb_lab::wait::wait_for(limit, &what, || self.child.try_wait().unwrap()).ok().map(|(s, _)| s)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            eprintln!("---- last log lines of {} ----", self.name);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Polls until a TCP connect to `addr` succeeds.
pub fn wait_port(addr: SocketAddr, limit: Duration) {
    wait_for(&format!("something to listen on {addr}"), limit, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
    });
}

/// Polls `f` until it returns Some, failing the test with `what` after `limit` (the lab's
/// [`lb_lab::wait::wait_for`], panicking as these tests do).
pub fn wait_for<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    lb_lab::wait::wait_for(limit, what, f).map(|(v, _)| v).unwrap_or_else(|e| panic!("{e}"))
}

/// Minimal HTTP/1.1 client for the relay API: (status code, body). One request per connection.
pub fn http(method: &str, addr: SocketAddr, path: &str) -> (u16, String) {
    http_with(method, addr, path, &[("Host", &addr.to_string())])
}

/// `http` with exactly these extra header lines (no Host unless given).
pub fn http_with(method: &str, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("API connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

pub fn streams(api: SocketAddr) -> serde_json::Value {
    let (code, body) = http("GET", api, "/streams");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A metric's value (first sample of that name) from GET /metrics, which must be valid Prometheus text with the
/// relay's role label on every sample.
pub fn metric(api: SocketAddr, name: &str) -> f64 {
    let (code, body) = http("GET", api, "/metrics");
    assert_eq!(code, 200, "{body}");
    let parsed = svc::metrics::parse(&body).unwrap_or_else(|e| panic!("bad metrics text ({e}):\n{body}"));
    for (n, samples) in &parsed {
        assert!(samples.iter().all(|(labels, _)| labels.first().is_some_and(|(k, _)| k == "role")), "{n}: {body}");
    }
    parsed.get(name).and_then(|s| s.first()).map(|s| s.1).unwrap_or_else(|| panic!("metric {name} missing in:\n{body}"))
}

/// The stream entry app/key from GET /streams, if present.
pub fn stream_entry(api: SocketAddr, app: &str, key: &str) -> Option<serde_json::Value> {
    streams(api)["streams"].as_array()?.iter().find(|s| s["app"] == app && s["key"] == key).cloned()
}

/// A relay process with its RTMP and API addresses.
pub struct Relay {
    pub proc: Proc,
    pub rtmp: SocketAddr,
    pub api: SocketAddr,
}

impl Relay {
    fn start(role: &str, port: u16, args: &[String], dir: &TempDir) -> Self {
        let rtmp: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relay"));
        cmd.arg(role).arg("--listen").arg(rtmp.to_string()).arg("--api").arg(api.to_string()).args(args);
        cmd.env("RUST_LOG", "info,relay=debug").env("NO_COLOR", "1").stdout(Stdio::null());
        let proc =
            Proc::spawn(&format!("relay {role} :{port}"), cmd, Some(dir.path(&format!("relay-{role}-{port}.log"))));
        wait_port(rtmp, Duration::from_secs(10));
        wait_port(api, Duration::from_secs(10));
        Self { proc, rtmp, api }
    }

    pub fn origin(dir: &TempDir, args: &[&str]) -> Self {
        Self::origin_on(dir, free_port(), args)
    }

    pub fn origin_on(dir: &TempDir, port: u16, args: &[&str]) -> Self {
        Self::start("origin", port, &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(), dir)
    }

    /// An edge pulling app `live` from `origins` (host:port).
    pub fn edge(dir: &TempDir, origins: &[SocketAddr], args: &[&str]) -> Self {
        let mut a: Vec<String> = Vec::new();
        for o in origins {
            a.push("--origin".into());
            a.push(format!("rtmp://{o}/live"));
        }
        a.extend(args.iter().map(|s| s.to_string()));
        Self::start("edge", free_port(), &a, dir)
    }

    pub fn url(&self, key: &str) -> String {
        format!("rtmp://{}/live/{key}", self.rtmp)
    }
}

/// ffmpeg publishing a generated H.264/AAC 640x360 test stream (as in NOTES.md) to `url`.
pub fn publish(dir: &TempDir, url: &str, extra_output_args: &[&str]) -> Proc {
    require("ffmpeg");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=1000"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "60", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac"])
        .args(extra_output_args)
        .args(["-f", "flv", url])
        .stdout(Stdio::null());
    Proc::spawn(&format!("ffmpeg publish {url}"), cmd, Some(dir.path(&format!("publish-{}.log", free_port()))))
}

/// Waits until `api` reports a source on live/key.
pub fn wait_live(api: SocketAddr, key: &str) {
    wait_for(&format!("live/{key} to have a source on {api}"), Duration::from_secs(15), || {
        stream_entry(api, "live", key).filter(|s| !s["source"].is_null())
    });
}

/// Runs a command to completion with a wall-clock limit; returns (success, stdout, stderr).
pub fn run_limited(mut cmd: Command, limit: Duration) -> (bool, String, String) {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = lb_lab::wait::wait_for(limit, "the command to finish", || child.try_wait().unwrap()).ok();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let status = status.map(|(s, _)| s);
    let (o, e) = (t_out.join().unwrap(), t_err.join().unwrap());
    (status.is_some_and(|s| s.success()), o, e)
}

/// ffprobe's view of the streams at `url`, as "codec:WxH" / "codec" entries.
pub fn probe(url: &str) -> Vec<String> {
    require("ffprobe");
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "compact", url]);
    let (ok, out, err) = run_limited(cmd, Duration::from_secs(20));
    assert!(ok, "ffprobe {url} failed: {err}");
    out.lines()
        .map(|l| {
            let f: std::collections::HashMap<&str, &str> =
                l.split('|').skip(1).filter_map(|kv| kv.split_once('=')).collect();
            match (f.get("codec_name"), f.get("width"), f.get("height")) {
                (Some(c), Some(w), Some(h)) if *w != "N/A" => format!("{c}:{w}x{h}"),
                (Some(c), _, _) => c.to_string(),
                _ => l.to_string(),
            }
        })
        .collect()
}

pub fn assert_h264_aac(url: &str) {
    let s = probe(url);
    assert!(s.contains(&"h264:640x360".to_string()) && s.contains(&"aac".to_string()), "ffprobe {url}: {s:?}");
}

/// ffmpeg player that copies `frames` video frames to null; returns the frame count it reported.
pub fn ffmpeg_player(url: &str, frames: u32) -> Command {
    require("ffmpeg");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-loglevel", "error", "-i", url, "-map", "0:v", "-c", "copy"]).args([
        "-frames:v",
        &frames.to_string(),
        "-f",
        "null",
        "-",
        "-progress",
        "pipe:1",
    ]);
    cmd
}

/// Last `frame=N` in ffmpeg's `-progress` output.
pub fn progress_frames(out: &str) -> u64 {
    out.lines().rev().filter_map(|l| l.strip_prefix("frame=")).find_map(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Streams ffprobe's per-packet output (stream index, dts in ms) with arrival times, in a thread.
pub struct PacketWatch {
    pub proc: Proc,
    pub packets: std::sync::Arc<Mutex<Vec<(Instant, String, i64)>>>,
}

impl PacketWatch {
    pub fn start(url: &str, dir: &TempDir) -> Self {
        require("ffprobe");
        let mut cmd = Command::new("ffprobe");
        cmd.args(["-v", "error", "-show_entries", "packet=codec_type,dts", "-of", "csv=p=0", url])
            .stdout(Stdio::piped());
        let mut proc =
            Proc::spawn(&format!("ffprobe packets {url}"), cmd, Some(dir.path(&format!("probe-{}.log", free_port()))));
        let out = proc.child.stdout.take().unwrap();
        let packets = std::sync::Arc::new(Mutex::new(Vec::new()));
        let p2 = packets.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut it = line.split(',');
                let (Some(kind), Some(dts)) = (it.next(), it.next()) else {
                    continue;
                };
                if let Ok(d) = dts.trim().parse::<i64>() {
                    p2.lock().unwrap().push((Instant::now(), kind.to_string(), d));
                }
            }
        });
        Self { proc, packets }
    }

    pub fn video_count(&self) -> usize {
        self.packets.lock().unwrap().iter().filter(|p| p.1 == "video").count()
    }

    pub fn video_after(&self, t: Instant) -> usize {
        self.packets.lock().unwrap().iter().filter(|p| p.1 == "video" && p.0 > t).count()
    }

    pub fn video_dts(&self) -> Vec<i64> {
        self.packets.lock().unwrap().iter().filter(|p| p.1 == "video").map(|p| p.2).collect()
    }
}

/// Plays live/test with a tiny receive buffer and then never reads again.
pub fn stalled_player(addr: SocketAddr) -> std::net::TcpStream {
    let sock = socket_with_small_rcvbuf(addr);
    let mut s = sock;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (mut hs, c0c1) = relay::proto::HandshakeState::client().unwrap();
    s.write_all(&c0c1).unwrap();
    let mut buf = [0u8; 4096];
    let mut rest = loop {
        let n = s.read(&mut buf).unwrap();
        match hs.feed(&buf[..n]).unwrap() {
            relay::proto::HandshakeStep::Continue { reply } => s.write_all(&reply).unwrap(),
            relay::proto::HandshakeStep::Done { reply, rest } => {
                s.write_all(&reply).unwrap();
                break rest;
            }
        }
    };
    let mut out = bytes::BytesMut::new();
    let mut c =
        relay::proto::ClientSession::new(Default::default(), "live", &format!("rtmp://{addr}/live"), "test", &mut out)
            .unwrap();
    let mut events = Vec::new();
    loop {
        c.feed(&rest, &mut out, &mut events).unwrap();
        s.write_all(&out.split()).unwrap();
        if events.iter().any(|e| matches!(e, relay::proto::ClientEvent::Playing)) {
            return s;
        }
        let n = s.read(&mut buf).unwrap();
        rest = buf[..n].to_vec();
    }
}

pub fn socket_with_small_rcvbuf(addr: SocketAddr) -> TcpStream {
    // SO_RCVBUF must be set before connect to limit the advertised window.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 4096;
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &size as *const _ as *const libc::c_void, 4);
        let SocketAddr::V4(v4) = addr else { panic!("v4 only") };
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
        std::os::fd::FromRawFd::from_raw_fd(fd)
    }
}

/// A TCP connection that completed the RTMP handshake with the relay.
pub fn handshaken(addr: SocketAddr) -> TcpStream {
    use relay::proto::{HandshakeState, HandshakeStep};
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (mut hs, c0c1) = HandshakeState::client().unwrap();
    s.write_all(&c0c1).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "relay closed during a valid handshake");
        match hs.feed(&buf[..n]).unwrap() {
            HandshakeStep::Continue { reply } => s.write_all(&reply).unwrap(),
            HandshakeStep::Done { reply, .. } => {
                s.write_all(&reply).unwrap();
                return s;
            }
        }
    }
}
