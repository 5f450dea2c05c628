//! lbctl: the command line of lbd, in the spirit of ipvsadm.
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use lb_userspace::api::{self, Request, Response, ServiceView, DEFAULT_SOCKET};
use lb_userspace::model::{self, CheckKind, CheckSpec, Proto, ServiceKey};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use svc::nagios::{Check, Perf, Range, State, Thresholds, Uom};

/// println! that ends lbctl quietly when stdout is closed (`lbctl list | head -1`): the reader has what it wanted.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("lbctl: writing to stdout: {e}");
            std::process::exit(1);
        }
    }};
}

#[derive(Parser, Debug)]
#[command(name = "lbctl", version = svc::version::LONG, about = "Control lbd, the XDP direct-routing load balancer")]
struct Args {
    /// lbd's control socket.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Add a virtual service VIP:PORT (IPv6: [VIP]:PORT), optionally with a health check of its reals.
    AddService {
        service: String,
        #[arg(long, default_value = "tcp")]
        proto: String,
        /// Persistence (ipvsadm -p): a client's new connections go to the real it was last sent to while it was
        /// seen within SECONDS [default: none].
        #[arg(long, value_name = "SECONDS")]
        persistent: Option<u32>,
        #[command(flatten)]
        check: CheckArgs,
    },
    /// Set a service's persistence timeout in seconds (0 turns persistence off).
    SetPersistence {
        service: String,
        seconds: u32,
        #[arg(long, default_value = "tcp")]
        proto: String,
    },
    /// Replace a service's health check (`--check none` removes it).
    SetCheck {
        service: String,
        #[arg(long, default_value = "tcp")]
        proto: String,
        #[command(flatten)]
        check: CheckArgs,
    },
    /// Stop new flows to a real; established flows continue. Its weight is kept for undrain.
    Drain {
        service: String,
        real: String,
        #[arg(long, default_value = "tcp")]
        proto: String,
    },
    /// Let a drained real take new flows again, with its weight.
    Undrain {
        service: String,
        real: String,
        #[arg(long, default_value = "tcp")]
        proto: String,
    },
    /// State changes (real up/down/drained/added/removed, config applied) with time and reason.
    Events {
        #[arg(long)]
        json: bool,
        /// Only the last N events.
        #[arg(long)]
        last: Option<usize>,
    },
    /// Delete a virtual service and its reals.
    DelService {
        service: String,
        #[arg(long, default_value = "tcp")]
        proto: String,
    },
    /// Add a real server to a service.
    AddReal {
        service: String,
        real: String,
        #[arg(long, default_value_t = 1)]
        weight: u32,
        #[arg(long, default_value = "tcp")]
        proto: String,
    },
    /// Change a real server's weight (0 stops new flows; established ones continue).
    EditReal {
        service: String,
        real: String,
        #[arg(long)]
        weight: u32,
        #[arg(long, default_value = "tcp")]
        proto: String,
    },
    /// Remove a real server from a service (its established flows continue; new ones go elsewhere).
    DelReal {
        service: String,
        real: String,
        #[arg(long, default_value = "tcp")]
        proto: String,
    },
    /// Services, reals, weights, MACs and counters (ipvsadm -Ln style).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Maintenance of this LB node: `on` withdraws its VIP announcements (routers stop sending new flows here;
    /// flows already routed here go on), `off` announces the healthy ones again.
    Maintenance { state: String },
    /// Dataplane-wide counters.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Nagios/Icinga plugin: go/no-go for one service. Exits 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN with one status
    /// line and perfdata. Unknown or down (no usable real) services are CRITICAL; lbd not answering or a bad
    /// argument is UNKNOWN.
    Check {
        /// VIP:PORT ([VIP6]:PORT), optionally followed by /tcp or /udp [default: tcp].
        service: String,
        /// Usable reals that make it WARNING, as a Nagios range [default: fewer than all configured reals].
        #[arg(short, long, value_name = "RANGE")]
        warning: Option<String>,
        /// Usable reals that make it CRITICAL, as a Nagios range [default: 1: (none usable)].
        #[arg(short, long, value_name = "RANGE")]
        critical: Option<String>,
        /// Ask lbd's HTTP API (`lbd --api`) instead of the control socket, e.g. http://10.0.0.2:9400, so the
        /// check can run on the monitoring host.
        #[arg(long, value_name = "URL")]
        api: Option<String>,
        /// File whose first line is the API's bearer token (`lbd --api-token-file`).
        #[arg(long, value_name = "FILE", requires = "api")]
        token_file: Option<PathBuf>,
        /// Give up (UNKNOWN) when lbd has not answered by then.
        #[arg(short, long, value_name = "DURATION", default_value = "10s")]
        timeout: String,
    },
}

/// Health-check flags of add-service and set-check.
#[derive(clap::Args, Debug)]
struct CheckArgs {
    /// Health check of the service's reals: tcp, http, https, rtmp, rtsp or none (add-service: none when omitted;
    /// set-check needs it, `--check none` removes the check).
    #[arg(long, value_name = "KIND")]
    check: Option<String>,
    /// Port to check on each real [default: the service port].
    #[arg(long, value_name = "PORT")]
    check_port: Option<u16>,
    /// http, https: path to GET [default: /].
    #[arg(long, value_name = "PATH")]
    check_path: Option<String>,
    /// http, https: status that means healthy [default: 200].
    #[arg(long, value_name = "STATUS")]
    check_expect: Option<u16>,
    /// https: verify the reals' certificates against the CA certificates of this PEM file instead of the system's
    /// roots (lbd reads it: a relative path is made absolute here).
    #[arg(long, value_name = "FILE")]
    check_ca_file: Option<std::path::PathBuf>,
    /// https: accept any certificate (no verification; the default verifies).
    #[arg(long)]
    check_insecure: bool,
    /// https: the name to send (SNI) and verify instead of the real's address, e.g. www.example.com.
    #[arg(long, value_name = "NAME")]
    check_sni: Option<String>,
    /// Time between checks, e.g. 3s or 500ms [default: 3s].
    #[arg(long, value_name = "DURATION")]
    check_interval: Option<String>,
    /// Time a check may take, at most the interval [default: 1s, or the interval when it is shorter].
    #[arg(long, value_name = "DURATION")]
    check_timeout: Option<String>,
    /// Passes in a row that bring a down real back [default: 2].
    #[arg(long, value_name = "N")]
    check_rise: Option<u32>,
    /// Failures in a row that take a real out [default: 3].
    #[arg(long, value_name = "N")]
    check_fall: Option<u32>,
}

impl CheckArgs {
    fn spec(&self) -> Result<CheckSpec> {
        let kind: CheckKind = self.check.as_deref().unwrap_or("none").parse()?;
        let mut c = CheckSpec { kind, ..CheckSpec::default() };
        if kind == CheckKind::None {
            let given = self.check_port.is_some()
                || self.check_path.is_some()
                || self.check_expect.is_some()
                || self.check_interval.is_some()
                || self.check_timeout.is_some()
                || self.check_rise.is_some()
                || self.check_fall.is_some()
                || self.check_ca_file.is_some()
                || self.check_insecure
                || self.check_sni.is_some();
            anyhow::ensure!(!given, "--check-* options need --check tcp|http|https|rtmp|rtsp");
            return Ok(c);
        }
        if kind != CheckKind::Http && kind != CheckKind::Https {
            anyhow::ensure!(
                self.check_path.is_none() && self.check_expect.is_none(),
                "--check-path and --check-expect only apply to --check http or https"
            );
        }
        if kind != CheckKind::Https {
            anyhow::ensure!(
                self.check_ca_file.is_none() && !self.check_insecure && self.check_sni.is_none(),
                "--check-ca-file, --check-insecure and --check-sni only apply to --check https"
            );
        }
        if let Some(f) = &self.check_ca_file {
            // Refused here with the reason rather than by every probe later; lbd reads the file by this path.
            let abs = std::path::absolute(f).with_context(|| format!("--check-ca-file {}", f.display()))?;
            svc::client::Tls::new(&svc::client::Verify::CaFile(abs.clone()), None)
                .with_context(|| "--check-ca-file: give a readable PEM file with the CA certificate(s)".to_string())?;
            c.ca_file = Some(abs);
        }
        c.insecure = self.check_insecure;
        c.sni = self.check_sni.clone();
        c.port = self.check_port;
        if let Some(p) = &self.check_path {
            c.path = p.clone();
        }
        if let Some(e) = self.check_expect {
            c.expect = e;
        }
        if let Some(i) = &self.check_interval {
            c.interval = i.parse()?;
        }
        c.timeout = match &self.check_timeout {
            Some(t) => t.parse()?,
            None => svc::Dur(CheckSpec::default_timeout(c.interval.0)),
        };
        if let Some(r) = self.check_rise {
            c.rise = r;
        }
        if let Some(f) = self.check_fall {
            c.fall = f;
        }
        c.validate()?;
        Ok(c)
    }
}

fn service(s: &str, proto: &str) -> Result<ServiceKey> {
    let proto: Proto = proto.parse()?;
    Ok(ServiceKey::parse(s, proto)?)
}

/// Turns the command line into a request; malformed input fails here, before lbd is asked.
fn request(cmd: &Cmd) -> Result<Request> {
    Ok(match cmd {
        Cmd::AddService { service: s, proto, check, persistent } => Request::AddService {
            service: service(s, proto)?,
            check: check.spec()?,
            persistent: model::check_persistence(persistent.unwrap_or(0))?,
        },
        Cmd::SetPersistence { service: s, seconds, proto } => {
            Request::SetPersistence { service: service(s, proto)?, persistent: model::check_persistence(*seconds)? }
        }
        Cmd::SetCheck { service: s, proto, check } => {
            // Without --check this would replace the check with none: a removal must be asked for.
            anyhow::ensure!(
                check.check.is_some(),
                "set-check needs --check KIND (tcp, http, rtmp or rtsp; `--check none` removes the health check)"
            );
            Request::SetCheck { service: service(s, proto)?, check: check.spec()? }
        }
        Cmd::Drain { service: s, real, proto } => {
            Request::Drain { service: service(s, proto)?, real: model::parse_real(real)? }
        }
        Cmd::Undrain { service: s, real, proto } => {
            Request::Undrain { service: service(s, proto)?, real: model::parse_real(real)? }
        }
        Cmd::Events { last, .. } => Request::Events { last: *last },
        Cmd::DelService { service: s, proto } => Request::DelService { service: service(s, proto)? },
        Cmd::AddReal { service: s, real, weight, proto } => {
            let (service, real) = (service(s, proto)?, model::parse_real(real)?);
            model::check_real_of(service, real)?;
            Request::AddReal { service, real, weight: model::check_weight(*weight)? }
        }
        Cmd::EditReal { service: s, real, weight, proto } => Request::EditReal {
            service: service(s, proto)?,
            real: model::parse_real(real)?,
            weight: model::check_weight(*weight)?,
        },
        Cmd::DelReal { service: s, real, proto } => {
            Request::DelReal { service: service(s, proto)?, real: model::parse_real(real)? }
        }
        Cmd::List { .. } | Cmd::Check { .. } => Request::List,
        Cmd::Stats { .. } => Request::Stats,
        Cmd::Maintenance { state } => Request::Maintenance {
            on: match state.as_str() {
                "on" => true,
                "off" => false,
                other => anyhow::bail!("maintenance {other:?}: expected on or off"),
            },
        },
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    svc::docs::maybe_write(<Args as clap::CommandFactory>::command);
    let args = match Args::try_parse() {
        Ok(a) => a,
        // A monitoring system reads a check's bad arguments as UNKNOWN (3), not as clap's usage error (2).
        Err(e) if is_check(std::env::args().skip(1)) && e.use_stderr() => {
            // clap's message runs over several lines ("...not provided:\n  <SERVICE>"); a status line is one.
            let text = e.to_string();
            let words: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more"))
                .flat_map(str::split_whitespace)
                .collect();
            let why = words.join(" ");
            let why = why.trim_start_matches("error: ");
            return Check::unknown(CHECK_NAME, format!("bad argument: {why} (see lbctl check --help)")).report();
        }
        Err(e) => e.exit(),
    };
    if let Cmd::Check { .. } = &args.cmd {
        return check(&args).await.report();
    }
    match run(&args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lbctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<ExitCode> {
    let req = request(&args.cmd)?;
    let resp = api::call(&args.socket, &req).await?;
    if !resp.ok {
        eprintln!("lbctl: {}", resp.message);
        return Ok(ExitCode::FAILURE);
    }
    match &args.cmd {
        Cmd::List { json: true } => out!("{}", serde_json::to_string_pretty(&resp.list.unwrap_or_default())?),
        Cmd::List { json: false } => print_list(&resp),
        Cmd::Stats { json: true } => out!("{}", serde_json::to_string_pretty(&resp.stats)?),
        Cmd::Stats { json: false } => print_stats(&resp),
        Cmd::Events { json: true, .. } => {
            out!("{}", serde_json::to_string_pretty(&resp.events.unwrap_or_default())?)
        }
        Cmd::Events { json: false, .. } => {
            for e in resp.events.unwrap_or_default() {
                let what = [e.service.clone(), e.real.map(|r| r.to_string())]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                out!("{:>5} {} {:<15} {:<28} {}", e.seq, e.time, e.kind.as_str(), what, e.reason);
            }
        }
        _ => out!("{}", resp.message),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_list(resp: &Response) {
    // Same columns for service and real rows, like ipvsadm -Ln with health, drain and counters appended.
    let row = |first: &str,
               fwd: &str,
               weight: &str,
               state: &str,
               health: &str,
               drain: &str,
               mac: &str,
               c: (u64, u64, u64, u64),
               last: &str| {
        out!(
            "{first:<28} {fwd:<7} {weight:>6} {state:<10} {health:<7} {drain:<5} {mac:<17} {:>11} {:>10} {:>12} {:>9} {last}",
            c.0, c.1, c.2, c.3
        );
    };
    out!(
        "{:<28} {:<7} {:>6} {:<10} {:<7} {:<5} {:<17} {:>11} {:>10} {:>12} {:>9} Check",
        "Prot LocalAddress:Port",
        "Forward",
        "Weight",
        "State",
        "Health",
        "Drain",
        "MAC",
        "ActiveFlows",
        "Packets",
        "Bytes",
        "NewFlows"
    );
    out!("  -> RemoteAddress");
    for s in resp.list.as_deref().unwrap_or_default() {
        let first = format!("{:<4} {}", s.proto.to_string(), std::net::SocketAddr::new(s.vip, s.port));
        let c = &s.counters;
        let state = if !s.reals.is_empty() && s.usable_reals == 0 { "NO USABLE REAL" } else { "" };
        let persist = if s.persistent > 0 { format!(", persistent {} s", s.persistent) } else { String::new() };
        let check =
            format!("check {}{persist}{}", s.check, if state.is_empty() { "" } else { "  ** NO USABLE REAL **" });
        row(&first, "maglev", "", "", "", "", "", (s.active_flows, c.packets, c.bytes, c.new_flows), &check);
        for r in &s.reals {
            let c = &r.counters;
            let last = match (&r.last_check, r.check_us) {
                (Some(d), Some(us)) => format!("{d} ({:.1} ms)", us as f64 / 1000.0),
                (Some(d), None) => d.clone(),
                _ => "-".into(),
            };
            row(
                &format!("  -> {}", r.addr),
                "Route",
                &r.weight.to_string(),
                &r.state,
                &r.health.to_string(),
                if r.drained { "yes" } else { "no" },
                r.mac.as_deref().unwrap_or("-"),
                (r.active_flows, c.packets, c.bytes, c.new_flows),
                &last,
            );
        }
    }
}

fn print_stats(resp: &Response) {
    let Some(s) = &resp.stats else { return };
    out!("interface {} (XDP {} mode), {} service(s), {} real(s)", s.iface, s.xdp_mode, s.services, s.reals);
    if let Some(v) = &s.version {
        out!("lbd {v}");
    }
    out!("connection table: {} of {} entries", s.conn_table_entries, s.conn_table_size);
    out!("{:<28} {:>12} {:>14} {:>10}", "", "packets", "bytes", "new flows");
    for (name, c) in [
        ("forwarded (XDP_TX)", &s.forwarded),
        ("passed: not for a service", &s.passed_not_vip),
        ("passed: malformed", &s.passed_malformed),
        ("passed: fragment/IP options", &s.passed_frag_or_options),
        ("passed: no usable real", &s.passed_no_real),
        ("passed: IPv6 ext. headers", &s.passed_ipv6_ext_headers),
        ("ICMP sent to flow's real", &s.icmp_forwarded),
    ] {
        out!("{:<28} {:>12} {:>14} {:>10}", name, c.packets, c.bytes, c.new_flows);
    }
    out!("flows expired by the sweep: {}", s.flows_expired);
    match s.announce_table {
        Some(t) => {
            let vips: Vec<String> = s.announced.iter().map(|v| v.to_string()).collect();
            let list = if vips.is_empty() { "none".to_string() } else { vips.join(", ") };
            let m = if s.maintenance { " (maintenance)" } else { "" };
            out!("announced to the routing daemon (table {t}){m}: {list}");
        }
        None => out!("route health injection: off"),
    }
    if let Some(sync) = &s.sync {
        let parts: Vec<String> = sync.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let peers: Vec<String> = s.sync_peers.iter().map(|p| p.to_string()).collect();
        out!("flow-state sync with {}: {}", peers.join(", "), parts.join(", "));
    }
}

/// The service name `lbctl check` lines start with.
const CHECK_NAME: &str = "LB";

/// Whether the command line asks for `check`: its first word that is neither an option nor `--socket`'s value.
fn is_check(mut args: impl Iterator<Item = String>) -> bool {
    while let Some(a) = args.next() {
        if a == "--socket" {
            args.next();
        } else if !a.starts_with('-') {
            return a == "check";
        }
    }
    false
}

/// `VIP:PORT[/tcp|udp]`.
fn check_service(s: &str) -> Result<ServiceKey> {
    match s.rsplit_once('/') {
        Some((addr, proto)) => service(addr, proto),
        None => service(s, "tcp"),
    }
}

fn range(flag: &str, r: &Option<String>) -> Result<Option<Range>> {
    r.as_deref().map(|s| s.parse::<Range>().map_err(|e| anyhow::anyhow!("--{flag}: {e}"))).transpose()
}

/// `lbctl check`: never fails, every error is an UNKNOWN line.
async fn check(args: &Args) -> Check {
    let Cmd::Check { service: s, warning, critical, api, token_file, timeout } = &args.cmd else {
        unreachable!("called for check only")
    };
    let parsed = (|| -> Result<_> {
        let key = check_service(s)?;
        let timeout: svc::Dur = timeout.parse().map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
        Ok((key, range("warning", warning)?, range("critical", critical)?, Duration::from(timeout)))
    })();
    let (key, warning, critical, timeout) = match parsed {
        Ok(p) => p,
        Err(e) => return Check::unknown(CHECK_NAME, format!("bad argument: {e:#}")),
    };
    let services = match api {
        Some(url) => services_over_http(url, token_file.as_deref(), timeout).await,
        None => services_over_socket(args, timeout).await,
    };
    match services {
        Ok(list) => evaluate(
            &key,
            list.iter().find(|v| v.vip == key.vip && v.port == key.port && v.proto == key.proto),
            warning,
            critical,
        ),
        Err(e) => Check::unknown(CHECK_NAME, format!("{key_text}: {e:#}", key_text = key_text(&key))),
    }
}

async fn services_over_socket(args: &Args, timeout: Duration) -> Result<Vec<ServiceView>> {
    let resp = tokio::time::timeout(timeout, api::call(&args.socket, &Request::List))
        .await
        .map_err(|_| anyhow::anyhow!("lbd at {} did not answer within {timeout:?}", args.socket.display()))??;
    anyhow::ensure!(resp.ok, "lbd refused: {}", resp.message);
    Ok(resp.list.unwrap_or_default())
}

async fn services_over_http(
    url: &str,
    token_file: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<Vec<ServiceView>> {
    let base = svc::client::BaseUrl::parse(url)?;
    let token = match token_file {
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("--token-file {}: {e}", f.display()))?;
            let t = text.lines().next().unwrap_or_default().trim().to_string();
            anyhow::ensure!(!t.is_empty(), "--token-file {}: the first line is empty", f.display());
            Some(t)
        }
        None => None,
    };
    let client = svc::client::Client::new(base, token, timeout);
    Ok(client.get::<Vec<ServiceView>>("/api/v1/services").await?)
}

fn key_text(key: &ServiceKey) -> String {
    format!("{} {}", key.proto.to_string().to_lowercase(), std::net::SocketAddr::new(key.vip, key.port))
}

/// The verdict on one service as lbd lists it (None: lbd has no such service).
fn evaluate(key: &ServiceKey, view: Option<&ServiceView>, warning: Option<Range>, critical: Option<Range>) -> Check {
    let name = key_text(key);
    let Some(v) = view else {
        return Check::new(CHECK_NAME, State::Critical, format!("{name}: no such service on lbd"));
    };
    let reals = v.reals.len();
    let usable = v.usable_reals;
    let t = Thresholds {
        warning: Some(warning.unwrap_or(Range::at_least(reals as f64))),
        critical: Some(critical.unwrap_or(Range::at_least(1.0))),
    };
    // A service without a usable real has its new connections reset by the LB's kernel: never better than CRITICAL.
    let state = if usable == 0 { State::Critical } else { t.state(usable as f64) };
    let mut text = format!("{name}: {usable} of {reals} reals usable");
    if reals == 0 {
        text.push_str(", no real configured");
    }
    let out: Vec<String> =
        v.reals.iter().filter(|r| r.state != "up").map(|r| format!("{} {}", r.addr, r.state)).collect();
    if !out.is_empty() {
        text.push_str(&format!(" (not usable: {})", out.join(", ")));
    }
    if usable == 0 {
        text.push_str("; SERVICE DOWN, new connections to the VIP are reset");
    }
    let mut c = Check::new(CHECK_NAME, state, text);
    c.perf = vec![
        Perf::new("usable_reals", usable as f64, Uom::None).thresholds(t).min(0.0).max(reals as f64),
        Perf::new("reals", reals as f64, Uom::None).min(0.0),
        Perf::new("active_flows", v.active_flows as f64, Uom::None).min(0.0),
        Perf::new("packets", v.counters.packets as f64, Uom::Counter),
        Perf::new("bytes", v.counters.bytes as f64, Uom::Counter),
        Perf::new("new_flows", v.counters.new_flows as f64, Uom::Counter),
    ];
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_types::lb::Health;
    use lb_userspace::api::{CountersView, RealView};

    fn view(states: &[&str]) -> ServiceView {
        let reals: Vec<RealView> = states
            .iter()
            .enumerate()
            .map(|(i, st)| RealView {
                addr: format!("10.0.0.{}", 11 + i).parse().unwrap(),
                weight: 1,
                mac: Some("02:00:00:00:00:01".into()),
                state: st.to_string(),
                health: if *st == "down" { Health::Down } else { Health::Up },
                drained: *st == "drained",
                last_check: None,
                check_us: None,
                active_flows: 0,
                counters: CountersView::default(),
            })
            .collect();
        ServiceView {
            vip: "10.0.0.100".parse().unwrap(),
            port: 80,
            proto: Proto::Tcp,
            check: "none".into(),
            persistent: 0,
            usable_reals: states.iter().filter(|s| **s == "up").count(),
            active_flows: 7,
            counters: CountersView { packets: 100, bytes: 6400, new_flows: 5 },
            reals,
        }
    }

    fn key() -> ServiceKey {
        check_service("10.0.0.100:80").unwrap()
    }

    #[test]
    fn default_thresholds_warn_below_all_reals_and_fail_at_none() {
        let c = evaluate(&key(), Some(&view(&["up", "up"])), None, None);
        assert_eq!(
            c.line(),
            "LB OK - tcp 10.0.0.100:80: 2 of 2 reals usable | usable_reals=2;2:;1:;0;2 reals=2;;;0 active_flows=7;;;0 \
             packets=100c bytes=6400c new_flows=5c"
        );
        let c = evaluate(&key(), Some(&view(&["up", "down"])), None, None);
        assert_eq!(c.state, State::Warning);
        assert!(c
            .line()
            .starts_with("LB WARNING - tcp 10.0.0.100:80: 1 of 2 reals usable (not usable: 10.0.0.12 down) |"));
        let c = evaluate(&key(), Some(&view(&["drained", "down"])), None, None);
        assert_eq!(c.state, State::Critical);
        assert!(c.text.contains("0 of 2") && c.text.contains("SERVICE DOWN"), "{}", c.text);
        let c = evaluate(&key(), Some(&view(&[])), None, None);
        assert_eq!((c.state, c.text.contains("no real configured")), (State::Critical, true));
        let c = evaluate(&key(), None, None, None);
        assert_eq!(c.line(), "LB CRITICAL - tcp 10.0.0.100:80: no such service on lbd");
    }

    #[test]
    fn given_thresholds_replace_the_defaults_but_a_down_service_stays_critical() {
        let w = Some("1:".parse().unwrap());
        let c = evaluate(&key(), Some(&view(&["up", "down", "down"])), w, None);
        assert_eq!(c.state, State::Ok, "{}", c.line());
        let crit = Some("2:".parse().unwrap());
        let c = evaluate(&key(), Some(&view(&["up", "down", "down"])), w, crit);
        assert_eq!(c.state, State::Critical);
        assert!(c.line().contains("usable_reals=1;1:;2:;0;3"), "{}", c.line());
        let c = evaluate(&key(), Some(&view(&["down"])), w, Some("~:".parse().unwrap()));
        assert_eq!(c.state, State::Critical, "no usable real is critical whatever the ranges");
    }

    #[test]
    fn check_arguments() {
        assert_eq!(check_service("10.0.0.100:53/udp").unwrap().proto, Proto::Udp);
        assert_eq!(check_service("[fd00::100]:80/tcp").unwrap().port, 80);
        assert!(check_service("10.0.0.100:80/sctp").is_err());
        assert!(check_service("10.0.0.100").is_err());
        let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>().into_iter();
        assert!(is_check(words("check 10.0.0.1:80 -w x")));
        assert!(is_check(words("--socket /run/x.sock check")));
        assert!(!is_check(words("list --json")));
        assert!(!is_check(words("--socket check list")));
    }
}
