//! Origin ingest by pull: an origin pulls a camera-like RTMP source (another relay fed by ffmpeg) through
//! `PUT /sources`, keeps it across the source's restart, and stops on `DELETE`; bad requests change nothing. An RTSP
//! camera (gst-rtsp-server, scripts/rtsp-camera.py) is ingested the same way, and a codec we cannot carry is named.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A request with a JSON body; (status, body).
fn send(api: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
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

fn source_state(api: SocketAddr, key: &str) -> Option<serde_json::Value> {
    let (_, body) = http("GET", api, "/sources");
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["sources"].as_array()?.iter().find(|s| s["key"] == key).cloned()
}

/// Reads `url` for about four seconds and checks that H.264 and AAC packets arrive with timestamps moving forward.
fn assert_advancing(url: &str) {
    require("ffprobe");
    let mut cmd = Command::new("ffprobe");
    cmd.args([
        "-v",
        "error",
        "-read_intervals",
        "%+4",
        "-show_entries",
        "packet=codec_type,dts",
        "-of",
        "csv=p=0",
        url,
    ]);
    let (ok, out, err) = run_limited(cmd, Duration::from_secs(30));
    assert!(ok, "ffprobe {url}: {err}");
    let packets: Vec<(&str, i64)> = out
        .lines()
        .filter_map(|l| l.split_once(','))
        .filter_map(|(kind, dts)| Some((kind, dts.trim().trim_end_matches(',').parse().ok()?)))
        .collect();
    let video: Vec<i64> = packets.iter().filter(|p| p.0 == "video").map(|p| p.1).collect();
    let audio = packets.iter().filter(|p| p.0 == "audio").count();
    assert!(video.len() >= 30 && audio >= 30, "{} video, {audio} audio packets from {url}", video.len());
    assert!(video.windows(2).all(|w| w[1] > w[0]), "video timestamps not increasing: {video:?}");
    let span = video.last().unwrap() - video.first().unwrap();
    assert!(span >= 2000, "video covers only {span} ms");
}

/// A stand-in IP camera: gst-rtsp-server serving `codec` video (h264 or vp8) and AAC on 127.0.0.1:port/cam.
fn camera(dir: &TempDir, port: u16, codec: &str) -> Proc {
    let typelib = "/usr/lib/x86_64-linux-gnu/girepository-1.0/GstRtspServer-1.0.typelib";
    assert!(
        std::path::Path::new(typelib).exists(),
        "gst-rtsp-server is missing: install gir1.2-gst-rtsp-server-1.0 python3-gi python3-gst-1.0 \
         gstreamer1.0-plugins-ugly gstreamer1.0-libav (cargo xtask setup)"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/rtsp-camera.py");
    // Debian's python: the gi bindings are Debian packages, not in a pyenv or venv interpreter.
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(script).args(["--port", &port.to_string(), "--path", "/cam", "--video", codec]).stdout(Stdio::null());
    let p = Proc::spawn(&format!("rtsp camera :{port}"), cmd, Some(dir.path(&format!("camera-{port}.log"))));
    wait_port(format!("127.0.0.1:{port}").parse().unwrap(), Duration::from_secs(15));
    p
}

#[test]
fn an_origin_pulls_a_source_keeps_it_across_restarts_and_stops_on_delete() {
    let _g = serial();
    let dir = TempDir::new("sources");
    let camera_port = free_port();
    let camera = Relay::origin_on(&dir, camera_port, &[]);
    let mut feed = publish(&dir, &camera.url("cam1"), &[]);
    wait_live(camera.api, "cam1");
    let origin = Relay::origin(&dir, &[]);
    let url = format!("rtmp://{}/live/cam1", camera.rtmp);

    // Refused requests change nothing.
    for (body, want) in [
        (format!(r#"{{"url": "http://{}/live/cam1"}}"#, camera.rtmp), "only rtmp://"),
        (r#"{"url": "rtmp://x/live"}"#.to_string(), "missing /KEY"),
        (r#"{"uri": "rtmp://x/live/a"}"#.to_string(), "missing field `url`"),
    ] {
        let (code, b) = send(origin.api, "PUT", "/sources/live/cam", &body);
        assert_eq!(code, 400, "{body}: {b}");
        assert!(b.contains(want), "{body}: {b}");
    }
    assert_eq!(send(origin.api, "PUT", "/sources/live/..", &format!(r#"{{"url": "{url}"}}"#)).0, 400);
    assert!(source_state(origin.api, "cam").is_none());

    let (code, b) = send(origin.api, "PUT", "/sources/live/cam", &format!(r#"{{"url": "{url}"}}"#));
    assert_eq!(code, 201, "{b}");
    assert_eq!(
        send(origin.api, "PUT", "/sources/live/cam", &format!(r#"{{"url": "{url}"}}"#)).0,
        200,
        "the same again"
    );
    wait_for("the origin ingesting the source", Duration::from_secs(15), || {
        source_state(origin.api, "cam").filter(|s| s["state"] == "ingesting")
    });
    let s = stream_entry(origin.api, "live", "cam").unwrap();
    assert_eq!(
        (s["source"]["kind"].as_str(), s["source"]["peer"].as_str()),
        (Some("pull-rtmp"), Some(&*format!("rtmp://{}/live", camera.rtmp)))
    );
    assert_h264_aac(&origin.url("cam"));
    assert_advancing(&origin.url("cam"));
    // A publisher cannot take a stream a source feeds.
    let (_, m) = http("GET", origin.api, "/metrics");
    assert!(m.contains("relay_sources{role=\"origin\",state=\"ingesting\"} 1"), "{m}");

    // The source goes away and comes back: the origin reconnects by itself.
    feed.kill();
    wait_for("the source to fail", Duration::from_secs(20), || {
        source_state(origin.api, "cam").filter(|s| s["state"] != "ingesting")
    });
    let _feed = publish(&dir, &camera.url("cam1"), &[]);
    let s = wait_for("the source ingesting again", Duration::from_secs(20), || {
        source_state(origin.api, "cam").filter(|s| s["state"] == "ingesting")
    });
    assert!(s["connects"].as_u64().unwrap() >= 2, "{s}");
    assert_h264_aac(&origin.url("cam"));
    assert_advancing(&origin.url("cam"));

    // DELETE stops it; the camera loses its player.
    assert_eq!(send(origin.api, "DELETE", "/sources/live/cam", "").0, 204);
    assert_eq!(send(origin.api, "DELETE", "/sources/live/cam", "").0, 404);
    wait_for("the camera relay to lose the origin's pull", Duration::from_secs(5), || {
        stream_entry(camera.api, "live", "cam1").filter(|s| s["players"] == 0)
    });
    assert!(source_state(origin.api, "cam").is_none());
}

#[test]
fn sources_are_an_origin_operation_and_the_flag_is_checked() {
    let _g = serial();
    let dir = TempDir::new("sources-edge");
    let edge = Relay::edge(&dir, &["127.0.0.1:1".parse().unwrap()], &[]);
    let (code, b) = send(edge.api, "PUT", "/sources/live/cam", r#"{"url": "rtmp://127.0.0.1/live/x"}"#);
    assert_eq!((code, b.as_str()), (404, r#"{"error":"sources are an origin operation"}"#));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["origin", "--listen", "127.0.0.1:0", "--source", "live/cam=http://x/y"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only rtmp:// and rtsp://"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A bad RTSP URL is refused before binding, and its credentials are not repeated in the message.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["origin", "--listen", "127.0.0.1:0", "--source", "live/cam=rtsp://admin:hunter2@cam:99999/x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad port") && !err.contains("hunter2"), "{err}");
}

#[test]
fn an_origin_ingests_an_rtsp_camera_and_gets_it_back_after_a_restart() {
    let _g = serial();
    let dir = TempDir::new("sources-rtsp");
    let port = free_port();
    let mut cam = camera(&dir, port, "h264");
    // From the flag, with credentials (the camera asks for none; they must still never show).
    let spec = format!("live/cam=rtsp://viewer:hunter2@127.0.0.1:{port}/cam");
    let origin = Relay::origin(&dir, &["--source", &spec]);
    let s = wait_for("the origin ingesting the camera", Duration::from_secs(20), || {
        source_state(origin.api, "cam").filter(|s| s["state"] == "ingesting")
    });
    assert_eq!(s["url"], format!("rtsp://127.0.0.1:{port}/cam"), "{s}");
    let st = stream_entry(origin.api, "live", "cam").unwrap();
    assert_eq!((st["source"]["kind"].as_str(), &st["source"]["peer"]), (Some("pull-rtsp"), &s["url"]), "{st}");
    assert_h264_aac(&origin.url("cam"));
    assert_advancing(&origin.url("cam"));
    for path in ["/sources", "/streams", "/metrics"] {
        assert!(!http("GET", origin.api, path).1.contains("hunter2"), "{path} shows the password");
    }
    assert!(!origin.proc.log_text().contains("hunter2"), "the log shows the password");

    // The camera reboots: the source fails, then ingests again by itself, and players get media again.
    cam.kill();
    wait_for("the source to notice the camera is gone", Duration::from_secs(20), || {
        source_state(origin.api, "cam").filter(|s| s["state"] != "ingesting")
    });
    let _cam = camera(&dir, port, "h264");
    let s = wait_for("the source ingesting again", Duration::from_secs(30), || {
        source_state(origin.api, "cam").filter(|s| s["state"] == "ingesting")
    });
    assert!(s["connects"].as_u64().unwrap() >= 2 && s["failures"].as_u64().unwrap() >= 1, "{s}");
    assert_advancing(&origin.url("cam"));
    let (_, m) = http("GET", origin.api, "/metrics");
    assert!(m.contains("relay_sources{role=\"origin\",state=\"ingesting\"} 1"), "{m}");
    assert!(metric(origin.api, "relay_source_failures_total") >= 1.0);

    // A camera sending a video codec we do not carry (VP8) fails with the codec named, and is retried.
    let vp8_port = free_port();
    let _vp8 = camera(&dir, vp8_port, "vp8");
    let body = format!(r#"{{"url": "rtsp://127.0.0.1:{vp8_port}/cam"}}"#);
    assert_eq!(send(origin.api, "PUT", "/sources/live/vp8", &body).0, 201);
    let s = wait_for("the VP8 source to fail", Duration::from_secs(20), || {
        source_state(origin.api, "vp8").filter(|s| s["state"] == "failed")
    });
    assert!(s["error"].as_str().unwrap().contains("unsupported codec video vp8"), "{s}");
    assert_eq!(send(origin.api, "DELETE", "/sources/live/vp8", "").0, 204);

    // Removed: the stream loses its source (and ends after the grace period like a publisher leaving).
    assert_eq!(send(origin.api, "DELETE", "/sources/live/cam", "").0, 204);
    wait_for("the stream to lose its source", Duration::from_secs(5), || {
        stream_entry(origin.api, "live", "cam").is_none_or(|s| s["source"].is_null()).then_some(())
    });
    assert!(source_state(origin.api, "cam").is_none());
}
