//! `cargo xtask bench xdp --compare REV_OR_OBJECT`: ns/packet of every path of the current XDP program and of a
//! baseline object, measured interleaved in the same run (medians of several runs), with per-path ratios.
//!
//! Direct: `cargo bench -p lb-tests --bench xdp_compare -- --baseline OBJECT [--runs 7] [--repeat 1000000]
//! [--frames 20000]` (as root).
use lb_common::{LbConfig, RealDef, VipKey, FAMILY_V4, FAMILY_V6, REAL_F_VALID, RING_SIZE};
use lb_tests::packet::{Pkt, Pkt6, TCP_ACK, TCP_SYN};
use lb_tests::xdpobj::{action_name, XdpObject, XDP_PASS, XDP_TX};
use lb_userspace::dataplane::{EBPF_OBJECT, LB_PROGRAM, PASS_PROGRAM};
use lb_userspace::maglev;
use std::net::IpAddr;

const VIP: [u8; 4] = [10, 0, 0, 100];
const VIP6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
const CLIENT: [u8; 4] = [192, 168, 1, 7];
const CLIENT6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];

/// How a path is measured.
#[derive(Clone, Copy)]
enum Method {
    /// One frame, the kernel repeating the program on the same buffer (idempotent paths only).
    Repeat,
    /// A fresh tuple per run (repeat = 1 each), for paths that change the tables: the first ACK inserts, so
    /// repeating it would measure the hit.
    Distinct,
}

struct PathDef {
    name: &'static str,
    prog: &'static str,
    method: Method,
    /// The frame for the i-th run (Repeat uses i = 0).
    frame: fn(u32) -> Vec<u8>,
    /// A frame to run once before measuring (the flow of an "established" path).
    prime: Option<fn() -> Vec<u8>>,
    want: u32,
    ipv6: bool,
}

fn v4_src(i: u32) -> [u8; 4] {
    // 172.16.0.0/12: distinct per run, never the client of the primed flows.
    let a = 0xac10_0000u32 | (i & 0x000f_ffff);
    a.to_be_bytes()
}

fn v6_src(i: u32) -> [u8; 16] {
    let mut a = CLIENT6;
    a[8..12].copy_from_slice(&i.to_be_bytes());
    a[15] = 0x99;
    a
}

fn port(i: u32) -> u16 {
    1024 + (i >> 20) as u16
}

fn paths() -> Vec<PathDef> {
    vec![
        PathDef {
            name: "xdp_pass floor (repeat)",
            prog: PASS_PROGRAM,
            method: Method::Repeat,
            frame: |_| Pkt::tcp(CLIENT, 40002, [10, 0, 0, 101], 80, TCP_ACK).frame(),
            prime: None,
            want: XDP_PASS,
            ipv6: false,
        },
        PathDef {
            name: "xdp_pass floor (one per run)",
            prog: PASS_PROGRAM,
            method: Method::Distinct,
            frame: |i| Pkt::tcp(v4_src(i), port(i), [10, 0, 0, 101], 80, TCP_ACK).frame(),
            prime: None,
            want: XDP_PASS,
            ipv6: false,
        },
        PathDef {
            name: "TCP new flow: SYN (repeat)",
            prog: LB_PROGRAM,
            method: Method::Repeat,
            frame: |_| Pkt::tcp(CLIENT, 40000, VIP, 80, TCP_SYN).frame(),
            prime: None,
            want: XDP_TX,
            ipv6: false,
        },
        PathDef {
            name: "TCP new flow: SYN, distinct tuples",
            prog: LB_PROGRAM,
            method: Method::Distinct,
            frame: |i| Pkt::tcp(v4_src(i), port(i), VIP, 80, TCP_SYN).frame(),
            prime: None,
            want: XDP_TX,
            ipv6: false,
        },
        PathDef {
            name: "TCP first ACK, tuple not in table",
            prog: LB_PROGRAM,
            method: Method::Distinct,
            frame: |i| Pkt::tcp(v4_src(i), port(i), VIP, 80, TCP_ACK).frame(),
            prime: None,
            want: XDP_TX,
            ipv6: false,
        },
        PathDef {
            name: "TCP established (table hit)",
            prog: LB_PROGRAM,
            method: Method::Repeat,
            frame: |_| Pkt::tcp(CLIENT, 40001, VIP, 80, TCP_ACK).frame(),
            prime: Some(|| Pkt::tcp(CLIENT, 40001, VIP, 80, TCP_ACK).frame()),
            want: XDP_TX,
            ipv6: false,
        },
        PathDef {
            name: "not for a VIP",
            prog: LB_PROGRAM,
            method: Method::Repeat,
            frame: |_| Pkt::tcp(CLIENT, 40002, [10, 0, 0, 101], 80, TCP_ACK).frame(),
            prime: None,
            want: XDP_PASS,
            ipv6: false,
        },
        PathDef {
            name: "UDP new flow, distinct tuples",
            prog: LB_PROGRAM,
            method: Method::Distinct,
            frame: |i| Pkt::udp(v4_src(i), port(i), VIP, 53).frame(),
            prime: None,
            want: XDP_TX,
            ipv6: false,
        },
        PathDef {
            name: "UDP established (table hit)",
            prog: LB_PROGRAM,
            method: Method::Repeat,
            frame: |_| Pkt::udp(CLIENT, 40003, VIP, 53).frame(),
            prime: Some(|| Pkt::udp(CLIENT, 40003, VIP, 53).frame()),
            want: XDP_TX,
            ipv6: false,
        },
        PathDef {
            name: "IPv6 TCP new flow: SYN (repeat)",
            prog: LB_PROGRAM,
            method: Method::Repeat,
            frame: |_| Pkt6::tcp(CLIENT6, 40000, VIP6, 80, TCP_SYN).frame(),
            prime: None,
            want: XDP_TX,
            ipv6: true,
        },
        PathDef {
            name: "IPv6 TCP first ACK, not in table",
            prog: LB_PROGRAM,
            method: Method::Distinct,
            frame: |i| Pkt6::tcp(v6_src(i), port(i), VIP6, 80, TCP_ACK).frame(),
            prime: None,
            want: XDP_TX,
            ipv6: true,
        },
        PathDef {
            name: "IPv6 TCP established (table hit)",
            prog: LB_PROGRAM,
            method: Method::Repeat,
            frame: |_| Pkt6::tcp(CLIENT6, 40001, VIP6, 80, TCP_ACK).frame(),
            prime: Some(|| Pkt6::tcp(CLIENT6, 40001, VIP6, 80, TCP_ACK).frame()),
            want: XDP_TX,
            ipv6: true,
        },
        PathDef {
            name: "IPv6 not for a VIP",
            prog: LB_PROGRAM,
            method: Method::Repeat,
            frame: |_| {
                Pkt6::tcp(CLIENT6, 40002, [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1], 80, TCP_ACK).frame()
            },
            prime: None,
            want: XDP_PASS,
            ipv6: true,
        },
        PathDef {
            name: "IPv6 UDP new flow, distinct tuples",
            prog: LB_PROGRAM,
            method: Method::Distinct,
            frame: |i| Pkt6::udp(v6_src(i), port(i), VIP6, 53).frame(),
            prime: None,
            want: XDP_TX,
            ipv6: true,
        },
    ]
}

/// Services and reals written the same way into both objects: TCP and UDP on an IPv4 and an IPv6 VIP, `reals`
/// reals. Returns whether the object took the IPv6 services (a build without IPv6 still has the maps; whether it
/// balances IPv6 is decided by the action it returns).
fn configure(obj: &XdpObject, reals: u32) -> anyhow::Result<()> {
    obj.set_cfg(LbConfig { src_mac: [2, 0, 0, 0, 0, 1], ..LbConfig::default() })?;
    let mut entries = Vec::new();
    for id in 1..=reals {
        let def =
            RealDef { addr: [0; 16], mac: [2, 0xbb, 0, 0, 0, id as u8], _pad: [0; 2], flags: REAL_F_VALID, _pad2: 0 };
        obj.set_real(id, def)?;
        entries.push(maglev::Entry { id, addr: IpAddr::from([10, 0, (id >> 8) as u8, id as u8]), weight: 1 });
    }
    let ring = maglev::build(&entries, RING_SIZE);
    let key = |addr: [u8; 16], port: u16, proto: u8, family: u8| VipKey { addr, port: port.to_be(), proto, family };
    let mut v4 = [0u8; 16];
    v4[..4].copy_from_slice(&VIP);
    obj.set_service(key(v4, 80, 6, FAMILY_V4), 0, &ring)?;
    obj.set_service(key(v4, 53, 17, FAMILY_V4), 1, &ring)?;
    obj.set_service(key(VIP6, 80, 6, FAMILY_V6), 2, &ring)?;
    obj.set_service(key(VIP6, 53, 17, FAMILY_V6), 3, &ring)?;
    Ok(())
}

/// One measurement: mean ns/packet, or the action when it was not the expected one.
fn measure(obj: &XdpObject, p: &PathDef, repeat: u32, frames: u32, next: &mut u32) -> Result<f64, u32> {
    match p.method {
        Method::Repeat => {
            let (a, _, d) = obj.run(p.prog, &(p.frame)(0), repeat).expect("test run");
            if a != p.want {
                return Err(a);
            }
            Ok(d.as_nanos() as f64)
        }
        Method::Distinct => {
            let mut total = 0u128;
            for _ in 0..frames {
                *next += 1;
                let (a, _, d) = obj.run(p.prog, &(p.frame)(*next), 1).expect("test run");
                if a != p.want {
                    return Err(a);
                }
                total += d.as_nanos();
            }
            Ok(total as f64 / frames as f64)
        }
    }
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let num = |name: &str, default: u32| flag(name).and_then(|v| v.parse().ok()).unwrap_or(default);
    let baseline_path = flag("--baseline").ok_or_else(|| anyhow::anyhow!("--baseline OBJECT is required"))?;
    let label = flag("--label").unwrap_or_else(|| baseline_path.clone());
    let runs = num("--runs", 7).max(1);
    let repeat = num("--repeat", 1_000_000).max(1);
    let frames = num("--frames", 20_000).max(1);
    let reals = num("--reals", 16).clamp(1, 255);

    let base_bytes = std::fs::read(&baseline_path).map_err(|e| anyhow::anyhow!("reading {baseline_path}: {e}"))?;
    let current = XdpObject::load(EBPF_OBJECT, "current", 1 << 20)?;
    let baseline = XdpObject::load(&base_bytes, &label, 1 << 20)?;
    for obj in [&current, &baseline] {
        configure(obj, reals)?;
        for m in ["VIPS", "CH_RINGS", "REALS", "LB_CFG", "CONN_TABLE"] {
            if !obj.has_map(m) {
                println!("note: {} has no map {m}", obj.label);
            }
        }
    }
    let objs = [&current, &baseline];
    let paths = paths();
    // IPv6 rows only when the current program balances IPv6 (it transmits a SYN to the IPv6 VIP).
    let v6_syn = Pkt6::tcp(CLIENT6, 40000, VIP6, 80, TCP_SYN).frame();
    let v6_action = current.run(LB_PROGRAM, &v6_syn, 1)?.0;
    let v6 = v6_action == XDP_TX;
    if !v6 {
        println!(
            "IPv6: the current program returns {} for an IPv6 SYN to a VIP: IPv6 rows skipped",
            action_name(v6_action)
        );
    }
    let base_v6 = baseline.run(LB_PROGRAM, &v6_syn, 1)?.0 == XDP_TX;
    let paths: Vec<&PathDef> = paths.iter().filter(|p| !p.ipv6 || v6).collect();
    for p in &paths {
        if let Some(prime) = p.prime {
            for obj in objs {
                obj.run(p.prog, &prime(), 1)?;
            }
        }
    }

    // ns[path][obj] over runs; a wrong action marks the cell instead.
    let mut ns: Vec<[Vec<f64>; 2]> = paths.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    let mut wrong: Vec<[Option<u32>; 2]> = vec![[None; 2]; paths.len()];
    let mut next = [0u32; 2];
    for run in 0..runs {
        for (pi, p) in paths.iter().enumerate() {
            // Alternate which object goes first, so drift within a run hits both alike.
            let order = if (run + pi as u32).is_multiple_of(2) { [0, 1] } else { [1, 0] };
            for oi in order {
                if !objs[oi].has_program(p.prog) || wrong[pi][oi].is_some() {
                    continue;
                }
                match measure(objs[oi], p, repeat, frames, &mut next[oi]) {
                    Ok(v) => ns[pi][oi].push(v),
                    Err(a) => wrong[pi][oi] = Some(a),
                }
            }
        }
    }

    println!(
        "BPF_PROG_TEST_RUN ns/packet, median [min..max] of {runs} interleaved runs (repeat {repeat}, or {frames} \
         distinct frames one per run), {reals} reals"
    );
    println!("current: this tree's object; baseline: {label}");
    println!("{:<36} {:>24} {:>24} {:>7}", "path", "current", "baseline", "ratio");
    let mut ratio_of = std::collections::HashMap::new();
    for (pi, p) in paths.iter().enumerate() {
        let cell = |oi: usize, ns: &mut Vec<f64>| -> (String, Option<f64>) {
            if let Some(a) = wrong[pi][oi] {
                return (format!("returns {} not {}", action_name(a), action_name(p.want)), None);
            }
            if ns.is_empty() {
                return ("(no such program)".into(), None);
            }
            let (m, lo, hi) = stats(ns);
            (format!("{m:.1} [{lo:.1}..{hi:.1}]"), Some(m))
        };
        let [c, b] = &mut ns[pi];
        let (cs, cm) = cell(0, c);
        let (bs, bm) = cell(1, b);
        // A baseline without IPv6 passes IPv6 at its EtherType check: no ratio against a path it does not have.
        let comparable = !p.ipv6 || base_v6;
        let ratio = match (cm, bm) {
            (Some(c), Some(b)) if b > 0.0 && comparable => {
                ratio_of.insert(p.name, c / b);
                format!("{:.2}x", c / b)
            }
            _ => "-".into(),
        };
        println!("{:<36} {cs:>24} {bs:>24} {ratio:>7}", p.name);
    }
    if v6 && !base_v6 {
        println!("(the baseline does not balance IPv6: its IPv6 rows show what it does instead)");
    }
    println!("issue 8 targets (current/baseline in this run):");
    for (path, target) in [
        ("TCP new flow: SYN (repeat)", 0.5),
        ("TCP new flow: SYN, distinct tuples", 0.5),
        ("TCP established (table hit)", 0.7),
        ("not for a VIP", 0.8),
    ] {
        match ratio_of.get(path) {
            Some(r) => {
                println!("  {path:<36} {r:.2}x, target <= {target}x: {}", if *r <= target { "met" } else { "missed" })
            }
            None => println!("  {path:<36} no ratio (see above)"),
        }
    }
    Ok(())
}
