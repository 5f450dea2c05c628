//! App and stream names and client strings: what is accepted, and how logs and refusals show them.

/// The rule for app and stream names (1 to [`MAX_NAME_LEN`] bytes of ASCII letters, digits and `-_.~`, not
/// starting with a dot) is part of the contract: a stream manager checks the sources it sends with it.
pub use api_types::relay::{valid_name, MAX_NAME_LEN};

/// Longest `?query` (tokens and the like) accepted after an app or stream name.
pub const MAX_QUERY_LEN: usize = 2048;
/// Longest tcUrl accepted in `connect`.
pub const MAX_TC_URL_LEN: usize = 4096;
/// Characters of a client's string that a log line or refusal shows.
const SHOWN_CHARS: usize = 64;

/// A client's string as logs and refusals show it: at most [`SHOWN_CHARS`] characters, escaped (quotes, control
/// characters, non-ASCII), with the length when cut, so a client cannot grow the log or forge lines in it.
pub fn shown(s: &str) -> String {
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        if i == SHOWN_CHARS {
            out.push_str(&format!("\"... ({} bytes)", s.len()));
            return out;
        }
        out.extend(c.escape_default());
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(shown("a\"b\n\u{e9}"), r#""a\"b\n\u{e9}""#);
        assert_eq!(shown(&"x".repeat(65_000)), format!("\"{}\"... (65000 bytes)", "x".repeat(64)));
        for ok in ["test", "a", "cam-1_hd.v2~x", &"x".repeat(MAX_NAME_LEN)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "..", "a/b", "a b", "a?b", "ü", "a\0", &"x".repeat(MAX_NAME_LEN + 1)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
