//! lbctl: the command line of lbd, in the spirit of ipvsadm.
use anyhow::Result;
use clap::{Parser, Subcommand};
use lb_userspace::api::{self, Request, Response, DEFAULT_SOCKET};
use lb_userspace::model::{self, Proto, ServiceKey};
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
    /// Add a virtual service VIP:PORT.
    AddService {
        service: String,
        #[arg(long, default_value = "tcp")]
        proto: String,
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
    /// Dataplane-wide counters.
    Stats {
        #[arg(long)]
        json: bool,
    },
}

fn service(s: &str, proto: &str) -> Result<ServiceKey> {
    let proto: Proto = proto.parse()?;
    Ok(ServiceKey::parse(s, proto)?)
}

/// Turns the command line into a request; malformed input fails here, before lbd is asked.
fn request(cmd: &Cmd) -> Result<Request> {
    Ok(match cmd {
        Cmd::AddService { service: s, proto } => Request::AddService { service: service(s, proto)? },
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
        _ => println!("{}", resp.message),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_list(resp: &Response) {
    // Same columns for service and real rows, like ipvsadm -Ln with counters appended.
    let row = |first: &str, fwd: &str, weight: &str, state: &str, mac: &str, c: (u64, u64, u64, u64)| {
        println!(
            "{first:<28} {fwd:<7} {weight:>6} {state:<11} {mac:<17} {:>11} {:>10} {:>12} {:>9}",
            c.0, c.1, c.2, c.3
        );
    };
    println!(
        "{:<28} {:<7} {:>6} {:<11} {:<17} {:>11} {:>10} {:>12} {:>9}",
        "Prot LocalAddress:Port", "Forward", "Weight", "State", "MAC", "ActiveFlows", "Packets", "Bytes", "NewFlows"
    );
    println!("  -> RemoteAddress");
    for s in resp.list.as_deref().unwrap_or_default() {
        let first = format!("{:<4} {}", s.proto.to_string(), std::net::SocketAddr::new(s.vip, s.port));
        let c = &s.counters;
        row(&first, "maglev", "", "", "", (s.active_flows, c.packets, c.bytes, c.new_flows));
        for r in &s.reals {
            let c = &r.counters;
            row(
                &format!("  -> {}", r.addr),
                "Route",
                &r.weight.to_string(),
                &r.state,
                r.mac.as_deref().unwrap_or("-"),
                (r.active_flows, c.packets, c.bytes, c.new_flows),
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
    ] {
        println!("{:<28} {:>12} {:>14} {:>10}", name, c.packets, c.bytes, c.new_flows);
    }
}
