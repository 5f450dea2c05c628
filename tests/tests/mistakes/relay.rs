//! Mistakes rows for relay: see table.rs for what a row is.

use crate::table::{check, Row};

/// An edge's arguments up to the flag under test (the origin is never dialled: each row is refused first).
fn edge(name: &'static str, extra: &[&str]) -> Row {
    let mut args = vec!["edge", "--listen", "127.0.0.1:0", "--origin", "rtmp://127.0.0.1:1/live"];
    args.extend_from_slice(extra);
    Row::new(name, "relay", &args)
}

#[test]
fn relay_refuses_bad_flags() {
    check(&[
        Row::new("an edge with nowhere to pull from", "relay", &["edge", "--listen", "127.0.0.1:0"])
            .code(1)
            .says("an edge needs at least one --origin"),
        // Zero limits: each would refuse every connection or pull later, far from its cause.
        edge("no connections at all", &["--max-connections", "0"]).says("0 is not in 1..=1000000"),
        edge("a zero chunk size", &["--max-chunk-size", "0"]).says("0 is not in 128..=16777215"),
        edge("a zero message size", &["--max-message-size", "0"]).says("0 is not in 4096..=16777215"),
        edge("an empty player queue", &["--player-queue", "0"]).says("0 is not in 8..=1000000"),
        edge("an empty stream buffer", &["--stream-buffer-bytes", "0"]).says("0 is not in 65536..=68719476736"),
        edge("an empty player buffer", &["--player-buffer-bytes", "0"]).says("0 is not in 65536..=68719476736"),
        edge("no pulls at all", &["--max-pulls", "0"]).says("0 is not in 1..=100000"),
        edge("no streams per connection", &["--max-streams-per-connection", "0"]).says("0 is not in 1..=10000"),
        edge("a zero source timeout", &["--source-timeout", "0"])
            .code(1)
            .says("--source-timeout 0: a zero timeout would drop every connection"),
        edge("a zero player timeout", &["--player-timeout", "0s"]).code(1).says("--player-timeout 0"),
        edge("a zero handshake timeout", &["--handshake-timeout", "0ms"]).code(1).says("--handshake-timeout 0"),
        edge("a zero connect timeout", &["--connect-timeout", "0"]).code(1).says("--connect-timeout 0"),
        edge("a zero idle-connection timeout", &["--conn-idle-timeout", "0"]).code(1).says("--conn-idle-timeout 0"),
        edge("a zero callback timeout", &["--callback-timeout", "0"]).code(1).says("--callback-timeout 0"),
        edge("a zero reconnect backoff", &["--backoff-min-ms", "0"]).says("0 is not in 1..=600000"),
        // Negative, huge and wrong-typed values.
        edge("a negative pull limit", &["--max-pulls=-1"]).says("-1 is not in 1..=100000"),
        edge("a message size RTMP cannot carry", &["--max-message-size", "99999999999"]).says("is not in 4096..="),
        edge("a chunk size past RTMP's limit", &["--max-chunk-size", "4294967295"]).says("is not in 128..="),
        edge("a huge per-IP limit", &["--max-connections-per-ip", "5000000"]).says("is not in 0..=1000000"),
        edge("a second of merging", &["--merge-ms", "5000"]).says("5000 is not in 0..=1000"),
        edge("a duration past a day", &["--grace-period", "2d"]).says("at most a day"),
        edge("a negative duration", &["--idle-timeout=-5s"]).says("bad duration"),
        edge("a word for a number", &["--player-queue", "many"]).says("invalid digit"),
        edge("a backoff whose maximum is below its minimum", &["--backoff-min-ms", "500", "--backoff-max-ms", "100"])
            .code(1)
            .says("--backoff-max-ms 100 is below --backoff-min-ms 500"),
        // Node names the stream manager would refuse forever.
        edge("a node name with a tilde", &["--node-name", "e~1"]).code(1).says("use 1-64 of A-Z a-z 0-9 - _ ."),
        edge("a 70-character node name", &["--node-name", &*Box::leak("e".repeat(70).into_boxed_str())])
            .code(1)
            .says("use 1-64 of A-Z a-z 0-9 - _ ."),
        // The --config file form of the same mistakes.
        edge("a zero limit in the config file", &["--config", "{dir}/relay.toml"])
            .file("relay.toml", "max-connections = 0\n")
            .says("0 is not in 1..=1000000"),
        edge("an unknown key in the config file", &["--config", "{dir}/relay.toml"])
            .file("relay.toml", "max_pull = 10\n")
            .code(1)
            .says("unknown key \"max_pull\""),
        edge("an origin-only key in an edge's config file", &["--config", "{dir}/relay.toml"])
            .file("relay.toml", "publish-token = \"t\"\n")
            .code(1)
            .says("unknown key \"publish-token\""),
        edge("a boolean for a number in the config file", &["--config", "{dir}/relay.toml"])
            .file("relay.toml", "max-pulls = true\n")
            .code(1)
            .says("max-pulls = true is not a string or a number"),
        edge("a string for a number in the config file", &["--config", "{dir}/relay.toml"])
            .file("relay.toml", "player-queue = \"lots\"\n")
            .says("invalid digit"),
        edge("a fraction for a count in the config file", &["--config", "{dir}/relay.toml"])
            .file("relay.toml", "max-connections = 1.5\n")
            .says("invalid digit"),
        edge("a negative number in the config file", &["--config", "{dir}/relay.toml"])
            .file("relay.toml", "max-pulls = -3\n")
            .says("-3 is not in 1..=100000"),
        edge("a config file that does not exist", &["--config", "{dir}/missing.toml"]).code(1).says("missing.toml"),
        edge("a config file that is not TOML", &["--config", "{dir}/relay.toml"])
            .file("relay.toml", "max-pulls: 3\n")
            .code(1)
            .says("is not valid TOML"),
    ]);
}
