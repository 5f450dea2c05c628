//! `cargo xtask bench vip`: HTTP requests per second from a client namespace, with wrk, through lbd's VIP (native
//! XDP, direct routing) beside the same two nginx reals reached directly (one real), through nftables DNAT and
//! through HAProxy (mode tcp) on the same LB namespace, keep-alive and one connection per request, alternating the
//! targets over several passes in one run; prints medians and the ratios to lbd.
use lb_lab::{real_ip, LB_IP};
use lb_tests::{LabOptions, LbLab, Mode, VIP};
use std::collections::BTreeMap;

const NFT_VIP: &str = "10.99.0.200";
const HAPROXY_VIP: &str = "10.99.0.201";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// wrk's requests/s against `url`.
fn wrk(l: &LbLab, url: &str, secs: u64, close: bool) -> f64 {
    let mut args = vec!["wrk", "-t1", "-c50"];
    let d = format!("-d{secs}s");
    args.push(&d);
    if close {
        args.extend_from_slice(&["-H", "Connection: close"]);
    }
    args.push(url);
    let out = l.lab.exec_status(&l.lab.client(), &args).expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text.lines().find_map(|l| l.strip_prefix("Requests/sec:")).and_then(|v| v.trim().parse().ok());
    if text.contains("Non-2xx") || text.contains("Socket errors") && !close {
        eprintln!("wrk against {url} reported errors:\n{text}");
    }
    rps.unwrap_or_else(|| panic!("wrk against {url} gave no rate:\n{text}{}", String::from_utf8_lossy(&out.stderr)))
}

fn main() {
    lb_tests::require_root();
    let secs = arg("--secs", 5);
    let passes = arg("--passes", 3);
    let mut l = LbLab::with_options(Mode::Native, &LabOptions { reals: 2, vip_on_lb: true }).expect("lab");
    let lb = l.lab.lb();
    let dir = l.lab.dir.clone();
    // Many short connections: wide port ranges and TIME_WAIT reuse everywhere (NOTES.md).
    for ns in [l.lab.client(), lb.clone(), l.lab.real(0), l.lab.real(1)] {
        // Timestamps without per-connection offsets (2): a real then accepts a new SYN on a tuple it still holds in
        // TIME_WAIT (the timestamp is newer), which masquerade and HAProxy reuse within the real's 60 s.
        for kv in ["net.ipv4.ip_local_port_range=1024 65000", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.tcp_timestamps=2"] {
            let _ = l.lab.exec(&ns, &["sysctl", "-q", "-w", kv]);
        }
    }
    // nginx on each real, keep-alive, on every address (the VIP on lo included).
    for i in 0..2 {
        let conf = dir.join(format!("nginx-r{i}.conf"));
        std::fs::write(
            &conf,
            format!(
                "worker_processes 1;\npid {d}/nginx-r{i}.pid;\nerror_log {d}/nginx-r{i}.err;\nevents {{ worker_connections 4096; }}\n\
                 http {{ access_log off; keepalive_requests 1000000; server {{ listen 80 reuseport; \
                 location / {{ return 200 \"r{i}\\n\"; }} }} }}\n",
                d = dir.display()
            ),
        )
        .unwrap();
        // The lab's lab-httpd holds port 80: stop it first, by the pid the lab started it with (never by name).
        let ns = l.lab.real(i);
        let httpd = l.lab.pid_of(&format!("httpd-r{}.log", i + 1)).expect("the lab's lab-httpd on this real");
        l.lab.stop(httpd, libc::SIGTERM).expect("stopping lab-httpd");
        l.lab
            .spawn(&ns, &format!("nginx-r{i}.log"), &["nginx", "-c", conf.to_str().unwrap(), "-g", "daemon off;"])
            .unwrap();
        l.lab.wait_port(&ns, &real_ip(i), 80).unwrap();
    }
    let cfg = l.write_config(&[0, 1]).unwrap();
    l.start_lbd(&["--config", &cfg]).expect("lbd");
    // nftables DNAT and HAProxy on the LB, each on an address of its own (the kernel path: lbd passes them).
    for vip in [NFT_VIP, HAPROXY_VIP] {
        l.lab.ip(&lb, &["addr", "add", &format!("{vip}/32"), "dev", "eth0"]).unwrap();
    }
    l.lab.exec(&lb, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]).unwrap();
    let (r1, r2) = (real_ip(0), real_ip(1));
    let nft = format!(
        "table ip lbbench {{\n chain pre {{\n  type nat hook prerouting priority dstnat;\n  ip daddr {NFT_VIP} tcp dport 80 \
         dnat to numgen inc mod 2 map {{ 0 : {r1}, 1 : {r2} }}\n }}\n chain post {{\n  type nat hook postrouting priority \
         srcnat;\n  ip daddr {{ {r1}, {r2} }} tcp dport 80 masquerade\n }}\n}}\n"
    );
    let nft_file = dir.join("bench.nft");
    std::fs::write(&nft_file, nft).unwrap();
    l.lab.exec(&lb, &["nft", "-f", nft_file.to_str().unwrap()]).expect("nft");
    // nftables and HAProxy keep a conntrack entry per connection (HAProxy two), each held 120 s in TIME_WAIT: at
    // 10-20k connections/s the shared table (nf_conntrack_max) fills and later passes of those peers decay (measured:
    // HAProxy 11k -> 2.6k req/s). The LB namespace's own timeout (a per-namespace sysctl) avoids that; the port reuse
    // it allows is accepted by the reals thanks to tcp_timestamps=2 above.
    l.lab.exec(&lb, &["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1"]).expect("sysctl");
    let hap = dir.join("haproxy.cfg");
    std::fs::write(
        &hap,
        format!(
            "global\n  maxconn 4000\n  nbthread 1\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  \
             timeout server 30s\nfrontend f\n  bind {HAPROXY_VIP}:80\n  default_backend b\nbackend b\n  balance roundrobin\n  \
             server r1 {r1}:80\n  server r2 {r2}:80\n"
        ),
    )
    .unwrap();
    l.lab.spawn(&lb, "haproxy.log", &["haproxy", "-db", "-f", hap.to_str().unwrap()]).unwrap();
    l.lab.wait_port(&l.lab.client(), HAPROXY_VIP, 80).unwrap();
    let _ = LB_IP;
    let targets = [
        ("lbd VIP (XDP, DR)", format!("http://{VIP}/")),
        ("direct to one real", format!("http://{r1}/")),
        ("nftables DNAT", format!("http://{NFT_VIP}/")),
        ("HAProxy mode tcp", format!("http://{HAPROXY_VIP}/")),
    ];
    let mut results: BTreeMap<(bool, usize), Vec<f64>> = BTreeMap::new();
    for pass in 0..passes {
        for close in [false, true] {
            // A different target leads each pass, so none always runs right after the same other one.
            for k in 0..targets.len() {
                let i = (k + pass as usize) % targets.len();
                let (name, url) = &targets[i];
                let rps = wrk(&l, url, secs, close);
                eprintln!(
                    "pass {}: {name} {}: {rps:.0} req/s",
                    pass + 1,
                    if close { "new connections" } else { "keep-alive" }
                );
                results.entry((close, i)).or_default().push(rps);
            }
        }
    }
    println!(
        "wrk -t1 -c50 -d{secs}s from the client namespace, medians of {passes} passes (req/s; ratio = lbd / target)"
    );
    for close in [false, true] {
        println!("{}:", if close { "new connection per request" } else { "keep-alive" });
        let med = |v: &Vec<f64>| {
            let mut v = v.clone();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        let ours = med(&results[&(close, 0)]);
        for (i, (name, _)) in targets.iter().enumerate() {
            let m = med(&results[&(close, i)]);
            println!("  {name:<22} {m:>10.0} req/s   lbd/this {:.2}", ours / m);
        }
    }
}
