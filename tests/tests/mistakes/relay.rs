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
        edge("no connections at all", &["--max-connections", "0"])
            .code(1)
            .says("--max-connections 0 is out of range 1..=1000000"),
        edge("a zero chunk size", &["--max-chunk-size", "0"])
            .code(1)
            .says("--max-chunk-size 0 is out of range 128..=16777215"),
        edge("a zero message size", &["--max-message-size", "0"])
            .code(1)
            .says("--max-message-size 0 is out of range 4096..=16777215"),
        edge("an empty player queue", &["--player-queue", "0"])
            .code(1)
            .says("--player-queue 0 is out of range 8..=1000000"),
        // Formerly clamped up to 8: refused with the reason now.
        edge("a player queue below one frame's messages", &["--player-queue", "7"])
            .code(1)
            .says("--player-queue 7 is out of range 8..=1000000: fewer messages than one frame"),
        edge("an empty stream buffer", &["--stream-buffer-bytes", "0"])
            .code(1)
            .says("--stream-buffer-bytes 0 is out of range 65536..=68719476736"),
        edge("an empty player buffer", &["--player-buffer-bytes", "0"])
            .code(1)
            .says("--player-buffer-bytes 0 is out of range 65536..=68719476736"),
        edge("no pulls at all", &["--max-pulls", "0"]).code(1).says("--max-pulls 0 is out of range 1..=100000"),
        // Formerly clamped up to 1: refused with the reason now.
        edge("no streams per connection", &["--max-streams-per-connection", "0"])
            .code(1)
            .says("--max-streams-per-connection 0 is out of range 1..=10000: 0 would refuse every play"),
        edge("a zero source timeout", &["--source-timeout", "0"])
            .code(1)
            .says("--source-timeout 0s is out of range 1ms..=86400s: a zero timeout would drop every connection"),
        edge("a zero player timeout", &["--player-timeout", "0s"]).code(1).says("--player-timeout 0"),
        edge("a zero handshake timeout", &["--handshake-timeout", "0ms"]).code(1).says("--handshake-timeout 0"),
        // A drain past an hour outlasts any supervisor's stop timeout: refused, not clamped.
        edge("a drain longer than an hour", &["--drain-timeout", "61m"])
            .code(1)
            .says("--drain-timeout 3660s is out of range 0s..=3600s"),
        edge("a zero connect timeout", &["--connect-timeout", "0"]).code(1).says("--connect-timeout 0"),
        edge("a zero idle-connection timeout", &["--conn-idle-timeout", "0"]).code(1).says("--conn-idle-timeout 0"),
        edge("a zero callback timeout", &["--callback-timeout", "0"]).code(1).says("--callback-timeout 0"),
        // Formerly clamped: refused with the reason now.
        edge("a zero reconnect backoff", &["--backoff-min-ms", "0"])
            .code(1)
            .says("--backoff-min-ms 0 is out of range 1..=600000: 0 would redial an origin in a busy loop"),
        edge("a reconnect backoff past ten minutes", &["--backoff-max-ms", "900000"])
            .code(1)
            .says("--backoff-max-ms 900000 is out of range 1..=600000"),
        // Negative, huge and wrong-typed values.
        edge("a negative pull limit", &["--max-pulls=-1"]).says("invalid value '-1' for '--max-pulls"),
        edge("a message size RTMP cannot carry", &["--max-message-size", "99999999999"])
            .says("99999999999 is not in 0..=4294967295"),
        edge("a chunk size past RTMP's limit", &["--max-chunk-size", "4294967295"])
            .code(1)
            .says("is out of range 128..="),
        edge("a huge per-IP limit", &["--max-connections-per-ip", "5000000"])
            .code(1)
            .says("is out of range 0..=1000000"),
        edge("five seconds of merging", &["--merge-ms", "5000"])
            .code(1)
            .says("--merge-ms 5000 is out of range 0..=1000: past a second"),
        edge("just over the merge maximum", &["--merge-ms", "1001"])
            .code(1)
            .says("--merge-ms 1001 is out of range 0..=1000"),
        edge("merging past the maximum in the config file", &["--config", "{dir}/relay.toml"])
            .file("relay.toml", "merge-ms = 2000\n")
            .code(1)
            .says("--merge-ms 2000 is out of range 0..=1000"),
        edge("a duration past a day", &["--grace-period", "2d"]).says("at most a day"),
        edge("a negative duration", &["--idle-timeout=-5s"]).says("bad duration"),
        edge("a word for a number", &["--player-queue", "many"]).says("invalid digit"),
        edge("a backoff whose maximum is below its minimum", &["--backoff-min-ms", "500", "--backoff-max-ms", "100"])
            .code(1)
            .says("--backoff-max-ms 100 is below --backoff-min-ms 500"),
        // Every smd of an HA deployment in one --manager: each URL is checked, and a bad one is named by position.
        edge(
            "a bad second stream manager URL",
            &["--api", "127.0.0.1:0", "--api-token", "0123456789abcdef", "--manager", "http://127.0.0.1:1,127.0.0.1:2"],
        )
        .code(1)
        .says("--manager \"http://127.0.0.1:1,127.0.0.1:2\": URL 2 of 2"),
        edge(
            "an empty stream manager URL in the list",
            &["--api", "127.0.0.1:0", "--api-token", "0123456789abcdef", "--manager", "http://127.0.0.1:1,"],
        )
        .code(1)
        .says("URL 2 of 2 is empty"),
        edge(
            "a bad stream manager URL in a repeated --manager",
            &[
                "--api",
                "127.0.0.1:0",
                "--api-token",
                "0123456789abcdef",
                "--manager",
                "http://127.0.0.1:1",
                "--manager",
                "http://[::1",
            ],
        )
        .code(1)
        .says("--manager \"http://127.0.0.1:1,http://[::1\": URL 2 of 2"),
        // Node names the stream manager would refuse forever.
        edge("a node name with a tilde", &["--node-name", "e~1"]).code(1).says("use 1-64 of A-Z a-z 0-9 - _ ."),
        edge("a 70-character node name", &["--node-name", &*Box::leak("e".repeat(70).into_boxed_str())])
            .code(1)
            .says("use 1-64 of A-Z a-z 0-9 - _ ."),
        // The --config file form of the same mistakes.
        edge("a zero limit in the config file", &["--config", "{dir}/relay.toml"])
            .file("relay.toml", "max-connections = 0\n")
            .code(1)
            .says("--max-connections 0 is out of range 1..=1000000"),
        edge("an unknown key in the config file", &["--config", "{dir}/relay.toml"])
            .file("relay.toml", "max_pull = 10\n")
            .code(1)
            .says("relay.toml line 1: unknown key `max_pull`; keys are the long flags of `relay edge --help`"),
        edge("an origin-only key in an edge's config file", &["--config", "{dir}/relay.toml"])
            .file("relay.toml", "publish-token = \"t\"\n")
            .code(1)
            .says("unknown key `publish-token`"),
        edge("a boolean for a number in the config file", &["--config", "{dir}/relay.toml"])
            .file("relay.toml", "max-pulls = true\n")
            .code(1)
            .says("relay.toml line 1): invalid type: boolean `true`, expected u32"),
        edge("a string for a number in the config file", &["--config", "{dir}/relay.toml"])
            .file("relay.toml", "player-queue = \"lots\"\n")
            .code(1)
            .says("invalid type: string \"lots\", expected u32"),
        edge("a fraction for a count in the config file", &["--config", "{dir}/relay.toml"])
            .file("relay.toml", "max-connections = 1.5\n")
            .code(1)
            .says("invalid type: floating point `1.5`, expected u32"),
        edge("a negative number in the config file", &["--config", "{dir}/relay.toml"])
            .file("relay.toml", "max-pulls = -3\n")
            .code(1)
            .says("invalid value: integer `-3`, expected u32"),
        edge("a config file that does not exist", &["--config", "{dir}/missing.toml"]).code(1).says("missing.toml"),
        edge("a config file that is not TOML", &["--config", "{dir}/relay.toml"])
            .file("relay.toml", "max-pulls: 3\n")
            .code(1)
            .says("relay.toml line 1: not valid TOML"),
        // --check: a broken file is refused with the reason, a good one is accepted with a summary, nothing bound.
        Row::new(
            "--check of a file with a value out of range",
            "relay",
            &["edge", "--config", "{dir}/relay.toml", "--check"],
        )
        .file("relay.toml", "listen = \"127.0.0.1:0\"\norigin = [\"rtmp://127.0.0.1:1/live\"]\nplayer-queue = 4\n")
        .code(1)
        .says("--player-queue 4 is out of range 8..=1000000"),
        Row::new("--check of a good file", "relay", &["edge", "--config", "{dir}/relay.toml", "--check"])
            .file("relay.toml", "listen = \"127.0.0.1:0\"\norigin = [\"rtmp://127.0.0.1:1/live\"]\nmerge-ms = 1000\n")
            .code(0)
            .says("ok: relay edge on 127.0.0.1:0, merge 1000 ms"),
    ]);
}
