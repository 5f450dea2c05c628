//! `cargo xtask setup | run | test | bench | dist`: installs what a fresh machine lacks, runs the LB (demo lab or a
//! real interface), runs every test, runs the benchmarks and builds the Debian packages.
mod demo;
mod dist;
mod ebpfobj;
mod setup;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const USAGE: &str = "usage: cargo xtask <command>
  setup                 install the eBPF toolchain (rust-src, bpf-linker), missing Debian tools and the browser
                        tests' npm packages (tests/browser); idempotent
  run                   demo lab in network namespaces: client, LB (lbd) and three real servers behind one VIP
  run -- --ha           the same with the stream manager in high availability: three etcd members, two smd
  run -- LBD-ARGS...    run lbd on a real interface, e.g. `cargo xtask run -- --iface eth0 --config lb.toml`
  test                  format and lint gates, then every test: unit, packet fixtures, network-namespace
                        end-to-end, relay (needs root)
  lint                  only the gates: `cargo fmt --check` and clippy with warnings as errors
  bench xdp|conntable|sync|vip|relay|hls   benchmarks (see BENCHMARKS.md)
  bench hls -- [--clients N] [--ll-share 0.5] [--secs S] [--runs R]   HLS players against our edge and
                        nginx-rtmp's HLS in the same run
  bench xdp --compare REV_OR_OBJECT [--runs N]   every path of this tree's XDP program against a baseline
                        (a git revision built here, or an eBPF object file), interleaved in one run, with ratios
  fuzz dataplane [SECONDS]   malformed-packet campaign through the XDP program: 10M frames, or SECONDS
  fuzz relay [SECONDS]  run each relay cargo-fuzz target (libFuzzer, nightly) for SECONDS (default 60)
  fuzz [SECONDS]        both
  dist [--out DIR] [--debug] [--bin-dir DIR]   Debian packages lbd (lbd, lbctl), relay and smd (smd, smctl) into
                        DIR (default target/dist): release binaries (--debug: debug ones; --bin-dir: the ones in DIR,
                        building nothing), units, default configs, man pages, completions (see README)";

fn main() {
    if let Err(e) = real_main() {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        println!("{USAGE}");
        return Ok(());
    }
    let cmd = args.remove(0);
    if args.first().map(String::as_str) == Some("--") {
        args.remove(0);
    }
    match cmd.as_str() {
        "setup" => setup::run(),
        "run" => {
            setup::run()?;
            build(true)?;
            if args.is_empty() {
                demo::run(&bin_dir(true), false)
            } else if args == ["--ha"] {
                demo::run(&bin_dir(true), true)
            } else {
                run_lbd(&args)
            }
        }
        "test" => test(&args),
        "lint" => {
            setup::run()?;
            lint()
        }
        "bench" => bench(&args),
        "fuzz" => fuzz(&args),
        "dist" => dist::run(&args),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn bin_dir(release: bool) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    target.join(if release { "release" } else { "debug" })
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

pub fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

/// Builds every binary of the workspace (lbd, lbctl, lb-xdp-pass, lab-httpd, relay...).
fn build(release: bool) -> Result<()> {
    let mut c = cargo();
    c.args(["build", "--bins"]);
    if release {
        c.arg("--release");
    }
    status(&mut c)
}

fn is_root() -> bool {
    // SAFETY: trivial libc call.
    unsafe { libc::geteuid() == 0 }
}

fn run_lbd(args: &[String]) -> Result<()> {
    let lbd = bin_dir(true).join("lbd");
    let err = std::os::unix::process::CommandExt::exec(Command::new(&lbd).args(args));
    Err(err).with_context(|| format!("starting {}", lbd.display()))
}

fn test(args: &[String]) -> Result<()> {
    setup::run()?;
    if !is_root() {
        bail!("the tests create network namespaces and load XDP programs: run `cargo xtask test` as root");
    }
    lint()?;
    lb_lab::cleanup_stale();
    build(false)?;
    // Tests that touch kernel state run one at a time (namespaces, XDP attachments, fixed ports inside labs).
    let mut c = cargo();
    c.env("LB_BIN_DIR", bin_dir(false)).args(["test", "--no-fail-fast"]).args(args).args(["--", "--test-threads=1"]);
    let res = status(&mut c);
    lb_lab::cleanup_stale();
    res
}

/// The gates every change passes before its tests run: one format (rustfmt.toml, the eBPF crate included) and no
/// clippy warning in the host crates. The eBPF crate is not linted here: a host clippy trips on its bin's panic
/// handler, and it has to be linted for its own target (`cargo +nightly clippy --target bpfel-unknown-none`).
fn lint() -> Result<()> {
    status(cargo().args(["fmt", "--all", "--check"]))
        .context("formatting differs from rustfmt.toml: run `cargo fmt --all`")?;
    status(cargo().args(["clippy", "--workspace", "--exclude", "lb-ebpf", "--all-targets", "--", "-D", "warnings"]))
        .context("clippy found warnings (fix them, or `#[expect(lint, reason = \"...\")]` where the code is right)")
}

/// `cargo xtask fuzz [dataplane|relay] [SECONDS]`: the dataplane's malformed-packet campaign through
/// BPF_PROG_TEST_RUN (10M frames, or as many as SECONDS allow) and/or the relay's cargo-fuzz targets (SECONDS each,
/// default 60; a crash fails the command and leaves its input under relay/fuzz/artifacts). Without a target, both.
fn fuzz(args: &[String]) -> Result<()> {
    let (which, rest) = match args.first().map(String::as_str) {
        Some(w @ ("dataplane" | "relay")) => (Some(w), &args[1..]),
        _ => (None, args),
    };
    let secs: Option<u32> = match rest.first() {
        Some(s) => Some(s.parse().with_context(|| format!("fuzz SECONDS: {s:?} is not a number"))?),
        None => None,
    };
    setup::run()?;
    if which != Some("relay") {
        if !is_root() {
            bail!("the dataplane campaign loads XDP programs: run `cargo xtask fuzz dataplane` as root");
        }
        // 10 million frames; with SECONDS, as many as fit in that time.
        let mut c = cargo();
        c.args(["bench", "-p", "lb-tests", "--bench", "xdp_fuzz", "--"]);
        if let Some(s) = secs {
            c.args(["--secs", &s.to_string(), "--frames", &u64::MAX.to_string()]);
        }
        status(&mut c)?;
    }
    if which == Some("dataplane") {
        return Ok(());
    }
    setup::cargo_fuzz()?;
    let dir = root().join("relay/fuzz");
    let secs = secs.unwrap_or(60);
    for target in ["server_handshake", "server_session", "client_session"] {
        eprintln!("xtask fuzz: {target} for {secs} s");
        status(Command::new("cargo").current_dir(&dir).args([
            "+nightly",
            "fuzz",
            "run",
            target,
            "--",
            &format!("-max_total_time={secs}"),
        ]))?;
    }
    Ok(())
}

fn bench(args: &[String]) -> Result<()> {
    let which = args.first().map(String::as_str).unwrap_or("");
    let mut rest = args.get(1..).unwrap_or_default();
    // `cargo xtask bench relay -- --players 100` passes the benchmark's own flags after a `--`.
    if rest.first().map(String::as_str) == Some("--") {
        rest = &rest[1..];
    }
    setup::run()?;
    match which {
        "xdp" => match rest.iter().position(|a| a == "--compare") {
            // `--compare REV_OR_OBJECT`: both programs loaded by one bench binary and measured interleaved
            // (tests/benches/xdp_compare.rs); a revision is built into an object first (ebpfobj.rs).
            Some(i) => {
                let spec = rest.get(i + 1).context("--compare needs a git revision or an eBPF object file")?;
                let (object, label) = ebpfobj::resolve(spec)?;
                let mut c = cargo();
                c.args(["bench", "-p", "lb-tests", "--bench", "xdp_compare", "--"])
                    .arg("--baseline")
                    .arg(&object)
                    .args(["--label", &label])
                    .args(rest.iter().enumerate().filter(|(j, _)| *j != i && *j != i + 1).map(|(_, a)| a));
                status(&mut c)
            }
            None => {
                let mut c = cargo();
                c.args(["bench", "-p", "lb-tests", "--bench", "xdp", "--"]).args(rest);
                status(&mut c)
            }
        },
        "conntable" => {
            let mut c = cargo();
            c.args(["bench", "-p", "lb-tests", "--bench", "conntable", "--"]).args(rest);
            status(&mut c)
        }
        "vip" => {
            build(false)?;
            let mut c = cargo();
            c.env("LB_BIN_DIR", bin_dir(false)).args(["bench", "-p", "lb-tests", "--bench", "vip", "--"]).args(rest);
            status(&mut c)
        }
        "cluster" => {
            build(false)?;
            let mut c = cargo();
            c.env("LB_BIN_DIR", bin_dir(false))
                .args(["bench", "-p", "lb-tests", "--bench", "cluster", "--"])
                .args(rest);
            status(&mut c)
        }
        "sync" => {
            let mut c = cargo();
            c.args(["bench", "-p", "lb-tests", "--bench", "sync", "--"]).args(rest);
            status(&mut c)
        }
        "relay" => {
            build(true)?;
            let mut c = cargo();
            c.env("LB_BIN_DIR", bin_dir(true)).args(["bench", "-p", "relay", "--bench", "relay", "--"]).args(rest);
            status(&mut c)
        }
        // The bench builds and starts the relay binary itself (CARGO_BIN_EXE_relay), nginx and ffmpeg.
        "hls" => status(cargo().args(["bench", "-p", "relay", "--bench", "hls", "--"]).args(rest)),
        _ => bail!(
            "bench what? `cargo xtask bench xdp [--compare REV]`, `conntable`, `sync`, `vip`, `cluster`, `relay` or `hls`"
        ),
    }
}
