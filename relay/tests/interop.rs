//! Interop with nginx-rtmp both ways: our edge pulls from an nginx-rtmp origin; an nginx-rtmp edge pulls from our origin.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;

const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// nginx with only an rtmp block; every path it writes is inside `dir` (pid, logs), none are system paths.
fn nginx(dir: &TempDir, port: u16, application: &str) -> (Proc, SocketAddr) {
    require("nginx");
    assert!(
        std::path::Path::new(RTMP_MODULE).is_file(),
        "{RTMP_MODULE} missing: install Debian package libnginx-mod-rtmp"
    );
    let conf = format!(
        "load_module {RTMP_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {pid};
error_log {log} info;
events {{ worker_connections 1024; }}
rtmp {{
    access_log {access};
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{
            live on;
            {application}
        }}
    }}
}}
",
        pid = dir.path("nginx.pid").display(),
        log = dir.path("nginx-error.log").display(),
        access = dir.path("nginx-access.log").display(),
    );
    let conf_path = dir.path(&format!("nginx-{port}.conf"));
    std::fs::write(&conf_path, conf).unwrap();
    let mut cmd = Command::new("nginx");
    // -e: the error log nginx opens before reading the config; -p: prefix for any relative path.
    cmd.arg("-p").arg(&dir.0).arg("-e").arg(dir.path("nginx-early.log")).arg("-c").arg(&conf_path);
    let p = Proc::spawn(&format!("nginx :{port}"), cmd, Some(dir.path(&format!("nginx-{port}.stderr"))));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_port(addr, Duration::from_secs(10));
    (p, addr)
}

#[test]
fn our_edge_pulls_from_nginx_rtmp_origin() {
    let _g = serial();
    let dir = TempDir::new("nginx-origin");
    let (_nginx, addr) = nginx(&dir, free_port(), "");
    let _pub = publish(&dir, &format!("rtmp://{addr}/live/test"), &[]);
    let edge = Relay::edge(&dir, &[addr], &[]);
    // nginx has no API: wait until it serves the stream.
    wait_for("nginx to have the stream", Duration::from_secs(15), || {
        let s = probe_quiet(&format!("rtmp://{addr}/live/test"));
        s.contains(&"h264:640x360".to_string()).then_some(())
    });
    assert_h264_aac(&edge.url("test"));
    let e = stream_entry(edge.api, "live", "test").unwrap();
    assert_eq!(e["source"]["peer"], format!("rtmp://{addr}/live"));
    // And players on our edge keep getting live frames from nginx (more than the GOP cache holds).
    let (ok, out, err) = run_limited(ffmpeg_player(&edge.url("test"), 120), Duration::from_secs(30));
    assert!(ok && progress_frames(&out) >= 120, "player via nginx origin: {err} {out}");
    assert_eq!(metric(edge.api, "relay_protocol_errors_total"), 0.0);
}

#[test]
fn nginx_rtmp_edge_pulls_from_our_origin() {
    let _g = serial();
    let dir = TempDir::new("nginx-edge");
    let origin = Relay::origin(&dir, &[]);
    let _pub = publish(&dir, &origin.url("test"), &[]);
    wait_live(origin.api, "test");
    let (_nginx, addr) = nginx(&dir, free_port(), &format!("pull rtmp://{}/live;", origin.rtmp));
    assert_h264_aac(&format!("rtmp://{addr}/live/test"));
    let url = format!("rtmp://{addr}/live/test");
    let player = std::thread::spawn(move || run_limited(ffmpeg_player(&url, 120), Duration::from_secs(30)));
    // While a player watches nginx, nginx's pull shows up at our origin as one player (nginx pulls on demand).
    wait_for("nginx's pull to play from our origin", Duration::from_secs(10), || {
        stream_entry(origin.api, "live", "test").filter(|s| s["players"] == 1)
    });
    let (ok, out, err) = player.join().unwrap();
    assert!(ok && progress_frames(&out) >= 120, "player via nginx edge: {err} {out}");
    assert_eq!(metric(origin.api, "relay_protocol_errors_total"), 0.0);
}

/// Like `probe`, but an error (stream not there yet) is an empty list instead of a failure.
fn probe_quiet(url: &str) -> Vec<String> {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", url]);
    let (_, out, _) = run_limited(cmd, Duration::from_secs(5));
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            if f.len() == 3 {
                format!("{}:{}x{}", f[0], f[1], f[2])
            } else {
                f[0].to_string()
            }
        })
        .collect()
}
