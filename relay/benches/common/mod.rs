//! Process and /proc helpers shared by the relay's benches: children killed on drop, CPU pinning, CPU time and RSS.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Child process killed (by its PID) on drop, so a failed bench leaves nothing running.
pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

pub fn require(tool: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{tool} not found: install Debian packages ffmpeg nginx-core libnginx-mod-rtmp util-linux");
}

pub fn free_port() -> u16 {
    lb_lab::ports::free_port()
}

pub fn wait_port(port: u16) {
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "nothing listening on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `METHOD path` on loopback `port` with `Connection: close`: the status and body, if it answers within 5 s.
pub fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").ok()?;
    let mut r = Vec::new();
    s.read_to_end(&mut r).ok()?;
    let r = String::from_utf8_lossy(&r);
    let status = r.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, r.split_once("\r\n\r\n")?.1.to_string()))
}

/// The body of `GET path` on the loopback API at `port`, if it answers.
pub fn api_get(port: u16, path: &str) -> Option<String> {
    http(port, "GET", path).map(|(_, b)| b)
}

/// Polls the origin's API until live/bench has a publisher.
pub fn wait_live(api_port: u16) {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let streams = api_get(api_port, "/streams").and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok());
        let live = streams
            .as_ref()
            .and_then(|v| v["streams"].as_array())
            .is_some_and(|a| a.iter().any(|s| s["app"] == "live" && s["key"] == "bench" && !s["source"].is_null()));
        if live {
            return;
        }
        assert!(Instant::now() < end, "the publisher did not go live on the origin (see publisher.log)");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn pin_self(cpu: usize) {
    // SAFETY: plain libc call on a zeroed cpu_set_t for this thread group.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Starts `program` pinned to `cpu` through taskset (which execs it, so the child's PID is the program's).
pub fn spawn(cpu: usize, program: &str, args: &[&str], log: &Path) -> Proc {
    let f = std::fs::File::create(log).unwrap();
    let child = Command::new("taskset")
        .arg("-c")
        .arg(cpu.to_string())
        .arg(program)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
    Proc(child)
}

/// CPU seconds (user + system) consumed so far by `pid` (`self` for this process).
pub fn cpu_secs(pid: impl std::fmt::Display) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process gone");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: trivial libc call.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process gone");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Our relay as origin on `cpu` with live/bench published into it: a fixed-bitrate test clip (testsrc2 + sine, x264
/// with a 2 s GOP) encoded once, then published in a loop as a stream copy so the publisher costs almost nothing.
/// Returns the origin, the publisher and the origin's RTMP port.
pub fn origin_with_stream(relay_bin: &str, dir: &Path, bitrate_kbps: u32, cpu: usize) -> (Proc, Proc, u16) {
    // A fixed-bitrate clip, encoded once, then published as a stream copy so the publisher costs ~nothing.
    let clip = dir.join("clip.flv");
    let br = format!("{}k", bitrate_kbps.saturating_sub(128).max(100));
    eprintln!("encoding a 20 s clip at ~{} kbit/s ...", bitrate_kbps);
    let st = Command::new("taskset")
        .args(["-c", &cpu.to_string(), "ffmpeg", "-nostdin", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=1000",
            "-t",
            "20",
        ])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-pix_fmt", "yuv420p"])
        .args(["-b:v", &br, "-maxrate", &br, "-bufsize", &br, "-c:a", "aac", "-b:a", "128k"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(st.success(), "encoding the clip failed");

    let (origin_port, origin_api) = (free_port(), free_port());
    let origin = spawn(
        cpu,
        relay_bin,
        &["origin", "--listen", &format!("127.0.0.1:{origin_port}"), "--api", &format!("127.0.0.1:{origin_api}")],
        &dir.join("origin.log"),
    );
    wait_port(origin_port);
    let origin_url = format!("rtmp://127.0.0.1:{origin_port}/live/bench");
    let publisher = spawn(
        cpu,
        "ffmpeg",
        &[
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
            clip.to_str().unwrap(),
            "-c",
            "copy",
            "-f",
            "flv",
            &origin_url,
        ],
        &dir.join("publisher.log"),
    );
    wait_live(origin_api);
    (origin, publisher, origin_port)
}
