//! Bad input against a running origin: each malformed/over-limit connection is closed with a log line while a
//! publisher and a player carry on; stalled players and the connection limit; randomized fuzzing of the input path.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use relay::chunk::{csid, encode_message, msg_type};

/// True when the relay closes the connection within `limit` (EOF or reset).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let end = Instant::now() + limit;
    let mut buf = [0u8; 8192];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

fn message(type_id: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_message(&mut out, csid::COMMAND, 0, type_id, 0, payload, 128);
    out.to_vec()
}

#[test]
fn malformed_input_closes_only_that_connection() {
    let _g = serial();
    let dir = TempDir::new("bad");
    let origin = Relay::origin(&dir, &["--max-message-size", "1048576", "--max-chunk-size", "65536"]);
    let _pub = publish(&dir, &origin.url("test"), &[]);
    wait_live(origin.api, "test");
    let watch = PacketWatch::start(&origin.url("test"), &dir);
    wait_for("player frames", Duration::from_secs(15), || (watch.video_count() >= 10).then_some(()));

    // Each case: bytes to send after (or instead of) a valid handshake, and the log text naming the reason.
    let mut nested = vec![2, 0, 7];
    nested.extend_from_slice(b"connect");
    nested.extend_from_slice(&[0, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0]);
    for _ in 0..50_000 {
        nested.extend_from_slice(&[3, 0, 1, b'a']);
    }
    let cases: Vec<(&str, bool, Vec<u8>, &str)> = vec![
        ("bad handshake version", false, [vec![0x06], vec![0xAB; 1536]].concat(), "handshake failed"),
        (
            "chunk size above limit",
            true,
            message(msg_type::SET_CHUNK_SIZE, &0x7FFF_FFFFu32.to_be_bytes()),
            "above the limit 65536",
        ),
        ("chunk size zero", true, message(msg_type::SET_CHUNK_SIZE, &0u32.to_be_bytes()), "invalid chunk size 0"),
        ("message above limit", true, vec![0x06, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 1, 0, 0, 0], "above the limit 1048576"),
        ("bad AMF marker", true, message(msg_type::AMF0_COMMAND, &[0xFF, 1, 2, 3]), "unsupported type marker 0xff"),
        ("deeply nested AMF", true, message(msg_type::AMF0_COMMAND, &nested), "objects nested deeper than 16"),
        ("truncated connect", true, message(msg_type::AMF0_COMMAND, &[2, 0, 7, b'c', b'o', b'n']), "truncated"),
        (
            "connect without app",
            true,
            message(
                msg_type::AMF0_COMMAND,
                &[2, 0, 7, b'c', b'o', b'n', b'n', b'e', b'c', b't', 0, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0, 5],
            ),
            "malformed connect",
        ),
    ];
    for (i, (what, after_handshake, bytes, log)) in cases.iter().enumerate() {
        let mut s = if *after_handshake { handshaken(origin.rtmp) } else { TcpStream::connect(origin.rtmp).unwrap() };
        // The relay may close before reading everything: a reset on write is also a close.
        let _ = s.write_all(bytes);
        assert!(closed_within(&mut s, Duration::from_secs(5)), "{what}: connection not closed");
        let errors = wait_for(&format!("{what}: protocol error counted"), Duration::from_secs(3), || {
            let v = metric(origin.api, "relay_protocol_errors_total");
            (v as usize == i + 1).then_some(v)
        });
        assert_eq!(errors as usize, i + 1);
        let logs = origin.proc.log_text();
        assert!(
            logs.lines().any(|l| l.contains("bad input, closing this connection") && l.contains(log)),
            "{what}: no log line with {log:?}"
        );
    }
    // Everyone else carried on: the player still gets frames, the publisher is still live, new players work.
    let before = watch.video_count();
    wait_for("player still receiving", Duration::from_secs(10), || (watch.video_count() >= before + 30).then_some(()));
    assert!(!stream_entry(origin.api, "live", "test").unwrap()["source"].is_null());
    assert_h264_aac(&origin.url("test"));
}

#[test]
fn stalled_player_is_disconnected_and_others_continue() {
    let _g = serial();
    let dir = TempDir::new("stall");
    let origin = Relay::origin(&dir, &["--player-timeout", "2"]);
    let _pub = publish(&dir, &origin.url("test"), &[]);
    wait_live(origin.api, "test");
    let watch = PacketWatch::start(&origin.url("test"), &dir);
    let _stalled = stalled_player(origin.rtmp);
    wait_for("two players", Duration::from_secs(10), || {
        stream_entry(origin.api, "live", "test").filter(|s| s["players"] == 2)
    });
    wait_for("stalled player disconnected", Duration::from_secs(30), || {
        (metric(origin.api, "relay_players_stalled_total") == 1.0).then_some(())
    });
    assert_eq!(stream_entry(origin.api, "live", "test").unwrap()["players"], 1);
    assert!(origin.proc.log_text().contains("peer stopped reading (--player-timeout), disconnecting"));
    let before = watch.video_count();
    wait_for("healthy player still receiving", Duration::from_secs(10), || {
        (watch.video_count() >= before + 30).then_some(())
    });
}

#[test]
fn connection_limit_refuses_with_a_log_line() {
    let _g = serial();
    let dir = TempDir::new("limit");
    let origin = Relay::origin(&dir, &["--max-connections", "2"]);
    let _a = handshaken(origin.rtmp);
    let _b = handshaken(origin.rtmp);
    let mut c = TcpStream::connect(origin.rtmp).unwrap();
    assert!(closed_within(&mut c, Duration::from_secs(3)), "third connection not refused");
    assert_eq!(metric(origin.api, "relay_connections_refused_total"), 1.0);
    assert!(origin.proc.log_text().contains("connection limit reached (--max-connections)"));
    drop(_a);
    wait_for("a slot to free up", Duration::from_secs(5), || {
        (metric(origin.api, "relay_connections_active") == 1.0).then_some(())
    });
    let _d = handshaken(origin.rtmp);
}

#[test]
fn fuzz_input_path_never_panics() {
    // The same entry points and mutations as the cargo-fuzz targets in relay/fuzz and the long campaign
    // (examples/fuzz_campaign.rs), with a fixed seed on every test run.
    let seeds = relay::fuzz::seed_inputs();
    assert!(relay::fuzz::server_session(&seeds[1][0]) >= 4, "the publish seed must reach publish and media events");
    assert!(relay::fuzz::server_from_handshake(&seeds[0][0]) >= 4, "the handshake seed must get past the handshake");
    assert!(relay::fuzz::client_session(&seeds[2][0]) >= 2, "the origin seed must reach playing and media");
    assert_eq!(relay::fuzz::http_request(&seeds[3][0]), 1, "the HTTP seed must parse");
    let mut rng = relay::fuzz::Rng(0x9E37_79B9_7F4A_7C15);
    let t = Instant::now();
    let mut n = 0;
    while n < 40_000 && t.elapsed() < Duration::from_secs(8) {
        for (i, (_, f)) in relay::fuzz::TARGETS.iter().enumerate() {
            let pool = &seeds[i];
            let pick = rng.below(pool.len());
            let input = relay::fuzz::mutate(&mut rng, &pool[pick]);
            f(&input);
        }
        let random: Vec<u8> = (0..rng.below(3000)).map(|_| rng.next_u64() as u8).collect();
        relay::fuzz::server_from_handshake(&random);
        relay::fuzz::server_session(&random);
        relay::fuzz::http_request(&random);
        n += 1;
    }
    assert!(n >= 1000, "only {n} fuzz iterations ran");
}

/// A broken flag is refused before anything is bound, with the reason and a non-zero exit; the duration flags
/// take the shared forms (`1m 30s`, `500ms`, bare seconds) and nothing else.
#[test]
fn bad_flags_are_refused_with_the_reason() {
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    for (args, want) in [
        (vec!["origin", "--listen", &listen, "--grace-period", "soon"], "bad duration \"soon\""),
        (vec!["origin", "--listen", &listen, "--player-timeout=-1"], "bad duration"),
        (vec!["edge", "--listen", &listen, "--origin", "rtmp://x/live", "--idle-timeout", "2d"], "bad duration"),
        (vec!["edge", "--listen", &listen, "--origin", "http://x/live"], "scheme must be rtmp://"),
        (vec!["origin", "--listen", "nowhere"], "invalid value 'nowhere'"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_relay")).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(TcpStream::connect(&listen).is_err(), "{args:?} bound its port anyway");
    }
}
