//! Logging set-up of every binary: tracing to stderr, filtered by `RUST_LOG` or the binary's default.

/// Installs the global subscriber. `default` applies when `RUST_LOG` is unset or unreadable, e.g.
/// `"info,netlink_packet_route=error"`. A second call (tests) is ignored.
pub fn init(default: &str) {
    // A shell with RUST_BACKTRACE=1 would make every anyhow error a daemon reports (a bad flag, a missing file) end
    // in a stack trace the operator has to read past. Library backtraces stay available through RUST_LIB_BACKTRACE;
    // panics still honour RUST_BACKTRACE. Called first thing in main, before any thread reads the environment.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
