//! The metrics endpoint of `lbd --metrics ADDR` on the shared HTTP server. It never reads maps itself: each scrape
//! asks the control task for the text over a channel.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use svc::Stopping;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// A scrape: the control task answers with the rendered text.
pub type Scrape = oneshot::Sender<String>;

/// Serves `GET /metrics` (and `/`) until `stop` fires.
pub async fn serve(listener: TcpListener, scrapes: mpsc::Sender<Scrape>, stop: Stopping) {
    svc::http::serve(listener, router(scrapes), stop, "metrics").await
}

fn router(scrapes: mpsc::Sender<Scrape>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/", get(scrape))
        .fallback(|| async { svc::http::error(StatusCode::NOT_FOUND, "try /metrics") })
        .with_state(scrapes)
}

async fn scrape(State(scrapes): State<mpsc::Sender<Scrape>>) -> Response {
    let (tx, rx) = oneshot::channel();
    if scrapes.send(tx).await.is_err() {
        return svc::http::error(StatusCode::SERVICE_UNAVAILABLE, "lbd is shutting down");
    }
    match rx.await {
        Ok(text) => svc::http::metrics_text(text),
        Err(_) => svc::http::error(StatusCode::SERVICE_UNAVAILABLE, "lbd is shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn serves_scrapes_from_the_channel() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel::<Scrape>(4);
        tokio::spawn(async move {
            while let Some(s) = rx.recv().await {
                let _ = s.send("lbd_up 1\n".into());
            }
        });
        let (sd, st) = svc::Shutdown::new();
        let server = tokio::spawn(serve(listener, tx, st));
        for (req, want) in [("GET /metrics", "200 OK"), ("GET /nope", "404"), ("POST /metrics", "405")] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("{req} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
            let mut r = String::new();
            s.read_to_string(&mut r).await.unwrap();
            assert!(r.starts_with(&format!("HTTP/1.1 {want}")), "{req}: {r}");
            if want == "200 OK" {
                assert!(r.ends_with("\r\n\r\nlbd_up 1\n"), "{r}");
                assert!(r.contains("version=0.0.4"));
            }
        }
        sd.trigger();
        server.await.unwrap();
    }
}
