//! lab-httpd: the lab's real server. Answers every GET with its name; `/stream?secs=N` sends one line every 100 ms
//! for N seconds on one connection, so tests have a long-lived flow to watch across real-set changes; `/bytes?n=N`
//! sends N bytes (downloads). Listens on IPv6 and IPv4.
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn main() {
    let mut name = String::from("real");
    let mut port = 80u16;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--name" => name = args.next().expect("--name VALUE"),
            "--port" => port = args.next().and_then(|p| p.parse().ok()).expect("--port NUMBER"),
            other => {
                eprintln!("lab-httpd: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let listener = TcpListener::bind(("::", port)).unwrap_or_else(|e| {
        eprintln!("lab-httpd: cannot listen on port {port}: {e}");
        std::process::exit(1);
    });
    for stream in listener.incoming().flatten() {
        let name = name.clone();
        std::thread::spawn(move || {
            let _ = serve(stream, &name);
        });
    }
}

fn serve(stream: TcpStream, name: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut rd = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    rd.read_line(&mut request)?;
    loop {
        let mut h = String::new();
        if rd.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let mut w = stream;
    if let Some(q) = path.strip_prefix("/stream?secs=") {
        let secs: u64 = q.parse().unwrap_or(1);
        write!(w, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")?;
        let end = Instant::now() + Duration::from_secs(secs);
        let mut n = 0;
        while Instant::now() < end {
            writeln!(w, "{name} {n}")?;
            n += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        writeln!(w, "{name} done")?;
        return Ok(());
    }
    if let Some(q) = path.strip_prefix("/bytes?n=") {
        // A download of N bytes (the path-MTU test): full-sized segments from the real to the client.
        let n: usize = q.parse().unwrap_or(0);
        write!(w, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n")?;
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len());
            w.write_all(&chunk[..k])?;
            left -= k;
        }
        return Ok(());
    }
    let body = format!("{name}\n");
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
