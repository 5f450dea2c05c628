//! End-to-end with real clients: ffmpeg publishes to our origin, ffprobe/ffmpeg play from the origin and an edge.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn publish_then_probe_on_origin_and_edge() {
    let _g = serial();
    let dir = TempDir::new("probe");
    let origin = Relay::origin(&dir, &[]);
    let edge = Relay::edge(&dir, &[origin.rtmp], &[]);
    let _pub = publish(&dir, &origin.url("test"), &[]);
    wait_live(origin.api, "test");
    assert_h264_aac(&origin.url("test"));
    assert_h264_aac(&edge.url("test"));
    let e = stream_entry(edge.api, "live", "test").expect("edge lists the stream it pulled");
    assert_eq!(e["source"]["kind"], "upstream");
    assert_eq!(e["source"]["peer"], format!("rtmp://{}/live", origin.rtmp));
    let o = stream_entry(origin.api, "live", "test").unwrap();
    assert_eq!(o["source"]["kind"], "publisher");
    assert!(o["bitrate_in_kbps"].as_u64().unwrap() > 0, "{o}");
}

#[test]
fn twenty_players_share_one_upstream_connection() {
    let _g = serial();
    let dir = TempDir::new("fanout");
    let origin = Relay::origin(&dir, &[]);
    let edge = Relay::edge(&dir, &[origin.rtmp], &[]);
    let _pub = publish(&dir, &origin.url("test"), &[]);
    wait_live(origin.api, "test");
    // 150 frames is 5 s at 30 fps: more than the 60-frame GOP cache, so players must get live frames too.
    let players: Vec<_> = (0..20)
        .map(|_| {
            let url = edge.url("test");
            std::thread::spawn(move || run_limited(ffmpeg_player(&url, 150), Duration::from_secs(40)))
        })
        .collect();
    // While they play: the origin sees exactly one player (the edge) and the edge one upstream.
    let seen = wait_for("20 players on the edge", Duration::from_secs(20), || {
        stream_entry(edge.api, "live", "test").filter(|s| s["players"] == 20)
    });
    assert_eq!(seen["source"]["kind"], "upstream");
    assert_eq!(stream_entry(origin.api, "live", "test").unwrap()["players"], 1, "edge must pull over one connection");
    assert_eq!(metric(edge.api, "relay_upstream_active"), 1.0);
    assert_eq!(metric(edge.api, "relay_upstream_connects_total"), 1.0);
    for (i, p) in players.into_iter().enumerate() {
        let (ok, out, err) = p.join().unwrap();
        assert!(ok, "player {i} failed: {err}");
        assert!(progress_frames(&out) >= 150, "player {i} got {} frames", progress_frames(&out));
    }
    assert_eq!(metric(edge.api, "relay_upstream_connects_total"), 1.0, "still one upstream after all players");
}

#[test]
fn gop_cache_gives_first_frame_within_a_second() {
    let _g = serial();
    let dir = TempDir::new("ttff");
    let origin = Relay::origin(&dir, &[]);
    let edge = Relay::edge(&dir, &[origin.rtmp], &[]);
    let _pub = publish(&dir, &origin.url("test"), &[]);
    wait_live(origin.api, "test");
    // Pull the stream onto the edge first, and land mid-GOP (keyframes are every 2 s, about 70 frames a second
    // with audio): with a keyframe and what followed it cached, the player can only start fast from the cache.
    assert_h264_aac(&edge.url("test"));
    wait_for("the edge to cache part of a GOP", Duration::from_secs(10), || {
        stream_entry(edge.api, "live", "test").filter(|s| s["gop_cached_frames"].as_u64() >= Some(40))
    });
    // Real client, whole process wall time: spawn, connect, probe, first video packet printed.
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags"]).args([
        "-read_intervals",
        "%+#1",
        "-of",
        "csv=p=0",
        &edge.url("test"),
    ]);
    let t = Instant::now();
    let (ok, out, err) = run_limited(cmd, Duration::from_secs(10));
    let ttff = t.elapsed();
    assert!(ok, "ffprobe failed: {err}");
    assert!(out.contains(",K"), "first packet must be a keyframe from the cache: {out:?}");
    assert!(ttff < Duration::from_secs(1), "time to first frame {ttff:?} >= 1 s");
    eprintln!("time to first frame on a pulled edge: {ttff:?}");
}

#[test]
fn second_publisher_is_refused_and_first_keeps_publishing() {
    let _g = serial();
    let dir = TempDir::new("second");
    let origin = Relay::origin(&dir, &[]);
    let mut first = publish(&dir, &origin.url("test"), &[]);
    wait_live(origin.api, "test");
    let peer = stream_entry(origin.api, "live", "test").unwrap()["source"]["peer"].clone();
    let mut second = publish(&dir, &origin.url("test"), &[]);
    let status = second.wait_timeout(Duration::from_secs(10)).expect("second publisher must be refused and exit");
    assert!(!status.success(), "second publisher exited successfully");
    // The refusal says the key is busy and does not tell the newcomer who holds it; the origin's log does.
    let told = second.log_text();
    assert!(told.contains("stream key is busy"), "ffmpeg log: {told}");
    let holder = peer.as_str().expect("source peer is a string");
    // ffmpeg prints the URL it published to; the server's own words are the "Server error:" line.
    let said = told.lines().find(|l| l.contains("Server error:")).expect("ffmpeg shows the server's refusal");
    assert!(!said.contains(holder) && !said.contains("127.0.0.1"), "the refusal names an address: {said}");
    wait_for("the holder's address in the origin's log", Duration::from_secs(5), || {
        origin.proc.log_text().lines().any(|l| l.contains("key already published") && l.contains(holder)).then_some(())
    });
    assert_eq!(metric(origin.api, "relay_publishes_refused_total"), 1.0);
    assert!(first.is_running());
    assert_eq!(stream_entry(origin.api, "live", "test").unwrap()["source"]["peer"], peer);
    assert_h264_aac(&origin.url("test"));
}

/// The largest step between consecutive video DTS a returning publisher may cause: one frame interval (33 ms at
/// 30 fps), the relay's 40 ms rebase gap, and one AAC frame (23 ms) because the timeline continues from the last
/// message of either kind, plus a millisecond of rounding.
const MAX_RETURN_STEP_MS: i64 = 33 + 40 + 23 + 1;

fn assert_continuous(what: &str, dts: &[i64]) {
    let worst = dts.windows(2).map(|w| w[1] - w[0]).max().expect("two packets");
    let least = dts.windows(2).map(|w| w[1] - w[0]).min().expect("two packets");
    assert!(worst <= MAX_RETURN_STEP_MS, "{what}: a DTS step of {worst} ms (> {MAX_RETURN_STEP_MS}) in {dts:?}");
    assert!(least >= 0, "{what}: DTS went back by {} ms in {dts:?}", -least);
}

#[test]
fn returning_publisher_an_hour_ahead_continues_the_timeline() {
    let _g = serial();
    let dir = TempDir::new("tsjump");
    let origin = Relay::origin(&dir, &[]);
    let edge = Relay::edge(&dir, &[origin.rtmp], &[]);
    let mut first = publish(&dir, &origin.url("test"), &[]);
    wait_live(origin.api, "test");
    let on_origin = PacketWatch::start(&origin.url("test"), &dir);
    let on_edge = PacketWatch::start(&edge.url("test"), &dir);
    wait_for("frames on both players", Duration::from_secs(15), || {
        (on_origin.video_count() >= 30 && on_edge.video_count() >= 30).then_some(())
    });
    first.kill();
    wait_for("the origin to lose its publisher", Duration::from_secs(5), || {
        stream_entry(origin.api, "live", "test").filter(|s| s["source"].is_null())
    });
    // Back within the grace period, its clock one hour ahead.
    let _second = publish(&dir, &origin.url("test"), &["-output_ts_offset", "3600"]);
    let back = Instant::now();
    wait_for("60 frames from the returning publisher on both players", Duration::from_secs(20), || {
        (on_origin.video_after(back) >= 60 && on_edge.video_after(back) >= 60).then_some(())
    });
    let (o, e) = (on_origin.video_dts(), on_edge.video_dts());
    assert_continuous("origin player", &o);
    assert_continuous("edge player", &e);
    // The whole session stays near its start: nothing leapt an hour.
    assert!(e.last().unwrap() - e.first().unwrap() < 60_000, "edge timeline spans {:?}..{:?}", e.first(), e.last());
}

#[test]
fn publish_token_is_enforced() {
    let _g = serial();
    let dir = TempDir::new("token");
    let origin = Relay::origin(&dir, &["--publish-token", "s3cret"]);
    let mut bad = publish(&dir, &format!("{}?token=wrong", origin.url("test")), &[]);
    assert!(!bad.wait_timeout(Duration::from_secs(10)).expect("refused publisher exits").success());
    assert!(bad.log_text().contains("token"), "{}", bad.log_text());
    let _good = publish(&dir, &format!("{}?token=s3cret", origin.url("test")), &[]);
    wait_live(origin.api, "test");
    // Playing stays open.
    assert_h264_aac(&origin.url("test"));
}

#[test]
fn extended_timestamps_relay_through_origin_and_edge() {
    let _g = serial();
    let dir = TempDir::new("extts");
    let origin = Relay::origin(&dir, &[]);
    let edge = Relay::edge(&dir, &[origin.rtmp], &[]);
    // 16800 s = 16 800 000 ms, above 0xFFFFFF (16 777 215): every message needs the extended timestamp field.
    let _pub = publish(&dir, &origin.url("test"), &["-output_ts_offset", "16800"]);
    wait_live(origin.api, "test");
    for url in [origin.url("test"), edge.url("test")] {
        let mut cmd = Command::new("ffprobe");
        cmd.args([
            "-v",
            "error",
            "-show_entries",
            "packet=codec_type,dts_time",
            "-read_intervals",
            "%+#40",
            "-of",
            "csv=p=0",
            &url,
        ]);
        let (ok, out, err) = run_limited(cmd, Duration::from_secs(20));
        assert!(ok, "{err}");
        let dts: Vec<f64> = out.lines().filter_map(|l| l.split(',').nth(1)?.parse().ok()).collect();
        assert!(dts.len() >= 20, "few packets from {url}: {out}");
        assert!(dts.iter().all(|d| (16_800.0..16_900.0).contains(d)), "timestamps not preserved via {url}: {dts:?}");
        let video: Vec<f64> =
            out.lines().filter(|l| l.starts_with("video")).filter_map(|l| l.split(',').nth(1)?.parse().ok()).collect();
        assert!(video.windows(2).all(|w| w[1] >= w[0]), "video dts not monotonic via {url}: {video:?}");
    }
}

#[test]
fn pre_pull_over_api_then_idle_stop() {
    let _g = serial();
    let dir = TempDir::new("prepull");
    let origin = Relay::origin(&dir, &[]);
    let edge = Relay::edge(&dir, &[origin.rtmp], &["--idle-timeout", "3"]);
    let _pub = publish(&dir, &origin.url("test"), &[]);
    wait_live(origin.api, "test");
    let (code, body) = http("POST", edge.api, "/streams/live/test/pull");
    assert_eq!(code, 202, "{body}");
    let (code, _) = http("POST", edge.api, "/streams/other/test/pull");
    assert_eq!(code, 404, "an app no origin serves is refused");
    let (code, _) = http("POST", origin.api, "/streams/live/test/pull");
    assert_eq!(code, 404, "pull is an edge operation");
    // Pulled without any player: the edge caches the GOP and the origin sees the edge as its one player.
    wait_for("edge to cache a GOP", Duration::from_secs(10), || {
        stream_entry(edge.api, "live", "test").filter(|s| s["gop_cached_frames"].as_u64() > Some(0))
    });
    assert_eq!(stream_entry(origin.api, "live", "test").unwrap()["players"], 1);
    // No player comes: the pull stops after the idle timeout and the origin loses its player.
    wait_for("idle pull to stop", Duration::from_secs(10), || {
        stream_entry(edge.api, "live", "test").is_none().then_some(())
    });
    wait_for("origin to see the edge leave", Duration::from_secs(5), || {
        stream_entry(origin.api, "live", "test").filter(|s| s["players"] == 0)
    });
    assert_eq!(metric(edge.api, "relay_upstream_active"), 0.0);
    let (_, m) = http("GET", edge.api, "/metrics");
    assert!(m.contains("# TYPE relay_upstream_connects_total counter"), "{m}");
}
