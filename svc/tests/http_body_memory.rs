//! Memory per trickled body byte on the shared API server: bodies sent one byte per TCP segment must cost about
//! their length, not a read buffer per segment (issue 29, item 16: 3.6 KB per byte before). Alone in its test
//! binary so the process's RSS is this test's.

use axum::routing::put;
use axum::Router;
use std::time::{Duration, Instant};
use svc::http::{serve_with, Limits};
use svc::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 20;
const BODY: usize = 2048;
/// The bound on RSS growth: 20 connections' buffers and bodies are well under 1 MB; 16 MB leaves room for the
/// allocator and the runtime, and is 9 times less than the 144 MB the old 3.6 KB per byte would take.
const MAX_GROWTH_KB: u64 = 16 * 1024;

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_cost_about_their_length() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (_sd, st) = Shutdown::new();
    let router = Router::new().route("/origins", put(|body: axum::body::Bytes| async move { body.len().to_string() }));
    let limits = Limits { body_timeout: Duration::from_secs(60), ..Limits::default() };
    tokio::spawn(serve_with(l, router, st, "test", limits));
    let before = rss_kb();
    let (peak_tx, mut peak_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let peak_tx = peak_tx.clone();
        clients.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            let head =
                format!("PUT /origins HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY}\r\nConnection: close\r\n\r\n");
            s.write_all(head.as_bytes()).await.unwrap();
            for i in 0..BODY {
                s.write_all(b"a").await.unwrap();
                if i == BODY - 2 {
                    // Everything but the last byte is in: what the server holds now is the most it will hold.
                    peak_tx.send(rss_kb()).unwrap();
                }
                // One byte per segment: the server reads each before the next is sent.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let mut answer = String::new();
            tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer)).await.unwrap().unwrap();
            answer
        }));
    }
    drop(peak_tx);
    let started = Instant::now();
    for c in clients {
        let answer = c.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(answer.ends_with(&format!("\r\n\r\n{BODY}")), "{answer:?}");
    }
    let mut peak = 0;
    while let Some(kb) = peak_rx.recv().await {
        peak = peak.max(kb);
    }
    let growth = peak.saturating_sub(before);
    eprintln!("RSS {before} kB before, {peak} kB with {CONNECTIONS} x {BODY} B trickled in ({:?})", started.elapsed());
    assert!(growth < MAX_GROWTH_KB, "RSS grew {growth} kB for {CONNECTIONS} bodies of {BODY} bytes");
}
