//! Redundant sources on an origin: a main and a backup ffmpeg encoder push one key (`?role=backup`), RTMP and
//! HTTP-FLV players decode it; the main is killed (-9) and restarted, and a flapping main is not switched back to.
mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// One GOP of the test encoders: `-g 60` at 30 fps.
const GOP: Duration = Duration::from_secs(2);
/// The relay's default `source_timeout` and `source_stable_for`.
const SOURCE_TIMEOUT: Duration = Duration::from_secs(1);
const STABLE_FOR: Duration = Duration::from_secs(5);

/// An encoder pushing `pattern` at `size` to `url` (30 fps, a keyframe every 2 s, H.264 + AAC).
fn encoder(dir: &TempDir, url: &str, pattern: &str, size: &str) -> Proc {
    require("ffmpeg");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", &format!("{pattern}=size={size}:rate=30")])
        .args(["-f", "lavfi", "-i", "sine=frequency=1000"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "60", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-f", "flv", url])
        .stdout(Stdio::null());
    Proc::spawn(&format!("ffmpeg {pattern} {url}"), cmd, Some(dir.path(&format!("enc-{}.log", free_port()))))
}

/// A player that decodes the stream (ffprobe -show_frames) and records each video frame's arrival, DTS and size.
struct Viewer {
    proc: Proc,
    frames: Arc<Mutex<Vec<(Instant, i64, String)>>>,
}

impl Viewer {
    fn start(url: &str, dir: &TempDir) -> Self {
        require("ffprobe");
        // Line-buffered, so each frame's line leaves ffprobe when it is decoded (arrival times are the stall).
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-oL", "ffprobe", "-v", "error", "-select_streams", "v", "-show_frames"])
            .args(["-show_entries", "frame=pkt_dts,width,height", "-of", "compact", url])
            .stdout(Stdio::piped());
        let mut proc =
            Proc::spawn(&format!("viewer {url}"), cmd, Some(dir.path(&format!("viewer-{}.log", free_port()))));
        let out = proc.child.stdout.take().unwrap();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let f2 = frames.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let kv: std::collections::HashMap<&str, &str> =
                    line.split('|').skip(1).filter_map(|kv| kv.split_once('=')).collect();
                let (Some(dts), Some(w), Some(h)) = (kv.get("pkt_dts"), kv.get("width"), kv.get("height")) else {
                    continue;
                };
                if let Ok(d) = dts.parse::<i64>() {
                    f2.lock().unwrap().push((Instant::now(), d, format!("{w}x{h}")));
                }
            }
        });
        Self { proc, frames }
    }

    /// Frames of `size` that arrived after `t`.
    fn count_after(&self, t: Instant, size: &str) -> usize {
        self.frames.lock().unwrap().iter().filter(|f| f.0 > t && f.2 == size).count()
    }

    fn snapshot(&self) -> Vec<(Instant, i64, String)> {
        self.frames.lock().unwrap().clone()
    }
}

/// GET /sources/live/KEY.
fn key_sources(api: SocketAddr, key: &str) -> serde_json::Value {
    let (code, body) = http("GET", api, &format!("/sources/live/{key}"));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn healthy(v: &serde_json::Value, role: &str) -> bool {
    v["sources"].as_array().unwrap().iter().any(|s| s["role"] == role && s["healthy"] == true)
}

/// The largest gap between two frames' arrivals within [from, to], and the largest DTS step there.
fn worst_gap(frames: &[(Instant, i64, String)], from: Instant, to: Instant) -> (Duration, i64) {
    let w: Vec<_> = frames.iter().filter(|f| f.0 >= from && f.0 <= to).collect();
    let gap = w.windows(2).map(|p| p[1].0 - p[0].0).max().unwrap_or_default();
    let step = w.windows(2).map(|p| p[1].1 - p[0].1).max().unwrap_or_default();
    (gap, step)
}

/// DTS never go back for a player, over its whole life.
fn assert_monotonic(name: &str, frames: &[(Instant, i64, String)]) {
    for p in frames.windows(2) {
        assert!(p[1].1 >= p[0].1, "{name}: DTS went back from {} to {} ({} -> {})", p[0].1, p[1].1, p[0].2, p[1].2);
    }
}

#[test]
fn a_killed_main_encoder_hands_over_to_the_backup_and_comes_back_after_stable_for() {
    let _g = serial();
    let dir = TempDir::new("redundant");
    let http_port = free_port();
    let http_addr = format!("127.0.0.1:{http_port}");
    let origin = Relay::origin(&dir, &["--http-listen", &http_addr]);
    let url = origin.url("cam1");
    let mut main = encoder(&dir, &url, "testsrc2", "640x360");
    wait_live(origin.api, "cam1");
    let _backup = encoder(&dir, &format!("{url}?role=backup"), "smptebars", "320x180");
    let v = wait_for("main live and the backup warm", Duration::from_secs(15), || {
        let v = key_sources(origin.api, "cam1");
        (healthy(&v, "main") && healthy(&v, "backup")).then_some(v)
    });
    assert_eq!(v["live"], "main");
    assert_eq!((v["source_timeout_ms"].as_u64(), v["source_stable_for_ms"].as_u64()), (Some(1000), Some(5000)));
    // A third encoder in a role already fed, and one in a role the key does not have, are refused.
    for (role, why) in [("backup", "busy"), ("spare", "unknown ?role=")] {
        let mut extra = encoder(&dir, &format!("{url}?role={role}"), "testsrc", "160x120");
        assert!(extra.wait_timeout(Duration::from_secs(10)).is_some_and(|s| !s.success()), "a second {role} exits");
        assert!(
            origin.proc.log_text().contains(if role == "backup" { "key already published" } else { "unknown role" }),
            "{why}"
        );
    }

    let players: Vec<(String, Viewer)> = [
        ("rtmp 1", url.clone()),
        ("rtmp 2", url.clone()),
        ("http-flv 1", format!("http://{http_addr}/live/cam1.flv")),
        ("http-flv 2", format!("http://{http_addr}/live/cam1.flv")),
    ]
    .into_iter()
    .map(|(n, u)| (n.to_string(), Viewer::start(&u, &dir)))
    .collect();
    let t = Instant::now();
    wait_for("every player decoding main (640x360)", Duration::from_secs(20), || {
        players.iter().all(|(_, p)| p.count_after(t, "640x360") >= 30).then_some(())
    });

    // HLS has main's segments before the switch.
    let hls: SocketAddr = http_addr.parse().unwrap();
    let main_map = wait_for("main's HLS segments", Duration::from_secs(15), || {
        let (code, body) = http("GET", hls, "/live/cam1/index.m3u8");
        let map = body.lines().find(|l| l.starts_with("#EXT-X-MAP:")).map(str::to_string);
        (code == 200 && body.matches("#EXTINF").count() >= 2).then_some(map).flatten()
    });

    // Main dies without a word: the backup's warm GOP goes on at once.
    let killed = Instant::now();
    main.kill();
    wait_for("every player decoding the backup (320x180)", Duration::from_secs(15), || {
        players.iter().all(|(_, p)| p.count_after(killed, "320x180") >= 60).then_some(())
    });
    let v = key_sources(origin.api, "cam1");
    assert_eq!((v["live"].as_str(), v["switches"].as_u64()), (Some("backup"), Some(1)), "{v}");
    let bound = SOURCE_TIMEOUT + GOP;
    for (name, p) in &players {
        let frames = p.snapshot();
        let (gap, step) = worst_gap(&frames, killed - Duration::from_secs(1), Instant::now());
        println!("{name}: worst stall across the switch to the backup {gap:?}, largest DTS step {step} ms");
        assert!(gap <= bound, "{name}: stalled {gap:?} (bound {bound:?})");
        assert!(step > 0 && step <= bound.as_millis() as i64, "{name}: DTS step {step} ms");
        assert_monotonic(name, &frames);
    }

    // HLS goes on through the switch: the backup's new codec configuration (another resolution) is a new init
    // segment behind EXT-X-DISCONTINUITY, and the program date-times keep moving forward.
    let last = std::cell::RefCell::new(String::new());
    let playlist = lb_lab::wait::wait_for(Duration::from_secs(15), "a discontinuity in the HLS playlist", || {
        let (code, body) = http("GET", hls, "/live/cam1/index.m3u8");
        *last.borrow_mut() = format!("{code} {body}");
        (code == 200 && body.contains("#EXT-X-DISCONTINUITY\n")).then_some(body)
    })
    .map(|(v, _)| v)
    .unwrap_or_else(|e| {
        let log = origin.proc.log_text();
        let lines: Vec<&str> =
            log.lines().filter(|l| l.contains("HLS") || l.contains("switched") || l.contains("WARN")).collect();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        panic!("{e} (now {now} ms); the last playlist: {}\nlog: {}", last.borrow(), lines.join("\n"))
    });
    let maps = playlist.lines().filter(|l| l.starts_with("#EXT-X-MAP:")).collect::<std::collections::BTreeSet<_>>();
    assert!(maps.len() >= 2 && maps.contains(main_map.as_str()), "main's init and the backup's: {playlist}");
    let dates: Vec<&str> = playlist.lines().filter_map(|l| l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:")).collect();
    assert!(dates.len() >= 2 && dates.windows(2).all(|w| w[0] < w[1]), "dates move forward: {playlist}");

    // Main comes back: the players return to it only after it delivered source_stable_for.
    let _main = encoder(&dir, &url, "testsrc2", "640x360");
    let up = wait_for("main back and healthy", Duration::from_secs(15), || {
        healthy(&key_sources(origin.api, "cam1"), "main").then(Instant::now)
    });
    let back = wait_for("main live again", STABLE_FOR + GOP + Duration::from_secs(5), || {
        (key_sources(origin.api, "cam1")["live"] == "main").then(Instant::now)
    });
    let waited = back - up;
    println!("switched back {waited:?} after main was healthy again");
    // The poll runs every few ms; healthy is seen at most one poll after the first frame.
    assert!(waited >= STABLE_FOR - Duration::from_millis(300), "switched back after {waited:?}");
    assert!(waited <= STABLE_FOR + GOP + Duration::from_secs(1), "switched back after {waited:?}");
    wait_for("every player decoding main again", Duration::from_secs(10), || {
        players.iter().all(|(_, p)| p.count_after(back, "640x360") >= 30).then_some(())
    });
    for (name, mut p) in players {
        let frames = p.snapshot();
        let (gap, step) = worst_gap(&frames, back - Duration::from_millis(500), Instant::now());
        println!("{name}: worst stall across the switch back {gap:?}, largest DTS step {step} ms");
        // A switch back happens at main's keyframe with the backup live until then: no stall beyond the merge
        // period (100 ms) and scheduling.
        assert!(gap <= Duration::from_millis(600), "{name}: stalled {gap:?} switching back");
        assert!(step > 0 && step <= 600, "{name}: DTS step {step} ms switching back");
        assert_monotonic(&name, &frames);
        assert!(p.proc.is_running(), "{name} kept its connection");
    }
    assert_eq!(key_sources(origin.api, "cam1")["switches"].as_u64(), Some(2));
    assert_eq!(metric(origin.api, "relay_source_switches_total"), 2.0);
    // The backup (the first sample: roles in order of name) was live at least while main had to prove stable.
    let backup_live = metric(origin.api, "relay_source_live_seconds_total");
    assert!(backup_live >= STABLE_FOR.as_secs_f64() && backup_live < 60.0, "backup live {backup_live} s");
}

/// Sends `sig` to `pid` (the test's own ffmpeg).
fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([sig, &pid.to_string()]).status().is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn a_silent_main_is_given_up_after_source_timeout_and_a_flapping_one_is_not_taken_back() {
    let _g = serial();
    let dir = TempDir::new("flapping");
    let origin = Relay::origin(&dir, &[]);
    let url = origin.url("cam2");
    let main = encoder(&dir, &url, "testsrc2", "640x360");
    wait_live(origin.api, "cam2");
    let _backup = encoder(&dir, &format!("{url}?role=backup"), "smptebars", "320x180");
    wait_for("main live and the backup warm", Duration::from_secs(15), || {
        let v = key_sources(origin.api, "cam2");
        (healthy(&v, "main") && healthy(&v, "backup") && v["live"] == "main").then_some(())
    });
    let player = Viewer::start(&url, &dir);
    let t = Instant::now();
    wait_for("the player decoding main", Duration::from_secs(20), || {
        (player.count_after(t, "640x360") >= 30).then_some(())
    });

    // Main stops sending but keeps its connection (SIGSTOP): given up after source_timeout, not before.
    let stopped = Instant::now();
    signal(main.pid(), "-STOP");
    let switched = wait_for("the backup live", Duration::from_secs(10), || {
        (key_sources(origin.api, "cam2")["live"] == "backup").then(Instant::now)
    });
    let took = switched - stopped;
    println!("a silent main was given up after {took:?}");
    // Given up at the first backup frame past the timeout after main's last frame, which left ffmpeg up to a
    // frame interval (or a muxer flush) before the STOP; the upper margin covers a burst still in flight.
    assert!(
        took >= SOURCE_TIMEOUT - Duration::from_millis(100) && took <= SOURCE_TIMEOUT + Duration::from_secs(1),
        "{took:?}"
    );
    wait_for("the player decoding the backup", Duration::from_secs(10), || {
        (player.count_after(switched, "320x180") >= 30).then_some(())
    });
    let (gap, step) = worst_gap(&player.snapshot(), stopped - Duration::from_secs(1), Instant::now());
    println!("worst stall across a silent main {gap:?}, largest DTS step {step} ms");
    assert!(gap <= SOURCE_TIMEOUT + GOP, "stalled {gap:?}");
    assert!(step > 0 && step <= (SOURCE_TIMEOUT + GOP).as_millis() as i64, "DTS step {step} ms");

    // Main flaps: 2 s up, 2 s down, for 12 s. It is never stable for source_stable_for: no switch back.
    let flap_start = Instant::now();
    let mut up = false;
    while flap_start.elapsed() < Duration::from_secs(12) {
        signal(main.pid(), if up { "-STOP" } else { "-CONT" });
        up = !up;
        let next = Instant::now() + Duration::from_secs(2);
        // Each phase: the backup stays live the whole time (polled, so a switch back in between is seen).
        while Instant::now() < next {
            let v = key_sources(origin.api, "cam2");
            assert_eq!((v["live"].as_str(), v["switches"].as_u64()), (Some("backup"), Some(1)), "while flapping: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Main stays up: switched back once, after source_stable_for.
    signal(main.pid(), "-CONT");
    let resumed = Instant::now();
    let back = wait_for("main live again", STABLE_FOR + GOP + Duration::from_secs(5), || {
        (key_sources(origin.api, "cam2")["live"] == "main").then(Instant::now)
    });
    println!("switched back {:?} after main resumed", back - resumed);
    assert!(back - resumed >= STABLE_FOR, "{:?}", back - resumed);
    assert_eq!(key_sources(origin.api, "cam2")["switches"].as_u64(), Some(2));
    wait_for("the player decoding main again", Duration::from_secs(10), || {
        (player.count_after(back, "640x360") >= 30).then_some(())
    });
    assert_monotonic("player", &player.snapshot());
    let mut player = player;
    assert!(player.proc.is_running(), "the player kept its connection");
}

/// An API request with a JSON body: (status, body).
fn send(api: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(api).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let status = r.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, r.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

#[test]
fn the_slate_covers_a_key_without_encoders_and_an_operator_can_switch_by_hand() {
    let _g = serial();
    let dir = TempDir::new("slate");
    let origin = Relay::origin(&dir, &[]);
    // Mistakes are refused with the reason and change nothing.
    for (body, why) in [
        (
            r#"{"sources": [{"role": "main"}], "source_timeout": "10ms"}"#,
            "source_timeout 10ms is out of range 100ms..=60s",
        ),
        (
            r#"{"sources": [{"role": "slate", "url": "testcard"}, {"role": "main"}]}"#,
            "the slate must be the last source",
        ),
        (r#"{"sources": [{"role": "main", "prio": 1}]}"#, "unknown field `prio`"),
        (r#"{"sources": [{"role": "slate", "url": "smpte"}]}"#, "a slate's url is testcard or file:PATH"),
        (r#"{"url": "rtmp://127.0.0.1:1/l/k", "sources": [{"role": "main"}]}"#, "either url or sources"),
    ] {
        let (code, b) = send(origin.api, "PUT", "/sources/live/cam3", body);
        assert_eq!(code, 400, "{body}: {b}");
        assert!(b.contains(why), "{body}: {b}");
    }
    assert_eq!(http("GET", origin.api, "/sources/live/cam3").0, 404, "nothing configured");

    let plan = r#"{"sources": [{"role": "main"}, {"role": "slate", "url": "testcard"}],
                   "source_timeout": "500ms", "source_stable_for": "0s"}"#;
    let (code, b) = send(origin.api, "PUT", "/sources/live/cam3", plan);
    assert_eq!(code, 201, "{b}");
    assert_eq!(send(origin.api, "PUT", "/sources/live/cam3", plan).0, 200, "the same plan again changes nothing");
    // No encoder: the slate (the origin's own ffmpeg test card, 640x360) is live.
    wait_for("the slate live", Duration::from_secs(20), || {
        (key_sources(origin.api, "cam3")["live"] == "slate").then_some(())
    });
    let url = origin.url("cam3");
    let player = Viewer::start(&url, &dir);
    let t = Instant::now();
    wait_for("the player decoding the slate", Duration::from_secs(20), || {
        (player.count_after(t, "640x360") >= 30).then_some(())
    });
    // The main encoder arrives: with source_stable_for 0 it is live at its first keyframe.
    let _main = encoder(&dir, &url, "testsrc2", "320x180");
    let back = wait_for("main live", Duration::from_secs(15), || {
        (key_sources(origin.api, "cam3")["live"] == "main").then(Instant::now)
    });
    wait_for("the player decoding main", Duration::from_secs(10), || {
        (player.count_after(back, "320x180") >= 30).then_some(())
    });
    // The operator's switch: to the slate now, refused for a role the key lacks, back to automatic.
    let (code, b) = send(origin.api, "POST", "/sources/live/cam3/switch", r#"{"role": "slate"}"#);
    assert_eq!(code, 200, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!((v["live"].as_str(), v["forced"].as_str()), (Some("slate"), Some("slate")), "{v}");
    let forced = Instant::now();
    wait_for("the player decoding the slate again", Duration::from_secs(10), || {
        (player.count_after(forced, "640x360") >= 30).then_some(())
    });
    assert_eq!(key_sources(origin.api, "cam3")["live"], "slate", "the operator's choice holds while it delivers");
    let (code, b) = send(origin.api, "POST", "/sources/live/cam3/switch", r#"{"role": "backup"}"#);
    assert_eq!(code, 409, "{b}");
    assert!(b.contains("no source with role") && b.contains("backup") && b.contains("attached"), "{b}");
    assert_eq!(send(origin.api, "POST", "/sources/live/cam3/switch", r#"{"role": "auto"}"#).0, 200);
    wait_for("main live after auto", Duration::from_secs(10), || {
        (key_sources(origin.api, "cam3")["live"] == "main").then_some(())
    });
    assert_eq!(key_sources(origin.api, "cam3")["switches"].as_u64(), Some(3));
    assert_monotonic("player", &player.snapshot());
    // Removing the key's sources stops the slate's ffmpeg (its publish leaves).
    assert_eq!(send(origin.api, "DELETE", "/sources/live/cam3", "").0, 204);
    wait_for("the slate gone", Duration::from_secs(10), || {
        let v = key_sources(origin.api, "cam3");
        v["sources"].as_array().unwrap().iter().all(|s| s["role"] != "slate" || s["kind"].is_null()).then_some(())
    });
    let mut player = player;
    assert!(player.proc.is_running(), "the player kept its connection");
}
