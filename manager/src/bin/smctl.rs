//! `smctl`: the stream manager's command line, in the spirit of lbctl: read the cluster, start and end maintenance.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use api_types::manager::{
    ActionAnswer, Alarms, Event, GroupView, LeaderView, NodeRole, NodeView, PoolSummary, StreamSummary,
};
use axum::http::Method;
use clap::{Parser, Subcommand};
use svc::client::{BaseUrl, Client};

/// `println!` that ends the program quietly when stdout is closed (`smctl nodes | head -1`), instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {
        if let Err(e) = writeln!(std::io::stdout(), $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("smctl: writing to stdout: {e}");
            std::process::exit(1);
        }
    };
}

#[derive(Parser)]
#[command(name = "smctl", version = svc::version::LONG, about = "Talk to the stream manager (smd)")]
struct Cli {
    /// The manager's API.
    #[arg(long, env = "SM_API", default_value = "http://127.0.0.1:9300", global = true)]
    api: String,
    /// File holding the API's bearer token (required).
    #[arg(long, env = "SM_TOKEN_FILE", global = true)]
    token_file: Option<std::path::PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Origins and edges: state, groups, streams, players, outbound bit rate.
    Nodes,
    /// Origin groups: members by priority, the active one, sources.
    Groups,
    /// Streams: where each is ingested, the edges that have it, players.
    Streams,
    /// The event history, newest first.
    Events {
        #[arg(long, default_value_t = 20)]
        last: usize,
        /// Only events of this kind (e.g. failover, node-down).
        #[arg(long)]
        kind: Option<String>,
    },
    /// Raised alarms and recently cleared ones.
    Alarms,
    /// Which smd leads (HA on etcd), its term, and whether the one asked leads and reaches the store.
    Leader,
    /// No new sessions on NODE; existing ones continue (an origin hands its groups over first).
    Maintenance { node: String },
    /// End NODE's maintenance.
    Resume { node: String },
    /// Make ROLE (main, backup, ..., slate) the live source of APP/KEY on its group's active origin now, from
    /// that source's latest keyframe, and keep it while it delivers; `auto` goes back to the order of preference.
    SwitchSource {
        /// APP/KEY, e.g. live/cam1.
        stream: String,
        role: String,
    },
    /// Forget a self-registered edge that is out of service (down, or in maintenance and empty); refused for
    /// configured nodes, edges the autoscaler started and edges in service.
    RemoveNode { node: String },
    /// Edge pools: edges in service, min/max, players, outbound bit rate, utilisation, started edges.
    Pools,
    /// Start an edge in POOL through its provider now (counts toward max and min_lifetime like any other).
    PoolStart { pool: String },
    /// Drain NODE (an edge the manager started in POOL), then stop it once empty.
    PoolStop { pool: String, node: String },
    /// Nagios go/no-go (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, one line with perfdata) for an origin group,
    /// an edge pool or a stream.
    Check {
        #[command(subcommand)]
        what: CheckWhat,
        /// Warning range (Nagios syntax: 10, 10:, ~:10, 10:20, @10:20) on the main value.
        #[arg(short, long, global = true)]
        warning: Option<String>,
        /// Critical range on the main value.
        #[arg(short, long, global = true)]
        critical: Option<String>,
    },
}

#[derive(Subcommand)]
enum CheckWhat {
    /// Healthy members (default: warning below 2, critical below 1); critical without an active member, warning
    /// on a standby or with a source not ingested.
    Group { name: String },
    /// Edges in service (default: critical below the pool's min); warning at max or with an edge down.
    Pool { name: String },
    /// APP/KEY: edges that have it; critical when no origin ingests it.
    Stream { stream: String },
    /// The manager: critical while it cannot save its state file, warning with any alarm raised.
    Manager,
}

fn main() -> ExitCode {
    svc::docs::maybe_write(<Cli as clap::CommandFactory>::command);
    let checking = std::env::args().skip(1).any(|a| a == "check");
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // A check's bad argument is UNKNOWN (3), as Nagios expects, not clap's 2.
        Err(e) if checking && !matches!(e.kind(), clap::error::ErrorKind::DisplayHelp) => {
            // clap's message until its usage line, on one line: "the following required arguments were not
            // provided: <NAME>", with the argument's name.
            let text = e.to_string();
            let first = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
                .trim_start_matches("error: ")
                .to_string();
            let args: Vec<String> = std::env::args().collect();
            return svc::nagios::Check::unknown(check_service(&args), format!("bad argument: {first}")).report();
        }
        Err(e) => e.exit(),
    };
    if let Cmd::Check { what, warning, critical } = &cli.cmd {
        return check(&cli, what, warning.as_deref(), critical.as_deref()).report();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let client = client(&cli)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (path, method) = match &cli.cmd {
        Cmd::Nodes => ("/api/v1/nodes".to_string(), Method::GET),
        Cmd::Groups => ("/api/v1/groups".into(), Method::GET),
        Cmd::Streams => ("/api/v1/streams".into(), Method::GET),
        Cmd::Events { last, kind } => {
            let k = kind.as_ref().map(|k| format!("&kind={k}")).unwrap_or_default();
            (format!("/api/v1/events?last={last}{k}"), Method::GET)
        }
        Cmd::Alarms => ("/api/v1/alarms".into(), Method::GET),
        Cmd::Leader => ("/api/v1/leader".into(), Method::GET),
        Cmd::Maintenance { node } => (format!("/api/v1/nodes/{node}/maintenance"), Method::POST),
        Cmd::Resume { node } => (format!("/api/v1/nodes/{node}/resume"), Method::POST),
        Cmd::RemoveNode { node } => (format!("/api/v1/nodes/{node}"), Method::DELETE),
        Cmd::Pools => ("/api/v1/pools".into(), Method::GET),
        Cmd::PoolStart { pool } => (format!("/api/v1/pools/{pool}/start"), Method::POST),
        Cmd::PoolStop { pool, node } => (format!("/api/v1/pools/{pool}/stop/{node}"), Method::POST),
        Cmd::SwitchSource { stream, .. } => {
            let Some((app, key)) = stream.split_once('/').filter(|(a, k)| !a.is_empty() && !k.is_empty()) else {
                anyhow::bail!("switch-source needs APP/KEY (e.g. live/cam1), got {stream:?}");
            };
            (format!("/api/v1/sources/{app}/{key}/switch"), Method::POST)
        }
        Cmd::Check { .. } => unreachable!("checks are handled before"),
    };
    let body = match &cli.cmd {
        Cmd::SwitchSource { role, .. } => Some(api_types::manager::SwitchSourceBody { role: role.clone() }),
        _ => None,
    };
    let bytes = rt.block_on(client.call(method, &path, body.as_ref())).map_err(explain)?;
    if cli.json {
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    // Every answer is parsed with the type smd serialises it from: a field renamed on one side is an error here,
    // not a column of dashes.
    fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> anyhow::Result<T> {
        serde_json::from_slice(b).map_err(|e| anyhow::anyhow!("the manager sent an answer this smctl cannot read: {e}"))
    }
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    match cli.cmd {
        Cmd::Nodes => {
            out!(
                "{:<12} {:<7} {:<12} {:<16} {:>7} {:>8} {:>10}  groups",
                "NAME",
                "ROLE",
                "STATE",
                "RTMP",
                "STREAMS",
                "PLAYERS",
                "OUT kbit/s"
            );
            for n in parse::<Vec<NodeView>>(&bytes)? {
                let role = match n.role {
                    NodeRole::Origin => "origin",
                    NodeRole::Edge => "edge",
                };
                out!(
                    "{:<12} {:<7} {:<12} {:<16} {:>7} {:>8} {:>10}  {}",
                    n.name,
                    role,
                    n.state.as_str(),
                    n.rtmp,
                    n.streams,
                    n.players,
                    n.bitrate_out_kbps,
                    n.groups.join(",")
                );
            }
        }
        Cmd::Groups => {
            for g in parse::<Vec<GroupView>>(&bytes)? {
                out!(
                    "{} (app {}): active {}, failback {}, failovers {}",
                    g.name,
                    g.app,
                    opt(&g.active),
                    g.failback,
                    g.failovers
                );
                for m in &g.members {
                    let mark = if m.active { "*" } else { " " };
                    out!("  {mark} {:<12} priority {:<5} {}", m.node, m.priority, m.state.as_str());
                }
                for src in &g.sources {
                    let mark = if src.live {
                        "live"
                    } else if src.healthy {
                        "warm"
                    } else {
                        "-"
                    };
                    let url = if src.url.is_empty() { "(pushed)" } else { src.url.as_str() };
                    out!("    source {:<10} {:<8} {:<5} {} ingesting {}", src.key, src.role, mark, url, src.ingesting);
                }
            }
        }
        Cmd::Streams => {
            out!("{:<20} {:<12} {:<12} {:>8} {:>10}  edges", "STREAM", "GROUP", "INGEST", "PLAYERS", "OUT kbit/s");
            for st in parse::<Vec<StreamSummary>>(&bytes)? {
                let name = format!("{}/{}", st.app, st.key);
                out!(
                    "{name:<20} {:<12} {:<12} {:>8} {:>10}  {}",
                    opt(&st.group),
                    opt(&st.ingest),
                    st.players,
                    st.bitrate_out_kbps,
                    st.edges.join(",")
                );
            }
        }
        Cmd::Events { .. } => {
            for e in parse::<Vec<Event>>(&bytes)? {
                let when = humantime_like(e.time_ms);
                out!("{when} {:<20} {:<12} {}", e.kind.as_str(), e.subject, e.message);
            }
        }
        Cmd::Alarms => {
            let a = parse::<Alarms>(&bytes)?;
            for a in &a.raised {
                out!("RAISED  {:<22} {:<14} {}", a.kind.as_str(), a.subject, a.message);
            }
            for a in a.cleared.iter().take(10) {
                out!("cleared {:<22} {:<14} {}", a.kind.as_str(), a.subject, a.message);
            }
        }
        Cmd::Leader => {
            let l = parse::<LeaderView>(&bytes)?;
            let leader = l.leader.as_deref().unwrap_or("none (election in progress or etcd unreachable)");
            out!("leader  {leader} (term {}){}", l.term, l.leader_api.map(|a| format!(" at {a}")).unwrap_or_default());
            out!(
                "asked   {} ({}, store {} {})",
                l.me,
                if l.leading { "leading" } else { "following" },
                l.store,
                if l.store_ok { "ok" } else { "UNREACHABLE" }
            );
            for m in &l.members {
                out!("member  {} at {}", m.name, m.api);
            }
        }
        Cmd::RemoveNode { .. } | Cmd::PoolStart { .. } | Cmd::PoolStop { .. } => {
            out!("{}", parse::<ActionAnswer>(&bytes)?.message)
        }
        Cmd::Maintenance { .. } | Cmd::Resume { .. } => {
            let a = parse::<ActionAnswer>(&bytes)?;
            let state = a.state.map_or("-", |s| s.as_str());
            out!("{}: {} (state {state})", opt(&a.node), a.message)
        }
        Cmd::SwitchSource { stream, role } => {
            let v: api_types::relay::KeySources = parse(&bytes)?;
            out!("{stream}: live {} (asked {role}), switches {}", v.live.as_deref().unwrap_or("none"), v.switches);
            for s in &v.sources {
                let mark = if s.live {
                    "live"
                } else if s.healthy {
                    "warm"
                } else {
                    "down"
                };
                out!("  {:<8} {:<5} {}", s.role, mark, s.peer.as_deref().unwrap_or("-"));
            }
        }
        Cmd::Check { .. } => {}
        Cmd::Pools => {
            out!(
                "{:<10} {:>10} {:>4} {:>4} {:>8} {:>10} {:>6}  started",
                "POOL",
                "IN SERVICE",
                "MIN",
                "MAX",
                "PLAYERS",
                "OUT kbit/s",
                "UTIL"
            );
            for p in parse::<Vec<PoolSummary>>(&bytes)? {
                let util = p.utilisation.map_or("-".into(), |u| format!("{:.0}%", u * 100.0));
                out!(
                    "{:<10} {:>10} {:>4} {:>4} {:>8} {:>10} {:>6}  {}",
                    p.name,
                    format!("{}/{}", p.in_service, p.edges.len()),
                    p.min,
                    p.max.map_or("-".into(), |m| m.to_string()),
                    p.players,
                    p.bitrate_out_kbps,
                    util,
                    p.started.join(",")
                );
            }
        }
    }
    Ok(())
}

/// A refused token is an authentication failure, not a manager that did not answer.
fn explain(e: svc::client::ClientError) -> anyhow::Error {
    match e.status() {
        Some(401 | 403) => anyhow::anyhow!(
            "authentication failed: the manager refused the token ({e}); check --token-file against smd's token_file"
        ),
        _ => e.into(),
    }
}

/// The manager's API client: `--api` with the token from `--token-file`.
fn client(cli: &Cli) -> anyhow::Result<Client> {
    let path = cli.token_file.as_ref().ok_or_else(|| {
        anyhow::anyhow!("--token-file FILE (or SM_TOKEN_FILE) is required: the file holding smd's API token")
    })?;
    let bearer = svc::auth::Bearer::from_file(path).map_err(anyhow::Error::msg)?;
    Ok(Client::new(BaseUrl::parse(&cli.api)?, bearer.value().map(str::to_string), Duration::from_secs(10)))
}

/// `smctl check ...`: never fails; every problem is an UNKNOWN line (named MANAGER for the manager's own check).
fn check(cli: &Cli, what: &CheckWhat, warning: Option<&str>, critical: Option<&str>) -> svc::nagios::Check {
    use manager::check;
    use svc::nagios::{Check, Range};
    let service = if matches!(what, CheckWhat::Manager) { check::MANAGER } else { check::NAME };
    let range = |flag: &str, r: Option<&str>| -> Result<Option<Range>, String> {
        r.map(|s| s.parse::<Range>().map_err(|e| format!("--{flag}: {e}"))).transpose()
    };
    let (w, c) = match (range("warning", warning), range("critical", critical)) {
        (Ok(w), Ok(c)) => (w, c),
        (Err(e), _) | (_, Err(e)) => return Check::unknown(service, format!("bad argument: {e}")),
    };
    if let CheckWhat::Stream { stream } = what {
        if !stream.contains('/') {
            return Check::unknown(service, format!("bad argument: stream {stream:?} is not APP/KEY"));
        }
    }
    let client = match client(cli) {
        Ok(c) => c,
        Err(e) => return Check::unknown(service, format!("bad argument: {e:#}")),
    };
    // Each answer parsed with the type the manager serialises it from.
    let r = match what {
        CheckWhat::Group { name } => fetch::<Vec<_>>(&client, "/api/v1/groups").map(|v| check::group(&v, name, w, c)),
        CheckWhat::Pool { name } => fetch::<Vec<_>>(&client, "/api/v1/pools").map(|v| check::pool(&v, name, w, c)),
        CheckWhat::Stream { stream } => {
            fetch::<Vec<_>>(&client, "/api/v1/streams").map(|v| check::stream(&v, stream, w, c))
        }
        CheckWhat::Manager => fetch(&client, "/api/v1/alarms").map(|v| check::manager(&v)),
    };
    r.unwrap_or_else(|e| match e.to_string().starts_with("authentication failed") {
        true => Check::unknown(service, format!("{e:#}")),
        false => Check::unknown(service, format!("the manager did not answer: {e:#}")),
    })
}

/// GET `path` from the manager, parsed as `T`.
fn fetch<T: serde::de::DeserializeOwned>(client: &Client, path: &str) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(client.get::<T>(path)).map_err(explain)
}

/// The Nagios service name of the check named on this command line (`smctl check manager` is MANAGER), for an
/// UNKNOWN line about a bad argument before the command line is parsed.
fn check_service(args: &[String]) -> &'static str {
    let after = args.iter().skip_while(|a| *a != "check").skip(1).find(|a| !a.starts_with('-'));
    if after.is_some_and(|a| a == "manager") {
        manager::check::MANAGER
    } else {
        manager::check::NAME
    }
}

/// `HH:MM:SS` UTC of a unix time in milliseconds.
fn humantime_like(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}.{:03}", (s / 3600) % 24, (s / 60) % 60, s % 60, ms % 1000)
}
