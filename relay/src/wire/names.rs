//! App and stream names and client strings: what is accepted, and how logs and refusals show them.

/// Longest app or stream name accepted.
pub const MAX_NAME_LEN: usize = 128;

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

/// Whether `name` is an acceptable app or stream name: 1 to [`MAX_NAME_LEN`] bytes of ASCII letters, digits
/// and `-_.~`, not starting with a dot. Checked before anything is allocated for a name (a stream, a pull), so a
/// client cannot make us hold arbitrary strings, and names stay safe in URLs, logs and metric labels.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
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
