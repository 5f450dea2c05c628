//! Packet fixtures through BPF_PROG_TEST_RUN: {description, input frame, expected action, expected output}, plus
//! the connection-table behaviour when the real set changes. Needs root (loads BPF), no namespaces.
use lb_common::{global, RealDef};
use lb_tests::fixture::*;
use lb_tests::packet::{Pkt, TCP_ACK, TCP_SYN};

#[test]
fn vip_hit_is_transmitted_with_rewritten_macs_and_nothing_else_changed() {
    let dp = setup();
    for (desc, pkt) in [
        ("TCP SYN to VIP:80", Pkt::tcp(CLIENT, 40000, VIP, 80, TCP_SYN)),
        ("TCP ACK to VIP:80", Pkt::tcp(CLIENT, 40001, VIP, 80, TCP_ACK)),
        ("UDP to VIP:53", Pkt::udp(CLIENT, 5353, VIP, 53)),
    ] {
        let input = pkt.frame();
        let (action, out) = run(&dp, &input);
        assert_eq!(action, XDP_TX, "{desc}");
        assert_eq!(out.len(), input.len(), "{desc}: frame length changed");
        let id = real_of(&out);
        assert_eq!(&out[6..12], &OUR_MAC, "{desc}: source MAC is the LB interface's");
        assert_eq!(&out[12..], &input[12..], "{desc}: IP packet must be untouched in direct routing");
        if pkt.proto == 17 {
            assert_eq!(id, 1, "the UDP service has only real 1");
        }
    }
    let g = dp.global_counters().unwrap();
    assert_eq!(g[global::TX as usize].packets, 3);
    assert_eq!(dp.service_counters(0).unwrap().packets, 2);
    // A flow is new when it is stored: the ACK's, not the SYN's (a SYN stores nothing).
    assert_eq!(dp.service_counters(0).unwrap().new_flows, 1);
    assert_eq!(dp.service_counters(1).unwrap().packets, 1);
}

#[test]
fn traffic_not_for_a_service_passes_untouched() {
    let dp = setup();
    let mut arp = Pkt::tcp(CLIENT, 1, VIP, 80, TCP_SYN).frame();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let mut icmp = Pkt::tcp(CLIENT, 1, VIP, 80, TCP_SYN).frame();
    icmp[14 + 9] = 1;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("other destination address", Pkt::tcp(CLIENT, 40000, [10, 0, 0, 101], 80, TCP_SYN).frame()),
        ("VIP, port without a service", Pkt::tcp(CLIENT, 40000, VIP, 8080, TCP_SYN).frame()),
        ("VIP:80 over UDP (service is TCP)", Pkt::udp(CLIENT, 40000, VIP, 80).frame()),
        ("VIP:53 over TCP (service is UDP)", Pkt::tcp(CLIENT, 40000, VIP, 53, TCP_SYN).frame()),
        ("ARP", arp),
        ("ICMP to the VIP", icmp),
    ];
    for (desc, input) in cases {
        let (action, out) = run(&dp, &input);
        assert_eq!(action, XDP_PASS, "{desc}");
        assert_eq!(out, input, "{desc}: a passed frame is untouched");
    }
    let g = dp.global_counters().unwrap();
    assert_eq!(g[global::TX as usize].packets, 0);
    assert_eq!(g[global::PASS_NOT_VIP as usize].packets, 6);
}

#[test]
fn malformed_truncated_and_fragmented_packets_are_never_transmitted() {
    let dp = setup();
    let good = Pkt::tcp(CLIENT, 40000, VIP, 80, TCP_SYN).frame();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = good.clone();
        f(&mut v);
        v
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("Ethernet header only", good[..14].to_vec()),
        ("IPv4 header cut short", good[..14 + 12].to_vec()),
        ("TCP header cut short", good[..14 + 20 + 10].to_vec()),
        ("IP total length beyond the frame", with(&|v| v[16..18].copy_from_slice(&200u16.to_be_bytes()))),
        ("IP total length shorter than the headers", with(&|v| v[16..18].copy_from_slice(&30u16.to_be_bytes()))),
        ("IHL below 5", with(&|v| v[14] = 0x44)),
        ("IP version 6 in an IPv4 frame", with(&|v| v[14] = 0x65)),
        ("IP options (IHL 6)", {
            let mut v = good.clone();
            v[14] = 0x46;
            v.splice(34..34, [1u8, 1, 1, 0]);
            let tot = u16::from_be_bytes([v[16], v[17]]) + 4;
            v[16..18].copy_from_slice(&tot.to_be_bytes());
            v
        }),
        ("first fragment (MF set)", with(&|v| v[20] = 0x20)),
        ("later fragment (offset set)", with(&|v| v[21] = 0x10)),
        ("TCP data offset below 5", with(&|v| v[14 + 20 + 12] = 0x40)),
        ("TCP data offset beyond the frame", with(&|v| v[14 + 20 + 12] = 0xf0)),
    ];
    for (desc, input) in cases {
        let (action, out) = run(&dp, &input);
        assert_ne!(action, XDP_TX, "{desc} was transmitted");
        assert_eq!(action, XDP_PASS, "{desc}");
        assert_eq!(out, input, "{desc}: untouched");
    }
    let g = dp.global_counters().unwrap();
    assert_eq!(g[global::TX as usize].packets, 0);
    assert_eq!(g[global::PASS_FRAG_OR_OPTIONS as usize].packets, 3);
    assert_eq!(g[global::PASS_MALFORMED as usize].packets, 9);
}

#[test]
fn a_service_without_reals_passes_to_the_kernel() {
    let dp = setup();
    let input = Pkt::tcp(CLIENT, 40000, VIP, 81, TCP_SYN).frame();
    let (action, out) = run(&dp, &input);
    assert_eq!(action, XDP_PASS);
    assert_eq!(out, input);
    assert_eq!(dp.global_counters().unwrap()[global::PASS_NO_REAL as usize].packets, 1);
}

#[test]
fn connection_table_hit_keeps_its_real_when_the_real_set_changes() {
    let mut dp = setup();
    // Many flows, so that whichever real is removed some of them were on it.
    let flows: Vec<Pkt> = (0..64).map(|i| Pkt::tcp(CLIENT, 30000 + i, VIP, 80, TCP_ACK)).collect();
    let first: Vec<u32> = flows.iter().map(|p| real_of(&run(&dp, &p.frame()).1)).collect();
    for id in 1..=3 {
        assert!(first.contains(&id), "64 flows never reached real {id}: {first:?}");
    }
    // Remove real 2 and add real 4: established flows stay where they are.
    set_ring(&mut dp, 0, &[1, 3, 4]);
    for (p, was) in flows.iter().zip(&first) {
        let (action, out) = run(&dp, &p.frame());
        assert_eq!(action, XDP_TX);
        assert_eq!(real_of(&out), *was, "flow {} moved", p.sport);
    }
    // A SYN with a remembered 5-tuple (port reuse, or a spoofed SYN) neither moves nor rewrites the flow: it goes
    // where the flow's other packets go, so a handshake never splits over two reals.
    let syns: Vec<u32> =
        flows.iter().map(|p| real_of(&run(&dp, &Pkt { tcp_flags: TCP_SYN, ..p.clone() }.frame()).1)).collect();
    assert_eq!(syns, first, "a SYN moved a remembered flow");
    for (p, was) in flows.iter().zip(&first) {
        assert_eq!(real_of(&run(&dp, &p.frame()).1), *was, "flow {} moved after a SYN", p.sport);
    }
    // New flows only use the new set.
    for i in 0..64 {
        let (_, out) = run(&dp, &Pkt::tcp(CLIENT, 50000 + i, VIP, 80, TCP_ACK).frame());
        assert_ne!(real_of(&out), 2);
    }
    // A real whose slot is invalidated loses its flows to the table (they are rehashed, not blackholed).
    dp.set_real(1, RealDef::default()).unwrap();
    set_ring(&mut dp, 0, &[3, 4]);
    for p in &flows {
        let (action, out) = run(&dp, &p.frame());
        assert_eq!(action, XDP_TX);
        assert_ne!(real_of(&out), 1);
    }
    let mut n = 0;
    dp.for_each_flow(|_, _| n += 1).unwrap();
    assert_eq!(n, 128, "one connection-table entry per flow");
}
