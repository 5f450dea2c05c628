//! The demo of `cargo xtask run`: the whole cluster in network namespaces (a client, the LB running lbd and the
//! stream manager, a camera, an origin group of two, three edges behind the VIP), left running until Ctrl-C. With
//! `--ha`, the stream manager is two smd (hosts m1, m2) on a three-member etcd (hosts etcd1-etcd3) instead.
use anyhow::{Context, Result};
use lb_lab::{real_ip, Lab, LabOptions, VIP, VIP6};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn run(bins: &Path, ha: bool) -> Result<()> {
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
    // The streaming cluster: a camera (RTMP, fed by ffmpeg), an origin group (o1 active, o2 standby) ingesting it,
    // an edge on every real registering with the stream manager, which puts them into the LB. The manager's
    // timings are an operator's defaults, shortened so a failover is seen within seconds.
    let mut cluster = lb_lab::cluster::Cluster::new(
        &lab,
        lb_lab::cluster::Options {
            failover_time: "5s",
            keepalive: "1s",
            // The three edges are always on; load through the VIP starts up to two more through the namespace
            // provider (scripts/providers/netns-edge), stopped again a minute after the load is gone.
            scale: Some(lb_lab::cluster::ScaleOptions {
                min: 3,
                max: 5,
                capacity: 3_000_000,
                scale_out_at: 0.7,
                scale_in_at: 0.3,
                cooldown: "10s",
                warm_up: "30s",
                min_lifetime: "60s",
                provider: None,
                provider_timeout: "30s",
            }),
            // Two smd on etcd; the leader's lease is etcd's usual 5 s: a follower leads within it.
            ha: ha.then_some(lb_lab::cluster::HaOptions { managers: 2, lease_ttl: "5s" }),
            ..Default::default()
        },
    )?;
    let config = lab.dir.join("lb.toml");
    // The web service on VIP:80 (v4 and v6) is static; VIP:1935 and VIP:8080 start empty and the manager fills them.
    let mut cfg = lb_lab::cluster::Cluster::lbd_config();
    cfg.push_str(&format!("[[service]]\nvip = \"{VIP}:80\"\nproto = \"tcp\"\n[service.check]\nkind = \"http\"\n"));
    for i in 0..3 {
        cfg.push_str(&format!("[[service.real]]\naddr = \"{}\"\nweight = 1\n", real_ip(i)));
    }
    cfg.push_str(&format!("[[service]]\nvip = \"[{VIP6}]:80\"\n[service.check]\nkind = \"http\"\n"));
    for i in 0..3 {
        cfg.push_str(&format!("[[service.real]]\naddr = \"{}\"\n", lb_lab::real_ip6(i)));
    }
    std::fs::write(&config, cfg)?;
    let sock = lab.dir.join("lbd.sock");
    let state = lab.dir.join("state.toml");
    let lbd = bins.join("lbd");
    let lb = lab.lb();
    let mut args: Vec<String> = [
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
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(cluster.lbd_api_flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let pid = lab.spawn_ready(&lb, "lbd.log", &args, "lbd ready", Duration::from_secs(30))?;
    cluster.start(&mut lab)?;
    // The console, reachable from the host's own browser through a loopback forward into the LB namespace (in
    // high availability into m1's: every smd serves it).
    let (console_ns, console_ip, console_host) = match ha {
        false => (lab.lb(), lb_lab::LB_IP.to_string(), "the LB"),
        true => (cluster.smd_ns(&lab, 0), lb_lab::cluster::smd_ip(0), "m1's"),
    };
    let console_at = format!("{console_ip}:{}", lb_lab::cluster::MANAGER_PORT).parse()?;
    let console = match lb_lab::forward("127.0.0.1:9300".parse()?, &console_ns, console_at) {
        Ok(()) => format!("http://127.0.0.1:9300/ (forwarded to http://{console_at}/ in {console_host} namespace)"),
        Err(e) => format!("http://{console_at}/ from the client namespace (no host forward: {e:#})"),
    };
    let lbctl = bins.join("lbctl");
    let smctl = bins.join("smctl");
    let token = cluster.token_file.display().to_string();
    let sm = format!(
        "{} --api http://{}:{} --token-file {token}",
        smctl.display(),
        if ha { lb_lab::cluster::smd_ip(0) } else { lb_lab::LB_IP.to_string() },
        lb_lab::cluster::MANAGER_PORT
    );
    // What relays are given as --manager: the LB host's smd, or every smd.
    let managers = match ha {
        false => format!("http://{}:{}", lb_lab::LB_IP, lb_lab::cluster::MANAGER_PORT),
        true => (0..cluster.smd_pids.len()).map(lb_lab::cluster::smd_url).collect::<Vec<_>>().join(","),
    };
    let manager_hosts = match ha {
        false => format!("the stream manager (smd, API {}:{})", lb_lab::LB_IP, lb_lab::cluster::MANAGER_PORT),
        true => format!(
            "no stream manager (two smd run on hosts m1 ({}) and m2 ({}), on etcd at {})",
            lb_lab::cluster::smd_ip(0),
            lb_lab::cluster::smd_ip(1),
            lb_lab::etcd::endpoints().join(" ")
        ),
    };
    let o1 = lab.ns("o1");
    println!(
        "
Demo cluster is up (namespaces {prefix}*):
  client {client}; LB {lb}: lbd on eth0 (native XDP) and {manager_hosts};
  camera {cam} ({camip}, ffmpeg publishing live/cam1); origin group \"cams\": o1 ({o1ip}, priority 100, active) and
  o2 ({o2ip}, 50, standby), failback on, failover time 5 s; edges e1-e3 on the reals {a}, {b}, {c}.
The manager makes the active origin pull the camera, every edge pre-pull what it ingests, and puts the edges into
VIP {VIP}:1935 (RTMP) and {VIP}:8080 (HLS and LL-HLS, HTTP-FLV, RTMPT). {VIP}:80 and [{VIP6}]:80 serve the reals' web
pages.

Console (status, graphs, events; maintenance buttons once you paste the token from {token}):
  {console}
  lbd's own: ip netns exec {client} curl http://{lbip}:9400/console
Publish your own stream to the group's ingest address (it follows the active origin), then play it:
  ip netns exec {client} ffmpeg -re -f lavfi -i testsrc2=size=640x360:rate=30 -c:v libx264 -preset ultrafast -g 60 -f flv rtmp://{ingest}/live/mine
  ip netns exec {client} ffprobe -v error -show_entries stream=codec_name -of compact rtmp://{VIP}/live/mine
Watch (from another terminal):
  ip netns exec {client} ffprobe -v error -show_entries stream=codec_name,width,height -of compact rtmp://{VIP}/live/cam1
  ip netns exec {client} ffplay rtmp://{VIP}/live/cam1                 # with a display
  ip netns exec {client} ffmpeg -i rtmp://{VIP}/live/cam1 -f null -     # a player that prints its progress
  ip netns exec {client} ffprobe -v error -show_entries stream=codec_name -of compact http://{VIP}:8080/live/cam1.flv
In a browser (hls.js, Low-Latency HLS; ?ll=0 for plain HLS), or ffplay, from the client namespace:
  http://{VIP}:8080/live/cam1/play.html     e.g. ip netns exec {client} chromium --no-sandbox http://{VIP}:8080/live/cam1/play.html
  ip netns exec {client} ffplay http://{VIP}:8080/live/cam1/index.m3u8
  node tests/browser/play.mjs --url http://{VIP}:8080/live/cam1/play.html --secs 10 --screenshot /tmp/hls.png   # headless, under ip netns exec {client}
  ip netns exec {lb} {sm} nodes
  ip netns exec {lb} {sm} groups
  ip netns exec {lb} {sm} streams
  ip netns exec {lb} {sm} events
  ip netns exec {lb} {sm} alarms
  {lbctl} --socket {sock} list
Fail the active origin and watch o2 take the group (players keep playing), then bring o1 back (failback):
  kill -9 $(ip netns pids {o1} | head -1)     # or: ip netns pids {o1} | xargs kill -9
  ip netns exec {lb} {sm} events
  ip netns exec {o1} {relay} origin --listen 0.0.0.0:1935 --api {o1ip}:8081 --api-token $(cat {token}) \\
      --manager {managers} --node-name o1 --advertise {o1ip} &
Autoscaling: the pool \"edges\" (3 always-on, max 5, 3 Mbit/s per edge, out at 70%, in at 30%, lifetime 60 s).
Load it with twelve players (about 16 Mbit/s) and watch edges-1 and edges-2 start, register and take players;
stop the players and watch them drained and stopped after their minimum lifetime:
  for i in $(seq 12); do ip netns exec {client} ffmpeg -nostdin -loglevel error -i rtmp://{VIP}/live/cam1 -c copy -f null - & done
  watch ip netns exec {lb} {sm} pools
  ip netns exec {lb} {sm} events --kind scale-out
  kill $(jobs -p)
  ip netns exec {lb} {sm} pool-start edges      # a manual start ahead of a known peak
Put an edge into maintenance (drained in the LB, its players continue, it leaves the LB when empty), and back:
  ip netns exec {lb} {sm} maintenance e1
  ip netns exec {lb} {sm} resume e1
Logs: {dir}/*.log (lbd.log, {smd_logs}, origin1-1.log, edge1.log, ...)
{ha_text}
Ctrl-C removes everything.",
        prefix = lab.prefix,
        ingest = lb_lab::cluster::INGEST_VIP,
        client = lab.client(),
        lb = lab.lb(),
        cam = lab.ns("cam"),
        camip = lb_lab::cluster::CAMERA_IP,
        o1ip = lb_lab::cluster::origin_ip(0),
        o2ip = lb_lab::cluster::origin_ip(1),
        lbip = lb_lab::LB_IP,
        a = real_ip(0),
        b = real_ip(1),
        c = real_ip(2),
        lbctl = lbctl.display(),
        relay = bins.join("relay").display(),
        sock = sock.display(),
        dir = lab.dir.display(),
        smd_logs = if ha { "smd-m1-1.log, smd-m2-1.log, etcd-1-1.log" } else { "smd-1.log" },
        ha_text = if ha { ha_text(&lab, &cluster, bins)? } else { String::new() },
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

/// The demo's lines about high availability: who leads, how to kill it, watch the takeover and bring it back.
fn ha_text(lab: &Lab, cluster: &lb_lab::cluster::Cluster, bins: &Path) -> Result<String> {
    use lb_lab::cluster::smd_url;
    let leader = cluster.leader(lab).context("no smd leads")?;
    let follower = 1 - leader;
    let pid = cluster.smd_pids[leader].context("the leader is not running")?;
    let lb = lab.lb();
    let auth = format!("-H \"Authorization: Bearer $(cat {})\"", cluster.token_file.display());
    let etcd = cluster.etcd.as_ref().context("no etcd")?;
    let e1 = etcd.pid(0).map(|p| p.to_string()).unwrap_or_default();
    Ok(format!(
        "
High availability: m{l} ({lurl}) leads, m{f} ({furl}) follows (serves reads and the console, forwards writes).
Every relay names both (--manager {both}); the smctl lines above ask m1: after killing m1, give smctl
--api {m2url} instead. Ask any smd who leads:
  ip netns exec {lb} curl -s {auth} {furl}/api/v1/leader
Kill the leader (SIGKILL, pid {pid}) and watch m{f} lead within the lease (5 s), nothing moving in the cluster:
  kill -9 {pid}         # or: ip netns exec {lns} kill -9 {pid}
  watch -n 0.5 'ip netns exec {lb} curl -s {auth} {furl}/api/v1/leader'
  ip netns exec {lb} {smctl} --api {furl} --token-file {token} events --kind leader-elected
Bring it back (it follows the new leader):
  ip netns exec {lns} {smd} --config {lcfg} &
etcd: three members (etcd1-etcd3); one down changes nothing, all down keeps the data plane running and raises
store-unreachable on every smd until etcd returns. Kill one (pid {e1}), and read the store:
  kill -9 {e1}
  ip netns exec {e1ns} etcdctl --endpoints={eps} endpoint status -w table
",
        l = leader + 1,
        f = follower + 1,
        lurl = smd_url(leader),
        m2url = smd_url(1),
        furl = smd_url(follower),
        both = (0..cluster.smd_pids.len()).map(smd_url).collect::<Vec<_>>().join(","),
        lns = cluster.smd_ns(lab, leader),
        smctl = bins.join("smctl").display(),
        smd = bins.join("smd").display(),
        token = cluster.token_file.display(),
        lcfg = cluster.smd_configs[leader].display(),
        e1ns = lb_lab::etcd::Etcd::ns(lab, 0),
        eps = lb_lab::etcd::endpoints().join(","),
    ))
}
