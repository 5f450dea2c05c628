//! The one rule for cluster names (nodes, groups, pools), shared by the manager that keeps them and the relay that
//! announces its own, so a name one side accepts the other never refuses.

/// Longest cluster name.
pub const MAX_CLUSTER_NAME_LEN: usize = 64;

/// The rule in words, for refusals.
pub const CLUSTER_NAME_RULE: &str = "use 1-64 of A-Z a-z 0-9 - _ .";

/// Whether `s` is a valid cluster name: 1 to 64 bytes of ASCII letters, digits and `-_.`; safe in URLs, logs and
/// metric labels.
pub fn valid_cluster_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CLUSTER_NAME_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names() {
        for ok in ["e1", "edge-1.dc_2", &"x".repeat(64)] {
            assert!(valid_cluster_name(ok), "{ok}");
        }
        for bad in ["", "e~1", "a b", "a/b", "ü", &"x".repeat(65)] {
            assert!(!valid_cluster_name(bad), "{bad}");
        }
    }
}
