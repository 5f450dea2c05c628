//! `cargo xtask bench xdp`: ns/packet through BPF_PROG_TEST_RUN for a new flow, a connection-table hit and a
//! non-VIP packet, beside the pass-only program measured in the same run. Prints medians of several runs.
use lb_common::{RealDef, REAL_F_VALID, RING_SIZE};
use lb_tests::packet::{Pkt, Pkt6, TCP_ACK, TCP_SYN};
use lb_userspace::dataplane::{Dataplane, Limits, LB_PROGRAM, PASS_PROGRAM};
use lb_userspace::maglev;
use lb_userspace::model::{Proto, ServiceKey, VipKeyOf};
use std::net::IpAddr;

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u32| -> u32 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let repeat = arg("--repeat", 1_000_000);
    let runs = arg("--runs", 7);
    let reals = arg("--reals", 16);

    let mut dp = Dataplane::load(Limits { max_services: 4, conn_table_size: 1 << 20 }).expect("load (run as root)");
    dp.set_src_mac([2, 0, 0, 0, 0, 1]).unwrap();
    let mut entries = Vec::new();
    for id in 1..=reals {
        let addr = IpAddr::from([10, 0, (id >> 8) as u8, id as u8]);
        dp.set_real(
            id,
            RealDef { addr: [0; 16], mac: [2, 0xbb, 0, 0, 0, id as u8], _pad: [0; 2], flags: REAL_F_VALID, _pad2: 0 },
        )
        .unwrap();
        entries.push(maglev::Entry { id, addr, weight: 1 });
    }
    let svc = ServiceKey::parse("10.0.0.100:80", Proto::Tcp).unwrap();
    dp.set_service(svc.vip_key(), 0).unwrap();
    dp.write_ring(0, &maglev::build(&entries, RING_SIZE)).unwrap();

    let client = [192, 168, 1, 7];
    let vip = [10, 0, 0, 100];
    // A SYN always takes the new-flow path (Maglev lookup and connection-table insert), so repeating it on the same
    // buffer measures that path every time; the MAC rewrite is idempotent.
    let new_flow = Pkt::tcp(client, 40000, vip, 80, TCP_SYN).frame();
    let hit = Pkt::tcp(client, 40001, vip, 80, TCP_ACK).frame();
    let not_vip = Pkt::tcp(client, 40002, [10, 0, 0, 101], 80, TCP_ACK).frame();
    // Prime the connection-table entry for the hit case.
    assert_eq!(dp.test_run(LB_PROGRAM, &hit, 1).unwrap().0, XDP_TX);

    let cases: [(&str, &str, &[u8], u32); 4] = [
        ("xdp_pass (harness floor)", PASS_PROGRAM, &not_vip, XDP_PASS),
        ("lb: new flow (SYN, Maglev + insert)", LB_PROGRAM, &new_flow, XDP_TX),
        ("lb: connection-table hit", LB_PROGRAM, &hit, XDP_TX),
        ("lb: not for a VIP (pass)", LB_PROGRAM, &not_vip, XDP_PASS),
    ];
    // IPv6 beside IPv4 (programs from before IPv6 pass it: its row is then the cost of passing it).
    let v6 = ServiceKey::parse("[fd00::100]:80", Proto::Tcp).unwrap();
    let has_v6 =
        dp.set_service(v6.vip_key(), 1).is_ok() && dp.write_ring(1, &maglev::build(&entries, RING_SIZE)).is_ok();
    let client6 = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    let vip6 = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    let hit6 = Pkt6::tcp(client6, 40001, vip6, 80, TCP_ACK).frame();
    let v6_action = dp.test_run(LB_PROGRAM, &hit6, 1).unwrap().0;
    println!("BPF_PROG_TEST_RUN, {repeat} repeats x {runs} runs, {reals} reals; ns/packet (median [min..max])");
    let mut medians = Vec::new();
    for (name, prog, frame, want) in cases {
        let mut ns: Vec<f64> = (0..runs)
            .map(|_| {
                let (action, _, d) = dp.test_run(prog, frame, repeat).expect("test run");
                assert_eq!(action, want, "{name}: wrong action");
                d.as_nanos() as f64
            })
            .collect();
        ns.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let med = ns[ns.len() / 2];
        medians.push(med);
        println!("{name:<40} {med:>7.1}  [{:.1}..{:.1}]", ns[0], ns[ns.len() - 1]);
    }
    // The first non-SYN packet of a new flow stores it: a different tuple each time, one run per frame (the kernel
    // measures each), so the insert is measured and not a hit.
    let n_first = (repeat / 10).clamp(1000, 100_000);
    let mut ns: Vec<f64> = (0..runs)
        .map(|r| {
            let mut total = 0.0;
            for i in 0..n_first {
                let src = [172, 16 + r as u8, (i >> 8) as u8, i as u8];
                let f = Pkt::tcp(src, 1024 + (i % 50000) as u16, vip, 80, TCP_ACK).frame();
                let (action, _, d) = dp.test_run(LB_PROGRAM, &f, 1).expect("test run");
                assert_eq!(action, XDP_TX, "first ACK: wrong action");
                total += d.as_nanos() as f64;
            }
            total / n_first as f64
        })
        .collect();
    ns.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let name = "lb: first ACK of a new flow (insert)";
    println!("{name:<40} {:>7.1}  [{:.1}..{:.1}]", ns[ns.len() / 2], ns[0], ns[ns.len() - 1]);
    // The same method (one run per frame, distinct tuples) for SYNs, so the two rows above differ only by the insert.
    let mut ns: Vec<f64> = (0..runs)
        .map(|r| {
            let mut total = 0.0;
            for i in 0..n_first {
                let src = [172, 32 + r as u8, (i >> 8) as u8, i as u8];
                let f = Pkt::tcp(src, 1024 + (i % 50000) as u16, vip, 80, TCP_SYN).frame();
                total += dp.test_run(LB_PROGRAM, &f, 1).expect("test run").2.as_nanos() as f64;
            }
            total / n_first as f64
        })
        .collect();
    ns.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let name = "lb: SYN, distinct tuples, one per run";
    println!("{name:<40} {:>7.1}  [{:.1}..{:.1}]", ns[ns.len() / 2], ns[0], ns[ns.len() - 1]);
    // IPv6 established (hit), when the program handles IPv6.
    if has_v6 && v6_action == XDP_TX {
        let mut ns: Vec<f64> =
            (0..runs).map(|_| dp.test_run(LB_PROGRAM, &hit6, repeat).expect("test run").2.as_nanos() as f64).collect();
        ns.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let name = "lb: IPv6 connection-table hit";
        println!("{name:<40} {:>7.1}  [{:.1}..{:.1}]", ns[ns.len() / 2], ns[0], ns[ns.len() - 1]);
    } else {
        println!("lb: IPv6: this program does not balance IPv6 (action {v6_action}); not measured");
    }
    let floor = medians[0];
    println!(
        "ratio to xdp_pass: new flow {:.2}x, hit {:.2}x, not-VIP {:.2}x",
        medians[1] / floor,
        medians[2] / floor,
        medians[3] / floor
    );
    println!(
        "one core at the median: {:.1} Mpps new flows, {:.1} Mpps established",
        1e3 / medians[1],
        1e3 / medians[2]
    );
}
