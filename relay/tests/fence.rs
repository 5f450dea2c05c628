//! The relay under several stream managers: commands carrying an older manager term (X-Manager-Term) than one
//! already accepted are refused with 409 and change nothing, commands without a term pass, the term shows in
//! /metrics and /status; and `--manager A,B` registers with whichever smd answers (a real smd, file store).

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const TOKEN: &str = "0123456789abcdef-fence-test";

/// A request with an optional manager term and a JSON body; (status, body).
fn send(api: SocketAddr, method: &str, path: &str, term: Option<&str>, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let term = term.map(|t| format!("X-Manager-Term: {t}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\n{term}Content-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let status = r.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, r.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn json(api: SocketAddr, path: &str) -> serde_json::Value {
    let (code, body) = http("GET", api, path);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The keys of an origin's sources, sorted.
fn source_keys(api: SocketAddr) -> Vec<String> {
    let mut keys: Vec<String> = json(api, "/sources")["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

fn source(url: &str) -> String {
    format!(r#"{{"url": "{url}"}}"#)
}

#[test]
fn an_older_manager_term_is_refused_and_changes_nothing() {
    let _g = serial();
    let dir = TempDir::new("fence");
    let origin = Relay::origin(&dir, &[]);
    // Sources from a port nobody serves: the relay keeps retrying, and the list shows them all along.
    let dead = format!("rtmp://127.0.0.1:{}/live", free_port());
    assert_eq!(json(origin.api, "/status")["manager_term"], 0, "no term accepted yet");

    let (code, body) = send(origin.api, "PUT", "/sources/live/a", Some("5"), &source(&format!("{dead}/a")));
    assert_eq!(code, 201, "{body}");
    assert_eq!(source_keys(origin.api), ["a"]);
    assert_eq!(json(origin.api, "/status")["manager_term"], 5);
    assert_eq!(metric(origin.api, "relay_manager_term"), 5.0);
    assert_eq!(metric(origin.api, "relay_manager_commands_refused_total"), 0.0);

    // Term 3 after term 5: refused with both terms, nothing applied (a put, a delete, maintenance).
    let (code, body) = send(origin.api, "PUT", "/sources/live/b", Some("3"), &source(&format!("{dead}/b")));
    assert_eq!(code, 409, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "stale manager term 3: term 5 has acted here since (a newer smd leads); command refused");
    let (code, body) = send(origin.api, "DELETE", "/sources/live/a", Some("3"), "");
    assert_eq!(code, 409, "{body}");
    let (code, body) = send(origin.api, "POST", "/maintenance", Some("4"), "");
    assert_eq!(code, 409, "{body}");
    assert_eq!(source_keys(origin.api), ["a"], "a stale command changed the sources");
    let status = json(origin.api, "/status");
    assert_eq!((status["maintenance"].clone(), status["manager_term"].clone()), (false.into(), 5.into()));
    assert_eq!(metric(origin.api, "relay_manager_commands_refused_total"), 3.0);
    assert_eq!(metric(origin.api, "relay_manager_term"), 5.0);
    // The log says which terms met, once per refusal.
    let log = origin.proc.log_text();
    assert_eq!(log.matches("command of stale manager term 3 refused: term 5 has acted here since").count(), 2, "{log}");
    assert_eq!(log.matches("manager term 5 now commands this node").count(), 1, "{log}");

    // No header: an operator's command, applied whatever the term. The same term and a newer one are applied.
    let (code, body) = send(origin.api, "PUT", "/sources/live/c", None, &source(&format!("{dead}/c")));
    assert_eq!(code, 201, "{body}");
    assert_eq!(send(origin.api, "DELETE", "/sources/live/a", Some("5"), "").0, 204);
    assert_eq!(send(origin.api, "POST", "/maintenance", Some("9"), "").0, 200);
    assert_eq!(source_keys(origin.api), ["c"]);
    let status = json(origin.api, "/status");
    assert_eq!((status["maintenance"].clone(), status["manager_term"].clone()), (true.into(), 9.into()));
    // A malformed term is a 400 that changes nothing and moves no mark.
    let (code, body) = send(origin.api, "DELETE", "/maintenance", Some("nine"), "");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("x-manager-term: expected a decimal term"), "{body}");
    assert_eq!(json(origin.api, "/status")["maintenance"], true);
    assert_eq!(metric(origin.api, "relay_manager_term"), 9.0);
    assert_eq!(metric(origin.api, "relay_manager_commands_refused_total"), 3.0);
    // Reads are never fenced.
    let (code, _) =
        http_with("GET", origin.api, "/sources", &[("Host", &origin.api.to_string()), ("X-Manager-Term", "1")]);
    assert_eq!(code, 200);

    // An edge's origin list: a stale PUT /origins leaves the list as the newer term set it.
    let edge = Relay::edge(&dir, &[origin.rtmp], &[]);
    let first = format!(r#"{{"origins": ["rtmp://{}/live"]}}"#, origin.rtmp);
    let other = r#"{"origins": ["rtmp://127.0.0.1:1/live"]}"#;
    assert_eq!(send(edge.api, "PUT", "/origins", Some("12"), &first).0, 200);
    let (code, body) = send(edge.api, "PUT", "/origins", Some("11"), other);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("stale manager term 11: term 12 has acted here since"), "{body}");
    assert_eq!(json(edge.api, "/status")["origins"], serde_json::json!([format!("rtmp://{}/live", origin.rtmp)]));
    assert_eq!(send(edge.api, "POST", "/streams/live/x/pull", Some("10"), "").0, 409);
    assert_eq!(metric(edge.api, "relay_manager_commands_refused_total"), 2.0);
    assert_eq!(json(edge.api, "/status")["manager_term"], 12);
}

/// A minimal smd on loopback (file store), as the manager's own tests run it.
fn smd(dir: &TempDir, port: u16) -> Proc {
    std::fs::write(dir.path("token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(
        dir.path("smd.toml"),
        format!(
            r#"listen = "127.0.0.1:{port}"
token_file = "token"
state_file = "state/state.json"
[[pool]]
name = "edges"
"#
        ),
    )
    .unwrap();
    let mut cmd = Command::new(lb_lab::bin_path("smd"));
    cmd.args(["--config", &dir.path("smd.toml").display().to_string()]).stdout(Stdio::null());
    let p = Proc::spawn("smd", cmd, Some(dir.path("smd.log")));
    wait_port(format!("127.0.0.1:{port}").parse().unwrap(), Duration::from_secs(10));
    p
}

/// `--manager DEAD,LIVE`: the first smd never answers, the relay registers with the second.
#[test]
fn a_relay_registers_with_the_stream_manager_that_answers() {
    let _g = serial();
    let dir = TempDir::new("fence-managers");
    let (dead, live) = (free_port(), free_port());
    let smd_proc = smd(&dir, live);
    let smd_api: SocketAddr = format!("127.0.0.1:{live}").parse().unwrap();
    let managers = format!("http://127.0.0.1:{dead},http://127.0.0.1:{live}");
    let origin_port = free_port();
    let edge = Relay::edge(
        &dir,
        &[format!("127.0.0.1:{origin_port}").parse().unwrap()],
        &["--api-token", TOKEN, "--manager", &managers, "--node-name", "fence-e1"],
    );
    let node = wait_for("smd to list the edge fence-e1", Duration::from_secs(10), || {
        let (code, body) =
            http_with("GET", smd_api, "/api/v1/nodes/fence-e1", &[("Authorization", &format!("Bearer {TOKEN}"))]);
        (code == 200).then(|| serde_json::from_str::<serde_json::Value>(&body).unwrap())
    });
    assert_eq!(node["name"], "fence-e1", "{node}");
    assert_eq!(node["role"], "edge", "{node}");
    let log = edge.proc.log_text();
    let registered: Vec<&str> = log.lines().filter(|l| l.contains("registered with the stream manager")).collect();
    assert_eq!(registered.len(), 1, "{log}");
    assert!(registered[0].contains(&format!("manager=http://127.0.0.1:{live}")), "{log}");
    drop(smd_proc);
}
