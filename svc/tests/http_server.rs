//! The shared API server against abusive and careless clients over real TCP sockets: trickled and oversized
//! bodies, one JSON error shape for every refusal, half-closing clients, the connection cap and the idle timeout.

use axum::extract::{Path, Query};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use svc::http::{serve_with, Limits};
use svc::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(serde::Deserialize)]
struct Q {
    #[allow(dead_code)]
    last: Option<usize>,
}

fn router() -> Router {
    Router::new()
        .route("/events", get(|Query(_): Query<Q>| async { "[]" }))
        .route("/echo", post(|body: axum::body::Bytes| async move { format!("{}", body.len()) }))
        .route("/json", post(|Json(v): Json<Vec<u32>>| async move { format!("{}", v.len()) }))
        .route("/nodes/{n}", get(|Path(n): Path<u32>| async move { n.to_string() }))
}

/// Serves `router()` with `limits` on a loopback port; stops when the Shutdown is dropped.
async fn start(limits: Limits) -> (SocketAddr, Shutdown) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (sd, st) = Shutdown::new();
    tokio::spawn(serve_with(l, router(), st, "test", limits));
    (addr, sd)
}

/// Reads the answer until the server closes, within 5 s.
async fn read_all(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await.expect("no answer within 5 s").ok();
    String::from_utf8_lossy(&buf).into_owned()
}

/// One request on its own connection (closed after the answer): (status, content type, body).
async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    split(&read_all(&mut s).await)
}

fn split(r: &str) -> (u16, String, String) {
    let (head, body) = r.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no complete answer: {r:?}"));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_string))
        .unwrap_or_default();
    (status, ctype, body.to_string())
}

/// The message of a JSON error body, asserting the shape `{"error": "..."}` and nothing else.
fn error_message(ctype: &str, body: &str) -> String {
    assert_eq!(ctype, "application/json", "{body}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    let o = v.as_object().unwrap();
    assert_eq!(o.len(), 1, "{body}");
    o["error"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn every_refusal_is_one_json_shape() {
    let (addr, _sd) = start(Limits { max_body: 100, ..Limits::default() }).await;
    assert_eq!(request(addr, "GET", "/events?last=5", "").await.0, 200);
    assert_eq!(request(addr, "POST", "/json", "[1,2]").await.2, "2");
    let cases = [
        ("GET", "/events?last=abc", "", 400, "last"),
        ("POST", "/json", "[1,", 400, "json"),
        ("POST", "/json", "\"a string\"", 422, "sequence"),
        ("GET", "/nodes/abc", "", 400, "cannot parse"),
        ("GET", "/nodes/%ff", "", 400, "utf-8"),
        ("GET", "/nowhere", "", 404, "not found"),
        ("DELETE", "/events", "", 405, "method not allowed"),
        ("POST", "/echo", &"x".repeat(101), 413, "over 100 bytes"),
    ];
    for (method, path, body, want, fragment) in cases {
        let (status, ctype, text) = request(addr, method, path, body).await;
        assert_eq!(status, want, "{method} {path}: {text}");
        let msg = error_message(&ctype, &text);
        assert!(msg.to_lowercase().contains(fragment), "{method} {path}: {msg:?} lacks {fragment:?}");
    }
    // A chunked body over the limit (no Content-Length to refuse it by) is cut at the limit.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let chunk = "y".repeat(60);
    let req = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3c\r\n{chunk}\r\n3c\r\n{chunk}\r\n0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let (status, ctype, text) = split(&read_all(&mut s).await);
    assert_eq!(status, 413, "{text}");
    assert!(error_message(&ctype, &text).contains("over 100 bytes"));
    // HEAD is answered like GET.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"HEAD /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    assert!(read_all(&mut s).await.starts_with("HTTP/1.1 200 OK"));
}

#[tokio::test]
async fn a_trickled_body_is_cut_at_the_deadline_while_others_are_served() {
    let deadline = Duration::from_millis(1500);
    let (addr, _sd) = start(Limits { body_timeout: deadline, ..Limits::default() }).await;
    let mut slow = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n").await.unwrap();
        slow.push(s);
    }
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        // One byte per connection every 100 ms, far slower than the deadline allows for 1000 bytes.
        let mut answers = vec![Vec::new(); slow.len()];
        let mut open = slow.len();
        while open > 0 && started.elapsed() < Duration::from_secs(10) {
            for (s, answer) in slow.iter_mut().zip(answers.iter_mut()) {
                if !answer.is_empty() {
                    continue;
                }
                let _ = s.write_all(b"z").await;
                let mut buf = [0u8; 512];
                if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await {
                    if n > 0 {
                        answer.extend_from_slice(&buf[..n]);
                        open -= 1;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (answers, started.elapsed())
    });
    // A normal client meanwhile: served at once.
    let t = Instant::now();
    let (status, _, body) = request(addr, "POST", "/echo", "hello").await;
    assert_eq!((status, body.as_str()), (200, "5"));
    assert!(t.elapsed() < Duration::from_millis(500), "a normal client waited {:?}", t.elapsed());
    let (answers, took) = trickle.await.unwrap();
    for a in &answers {
        let a = String::from_utf8_lossy(a);
        assert!(a.starts_with("HTTP/1.1 408"), "{a:?}");
        assert!(a.contains(r#"{"error":"the request body did not arrive within 1.5s"}"#), "{a:?}");
        assert!(a.to_ascii_lowercase().contains("connection: close"), "{a:?}");
    }
    assert!(took >= deadline && took < deadline + Duration::from_secs(2), "cut after {took:?}");
}

#[tokio::test]
async fn a_client_that_half_closes_still_gets_its_answer() {
    let (addr, _sd) = start(Limits::default()).await;
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc").await.unwrap();
        s.shutdown().await.unwrap();
        let (status, _, body) = split(&read_all(&mut s).await);
        assert_eq!((status, body.as_str()), (200, "3"));
    }
}

#[tokio::test]
async fn connections_are_capped_and_idle_ones_let_go() {
    let idle = Duration::from_millis(800);
    let (addr, _sd) = start(Limits { max_connections: 3, header_timeout: idle, ..Limits::default() }).await;
    // Three keep-alive connections, each served once and then left idle.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));
        held.push(s);
    }
    // A fourth is refused at once with 503 and closed.
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (status, ctype, body) = split(&read_all(&mut s).await);
    assert_eq!(status, 503);
    assert!(error_message(&ctype, &body).contains("too many API connections"));
    assert!(t.elapsed() < Duration::from_secs(1), "refusal took {:?}", t.elapsed());
    // The idle ones are closed by the server after the idle timeout, which frees their slots.
    for s in &mut held {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(0))), "an idle connection was not closed: {n:?}");
    }
    assert!(t.elapsed() >= idle / 2, "idle connections closed too early: {:?}", t.elapsed());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, _) = request(addr, "GET", "/events", "").await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slots were not freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
