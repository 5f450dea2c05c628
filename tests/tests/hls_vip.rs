//! HLS through the VIP: an origin and three edges behind VIP:8080 with no persistence (each TCP connection may land
//! on another edge), ffprobe and hls.js in headless Chromium (LL-HLS and plain HLS, with their glass-to-glass
//! latency) play the stream from the client, and a client whose every request is a new connection gets
//! consecutive segments from several edges without a gap.
use lb_lab::bin_path;
use lb_tests::*;

const ORIGIN_PORT: u16 = 1936;
const ORIGIN_API_PORT: u16 = 8936;
const HTTP_PORT: u16 = 8080;
/// Each edge's API, on its own namespace's loopback.
const EDGE_API: &str = "127.0.0.1:9100";
const API_TOKEN: &str = "lab-token";

/// (EXT-X-MEDIA-SEQUENCE, [(msn, EXTINF ms, program date-time, uri)]) of a playlist.
fn segments(text: &str) -> Vec<(u64, u64, String, String)> {
    let mut msn = None;
    let (mut dur, mut pdt) = (0, String::new());
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = v.parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let v = v.trim_end_matches(',');
            let (s, f) = v.split_once('.').unwrap_or((v, "0"));
            dur = s.parse::<u64>().unwrap() * 1000 + format!("{f:0<3}")[..3].parse::<u64>().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt = v.to_string();
        } else if !line.starts_with('#') && !line.is_empty() {
            let n = msn.expect("media sequence before segments");
            out.push((n, dur, pdt.clone(), line.to_string()));
            msn = Some(n + 1);
        }
    }
    out
}

#[test]
fn hls_js_in_chromium_and_a_rotating_client_play_through_the_vip() {
    require_root();
    if let Err(why) = lb_lab::browser::available() {
        panic!("hls.js in Chromium is needed for this test: {why}");
    }
    let mut l = context(LbLab::new(Mode::Native, 3), "lab");
    let relay = bin_path("relay");
    let relay = relay.to_str().unwrap();
    let hls_js = lb_lab::browser::hls_js();
    let hls_js = hls_js.to_str().unwrap();
    let r1 = l.lab.real(0);
    let origin_api = format!("{}:{ORIGIN_API_PORT}", real_ip(0));
    let origin_listen = format!("0.0.0.0:{ORIGIN_PORT}");
    let args = [relay, "origin", "--listen", &origin_listen, "--api", &origin_api, "--api-token", API_TOKEN];
    context(l.lab.spawn(&r1, "origin.log", &args).map(|_| ()), "origin");
    context(l.lab.wait_port(&r1, &real_ip(0), ORIGIN_PORT), "origin listening");
    let origin_url = format!("rtmp://{}:{ORIGIN_PORT}/live", real_ip(0));
    let http = format!("0.0.0.0:{HTTP_PORT}");
    for i in 0..3 {
        let ns = l.lab.real(i);
        let args = [
            relay,
            "edge",
            "--listen",
            "0.0.0.0:1935",
            "--http-listen",
            &http,
            "--origin",
            &origin_url,
            "--hls-js",
            hls_js,
            "--api",
            EDGE_API,
        ];
        context(l.lab.spawn(&ns, &format!("edge{}.log", i + 1), &args).map(|_| ()), "edge");
        context(l.lab.wait_port(&ns, &real_ip(i), HTTP_PORT), "edge HTTP listening");
    }
    // VIP:8080 with no persistence: every new connection is hashed on its own, so one player's requests spread.
    let cfg = l.lab.dir.join("hls.toml");
    let mut s = format!(
        "[[service]]\nvip = \"{VIP}:{HTTP_PORT}\"\n[service.check]\nkind = \"http\"\npath = \"/healthz\"\nexpect = 200\ninterval = \"500ms\"\ntimeout = \"400ms\"\n"
    );
    for i in 0..3 {
        s.push_str(&format!("[[service.real]]\naddr = \"{}\"\n", real_ip(i)));
    }
    std::fs::write(&cfg, s).unwrap();
    context(l.start_lbd(&["--config", cfg.to_str().unwrap()]), "lbd");
    let client = l.lab.client();
    let publish = format!("{origin_url}/test");
    let publisher: Vec<&str> = lb_lab::FFMPEG_PUBLISH.iter().copied().chain([publish.as_str()]).collect();
    context(l.lab.spawn(&client, "ffmpeg-publish.log", &publisher).map(|_| ()), "publisher");
    let playlist_url = format!("http://{VIP}:{HTTP_PORT}/live/test/index.m3u8");
    let curl = |url: &str| -> (bool, String) {
        let out = l.lab.exec_status(&client, &["curl", "-sS", "--fail", "--max-time", "20", url]);
        match out {
            Ok(o) => (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned()),
            Err(e) => (false, e.to_string()),
        }
    };
    // The first playlist request through the VIP starts that edge's pull and answers once a segment exists.
    // (A cold edge answers after its first segment; three take about 8 s more.)
    lb_lab::wait::wait_for(std::time::Duration::from_secs(40), "3 segments through the VIP", || {
        let (ok, text) = curl(&playlist_url);
        (ok && segments(&text).len() >= 3).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    // Every edge warm, as the manager's pre-pull keeps them: an edge whose pull starts now has only the segments
    // after its start, and a client hashed onto it would see the ones before missing (on-demand replication's
    // cost, not a disagreement between edges).
    for i in 0..3 {
        let direct = format!("http://{}:{HTTP_PORT}/live/test/index.m3u8", real_ip(i));
        lb_lab::wait::wait_for(std::time::Duration::from_secs(40), "3 segments on every edge", || {
            let (ok, text) = curl(&direct);
            (ok && segments(&text).len() >= 3).then_some(())
        })
        .unwrap_or_else(|e| panic!("edge {}: {e}", i + 1));
    }

    // ffprobe through the VIP reads H.264 and AAC from the HLS playlist.
    let out = context(
        l.lab.exec_status(
            &client,
            &[
                "timeout",
                "40",
                "ffprobe",
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,width,height",
                "-of",
                "compact",
                &playlist_url,
            ],
        ),
        "ffprobe HLS",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ffprobe HLS through the VIP: {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("codec_name=h264|width=640|height=360") && text.contains("codec_name=aac"), "{text}");

    // hls.js in headless Chromium, from the page the edge serves, in Low-Latency mode and then plain.
    let page = format!("http://{VIP}:{HTTP_PORT}/live/test/play.html");
    let shot = lb_lab::browser::artifact("hls-vip-ll.png");
    let ll = lb_lab::browser::play(&page, 20, Some(&shot), Some(&client))
        .unwrap_or_else(|e| panic!("LL-HLS in Chromium through the VIP: {e:#}"));
    eprintln!("LL-HLS through the VIP: {ll:?}");
    assert!(ll.played_secs >= 18.0, "{ll:?}");
    assert_eq!((ll.stalls, ll.errors.len()), (0, 0), "{ll:?}");
    let g2g = ll.glass_to_glass_ms.expect("the page knows the program date-time");
    assert!(g2g <= 2000, "LL-HLS glass-to-glass {g2g} ms (the issue's bound is 2 s): {ll:?}");
    assert!(std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0) > 10_000, "screenshot {shot:?}");
    let plain = lb_lab::browser::play(
        &format!("{page}?ll=0"),
        15,
        Some(&lb_lab::browser::artifact("hls-vip.png")),
        Some(&client),
    )
    .unwrap_or_else(|e| panic!("HLS in Chromium through the VIP: {e:#}"));
    eprintln!("HLS (2 s segments) through the VIP: {plain:?}");
    assert!(plain.played_secs >= 13.0 && plain.stalls == 0, "{plain:?}");
    let g2g = plain.glass_to_glass_ms.expect("program date-time");
    assert!(g2g <= 7000, "HLS glass-to-glass {g2g} ms (the issue's bound is 7 s): {plain:?}");

    // A client whose every request is a new connection (so the VIP may send each to another edge) walks the
    // playlist: consecutive sequence numbers, dates that follow the durations, every segment served.
    let start = segments(&curl(&playlist_url).1).last().unwrap().0;
    let mut got: Vec<(u64, u64, String)> = Vec::new();
    let mut next = start;
    while got.len() < 8 {
        let (ok, text) = curl(&format!("{playlist_url}?_HLS_msn={}", next + 1));
        assert!(ok, "blocking reload through the VIP: {text}");
        let list = segments(&text);
        let Some((m, d, pdt, uri)) = list.iter().find(|s| s.0 == next).cloned() else {
            panic!("segment {next} missing from a playlist through the VIP:\n{text}");
        };
        let seg = l.lab.exec_status(
            &client,
            &[
                "curl",
                "-sS",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download} %{time_total}",
                &format!("http://{VIP}:{HTTP_PORT}/live/test/{uri}"),
            ],
        );
        let out = seg.map(|o| {
            (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
        });
        let (code, size) = match &out {
            Ok((w, _)) => {
                let mut f = w.split_whitespace();
                (f.next().unwrap_or("").to_string(), f.next().and_then(|x| x.parse::<u64>().ok()).unwrap_or(0))
            }
            Err(_) => (String::new(), 0),
        };
        assert!(
            code == "200" && size > 10_000,
            "segment {m} through the VIP: {out:?} (playlist that listed it:\n{text})"
        );
        got.push((m, d, pdt));
        next += 1;
    }
    let ms_of_day = |p: &str| -> u64 {
        let t = p.split('T').nth(1).unwrap().trim_end_matches('Z');
        let v: Vec<&str> = t.split(':').collect();
        let (s, f) = v[2].split_once('.').unwrap();
        v[0].parse::<u64>().unwrap() * 3_600_000
            + v[1].parse::<u64>().unwrap() * 60_000
            + s.parse::<u64>().unwrap() * 1000
            + f.parse::<u64>().unwrap()
    };
    for w in got.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1);
        assert_eq!(
            ms_of_day(&w[1].2),
            ms_of_day(&w[0].2) + w[0].1,
            "segment dates do not follow across edges: {got:?}"
        );
    }
    // Several edges answered HLS requests (no persistence on the VIP).
    let mut served = 0;
    for i in 0..3 {
        let out = l.lab.exec_status(&l.lab.real(i), &["curl", "-sS", &format!("http://{EDGE_API}/metrics")]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let n: f64 = text
            .lines()
            .find(|l| l.starts_with("relay_hls_requests_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if n > 0.0 {
            served += 1;
        }
    }
    assert!(served >= 2, "only {served} edge(s) answered HLS through the VIP");
}
