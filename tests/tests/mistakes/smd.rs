//! Mistakes rows for smd and smctl: see table.rs for what a row is.

use crate::table::{check, Row};

/// A config with one good token, extended by each row.
const BASE: &str = "listen = \"127.0.0.1:1\"\ntoken_file = \"token\"\n";
const TOKEN: &str = "0123456789abcdef-token\n";

#[test]
fn smd_refuses_bad_config() {
    let with = |extra: &str| format!("{BASE}{extra}");
    check(&[
        Row::new("a config file that does not exist", "smd", &["--config", "{dir}/missing.toml"])
            .code(1)
            .says("missing.toml: No such file or directory"),
        Row::new("an unknown key", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file("smd.toml", "bogus_key = 1\n")
            .code(1)
            .says("smd.toml line 1: unknown key `bogus_key`"),
        Row::new("a corrupt state file, in --check as at the start", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file("smd.toml", &with("state_file = \"state.json\"\n"))
            .file("token", TOKEN)
            .file("state.json", "{\"active\": ")
            .code(1)
            .says("state.json is corrupt (EOF while parsing"),
        Row::new("a state file beside an etcd store", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file(
                "smd.toml",
                &with("state_file = \"s.json\"\n[store]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\n"),
            )
            .file("token", TOKEN)
            .code(1)
            .says("the state lives in etcd"),
        Row::new("an etcd lease shorter than etcd's own election", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file(
                "smd.toml",
                &with("[store]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\nlease_ttl = \"1s\"\n"),
            )
            .file("token", TOKEN)
            .code(1)
            .says("store.lease_ttl 1s is out of range"),
        Row::new("etcd endpoints that are not URLs", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file("smd.toml", &with("[store]\nkind = \"etcd\"\nendpoints = [\"10.0.0.5\"]\n"))
            .file("token", TOKEN)
            .code(1)
            .says("store.endpoints"),
        Row::new("a corrupt state file at the start", "smd", &["--config", "{dir}/smd.toml"])
            .file("smd.toml", &with("state_file = \"state.json\"\n"))
            .file("token", TOKEN)
            .file("state.json", "{\"active\": ")
            .code(1)
            .says("move it away to start from the nodes"),
        Row::new("a state file whose directory is a file", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file("smd.toml", &with("state_file = \"var/state.json\"\n"))
            .file("token", TOKEN)
            .file("var", "a file, not a directory\n")
            .code(1)
            .says("cannot create its directory"),
        Row::new("a state file that is a directory", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file("smd.toml", &with("state_file = \"var\"\n"))
            .file("token", TOKEN)
            .file("var/x", "")
            .code(1)
            .says("is a directory; name a file in it"),
        Row::new("an LB weight lbd refuses", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file("smd.toml", &with("[lb]\napi = \"http://127.0.0.1:9400\"\nservices = [\"10.0.0.100:1935\"]\nweight = 70000\n"))
            .file("token", TOKEN)
            .code(1)
            .says("lb.weight 70000 is out of range 1..=65535"),
        Row::new("a source URL the relay refuses", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file(
                "smd.toml",
                &with(
                    "[[node]]\nname = \"o1\"\nrole = \"origin\"\napi = \"http://127.0.0.1:8081\"\nrtmp = \"127.0.0.1:1935\"\n\
                     [[group]]\nname = \"g\"\napp = \"live\"\nmembers = [{ node = \"o1\", priority = 1 }]\n\
                     sources = [{ key = \"cam\", url = \"rtsp://[::1:554/x\" }]\n",
                ),
            )
            .file("token", TOKEN)
            .code(1)
            .says("URL \"rtsp://[::1:554/x\" does not parse"),
        Row::new("a key's slate before its backup", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file(
                "smd.toml",
                &with(
                    "[[node]]\nname = \"o1\"\nrole = \"origin\"\napi = \"http://127.0.0.1:8081\"\nrtmp = \"127.0.0.1:1935\"\n\
                     [[group]]\nname = \"g\"\napp = \"live\"\nmembers = [{ node = \"o1\", priority = 1 }]\n\
                     sources = [{ key = \"cam\", role = \"main\" }, { key = \"cam\", role = \"slate\", url = \"testcard\" }, \
                     { key = \"cam\", role = \"backup\" }]\n",
                ),
            )
            .file("token", TOKEN)
            .code(1)
            .says("source \"cam\": bad sources: source 2: the slate must be the last source"),
        Row::new("a source_timeout shorter than an encoder's jitter", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file(
                "smd.toml",
                &with(
                    "[[node]]\nname = \"o1\"\nrole = \"origin\"\napi = \"http://127.0.0.1:8081\"\nrtmp = \"127.0.0.1:1935\"\n\
                     [[group]]\nname = \"g\"\napp = \"live\"\nmembers = [{ node = \"o1\", priority = 1 }]\n\
                     source_timeout = \"10ms\"\nsources = [{ key = \"cam\", role = \"main\" }, { key = \"cam\", role = \"backup\" }]\n",
                ),
            )
            .file("token", TOKEN)
            .code(1)
            .says("source_timeout 10ms is out of range 100ms..=60s"),
        Row::new("a huge registration cap", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file("smd.toml", &with("max_registered = 1000000\n"))
            .file("token", TOKEN)
            .code(1)
            .says("max_registered 1000000 is out of range 0..=10000: each node costs memory"),
        Row::new("registrations expiring before a keepalive could answer", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file("smd.toml", &with("registration_expiry = \"1s\"\n"))
            .file("token", TOKEN)
            .code(1)
            .says("registration_expiry 1s is out of range 10s..=86400s: at least node_down_after"),
        // Formerly clamped up (events_kept to 10, console_refresh to 1s, an autoscaled pool's cooldown to 1s):
        // refused with the range and why now.
        Row::new("too few events kept", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file("smd.toml", &with("events_kept = 3\n"))
            .file("token", TOKEN)
            .code(1)
            .says("events_kept 3 is out of range 10..=1000000"),
        Row::new("a console refresh under a second", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file("smd.toml", &with("console_refresh = \"200ms\"\n"))
            .file("token", TOKEN)
            .code(1)
            .says("console_refresh 200ms is out of range 1s..=3600s"),
        Row::new("an autoscaling cooldown of zero", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file(
                "smd.toml",
                &with(
                    "[[pool]]\nname = \"edges\"\nmax = 4\n[pool.scale]\ncapacity = 100.0\nscale_out_at = 0.8\n\
                     scale_in_at = 0.3\nprovider = \"/bin/true\"\ncooldown = \"0s\"\n",
                ),
            )
            .file("token", TOKEN)
            .code(1)
            .says("pool edges: scale.cooldown 0s is out of range 1s..=86400s"),
        Row::new("a node-down delay under one keepalive", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file("smd.toml", &with("node_down_after = \"1s\"\n"))
            .file("token", TOKEN)
            .code(1)
            .says("node_down_after 1s is out of range 3s..=86400s"),
        Row::new("a history sample of ten minutes", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file("smd.toml", &with("history_sample = \"10m\"\n"))
            .file("token", TOKEN)
            .code(1)
            .says("history_sample 600s is out of range 1s..=300s"),
        Row::new("--check of a file that is not TOML", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file("smd.toml", &with("keepalive = \n"))
            .file("token", TOKEN)
            .code(1)
            .says("smd.toml line 3: not valid TOML"),
        Row::new("--check of a good file", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file("smd.toml", &with("startup_hold = \"0s\"\nhistory_sample = \"60s\"\n"))
            .file("token", TOKEN)
            .code(0)
            .says("ok: "),
    ]);
}

#[test]
fn smctl_refuses_bad_arguments() {
    check(&[
        Row::new("a check without its NAME", "smctl", &["--token-file", "{dir}/token", "check", "group"])
            .file("token", TOKEN)
            .code(3)
            .says("STREAM UNKNOWN - bad argument: the following required arguments were not provided: <NAME>"),
        Row::new(
            "the manager's check with a bad range",
            "smctl",
            &["--token-file", "{dir}/token", "check", "manager", "-w", "nope"],
        )
        .file("token", TOKEN)
        .code(3)
        .says("MANAGER UNKNOWN - bad argument: --warning"),
        Row::new(
            "the manager's check with an unknown flag",
            "smctl",
            &["--token-file", "{dir}/token", "check", "manager", "--bogus"],
        )
        .file("token", TOKEN)
        .code(3)
        .says("MANAGER UNKNOWN - bad argument: unexpected argument '--bogus' found"),
        Row::new("no token file", "smctl", &["--api", "http://127.0.0.1:1", "nodes"])
            .code(1)
            .says("--token-file FILE (or SM_TOKEN_FILE) is required"),
        Row::new("remove-node without a name", "smctl", &["--token-file", "{dir}/token", "remove-node"])
            .file("token", TOKEN)
            .code(2)
            .says("<NODE>"),
    ]);
}
