//! Hardening through real sockets: handshake/connect/idle timeouts, streams per connection, --max-pulls,
//! --max-connections-per-ip, stream name checks, byte budgets, and the API's bearer token and Host/Origin checks.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use relay::chunk::{encode_message, msg_type};
use relay::proto::HandshakeState;
use rml_rtmp::rml_amf0::{self, Amf0Value};

/// One AMF0 command message on chunk stream 3.
fn command(stream_id: u32, name: &str, txn: f64, args: Vec<Amf0Value>) -> Vec<u8> {
    let mut values = vec![Amf0Value::Utf8String(name.into()), Amf0Value::Number(txn)];
    values.extend(args);
    let payload = rml_amf0::serialize(&values).unwrap();
    let mut out = BytesMut::new();
    encode_message(&mut out, 3, 0, msg_type::AMF0_COMMAND, stream_id, &payload, 128);
    out.to_vec()
}

fn connect_cmd(app: &str) -> Vec<u8> {
    let mut props = std::collections::HashMap::new();
    props.insert("app".to_string(), Amf0Value::Utf8String(app.into()));
    props.insert("tcUrl".to_string(), Amf0Value::Utf8String(format!("rtmp://127.0.0.1/{app}")));
    command(0, "connect", 1.0, vec![Amf0Value::Object(props)])
}

fn play_cmd(name: &str) -> Vec<u8> {
    command(1, "play", 0.0, vec![Amf0Value::Null, Amf0Value::Utf8String(name.into())])
}

/// Reads until `needle` appears in what the relay sent (true), or the connection closes / `limit` passes.
fn wait_text(s: &mut TcpStream, needle: &str, limit: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let end = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        if seen.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            return true;
        }
    }
    seen.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Seconds until the relay closes the connection (EOF or reset), or None within `limit`.
fn closed_after(s: &mut TcpStream, limit: Duration) -> Option<f64> {
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 8192];
    while t.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Some(t.elapsed().as_secs_f64()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(t.elapsed().as_secs_f64()),
        }
    }
    None
}

#[test]
fn silent_connections_time_out_but_players_do_not() {
    let _g = serial();
    let dir = TempDir::new("timeouts");
    let origin =
        Relay::origin(&dir, &["--handshake-timeout", "1s", "--connect-timeout", "1s", "--conn-idle-timeout", "1500ms"]);
    // No handshake at all.
    let mut raw = TcpStream::connect(origin.rtmp).unwrap();
    let t = closed_after(&mut raw, Duration::from_secs(5)).expect("no-handshake connection left open");
    assert!((0.8..3.0).contains(&t), "closed after {t}s");
    // Handshake, then nothing.
    let mut s = handshaken(origin.rtmp);
    let t = closed_after(&mut s, Duration::from_secs(5)).expect("silent connection left open");
    assert!((0.8..3.0).contains(&t), "closed after {t}s");
    // connect, then nothing: the idle timeout.
    let mut s = handshaken(origin.rtmp);
    s.write_all(&connect_cmd("live")).unwrap();
    let t = closed_after(&mut s, Duration::from_secs(5)).expect("idle connection left open");
    assert!((1.2..3.5).contains(&t), "closed after {t}s");
    let logs = origin.proc.log_text();
    for why in ["--handshake-timeout", "--connect-timeout", "--conn-idle-timeout"] {
        assert!(logs.lines().any(|l| l.contains("closing idle connection") && l.contains(why)), "no log for {why}");
    }
    assert_eq!(metric(origin.api, "relay_connections_timed_out_total"), 3.0);

    // A player only reads: it keeps playing well past every timeout, and so does the publisher.
    let _pub = publish(&dir, &origin.url("test"), &[]);
    wait_live(origin.api, "test");
    let connected = Instant::now();
    let watch = PacketWatch::start(&origin.url("test"), &dir);
    wait_for("player frames", Duration::from_secs(15), || (watch.video_count() >= 10).then_some(()));
    // Watched until 3.5 s after the player connected (the latest an idle connection closed above): no further
    // connection times out meanwhile, and the player still receives after it.
    let t = Instant::now();
    let window = Duration::from_millis(3500).saturating_sub(connected.elapsed());
    lb_lab::wait::holds_for(window, "no player timed out", || {
        metric(origin.api, "relay_connections_timed_out_total") == 3.0
    })
    .unwrap_or_else(|e| panic!("{e}"));
    wait_for("player still receiving", Duration::from_secs(5), || (watch.video_after(t) >= 20).then_some(()));
    assert_eq!(metric(origin.api, "relay_connections_timed_out_total"), 3.0);
}

#[test]
fn one_connection_cannot_cycle_through_stream_names() {
    let _g = serial();
    let dir = TempDir::new("streams-per-conn");
    let origin = Relay::origin(&dir, &[]);
    let edge = Relay::edge(&dir, &[origin.rtmp], &["--max-streams-per-connection", "3", "--idle-timeout", "30s"]);
    let mut s = handshaken(edge.rtmp);
    s.write_all(&connect_cmd("live")).unwrap();
    for i in 0..3 {
        s.write_all(&command(0, "createStream", 2.0 + i as f64, vec![Amf0Value::Null])).unwrap();
        s.write_all(&play_cmd(&format!("name{i}"))).unwrap();
        assert!(wait_text(&mut s, "NetStream.Play.Start", Duration::from_secs(5)), "play {i} not started");
        s.write_all(&command(1, "deleteStream", 0.0, vec![Amf0Value::Null, Amf0Value::Number(1.0)])).unwrap();
    }
    s.write_all(&play_cmd("name3")).unwrap();
    assert!(wait_text(&mut s, "NetStream.Play.Failed", Duration::from_secs(5)), "4th play not refused");
    assert!(closed_after(&mut s, Duration::from_secs(3)).is_some(), "connection not closed after the refusal");
    assert_eq!(metric(edge.api, "relay_streams_refused_total"), 1.0);
    assert!(stream_entry(edge.api, "live", "name3").is_none(), "the refused name was allocated");
    assert!(edge.proc.log_text().contains("--max-streams-per-connection"));
}

#[test]
fn pulls_are_bounded_and_names_checked_before_anything_is_allocated() {
    let _g = serial();
    let dir = TempDir::new("max-pulls");
    let origin = Relay::origin(&dir, &[]);
    let edge = Relay::edge(&dir, &[origin.rtmp], &["--max-pulls", "2"]);
    let player = |name: &str| {
        let mut s = handshaken(edge.rtmp);
        s.write_all(&connect_cmd("live")).unwrap();
        s.write_all(&command(0, "createStream", 2.0, vec![Amf0Value::Null])).unwrap();
        s.write_all(&play_cmd(name)).unwrap();
        s
    };
    let mut a = player("a");
    let mut b = player("b");
    assert!(wait_text(&mut a, "NetStream.Play.Start", Duration::from_secs(5)));
    assert!(wait_text(&mut b, "NetStream.Play.Start", Duration::from_secs(5)));
    // A second player of a pulled stream needs no new pull.
    let mut a2 = player("a");
    assert!(wait_text(&mut a2, "NetStream.Play.Start", Duration::from_secs(5)));
    let mut c = player("c");
    assert!(wait_text(&mut c, "--max-pulls", Duration::from_secs(5)), "third pull not refused");
    assert!(closed_after(&mut c, Duration::from_secs(3)).is_some());
    let (code, body) = http("POST", edge.api, "/streams/live/d/pull");
    assert_eq!(code, 503, "{body}");
    assert_eq!(metric(edge.api, "relay_pulls_refused_total"), 2.0);
    wait_for("two pulls at the origin", Duration::from_secs(10), || {
        (streams(origin.api)["streams"].as_array().unwrap().len() == 2).then_some(())
    });

    // Bad names: refused with onStatus, nothing created here or pulled at the origin.
    let long = "x".repeat(200);
    for bad in ["a/b", "..", "sp ace", long.as_str(), ""] {
        let mut s = player(bad);
        assert!(wait_text(&mut s, "NetStream.Play.Failed", Duration::from_secs(5)), "{bad:?} not refused");
    }
    let mut s = handshaken(edge.rtmp);
    s.write_all(&connect_cmd("li/ve")).unwrap();
    s.write_all(&command(0, "createStream", 2.0, vec![Amf0Value::Null])).unwrap();
    s.write_all(&play_cmd("ok")).unwrap();
    assert!(wait_text(&mut s, "NetStream.Play.Failed", Duration::from_secs(5)), "bad app not refused");
    assert_eq!(streams(edge.api)["streams"].as_array().unwrap().len(), 2);
    assert_eq!(http("POST", edge.api, "/streams/live/a%2Fb/pull").0, 400);
    assert_eq!(streams(origin.api)["streams"].as_array().unwrap().len(), 2);
}

#[test]
fn connections_per_ip_are_bounded() {
    let _g = serial();
    let dir = TempDir::new("per-ip");
    let origin = Relay::origin(&dir, &["--max-connections-per-ip", "2"]);
    // Relay::start's readiness probes have closed by now; wait until the relay has noticed.
    wait_for("probe connections gone", Duration::from_secs(5), || {
        (metric(origin.api, "relay_connections_active") == 0.0).then_some(())
    });
    let a = handshaken(origin.rtmp);
    let b = handshaken(origin.rtmp);
    let mut c = TcpStream::connect(origin.rtmp).unwrap();
    assert!(closed_after(&mut c, Duration::from_secs(3)).is_some(), "third connection from 127.0.0.1 accepted");
    assert_eq!(metric(origin.api, "relay_connections_refused_per_ip_total"), 1.0);
    // Another client address (all of 127/8 is loopback) has its own allowance.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let other = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        sock.connect(origin.rtmp).await.unwrap().into_std().unwrap()
    });
    other.set_nonblocking(false).unwrap();
    let mut other = other;
    other.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (mut hs, c0c1) = HandshakeState::client().unwrap();
    other.write_all(&c0c1).unwrap();
    let mut buf = [0u8; 4096];
    let n = other.read(&mut buf).unwrap();
    assert!(n > 0, "connection from 127.0.0.2 was refused");
    assert!(hs.feed(&buf[..n]).is_ok());
    // A slot comes back when a connection closes.
    drop(a);
    wait_for("slot released", Duration::from_secs(5), || {
        (metric(origin.api, "relay_connections_active") <= 2.0).then_some(())
    });
    let _d = handshaken(origin.rtmp);
    assert_eq!(metric(origin.api, "relay_connections_refused_per_ip_total"), 1.0);
    assert!(origin.proc.log_text().contains("--max-connections-per-ip"));
    drop(b);
}

#[test]
fn api_token_and_cross_site_checks() {
    let _g = serial();
    let dir = TempDir::new("api-token");
    let edge_origin = Relay::origin(&dir, &[]);
    let edge = Relay::edge(&dir, &[edge_origin.rtmp], &["--api-token", "s3cret"]);
    let host = edge.api.to_string();
    let auth = |t: &'static str| -> (&'static str, String) { ("Authorization", format!("Bearer {t}")) };
    let get = |hdrs: &[(&str, &str)]| http_with("GET", edge.api, "/streams", hdrs).0;
    assert_eq!(get(&[("Host", &host)]), 401);
    assert_eq!(get(&[("Host", &host), ("Authorization", "Bearer wrong")]), 401);
    assert_eq!(get(&[("Host", &host), ("Authorization", "Bearer s3cre")]), 401);
    assert_eq!(get(&[("Host", &host), ("Authorization", "s3cret")]), 401);
    let (k, v) = auth("s3cret");
    assert_eq!(get(&[("Host", &host), (k, &v)]), 200);
    assert_eq!(http_with("GET", edge.api, "/metrics", &[("Host", &host)]).0, 401);
    assert_eq!(http_with("GET", edge.api, "/healthz", &[("Host", &host)]).0, 200, "probes need no token");
    // POSTs: an IP Host and a same-host Origin (or none) only.
    let post = |hdrs: &[(&str, &str)]| http_with("POST", edge.api, "/streams/live/x/pull", hdrs);
    assert_eq!(post(&[("Host", "evil.example"), (k, &v)]).0, 403);
    assert_eq!(post(&[("Host", &host), (k, &v), ("Origin", "http://evil.example")]).0, 403);
    assert_eq!(post(&[("Host", &host)]).0, 401);
    let same = format!("http://{host}");
    assert_eq!(post(&[("Host", &host), (k, &v), ("Origin", &same)]).0, 202);
    assert_eq!(post(&[("Host", &host), (k, &v)]).0, 202);
    let (_, body) = http_with("GET", edge.api, "/metrics", &[("Host", &host), (k, &v)]);
    let m = svc::metrics::parse(&body).unwrap();
    assert_eq!(m["relay_api_refused_total"][0].1, 8.0, "{body}");

    // An API on a non-loopback address without a token is refused at start, before anything is bound.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let api = format!("0.0.0.0:{}", free_port());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["origin", "--listen", &listen, "--api", &api])
        .env_remove("RELAY_API_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--api-token"), "{err}");
    assert!(TcpStream::connect(&listen).is_err(), "bound its RTMP port anyway");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["origin", "--listen", &listen, "--api-token", ""])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("must not be empty"));
}

/// A player that stops reading for a while falls behind the byte budget: it skips to a keyframe and goes on,
/// instead of making the stream hold its backlog.
#[test]
fn a_player_behind_its_byte_budget_skips_to_a_keyframe() {
    let _g = serial();
    let dir = TempDir::new("budget");
    // Message-count limits far away, the byte budget small: only the bytes trigger.
    let origin = Relay::origin(
        &dir,
        &["--player-queue", "100000", "--player-buffer-bytes", "100000", "--player-timeout", "30s"],
    );
    // Constant 8 Mbit/s (x264 pads with filler): the kernel autotunes the relay's send buffer on loopback up to
    // 4 MiB (tcp_wmem), which a stalled player must fill before the relay itself holds a backlog.
    let cbr = ["-b:v", "8M", "-minrate", "8M", "-maxrate", "8M", "-bufsize", "1M", "-x264-params", "nal-hrd=cbr"];
    let _pub = publish(&dir, &origin.url("test"), &cbr);
    wait_live(origin.api, "test");
    // A 4 KiB receive window that is never read: the relay's writes block once the send buffer is full.
    let mut slow = stalled_player(origin.rtmp);
    // The relay's writes block once the send buffer is full: after the player was sent a megabyte (it is being
    // fed), the relay's bytes out stand still, where at 8 Mbit/s a write completes every frame. Still for 1.5 s:
    // 1.5 MB the relay holds itself, fifteen times the player's byte budget (still for 0.5 s was measured too
    // little for the relay to find the player behind when it reads again).
    let start = metric(origin.api, "relay_bytes_out_total");
    let mut last = (Instant::now(), start);
    let (sent, took) = lb_lab::wait::wait_for(Duration::from_secs(20), "the relay's writes to block", || {
        let now = metric(origin.api, "relay_bytes_out_total");
        if now != last.1 {
            last = (Instant::now(), now);
        }
        (now >= start + 1e6 && last.0.elapsed() >= Duration::from_millis(1500)).then_some(now - start)
    })
    .unwrap_or_else(|e| panic!("{e}: {last:?} bytes out"));
    assert!(sent >= 1e6, "{sent} bytes sent before the writes blocked");
    println!("figure: the relay's writes blocked {took:?} after the stalled player started, {sent} bytes sent");
    assert_eq!(metric(origin.api, "relay_frames_skipped_total"), 0.0, "skipped before the player was behind");
    // Now read everything: the relay finds the player far behind and resumes it at a keyframe.
    let mut got = 0usize;
    slow.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = vec![0u8; 65536];
    let end = Instant::now() + Duration::from_secs(6);
    while Instant::now() < end {
        match slow.read(&mut buf) {
            Ok(0) => panic!("the relay closed the slow player"),
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(got > 1_000_000, "only {got} bytes after resuming");
    assert!(metric(origin.api, "relay_frames_skipped_total") > 0.0, "nothing skipped:\n{}", origin.proc.log_text());
    assert_eq!(metric(origin.api, "relay_players_stalled_total"), 0.0);
}
