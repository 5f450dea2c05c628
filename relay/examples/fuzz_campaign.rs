//! The long fuzz campaign: seeded mutations of valid inputs (and random bytes) through every fuzz entry point
//! (handshake, chunk + AMF sessions on both sides, HTTP request heads) for a number of executions; a panic
//! saves its input and fails the run.
//!
//! Run: `cargo run -p relay --release --features test-support --example fuzz_campaign -- [EXECS] [SEED]`
//! (default 10 000 000 executions over all targets, seed 1).

use std::time::Instant;

use relay::fuzz::{mutate, seed_inputs, Rng, TARGETS};

fn main() {
    let mut args = std::env::args().skip(1);
    let execs: u64 = args.next().map(|a| a.parse().expect("EXECS must be a number")).unwrap_or(10_000_000);
    let seed: u64 = args.next().map(|a| a.parse().expect("SEED must be a number")).unwrap_or(1);
    // Quiet panics: a crash is reported once with its input file, not with a backtrace per attempt.
    std::panic::set_hook(Box::new(|_| {}));
    let seeds = seed_inputs();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let t = Instant::now();
    let mut counts = [0u64; TARGETS.len()];
    let mut crashes = 0;
    for i in 0..execs {
        let which = (i % TARGETS.len() as u64) as usize;
        let (name, f) = TARGETS[which];
        let pool = &seeds[which];
        // One in eight inputs is random bytes; the rest are mutations of a valid seed.
        let input: Vec<u8> = if rng.below(8) == 0 {
            (0..rng.below(4096)).map(|_| rng.next_u64() as u8).collect()
        } else {
            let s = &pool[rng.below(pool.len())];
            mutate(&mut rng, s)
        };
        counts[which] += 1;
        if std::panic::catch_unwind(|| f(&input)).is_err() {
            crashes += 1;
            let path = std::env::temp_dir().join(format!("relay-fuzz-crash-{name}-{i}.bin"));
            std::fs::write(&path, &input).expect("saving the crash input");
            eprintln!("CRASH in {name} at execution {i}: input saved to {}", path.display());
        }
    }
    let secs = t.elapsed().as_secs_f64();
    for ((name, _), n) in TARGETS.iter().zip(&counts) {
        println!("{name}: {n} executions");
    }
    println!(
        "total: {execs} executions in {secs:.0} s ({:.0}/s), seed {seed}, crashes: {crashes}",
        execs as f64 / secs
    );
    if crashes > 0 {
        std::process::exit(1);
    }
}
