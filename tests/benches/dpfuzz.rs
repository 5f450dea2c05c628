//! `cargo xtask fuzz dataplane [SECONDS]`: the dataplane's malformed-packet campaign for a bounded time or frame
//! count (default 10,000,000 frames), printing counts per action and per kind of mutation; fails on any violation.
use lb_tests::dpfuzz::{campaign, configure_campaign};
use lb_userspace::dataplane::Dataplane;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg =
        |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok());
    let frames: u64 = arg("--frames").unwrap_or(10_000_000);
    let deadline = arg("--secs").map(|s: u64| Instant::now() + Duration::from_secs(s));
    let seed: u64 = arg("--seed").unwrap_or(0x00c0_ffee);
    let mut dp = Dataplane::load(lb_tests::fixture::LIMITS).expect("load the XDP object (run as root)");
    configure_campaign(&mut dp);
    let rep = campaign(&dp, frames, seed, deadline);
    println!("dataplane malformed-packet campaign, seed {seed:#x}:\n{rep}");
    for v in rep.violations.iter().take(10) {
        println!("VIOLATION {v}");
    }
    if !rep.violations.is_empty() {
        std::process::exit(1);
    }
}
