//! Abusive clients against a running relay: overlong names, RTMPT session floods and odd HTTP requests on the
//! media listener, each with its bound asserted while real players keep being served.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use relay::chunk::{csid, encode_message, msg_type};

/// Everything the relay sends until it closes the connection, or None if it is still open after `limit`.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let end = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(got),
        }
    }
    None
}

/// An AMF0 `connect` command whose app is `app`.
fn connect_message(app: &str) -> Vec<u8> {
    let mut p = vec![2, 0, 7];
    p.extend_from_slice(b"connect");
    p.extend_from_slice(&[0, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0, 3, 0, 3]);
    p.extend_from_slice(b"app");
    p.push(2);
    p.extend_from_slice(&(app.len() as u16).to_be_bytes());
    p.extend_from_slice(app.as_bytes());
    p.extend_from_slice(&[0, 0, 9]);
    let mut out = BytesMut::new();
    encode_message(&mut out, csid::COMMAND, 0, msg_type::AMF0_COMMAND, 0, &p, 128);
    out.to_vec()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn overlong_app_names_are_refused_at_connect_and_barely_logged() {
    let _g = serial();
    let dir = TempDir::new("abuse-names");
    let origin = Relay::origin(&dir, &[]);
    // A sound connect is accepted (the refusal below is about the name, not connect itself).
    let mut ok = handshaken(origin.rtmp);
    ok.write_all(&connect_message("live")).unwrap();
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    wait_for("NetConnection.Connect.Success", Duration::from_secs(5), || {
        let n = ok.read(&mut buf).unwrap_or(0);
        seen.extend_from_slice(&buf[..n]);
        contains(&seen, b"NetConnection.Connect.Success").then_some(())
    });

    let before = origin.proc.log_text().len();
    let name = "x".repeat(65_000);
    for i in 0..20 {
        let mut s = handshaken(origin.rtmp);
        s.write_all(&connect_message(&name)).unwrap();
        let got = read_until_closed(&mut s, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("connect {i} with a 65,000-byte app was not closed"));
        assert!(contains(&got, b"NetConnection.Connect.Rejected"), "connect {i}: no rejection in {got:?}");
        assert!(contains(&got, b"(65000 bytes)"), "connect {i}: the rejection does not say why");
        assert!(!contains(&got, b"NetConnection.Connect.Success"), "connect {i} was accepted");
    }
    let lines = wait_for("20 refusals in the log", Duration::from_secs(5), || {
        let text = origin.proc.log_text();
        let n = text.lines().filter(|l| l.contains("connect refused")).count();
        (n == 20).then_some(text)
    });
    let growth = lines.len() - before;
    // Each refusal is one line showing a 64-character prefix: well under 1 KB each (the whole name was 65 KB).
    assert!(growth < 20 * 1024, "20 refused connects grew the log by {growth} bytes");
    assert_eq!(metric(origin.api, "relay_protocol_errors_total"), 20.0);
}

fn http_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// Sends `request` on a fresh connection and returns the status code of the answer, which must come within 3 s.
fn status_of(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request).unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(3))
        .or_else(|| {
            // An answer on a connection kept open (FLV streaming, RTMPT keep-alive): what came so far.
            let mut b = vec![0u8; 4096];
            s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            s.read(&mut b).ok().map(|n| b[..n].to_vec())
        })
        .expect("an answer");
    let text = String::from_utf8_lossy(&got).to_string();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"));
    (code, text)
}

#[test]
fn odd_http_requests_on_the_media_listener_get_their_status() {
    let _g = serial();
    let dir = TempDir::new("abuse-http");
    let http = http_addr();
    let origin = Relay::origin(&dir, &["--http-listen", &http.to_string()]);
    wait_port(http, Duration::from_secs(10));
    let _pub = publish(&dir, &origin.url("test"), &[]);
    wait_live(origin.api, "test");

    // Two different Content-Length headers: 400 at once (the body's end is ambiguous), not a wait for 5 bytes.
    let t = Instant::now();
    let (code, text) =
        status_of(http, b"POST /open/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 5\r\n\r\n\0");
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("conflicting Content-Length"), "{text}");
    assert!(t.elapsed() < Duration::from_secs(2), "answered after {:?}", t.elapsed());

    // 10,000 header lines: 431 (too large), not 400.
    let mut many = b"GET /live/test.flv HTTP/1.1\r\n".to_vec();
    for i in 0..10_000 {
        many.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let (code, text) = status_of(http, &many);
    assert_eq!(code, 431, "{text}");

    // Absolute-form targets are served like their path: the health check, and a real FLV play read by curl.
    let (code, text) =
        status_of(http, format!("GET http://{http}/healthz HTTP/1.1\r\nHost: {http}\r\n\r\n").as_bytes());
    assert_eq!((code, text.ends_with("ok\n")), (200, true), "{text}");
    require("curl");
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "-", "--max-time", "3", "--request-target"])
        .arg(format!("http://{http}/live/test.flv"))
        .arg(format!("http://{http}/"))
        .output()
        .expect("curl");
    assert!(
        out.stdout.starts_with(b"FLV\x01"),
        "curl got {:?}",
        String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(200)])
    );
    assert!(out.stdout.len() > 10_000, "only {} bytes of FLV in 3 s", out.stdout.len());
    // The origin is still serving: an RTMP player gets the stream.
    assert_h264_aac(&origin.url("test"));
}

/// One `POST /open/1` on a keep-alive connection: the answer's status and body, or None when the relay closed it.
fn rtmpt_open(s: &mut TcpStream) -> Option<(u16, String)> {
    s.write_all(b"POST /open/1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-fcs\r\nContent-Length: 1\r\n\r\n\0")
        .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                let code = head.split(' ').nth(1)?.parse().ok()?;
                return Some((code, String::from_utf8_lossy(&got[end + 4..end + 4 + len]).to_string()));
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Floods `http` with `attempts` RTMPT opens on keep-alive connections (a new one whenever the relay closes one);
/// returns (opened, refused with 503, the refusal texts seen).
fn rtmpt_flood(http: SocketAddr, attempts: usize) -> (usize, usize, Vec<String>) {
    let (mut opened, mut refused, mut why) = (0, 0, Vec::new());
    let mut conn = TcpStream::connect(http).unwrap();
    for _ in 0..attempts {
        match rtmpt_open(&mut conn) {
            Some((200, _)) => opened += 1,
            Some((503, text)) => {
                refused += 1;
                if !why.contains(&text) {
                    why.push(text);
                }
                conn = TcpStream::connect(http).unwrap();
            }
            other => panic!("RTMPT open answered {other:?}"),
        }
    }
    (opened, refused, why)
}

/// A real player is admitted: ffprobe over RTMP sees the stream, curl gets FLV data over HTTP.
fn players_admitted(relay: &Relay, http: SocketAddr) {
    assert_h264_aac(&relay.url("test"));
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "-", "--max-time", "2"])
        .arg(format!("http://{http}/live/test.flv"))
        .output()
        .expect("curl");
    assert!(out.stdout.starts_with(b"FLV\x01") && out.stdout.len() > 5_000, "curl got {} bytes", out.stdout.len());
}

#[test]
fn rtmpt_session_floods_are_capped_and_players_still_get_in() {
    let _g = serial();
    require("curl");
    let dir = TempDir::new("abuse-rtmpt");

    // One address flooding: 2,000 opens get the default 16 sessions, then 503; players still get in.
    let http = http_addr();
    let origin = Relay::origin(&dir, &["--http-listen", &http.to_string(), "--max-connections", "200"]);
    wait_port(http, Duration::from_secs(10));
    let _pub = publish(&dir, &origin.url("test"), &[]);
    wait_live(origin.api, "test");
    let t = Instant::now();
    let (opened, refused, why) = rtmpt_flood(http, 2_000);
    eprintln!("flood of 2000 opens from one address took {:?}", t.elapsed());
    assert_eq!((opened, refused), (16, 1_984), "{why:?}");
    assert_eq!(why, vec!["too many RTMPT sessions from this address (--max-rtmpt-sessions-per-ip)\n"]);
    assert_eq!(metric(origin.api, "relay_rtmpt_sessions_refused_total"), 1_984.0);
    players_admitted(&origin, http);
    drop(origin);

    // Many addresses (the per-address cap off): RTMPT takes at most half of --max-connections, and /open/1
    // answers 503 past it; RTMP and HTTP-FLV players still get in.
    let http = http_addr();
    let origin = Relay::origin(
        &dir,
        &["--http-listen", &http.to_string(), "--max-connections", "200", "--max-rtmpt-sessions-per-ip", "0"],
    );
    wait_port(http, Duration::from_secs(10));
    let _pub = publish(&dir, &origin.url("test"), &[]);
    wait_live(origin.api, "test");
    let (opened, refused, why) = rtmpt_flood(http, 2_000);
    assert_eq!((opened, refused), (100, 1_900), "{why:?}");
    assert_eq!(why, vec!["RTMPT sessions hold their share (half) of --max-connections\n"]);
    players_admitted(&origin, http);
    drop(origin);

    // The whole budget taken (idle TCP connections beside the sessions): /open/1 answers 503, not 200.
    let http = http_addr();
    let origin = Relay::origin(
        &dir,
        &["--http-listen", &http.to_string(), "--max-connections", "40", "--max-rtmpt-sessions-per-ip", "0"],
    );
    wait_port(http, Duration::from_secs(10));
    let mut conn = TcpStream::connect(http).unwrap();
    let idle: Vec<TcpStream> = (0..25).map(|_| TcpStream::connect(origin.rtmp).unwrap()).collect();
    wait_for("the idle connections admitted", Duration::from_secs(5), || {
        (metric(origin.api, "relay_connections_active") >= 26.0).then_some(())
    });
    let mut codes = Vec::new();
    for _ in 0..20 {
        let (code, text) = rtmpt_open(&mut conn).expect("an answer");
        codes.push(code);
        if code != 200 {
            assert_eq!((code, text.as_str()), (503, "connection limit reached (--max-connections)\n"));
            break;
        }
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 14, "{codes:?}");
    assert_eq!(codes.last(), Some(&503));
    drop(idle);
}

/// Resident memory of process `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Four clients send garbage HLS requests for `secs` on kept-alive connections (reconnecting when the relay
/// closes one): unknown segments and parts, malformed reload parameters, bad names, broken request heads.
/// Returns the requests sent and answered per status.
fn hls_garbage(addr: SocketAddr, secs: u64) -> (usize, std::collections::BTreeMap<u16, usize>) {
    let until = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            std::thread::spawn(move || {
                let mut statuses = std::collections::BTreeMap::new();
                let mut n = 0usize;
                let mut buf = vec![0u8; 8192];
                'outer: while Instant::now() < until {
                    let mut s = TcpStream::connect(addr).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    while Instant::now() < until {
                        n += 1;
                        let i = n as u64 * 7919 + w;
                        let req = match i % 6 {
                            0 => format!("GET /live/k/s{i}.m4s HTTP/1.1\r\nHost: x\r\n\r\n"),
                            1 => format!("GET /live/k/p{i}.{} .m4s HTTP/1.1\r\nHost: x\r\n\r\n", i % 9),
                            2 => format!("GET /live/k/index.m3u8?_HLS_msn=x{i} HTTP/1.1\r\nHost: x\r\n\r\n"),
                            3 => format!("GET /live/k/init-{i:016x}.mp4 HTTP/1.1\r\nHost: x\r\n\r\n"),
                            4 => format!("GET /live/..{i}/../index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n"),
                            _ => format!("GET /live/k/p{i}.0.m4s HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"),
                        };
                        if s.write_all(req.as_bytes()).is_err() {
                            continue 'outer;
                        }
                        let Ok(got) = s.read(&mut buf) else { continue 'outer };
                        if got == 0 {
                            continue 'outer;
                        }
                        let text = String::from_utf8_lossy(&buf[..got]);
                        let code: u16 = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                        *statuses.entry(code).or_insert(0) += 1;
                        if !text.contains("Connection: keep-alive") {
                            continue 'outer;
                        }
                    }
                }
                (n, statuses)
            })
        })
        .collect();
    let mut total = 0;
    let mut all = std::collections::BTreeMap::new();
    for w in workers {
        let (n, st) = w.join().unwrap();
        total += n;
        for (k, v) in st {
            *all.entry(k).or_insert(0) += v;
        }
    }
    (total, all)
}

#[test]
fn an_hls_garbage_flood_is_answered_and_does_not_grow_memory() {
    let _g = serial();
    let dir = TempDir::new("hlsflood");
    let http = http_addr();
    let hs = http.to_string();
    let origin = Relay::origin(&dir, &["--http-listen", &hs]);
    wait_port(http, Duration::from_secs(10));
    let _publisher = publish(&dir, &origin.url("k"), &[]);
    wait_live(origin.api, "k");
    wait_for("a segment", Duration::from_secs(20), || {
        let (code, body) = common::http("GET", http, "/live/k/index.m3u8");
        (code == 200 && body.contains("#EXTINF")).then_some(())
    });
    let pid = origin.proc.pid();
    // A first round warms the allocator; the second must not grow what the first left.
    let (n1, st1) = hls_garbage(http, 4);
    let after_first = rss_kib(pid);
    let (n2, st2) = hls_garbage(http, 4);
    let after_second = rss_kib(pid);
    eprintln!(
        "figure: HLS garbage {} req/s then {} req/s; RSS {after_first} KiB then {after_second} KiB; {st1:?} {st2:?}",
        n1 / 4,
        n2 / 4
    );
    assert!(n1 > 4000 && n2 > 4000, "the flood was too slow to mean anything: {n1}, {n2}");
    for st in [&st1, &st2] {
        assert!(st.keys().all(|c| [400, 404].contains(c)), "garbage answered other than 400/404: {st:?}");
    }
    assert!(after_second <= after_first + 4096, "RSS grew from {after_first} to {after_second} KiB under garbage");
    // The stream is still served.
    let (code, body) = common::http("GET", http, "/live/k/index.m3u8");
    assert!(code == 200 && body.contains("#EXTINF"), "{body}");
}
