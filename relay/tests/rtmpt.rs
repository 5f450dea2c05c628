//! RTMPT (RTMP over HTTP, Red5 style) with ffmpeg's own `rtmpt://` client: publishing to an origin and playing
//! from an edge over the media HTTP listener, beside RTMP players on the same pull.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

fn http_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

#[test]
fn ffmpeg_publishes_and_plays_over_rtmpt() {
    let _g = serial();
    let dir = TempDir::new("rtmpt");
    let origin_http = http_addr();
    let oh = origin_http.to_string();
    let origin = Relay::origin(&dir, &["--http-listen", &oh]);
    wait_port(origin_http, Duration::from_secs(10));
    // Publish over RTMPT to the origin.
    let _pub = publish(&dir, &format!("rtmpt://{origin_http}/live/test"), &[]);
    wait_live(origin.api, "test");
    let src = stream_entry(origin.api, "live", "test").unwrap();
    assert!(src["bitrate_in_kbps"].as_u64().is_some());

    let edge_http = http_addr();
    let eh = edge_http.to_string();
    let edge = Relay::edge(&dir, &[origin.rtmp], &["--http-listen", &eh]);
    wait_port(edge_http, Duration::from_secs(10));
    let rtmpt = format!("rtmpt://{edge_http}/live/test");
    // ffprobe and ffmpeg play over RTMPT from the edge; an RTMP player shares the pull.
    assert_h264_aac(&rtmpt);
    let rtmp_watch = PacketWatch::start(&edge.url("test"), &dir);
    let rtmpt_watch = PacketWatch::start(&rtmpt, &dir);
    wait_for("both players receive", Duration::from_secs(20), || {
        (rtmp_watch.video_count() >= 30 && rtmpt_watch.video_count() >= 30).then_some(())
    });
    let s = stream_entry(edge.api, "live", "test").unwrap();
    assert_eq!(s["players_by_protocol"]["rtmpt"], 1, "{s}");
    assert_eq!(s["players_by_protocol"]["rtmp"], 1, "{s}");
    assert_eq!(stream_entry(origin.api, "live", "test").unwrap()["players"], 1, "one pull for both");
    let (ok, out, err) = run_limited(ffmpeg_player(&rtmpt, 60), Duration::from_secs(30));
    assert!(ok, "ffmpeg over RTMPT: {err}");
    assert!(progress_frames(&out) >= 60, "{out}");
    let dts = rtmpt_watch.video_dts();
    assert!(dts.windows(2).all(|w| w[1] >= w[0]), "non-monotonic dts over RTMPT");

    // The players leave: their sessions end and the counts go back.
    drop(rtmpt_watch);
    wait_for("RTMPT player gone", Duration::from_secs(15), || {
        stream_entry(edge.api, "live", "test").filter(|s| s["players_by_protocol"]["rtmpt"] == 0)
    });
    // An unknown session and a malformed command are refused.
    require("curl");
    let code = |path: &str| {
        let mut c = std::process::Command::new("curl");
        c.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "--data-binary", "x"]);
        c.args(["-H", "Content-Type: application/x-fcs", &format!("http://{edge_http}{path}")]);
        run_limited(c, Duration::from_secs(10)).1
    };
    assert_eq!(code("/idle/0123456789abcdef/1"), "404");
    assert_eq!(code("/send/bad-id/1"), "404");
    assert_eq!(code("/open/1"), "200", "a bare open gets a session (closed later by --connect-timeout)");
}
