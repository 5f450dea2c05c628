//! Edge autoscaling in the lab: two always-on edges (pool min 2, max 4), the namespace provider
//! (scripts/providers/netns-edge) and ffmpeg players through the VIP. Load past the threshold starts edges that
//! register, pull and take players through the VIP, up to max and no further; when the load goes, started edges
//! are drained and stopped after their minimum lifetime, never below min and never with a player on them. A
//! failing and a hanging provider raise alarms and back off without starting anything.
use lb_lab::cluster::{origin_ip, scaled_edge_ip, Cluster, Options, Players, ScaleOptions};
use lb_tests::*;
use std::time::Duration;

fn scale(provider: Option<std::path::PathBuf>) -> Options {
    Options {
        edges: 2,
        scale: Some(ScaleOptions {
            min: 2,
            max: 4,
            // About two players' worth of the lab's test picture (1.3 Mbit/s each).
            capacity: 2_000_000,
            scale_out_at: 0.7,
            scale_in_at: 0.3,
            cooldown: "3s",
            warm_up: "20s",
            min_lifetime: "15s",
            provider,
            provider_timeout: "3s",
        }),
        ..Default::default()
    }
}

fn pool(c: &Cluster, lab: &lb_lab::Lab) -> serde_json::Value {
    c.manager(lab, "pools").map(|v| v[0].clone()).unwrap_or_default()
}

fn edges(p: &serde_json::Value) -> usize {
    p["edges"].as_array().map_or(0, Vec::len)
        + p["starting"]
            .as_array()
            .map_or(0, |s| s.iter().filter(|n| !p["edges"].as_array().unwrap().contains(n)).count())
}

/// The newest event of `kind` whose message contains `part`.
fn last_event(c: &Cluster, lab: &lb_lab::Lab, kind: &str, part: &str) -> serde_json::Value {
    let all = c.manager(lab, &format!("events?kind={kind}")).unwrap();
    let found = all.as_array().unwrap().iter().rev().find(|e| e["message"].as_str().is_some_and(|m| m.contains(part)));
    found.cloned().unwrap_or_else(|| panic!("no {kind} event with {part:?}: {all}"))
}

/// How long to watch so that the pool's cooldown (3 s) since its last scaling event has passed and `rounds`
/// manager rounds (keepalive 1 s) follow: the window in which a wrong decision would show.
fn until_cooled(c: &Cluster, lab: &lb_lab::Lab, rounds: u64) -> Duration {
    let last = ["scale-out", "scale-in"]
        .iter()
        .flat_map(|k| c.manager(lab, &format!("events?kind={k}")).unwrap().as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["time_ms"].as_u64())
        .max()
        .unwrap_or(0);
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let cooled_in = Duration::from_millis((last + 3_000).saturating_sub(now_ms));
    cooled_in + Duration::from_secs(rounds)
}

#[test]
fn load_through_the_vip_scales_the_pool_out_to_max_and_back_to_min() {
    require_root();
    let (mut l, c) = cluster_lab(scale(None));
    let lab = &mut l.lab;
    Cluster::wait("the group up and both edges pulling", Duration::from_secs(30), || {
        c.active(lab).as_deref() == Some("o1") && (0..2).all(|i| c.edge_pulls_from(lab, i, "cam1", &origin_ip(0)))
    })
    .unwrap();
    assert_eq!(edges(&pool(&c, lab)), 2);

    // Three players: 3 x 1.3 Mbit/s on 2 x 2 Mbit/s is past 70%: a third edge starts, registers, joins the LB.
    let url = format!("rtmp://{VIP}/live/cam1");
    let first = Players::start(lab, &url, 3, "a").unwrap();
    first.wait_growth(&[0; 3], 50_000, Duration::from_secs(20)).unwrap();
    let t = Cluster::wait("edges-1 up in the pool", Duration::from_secs(40), || {
        c.manager(lab, "nodes/edges-1").is_ok_and(|n| n["state"] == "up")
    })
    .unwrap();
    let out = c.manager(lab, "events?kind=scale-out&last=5").unwrap();
    assert!(
        out.as_array().unwrap().iter().any(|e| e["message"]
            .as_str()
            .unwrap()
            .contains("of 2 edges x 2.0 Mbit/s (threshold 70%): starting edges-1")),
        "the decision says why: {out}"
    );
    println!("edges-1 up {t:?} after the load started");
    // New players through the VIP reach the new edge.
    let mut more = Vec::new();
    let served = Cluster::wait("a new player on edges-1 through the VIP", Duration::from_secs(60), || {
        if c.relay_status(lab, &scaled_edge_ip(0)).is_ok_and(|s| s["players"].as_u64().unwrap_or(0) > 0) {
            return true;
        }
        if more.len() < 8 {
            more.push(Players::start(lab, &url, 1, &format!("b{}", more.len())).unwrap());
        }
        false
    })
    .unwrap();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let decided = out.as_array().unwrap().iter().filter_map(|e| e["time_ms"].as_u64()).min();
    let decided = decided.unwrap_or_else(|| panic!("scale-out events without a time: {out}"));
    assert!(decided <= now_ms, "a scale-out decided in the future ({decided} > {now_ms})");
    println!(
        "figure: threshold crossed (scale-out event) -> a player served by the new edge through the VIP: {} ms ({served:?} after it was up, {} extra players)",
        now_ms - decided,
        more.len()
    );
    // However high the load goes, the pool stops at max (4).
    let many = Players::start(lab, &url, 6, "c").unwrap();
    let mut seen_max = 0;
    let at_max = Cluster::wait("the pool at max with edges-2 up", Duration::from_secs(40), || {
        let n = edges(&pool(&c, lab));
        seen_max = seen_max.max(n);
        assert!(n <= 4, "the pool went past max: {}", pool(&c, lab));
        n == 4 && c.manager(lab, "nodes/edges-2").is_ok_and(|n| n["state"] == "up")
    });
    context(at_max, "scale-out to max");
    assert_eq!(seen_max, 4, "{}", pool(&c, lab));
    // Under load at max the pool neither grows nor shrinks: watched until the cooldown (3 s) since the last
    // start has passed and then for two rounds (keepalive 1 s), so the manager decided with the cooldown over.
    let held = lb_lab::wait::holds_for(until_cooled(&c, lab, 2), "4 edges under load", || edges(&pool(&c, lab)) == 4);
    context(held, "still 4 under load");
    assert_eq!(edges(&pool(&c, lab)), 4, "still 4 under load");

    // Every player is still connected; then the load goes.
    for p in [&first, &many].into_iter().chain(more.iter()) {
        for pid in &p.pids {
            assert!(lab.alive(*pid), "a player was cut while the pool scaled out");
        }
    }
    // A player straight on edges-2 (not through the VIP), then the VIP's players leave and edges-2 is stopped by
    // hand: it is drained, its player goes on to the end, and only then is the edge stopped.
    let direct = Players::start(lab, &format!("rtmp://{}/live/cam1", scaled_edge_ip(1)), 1, "d").unwrap();
    direct.wait_growth(&[0], 50_000, Duration::from_secs(20)).unwrap();
    for p in [&first, &many].into_iter().chain(more.iter()) {
        p.stop(lab);
    }
    let r = c.manager_post(lab, "pools/edges/stop/edges-2").unwrap();
    assert!(r["message"].as_str().unwrap_or("").contains("drained"), "{r}");
    Cluster::wait("edges-2 draining", Duration::from_secs(5), || {
        c.manager(lab, "nodes/edges-2").is_ok_and(|n| n["state"] == "draining")
    })
    .unwrap();
    let before = direct.sizes();
    // A drained edge is stopped in the first round after it reports no player (keepalive 1 s): three rounds
    // watched, failing at once if edges-2 leaves draining or its player goes.
    let kept = lb_lab::wait::holds_for(Duration::from_secs(3), "edges-2 draining with its player", || {
        lab.alive(direct.pids[0]) && c.manager(lab, "nodes/edges-2").is_ok_and(|n| n["state"] == "draining")
    });
    context(kept, "the scale-in cut a player");
    context(direct.wait_growth(&before, 50_000, Duration::from_secs(5)), "the drained edge's player still receives");
    assert!(lab.alive(direct.pids[0]), "the scale-in cut a player");
    assert_eq!(c.manager(lab, "nodes/edges-2").unwrap()["state"], "draining", "stopped with a player on it");
    direct.stop(lab);
    // No started edge is stopped before its min_lifetime (15 s); then they are drained and stopped, down to min.
    let gone = Cluster::wait("the pool back to 2", Duration::from_secs(90), || edges(&pool(&c, lab)) == 2).unwrap();
    println!("pool back at min {gone:?} after the players left");
    let ins = c.manager(lab, "events?kind=scale-in").unwrap();
    assert_eq!(ins.as_array().unwrap().len(), 2, "{ins}");
    let done = c.manager(lab, "events?kind=scale-in-done").unwrap();
    assert_eq!(done.as_array().unwrap().len(), 2, "{done}");
    // At min, a scale-in round finds nothing to stop: two rounds after the cooldown watched.
    let held = lb_lab::wait::holds_for(until_cooled(&c, lab, 2), "2 edges at min", || edges(&pool(&c, lab)) == 2);
    context(held, "never below min");
    assert_eq!(edges(&pool(&c, lab)), 2, "never below min");
    // A manual start ahead of a peak: it starts with no load, counts toward the pool, and is kept for its
    // min_lifetime (15 s) although the load is nil; then scale-in takes it back to min.
    let r = c.manager_post(lab, "pools/edges/start").unwrap();
    assert!(r["message"].as_str().unwrap_or("").contains("starts at the next round"), "{r}");
    let up = Cluster::wait("the manually started edge up", Duration::from_secs(30), || {
        let p = pool(&c, lab);
        edges(&p) == 3 && p["in_service"] == 3
    })
    .unwrap();
    println!("manual start: in service {up:?} after the request");
    let manual = last_event(&c, lab, "scale-out", "manual start: starting ");
    context(
        Cluster::wait("back to min after its lifetime", Duration::from_secs(40), || edges(&pool(&c, lab)) == 2),
        "scale-in of the manual edge",
    );
    // Kept for its min_lifetime (15 s, counted in whole seconds from the start request) by the manager's clock.
    let (started, node) = (manual["time_ms"].as_u64().unwrap(), manual["message"].as_str().unwrap());
    let node = node.split("starting ").nth(1).unwrap().split(' ').next().unwrap();
    let stopped = last_event(&c, lab, "scale-in", &format!("draining {node},"))["time_ms"].as_u64().unwrap();
    assert!(stopped >= started + 14_000, "{node} drained {} ms after its start", stopped.saturating_sub(started));
    // Out of the LB and their namespaces gone.
    let list = lab
        .exec(
            &lab.lb(),
            &[
                "curl",
                "-s",
                "-H",
                &format!("Authorization: Bearer {}", Cluster::TOKEN),
                &format!("http://{}:{}/api/v1/services", lb_lab::LB_IP, lb_lab::cluster::LBD_API_PORT),
            ],
        )
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(!text.contains(&scaled_edge_ip(0)) && !text.contains(&scaled_edge_ip(1)), "{text}");
    let ns = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&ns.stdout).contains(&format!("{}edges-", lab.prefix)));
}

#[test]
fn a_failing_and_a_hanging_provider_raise_alarms_and_back_off() {
    require_root();
    let dir = std::env::temp_dir().join(format!("lbx-providers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hang = dir.join("hang");
    std::fs::write(&hang, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::write(dir.join("fail"), "#!/bin/sh\necho 'quota exceeded' >&2\nexit 3\n").unwrap();
    for f in ["hang", "fail"] {
        std::process::Command::new("chmod").arg("+x").arg(dir.join(f)).status().unwrap();
    }
    for (provider, want) in [(dir.join("fail"), "exit status: 3 quota exceeded"), (hang, "no answer within 3s, killed")]
    {
        let (mut l, c) = cluster_lab(scale(Some(provider.clone())));
        let lab = &mut l.lab;
        Cluster::wait("the cluster up", Duration::from_secs(30), || c.active(lab).as_deref() == Some("o1")).unwrap();
        c.manager_post(lab, "pools/edges/start").unwrap();
        Cluster::wait("the provider alarm", Duration::from_secs(15), || {
            c.manager(lab, "alarms").is_ok_and(|a| {
                a["raised"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x["kind"] == "provider-failed" && x["message"].as_str().unwrap().contains(want))
            })
        })
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", provider.display(), c.manager_log(lab)));
        // No runaway: through the backoff (the cooldown, 3 s) and two rounds after it (keepalive 1 s) at most a
        // retry, never more edges than max; watched, failing at the first third attempt.
        let fails = || c.manager(lab, "events?kind=provider-failed").unwrap().as_array().unwrap().len();
        let calm = lb_lab::wait::holds_for(Duration::from_secs(3 + 2), "at most one retry", || {
            fails() <= 2 && edges(&pool(&c, lab)) == 2
        });
        context(calm, &format!("{}: {}", provider.display(), pool(&c, lab)));
        let fails = fails();
        assert!((1..=2).contains(&fails), "{fails} provider failures");
        assert_eq!(edges(&pool(&c, lab)), 2, "{}", pool(&c, lab));
        // A hanging provider was killed: no `sleep 600` left.
        let left = std::process::Command::new("pgrep").args(["-f", "sleep 600"]).output().unwrap();
        assert!(left.stdout.is_empty(), "the hanging provider still runs");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
