//! The mistakes suite (issue 29): every command and config of the project run with the mistakes operators make
//! (typos, zero or huge limits, missing files and directories, odd addresses, a second instance). One row per case:
//! what is run, the exit code and message fragment it must give, and (for rows against a running daemon) the state
//! that must be unchanged afterwards. Most rows need no namespace; one file per daemon so rows grow beside the flags.
mod lbd;
mod relay;
mod smd;
mod table;

/// An operator's shell may export RUST_BACKTRACE=1: a daemon's refusal must still read as one line of reason, not
/// end in a stack trace.
#[test]
fn refusals_carry_no_stack_trace_under_rust_backtrace() {
    let scratch = table::Scratch::new("backtrace");
    let missing = scratch.path().join("missing.toml").display().to_string();
    for (bin, args) in [
        ("smd", vec!["--config", missing.as_str()]),
        ("relay", vec!["edge", "--listen", "127.0.0.1:0"]),
        ("lbd", vec!["--iface", "lo", "--config", missing.as_str(), "--no-pin", "--socket", "/nonexistent/dir/s"]),
    ] {
        let out = std::process::Command::new(lb_lab::bin_path(bin))
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .env_remove("RUST_LIB_BACKTRACE")
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bin} {args:?} must refuse: {text}");
        assert!(text.contains("Error: "), "{bin} {args:?} gives its reason: {text}");
        assert!(!text.contains("Stack backtrace"), "{bin} {args:?} printed a stack trace: {text}");
    }
}
