//! lab-udp: UDP for the lab. `lab-udp serve --name r1 --port 5353` answers every datagram with its name (a real);
//! `lab-udp ask ADDR:PORT --from-port P` sends one datagram from port P and prints the answer (a client whose
//! source port stays the same, so the load balancer sees one flow across calls).
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    match args.first().map(String::as_str) {
        Some("serve") => {
            let (Some(name), Some(port)) = (flag("--name"), flag("--port").and_then(|p| p.parse::<u16>().ok())) else {
                eprintln!("lab-udp serve --name NAME --port PORT");
                return ExitCode::from(2);
            };
            let sock = match UdpSocket::bind(("::", port)) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("lab-udp: cannot bind port {port}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            println!("lab-udp serving on {port}");
            let mut buf = [0u8; 1500];
            loop {
                if let Ok((_, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(name.as_bytes(), from);
                }
            }
        }
        Some("ask") => {
            let to: Option<SocketAddr> = args.get(1).and_then(|a| a.parse().ok());
            let (Some(to), Some(from)) = (to, flag("--from-port").and_then(|p| p.parse::<u16>().ok())) else {
                eprintln!("lab-udp ask ADDR:PORT --from-port PORT");
                return ExitCode::from(2);
            };
            let local: SocketAddr = if to.is_ipv4() { ([0, 0, 0, 0], from).into() } else { ([0u16; 8], from).into() };
            let answer = UdpSocket::bind(local).and_then(|s| {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.send_to(b"who", to)?;
                let mut buf = [0u8; 256];
                let n = s.recv(&mut buf)?;
                Ok(String::from_utf8_lossy(&buf[..n]).to_string())
            });
            match answer {
                Ok(a) => {
                    println!("{a}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("lab-udp: no answer from {to}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("lab-udp serve --name NAME --port PORT | lab-udp ask ADDR:PORT --from-port PORT");
            ExitCode::from(2)
        }
    }
}
