//! Origin ingest by pull: an origin pulls a camera-like RTMP source (another relay fed by ffmpeg) through
//! `PUT /sources`, keeps it across the source's restart, and stops on `DELETE`; bad requests change nothing.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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
        (format!(r#"{{"url": "http://{}/live/cam1"}}"#, camera.rtmp), "rtmp:// or rtsp://"),
        (r#"{"url": "rtmp://x/live"}"#.to_string(), "missing /KEY"),
        (r#"{"uri": "rtmp://x/live/a"}"#.to_string(), "unknown field `uri`"),
        (r#"{}"#.to_string(), "no source: give url or a non-empty sources list"),
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
    // Not delivering at once (after source_timeout), failed once the pull gives up (--source-timeout).
    wait_for("the source to stop delivering", Duration::from_secs(5), || {
        source_state(origin.api, "cam").filter(|s| s["state"] != "ingesting")
    });
    wait_for("the source to fail", Duration::from_secs(20), || {
        source_state(origin.api, "cam").filter(|s| s["failures"].as_u64() >= Some(1))
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
        .args(["origin", "--listen", "127.0.0.1:0", "--source", "live/cam=ftp://x/y"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rtmp:// or rtsp://"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads `url` for about four seconds and checks that H.264 and AAC packets arrive with timestamps moving forward.
fn assert_advancing(url: &str) {
    require("ffprobe");
    let mut cmd = std::process::Command::new("ffprobe");
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

/// An RTSP camera: GStreamer's gst-rtsp-server (scripts/rtsp-camera.py) serving H.264 + AAC behind basic auth.
fn rtsp_camera(dir: &TempDir, port: u16) -> Proc {
    rtsp_camera_with(dir, port, "h264")
}

/// The same camera sending `video` ("h264" or "vp8").
fn rtsp_camera_with(dir: &TempDir, port: u16, video: &str) -> Proc {
    let typelib = "/usr/lib/x86_64-linux-gnu/girepository-1.0/GstRtspServer-1.0.typelib";
    assert!(
        std::path::Path::new(typelib).exists(),
        "gst-rtsp-server is missing: install gir1.2-gst-rtsp-server-1.0 python3-gi python3-gst-1.0 \
         gstreamer1.0-plugins-ugly gstreamer1.0-libav (cargo xtask setup)"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/rtsp-camera.py");
    let mut cmd = std::process::Command::new("/usr/bin/python3");
    // On the host's own network: loopback only.
    cmd.args([
        script,
        "--address",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--path",
        "/cam",
        "--user",
        "viewer",
        "--password",
        "s3cret",
    ]);
    cmd.args(["--video", video]);
    let p = Proc::spawn("rtsp-camera", cmd, Some(dir.path(&format!("rtsp-camera-{port}.log"))));
    wait_port(format!("127.0.0.1:{port}").parse().unwrap(), Duration::from_secs(15));
    p
}

#[test]
fn an_origin_ingests_an_rtsp_camera_with_credentials_and_survives_its_restart() {
    let _g = serial();
    let dir = TempDir::new("rtsp");
    let port = free_port();
    let mut camera = rtsp_camera(&dir, port);
    let origin = Relay::origin(&dir, &[]);
    // Wrong password: the source fails with the camera's refusal and keeps retrying.
    let (code, b) = send(
        origin.api,
        "PUT",
        "/sources/live/cam",
        &format!(r#"{{"url": "rtsp://viewer:wrong@127.0.0.1:{port}/cam"}}"#),
    );
    assert_eq!(code, 201, "{b}");
    let s = wait_for("the source to fail on auth", Duration::from_secs(15), || {
        source_state(origin.api, "cam").filter(|s| s["state"] == "failed")
    });
    assert!(s["error"].as_str().unwrap_or("").contains("DESCRIBE"), "{s}");
    assert_eq!(s["url"], format!("rtsp://127.0.0.1:{port}/cam"), "credentials are never shown");
    // The right one: H.264 640x360 and AAC on the origin's RTMP side.
    let (code, _) = send(
        origin.api,
        "PUT",
        "/sources/live/cam",
        &format!(r#"{{"url": "rtsp://viewer:s3cret@127.0.0.1:{port}/cam"}}"#),
    );
    assert_eq!(code, 200);
    wait_for("the origin ingesting the camera", Duration::from_secs(20), || {
        source_state(origin.api, "cam").filter(|s| s["state"] == "ingesting")
    });
    assert_eq!(stream_entry(origin.api, "live", "cam").unwrap()["source"]["kind"], "pull-rtsp");
    assert_h264_aac(&origin.url("cam"));
    assert_advancing(&origin.url("cam"));
    for path in ["/sources", "/streams", "/metrics"] {
        assert!(!http("GET", origin.api, path).1.contains("s3cret"), "{path} shows the password");
    }
    assert!(!origin.proc.log_text().contains("s3cret"), "the log shows the password");
    // The camera restarts: the source comes back by itself.
    camera.kill();
    wait_for("the source to notice", Duration::from_secs(20), || {
        source_state(origin.api, "cam").filter(|s| s["state"] != "ingesting")
    });
    let _camera = rtsp_camera(&dir, port);
    wait_for("the camera ingested again", Duration::from_secs(30), || {
        source_state(origin.api, "cam").filter(|s| s["state"] == "ingesting")
    });
    assert_h264_aac(&origin.url("cam"));
    assert_advancing(&origin.url("cam"));
    assert_eq!(send(origin.api, "DELETE", "/sources/live/cam", "").0, 204);
}

#[test]
fn an_rtsp_camera_with_a_video_codec_we_cannot_carry_fails_with_the_codec_named() {
    let _g = serial();
    let dir = TempDir::new("rtsp-vp8");
    let port = free_port();
    let _camera = rtsp_camera_with(&dir, port, "vp8");
    let origin = Relay::origin(&dir, &[]);
    let body = format!(r#"{{"url": "rtsp://viewer:s3cret@127.0.0.1:{port}/cam"}}"#);
    assert_eq!(send(origin.api, "PUT", "/sources/live/vp8", &body).0, 201);
    let s = wait_for("the VP8 source to fail", Duration::from_secs(20), || {
        source_state(origin.api, "vp8").filter(|s| s["state"] == "failed" && s["failures"].as_u64() >= Some(2))
    });
    // Named, and retried (the camera may be reconfigured); never ingested as an audio-only stream.
    let err = s["error"].as_str().unwrap_or("");
    assert!(err.contains("unsupported codec") && err.contains("video/vp8"), "{s}");
    assert_eq!(s["connects"], 0, "{s}");
    assert!(stream_entry(origin.api, "live", "vp8").is_none_or(|st| st["source"].is_null()));
    assert_eq!(send(origin.api, "DELETE", "/sources/live/vp8", "").0, 204);
}

#[test]
fn an_rtsp_camera_with_an_rtmp_backup_hands_over_when_the_camera_dies_and_back_when_it_returns() {
    let _g = serial();
    let dir = TempDir::new("rtsp-backup");
    let port = free_port();
    let mut camera = rtsp_camera(&dir, port);
    let origin = Relay::origin(&dir, &[]);
    // Main: the camera (640x360), pulled; backup: an encoder that pushes cam?role=backup at 320x180.
    let plan = format!(
        r#"{{"sources": [{{"role": "main", "url": "rtsp://viewer:s3cret@127.0.0.1:{port}/cam"}}, {{"role": "backup"}}],
            "source_stable_for": "3s"}}"#
    );
    let (code, b) = send(origin.api, "PUT", "/sources/live/cam", &plan);
    assert_eq!(code, 201, "{b}");
    assert!(!b.contains("s3cret"), "credentials never shown: {b}");
    let _backup = publish(&dir, &format!("{}?role=backup", origin.url("cam")), &["-s", "320x180"]);
    let lanes = |api| -> serde_json::Value {
        let (code, body) = http("GET", api, "/sources/live/cam");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let healthy = |v: &serde_json::Value, role: &str| {
        v["sources"].as_array().unwrap().iter().any(|s| s["role"] == role && s["healthy"] == true)
    };
    wait_for("the camera live and the backup warm", Duration::from_secs(20), || {
        let v = lanes(origin.api);
        (v["live"] == "main" && healthy(&v, "main") && healthy(&v, "backup")).then_some(())
    });
    assert!(probe(&origin.url("cam")).contains(&"h264:640x360".to_string()));
    let mut watch = PacketWatch::start(&origin.url("cam"), &dir);
    wait_for("the player reading", Duration::from_secs(15), || (watch.video_count() >= 30).then_some(()));

    // The camera dies: the backup is live within source_timeout, and players go on at its resolution.
    let killed = Instant::now();
    camera.kill();
    wait_for("the backup live", Duration::from_secs(5), || (lanes(origin.api)["live"] == "backup").then_some(()));
    assert!(killed.elapsed() <= Duration::from_millis(2500), "switched after {:?}", killed.elapsed());
    assert!(probe(&origin.url("cam")).contains(&"h264:320x180".to_string()));
    wait_for("the player reading the backup", Duration::from_secs(10), || {
        (watch.video_after(killed) >= 60).then_some(())
    });

    // The camera returns: live again after source_stable_for (3 s here).
    let _camera = rtsp_camera(&dir, port);
    wait_for("the camera live again", Duration::from_secs(30), || (lanes(origin.api)["live"] == "main").then_some(()));
    assert!(probe(&origin.url("cam")).contains(&"h264:640x360".to_string()));
    let dts = watch.video_dts();
    assert!(dts.windows(2).all(|w| w[1] >= w[0]), "DTS monotonic across both switches");
    assert!(watch.proc.is_running(), "the player kept its connection");
    assert_eq!(lanes(origin.api)["switches"].as_u64(), Some(2));
}
