//! Origin failure: the edge reconnects (same origin restarted, or the next --origin) while its player stays attached.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Asserts the player kept one connection, got frames after `t`, and saw a monotonic video timeline.
fn assert_continued(watch: &mut PacketWatch, t: Instant) {
    wait_for("video packets after the origin came back", Duration::from_secs(25), || {
        (watch.video_after(t) >= 60).then_some(())
    });
    assert!(watch.proc.is_running(), "the player was disconnected instead of riding through the grace period");
    let dts = watch.video_dts();
    let back = dts.windows(2).filter(|w| w[1] < w[0]).count();
    assert_eq!(back, 0, "video timestamps went backwards across the reconnect: {dts:?}");
}

#[test]
fn origin_killed_and_restarted_players_keep_receiving() {
    let _g = serial();
    let dir = TempDir::new("restart");
    let port = free_port();
    let mut origin = Relay::origin_on(&dir, port, &[]);
    let edge = Relay::edge(&dir, &[origin.rtmp], &["--grace-period", "20", "--backoff-max-ms", "500"]);
    let mut publisher = publish(&dir, &origin.url("test"), &[]);
    wait_live(origin.api, "test");
    let mut watch = PacketWatch::start(&edge.url("test"), &dir);
    wait_for("player to get frames", Duration::from_secs(15), || (watch.video_count() >= 30).then_some(()));

    origin.proc.kill();
    publisher.kill();
    // The edge notices the upstream is gone (the stream loses its source, the failure is counted) but keeps the
    // stream and its player through the grace period.
    let in_grace = wait_for("the edge to lose its upstream", Duration::from_secs(10), || {
        let s = stream_entry(edge.api, "live", "test").expect("edge keeps the stream in grace");
        (s["source"].is_null() && metric(edge.api, "relay_upstream_failures_total") >= 1.0).then_some(s)
    });
    assert_eq!(in_grace["players"], 1);

    let origin = Relay::origin_on(&dir, port, &[]);
    let _publisher = publish(&dir, &origin.url("test"), &[]);
    let restarted = Instant::now();
    assert_continued(&mut watch, restarted);
    assert!(metric(edge.api, "relay_upstream_connects_total") >= 2.0);
    assert!(metric(edge.api, "relay_upstream_failures_total") >= 1.0);
    assert_eq!(stream_entry(origin.api, "live", "test").unwrap()["players"], 1, "one upstream after reconnecting");
}

#[test]
fn standby_origin_takes_over() {
    let _g = serial();
    let dir = TempDir::new("standby");
    let mut primary = Relay::origin(&dir, &[]);
    let standby = Relay::origin(&dir, &[]);
    let mut pub_a = publish(&dir, &primary.url("test"), &[]);
    let _pub_b = publish(&dir, &standby.url("test"), &[]);
    wait_live(primary.api, "test");
    wait_live(standby.api, "test");
    let edge = Relay::edge(&dir, &[primary.rtmp, standby.rtmp], &["--grace-period", "20", "--backoff-max-ms", "500"]);
    let mut watch = PacketWatch::start(&edge.url("test"), &dir);
    wait_for("player to get frames", Duration::from_secs(15), || (watch.video_count() >= 30).then_some(()));
    assert_eq!(
        stream_entry(edge.api, "live", "test").unwrap()["source"]["peer"],
        format!("rtmp://{}/live", primary.rtmp)
    );

    primary.proc.kill();
    pub_a.kill();
    let killed = Instant::now();
    assert_continued(&mut watch, killed);
    assert_eq!(
        stream_entry(edge.api, "live", "test").unwrap()["source"]["peer"],
        format!("rtmp://{}/live", standby.rtmp)
    );
}

#[test]
fn players_are_closed_when_the_grace_period_ends() {
    let _g = serial();
    let dir = TempDir::new("grace");
    let mut origin = Relay::origin(&dir, &[]);
    let edge = Relay::edge(&dir, &[origin.rtmp], &["--grace-period", "2", "--backoff-max-ms", "500"]);
    let mut publisher = publish(&dir, &origin.url("test"), &[]);
    wait_live(origin.api, "test");
    let mut watch = PacketWatch::start(&edge.url("test"), &dir);
    wait_for("player to get frames", Duration::from_secs(15), || (watch.video_count() >= 10).then_some(()));
    origin.proc.kill();
    publisher.kill();
    // No origin comes back: after the grace period the edge ends the stream and the player exits (documented).
    let status = watch.proc.wait_timeout(Duration::from_secs(10));
    assert!(status.is_some(), "player still attached long after the grace period");
    wait_for("edge to forget the stream", Duration::from_secs(5), || {
        stream_entry(edge.api, "live", "test").is_none().then_some(())
    });
}

/// `PUT /origins` with a JSON body, as the stream manager sends it; the status.
fn put_origins(api: std::net::SocketAddr, origins: &[String]) -> u16 {
    use std::io::{Read, Write};
    let body = serde_json::json!({ "origins": origins }).to_string();
    let mut s = std::net::TcpStream::connect(api).unwrap();
    let req = format!(
        "PUT /origins HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Failback as the manager does it: both origins are live, the edge pulls from the first; `PUT /origins` naming
/// the other first moves the pull there within a moment, and the player stays with a monotonic timeline.
#[test]
fn a_repointed_edge_moves_its_pull_and_keeps_its_player() {
    let _g = serial();
    let dir = TempDir::new("repoint");
    let a = Relay::origin(&dir, &[]);
    let b = Relay::origin(&dir, &[]);
    let _pub_a = publish(&dir, &a.url("test"), &[]);
    let _pub_b = publish(&dir, &b.url("test"), &[]);
    wait_live(a.api, "test");
    wait_live(b.api, "test");
    let edge = Relay::edge(&dir, &[a.rtmp], &["--grace-period", "20"]);
    let mut watch = PacketWatch::start(&edge.url("test"), &dir);
    wait_for("player to get frames", Duration::from_secs(15), || (watch.video_count() >= 30).then_some(()));
    let peer = |api| stream_entry(api, "live", "test").unwrap()["source"]["peer"].clone();
    assert_eq!(peer(edge.api), format!("rtmp://{}/live", a.rtmp));

    let moved = Instant::now();
    assert_eq!(put_origins(edge.api, &[format!("rtmp://{}/live", b.rtmp), format!("rtmp://{}/live", a.rtmp)]), 200);
    let took = wait_for("the edge to pull from b", Duration::from_secs(5), || {
        (peer(edge.api) == format!("rtmp://{}/live", b.rtmp)).then_some(moved.elapsed())
    });
    assert!(took < Duration::from_secs(2), "the pull moved after {took:?}");
    assert_continued(&mut watch, moved);
    assert_eq!(stream_entry(a.api, "live", "test").unwrap()["players"], 0, "a no longer feeds the edge");
    assert_eq!(put_origins(edge.api, &["http://x/live".to_string()]), 400);
    assert_eq!(peer(edge.api), format!("rtmp://{}/live", b.rtmp), "a refused list changes nothing");
}
