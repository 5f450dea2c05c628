//! HTTP callbacks against a real HTTP endpoint started in the test (axum on 127.0.0.1): what the relay posts on
//! publish, play, stop and unpublish, and that a non-2xx answer or a timeout refuses the publish or play.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use common::*;

type Seen = Arc<Mutex<Vec<serde_json::Value>>>;

/// The operator's endpoint: records every event; streams named `deny*` get 403, `slow*` an answer after 5 s.
struct Hooks {
    addr: SocketAddr,
    seen: Seen,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Hooks {
    fn start() -> Self {
        let seen: Seen = Arc::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (atx, arx) = std::sync::mpsc::channel();
        let s2 = seen.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                async fn hook(State(seen): State<Seen>, Json(v): Json<serde_json::Value>) -> StatusCode {
                    let stream = v["stream"].as_str().unwrap_or("").to_string();
                    seen.lock().unwrap().push(v);
                    if stream.starts_with("slow") {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    if stream.starts_with("deny") {
                        StatusCode::FORBIDDEN
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
                let app = Router::new().route("/hook/{action}", post(hook)).with_state(s2);
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                atx.send(l.local_addr().unwrap()).unwrap();
                let _ = axum::serve(l, app).with_graceful_shutdown(async { rx.await.unwrap_or(()) }).await;
            });
        });
        let addr = arx.recv_timeout(Duration::from_secs(5)).unwrap();
        Self { addr, seen, _stop: tx }
    }

    fn url(&self, action: &str) -> String {
        format!("http://{}/hook/{action}", self.addr)
    }

    fn events(&self, action: &str, stream: &str) -> Vec<serde_json::Value> {
        self.seen.lock().unwrap().iter().filter(|v| v["action"] == action && v["stream"] == stream).cloned().collect()
    }
}

#[test]
fn callbacks_authorise_publish_and_play_and_hear_the_ends() {
    let _g = serial();
    let dir = TempDir::new("callbacks");
    let hooks = Hooks::start();
    let (p, u, pl, st) = (hooks.url("publish"), hooks.url("unpublish"), hooks.url("play"), hooks.url("stop"));
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let hs = http.to_string();
    let origin = Relay::origin(
        &dir,
        &[
            "--on-publish",
            &p,
            "--on-unpublish",
            &u,
            "--on-play",
            &pl,
            "--on-stop",
            &st,
            "--callback-timeout",
            "1s",
            "--http-listen",
            &hs,
        ],
    );
    wait_port(http, Duration::from_secs(10));

    // Accepted publish: the endpoint sees app, key, client address, protocol and query string.
    let mut publisher = publish(&dir, &format!("{}?sig=abc&x=1", origin.url("ok")), &[]);
    wait_live(origin.api, "ok");
    let ev = hooks.events("on_publish", "ok");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["app"], "live");
    assert_eq!(ev[0]["protocol"], "rtmp");
    assert_eq!(ev[0]["query"], "sig=abc&x=1");
    let client: SocketAddr = ev[0]["client_addr"].as_str().unwrap().parse().unwrap();
    assert!(client.ip().is_loopback());

    // Accepted play, then its stop.
    assert_h264_aac(&format!("{}?viewer=7", origin.url("ok")));
    let play = hooks.events("on_play", "ok");
    assert_eq!(play.len(), 1, "{play:?}");
    assert_eq!(play[0]["protocol"], "rtmp");
    assert_eq!(play[0]["query"], "viewer=7");
    wait_for("on_stop", Duration::from_secs(5), || (hooks.events("on_stop", "ok").len() == 1).then_some(()));

    // 403 refuses a publish: ffmpeg gets the onStatus error and exits non-zero; nothing goes live.
    let mut denied = publish(&dir, &origin.url("deny-pub"), &[]);
    let status = denied.wait_timeout(Duration::from_secs(15)).expect("refused publisher still running");
    assert!(!status.success());
    assert!(stream_entry(origin.api, "live", "deny-pub").is_none_or(|s| s["source"].is_null()));
    assert_eq!(hooks.events("on_publish", "deny-pub").len(), 1);

    // A timeout refuses too, after --callback-timeout (1 s), not the endpoint's 5 s.
    let mut slow = publish(&dir, &origin.url("slow-pub"), &[]);
    let t = std::time::Instant::now();
    let status = slow.wait_timeout(Duration::from_secs(15)).expect("timed-out publisher still running");
    assert!(!status.success());
    assert!(t.elapsed() < Duration::from_secs(5), "refused after {:?}", t.elapsed());

    // Refused plays: ffprobe fails with the play refused.
    for key in ["deny-play", "slow-play"] {
        let mut cmd = Command::new("ffprobe");
        cmd.args(["-v", "error", "-show_entries", "stream=codec_name", "-of", "compact", &origin.url(key)]);
        let (ok, out, _) = run_limited(cmd, Duration::from_secs(15));
        assert!(!ok, "{key}: ffprobe succeeded: {out}");
        assert_eq!(hooks.events("on_play", key).len(), 1);
        assert!(hooks.events("on_stop", key).is_empty(), "a refused play has no stop");
    }
    // HTTP-FLV players ask on_play too (protocol http-flv): 403 when refused, and their stop is heard.
    require("curl");
    let curl_code = |key: &str| {
        let mut c = Command::new("curl");
        c.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2"]);
        c.arg(format!("http://{http}/live/{key}.flv?v=1"));
        run_limited(c, Duration::from_secs(10)).1
    };
    assert_eq!(curl_code("deny-flv"), "403");
    assert_eq!(curl_code("ok"), "200");
    let flv =
        hooks.events("on_play", "ok").into_iter().find(|v| v["protocol"] == "http-flv").expect("http-flv on_play");
    assert_eq!(flv["query"], "v=1");
    wait_for("HTTP-FLV on_stop", Duration::from_secs(5), || {
        hooks.events("on_stop", "ok").iter().any(|v| v["protocol"] == "http-flv").then_some(())
    });
    assert_eq!(metric(origin.api, "relay_callbacks_refused_total"), 5.0);
    let logs = origin.proc.log_text();
    assert!(logs.contains("on_publish refused the publish") && logs.contains("on_play refused the play: callback"));

    // The publisher leaves: on_unpublish.
    publisher.kill();
    wait_for("on_unpublish", Duration::from_secs(10), || (hooks.events("on_unpublish", "ok").len() == 1).then_some(()));
    assert!(hooks.events("on_unpublish", "deny-pub").is_empty(), "a refused publish has no unpublish");

    // An endpoint that is down refuses too (nothing listens on the port of a dropped listener).
    drop(hooks);
    // (Given in a --config file, the way operators keep callbacks; the command line's flag overrides the file's.)
    let dead = format!("http://127.0.0.1:{}/x", free_port());
    let conf = dir.path("relay.toml");
    std::fs::write(&conf, format!("on-play = \"{dead}\"\ncallback_timeout = \"5s\"\nmax-streams-per-connection = 7\n"))
        .unwrap();
    let origin2 = Relay::origin(&dir, &["--config", conf.to_str().unwrap(), "--callback-timeout", "1s"]);
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-show_entries", "stream=codec_name", "-of", "compact", &origin2.url("any")]);
    assert!(!run_limited(cmd, Duration::from_secs(15)).0);
    assert_eq!(metric(origin2.api, "relay_callbacks_refused_total"), 1.0);

    // A config file with an unknown key or a bad value stops the relay at start with the reason.
    for (text, want) in [
        ("no-such-flag = 1\n", "line 1: unknown key `no-such-flag`"),
        ("on-play = true\n", "on-play = true ("),
        ("x = [\n", "TOML"),
    ] {
        std::fs::write(&conf, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(["origin", "--listen", &format!("127.0.0.1:{}", free_port()), "--config", conf.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{text:?}: {err}");
    }

    // A bad callback URL stops the relay at start with the reason.
    let out = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["origin", "--listen", &format!("127.0.0.1:{}", free_port()), "--on-play", "https://x/"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("scheme must be http://"));
}

/// Status and body of `GET path` on `addr` (one request, connection closed).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_with("GET", addr, path, &[("Host", "x")])
}

#[test]
fn an_hls_session_asks_on_play_once_and_is_told_on_stop_when_it_lapses() {
    let _g = serial();
    let dir = TempDir::new("hlscallbacks");
    let hooks = Hooks::start();
    let (pl, st) = (hooks.url("play"), hooks.url("stop"));
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let hs = http.to_string();
    let origin = Relay::origin(&dir, &["--on-play", &pl, "--on-stop", &st, "--http-listen", &hs]);
    wait_port(http, Duration::from_secs(10));
    let _publisher = publish(&dir, &origin.url("ok"), &[]);
    let _denied = publish(&dir, &origin.url("deny1"), &[]);
    wait_live(origin.api, "ok");
    // Many requests of one player (its address): one on_play, protocol hls, and one HLS player in /streams.
    let list = wait_for("a playlist with a segment", Duration::from_secs(20), || {
        let (code, body) = get(http, "/live/ok/index.m3u8");
        (code == 200 && body.contains("#EXTINF")).then_some(body)
    });
    let seg = list.lines().rfind(|l| l.ends_with(".m4s") && l.starts_with('s')).unwrap().to_string();
    for path in ["/live/ok/index.m3u8", "/live/ok/index.m3u8"] {
        assert_eq!(get(http, path).0, 200, "{path}");
    }
    // (HEAD: the segment's bytes are not text.)
    assert_eq!(http_with("HEAD", http, &format!("/live/ok/{seg}"), &[("Host", "x")]).0, 200);
    let plays = hooks.events("on_play", "ok");
    assert_eq!(plays.len(), 1, "{plays:?}");
    assert_eq!(plays[0]["protocol"], "hls");
    assert_eq!(stream_entry(origin.api, "live", "ok").unwrap()["players_by_protocol"]["hls"], 1);
    // Two more sessions from the same address, told apart by their session parameter.
    for id in ["a", "b", "a"] {
        assert_eq!(get(http, &format!("/live/ok/index.m3u8?session={id}")).0, 200);
    }
    assert_eq!(hooks.events("on_play", "ok").len(), 3);
    assert_eq!(stream_entry(origin.api, "live", "ok").unwrap()["players_by_protocol"]["hls"], 3);
    // A refused session: 403, and it is not counted.
    let (code, body) = get(http, "/live/deny1/index.m3u8");
    assert_eq!((code, body.trim()), (403, "refused by the on_play callback"));
    // Quiet for the session timeout (10 s at 2 s segments): each session ends and on_stop is told once.
    wait_for("on_stop for the three HLS sessions", Duration::from_secs(20), || {
        (hooks.events("on_stop", "ok").iter().filter(|v| v["protocol"] == "hls").count() == 3).then_some(())
    });
    assert_eq!(stream_entry(origin.api, "live", "ok").unwrap()["players_by_protocol"]["hls"], 0);
}
