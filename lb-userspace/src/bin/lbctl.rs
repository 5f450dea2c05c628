//! lbctl: the command line of lbd, in the spirit of ipvsadm.
use anyhow::Result;
use clap::{Parser, Subcommand};
use lb_userspace::api::{self, Request, Response, DEFAULT_SOCKET};
use lb_userspace::model::{self, CheckKind, CheckSpec, Proto, ServiceKey};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(version, about = "Control lbd, the XDP direct-routing load balancer")]
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
}

/// Health-check flags of add-service and set-check.
#[derive(clap::Args, Debug)]
struct CheckArgs {
    /// Health check of the service's reals: tcp, http, rtmp, rtsp or none.
    #[arg(long, value_name = "KIND", default_value = "none")]
    check: String,
    /// Port to check on each real [default: the service port].
    #[arg(long, value_name = "PORT")]
    check_port: Option<u16>,
    /// http: path to GET [default: /].
    #[arg(long, value_name = "PATH")]
    check_path: Option<String>,
    /// http: status that means healthy [default: 200].
    #[arg(long, value_name = "STATUS")]
    check_expect: Option<u16>,
    /// Time between checks, e.g. 3s or 500ms [default: 3s].
    #[arg(long, value_name = "DURATION")]
    check_interval: Option<String>,
    /// Time a check may take, capped at the interval [default: 1s].
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
        let kind: CheckKind = self.check.parse()?;
        let mut c = CheckSpec { kind, ..CheckSpec::default() };
        if kind == CheckKind::None {
            let given = self.check_port.is_some()
                || self.check_path.is_some()
                || self.check_expect.is_some()
                || self.check_interval.is_some()
                || self.check_timeout.is_some()
                || self.check_rise.is_some()
                || self.check_fall.is_some();
            anyhow::ensure!(!given, "--check-* options need --check tcp|http|rtmp|rtsp");
            return Ok(c);
        }
        if kind != CheckKind::Http {
            anyhow::ensure!(
                self.check_path.is_none() && self.check_expect.is_none(),
                "--check-path and --check-expect only apply to --check http"
            );
        }
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
        if let Some(t) = &self.check_timeout {
            c.timeout = t.parse()?;
        }
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
        Cmd::AddReal { service: s, real, weight, proto } => Request::AddReal {
            service: service(s, proto)?,
            real: model::parse_real(real)?,
            weight: model::check_weight(*weight)?,
        },
        Cmd::EditReal { service: s, real, weight, proto } => Request::EditReal {
            service: service(s, proto)?,
            real: model::parse_real(real)?,
            weight: model::check_weight(*weight)?,
        },
        Cmd::DelReal { service: s, real, proto } => {
            Request::DelReal { service: service(s, proto)?, real: model::parse_real(real)? }
        }
        Cmd::List { .. } => Request::List,
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
    let args = Args::parse();
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
        Cmd::List { json: true } => println!("{}", serde_json::to_string_pretty(&resp.list.unwrap_or_default())?),
        Cmd::List { json: false } => print_list(&resp),
        Cmd::Stats { json: true } => println!("{}", serde_json::to_string_pretty(&resp.stats)?),
        Cmd::Stats { json: false } => print_stats(&resp),
        Cmd::Events { json: true, .. } => {
            println!("{}", serde_json::to_string_pretty(&resp.events.unwrap_or_default())?)
        }
        Cmd::Events { json: false, .. } => {
            for e in resp.events.unwrap_or_default() {
                let what = [e.service.clone(), e.real.map(|r| r.to_string())]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                println!("{:>5} {} {:<15} {:<28} {}", e.seq, e.time, e.kind.as_str(), what, e.reason);
            }
        }
        _ => println!("{}", resp.message),
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
        println!(
            "{first:<28} {fwd:<7} {weight:>6} {state:<10} {health:<7} {drain:<5} {mac:<17} {:>11} {:>10} {:>12} {:>9} {last}",
            c.0, c.1, c.2, c.3
        );
    };
    println!(
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
    println!("  -> RemoteAddress");
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
    println!("interface {} (XDP {} mode), {} service(s), {} real(s)", s.iface, s.xdp_mode, s.services, s.reals);
    println!("connection table: {} of {} entries", s.conn_table_entries, s.conn_table_size);
    println!("{:<28} {:>12} {:>14} {:>10}", "", "packets", "bytes", "new flows");
    for (name, c) in [
        ("forwarded (XDP_TX)", &s.forwarded),
        ("passed: not for a service", &s.passed_not_vip),
        ("passed: malformed", &s.passed_malformed),
        ("passed: fragment/IP options", &s.passed_frag_or_options),
        ("passed: no usable real", &s.passed_no_real),
        ("passed: IPv6 ext. headers", &s.passed_ipv6_ext_headers),
        ("ICMP sent to flow's real", &s.icmp_forwarded),
    ] {
        println!("{:<28} {:>12} {:>14} {:>10}", name, c.packets, c.bytes, c.new_flows);
    }
    println!("flows expired by the sweep: {}", s.flows_expired);
    match s.announce_table {
        Some(t) => {
            let vips: Vec<String> = s.announced.iter().map(|v| v.to_string()).collect();
            let list = if vips.is_empty() { "none".to_string() } else { vips.join(", ") };
            let m = if s.maintenance { " (maintenance)" } else { "" };
            println!("announced to the routing daemon (table {t}){m}: {list}");
        }
        None => println!("route health injection: off"),
    }
    if let Some(sync) = &s.sync {
        let parts: Vec<String> = sync.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let peers: Vec<String> = s.sync_peers.iter().map(|p| p.to_string()).collect();
        println!("flow-state sync with {}: {}", peers.join(", "), parts.join(", "));
    }
}
