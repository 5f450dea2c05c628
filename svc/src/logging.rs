//! Logging set-up of every binary: tracing to stderr, filtered by `RUST_LOG` or the binary's default.

/// Installs the global subscriber. `default` applies when `RUST_LOG` is unset or unreadable, e.g.
/// `"info,netlink_packet_route=error"`. A second call (tests) is ignored.
pub fn init(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
