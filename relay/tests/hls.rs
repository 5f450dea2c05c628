//! HLS and LL-HLS from an origin and three edges on loopback, with real clients (ffprobe, ffmpeg, curl-like raw
//! HTTP): the same segments byte for byte on every edge, a client that asks each edge in turn plays on without a
//! gap, blocking reloads and preload-hinted parts, HTTP semantics, refusals and the end of a stream.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// One HTTP answer: status, header lines (lower-case names) and body bytes.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one answer (Content-Length framed) from `s`.
fn read_answer(s: &mut TcpStream, head_only: bool) -> Answer {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).expect("read head"),
            1,
            "connection closed mid-head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; if head_only { 0 } else { len }];
    s.read_exact(&mut body).expect("read body");
    Answer { status, headers, body }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// `METHOD path` with `headers` on a new connection.
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut s = connect(addr);
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    read_answer(&mut s, method == "HEAD")
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path, &[])
}

/// A relay's HTTP media listener beside it.
fn http_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// A media playlist as a player reads it.
#[derive(Debug, Default)]
struct Playlist {
    media_sequence: u64,
    /// msn -> (EXTINF ms, program date-time, URI, gap)
    segments: BTreeMap<u64, (u64, String, String, bool)>,
    parts: Vec<(u64, usize, u64, bool)>,
    preload_hint: Option<String>,
    map: Option<String>,
    ended: bool,
}

fn ms(secs: &str) -> u64 {
    let (a, b) = secs.split_once('.').unwrap_or((secs, "0"));
    a.parse::<u64>().unwrap() * 1000 + format!("{b:0<3}")[..3].parse::<u64>().unwrap()
}

fn parse_playlist(text: &str) -> Playlist {
    assert!(text.starts_with("#EXTM3U\n"), "{text}");
    let mut p = Playlist::default();
    let (mut extinf, mut pdt, mut gap) = (None, String::new(), false);
    let mut msn = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.media_sequence = v.parse().unwrap();
            msn = Some(p.media_sequence);
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            extinf = Some(ms(v.trim_end_matches(',')));
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt = v.to_string();
        } else if line == "#EXT-X-GAP" {
            gap = true;
        } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:URI=") {
            p.map = Some(v.trim_matches('"').to_string());
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            let dur = ms(v.split("DURATION=").nth(1).unwrap().split(',').next().unwrap());
            let uri = v.split("URI=\"").nth(1).unwrap().split('"').next().unwrap();
            let (m, i) = uri.strip_prefix('p').unwrap().strip_suffix(".m4s").unwrap().split_once('.').unwrap();
            p.parts.push((m.parse().unwrap(), i.parse().unwrap(), dur, v.contains("INDEPENDENT=YES")));
        } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            p.preload_hint = Some(v.split("URI=\"").nth(1).unwrap().trim_end_matches('"').to_string());
        } else if line == "#EXT-X-ENDLIST" {
            p.ended = true;
        } else if !line.starts_with('#') && !line.is_empty() {
            let n = msn.expect("media sequence first");
            p.segments.insert(n, (extinf.take().expect("EXTINF before URI"), pdt.clone(), line.to_string(), gap));
            gap = false;
            msn = Some(n + 1);
        }
    }
    p
}

fn playlist(addr: SocketAddr, key: &str) -> Playlist {
    let a = get(addr, &format!("/live/{key}/index.m3u8"));
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("content-type"), Some("application/vnd.apple.mpegurl"));
    parse_playlist(&a.text())
}

/// Waits until `addr`'s playlist of `key` lists at least `n` segments.
fn wait_segments(addr: SocketAddr, key: &str, n: usize) -> Playlist {
    wait_for(&format!("{n} HLS segments on {addr}"), Duration::from_secs(40), || {
        let p = playlist(addr, key);
        (p.segments.len() >= n).then_some(p)
    })
}

/// Milliseconds of an ISO 8601 UTC date-time's time of day (enough to compare neighbours).
fn day_ms(pdt: &str) -> u64 {
    let t = pdt.split('T').nth(1).unwrap().trim_end_matches('Z');
    let mut it = t.split(':');
    let (h, m, s) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    h.parse::<u64>().unwrap() * 3_600_000 + m.parse::<u64>().unwrap() * 60_000 + ms(s)
}

#[test]
fn three_edges_serve_the_same_segments_and_a_client_rotating_over_them_plays_without_a_gap() {
    let _g = serial();
    let dir = TempDir::new("hls");
    let origin_http = http_addr();
    let oh = origin_http.to_string();
    let origin = Relay::origin(&dir, &["--http-listen", &oh]);
    let _pub = publish(&dir, &origin.url("cam1"), &[]);
    wait_live(origin.api, "cam1");
    let mut edges = Vec::new();
    let mut https = Vec::new();
    for _ in 0..3 {
        let h = http_addr();
        let hs = h.to_string();
        edges.push(Relay::edge(&dir, &[origin.rtmp], &["--http-listen", &hs]));
        wait_port(h, Duration::from_secs(10));
        https.push(h);
    }
    // The first playlist request starts each edge's pull and answers once a segment exists.
    let t = Instant::now();
    let first = playlist(https[0], "cam1");
    assert!(!first.segments.is_empty(), "the first answer waits for a segment");
    eprintln!("first playlist from a cold edge after {:?}", t.elapsed());
    for h in &https {
        wait_segments(*h, "cam1", 3);
    }
    // Every edge has packaged for a while now: their playlists, read together, overlap.
    let lists: Vec<Playlist> = https.iter().map(|h| playlist(*h, "cam1")).collect();

    // The same init segment under the same name everywhere.
    let map = lists[0].map.clone().expect("EXT-X-MAP");
    let init0 = get(https[0], &format!("/live/cam1/{map}"));
    assert_eq!(init0.status, 200);
    for (h, l) in https.iter().zip(&lists) {
        assert_eq!(l.map.as_ref(), Some(&map), "init names differ");
        assert_eq!(get(*h, &format!("/live/cam1/{map}")).body, init0.body, "init bytes differ on {h}");
    }
    // Segments every edge lists: the same EXTINF and date, and the same bytes.
    let common_msns: Vec<u64> =
        lists[0].segments.keys().filter(|m| lists.iter().all(|l| l.segments.contains_key(m))).copied().collect();
    assert!(common_msns.len() >= 2, "edges list no common segments: {lists:?}");
    for m in &common_msns {
        let rows: Vec<_> = lists.iter().map(|l| &l.segments[m]).collect();
        assert!(rows.iter().all(|r| *r == rows[0]), "segment {m} listed differently: {rows:?}");
        let bodies: Vec<Vec<u8>> = https.iter().map(|h| get(*h, &format!("/live/cam1/{}", rows[0].2)).body).collect();
        assert!(bodies[0].len() > 10_000, "segment {m} is {} bytes", bodies[0].len());
        assert!(bodies.iter().all(|b| *b == bodies[0]), "segment {m} differs between edges");
    }
    // Real players read it: ffprobe sees H.264 + AAC, ffmpeg decodes 60 frames.
    let url = format!("http://{}/live/cam1/index.m3u8", https[1]);
    assert_h264_aac(&url);
    let (ok, out, err) = run_limited(ffmpeg_player(&url, 60), Duration::from_secs(30));
    assert!(ok, "ffmpeg over HLS: {err}");
    assert!(progress_frames(&out) >= 60, "{out}");

    // A client that sends every request to the next edge in turn, as an L4 hash without persistence may:
    // each segment once, in order, for 60 s of media. Sequence numbers, durations and dates continue, and the
    // concatenated segments decode as one stream with no hole.
    let mut next = lists[0].segments.keys().next_back().copied().unwrap();
    let mut fetched: Vec<(u64, u64, String)> = Vec::new();
    let mut file = get(https[0], &format!("/live/cam1/{map}")).body;
    let mut turn = 0;
    let deadline = Instant::now() + Duration::from_secs(100);
    while fetched.len() < 30 {
        assert!(Instant::now() < deadline, "only {} segments in 100 s", fetched.len());
        let h = https[turn % 3];
        turn += 1;
        let a = get(h, &format!("/live/cam1/index.m3u8?_HLS_msn={}", next + 1));
        assert_eq!(a.status, 200, "{}", a.text());
        let p = parse_playlist(&a.text());
        let Some((dur, pdt, uri, gap)) = p.segments.get(&next).cloned() else {
            panic!("segment {next} missing from {h}'s playlist: {p:?}");
        };
        assert!(!gap);
        let seg = get(https[turn % 3], &format!("/live/cam1/{uri}"));
        turn += 1;
        assert_eq!(seg.status, 200, "segment {next}");
        file.extend_from_slice(&seg.body);
        fetched.push((next, dur, pdt));
        next += 1;
    }
    for w in fetched.windows(2) {
        let ((m0, d0, p0), (m1, _, p1)) = (&w[0], &w[1]);
        assert_eq!(m1, &(m0 + 1));
        assert_eq!(day_ms(p1), day_ms(p0) + d0, "dates of {m0} and {m1} do not follow its duration");
    }
    let path = dir.path("rotating.mp4");
    std::fs::write(&path, &file).unwrap();
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=dts_time", "-of", "csv=p=0"])
        .arg(&path);
    let (ok, out, err) = run_limited(cmd, Duration::from_secs(30));
    assert!(ok, "{err}");
    let dts: Vec<f64> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(dts.len() >= 30 * 55, "{} video frames in 30 segments", dts.len());
    let worst = dts.windows(2).map(|w| w[1] - w[0]).fold(0.0f64, f64::max);
    assert!(worst < 0.1, "a hole of {worst:.3} s in the media a rotating client got");
    let span = dts.last().unwrap() - dts[0];
    let listed: u64 = fetched.iter().map(|f| f.1).sum();
    assert!((span * 1000.0 - listed as f64).abs() < 100.0, "media {span:.3} s against {listed} ms listed");

    // Every edge counts the HLS viewer as a player (one session per client address).
    for e in &edges {
        let s = stream_entry(e.api, "live", "cam1").unwrap();
        assert_eq!(s["players_by_protocol"]["hls"], 1, "{s}");
    }
}

#[test]
fn low_latency_blocking_reloads_and_hinted_parts_answer_when_the_part_exists() {
    let _g = serial();
    let dir = TempDir::new("llhls");
    let h = http_addr();
    let hs = h.to_string();
    let origin = Relay::origin(&dir, &["--http-listen", &hs]);
    let _pub = publish(&dir, &origin.url("ll"), &[]);
    wait_live(origin.api, "ll");
    let p = wait_segments(h, "ll", 2);
    assert!(!p.parts.is_empty(), "an LL-HLS playlist lists parts");
    // Parts of a third of a second: never past PART-TARGET (--hls-part + 1 ms), and at least 85% of it but the
    // last of a segment.
    assert!(p.parts.iter().all(|x| x.2 <= 334), "parts past PART-TARGET: {:?}", p.parts);
    assert!(p.parts.iter().all(|x| x.2 >= 283 || x.1 == 5), "short parts: {:?}", p.parts);
    let hint = p.preload_hint.clone().expect("a preload hint");
    let (hm, hi) = hint.strip_prefix('p').unwrap().strip_suffix(".m4s").unwrap().split_once('.').unwrap();
    let (hm, hi): (u64, usize) = (hm.parse().unwrap(), hi.parse().unwrap());

    // The hinted part is answered when it exists, within about a part's duration.
    let t = Instant::now();
    let part = get(h, &format!("/live/ll/{hint}"));
    let waited = t.elapsed();
    assert_eq!(part.status, 200, "{}", part.text());
    assert!(part.body.len() > 100);
    assert!(waited < Duration::from_millis(1500), "hinted part took {waited:?}");
    // A blocking reload for the part after it returns a playlist that lists it.
    let t = Instant::now();
    let a = get(h, &format!("/live/ll/index.m3u8?_HLS_msn={hm}&_HLS_part={}", hi + 1));
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(t.elapsed() < Duration::from_millis(1500), "blocking reload took {:?}", t.elapsed());
    let q = parse_playlist(&a.text());
    let listed = q.parts.iter().any(|x| (x.0 == hm && x.1 == hi + 1) || x.0 > hm) || q.segments.contains_key(&hm);
    assert!(listed, "the reload lists part {hm}.{} or later: {q:?}", hi + 1);
    assert_eq!(a.header("cache-control"), Some("public, max-age=60"));
    // Parts and the whole segment are the same bytes: the segment is its parts back to back.
    let done = wait_segments(h, "ll", 1);
    let (&m, seg) = done.segments.iter().next_back().unwrap();
    let whole = get(h, &format!("/live/ll/{}", seg.2)).body;
    let mut joined = Vec::new();
    for i in 0.. {
        let x = get(h, &format!("/live/ll/p{m}.{i}.m4s"));
        if x.status != 200 {
            break;
        }
        joined.extend_from_slice(&x.body);
    }
    assert_eq!(joined, whole, "segment {m} is not its parts joined");

    // GStreamer's HLS demuxer reads it too: 90 H.264 frames decoded (the live pipeline runs until stopped).
    require("gst-launch-1.0");
    let mut gst = Command::new("timeout");
    gst.args(["15", "gst-launch-1.0", "-v", "souphttpsrc"])
        .arg(format!("location=http://{h}/live/ll/index.m3u8"))
        .args(["!", "hlsdemux", "!", "qtdemux", "name=d", "d.video_0", "!", "h264parse", "!", "avdec_h264"])
        .args(["!", "fakesink", "silent=false", "num-buffers=90"]);
    let (_, out, err) = run_limited(gst, Duration::from_secs(20));
    let decoded = out.lines().filter(|l| l.contains("chain")).count();
    assert_eq!(decoded, 90, "GStreamer hlsdemux decoded {decoded} frames: {err}");
    assert!(out.contains("width=(int)640, height=(int)360"), "{out}");

    // Absurd or malformed requests: 400 at once (against the segment being made now).
    let now = playlist(h, "ll").preload_hint.expect("a preload hint");
    let hm: u64 = now.strip_prefix('p').unwrap().split('.').next().unwrap().parse().unwrap();
    for (q, why) in [
        (format!("_HLS_msn={}", hm + 50), "more than two segments past"),
        ("_HLS_part=1".to_string(), "_HLS_part needs _HLS_msn"),
        ("_HLS_msn=x".to_string(), "_HLS_msn must be a whole number"),
        (format!("_HLS_msn={hm}&_HLS_part=99"), "parts past the last"),
    ] {
        let t = Instant::now();
        let a = get(h, &format!("/live/ll/index.m3u8?{q}"));
        assert_eq!(a.status, 400, "{q}: {}", a.text());
        assert!(a.text().contains(why), "{q}: {}", a.text());
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}

#[test]
fn http_semantics_refusals_and_the_end_of_a_stream() {
    let _g = serial();
    let dir = TempDir::new("hlshttp");
    let h = http_addr();
    let hs = h.to_string();
    let origin = Relay::origin(&dir, &["--http-listen", &hs, "--grace-period", "2s"]);
    let mut publisher = publish(&dir, &origin.url("k"), &[]);
    wait_live(origin.api, "k");
    let p = wait_segments(h, "k", 2);
    let (_, seg) = p.segments.iter().next().unwrap();
    let path = format!("/live/k/{}", seg.2);

    // Caching headers, ETag and 304, HEAD, ranges, CORS.
    let a = get(h, &path);
    assert_eq!(a.status, 200);
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
    assert_eq!(a.header("accept-ranges"), Some("bytes"));
    assert!(a.header("cache-control").unwrap().contains("max-age=3600"));
    let etag = a.header("etag").unwrap().to_string();
    assert_eq!(request(h, "GET", &path, &[("If-None-Match", &etag)]).status, 304);
    let head = request(h, "HEAD", &path, &[]);
    assert_eq!((head.status, head.header("content-length")), (200, Some(a.body.len().to_string().as_str())));
    let r = request(h, "GET", &path, &[("Range", "bytes=10-19")]);
    assert_eq!((r.status, r.body.as_slice()), (206, &a.body[10..20]));
    assert_eq!(r.header("content-range"), Some(format!("bytes 10-19/{}", a.body.len()).as_str()));
    let r = request(h, "GET", &path, &[("Range", &format!("bytes={}-", a.body.len()))]);
    assert_eq!(r.status, 416);
    let o =
        request(h, "OPTIONS", &path, &[("Origin", "http://page.example"), ("Access-Control-Request-Method", "GET")]);
    assert_eq!(o.status, 204);
    assert!(o.header("access-control-allow-methods").unwrap().contains("GET"));
    assert_eq!(request(h, "DELETE", &path, &[]).status, 405);
    // Keep-alive: three requests on one connection.
    let mut s = connect(h);
    for target in ["/live/k/index.m3u8", &path, "/live/k/index.m3u8"] {
        s.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
        let a = read_answer(&mut s, false);
        assert_eq!((a.status, a.header("connection")), (200, Some("keep-alive")), "{target}");
    }
    // Refusals: names, unknown files, traversal, overlong names; a segment that left or never was.
    for (target, status) in [
        ("/live/../index.m3u8", 400),
        ("/live/.hidden/index.m3u8", 400),
        (&format!("/live/{}/index.m3u8", "x".repeat(200)) as &str, 400),
        ("/live/k/s1.m4s", 404),
        ("/live/k/p1.0.m4s", 404),
        ("/live/k/init-0000000000000000.mp4", 404),
    ] {
        let a = get(h, target);
        assert_eq!(a.status, status, "{target}: {}", a.text());
    }
    // A key nobody publishes: 404 once the grace period says so.
    let t = Instant::now();
    let a = get(h, "/live/nobody/index.m3u8");
    assert_eq!((a.status, a.text().trim()), (404, "stream not found"));
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    // The publisher leaves: after the grace period the playlist ends with EXT-X-ENDLIST.
    publisher.kill();
    let ended = wait_for("EXT-X-ENDLIST", Duration::from_secs(15), || {
        let a = get(h, "/live/k/index.m3u8");
        (a.status == 200 && a.text().contains("#EXT-X-ENDLIST")).then(|| parse_playlist(&a.text()))
    });
    assert!(ended.preload_hint.is_none() && ended.ended);
    assert!(metric(origin.api, "relay_hls_requests_total") > 20.0);
}

#[test]
fn an_edge_that_stopped_pulling_for_want_of_viewers_serves_the_live_stream_to_the_next_one() {
    let _g = serial();
    let dir = TempDir::new("hlsidle");
    let origin = Relay::origin(&dir, &[]);
    let _pub = publish(&dir, &origin.url("cam1"), &[]);
    wait_live(origin.api, "cam1");
    let h = http_addr();
    let hs = h.to_string();
    let edge = Relay::edge(&dir, &[origin.rtmp], &["--http-listen", &hs, "--idle-timeout", "2"]);
    wait_port(h, Duration::from_secs(10));
    let first = wait_segments(h, "cam1", 1);
    assert!(!first.ended);
    // The viewer leaves: its session lapses (10 s), then the edge's pull stops after --idle-timeout.
    wait_for("the edge's idle stop", Duration::from_secs(30), || {
        stream_entry(edge.api, "live", "cam1").is_none().then_some(())
    });
    // The stream goes on at the origin: the next viewer gets it live (a new pull), not an ended playlist.
    let again = playlist(h, "cam1");
    assert!(!again.ended && !again.segments.is_empty(), "{again:?}");
    let last_before = *first.segments.keys().next_back().unwrap();
    assert!(*again.segments.keys().next_back().unwrap() > last_before, "{again:?} after {first:?}");
    assert!(stream_entry(edge.api, "live", "cam1").is_some(), "the edge pulls again");
}
