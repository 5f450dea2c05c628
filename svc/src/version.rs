//! The one version string of every binary and `/status`: the product version and the git commit it was built from.

/// The product version (the workspace's), e.g. `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the binaries were built from (7 hex digits), or `unknown` outside a git tree.
pub const COMMIT: &str = env!("SVC_GIT_COMMIT");

/// What `--version` prints after the program's name: `0.1.0 (1a2b3c4)`.
pub const LONG: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SVC_GIT_COMMIT"), ")");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_is_version_and_commit() {
        assert_eq!(LONG, format!("{VERSION} ({COMMIT})"));
        assert!(VERSION.split('.').count() == 3, "{VERSION}");
        assert!(
            COMMIT == "unknown" || (COMMIT.len() == 7 && COMMIT.bytes().all(|b| b.is_ascii_hexdigit())),
            "{COMMIT}"
        );
    }
}
