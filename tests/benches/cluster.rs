//! `cargo xtask bench cluster`: the stream manager's figures on the lab cluster (lbd, two origins in a group with
//! failback, three edges, players through the VIP): ingest to every edge pulling, origin death (SIGKILL) to
//! players receiving frames again, and the failback gap. Each figure is the median of several rounds.
use lb_lab::cluster::{median, origin_ip, Cluster, Options, Players};
use lb_lab::{real_ip, VIP};
use lb_tests::{cluster_lab, context, require_root};
use std::time::{Duration, Instant};

fn main() {
    require_root();
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5);
    let opts = Options { failover_time: "3s", keepalive: "1s", ..Default::default() };
    let (mut l, mut c) = cluster_lab(opts);
    let lab = &mut l.lab;
    context(
        Cluster::wait("the group up and pulled by every edge", Duration::from_secs(30), || {
            c.active(lab).as_deref() == Some("o1") && (0..3).all(|i| c.edge_pulls_from(lab, i, "cam1", &origin_ip(0)))
        }),
        "group",
    );

    // Ingest -> every edge pulling (pre-pull), from the origin's first report of the stream.
    let mut replication = Vec::new();
    for r in 0..rounds {
        let key = format!("push{r}");
        let url = format!("rtmp://{}:1935/live/{key}", origin_ip(0));
        let args: Vec<&str> = lb_lab::FFMPEG_PUBLISH.iter().copied().chain([url.as_str()]).collect();
        let pid = lab.spawn(&lab.client(), &format!("push{r}.log"), &args).unwrap();
        context(
            Cluster::wait("the origin ingests", Duration::from_secs(15), || {
                c.relay_status(lab, &origin_ip(0)).is_ok_and(|s| {
                    s["streams"]
                        .as_array()
                        .is_some_and(|v| v.iter().any(|x| x["key"] == key.as_str() && !x["source"].is_null()))
                })
            }),
            "ingest",
        );
        let t = context(
            Cluster::wait("every edge pulls", Duration::from_secs(10), || {
                (0..3).all(|i| c.edge_pulls_from(lab, i, &key, &origin_ip(0)))
            }),
            "replication",
        );
        replication.push(t);
        lab.stop(pid, libc::SIGTERM).unwrap();
    }

    let players = context(Players::start(lab, &format!("rtmp://{VIP}/live/cam1"), 6, "p"), "players");
    context(players.wait_growth(&[0; 6], 100_000, Duration::from_secs(20)), "players playing");
    let (mut failover, mut failback) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let stalls = players.longest_stall(Duration::from_secs(10), || c.kill_origin(lab, 0).unwrap());
        failover.extend(stalls);
        let stalls = players.longest_stall(Duration::from_secs(12), || {
            c.start_origin(lab, 0).unwrap();
        });
        failback.extend(stalls);
        context(
            Cluster::wait("failback complete", Duration::from_secs(15), || {
                c.active(lab).as_deref() == Some("o1")
                    && (0..3).all(|i| c.edge_pulls_from(lab, i, "cam1", &origin_ip(0)))
            }),
            "failback",
        );
        // Let the handover settle (the standby's source stops) before the next round.
        context(
            Cluster::wait("o2 stops ingesting after the handover", Duration::from_secs(10), || {
                c.relay_status(lab, &origin_ip(1)).is_ok_and(|s| {
                    s["streams"]
                        .as_array()
                        .is_some_and(|v| !v.iter().any(|x| x["key"] == "cam1" && !x["source"].is_null()))
                })
            }),
            "standby released",
        );
        println!(
            "round {}: failover worst {:?}, failback worst {:?}",
            r + 1,
            failover.iter().max(),
            failback.iter().max()
        );
    }
    let alive = players.pids.iter().filter(|p| lab.alive(**p)).count();
    let t = Instant::now();
    players.stop(lab);
    let _ = t;
    println!(
        "\nstream manager figures, {rounds} rounds, failover_time 3s, keepalive 1s, 3 edges ({}, {}, {}):",
        real_ip(0),
        real_ip(1),
        real_ip(2)
    );
    println!(
        "  ingest -> all edges pulling (pre-pull):      median {:?}  max {:?}",
        median(&mut replication.clone()),
        replication.iter().max().unwrap()
    );
    println!(
        "  origin SIGKILL -> players receive again:     median {:?}  max {:?}  ({} player-rounds)",
        median(&mut failover.clone()),
        failover.iter().max().unwrap(),
        failover.len()
    );
    println!(
        "  failback gap (longest stall per player):    median {:?}  max {:?}",
        median(&mut failback.clone()),
        failback.iter().max().unwrap()
    );
    println!("  players still connected at the end:          {alive} of {}", players.pids.len());
}
