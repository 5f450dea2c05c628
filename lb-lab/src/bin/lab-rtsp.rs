//! lab-rtsp: a minimal RTSP responder for the lab. Answers every request (OPTIONS, DESCRIBE, ...) with
//! `RTSP/1.0 200 OK`, echoing its CSeq, so the load balancer's rtsp health check has something real to talk to.
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn main() {
    let mut port = 554u16;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()).expect("--port NUMBER"),
            other => {
                eprintln!("lab-rtsp: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let listener = TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|e| {
        eprintln!("lab-rtsp: cannot listen on port {port}: {e}");
        std::process::exit(1);
    });
    println!("lab-rtsp listening on port {port}");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = serve(stream);
        });
    }
}

fn serve(stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut rd = BufReader::new(stream.try_clone()?);
    let mut w = stream;
    loop {
        let mut request = String::new();
        if rd.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut cseq = String::from("0");
        loop {
            let mut h = String::new();
            if rd.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.trim().eq_ignore_ascii_case("cseq") {
                    cseq = v.trim().to_string();
                }
            }
        }
        if !request.contains("RTSP/1.0") {
            write!(w, "RTSP/1.0 400 Bad Request\r\nCSeq: {cseq}\r\n\r\n")?;
            return Ok(());
        }
        write!(w, "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: OPTIONS, DESCRIBE\r\n\r\n")?;
    }
}
