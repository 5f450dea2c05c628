//! The stream manager in high availability: two smd on a three-member etcd beside the lab's cluster (lbd, a camera,
//! two origins, three edges). A killed leader is replaced within the lease with nothing moved, even when the active
//! origin dies with it under ten players; a leader cut from etcd stops leading before another leads and no command
//! of its term lands after the new leader's; one etcd member down changes nothing; all three down for 30 s leave
//! the players playing, raise store-unreachable on every smd, and lose no state.
use lb_lab::cluster::{
    origin_ip, smd_url, Cluster, HaOptions, Options, Players, HTTP_PORT, LBD_API_PORT, RELAY_API_PORT,
};
use lb_lab::wait::holds_for;
use lb_tests::*;
use std::time::{Duration, Instant};

/// The leader's lease in these labs, and the same in seconds for the bounds.
const LEASE: &str = "3s";
const LEASE_S: u64 = 3;
/// The cluster's failover time (lb_lab's default) and keepalive (1 s).
const FAILOVER_S: u64 = 3;
/// How long every etcd member stays down in the outage test (the figure).
const ALL_DOWN: Duration = Duration::from_secs(30);
/// smd's metrics of its part in HA: 1 on the leader, the term it knows, 1 while etcd answers.
const LEADER_METRIC: &str = "sm_leader";
const TERM_METRIC: &str = "sm_leader_term";
const STORE_UP_METRIC: &str = "sm_store_up";
/// Events that mean the manager moved something (a source, an edge, a group).
const MOVES: [&str; 6] =
    ["ingest-started", "ingest-stopped", "edge-repointed", "failover", "failback", "handover-started"];

fn ha() -> Options {
    Options { ha: Some(HaOptions { managers: 2, lease_ttl: LEASE }), ..Default::default() }
}

/// Now as the manager's events count time: Unix milliseconds.
fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// smd `k`'s name.
fn name(k: usize) -> String {
    format!("m{}", k + 1)
}

/// An event as compared across smd: (seq, kind, subject, message).
type Ev = (u64, String, String, String);

/// Every event smd `k` serves (its own answer, not the leader's through the helpers), oldest first.
fn events_of(c: &Cluster, lab: &lb_lab::Lab, k: usize) -> Vec<Ev> {
    let v = c.call(lab, "GET", &format!("{}/api/v1/events", smd_url(k))).unwrap_or_default();
    let mut evs: Vec<Ev> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let s = |f: &str| e[f].as_str().unwrap_or_default().to_string();
                    (e["seq"].as_u64().unwrap_or(0), s("kind"), s("subject"), s("message"))
                })
                .collect()
        })
        .unwrap_or_default();
    evs.sort();
    evs
}

/// The "cams" group on origin `o` per the manager, every edge pulling live/cam1 from it.
fn group_on(c: &Cluster, lab: &lb_lab::Lab, o: usize) -> bool {
    c.active(lab).as_deref() == Some(&format!("o{}", o + 1)[..])
        && (0..3).all(|i| c.edge_pulls_from(lab, i, "cam1", &origin_ip(o)))
}

/// One of lbd's services as compared before and after a takeover: its address, port and reals (address, drained).
type Service = (String, u64, Vec<(String, bool)>);

/// lbd's services (through its API), sorted.
fn lb_reals(lab: &lb_lab::Lab) -> Vec<Service> {
    let auth = format!("Authorization: Bearer {}", Cluster::TOKEN);
    let url = format!("http://{LB_IP}:{LBD_API_PORT}/api/v1/services");
    let out = lab.exec_status(&lab.lb(), &["curl", "-sS", "--max-time", "3", "-H", &auth, &url]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut services: Vec<_> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let mut reals: Vec<(String, bool)> = s["reals"]
                        .as_array()
                        .map(|r| {
                            r.iter()
                                .map(|r| (r["addr"].as_str().unwrap_or_default().to_string(), r["drained"] == true))
                                .collect()
                        })
                        .unwrap_or_default();
                    reals.sort();
                    (s["vip"].as_str().unwrap_or_default().to_string(), s["port"].as_u64().unwrap_or(0), reals)
                })
                .collect()
        })
        .unwrap_or_default();
    services.sort();
    services
}

/// Every edge in both VIP services, none drained.
fn edges_in_lb(lab: &lb_lab::Lab) -> bool {
    let s = lb_reals(lab);
    [1935, HTTP_PORT as u64].iter().all(|port| {
        s.iter().any(|(vip, p, reals)| vip == VIP && p == port && (0..3).all(|i| reals.contains(&(real_ip(i), false))))
    })
}

/// smd `k`'s `/api/v1/leader`.
fn leader_of(c: &Cluster, lab: &lb_lab::Lab, k: usize) -> serde_json::Value {
    c.leader_of(lab, k).unwrap_or_default()
}

fn smd_metric(c: &Cluster, lab: &lb_lab::Lab, k: usize, metric: &str) -> Option<f64> {
    c.metric(lab, &format!("{}/metrics", smd_url(k)), metric)
}

fn relay_metric(c: &Cluster, lab: &lb_lab::Lab, ip: &str, metric: &str) -> Option<f64> {
    c.metric(lab, &format!("http://{ip}:{RELAY_API_PORT}/metrics"), metric)
}

fn lbd_metric(c: &Cluster, lab: &lb_lab::Lab, metric: &str) -> Option<f64> {
    c.metric(lab, &format!("http://{LB_IP}:{LBD_API_PORT}/metrics"), metric)
}

/// A node's state per smd `k` (its own answer).
fn node_state(c: &Cluster, lab: &lb_lab::Lab, k: usize, node: &str) -> String {
    c.call(lab, "GET", &format!("{}/api/v1/nodes/{node}", smd_url(k)))
        .ok()
        .and_then(|n| n["state"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// smd `k`'s console page (HTML; it needs no token to read).
fn console_of(lab: &lb_lab::Lab, k: usize) -> String {
    let url = format!("{}/", smd_url(k));
    let out = lab.exec_status(&lab.lb(), &["curl", "-sS", "--max-time", "5", &url]).unwrap();
    assert!(out.status.success(), "GET {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether smd `k` lists `store-unreachable` among its raised alarms.
fn store_alarm_raised(c: &Cluster, lab: &lb_lab::Lab, k: usize) -> bool {
    c.call(lab, "GET", &format!("{}/api/v1/alarms", smd_url(k)))
        .is_ok_and(|a| a["raised"].as_array().is_some_and(|v| v.iter().any(|x| x["kind"] == "store-unreachable")))
}

/// Like `context`, but a failure shows every smd's log (tail) and the leader's events: what they saw and decided.
fn check<T>(c: &Cluster, lab: &lb_lab::Lab, r: anyhow::Result<T>, what: &str) -> T {
    r.unwrap_or_else(|e| {
        let log = c.manager_log(lab);
        let tail: Vec<&str> = log.lines().rev().take(120).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{what}: {e:#}\nmanager events: {:#}\nsmd logs (tail):\n{}",
            c.manager(lab, "events?last=40").unwrap_or_default(),
            tail.join("\n")
        )
    })
}

#[test]
fn a_killed_leader_is_replaced_within_the_lease_and_nothing_moves_even_when_the_active_origin_dies_with_it() {
    require_root();
    let (mut l, mut c) = cluster_lab(ha());
    let lab = &mut l.lab;
    check(
        &c,
        lab,
        Cluster::wait("o1 active and pulled by every edge, every edge in the LB", Duration::from_secs(30), || {
            group_on(&c, lab, 0) && edges_in_lb(lab)
        }),
        "group up",
    );

    // Steady state: one leads, the other follows it and says so; both agree on the term.
    let (old, _) = check(&c, lab, c.wait_leader(lab, None, Duration::from_secs(10)), "a leader");
    let other = 1 - old;
    let info = leader_of(&c, lab, old);
    let term0 = info["term"].as_u64().unwrap_or_else(|| panic!("no term: {info}"));
    assert_eq!(info["me"], name(old), "{info}");
    assert_eq!(info["leader"], name(old), "{info}");
    assert_eq!(info["store"], "etcd", "{info}");
    assert_eq!(info["store_ok"], true, "{info}");
    let f = leader_of(&c, lab, other);
    assert_eq!(f["leading"], false, "{f}");
    assert_eq!(f["leader"], name(old), "{f}");
    assert_eq!(f["leader_api"], smd_url(old), "{f}");
    assert_eq!(f["term"].as_u64(), Some(term0), "{f}");
    assert_eq!(smd_metric(&c, lab, old, LEADER_METRIC), Some(1.0));
    assert_eq!(smd_metric(&c, lab, other, LEADER_METRIC), Some(0.0));
    assert_eq!(smd_metric(&c, lab, old, TERM_METRIC), Some(term0 as f64));
    assert_eq!(smd_metric(&c, lab, other, STORE_UP_METRIC), Some(1.0));
    let before = events_of(&c, lab, old);
    assert!(before.iter().any(|e| e.1 == "ingest-started"), "the group's start is in the events: {before:?}");
    // The follower serves the leader's history (once it has read the leader's latest write).
    check(
        &c,
        lab,
        Cluster::wait("the follower to serve the leader's events", Duration::from_secs(5), || {
            events_of(&c, lab, other) == events_of(&c, lab, old)
        }),
        "follower's events",
    );
    let last_seq = before.iter().map(|e| e.0).max().unwrap();
    let reals = lb_reals(lab);

    // SIGKILL the leader: the follower leads within the lease (+1 s).
    let t = Instant::now();
    c.kill_smd(lab, old).unwrap();
    let (new, _) = check(&c, lab, c.wait_leader(lab, Some(old), Duration::from_secs(LEASE_S + 10)), "takeover");
    let took = t.elapsed();
    println!("figure: leader SIGKILL -> {} leads after {took:?} (lease_ttl {LEASE})", name(new));
    assert_eq!(new, other);
    assert!(took <= Duration::from_secs(LEASE_S + 1), "the follower took {took:?} to lead (lease {LEASE})");
    let term1 = leader_of(&c, lab, new)["term"].as_u64().unwrap();
    assert!(term1 > term0, "new term {term1} after {term0}");

    // Nothing moves: watched for the failover time and two keepalive rounds, failing at the first change.
    let unmoved = holds_for(
        Duration::from_secs(FAILOVER_S + 2),
        "o1 active, every edge on o1, lbd's services and reals unchanged",
        || group_on(&c, lab, 0) && lb_reals(lab) == reals,
    );
    check(&c, lab, unmoved, "nothing moves after the takeover");
    let after = events_of(&c, lab, new);
    for e in &before {
        assert!(after.contains(e), "the new leader lost event {e:?}: {after:?}");
    }
    // The console (the page an operator opens on any smd) shows the same history.
    let page = console_of(lab, new);
    for e in &before {
        assert!(page.contains(&svc::console::esc(&e.3)), "the new leader's console lacks {e:?}");
    }
    let newer: Vec<&Ev> = after.iter().filter(|e| e.0 > last_seq).collect();
    assert!(
        newer.iter().any(|e| e.1 == "leader-elected" && e.2 == name(new)),
        "no leader-elected event for {}: {newer:?}",
        name(new)
    );
    let moved: Vec<&&Ev> = newer.iter().filter(|e| MOVES.contains(&e.1.as_str())).collect();
    assert!(moved.is_empty(), "the new leader moved something: {moved:?}");

    // The old leader comes back as a follower of the new one.
    c.start_smd(lab, old).unwrap();
    check(
        &c,
        lab,
        Cluster::wait(&format!("{} back as a follower", name(old)), Duration::from_secs(10), || {
            let v = leader_of(&c, lab, old);
            v["leading"] == false && v["leader"] == name(new) && v["term"].as_u64() == Some(term1)
        }),
        "rejoin",
    );
    assert_eq!(c.leader(lab), Some(new));

    // The leader and the active origin SIGKILLed at the same moment, under ten players through the VIP: the
    // returned smd leads, fails the group over to o2, and no player waits more than failover + lease + 3 s.
    const PLAYERS: usize = 10;
    let players = Players::start(lab, &format!("rtmp://{VIP}/live/cam1"), PLAYERS, "player").unwrap();
    check(&c, lab, players.wait_growth(&[0; PLAYERS], 100_000, Duration::from_secs(20)), "players");
    let bound = Duration::from_secs(FAILOVER_S + LEASE_S + 3);
    let killed = std::cell::Cell::new(0);
    let mut stalls = players.longest_stall(bound + Duration::from_secs(6), || {
        c.kill_smd(lab, new).unwrap();
        c.kill_origin(lab, 0).unwrap();
        killed.set(unix_ms());
    });
    let (third, _) = check(&c, lab, c.wait_leader(lab, Some(new), Duration::from_secs(10)), "second takeover");
    assert_eq!(third, old);
    check(
        &c,
        lab,
        Cluster::wait("o2 active, every edge pulling from it", Duration::from_secs(10), || group_on(&c, lab, 1)),
        "failover under a new leader",
    );
    // When the new leader took over and when it failed the group over, from its events' times.
    let evs = c.manager(lab, "events?last=100").unwrap();
    let at = |kind: &str, subject: &str| {
        evs.as_array().unwrap().iter().find(|e| e["kind"] == kind && e["subject"] == subject)?["time_ms"].as_u64()
    };
    let (elected, failed_over) = (at("leader-elected", &name(third)), at("failover", "cams"));
    println!(
        "figure: leader + active origin SIGKILL -> {} leads after {:?} ms, fails cams over after {:?} ms",
        name(third),
        elected.map(|t| t.saturating_sub(killed.get())),
        failed_over.map(|t| t.saturating_sub(killed.get()))
    );
    assert!(elected.is_some_and(|t| t >= killed.get()) && failed_over.is_some(), "{evs:#}");
    check(&c, lab, players.wait_growth(&players.sizes(), 20_000, Duration::from_secs(5)), "players resumed");
    let worst = *stalls.iter().max().unwrap();
    println!(
        "figure: leader + active origin SIGKILL -> players receiving again: median {:?}, worst {worst:?} (bound {bound:?})",
        lb_lab::cluster::median(&mut stalls)
    );
    assert!(worst <= bound, "a player waited {worst:?} for frames (failover_time + lease_ttl + 3 s = {bound:?})");
    for (n, pid) in players.pids.iter().enumerate() {
        assert!(lab.alive(*pid), "player {n} was cut:\n{}", lab.log(&format!("player{n}.log")));
    }
    let failovers: Vec<Ev> = events_of(&c, lab, third).into_iter().filter(|e| e.1 == "failover").collect();
    assert!(failovers.iter().any(|e| e.2 == "cams" && e.3.contains("o1 is down: o2 takes the group")), "{failovers:?}");
}

#[test]
fn a_leader_cut_from_etcd_stops_before_another_leads_and_etcd_outages_lose_nothing() {
    require_root();
    let (mut l, mut c) = cluster_lab(ha());
    let lab = &mut l.lab;
    check(
        &c,
        lab,
        Cluster::wait("o1 active and pulled by every edge, every edge in the LB", Duration::from_secs(30), || {
            group_on(&c, lab, 0) && edges_in_lb(lab)
        }),
        "group up",
    );
    let (old, _) = check(&c, lab, c.wait_leader(lab, None, Duration::from_secs(10)), "a leader");
    let other = 1 - old;
    let term0 = leader_of(&c, lab, old)["term"].as_u64().unwrap();
    // Putting the edges into the LB went through lbd with the leader's term.
    check(
        &c,
        lab,
        Cluster::wait("lbd's manager term is the leader's", Duration::from_secs(5), || {
            lbd_metric(&c, lab, "lbd_manager_term") == Some(term0 as f64)
        }),
        "lbd term",
    );

    // Cut the leader from every etcd member (it still reaches lbd, the relays and the other smd): it says it no
    // longer leads within the lease (+1 s), and at no moment do both lead.
    let t = Instant::now();
    c.partition_smd(lab, old).unwrap();
    let mut both = 0;
    let stepped = Cluster::wait(&format!("{} to stop leading", name(old)), Duration::from_secs(LEASE_S + 5), || {
        let (a, b) = (leader_of(&c, lab, old)["leading"] == true, leader_of(&c, lab, other)["leading"] == true);
        both += (a && b) as u32;
        !a
    });
    let stepped = check(&c, lab, stepped, "the cut leader steps down");
    println!("figure: leader cut from etcd -> stopped leading after {stepped:?} (lease_ttl {LEASE})");
    assert!(stepped <= Duration::from_secs(LEASE_S + 1), "the cut leader still led after {stepped:?}");
    let mut waited = Duration::ZERO;
    let took = Cluster::wait(&format!("{} to lead", name(other)), Duration::from_secs(LEASE_S + 10), || {
        let (a, b) = (leader_of(&c, lab, old)["leading"] == true, leader_of(&c, lab, other)["leading"] == true);
        both += (a && b) as u32;
        waited = t.elapsed();
        b
    });
    check(&c, lab, took, "the other smd leads");
    assert_eq!(both, 0, "both smd said they led at {both} checks");
    println!("figure: leader cut from etcd -> {} leads {waited:?} after the cut", name(other));
    let term1 = leader_of(&c, lab, other)["term"].as_u64().unwrap();
    assert!(term1 > term0, "new term {term1} after {term0}");
    let cut = leader_of(&c, lab, old);
    assert_eq!(cut["store_ok"], false, "{cut}");
    assert_eq!(smd_metric(&c, lab, old, LEADER_METRIC), Some(0.0));

    // A write sent to the cut smd: it may forward it to the new leader, or refuse it (503, no leader it can
    // trust), but never apply it itself. Either way, what e2 and lbd accept carries the new term.
    let r = c.call(lab, "POST", &format!("{}/api/v1/nodes/e2/maintenance", smd_url(old))).unwrap();
    let forwarded = ["draining", "maintenance"].contains(&r["state"].as_str().unwrap_or_default());
    // smd's 503s say who does not lead or that none does ("no smd leads right now ...").
    let refused = r["error"].as_str().is_some_and(|e| e.contains("lead"));
    assert!(forwarded || refused, "maintenance through the cut smd: {r}");
    println!("figure: maintenance through the cut smd: {}", if forwarded { "forwarded" } else { "refused (503)" });
    let e2_state = node_state(&c, lab, other, "e2");
    if forwarded {
        assert!(["draining", "maintenance"].contains(&e2_state.as_str()), "the new leader has e2 {e2_state}");
    } else {
        assert_eq!(e2_state, "up", "a refused maintenance was applied");
        // The new leader's own, so that lbd and e2 hear from it.
        let r = c.call(lab, "POST", &format!("{}/api/v1/nodes/e2/maintenance", smd_url(other))).unwrap();
        assert!(["draining", "maintenance"].contains(&r["state"].as_str().unwrap_or_default()), "{r}");
    }
    check(
        &c,
        lab,
        Cluster::wait("lbd and e2 at the new leader's term", Duration::from_secs(10), || {
            lbd_metric(&c, lab, "lbd_manager_term") == Some(term1 as f64)
                && relay_metric(&c, lab, &real_ip(1), "relay_manager_term") == Some(term1 as f64)
        }),
        "new term accepted",
    );
    // Healed: the old leader follows the new one, and nothing of its term lands afterwards: every relay and lbd
    // stay at a term no older than the new leader's first command (refused commands are counted, not applied).
    c.heal_smd(lab, old).unwrap();
    check(
        &c,
        lab,
        Cluster::wait(&format!("{} a follower again", name(old)), Duration::from_secs(LEASE_S + 10), || {
            let v = leader_of(&c, lab, old);
            v["leading"] == false && v["leader"] == name(other) && v["store_ok"] == true
        }),
        "healed",
    );
    let relays: Vec<String> = (0..3).map(real_ip).chain((0..2).map(origin_ip)).collect();
    let fenced = holds_for(Duration::from_secs(2), "lbd and e2 at the new term, no relay above it", || {
        lbd_metric(&c, lab, "lbd_manager_term") == Some(term1 as f64)
            && relay_metric(&c, lab, &real_ip(1), "relay_manager_term") == Some(term1 as f64)
            && relays.iter().all(|ip| relay_metric(&c, lab, ip, "relay_manager_term").is_none_or(|t| t <= term1 as f64))
    });
    check(&c, lab, fenced, "fencing");
    let refused_relays: f64 =
        relays.iter().filter_map(|ip| relay_metric(&c, lab, ip, "relay_manager_commands_refused_total")).sum();
    println!(
        "figure: commands refused for an old term after the cut: relays {refused_relays}, lbd {:?}",
        lbd_metric(&c, lab, "lbd_manager_commands_refused_total")
    );
    assert_eq!(c.leader(lab), Some(other));
    c.manager_post(lab, "nodes/e2/resume").unwrap();
    check(
        &c,
        lab,
        Cluster::wait("e2 up and back in the LB", Duration::from_secs(10), || {
            node_state(&c, lab, other, "e2") == "up" && edges_in_lb(lab)
        }),
        "resume e2",
    );

    // One etcd member of three down: nothing changes (the leader, its term, the store seen up, no alarm), and a
    // maintenance on and off still works.
    let leader = other;
    let store_alarms = |c: &Cluster, lab: &lb_lab::Lab| {
        events_of(c, lab, leader)
            .iter()
            .filter(|e| e.1 == "alarm-raised" && e.3.starts_with("store-unreachable"))
            .count()
    };
    let alarms_before = store_alarms(&c, lab);
    let etcd = c.etcd.as_mut().unwrap();
    etcd.kill(lab, 0).unwrap();
    let steady = holds_for(Duration::from_secs(LEASE_S + 1), "the same leader at the same term, the store up", || {
        c.leader(lab) == Some(leader)
            && leader_of(&c, lab, leader)["term"].as_u64() == Some(term1)
            && smd_metric(&c, lab, leader, STORE_UP_METRIC) == Some(1.0)
    });
    check(&c, lab, steady, "one etcd member down");
    let raised: Vec<Ev> = events_of(&c, lab, leader)
        .into_iter()
        .filter(|e| e.1 == "alarm-raised" && e.3.starts_with("store-unreachable"))
        .collect();
    assert_eq!(raised.len(), alarms_before, "one etcd member of three down raised store-unreachable: {raised:?}");
    let r = c.manager_post(lab, "nodes/e3/maintenance").unwrap();
    assert!(["draining", "maintenance"].contains(&r["state"].as_str().unwrap_or_default()), "{r}");
    c.manager_post(lab, "nodes/e3/resume").unwrap();
    check(
        &c,
        lab,
        Cluster::wait("e3 up and in the LB", Duration::from_secs(10), || {
            node_state(&c, lab, leader, "e3") == "up" && edges_in_lb(lab)
        }),
        "maintenance with one etcd member down",
    );
    c.etcd.as_mut().unwrap().restart(lab, 0).unwrap();

    // Every etcd member down for 30 s, under players, with e3 in maintenance and its players kept.
    const PLAYERS: usize = 5;
    let players = Players::start(lab, &format!("rtmp://{VIP}/live/cam1"), PLAYERS, "player").unwrap();
    check(&c, lab, players.wait_growth(&[0; PLAYERS], 100_000, Duration::from_secs(20)), "players");
    let r = c.manager_post(lab, "nodes/e3/maintenance").unwrap();
    let e3_state = r["state"].as_str().unwrap_or_default().to_string();
    assert!(["draining", "maintenance"].contains(&e3_state.as_str()), "{r}");
    let mut stalls = players.longest_stall(ALL_DOWN, || c.etcd.as_mut().unwrap().kill_all(lab).unwrap());
    let worst = *stalls.iter().max().unwrap();
    println!(
        "figure: all etcd members down for {ALL_DOWN:?}: players' longest wait for bytes median {:?}, worst {worst:?}",
        lb_lab::cluster::median(&mut stalls)
    );
    assert!(worst <= Duration::from_secs(2), "a player waited {worst:?} for bytes while etcd was down");
    for k in 0..2 {
        assert_eq!(smd_metric(&c, lab, k, STORE_UP_METRIC), Some(0.0), "{} with etcd down", name(k));
        assert_eq!(smd_metric(&c, lab, k, LEADER_METRIC), Some(0.0), "{} leads without etcd", name(k));
        assert!(store_alarm_raised(&c, lab, k), "{} raised no store-unreachable alarm", name(k));
    }
    // The data plane as it was: every edge with players still pulls from o1. (An edge without players lets its
    // pre-pull go after the relay's idle time, 30 s: no leader renews it while etcd is down.)
    for i in 0..3 {
        let watching = c.relay_status(lab, &real_ip(i)).map(|s| s["players"].as_u64().unwrap_or(0)).unwrap_or(0);
        assert!(
            watching == 0 || c.edge_pulls_from(lab, i, "cam1", &origin_ip(0)),
            "edge e{} with {watching} players lost its source while etcd was down",
            i + 1
        );
    }
    for (n, pid) in players.pids.iter().enumerate() {
        assert!(lab.alive(*pid), "player {n} was cut while etcd was down:\n{}", lab.log(&format!("player{n}.log")));
    }

    // etcd returns: a leader again, the alarm cleared everywhere, and nothing lost (o1 active, e3 in maintenance).
    let t = Instant::now();
    c.etcd.as_mut().unwrap().start_all(lab).unwrap();
    let (back, _) = check(&c, lab, c.wait_leader(lab, None, Duration::from_secs(LEASE_S + 15)), "a leader again");
    println!("figure: etcd back -> {} leads after {:?}", name(back), t.elapsed());
    check(
        &c,
        lab,
        Cluster::wait("store up and the alarm cleared on every smd", Duration::from_secs(10), || {
            (0..2).all(|k| smd_metric(&c, lab, k, STORE_UP_METRIC) == Some(1.0) && !store_alarm_raised(&c, lab, k))
        }),
        "alarm cleared",
    );
    let alarms = c.manager(lab, "alarms").unwrap();
    assert!(
        alarms["cleared"].as_array().is_some_and(|v| v.iter().any(|a| a["kind"] == "store-unreachable")),
        "the outage left no cleared store-unreachable alarm: {alarms}"
    );
    assert_eq!(c.active(lab).as_deref(), Some("o1"), "the group moved in the outage");
    // Edges whose idle pre-pull lapsed in the outage pull again once the leader acts (a round or two); e3, in
    // maintenance, gets no new pull by design.
    check(
        &c,
        lab,
        Cluster::wait("e1 and e2 pulling from o1 again", Duration::from_secs(FAILOVER_S + 3), || {
            (0..2).all(|i| c.edge_pulls_from(lab, i, "cam1", &origin_ip(0)))
        }),
        "pre-pull after the outage",
    );
    let e3_now = node_state(&c, lab, back, "e3");
    assert!(["draining", "maintenance"].contains(&e3_now.as_str()), "e3's maintenance was lost: {e3_now}");
    check(&c, lab, players.wait_growth(&players.sizes(), 20_000, Duration::from_secs(5)), "players after");
}
