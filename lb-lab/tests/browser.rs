//! The hls.js harness plays for real, without the relay: ffmpeg makes a live fMP4 HLS stream on disk, a plain HTTP
//! server on loopback serves it with the relay's player page and hls.js, and `lb_lab::browser::play` must see it
//! play without a stall; a playlist that 404s must fail, naming the problem.
use lb_lab::browser::{self, Playback};
use lb_lab::wait::wait_within;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// ffmpeg and the HTTP server (killed by PID) and the temp directory (removed), whatever way the test ends.
struct Site {
    dir: PathBuf,
    children: Vec<Child>,
    port: u16,
}

impl Drop for Site {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
    cmd.spawn().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"))
}

/// How many segments the playlist at `path` lists (0 while ffmpeg has not written it).
fn segments(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|p| p.lines().filter(|l| l.ends_with(".m4s")).count()).unwrap_or(0)
}

/// The layout the relay will serve: /hls.min.js, /live/test/{play.html,index.m3u8,...} from ffmpeg, and
/// /live/none/play.html with no playlist beside it.
fn site() -> Site {
    let dir = std::env::temp_dir().join(format!("lb-browser-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let page = std::fs::read(lb_lab::repo_file("relay/src/egress/hls_player.html")).unwrap();
    for stream in ["live/test", "live/none"] {
        std::fs::create_dir_all(dir.join(stream)).unwrap();
        std::fs::write(dir.join(stream).join("play.html"), &page).unwrap();
    }
    std::fs::copy(browser::hls_js(), dir.join("hls.min.js")).unwrap();
    let mut site = Site { dir: dir.clone(), children: vec![], port: 0 };

    // The lab's live test stream (H.264 every 2 s, AAC), as fMP4 HLS with wall-clock times (glass to glass).
    let publish = lb_lab::FFMPEG_PUBLISH;
    assert_eq!(&publish[publish.len() - 2..], ["-f", "flv"], "FFMPEG_PUBLISH ends with its output format");
    let mut ffmpeg = Command::new(publish[0]);
    ffmpeg.args(&publish[1..publish.len() - 2]).args(["-f", "hls", "-hls_segment_type", "fmp4", "-hls_time", "2"]);
    ffmpeg.args(["-hls_list_size", "6", "-hls_flags", "delete_segments+program_date_time", "index.m3u8"]);
    ffmpeg.current_dir(dir.join("live/test"));
    site.children.push(spawn(&mut ffmpeg, &dir.join("ffmpeg.log")));

    // A free loopback port for the server (bound once by us to learn it).
    site.port = lb_lab::ports::free_port();
    let mut http = Command::new("python3");
    http.args(["-m", "http.server", "--bind", "127.0.0.1", &site.port.to_string(), "--directory"]).arg(&dir);
    site.children.push(spawn(&mut http, &dir.join("http.log")));
    let port = site.port;
    wait_within(Duration::from_secs(10), "the HTTP server on 127.0.0.1", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .unwrap();
    site
}

#[test]
fn hls_js_in_chromium_plays_a_live_fmp4_stream_and_names_a_missing_playlist() {
    if let Err(why) = browser::available() {
        panic!("the browser tests cannot run: {why}");
    }
    let site = site();
    let base = format!("http://127.0.0.1:{}", site.port);

    // A page whose playlist is missing fails fast, and says so.
    let err = browser::play(&format!("{base}/live/none/play.html"), 5, None, None).unwrap_err().to_string();
    assert!(err.contains("manifestLoadError") && err.contains("404"), "unexpected error: {err}");
    assert!(err.contains("/live/none/index.m3u8"), "the error names the playlist: {err}");
    // So does a page that is not there.
    let err = browser::play(&format!("{base}/live/gone/play.html"), 5, None, None).unwrap_err().to_string();
    assert!(err.contains("HTTP 404") && err.contains("no player page"), "unexpected error: {err}");

    // Two segments out (about 4 s of a real-time encode), then 10 s of plain HLS (the playlist has no LL parts).
    let playlist = site.dir.join("live/test/index.m3u8");
    wait_within(Duration::from_secs(15), "ffmpeg's playlist with two segments", || segments(&playlist) >= 2).unwrap();
    let shot = browser::artifact("hls-harness.png");
    let _ = std::fs::remove_file(&shot);
    let p: Playback = browser::play(&format!("{base}/live/test/play.html?ll=0"), 10, Some(&shot), None)
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("played: {p:?}");
    assert!(p.started_after_ms < 20_000, "{p:?}");
    assert!(p.played_secs >= 8.0 && p.played_secs <= 11.0, "currentTime advanced {} s in 10 s", p.played_secs);
    assert_eq!(p.stalls, 0, "{p:?}");
    assert_eq!(p.max_stall_ms, 0, "{p:?}");
    assert!(p.errors.is_empty(), "{p:?}");
    // 2 s segments, six in the window: the player sits a few segments behind the edge.
    let latency = p.latency_s.expect("hls.js reports its latency");
    assert!(latency > 0.0 && latency < 15.0, "latency {latency} s");
    // ffmpeg's EXT-X-PROGRAM-DATE-TIME is its wall clock at each segment's start: close to the latency.
    let g2g = p.glass_to_glass_ms.expect("the playlist carries EXT-X-PROGRAM-DATE-TIME");
    assert!(g2g > 0 && g2g < 15_000, "glass to glass {g2g} ms");
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("screenshot {}: {e}", shot.display()));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{} is a PNG", shot.display());
    assert!(png.len() > 20_000, "a screenshot of a playing video, not a blank page: {} bytes", png.len());
}
