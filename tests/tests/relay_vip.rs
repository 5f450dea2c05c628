//! Playing through the VIP: an origin and three edges (the reals of VIP:1935 for RTMP and VIP:8080 for HTTP-FLV
//! and RTMPT, the latter persistent) in the lab; ffprobe and curl from the client get the stream through the load
//! balancer, and RTMP players spread over the edges, which run unprivileged (as `nobody`).
use lb_lab::bin_path;
use lb_tests::*;

const ORIGIN_PORT: u16 = 1936;
const ORIGIN_API_PORT: u16 = 8936;
const HTTP_PORT: u16 = 8080;
/// The origin's API listens on the lab network, so it needs a token.
const API_TOKEN: &str = "lab-token";

#[test]
fn ffprobe_through_the_vip_gets_the_stream_from_the_edges() {
    require_root();
    let mut l = context(LbLab::new(Mode::Native, 3), "lab");
    let relay = bin_path("relay");
    let relay = relay.to_str().unwrap();
    // The origin shares r1's host; each real runs an edge on :1935 (the VIP lives on their lo).
    let origin_listen = format!("0.0.0.0:{ORIGIN_PORT}");
    let r1 = l.lab.real(0);
    let origin_api = format!("{}:{ORIGIN_API_PORT}", real_ip(0));
    context(
        l.lab
            .spawn(
                &r1,
                "origin.log",
                &[relay, "origin", "--listen", &origin_listen, "--api", &origin_api, "--api-token", API_TOKEN],
            )
            .map(|_| ()),
        "origin",
    );
    context(l.lab.wait_port(&r1, &real_ip(0), ORIGIN_PORT), "origin listening");
    let origin_url = format!("rtmp://{}:{ORIGIN_PORT}/live", real_ip(0));
    // The edges run unprivileged, as `nobody` through setpriv (what the relay@ unit's DynamicUser= gives), from a
    // copy of the binary that user can reach wherever this tree lives.
    let unpriv = l.lab.dir.join("relay-unprivileged");
    std::fs::copy(relay, &unpriv).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for p in [&l.lab.dir, &unpriv] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let unpriv = unpriv.to_str().unwrap().to_string();
    let as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--no-new-privs"];
    let mut edge_pids = Vec::new();
    for i in 0..3 {
        let ns = l.lab.real(i);
        let http = format!("0.0.0.0:{HTTP_PORT}");
        let mut args: Vec<&str> = as_nobody.to_vec();
        args.extend([
            unpriv.as_str(),
            "edge",
            "--listen",
            "0.0.0.0:1935",
            "--http-listen",
            &http,
            "--origin",
            &origin_url,
        ]);
        edge_pids.push(context(l.lab.spawn(&ns, &format!("edge{}.log", i + 1), &args), "edge"));
        context(l.lab.wait_port(&ns, &real_ip(i), 1935), "edge listening");
        context(l.lab.wait_port(&ns, &real_ip(i), HTTP_PORT), "edge HTTP listening");
    }
    for pid in &edge_pids {
        // ip -> setpriv -> relay exec in turn, so the pid is the relay's.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert_eq!(uid.split_whitespace().nth(1), Some("65534"), "edge {pid} is not nobody: {uid}");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert!(exe.ends_with("relay-unprivileged"), "{exe:?}");
    }
    let cfg = l.lab.dir.join("rtmp.toml");
    // The edges are health-checked with an RTMP handshake (C0+C1 -> S0+S1) against our own relay.
    let mut s = format!("[[service]]\nvip = \"{VIP}:1935\"\n[service.check]\nkind = \"rtmp\"\ninterval = \"500ms\"\ntimeout = \"400ms\"\n");
    for i in 0..3 {
        s.push_str(&format!("[[service.real]]\naddr = \"{}\"\n", real_ip(i)));
    }
    // HTTP-FLV and RTMPT on the same edges, checked with GET /healthz on the media port. An RTMPT session spans
    // several TCP connections and lives in one edge: client-IP persistence keeps them on one real.
    s.push_str(&format!(
        "[[service]]\nvip = \"{VIP}:{HTTP_PORT}\"\npersistent = 60\n[service.check]\nkind = \"http\"\npath = \"/healthz\"\nexpect = 200\ninterval = \"500ms\"\ntimeout = \"400ms\"\n"
    ));
    for i in 0..3 {
        s.push_str(&format!("[[service.real]]\naddr = \"{}\"\n", real_ip(i)));
    }
    std::fs::write(&cfg, s).unwrap();
    context(l.start_lbd(&["--config", cfg.to_str().unwrap()]), "lbd");
    let client = l.lab.client();
    let publish = format!("{origin_url}/test");
    let publisher: Vec<&str> = lb_lab::FFMPEG_PUBLISH.iter().copied().chain([publish.as_str()]).collect();
    context(l.lab.spawn(&client, "ffmpeg-publish.log", &publisher).map(|_| ()), "publisher");
    // Players start once the origin has the stream (its API lists it with a publisher).
    let streams_url = format!("http://{origin_api}/streams");
    context(
        wait_for(
            || {
                let auth = format!("Authorization: Bearer {API_TOKEN}");
                let out = l.lab.exec_status(&r1, &["curl", "-sS", "--max-time", "2", "-H", &auth, &streams_url]);
                out.is_ok_and(|o| {
                    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
                    v["streams"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|s| s["key"] == "test" && !s["source"].is_null()))
                })
            },
            "the origin has live/test",
        ),
        "publisher live",
    );
    let url = format!("rtmp://{VIP}/live/test");
    let probes = 9;
    for n in 0..probes {
        let out = context(
            l.lab.exec_status(
                &client,
                &[
                    "timeout",
                    "30",
                    "ffprobe",
                    "-v",
                    "error",
                    "-show_entries",
                    "stream=codec_name,width,height",
                    "-of",
                    "compact",
                    &url,
                ],
            ),
            "ffprobe",
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ffprobe {n} through the VIP failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("codec_name=h264|width=640|height=360"), "probe {n}: {text}");
        assert!(text.contains("codec_name=aac"), "probe {n}: {text}");
    }
    // HTTP-FLV through VIP:8080: ffprobe reads H.264 + AAC, curl gets an FLV body.
    let flv_url = format!("http://{VIP}:{HTTP_PORT}/live/test.flv");
    for n in 0..3 {
        let out = context(
            l.lab.exec_status(
                &client,
                &[
                    "timeout",
                    "30",
                    "ffprobe",
                    "-v",
                    "error",
                    "-show_entries",
                    "stream=codec_name",
                    "-of",
                    "compact",
                    &flv_url,
                ],
            ),
            "ffprobe HTTP-FLV",
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "HTTP-FLV ffprobe {n} through the VIP failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("codec_name=h264") && text.contains("codec_name=aac"), "HTTP-FLV probe {n}: {text}");
    }
    // RTMPT through VIP:8080 (persistent): ffprobe's session of several HTTP requests stays on one edge.
    let rtmpt_url = format!("rtmpt://{VIP}:{HTTP_PORT}/live/test");
    let out = context(
        l.lab.exec_status(
            &client,
            &[
                "timeout",
                "30",
                "ffprobe",
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name",
                "-of",
                "compact",
                &rtmpt_url,
            ],
        ),
        "ffprobe RTMPT",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "RTMPT ffprobe through the VIP failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("codec_name=h264") && text.contains("codec_name=aac"), "RTMPT probe: {text}");
    let body = l.lab.dir.join("vip.flv");
    let _ = l.lab.exec_status(&client, &["curl", "-sS", "--max-time", "3", "-o", body.to_str().unwrap(), &flv_url]);
    let bytes = std::fs::read(&body).unwrap_or_default();
    assert!(bytes.starts_with(b"FLV\x01") && bytes.len() > 50_000, "curl through the VIP got {} bytes", bytes.len());
    let list = l.list_json();
    let flv_service = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["port"] == HTTP_PORT)
        .cloned()
        .unwrap_or_else(|| panic!("no VIP:{HTTP_PORT} service in {list}"));
    assert!(flv_service["counters"]["new_flows"].as_u64().unwrap_or(0) >= 4, "HTTP-FLV flows: {flv_service}");
    for r in flv_service["reals"].as_array().unwrap() {
        assert_eq!(r["health"], "up", "the http check of /healthz does not pass against a relay edge: {r}");
    }
    // Which edges served RTMP players: the reals of VIP:1935 that saw new flows.
    let rtmp_service = list.as_array().unwrap().iter().find(|s| s["port"] == 1935).cloned().unwrap();
    for r in rtmp_service["reals"].as_array().unwrap() {
        assert_eq!(r["health"], "up", "the rtmp check does not pass against a relay edge: {r}");
    }
    let served: Vec<String> = rtmp_service["reals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["counters"]["new_flows"].as_u64().unwrap_or(0) > 0)
        .map(|r| r["addr"].as_str().unwrap().to_string())
        .collect();
    assert!(served.len() >= 2, "{probes} players all landed on {served:?}: {list}");
    let flows: u64 = rtmp_service["counters"]["new_flows"].as_u64().unwrap();
    assert_eq!(flows, probes, "one flow per player: {list}");
}
