//! Players told when a stream ends or never exists, through an edge, with real clients (ffmpeg, ffprobe,
//! rtmpdump, curl): ended after the grace period, kept when the publisher returns, "not found" within the wait
//! (cached, one upstream attempt per key), and a junk-pull flood that cannot lock real streams out.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The grace period of origin and edge in these tests (the default is 10 s; shorter keeps the tests fast).
const GRACE: Duration = Duration::from_secs(4);
const GRACE_ARG: &str = "4";
/// Allowed beyond the grace period: the origin's once-a-second check, the edge's half-second one, and the
/// clients' own reaction.
const MARGIN: Duration = Duration::from_millis(3000);

/// An origin and an edge with an HTTP media listener, both with the test's grace period.
fn origin_and_edge(dir: &TempDir, edge_extra: &[&str]) -> (Relay, Relay, SocketAddr) {
    let origin = Relay::origin(dir, &["--grace-period", GRACE_ARG]);
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let hs = http.to_string();
    let mut args = vec!["--http-listen", hs.as_str(), "--grace-period", GRACE_ARG];
    args.extend_from_slice(edge_extra);
    let edge = Relay::edge(dir, &[origin.rtmp], &args);
    wait_port(http, Duration::from_secs(10));
    (origin, edge, http)
}

fn curl(args: &[&str]) -> (bool, String, String) {
    require("curl");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS"]).args(args);
    run_limited(cmd, Duration::from_secs(30))
}

/// Long-running players of `key` on the edge: ffprobe (packets), ffmpeg (recording), rtmpdump, curl (HTTP-FLV).
struct Players {
    watch: PacketWatch,
    ffmpeg: Proc,
    rtmpdump: Proc,
    curl: Proc,
    files: [std::path::PathBuf; 3],
}

impl Players {
    fn start(dir: &TempDir, edge: &Relay, http: SocketAddr, key: &str) -> Self {
        require("rtmpdump");
        require("curl");
        let url = edge.url(key);
        let files = [dir.path("ffmpeg.flv"), dir.path("rtmpdump.flv"), dir.path("curl.flv")];
        let mut ffmpeg = Command::new("ffmpeg");
        ffmpeg.args(["-nostdin", "-hide_banner", "-loglevel", "error", "-i", &url, "-c", "copy", "-f", "flv", "-y"]);
        ffmpeg.arg(&files[0]).stdout(Stdio::null());
        let mut rtmpdump = Command::new("rtmpdump");
        rtmpdump.args(["-q", "-v", "-r", &url, "-o"]).arg(&files[1]).stdout(Stdio::null());
        let mut curl = Command::new("curl");
        curl.args(["-sS", "-o"]).arg(&files[2]).arg(format!("http://{http}/live/{key}.flv")).stdout(Stdio::null());
        let players = Self {
            watch: PacketWatch::start(&url, dir),
            ffmpeg: Proc::spawn("ffmpeg player", ffmpeg, Some(dir.path("ffmpeg-player.log"))),
            rtmpdump: Proc::spawn("rtmpdump", rtmpdump, Some(dir.path("rtmpdump.log"))),
            curl: Proc::spawn("curl http-flv", curl, Some(dir.path("curl.log"))),
            files,
        };
        wait_for("every player to get data", Duration::from_secs(20), || {
            (players.watch.video_count() >= 30 && players.files.iter().all(|f| size(f) > 50_000)).then_some(())
        });
        players
    }

    fn sizes(&self) -> Vec<u64> {
        self.files.iter().map(|f| size(f)).collect()
    }
}

fn size(f: &std::path::Path) -> u64 {
    std::fs::metadata(f).map_or(0, |m| m.len())
}

#[test]
fn edge_players_are_ended_a_grace_period_after_the_publisher_stops() {
    let _g = serial();
    let dir = TempDir::new("ended");
    let (origin, edge, http) = origin_and_edge(&dir, &[]);
    let mut publisher = publish(&dir, &origin.url("test"), &[]);
    wait_live(origin.api, "test");
    let mut p = Players::start(&dir, &edge, http, "test");
    let origin_player = PacketWatch::start(&origin.url("test"), &dir);
    wait_for("the origin's own player", Duration::from_secs(15), || (origin_player.video_count() >= 10).then_some(()));
    let mut origin_player = origin_player;

    publisher.kill();
    let stopped = Instant::now();
    let limit = GRACE + MARGIN;
    let mut ended = Vec::new();
    for (name, proc) in [
        ("ffprobe", &mut p.watch.proc),
        ("ffmpeg", &mut p.ffmpeg),
        ("rtmpdump", &mut p.rtmpdump),
        ("curl", &mut p.curl),
        ("origin ffprobe", &mut origin_player.proc),
    ] {
        let left = limit.saturating_sub(stopped.elapsed());
        let status = proc.wait_timeout(left);
        let at = stopped.elapsed();
        assert!(status.is_some(), "{name} still playing {at:?} after the publisher stopped (grace {GRACE:?})");
        ended.push((name, at, status.unwrap()));
    }
    for (name, at, _) in &ended {
        assert!(*at >= GRACE - Duration::from_millis(500), "{name} ended after {at:?}, before the grace period");
        assert!(*at <= limit, "{name} ended after {at:?}");
    }
    // ffmpeg and curl finish their outputs normally (the recording is finalised, the body ends cleanly).
    assert!(ended[1].2.success(), "ffmpeg: {:?} {}", ended[1].2, p.ffmpeg.log_text());
    assert!(ended[3].2.success(), "curl: {:?} {}", ended[3].2, p.curl.log_text());
    assert!(p.sizes().iter().all(|s| *s > 50_000), "{:?}", p.sizes());
    assert_eq!(metric(edge.api, "relay_streams_ended_upstream_total"), 1.0);
    assert_eq!(metric(edge.api, "relay_streams_not_found_total"), 0.0);
    wait_for("the edge to forget the stream and stop its pull", Duration::from_secs(5), || {
        (stream_entry(edge.api, "live", "test").is_none() && metric(edge.api, "relay_upstream_active") == 0.0)
            .then_some(())
    });
}

#[test]
fn edge_players_continue_when_the_publisher_returns_within_the_grace_period() {
    let _g = serial();
    let dir = TempDir::new("returns");
    let (origin, edge, http) = origin_and_edge(&dir, &[]);
    let mut publisher = publish(&dir, &origin.url("test"), &[]);
    wait_live(origin.api, "test");
    let mut p = Players::start(&dir, &edge, http, "test");
    publisher.kill();
    wait_for("the origin to lose its publisher", Duration::from_secs(5), || {
        stream_entry(origin.api, "live", "test").filter(|s| s["source"].is_null())
    });
    std::thread::sleep(Duration::from_millis(1500)); // an outage shorter than the grace period, on purpose
    let _back = publish(&dir, &origin.url("test"), &[]);
    let returned = Instant::now();
    wait_for("video after the publisher returned", Duration::from_secs(15), || {
        (p.watch.video_after(returned) >= 60).then_some(())
    });
    let before = p.sizes();
    // Past the grace period counted from the stop: every player is still there and still receiving.
    wait_for("the players to outlive the grace period", GRACE + MARGIN * 2, || {
        (returned.elapsed() >= GRACE + MARGIN).then_some(())
    });
    for (name, proc) in [
        ("ffprobe", &mut p.watch.proc),
        ("ffmpeg", &mut p.ffmpeg),
        ("rtmpdump", &mut p.rtmpdump),
        ("curl", &mut p.curl),
    ] {
        assert!(proc.is_running(), "{name} was ended although the publisher came back: {}", proc.log_text());
    }
    let after = p.sizes();
    assert!(after.iter().zip(&before).all(|(a, b)| a > b), "outputs stopped growing: {before:?} -> {after:?}");
    assert_eq!(metric(edge.api, "relay_streams_ended_upstream_total"), 0.0);
    assert_eq!(stream_entry(edge.api, "live", "test").unwrap()["players"], 4);
}

#[test]
fn an_unknown_key_on_the_edge_is_not_found_within_the_wait_and_cached() {
    let _g = serial();
    let dir = TempDir::new("unknown");
    let (origin, edge, http) = origin_and_edge(&dir, &[]);
    let limit = GRACE + MARGIN;

    let t = Instant::now();
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-show_entries", "stream=codec_name", &edge.url("nokey")]);
    let (ok, _, err) = run_limited(cmd, Duration::from_secs(30));
    let took = t.elapsed();
    assert!(!ok, "ffprobe succeeded on a key nobody publishes");
    assert!(err.contains("stream not found"), "ffprobe: {err}");
    assert!(took >= GRACE - Duration::from_millis(500) && took <= limit, "ffprobe told after {took:?}");
    assert_eq!(metric(edge.api, "relay_streams_not_found_total"), 1.0);

    // Within the negative-cache period: answered at once, with no new pull.
    let t = Instant::now();
    let (_, code, _) = curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("http://{http}/live/nokey.flv")]);
    assert_eq!(code, "404");
    assert!(t.elapsed() < Duration::from_secs(1), "cached answer took {:?}", t.elapsed());
    let mut cmd = Command::new("rtmpdump");
    cmd.args(["-v", "-r", &edge.url("nokey"), "-o", "/dev/null"]);
    let (ok, _, err) = run_limited(cmd, Duration::from_secs(10));
    assert!(!ok && err.contains("StreamNotFound"), "rtmpdump: {err}");
    assert_eq!(metric(edge.api, "relay_not_found_cache_hits_total"), 2.0);
    assert_eq!(metric(edge.api, "relay_upstream_attempts_total"), 1.0);

    // HTTP-FLV on another unknown key: no 200 and FLV header, a 404 within the wait.
    let t = Instant::now();
    let (_, out, _) = curl(&["-i", &format!("http://{http}/live/other.flv")]);
    let took = t.elapsed();
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert!(out.contains("stream not found"), "{out}");
    assert!(took >= GRACE - Duration::from_millis(500) && took <= limit, "curl told after {took:?}");
    assert_eq!(metric(edge.api, "relay_upstream_attempts_total"), 2.0);
    assert_eq!(metric(origin.api, "relay_players_total"), 2.0, "one upstream play per key");

    // The origin tells its own players the same, after the same wait.
    let t = Instant::now();
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-show_entries", "stream=codec_name", &origin.url("third")]);
    let (ok, _, err) = run_limited(cmd, Duration::from_secs(30));
    let took = t.elapsed();
    assert!(!ok && err.contains("stream not found"), "ffprobe on the origin: {err}");
    assert!(took >= GRACE - Duration::from_millis(500) && took <= limit, "origin told after {took:?}");
    wait_for("the edge to stop its pulls", Duration::from_secs(5), || {
        (streams(edge.api)["streams"].as_array().unwrap().is_empty()
            && metric(edge.api, "relay_upstream_active") == 0.0)
            .then_some(())
    });
}

/// At the defaults (10 s grace and --source-timeout on every node), with two origins and an edge that holds its
/// players longer than the origins wait (30 s, as the cluster lab runs it): the first origin's "not found" at its
/// grace period is the answer. The edge used to drop that silent upstream at --source-timeout, a moment before the
/// origin spoke, and went round the origins until its own 30 s deadline.
#[test]
fn an_unknown_key_is_told_at_the_origins_answer_with_default_timeouts_and_two_origins() {
    let _g = serial();
    let dir = TempDir::new("defaults");
    let (o1, o2) = (Relay::origin(&dir, &[]), Relay::origin(&dir, &[]));
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let hs = http.to_string();
    let edge = Relay::edge(&dir, &[o1.rtmp, o2.rtmp], &["--http-listen", hs.as_str(), "--grace-period", "30"]);
    wait_port(http, Duration::from_secs(10));
    let default_grace = Duration::from_secs(10);

    let t = Instant::now();
    let (_, out, err) = curl(&["-i", "--max-time", "40", &format!("http://{http}/live/nosuch.flv")]);
    let took = t.elapsed();
    assert!(out.starts_with("HTTP/1.1 404"), "{out} {err}");
    assert!(
        took >= default_grace - Duration::from_millis(500) && took <= default_grace + MARGIN,
        "told after {took:?}"
    );
    assert_eq!(metric(edge.api, "relay_upstream_attempts_total"), 1.0, "the edge left the first origin");
    assert_eq!(metric(edge.api, "relay_upstream_failures_total"), 0.0);
    assert_eq!(metric(edge.api, "relay_streams_not_found_total"), 1.0);
    assert_eq!(metric(o1.api, "relay_players_total"), 1.0);
    assert_eq!(metric(o2.api, "relay_players_total"), 0.0, "the second origin was asked");
}

#[test]
fn a_hundred_unknown_keys_cost_one_upstream_attempt_each() {
    let _g = serial();
    let dir = TempDir::new("hundred");
    let (origin, edge, http) = origin_and_edge(&dir, &["--max-new-pulls-per-ip", "0"]);
    let urls: Vec<String> = (0..100).map(|i| format!("http://{http}/live/missing{i}.flv")).collect();
    let all = |urls: &[String]| {
        let mut args = vec!["--parallel", "--parallel-immediate", "--parallel-max", "100", "-w", "%{http_code}\n"];
        for u in urls {
            args.extend(["-o", "/dev/null", u.as_str()]);
        }
        let t = Instant::now();
        let (_, out, err) = curl(&args);
        (t.elapsed(), out.lines().map(str::to_string).collect::<Vec<_>>(), err)
    };
    let (took, codes, err) = all(&urls);
    assert_eq!(codes.len(), 100, "{codes:?} {err}");
    assert!(codes.iter().all(|c| c == "404"), "{codes:?}");
    assert!(took <= GRACE + MARGIN, "told after {took:?}");
    assert_eq!(metric(edge.api, "relay_upstream_attempts_total"), 100.0);
    assert_eq!(metric(origin.api, "relay_players_total"), 100.0, "one upstream play per key");
    assert_eq!(metric(edge.api, "relay_streams_not_found_total"), 100.0);

    // The same keys again within the negative-cache period: answered at once, no upstream attempt.
    let (took, codes, _) = all(&urls);
    assert!(codes.iter().all(|c| c == "404") && codes.len() == 100, "{codes:?}");
    assert!(took < Duration::from_secs(3), "cached answers took {took:?}");
    assert_eq!(metric(edge.api, "relay_not_found_cache_hits_total"), 100.0);
    assert_eq!(metric(edge.api, "relay_upstream_attempts_total"), 100.0);
    assert_eq!(metric(origin.api, "relay_players_total"), 100.0);
}

/// Sends `GET /live/junkN.flv` on `n` connections from 127.0.0.1 and closes each at once.
fn junk_flood(http: SocketAddr, n: usize) {
    for i in 0..n {
        let Ok(mut s) = std::net::TcpStream::connect(http) else {
            continue;
        };
        let _ = write!(s, "GET /live/junk{i}.flv HTTP/1.1\r\nHost: {http}\r\n\r\n");
    }
}

#[test]
fn a_junk_pull_flood_does_not_lock_a_real_stream_out() {
    let _g = serial();
    let dir = TempDir::new("junk");
    let (origin, edge, http) = origin_and_edge(&dir, &["--max-pulls", "50"]);
    let _pub = publish(&dir, &origin.url("real"), &[]);
    let _pub2 = publish(&dir, &origin.url("real2"), &[]);
    wait_live(origin.api, "real");
    wait_live(origin.api, "real2");

    let flood = std::thread::spawn(move || junk_flood(http, 1100));
    // During the flood, a viewer from another address starts the real stream.
    wait_for("the flood to hit the per-IP cap", Duration::from_secs(20), || {
        (metric(edge.api, "relay_pulls_refused_per_ip_total") >= 1.0).then_some(())
    });
    let body = dir.path("real.flv");
    let (ok, code, err) = curl(&[
        "--interface",
        "127.0.0.2",
        "--max-time",
        "3",
        "-o",
        body.to_str().unwrap(),
        "-w",
        "%{http_code}",
        &format!("http://{http}/live/real.flv"),
    ]);
    assert_eq!(code, "200", "{ok} {err}");
    assert!(size(&body) > 50_000, "only {} bytes of the real stream", size(&body));
    flood.join().unwrap();

    // Right after it, from the flooding address itself: junk pulls left with their players, so a new stream plays.
    wait_for("the junk pulls to stop", Duration::from_secs(5), || {
        let s = streams(edge.api);
        let keys: Vec<_> = s["streams"].as_array().unwrap().iter().map(|s| s["key"].clone()).collect();
        (keys == ["real"]).then_some(())
    });
    assert_h264_aac(&format!("http://{http}/live/real2.flv"));
    let refused = metric(edge.api, "relay_pulls_refused_per_ip_total");
    let attempts = metric(edge.api, "relay_upstream_attempts_total");
    assert!(refused >= 500.0, "only {refused} junk pulls refused at --max-new-pulls-per-ip");
    // Every junk request was either refused or cost exactly one upstream attempt (plus one per real stream).
    assert_eq!(refused + attempts, 1102.0, "refused {refused}, upstream attempts {attempts}");
    assert_eq!(metric(edge.api, "relay_pulls_refused_total"), 0.0, "--max-pulls was never reached");
    let _ = origin;
}
