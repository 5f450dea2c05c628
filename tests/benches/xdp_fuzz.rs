//! `cargo xtask fuzz dataplane [SECONDS]`: the malformed-packet campaign (tests/src/malformed.rs) against this tree's
//! XDP program, 10 million frames by default; prints counts per action, per reason and per mutation, and fails on
//! any violation of the reference parser's oracle.
//!
//! Direct: `cargo bench -p lb-tests --bench xdp_fuzz -- [--frames N] [--secs S] [--seed X] [--object FILE]` (root).
use lb_common::global;
use lb_tests::malformed::{campaign, configure, reason_name};
use lb_tests::xdpobj::XdpObject;
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let frames: u64 = flag("--frames").map(|v| v.parse()).transpose()?.unwrap_or(10_000_000);
    let secs: Option<u64> = flag("--secs").map(|v| v.parse()).transpose()?;
    let seed: u64 = match flag("--seed") {
        Some(v) => u64::from_str_radix(v.trim_start_matches("0x"), 16)?,
        None => 0xc0ffee,
    };
    // Any other build of the object can be put through the same campaign (e.g. a baseline revision's).
    let (bytes, label) = match flag("--object") {
        Some(path) => (std::fs::read(&path)?, path),
        None => (lb_userspace::dataplane::EBPF_OBJECT.to_vec(), "current".to_string()),
    };
    let obj = XdpObject::load(&bytes, &label, 1 << 20)?;
    println!("object {label}: loaded, the verifier accepted every program");
    configure(&obj)?;
    let before: Vec<_> = (0..global::COUNT).map(|i| obj.counters("GLOBAL_STATS", i)).collect::<Result<_, _>>()?;
    let deadline = secs.map(|s| Instant::now() + Duration::from_secs(s));
    println!("campaign: seed {seed:#x}, up to {frames} frames{}", secs.map_or(String::new(), |s| format!(" or {s} s")));
    let t = Instant::now();
    let report = campaign(&obj, seed, frames, deadline);
    let took = t.elapsed();
    report.print();
    println!("program's own reasons (GLOBAL_STATS packets during the campaign):");
    for (i, b) in before.iter().enumerate() {
        let after = obj.counters("GLOBAL_STATS", i as u32)?;
        if let (Some(b), Some(a)) = (b, after) {
            let d = a.packets - b.packets;
            if d > 0 {
                println!("  {:<36} {d}", reason_name(i as u32));
            }
        }
    }
    println!(
        "{} frames in {:.1} s ({:.2} M frames/s)",
        report.frames,
        took.as_secs_f64(),
        report.frames as f64 / took.as_secs_f64() / 1e6
    );
    if report.violations > 0 {
        eprintln!("xdp_fuzz: {} violations (reproduce with --seed {seed:#x})", report.violations);
        std::process::exit(1);
    }
    println!("no violations");
    Ok(())
}
