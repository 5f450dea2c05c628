//! Prometheus text exposition (format 0.0.4) and the small HTTP server behind `lbd --metrics ADDR`.
//!
//! The server never reads maps itself: each scrape asks the control task for the rendered text over a channel.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// Largest request head the server reads.
const MAX_HEAD: usize = 8 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One metric family: `# HELP`, `# TYPE` and its samples.
#[derive(Clone, Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    pub fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        debug_assert!(kind != Kind::Counter || name.ends_with("_total"), "{name}: counters end in _total");
        Family { name, help, kind, samples: Vec::new() }
    }

    pub fn add(&mut self, labels: Vec<(&'static str, String)>, value: f64) -> &mut Self {
        self.samples.push((labels, value));
        self
    }
}

/// Renders families in the text format. Families without samples still get HELP and TYPE, so a dashboard sees
/// the name before the first service exists.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
        let _ = writeln!(out, "# TYPE {} {}", f.name, if f.kind == Kind::Counter { "counter" } else { "gauge" });
        for (labels, v) in &f.samples {
            out.push_str(f.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, val)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(val));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", format_value(*v));
        }
    }
    out
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A scrape: the control task answers with the rendered text.
pub type Scrape = oneshot::Sender<String>;

/// Binds the metrics address; errors (address in use, bad address) surface before lbd touches the dataplane.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `GET /metrics` (and `/`) until `shutdown` resolves.
pub async fn serve(listener: TcpListener, scrapes: mpsc::Sender<Scrape>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let scrapes = scrapes.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, scrapes).await {
                tracing::debug!(error = %e, "metrics request failed");
            }
        });
    }
}

async fn answer(mut stream: tokio::net::TcpStream, scrapes: mpsc::Sender<Scrape>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 || head.len() > MAX_HEAD {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(std::time::Duration::from_secs(5), read).await.is_err() {
        return Ok(());
    }
    let line = String::from_utf8_lossy(&head).lines().next().unwrap_or("").to_string();
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = if method != "GET" && method != "HEAD" {
        ("405 Method Not Allowed", "text/plain", "only GET\n".to_string())
    } else if path == "/metrics" || path == "/" {
        let (tx, rx) = oneshot::channel();
        if scrapes.send(tx).await.is_err() {
            ("503 Service Unavailable", "text/plain", "lbd is shutting down\n".to_string())
        } else {
            match rx.await {
                Ok(text) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text),
                Err(_) => ("503 Service Unavailable", "text/plain", "lbd is shutting down\n".to_string()),
            }
        }
    } else {
        ("404 Not Found", "text/plain", "try /metrics\n".to_string())
    };
    let hdr = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(hdr.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

/// Samples by metric name: [(labels, value)].
pub type Parsed = std::collections::BTreeMap<String, Vec<(Vec<(String, String)>, f64)>>;

/// A strict reader of the text format, for tests: metric name -> [(labels, value)]; errors name the bad line.
pub fn parse(text: &str) -> Result<Parsed, String> {
    let mut out: std::collections::BTreeMap<String, Vec<_>> = std::collections::BTreeMap::new();
    let mut typed = std::collections::BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut p = rest.split_whitespace();
            let name = p.next().ok_or_else(|| bad("TYPE without a name"))?;
            match p.next() {
                Some("counter" | "gauge" | "histogram" | "summary" | "untyped") => {}
                _ => return Err(bad("unknown type")),
            }
            if !typed.insert(name.to_string()) {
                return Err(bad("TYPE given twice"));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| bad("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| bad("value is not a number"))?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').ok_or_else(|| bad("unclosed labels"))?;
                let mut labels = Vec::new();
                let mut rest = body;
                while !rest.is_empty() {
                    let (k, after) = rest.split_once("=\"").ok_or_else(|| bad("label without =\""))?;
                    let mut val = String::new();
                    let mut chars = after.char_indices();
                    let mut end = None;
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => match chars.next() {
                                Some((_, 'n')) => val.push('\n'),
                                Some((_, c)) => val.push(c),
                                None => return Err(bad("dangling escape")),
                            },
                            '"' => {
                                end = Some(i);
                                break;
                            }
                            c => val.push(c),
                        }
                    }
                    let end = end.ok_or_else(|| bad("unterminated label value"))?;
                    if !valid_name(k) {
                        return Err(bad("bad label name"));
                    }
                    labels.push((k.to_string(), val));
                    rest = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
                }
                (name, labels)
            }
        };
        if !valid_name(name) {
            return Err(bad("bad metric name"));
        }
        out.entry(name.to_string()).or_default().push((labels, value));
    }
    Ok(out)
}

fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses_text_format() {
        let mut pk = Family::new("lbd_service_packets_total", Kind::Counter, "Packets forwarded.");
        pk.add(vec![("vip", "10.0.0.1".into()), ("port", "80".into()), ("proto", "tcp".into())], 12.0);
        let mut up = Family::new("lbd_real_up", Kind::Gauge, "1 when the real passes its check.");
        up.add(vec![("real", "10.0.0.2".into()), ("odd", "a\"b\\c\nd".into())], 1.0);
        let mut lat = Family::new("lbd_real_check_duration_seconds", Kind::Gauge, "Last check latency.");
        lat.add(vec![], 0.0125);
        let empty = Family::new("lbd_events_total", Kind::Counter, "Events.");
        let text = render(&[pk, up, lat, empty]);
        assert!(text.contains("# TYPE lbd_service_packets_total counter\n"));
        assert!(text.contains("lbd_service_packets_total{vip=\"10.0.0.1\",port=\"80\",proto=\"tcp\"} 12\n"));
        assert!(text.contains("lbd_real_check_duration_seconds 0.0125\n"));
        assert!(text.contains("# HELP lbd_events_total Events.\n"));
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed["lbd_service_packets_total"][0].1, 12.0);
        assert_eq!(parsed["lbd_real_up"][0].0[1], ("odd".to_string(), "a\"b\\c\nd".to_string()));
        assert!(!parsed.contains_key("lbd_events_total"));
    }

    #[test]
    fn parser_rejects_broken_text() {
        for bad in
            ["metric", "1bad 2", "m{a=\"x} 1", "m{a=\"x\"} one", "# TYPE m nonsense", "# TYPE m gauge\n# TYPE m gauge"]
        {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[tokio::test]
    async fn serves_scrapes_from_the_channel() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel::<Scrape>(4);
        tokio::spawn(async move {
            while let Some(s) = rx.recv().await {
                let _ = s.send("lbd_up 1\n".into());
            }
        });
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, tx, async move {
            let _ = stop_rx.await;
        }));
        for (path, want) in [("/metrics", "200 OK"), ("/nope", "404")] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
            let mut r = String::new();
            s.read_to_string(&mut r).await.unwrap();
            assert!(r.starts_with(&format!("HTTP/1.1 {want}")), "{r}");
            if want == "200 OK" {
                assert!(r.ends_with("\r\n\r\nlbd_up 1\n"), "{r}");
                assert!(r.contains("version=0.0.4"));
            }
        }
        let _ = stop_tx.send(());
        server.await.unwrap();
    }
}
