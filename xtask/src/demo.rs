//! The demo lab of `cargo xtask run`: a client, the LB running lbd and three real HTTP servers in network
//! namespaces, left running until Ctrl-C, then removed.
use anyhow::Result;
use lb_lab::{real_ip, Lab, LabOptions, VIP, VIP6};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The origin shares r1's host beside its edge, on its own port.
const ORIGIN_PORT: u16 = 1936;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn run(bins: &Path) -> Result<()> {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    std::env::set_var("LB_BIN_DIR", bins);
    lb_lab::cleanup_stale();
    // lbd puts the VIP on the LB's interface itself (--manage-vips), as an operator would ask it to.
    let mut lab = Lab::up(&LabOptions { reals: 3, vip_on_lb: false })?;
    lab.start_http(80)?;
    let sw = lab.switch();
    let pass = bins.join("lb-xdp-pass");
    lab.spawn_ready(
        &sw,
        "xdp-pass.log",
        &[pass.to_str().unwrap(), "--iface", "vlb"],
        "attached",
        Duration::from_secs(10),
    )?;
    // The streaming path: an RTMP origin beside r1's edge, an edge on every real, a publisher in the client.
    let relay = bins.join("relay");
    let relay = relay.to_str().unwrap();
    let origin_url = format!("rtmp://{}:{ORIGIN_PORT}/live", real_ip(0));
    let r1 = lab.real(0);
    lab.spawn(
        &r1,
        "origin.log",
        &[relay, "origin", "--listen", &format!("0.0.0.0:{ORIGIN_PORT}"), "--api", "127.0.0.1:8081"],
    )?;
    lab.wait_port(&r1, &real_ip(0), ORIGIN_PORT)?;
    for i in 0..3 {
        let ns = lab.real(i);
        lab.spawn(
            &ns,
            &format!("edge{}.log", i + 1),
            &[
                relay,
                "edge",
                "--listen",
                "0.0.0.0:1935",
                "--origin",
                &origin_url,
                "--api",
                "127.0.0.1:8082",
                "--http-listen",
                "0.0.0.0:8080",
            ],
        )?;
        lab.wait_port(&ns, &real_ip(i), 1935)?;
    }
    let client = lab.client();
    let publish = format!("{origin_url}/test");
    let publisher: Vec<&str> = lb_lab::FFMPEG_PUBLISH.iter().copied().chain([publish.as_str()]).collect();
    lab.spawn(&client, "publisher.log", &publisher)?;
    let config = lab.dir.join("lb.toml");
    let mut cfg = String::new();
    for (port, check) in [(80, "http"), (1935, "rtmp")] {
        cfg.push_str(&format!(
            "[[service]]\nvip = \"{VIP}:{port}\"\nproto = \"tcp\"\n[service.check]\nkind = \"{check}\"\n"
        ));
        for i in 0..3 {
            cfg.push_str(&format!("[[service.real]]\naddr = \"{}\"\nweight = 1\n", real_ip(i)));
        }
    }
    // HTTP-FLV and RTMPT from the edges' media port; persistent, since an RTMPT session spans several connections.
    cfg.push_str(&format!(
        "[[service]]\nvip = \"{VIP}:8080\"\npersistent = 60\n[service.check]\nkind = \"http\"\npath = \"/healthz\"\n"
    ));
    for i in 0..3 {
        cfg.push_str(&format!("[[service.real]]\naddr = \"{}\"\n", real_ip(i)));
    }
    // The same web service over IPv6, on the same reals: one LB, both families.
    cfg.push_str(&format!("[[service]]\nvip = \"[{VIP6}]:80\"\n[service.check]\nkind = \"http\"\n"));
    for i in 0..3 {
        cfg.push_str(&format!("[[service.real]]\naddr = \"{}\"\n", lb_lab::real_ip6(i)));
    }
    std::fs::write(&config, cfg)?;
    let sock = lab.dir.join("lbd.sock");
    let state = lab.dir.join("state.toml");
    let lbd = bins.join("lbd");
    let lb = lab.lb();
    let pid = lab.spawn_ready(
        &lb,
        "lbd.log",
        &[
            lbd.to_str().unwrap(),
            "--iface",
            "eth0",
            "--config",
            config.to_str().unwrap(),
            "--socket",
            sock.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--manage-vips",
            "--conn-table-size",
            "262144",
        ],
        "lbd ready",
        Duration::from_secs(30),
    )?;
    let lbctl = bins.join("lbctl");
    println!(
        "
Demo lab is up (namespaces {prefix}*): client {client}, LB {lb} running lbd on eth0 (native XDP), reals {r1}, {r2}, {r3}.
VIP {VIP}:80 and {VIP}:1935 are balanced by direct routing to {a}, {b}, {c}: each real answers HTTP with its
name and runs an RTMP edge that pulls from the origin at {origin_url}, where ffmpeg in the client publishes live/test.
{VIP}:8080 serves HTTP-FLV and RTMPT from the edges (a persistent service), [{VIP6}]:80 the web over IPv6.

Try it from another terminal:
  ip netns exec {client} curl http://{VIP}/
  ip netns exec {client} curl -6 http://[{VIP6}]/
  for i in $(seq 20); do ip netns exec {client} curl -s http://{VIP}/; done | sort | uniq -c
  ip netns exec {client} ffprobe -v error -show_entries stream=codec_name,width,height -of compact rtmp://{VIP}/live/test
  ip netns exec {client} ffplay rtmp://{VIP}/live/test        # with a display
  ip netns exec {client} ffprobe -v error -show_entries stream=codec_name -of compact http://{VIP}:8080/live/test.flv
  ip netns exec {client} ffprobe -v error -show_entries stream=codec_name -of compact rtmpt://{VIP}:8080/live/test
  ip netns exec {r1} curl -s http://127.0.0.1:8082/streams     # what the edge on r1 serves (API on loopback)
  {lbctl} --socket {sock} list
  {lbctl} --socket {sock} del-real {VIP}:80 {a}
  {lbctl} --socket {sock} add-real {VIP}:80 {a} --weight 2
  {lbctl} --socket {sock} stats
lbd's log: {log}

Ctrl-C removes everything.",
        prefix = lab.prefix,
        r1 = lab.real(0),
        r2 = lab.real(1),
        r3 = lab.real(2),
        a = real_ip(0),
        b = real_ip(1),
        c = real_ip(2),
        lbctl = lbctl.display(),
        sock = sock.display(),
        log = lab.dir.join("lbd.log").display(),
    );
    while !STOP.load(Ordering::SeqCst) {
        if !lab.alive(pid) {
            eprintln!("lbd exited:\n{}", lab.log("lbd.log"));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("\nremoving the demo lab");
    drop(lab);
    Ok(())
}
