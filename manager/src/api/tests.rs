//! smd's API on the shared server over a real socket: HEAD like GET on the open pages, the bearer parser, the
//! forgery guard on state changes and JSON refusals from extractors.

use super::*;
use crate::cluster::tests::config;
use std::net::SocketAddr;
use svc::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "0123456789abcdef-token";

async fn serve() -> (SocketAddr, Shutdown) {
    let c = config("");
    let bearer = Bearer::token(&c.token).unwrap();
    let shared = Shared::new(
        Cluster::new(c, Default::default(), std::time::Instant::now()),
        crate::history::History::new(std::time::Duration::from_secs(10)),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (sd, st) = Shutdown::new();
    tokio::spawn(svc::http::serve(l, router(shared, bearer), st, "API"));
    (addr, sd)
}

/// (status, body) of `method path` with `headers`.
async fn send(addr: SocketAddr, method: &str, path: &str, headers: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).await.unwrap();
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), body.to_string())
}

#[tokio::test]
async fn head_auth_forgery_and_json_refusals() {
    let (addr, _sd) = serve().await;
    let host = format!("Host: {addr}\r\n");
    assert_eq!(send(addr, "GET", "/", &host).await.0, 200);
    assert_eq!(send(addr, "HEAD", "/", &host).await, (200, String::new()), "HEAD / is open like GET /");
    assert_eq!(send(addr, "HEAD", "/healthz", &host).await.0, 200);
    for auth in [format!("Bearer {TOKEN}"), format!("Bearer  {TOKEN}"), format!("bearer {TOKEN}")] {
        let h = format!("{host}Authorization: {auth}\r\n");
        assert_eq!(send(addr, "GET", "/api/v1/nodes", &h).await.0, 200, "{auth:?}");
    }
    let auth = format!("{host}Authorization: Bearer {TOKEN}\r\n");
    let (code, body) = send(addr, "GET", "/api/v1/events?last=abc", &auth).await;
    assert_eq!(code, 400);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    assert!(v["error"].as_str().unwrap().contains("last"), "{v}");
    let (code, body) = send(addr, "GET", "/api/v1/nodes/%ff", &auth).await;
    assert_eq!(code, 400);
    assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string(), "{body}");
    let evil = format!("Host: evil.example\r\nAuthorization: Bearer {TOKEN}\r\n");
    for (method, path) in
        [("POST", "/api/v1/nodes/e1/maintenance"), ("DELETE", "/api/v1/nodes/e1"), ("PUT", "/api/v1/nodes")]
    {
        let (code, body) = send(addr, method, path, &evil).await;
        assert_eq!(code, 403, "{method} {path}: {body}");
    }
}
