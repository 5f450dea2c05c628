//! Packet fixtures for how the dataplane places flows (BPF_PROG_TEST_RUN, needs root, no namespaces): IPv6, ICMP
//! errors about balanced flows, SYNs that store nothing, persistence, per-(service, real) counters, and a pinned
//! dataplane taken over by a new process.
use lb_common::{global, ServiceCfg};
use lb_tests::fixture::*;
use lb_tests::packet::{icmp6_packet_too_big, icmp_frag_needed, Pkt, Pkt6, TCP_ACK, TCP_SYN};
use lb_userspace::dataplane::Dataplane;
use lb_userspace::model::{Proto, ServiceKey, VipKeyOf};

const VIP6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
const ROUTER: [u8; 4] = [192, 168, 9, 1];
const TCP_RST: u8 = 0x04;
const TCP_FIN: u8 = 0x01;

fn flows_in_table(dp: &Dataplane) -> usize {
    let mut n = 0;
    dp.for_each_flow(|_, _| n += 1).unwrap();
    n
}

/// The fixtures plus TCP [fd00::100]:80 at slot 3 over reals 1..=3.
fn setup6() -> Dataplane {
    let mut dp = setup();
    let web6 = ServiceKey::parse("[fd00::100]:80", Proto::Tcp).unwrap();
    dp.set_service(web6.vip_key(), 3).unwrap();
    set_ring(&mut dp, 3, &[1, 2, 3]);
    dp
}

#[test]
fn ipv6_flows_are_balanced_forwarded_untouched_and_keep_their_real() {
    let mut dp = setup6();
    let flows: Vec<Pkt6> = (0..64).map(|i| Pkt6::tcp(CLIENT6, 30000 + i, VIP6, 80, TCP_ACK)).collect();
    let mut first = Vec::new();
    for p in &flows {
        let input = p.frame();
        let (action, out) = run(&dp, &input);
        assert_eq!(action, XDP_TX);
        assert_eq!(&out[12..], &input[12..], "only the MACs change");
        assert_eq!(&out[6..12], &OUR_MAC);
        first.push(real_of(&out));
    }
    for id in 1..=3 {
        assert!(first.contains(&id), "64 IPv6 flows never reached real {id}: {first:?}");
    }
    set_ring(&mut dp, 3, &[1, 4]);
    for (p, was) in flows.iter().zip(&first) {
        assert_eq!(real_of(&run(&dp, &p.frame()).1), *was, "IPv6 flow {} moved", p.sport);
    }
    // Not a VIP, another port, and an extension header before TCP: the kernel's.
    let other = Pkt6 { dst: CLIENT6, ..flows[0].clone() }.frame();
    assert_eq!(run(&dp, &other).0, XDP_PASS);
    let mut ext = flows[0].frame();
    ext[14 + 6] = 0; // next header: hop-by-hop options
    assert_eq!(run(&dp, &ext).0, XDP_PASS);
    let g = dp.global_counters().unwrap();
    assert_eq!(g[global::PASS_EXT_HEADERS as usize].packets, 1);
}

#[test]
fn syns_store_nothing_so_a_flood_neither_evicts_nor_moves_established_flows() {
    let mut dp = setup();
    // 200 established flows (their first ACK stored them).
    let flows: Vec<Pkt> = (0..200).map(|i| Pkt::tcp(CLIENT, 20000 + i, VIP, 80, TCP_ACK)).collect();
    let owners: Vec<u32> = flows.iter().map(|p| real_of(&run(&dp, &p.frame()).1)).collect();
    assert_eq!(flows_in_table(&dp), 200);
    // The real set changes, so a flow that lost its entry would be re-placed (some onto real 4).
    set_ring(&mut dp, 0, &[4]);
    // 3 x the table's size of spoofed SYNs (and SYN+RST, SYN+FIN) from random sources: all forwarded by Maglev,
    // none stored.
    let mut x: u32 = 0x1234_5678;
    for i in 0..3 * LIMITS.conn_table_size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let flags = [TCP_SYN, TCP_SYN | TCP_RST, TCP_SYN | TCP_FIN][i as usize % 3];
        let (action, _) = run(&dp, &Pkt::tcp(x.to_be_bytes(), (x >> 16) as u16, VIP, 80, flags).frame());
        assert_eq!(action, XDP_TX);
    }
    assert_eq!(flows_in_table(&dp), 200, "a SYN stored a flow or evicted one");
    for (p, was) in flows.iter().zip(&owners) {
        assert_eq!(real_of(&run(&dp, &p.frame()).1), *was, "flow {} moved during the flood", p.sport);
    }
    // A SYN for a known tuple goes where its flow goes and does not rewrite the entry.
    let syn = Pkt { tcp_flags: TCP_SYN, ..flows[0].clone() };
    assert_eq!(real_of(&run(&dp, &syn.frame()).1), owners[0]);
    // A reset for an unknown flow is forwarded but not stored either.
    run(&dp, &Pkt::tcp(CLIENT, 9, VIP, 80, TCP_RST | TCP_ACK).frame());
    assert_eq!(flows_in_table(&dp), 200);
    assert_eq!(dp.service_counters(0).unwrap().new_flows, 200, "new flows are stored flows");
}

#[test]
fn icmp_errors_about_a_balanced_flow_go_to_its_real() {
    let mut dp = setup6();
    // A flow stored on its real, then a ring that no longer has that real: only the table knows where it is.
    let flow = Pkt::tcp(CLIENT, 40000, VIP, 80, TCP_ACK);
    let owner = real_of(&run(&dp, &flow.frame()).1);
    let others: Vec<u32> = (1..=3).filter(|r| *r != owner).collect();
    set_ring(&mut dp, 0, &others);
    // What the real sent (VIP:80 -> client:40000) was too big for a router on the way to the client.
    let answer = Pkt::tcp(VIP, 80, CLIENT, 40000, TCP_ACK);
    let err = icmp_frag_needed(ROUTER, &answer, 1280);
    let (action, out) = run(&dp, &err);
    assert_eq!(action, XDP_TX);
    assert_eq!(real_of(&out), owner, "the ICMP error went to another real than its flow's");
    assert_eq!(&out[12..], &err[12..], "only the MACs change");
    // A flow the table does not know (SYN-ACK phase): the real Maglev places its tuple on.
    let fresh = Pkt::tcp(CLIENT, 40001, VIP, 80, TCP_SYN);
    let placed = real_of(&run(&dp, &fresh.frame()).1);
    let err = icmp_frag_needed(ROUTER, &Pkt::tcp(VIP, 80, CLIENT, 40001, TCP_ACK), 1280);
    assert_eq!(real_of(&run(&dp, &err).1), placed);
    // IPv6 "packet too big" likewise.
    let flow6 = Pkt6::tcp(CLIENT6, 40000, VIP6, 80, TCP_ACK);
    let owner6 = real_of(&run(&dp, &flow6.frame()).1);
    set_ring(&mut dp, 3, &(1..=4).filter(|r| *r != owner6).collect::<Vec<_>>());
    let mut router6 = CLIENT6;
    router6[15] = 1;
    let err6 = icmp6_packet_too_big(router6, &Pkt6::tcp(VIP6, 80, CLIENT6, 40000, TCP_ACK), 1280);
    let (action, out) = run(&dp, &err6);
    assert_eq!((action, real_of(&out)), (XDP_TX, owner6));
    // Not about a balanced flow, or not a frag-needed: the kernel's. Nothing is stored for an error.
    let mut mismatch = icmp_frag_needed(ROUTER, &answer, 1280);
    mismatch[14 + 16 + 3] ^= 1; // outer destination no longer the quoted source
    let not_vip = icmp_frag_needed(ROUTER, &Pkt::tcp([10, 0, 0, 99], 80, CLIENT, 40000, TCP_ACK), 1280);
    let mut echo = icmp_frag_needed(ROUTER, &answer, 1280);
    echo[14 + 20] = 8; // echo request
    let truncated = &icmp_frag_needed(ROUTER, &answer, 1280)[..14 + 20 + 8 + 20];
    // Quoting a non-first fragment of the answer: its "ports" are payload bytes (found by the fuzz campaign).
    let mut later_fragment = icmp_frag_needed(ROUTER, &answer, 1280);
    later_fragment[14 + 20 + 8 + 7] = 0xb9; // inner fragment offset 185 (x8 bytes)
    for (what, frame) in [
        ("mismatched", &mismatch[..]),
        ("not a VIP", &not_vip[..]),
        ("echo", &echo[..]),
        ("truncated", truncated),
        ("a later fragment", &later_fragment[..]),
    ] {
        assert_eq!(run(&dp, frame).0, XDP_PASS, "{what}");
    }
    let g = dp.global_counters().unwrap();
    assert_eq!(g[global::TX_ICMP as usize].packets, 3);
    assert_eq!(flows_in_table(&dp), 2, "the two data flows; no error and no SYN was stored");
}

#[test]
fn a_persistent_service_sends_a_clients_connections_to_one_real_across_ring_changes() {
    let mut dp = setup();
    dp.set_service_cfg(0, ServiceCfg { persist_secs: 300, flags: 0 }).unwrap();
    let conns = |dp: &Dataplane, client: [u8; 4], base: u16| -> Vec<u32> {
        (0..20)
            .map(|i| {
                // Each connection's SYN and then its ACK, as a client opens it.
                let syn = real_of(&run(dp, &Pkt::tcp(client, base + i, VIP, 80, TCP_SYN).frame()).1);
                let ack = real_of(&run(dp, &Pkt::tcp(client, base + i, VIP, 80, TCP_ACK).frame()).1);
                assert_eq!(syn, ack, "a handshake split over two reals");
                ack
            })
            .collect()
    };
    let first = conns(&dp, CLIENT, 1000);
    assert!(first.iter().all(|r| *r == first[0]), "one client spread: {first:?}");
    // The ring changes (a real added, weights moved): the client's template keeps it on its real.
    set_ring(&mut dp, 0, &[1, 2, 3, 4]);
    let later = conns(&dp, CLIENT, 2000);
    assert!(later.iter().all(|r| *r == first[0]), "the client moved after a ring change: {later:?}");
    // Many clients spread over the reals.
    let mut used = std::collections::BTreeSet::new();
    for c in 0..40u8 {
        let r = conns(&dp, [172, 16, 0, c], 3000);
        assert!(r.iter().all(|x| *x == r[0]));
        used.insert(r[0]);
    }
    assert!(used.len() >= 3, "40 clients used only {used:?}");
    // Without persistence one client's connections spread again.
    dp.set_service_cfg(0, ServiceCfg::default()).unwrap();
    let spread: std::collections::BTreeSet<u32> = conns(&dp, CLIENT, 4000).into_iter().collect();
    assert!(spread.len() >= 2, "{spread:?}");
}

#[test]
fn each_service_real_pair_has_its_own_counters() {
    let mut dp = setup();
    // Real 1 serves TCP :80 (slot 0) and UDP :53 (slot 1): two pairs, two counter slots.
    set_ring(&mut dp, 0, &[1]);
    dp.set_dest(0, 1, 7).unwrap();
    dp.set_dest(1, 1, 8).unwrap();
    for i in 0..5 {
        run(&dp, &Pkt::tcp(CLIENT, 100 + i, VIP, 80, TCP_ACK).frame());
    }
    for i in 0..3 {
        run(&dp, &Pkt::udp(CLIENT, 200 + i, VIP, 53).frame());
    }
    let (web, dns) = (dp.dest_counters(7).unwrap(), dp.dest_counters(8).unwrap());
    assert_eq!((web.packets, web.new_flows), (5, 5));
    assert_eq!((dns.packets, dns.new_flows), (3, 3));
    // A slot given to another pair starts from zero.
    dp.set_dest(0, 1, 0).unwrap();
    dp.set_dest(0, 2, 7).unwrap();
    assert_eq!(dp.dest_counters(7).unwrap().packets, 0);
}

#[test]
fn a_taken_over_dataplane_sends_nothing_of_a_reused_slot_to_the_old_services_reals() {
    lb_tests::require_root();
    let root = std::env::temp_dir().join(format!("lbtest-bpf-{}", std::process::id()));
    let mount = lb_tests::health::BpfMount::at(root).expect("bpffs");
    let dir = mount.root.join("lbd");
    {
        // The first process: service :80 at slot 0 over reals 1..=3, pinned.
        let mut dp = Dataplane::load_pinned(LIMITS, &dir).expect("load pinned");
        configure(&mut dp);
    }
    // The next process takes over; its state no longer has :80, and a new service with no usable real gets slot 0.
    let mut dp = Dataplane::load_pinned(LIMITS, &dir).expect("take over");
    assert!(dp.adopted_maps());
    let web = ServiceKey::parse("10.0.0.100:80", Proto::Tcp).unwrap();
    dp.del_service(web.vip_key(), 0).unwrap();
    let newcomer = ServiceKey::parse("10.0.0.100:8080", Proto::Tcp).unwrap();
    dp.set_service(newcomer.vip_key(), 0).unwrap();
    dp.write_ring(0, &vec![0; lb_common::RING_SIZE as usize]).unwrap();
    for i in 0..32 {
        let (action, _) = run(&dp, &Pkt::tcp(CLIENT, 5000 + i, VIP, 8080, TCP_SYN).frame());
        assert_eq!(action, XDP_PASS, "a packet of the new service went to a real of the removed one");
    }
    drop(dp);
    lb_userspace::dataplane::remove_pins(&dir).unwrap();
}

#[test]
fn pinned_maps_of_another_layout_are_refused_with_the_reason() {
    lb_tests::require_root();
    let root = std::env::temp_dir().join(format!("lbtest-bpf-layout-{}", std::process::id()));
    let mount = lb_tests::health::BpfMount::at(root).expect("bpffs");
    let dir = mount.root.join("lbd");
    {
        Dataplane::load_pinned(LIMITS, &dir).expect("load pinned");
    }
    // A REALS pin of the right name but another value size, as another release could have made.
    std::fs::remove_file(dir.join("REALS")).unwrap();
    let out = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(dir.join("REALS"))
        .args(["type", "array", "key", "4", "value", "16", "entries", "4096", "name", "REALS"])
        .output()
        .expect("bpftool");
    assert!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
    let err = Dataplane::load_pinned(LIMITS, &dir).err().expect("a mismatched pin must be refused").to_string();
    assert!(err.contains("REALS") && err.contains("value 16") && err.contains("--cleanup"), "{err}");
    lb_userspace::dataplane::remove_pins(&dir).unwrap();
}

#[test]
fn nodes_with_one_hash_seed_place_every_new_flow_alike_and_the_seed_changes_placement() {
    let place_all = |seed: u32| -> Vec<u32> {
        let mut dp = setup();
        dp.set_hash_seed(seed).unwrap();
        (0..256).map(|i| real_of(&run(&dp, &Pkt::tcp(CLIENT, 10000 + i, VIP, 80, TCP_SYN).frame()).1)).collect()
    };
    // Two LB nodes (two loads of the program, with their own maps) with the same seed: the same real for every flow,
    // which is what lets an ECMP rehash move a flow between nodes without moving it between reals.
    let (a, b) = (place_all(0x5f3a_91c2), place_all(0x5f3a_91c2));
    assert_eq!(a, b);
    let other = place_all(0x0bad_cafe);
    let differ = a.iter().zip(&other).filter(|(x, y)| x != y).count();
    assert!(differ > 64, "another seed should re-place about 2/3 of 256 flows over 3 reals, moved {differ}");
}

#[test]
fn a_syn_for_a_tuple_silent_for_a_second_is_a_new_connection_placed_by_the_current_ring() {
    let mut dp = setup();
    // 64 flows stored on their reals, then the ring loses real 2 (removed or drained).
    let flows: Vec<Pkt> = (0..64).map(|i| Pkt::tcp(CLIENT, 30000 + i, VIP, 80, TCP_ACK)).collect();
    let owners: Vec<u32> = flows.iter().map(|p| real_of(&run(&dp, &p.frame()).1)).collect();
    assert!(owners.contains(&2));
    set_ring(&mut dp, 0, &[1, 3]);
    // Silent for more than SYN_REUSE_NS: the clients reuse their ports for new connections (SYN, then ACK). Each
    // is placed by the current ring, so none reaches real 2, and the handshake's ACK follows its SYN.
    std::thread::sleep(std::time::Duration::from_millis(1300));
    for p in &flows {
        let syn = real_of(&run(&dp, &Pkt { tcp_flags: TCP_SYN, ..p.clone() }.frame()).1);
        assert_ne!(syn, 2, "a new connection on a reused port reached the real that left the ring");
        assert_eq!(real_of(&run(&dp, &p.frame()).1), syn, "the handshake split over two reals");
    }
}
