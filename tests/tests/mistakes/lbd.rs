//! Mistakes rows for lbd and lbctl: see table.rs for what a row is. Every lbd row here is refused before lbd binds
//! a socket or touches an interface (these rows run on the host); refusals that need a running lbd (a second lbd,
//! reals at a subnet's network address, lbctl into a closed pipe) are in the lab tests second_lbd.rs and health.rs.

use crate::table::{check, Row};

/// One service on 10.0.0.1:80 with `extra` in its table, and a real with `real_extra` in the real's.
fn config(extra: &str, real_extra: &str) -> String {
    format!("[[service]]\nvip = \"10.0.0.1:80\"\n{extra}\n[[service.real]]\naddr = \"10.0.0.2\"\n{real_extra}\n")
}

#[test]
fn lbd_refuses_bad_flags() {
    let lbd = |name, args: &[&str]| Row::new(name, "lbd", args);
    check(&[
        lbd("unknown XDP mode", &["--iface", "lo", "--xdp-mode", "bogus"]).code(2).says("expected native or skb"),
        lbd("announce into main", &["--iface", "lo", "--announce-table", "254"])
            .code(2)
            .says("table 254 is the kernel's main table"),
        lbd("announce into local", &["--iface", "lo", "--announce-table", "255"])
            .code(2)
            .says("table 255 is the kernel's local table"),
        lbd("announce into default", &["--iface", "lo", "--announce-table", "253"]).code(2).says("default table"),
        lbd("announce into table 0", &["--iface", "lo", "--announce-table", "0"]).code(2).says("unspec table"),
        lbd("announce into a word", &["--iface", "lo", "--announce-table", "main"])
            .code(2)
            .says("is not a routing table number"),
        lbd(
            "a socket in a directory that cannot exist",
            &["--iface", "lo", "--no-pin", "--socket", "/proc/x/lbd.sock"],
        )
        .code(1)
        .says("control socket /proc/x/lbd.sock: cannot create its directory /proc/x"),
        // Numbers without a range before: each refused with its range and why, before anything is bound.
        lbd("no services at all", &["--iface", "lo", "--max-services", "0"])
            .code(1)
            .says("--max-services 0 is out of range 1..=4096: each service costs a 256 KiB Maglev table"),
        lbd("a gigabyte of Maglev tables and more", &["--iface", "lo", "--max-services", "5000"])
            .code(1)
            .says("--max-services 5000 is out of range 1..=4096"),
        lbd("an empty connection table", &["--iface", "lo", "--conn-table-size", "0"])
            .code(1)
            .says("--conn-table-size 0 is out of range 1..=50000000"),
        lbd("a zero sync rate", &["--iface", "lo", "--sync-rate", "0"]).code(1).says("--sync-rate 0 is out of range"),
        lbd("no health checks in flight", &["--iface", "lo", "--check-concurrency", "0"])
            .code(1)
            .says("--check-concurrency 0 is out of range 1..=10000"),
        lbd("no events kept", &["--iface", "lo", "--events", "0"])
            .code(1)
            .says("--events 0 is out of range 1..=1000000"),
        lbd("sync without peers", &["--iface", "lo", "--sync-listen", "127.0.0.1:7946"])
            .code(1)
            .says("--sync-listen needs --sync-peer"),
        Row::new(
            "a hash seed of nine hex digits",
            "lbd",
            &["--iface", "lo", "--hash-seed-file", "{dir}/seed", "--check"],
        )
        .file("seed", "123456789\n")
        .code(1)
        .says("the hash seed 123456789 has 9 hex digits; it is a 32-bit number, at most 8"),
        // --check: a broken file is refused with the reason, a good one accepted with a summary; nothing touched.
        Row::new("--check of a broken config", "lbd", &["--iface", "lo", "--config", "{dir}/lb.toml", "--check"])
            .file("lb.toml", &config("", "wieght = 2"))
            .code(1)
            .says("unknown field `wieght`"),
        Row::new("--check of a good config", "lbd", &["--config", "{dir}/lb.toml", "--check"])
            .file("lb.toml", &format!("iface = \"lo\"\nmax_services = 8\n{}", config("", "")))
            .code(0)
            .says("ok: lbd on lo (native mode), 1 services, 1 reals, at most 8 services"),
    ]);
}

#[test]
fn lbd_refuses_bad_config() {
    let with = |name, file: &str| {
        Row::new(name, "lbd", &["--iface", "lo", "--no-pin", "--socket", "{dir}/lbd.sock", "--config", "{dir}/lb.toml"])
            .file("lb.toml", file)
            .code(1)
    };
    check(&[
        with("an unknown key in [[service]]", &config("persistant = 300", "")).says("unknown field `persistant`"),
        with("an unknown key at the top", &format!("services = 3\n{}", config("", "")))
            .says("lb.toml line 1: unknown key `services`"),
        with("a setting out of range at the top of the file", &format!("max_services = 0\n{}", config("", "")))
            .says("--max-services 0 is out of range 1..=4096"),
        with("a setting of the wrong type at the top of the file", &format!("events = \"many\"\n{}", config("", "")))
            .says("lb.toml line 1): invalid type: string \"many\""),
        with("an unknown key in [[service.real]]", &config("", "wieght = 2")).says("unknown field `wieght`"),
        with("a broadcast VIP", "[[service]]\nvip = \"255.255.255.255:85\"\n")
            .says("255.255.255.255 cannot be a VIP: it is the limited broadcast address"),
        with("an unspecified VIP", "[[service]]\nvip = \"0.0.0.0:85\"\n")
            .says("0.0.0.0 cannot be a VIP: it is the unspecified address"),
        with("an IPv4-mapped VIP", "[[service]]\nvip = \"[::ffff:10.77.0.100]:80\"\n")
            .says("write the IPv4 address 10.77.0.100 itself"),
        with("a real at the VIP", "[[service]]\nvip = \"10.0.0.1:80\"\n[[service.real]]\naddr = \"10.0.0.1\"\n")
            .says("real 10.0.0.1 is the VIP of service TCP 10.0.0.1:80 itself"),
        with(
            "a check timeout above its interval",
            &config("[service.check]\nkind = \"tcp\"\ninterval = \"2s\"\ntimeout = \"5s\"", ""),
        )
        .says("timeout 5s is longer than the interval 2s"),
        Row::new(
            "an unknown key in the state file",
            "lbd",
            &["--iface", "lo", "--no-pin", "--socket", "{dir}/lbd.sock", "--state", "{dir}/state.toml"],
        )
        .file("state.toml", &config("persistant = 300", ""))
        .code(1)
        .says("unknown field `persistant`"),
    ]);
}

#[test]
fn lbctl_refuses_bad_input() {
    let lbctl = |name, args: &[&str]| Row::new(name, "lbctl", args).code(1);
    check(&[
        lbctl("a broadcast VIP", &["add-service", "255.255.255.255:85"]).says("limited broadcast address"),
        lbctl("an IPv4-mapped VIP", &["add-service", "[::ffff:10.77.0.100]:80"]).says("write the IPv4 address"),
        lbctl("an unspecified VIP", &["add-service", "0.0.0.0:85"])
            .says("0.0.0.0 cannot be a VIP: it is the unspecified"),
        lbctl("a real at the VIP", &["add-real", "10.0.0.1:80", "10.0.0.1"]).says("is the VIP of service"),
        lbctl("a broadcast real", &["add-real", "10.0.0.1:80", "255.255.255.255"]).says("cannot be a real"),
        lbctl("set-check without --check", &["set-check", "10.0.0.1:80"]).says("set-check needs --check KIND"),
        lbctl("set-check with only timing", &["set-check", "10.0.0.1:80", "--check-interval", "2s"])
            .says("set-check needs --check KIND"),
        lbctl(
            "a check timeout above its interval",
            &["set-check", "10.0.0.1:80", "--check", "tcp", "--check-interval", "2s", "--check-timeout", "5s"],
        )
        .says("timeout 5s is longer than the interval 2s"),
        // --socket is global: accepted after the subcommand, so the failure is the missing lbd, not the flag.
        lbctl("a global flag after the subcommand", &["list", "--json", "--socket", "{dir}/none.sock"])
            .says("cannot reach lbd at"),
    ]);
}

#[test]
fn https_check_settings_are_refused_where_they_do_not_fit() {
    let lbctl = |name, args: &[&str]| Row::new(name, "lbctl", args).code(1);
    let lbd = |name, check: &str| {
        Row::new(name, "lbd", &["--iface", "lo", "--no-pin", "--socket", "{dir}/lbd.sock", "--config", "{dir}/lb.toml"])
            .file("lb.toml", &config(&format!("[service.check]\n{check}"), ""))
            .code(1)
    };
    check(&[
        lbctl("insecure on an http check", &["set-check", "10.0.0.1:80", "--check", "http", "--check-insecure"])
            .says("--check-ca-file, --check-insecure and --check-sni only apply to --check https"),
        lbctl(
            "a CA file that does not exist",
            &["set-check", "10.0.0.1:443", "--check", "https", "--check-ca-file", "{dir}/none.pem"],
        )
        .says("none.pem: No such file"),
        lbctl(
            "a CA file without a certificate",
            &["set-check", "10.0.0.1:443", "--check", "https", "--check-ca-file", "{dir}/ca.pem"],
        )
        .file("ca.pem", "not a certificate\n")
        .says("holds no PEM certificate"),
        lbd("a relative CA file", "kind = \"https\"\nca_file = \"ca.pem\"").says("must be an absolute path"),
        lbd("insecure and a CA file", "kind = \"https\"\ninsecure = true\nca_file = \"/etc/ca.pem\"").says("not both"),
        lbd("insecure on a tcp check", "kind = \"tcp\"\ninsecure = true").says("only apply to https checks"),
    ]);
}
