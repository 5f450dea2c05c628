//! HTTP-FLV playback (`--http-listen`, GET /APP/KEY.flv) with real clients: ffprobe and ffmpeg read it from an
//! edge that shares one pull with RTMP players; curl sees the FLV header and the status codes of refusals.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// An edge with an HTTP media listener; returns it and that listener's address.
fn edge_with_http(dir: &TempDir, origin: SocketAddr, extra: &[&str]) -> (Relay, SocketAddr) {
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let hs = http.to_string();
    let mut args = vec!["--http-listen", hs.as_str()];
    args.extend_from_slice(extra);
    let edge = Relay::edge(dir, &[origin], &args);
    wait_port(http, Duration::from_secs(10));
    (edge, http)
}

fn curl(args: &[&str]) -> (bool, String, String) {
    require("curl");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS"]).args(args);
    run_limited(cmd, Duration::from_secs(15))
}

#[test]
fn ffprobe_ffmpeg_and_curl_play_http_flv_beside_rtmp_on_one_pull() {
    let _g = serial();
    let dir = TempDir::new("flv");
    let origin = Relay::origin(&dir, &[]);
    let _pub = publish(&dir, &origin.url("test"), &[]);
    wait_live(origin.api, "test");
    let (edge, http) = edge_with_http(&dir, origin.rtmp, &[]);
    let flv = format!("http://{http}/live/test.flv");

    // ffprobe over HTTP-FLV first: it starts the edge's pull.
    assert_h264_aac(&flv);
    // An RTMP player and an HTTP-FLV player at once share the edge's single upstream.
    let rtmp_watch = PacketWatch::start(&edge.url("test"), &dir);
    let flv_watch = PacketWatch::start(&flv, &dir);
    wait_for("both players receive", Duration::from_secs(15), || {
        (rtmp_watch.video_count() >= 30 && flv_watch.video_count() >= 30).then_some(())
    });
    let s = stream_entry(edge.api, "live", "test").unwrap();
    assert_eq!(s["players"], 2, "{s}");
    assert_eq!(s["players_by_protocol"], serde_json::json!({"rtmp": 1, "http-flv": 1, "rtmpt": 0, "hls": 0}), "{s}");
    let origin_players = stream_entry(origin.api, "live", "test").unwrap()["players"].clone();
    assert_eq!(origin_players, 1, "the edge must pull once for both protocols");
    // FLV timestamps are monotonic.
    let dts = flv_watch.video_dts();
    assert!(dts.windows(2).all(|w| w[1] >= w[0]), "non-monotonic dts over HTTP-FLV");

    // ffmpeg copies 90 video frames from HTTP-FLV; time to first frame from the GOP cache is quick.
    let t = Instant::now();
    let (ok, out, err) = run_limited(ffmpeg_player(&flv, 90), Duration::from_secs(20));
    assert!(ok, "ffmpeg over HTTP-FLV: {err}");
    assert!(progress_frames(&out) >= 90, "{out}");
    assert!(t.elapsed() < Duration::from_secs(10));

    // curl: the response head and the FLV signature, then live data keeps coming.
    let (_, head, _) = curl(&["-D", "-", "-o", "/dev/null", "--max-time", "2", &flv]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: video/x-flv"), "{head}");
    let body = dir.path("body.flv");
    let _ = curl(&["-o", body.to_str().unwrap(), "--max-time", "3", &flv]);
    let bytes = std::fs::read(&body).unwrap();
    assert_eq!(&bytes[..13], b"FLV\x01\x05\0\0\0\x09\0\0\0\0");
    assert!(bytes.len() > 100_000, "only {} bytes in 3 s", bytes.len());
    assert_eq!(bytes[13], 18, "onMetaData comes first");

    // Refusals with status codes: wrong app (no origin), bad name, not .flv, wrong method.
    let code = |args: &[&str]| curl(&[&["-o", "/dev/null", "-w", "%{http_code}"][..], args].concat()).1;
    assert_eq!(code(&[&format!("http://{http}/other/test.flv")]), "404");
    assert_eq!(code(&[&format!("http://{http}/live/bad%20name.flv")]), "400");
    assert_eq!(code(&[&format!("http://{http}/live/test")]), "404");
    assert_eq!(code(&["-X", "POST", &flv]), "405");
    assert_eq!(curl(&[&format!("http://{http}/healthz")]).1, "ok\n");
    // A silent connection is closed after --handshake-timeout (default 10 s is long; just check a bad head).
    let (_, out, _) = curl(&["-i", "-H", "Content-Length: x", &flv]);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");

    // Players leave: counts go back to zero.
    drop(rtmp_watch);
    drop(flv_watch);
    wait_for("players gone", Duration::from_secs(10), || {
        stream_entry(edge.api, "live", "test").filter(|s| s["players"] == 0)
    });
}

#[test]
fn http_flv_players_share_the_limits() {
    let _g = serial();
    let dir = TempDir::new("flv-limits");
    let origin = Relay::origin(&dir, &[]);
    // --max-pulls 1: a second name over HTTP-FLV is refused with 503; per-IP limits count HTTP players too.
    let (edge, http) = edge_with_http(&dir, origin.rtmp, &["--max-pulls", "1", "--max-connections-per-ip", "3"]);
    let _pub = publish(&dir, &origin.url("a"), &[]);
    wait_live(origin.api, "a");
    let watch = PacketWatch::start(&format!("http://{http}/live/a.flv"), &dir);
    wait_for("HTTP-FLV frames", Duration::from_secs(15), || (watch.video_count() >= 10).then_some(()));
    let (_, code, _) = curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("http://{http}/live/b.flv")]);
    assert_eq!(code, "503");
    assert_eq!(metric(edge.api, "relay_pulls_refused_total"), 1.0);
    // Two more connections fill 127.0.0.1's allowance of 3 (the player holds one); the next is closed at accept.
    let _c1 = std::net::TcpStream::connect(http).unwrap();
    let _c2 = std::net::TcpStream::connect(edge.rtmp).unwrap();
    wait_for("connections counted", Duration::from_secs(5), || {
        (metric(edge.api, "relay_connections_active") >= 3.0).then_some(())
    });
    let (ok, _, _) = curl(&["--max-time", "3", "-o", "/dev/null", &format!("http://{http}/live/a.flv")]);
    assert!(!ok, "a fourth connection from 127.0.0.1 was served");
    assert!(metric(edge.api, "relay_connections_refused_per_ip_total") >= 1.0);
}
