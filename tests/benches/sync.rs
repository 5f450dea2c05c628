//! `cargo xtask bench sync`: what flow-state sync costs a node, on one core: building and authenticating datagrams
//! from stored flows (the sender), and checking them, translating and inserting their flows into a real connection
//! table (the receiver). Prints flows per second and CPU microseconds per 1000 flows, medians of several runs.
use lb_common::FlowKey;
use lb_userspace::dataplane::{Dataplane, Limits};
use lb_userspace::model::{addr_key, Proto, ServiceKey};
use lb_userspace::sync::{decode, encode, to_local, Names, PER_DATAGRAM};
use std::net::IpAddr;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let flows = arg("--flows", 200_000);
    let runs = arg("--runs", 5);
    let key = b"a shared secret for the benchmark";
    let svc = ServiceKey::parse("10.0.0.100:80", Proto::Tcp).unwrap();
    let reals: Vec<IpAddr> = (0..16).map(|i| IpAddr::from([10, 0, 1, i as u8 + 1])).collect();
    let names = Names {
        real_addr: reals.iter().enumerate().map(|(i, a)| (i as u32 + 1, *a)).collect(),
        real_id: reals.iter().enumerate().map(|(a, r)| (*r, a as u32 + 1)).collect(),
        slot: [(svc, 0)].into(),
    };
    let entry = |i: usize| -> (FlowKey, IpAddr) {
        let (src, family) = addr_key(IpAddr::from([172, 16 + (i >> 24) as u8, (i >> 16) as u8, (i >> 8) as u8]));
        let (dst, _) = addr_key(svc.vip);
        let key =
            FlowKey { src, dst, sport: (i as u16).to_be(), dport: 80u16.to_be(), proto: 6, family, kind: 0, _pad: 0 };
        (key, reals[i % reals.len()])
    };
    let all: Vec<(FlowKey, IpAddr)> = (0..flows).map(entry).collect();
    let (mut send_us, mut recv_us) = (Vec::new(), Vec::new());
    let mut inserted_total = 0;
    for _ in 0..runs {
        // A fresh table per run, so every insert is a real insert.
        let dp = Dataplane::load(Limits { max_services: 4, conn_table_size: (flows as u32).max(1 << 16) * 2 })
            .expect("load the XDP object (run as root)");
        let table = dp.conn_table().expect("conn table");
        let t = Instant::now();
        let datagrams: Vec<Vec<u8>> =
            all.chunks(PER_DATAGRAM).enumerate().map(|(i, c)| encode(key, i as u64, c)).collect();
        send_us.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        let mut inserted = 0;
        for d in &datagrams {
            let entries = decode(key, d).expect("a good datagram");
            inserted += table.insert_new(to_local(&names, &entries, 1)).expect("insert");
        }
        recv_us.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(inserted, flows, "every flow inserted once");
        inserted_total += inserted;
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (s, r) = (med(&mut send_us), med(&mut recv_us));
    let per_k = |us: f64| us / flows as f64 * 1000.0;
    println!("flow-state sync, {flows} flows x {runs} runs ({PER_DATAGRAM} flows per datagram), medians, one core:");
    println!(
        "sender:   encode + HMAC   {:>10.0} flows/s  {:>8.1} us CPU per 1000 flows",
        flows as f64 / s * 1e6,
        per_k(s)
    );
    println!(
        "receiver: check + insert  {:>10.0} flows/s  {:>8.1} us CPU per 1000 flows",
        flows as f64 / r * 1e6,
        per_k(r)
    );
    println!("({} flows inserted over the runs; the UDP send and receive syscalls are not included)", inserted_total);
}
