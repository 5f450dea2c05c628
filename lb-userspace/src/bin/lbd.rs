//! lbd: attaches the XDP load balancer to an interface and serves the control API (and metrics) until
//! SIGINT/SIGTERM. `lbd --cleanup` detaches a pinned dataplane left behind.
use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser};
use lb_userspace::api::AnnounceWhen;
use lb_userspace::daemon::{guard, Daemon, Options};
use lb_userspace::dataplane::{self, AttachMode, Dataplane, Limits};
use lb_userspace::model::LbState;
use lb_userspace::settings::{self, Settings};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use svc::config::Keys;

/// The command line: `--config`, `--check` and `--cleanup`, then every setting as an `Option` with no clap
/// default, so a flag given overrides the `--config` file's value and one not given leaves it (defaults, shown in
/// `--help`, are those of [`Settings`]).
#[derive(Parser, Debug)]
#[command(name = "lbd", version = svc::version::LONG, about = "XDP direct-routing (LVS-DR) load balancer daemon")]
struct Args {
    /// Log lines as plain text (colours only on a terminal, never with NO_COLOR) or one JSON object per line
    /// (also LOG_FORMAT).
    #[arg(long, value_name = "plain|json", value_parser = ["plain", "json"])]
    log_format: Option<String>,
    /// TOML file with the services and reals to start with (ignored when --state exists) and, at its top, any of
    /// the settings below as `flag_name = value` (e.g. `iface = "eth0"`, `max_services = 128`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Check the settings, the --config (or --state) file and the key, token and seed files, then exit: 0 and a
    /// one-line `ok: ...` summary, or 1 and the reason. Binds nothing and touches no kernel state.
    #[arg(long)]
    check: bool,
    /// Detach the pinned dataplane of --iface (or --pin-dir) and remove its pins, then exit.
    #[arg(long)]
    cleanup: bool,
    #[command(flatten)]
    flags: Flags,
}

/// The settings as flags; `None` (and `false`) is "not given".
#[derive(clap::Args, Debug, Serialize)]
struct Flags {
    /// Interface that receives the VIPs' traffic and sends it on to the reals (one L2 segment with them).
    #[arg(long)]
    iface: Option<String>,
    /// Control socket (mode 0600).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// File that every runtime change is written to and that a restarted lbd restores from.
    #[arg(long)]
    state: Option<PathBuf>,
    /// XDP attach mode: native (driver; falls back to skb with a warning when the driver cannot) or skb (generic).
    #[arg(long)]
    xdp_mode: Option<AttachMode>,
    /// Services the dataplane can hold (1-4096; each costs 256 KiB of Maglev table).
    #[arg(long)]
    max_services: Option<u32>,
    /// Connection-table entries (1-50000000; LRU; about 100 bytes each).
    #[arg(long)]
    conn_table_size: Option<u32>,
    /// Add each service's VIP to --iface as a /32, so this host answers ARP for it (the IPVS way). A VIP that is
    /// already there is fine.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    manage_vips: bool,
    /// Serve Prometheus metrics over HTTP on this address (e.g. 127.0.0.1:9101), path /metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Serve the control API over HTTP on this address (`/api/v1/`: the control socket's requests, for a stream
    /// manager or console on another host), with /metrics too. Beyond loopback it needs --api-token-file.
    #[arg(long, value_name = "ADDR")]
    api: Option<SocketAddr>,
    /// File whose first line is the API's bearer token (at least 16 characters); needs --api.
    #[arg(long, value_name = "FILE")]
    api_token_file: Option<PathBuf>,
    /// Route health injection: keep a route (`VIP/32 dev lo proto 252`) in this kernel routing table for every VIP
    /// this node may serve, for a routing daemon (BIRD) to announce by BGP; withdrawn when the VIP has no usable
    /// real, in maintenance (`lbctl maintenance on`) and when lbd stops (kept with --keep-on-exit).
    /// Tables 0 and 253-255 (unspec, default, main, local) are the kernel's own and are refused.
    #[arg(long, value_name = "TABLE", value_parser = settings::announce_table)]
    announce_table: Option<u32>,
    /// With --announce-table: announce a VIP while any of its services has a usable real, or only while all do.
    #[arg(long, value_name = "any|all")]
    announce_when: Option<AnnounceWhen>,
    /// Flow-state sync: receive the other LB nodes' flows on this UDP address (e.g. 10.0.0.2:7946) and send ours
    /// to every --sync-peer, authenticated with --sync-key-file.
    #[arg(long, value_name = "ADDR")]
    sync_listen: Option<SocketAddr>,
    /// Another LB node's --sync-listen address (repeat for each peer).
    #[arg(long, value_name = "ADDR")]
    sync_peer: Vec<SocketAddr>,
    /// File holding the shared sync secret (at least 16 bytes), the same on every node.
    #[arg(long, value_name = "FILE")]
    sync_key_file: Option<PathBuf>,
    /// Most sync datagrams (of up to 22 flows) sent per second, to each peer (1-1000000).
    #[arg(long, value_name = "N")]
    sync_rate: Option<u32>,
    /// File holding the flow-hash seed: a 32-bit number in hex, at most 8 hex digits (more are refused), `0x`
    /// optional (e.g. `printf '%08x' $RANDOM$RANDOM`); give every LB node of a cluster the same one, so an ECMP
    /// rehash moves no flow, and keep it secret, so clients cannot choose tuples that all land on one real
    /// [default: 0].
    #[arg(long, value_name = "FILE")]
    hash_seed_file: Option<PathBuf>,
    /// Directory on a bpf filesystem where the maps and the XDP link are pinned, so forwarding survives lbd and
    /// the next lbd takes over [default: /sys/fs/bpf/lbd/IFACE]. One per lbd instance.
    #[arg(long, value_name = "DIR")]
    pin_dir: Option<PathBuf>,
    /// Pin nothing: the program detaches whenever lbd exits, even by SIGKILL.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    no_pin: bool,
    /// On SIGTERM/SIGINT leave XDP attached and pinned, forwarding with the last table, for the next lbd to take
    /// over (upgrades, restarts). Without it a deliberate stop detaches and removes the pins.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    keep_on_exit: bool,
    /// Health checks in flight at once, over all reals (1-10000).
    #[arg(long)]
    check_concurrency: Option<usize>,
    /// State-change events kept for `lbctl events` (1-1000000).
    #[arg(long)]
    events: Option<usize>,
    /// Idle time after which a flow of a removed real, and any UDP flow, is purged so its next packet is placed
    /// anew (IPVS's expire_nodest_conn and UDP timeout), e.g. 60s or 5m; 0 never purges; at most a day.
    #[arg(long, value_name = "DURATION")]
    flow_idle_timeout: Option<svc::Dur>,
}

/// The settings merged from the `--config` file's top and the flags, checked, and the services of the file (or the
/// state file), parsed: everything the operator gave, before anything is bound or attached.
fn load(args: &Args) -> Result<(Settings, LbState)> {
    let split = args.config.as_deref().map(settings::split_file).transpose()?;
    let hint = "keys are the settings of `lbd --help` (with _ or -) and [[service]] tables";
    let s: Settings = svc::config::merge(
        split.as_ref().map(|(f, _)| f),
        svc::config::flags_table(&args.flags),
        Settings::keys(),
        Keys::Flags,
        hint,
    )?;
    s.validate(args.cleanup)?;
    let initial = match (&s.state, &split, &args.config) {
        (Some(state), _, _) if state.exists() => {
            tracing::info!(state = %state.display(), "restoring from the state file");
            LbState::load_state(state).context("restoring the state file")?
        }
        (_, Some((_, services)), Some(path)) => {
            LbState::parse(services, &path.display().to_string()).context("reading the config")?
        }
        _ => LbState::default(),
    };
    Ok((s, initial))
}

/// The settings a SIGHUP applies to the running daemon; every other one waits for the next start.
const RELOADABLE: &[&str] = &["flow_idle_timeout", "events"];

/// SIGHUP: the settings are read and checked again as a start would (a refusal keeps the running ones);
/// `--flow-idle-timeout` and `--events` apply at once, the others are named as waiting for the next start.
/// Services and reals change through lbctl and live in --state, so the file's [[service]] tables are not
/// re-applied.
async fn watch_reloads(
    mut reloads: svc::reload::Reloads,
    mut running: Settings,
    args: Args,
    live: tokio::sync::mpsc::UnboundedSender<lb_userspace::daemon::LiveSettings>,
) {
    while reloads.next().await {
        let s = match load(&args) {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "SIGHUP: configuration refused; the running one is kept");
                continue;
            }
        };
        let changed = svc::reload::changed_keys(&running, &s);
        if changed.is_empty() {
            tracing::info!("SIGHUP: configuration valid and unchanged");
            continue;
        }
        let (now, later): (Vec<String>, Vec<String>) =
            changed.into_iter().partition(|k| RELOADABLE.contains(&k.as_str()));
        if !now.is_empty() {
            running.flow_idle_timeout = s.flow_idle_timeout;
            running.events = s.events;
            let _ = live.send(lb_userspace::daemon::LiveSettings {
                flow_idle_timeout: s.flow_idle_timeout.0,
                event_capacity: s.events,
            });
            tracing::info!(settings = %now.join(", "), "SIGHUP: applied: {}", now.join(", "));
        }
        if !later.is_empty() {
            tracing::warn!(
                settings = %later.join(", "),
                "SIGHUP: changed, applied at the next start (a restart; with --keep-on-exit no flow is dropped)"
            );
        }
    }
}

fn default_pin_dir(iface: &str) -> PathBuf {
    PathBuf::from("/sys/fs/bpf/lbd").join(iface)
}

#[tokio::main]
async fn main() -> Result<()> {
    svc::docs::maybe_write_with_defaults(Args::command, Settings::default);
    svc::logging::init("info,netlink_packet_route=error");
    let defaults = svc::config::flags_table(&Settings::default());
    let matches = svc::config::show_defaults(Args::command(), &defaults).get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // From here a SIGHUP re-reads the settings instead of ending lbd (services and reals change through lbctl and
    // the API, and live in --state, so the file's [[service]] tables are not re-applied).
    let reloads = svc::reload::reloads().context("installing the SIGHUP handler")?;
    // Everything the operator gave is parsed and validated before the dataplane is touched.
    let (s, initial) = load(&args)?;
    let again = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let pin_dir = match (&s.pin_dir, &s.iface) {
        _ if s.no_pin => None,
        (Some(d), _) => Some(d.clone()),
        (None, Some(i)) => Some(default_pin_dir(i)),
        (None, None) => None,
    };
    if args.cleanup {
        let dir = pin_dir.context("--cleanup needs --iface or --pin-dir")?;
        // Not under a running lbd: it would lose its dataplane.
        let _lock = match dir.exists() {
            true => Some(guard::lock_pin_dir(&dir)?),
            false => None,
        };
        let found = dataplane::cleanup(&dir).with_context(|| format!("removing the pins in {}", dir.display()))?;
        if found.is_empty() {
            println!("nothing pinned in {}", dir.display());
        } else {
            println!(
                "removed {} from {}: the XDP program is detached once no lbd holds it",
                found.join(", "),
                dir.display()
            );
        }
        return Ok(());
    }
    let iface = s.iface.clone().context("--iface is required")?;
    let bearer = match &s.api_token_file {
        Some(f) => svc::auth::Bearer::from_file(f).map_err(anyhow::Error::msg)?,
        None => svc::auth::Bearer::none(),
    };
    if let Some(addr) = s.api {
        bearer.check_bind(addr, "the control API").map_err(anyhow::Error::msg)?;
    }
    let sync = match (s.sync_listen, &s.sync_key_file) {
        (Some(listen), Some(key)) => Some(lb_userspace::sync::SyncConfig {
            listen,
            peers: s.sync_peer.clone(),
            key: lb_userspace::sync::read_key(key).map_err(anyhow::Error::msg)?,
            rate: s.sync_rate,
        }),
        _ => None,
    };
    let hash_seed = match &s.hash_seed_file {
        Some(f) => settings::read_seed(f).map_err(anyhow::Error::msg)?,
        None => 0,
    };
    if args.check {
        println!(
            "ok: lbd on {iface} ({} mode), {} services, {} reals, at most {} services and {} flows{}{}",
            s.xdp_mode,
            initial.services.len(),
            initial.services.values().map(|r| r.len()).sum::<usize>(),
            s.max_services,
            s.conn_table_size,
            s.api.map(|a| format!(", API on {a}")).unwrap_or_default(),
            if sync.is_some() { format!(", syncing with {} peers", s.sync_peer.len()) } else { String::new() },
        );
        return Ok(());
    }
    let metrics = match s.metrics {
        Some(addr) => {
            Some(tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot serve metrics on {addr}"))?)
        }
        None => None,
    };
    let api = match s.api {
        Some(addr) => {
            let l =
                tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot serve the API on {addr}"))?;
            Some((l, bearer))
        }
        None => None,
    };
    // Every resource that is this lbd's alone is claimed before any map is opened, so a second lbd is refused
    // without touching the running one's dataplane: the control socket (bound now; a failed start removes it),
    // the pin directory's lock (held until exit) and the interface's XDP attachment.
    let listener = lb_userspace::daemon::bind_socket(&s.socket)?;
    let _socket_file = RemoveOnDrop(s.socket.clone());
    let created_pin_dir = pin_dir.as_ref().is_some_and(|d| !d.exists());
    let _pin_lock = match &pin_dir {
        Some(dir) => {
            dataplane::prepare_pin_dir(dir)?;
            Some(guard::lock_pin_dir(dir)?)
        }
        None => None,
    };
    if let Err(e) = guard::check_iface(&iface, pin_dir.as_deref()).await {
        // Refused: the (empty) pin directory this start made goes too.
        if let (Some(dir), true) = (&pin_dir, created_pin_dir) {
            let _ = std::fs::remove_dir(dir);
        }
        return Err(e.into());
    }
    let limits = Limits { max_services: s.max_services, conn_table_size: s.conn_table_size };
    let pins_existed = pin_dir.as_ref().is_some_and(|d| d.join("CONN_TABLE").exists());
    let dp = match &pin_dir {
        Some(dir) => Dataplane::load_pinned(limits, dir),
        None => Dataplane::load(limits),
    }
    .context("loading the XDP program (are you root?)")?;
    let opts = Options {
        state_path: s.state.clone(),
        manage_vips: s.manage_vips,
        check_concurrency: s.check_concurrency,
        event_capacity: s.events,
        keep_on_exit: s.keep_on_exit,
        flow_idle_timeout: s.flow_idle_timeout.0,
        hash_seed,
        announce: s.announce_table.map(|t| (s.announce_when, t)),
        sync,
        ..Options::new(iface.clone(), s.xdp_mode)
    };
    let mut daemon = match Daemon::start(opts, dp, initial).await {
        Ok(d) => d,
        Err(e) => {
            // A failed start leaves nothing behind that it created (pins an earlier lbd left stay as they were).
            if let (Some(dir), false) = (&pin_dir, pins_existed) {
                let _ = dataplane::remove_pins(dir);
            }
            return Err(e).with_context(|| format!("starting on {iface}"));
        }
    };
    // SIGHUPs received since the start are read now, against the running daemon.
    tokio::spawn(watch_reloads(reloads, s.clone(), again, daemon.live_settings()));
    let mode = daemon.mode();
    if let Some(m) = &metrics {
        tracing::info!(addr = %m.local_addr()?, "serving metrics on /metrics");
    }
    if let Some((l, bearer)) = &api {
        tracing::info!(addr = %l.local_addr()?, token = bearer.is_set(), "serving the control API on /api/v1/");
    }
    tracing::info!(socket = %s.socket.display(), %mode, "lbd ready");
    let stop = svc::shutdown::signal();
    svc::notify::notify(svc::notify::State::Ready, Some(&format!("lbd {mode}")));
    daemon.run((listener, &s.socket), metrics, api, stop).await?;
    Ok(())
}

/// Removes the control socket's file when lbd ends, by an error too (run removes it on a normal stop).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
