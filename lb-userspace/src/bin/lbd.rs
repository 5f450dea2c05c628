//! lbd: attaches the XDP load balancer to an interface and serves the control API (and metrics) until
//! SIGINT/SIGTERM. `lbd --cleanup` detaches a pinned dataplane left behind.
use anyhow::{Context, Result};
use clap::Parser;
use lb_userspace::api::DEFAULT_SOCKET;
use lb_userspace::daemon::{guard, Daemon, Options};
use lb_userspace::dataplane::{self, AttachMode, Dataplane, Limits};
use lb_userspace::model::LbState;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(version, about = "XDP direct-routing (LVS-DR) load balancer daemon")]
struct Args {
    /// Interface that receives the VIPs' traffic and sends it on to the reals (one L2 segment with them).
    #[arg(long, required_unless_present_all = ["cleanup", "pin_dir"])]
    iface: Option<String>,
    /// TOML file with the services and reals to start with (ignored when --state exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Control socket (mode 0600).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// File that every runtime change is written to and that a restarted lbd restores from.
    #[arg(long)]
    state: Option<PathBuf>,
    /// XDP attach mode: native (driver; falls back to skb with a warning when the driver cannot) or skb (generic).
    #[arg(long, default_value = "native")]
    xdp_mode: AttachMode,
    /// Services the dataplane can hold (each costs 256 KiB of Maglev table).
    #[arg(long, default_value_t = lb_common::DEFAULT_MAX_SERVICES)]
    max_services: u32,
    /// Connection-table entries (LRU; about 100 bytes each).
    #[arg(long, default_value_t = lb_common::DEFAULT_CONN_TABLE_SIZE)]
    conn_table_size: u32,
    /// Add each service's VIP to --iface as a /32, so this host answers ARP for it (the IPVS way). A VIP that is
    /// already there is fine.
    #[arg(long)]
    manage_vips: bool,
    /// Serve Prometheus metrics over HTTP on this address (e.g. 127.0.0.1:9101), path /metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Serve the control API over HTTP on this address (`/api/v1/`: the control socket's requests, for a stream
    /// manager or console on another host), with /metrics too. Beyond loopback it needs --api-token-file.
    #[arg(long, value_name = "ADDR")]
    api: Option<SocketAddr>,
    /// Route health injection: keep a route (`VIP/32 dev lo proto 252`) in this kernel routing table for every VIP
    /// this node may serve, for a routing daemon (BIRD) to announce by BGP; withdrawn when the VIP has no usable
    /// real, in maintenance (`lbctl maintenance on`) and when lbd stops (kept with --keep-on-exit).
    /// Tables 0 and 253-255 (unspec, default, main, local) are the kernel's own and are refused.
    #[arg(long, value_name = "TABLE", value_parser = announce_table)]
    announce_table: Option<u32>,
    /// With --announce-table: announce a VIP while any of its services has a usable real, or only while all do.
    #[arg(long, value_name = "any|all", default_value = "any", requires = "announce_table")]
    announce_when: lb_userspace::api::AnnounceWhen,
    /// Flow-state sync: receive the other LB nodes' flows on this UDP address (e.g. 10.0.0.2:7946) and send ours
    /// to every --sync-peer, authenticated with --sync-key-file.
    #[arg(long, value_name = "ADDR", requires_all = ["sync_peer", "sync_key_file"])]
    sync_listen: Option<SocketAddr>,
    /// Another LB node's --sync-listen address (repeat for each peer).
    #[arg(long, value_name = "ADDR", requires = "sync_listen")]
    sync_peer: Vec<SocketAddr>,
    /// File holding the shared sync secret (at least 16 bytes), the same on every node.
    #[arg(long, value_name = "FILE", requires = "sync_listen")]
    sync_key_file: Option<PathBuf>,
    /// Most sync datagrams (of up to 22 flows) sent per second, to each peer.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    sync_rate: u32,
    /// File holding the flow-hash seed, a 32-bit number in hex (e.g. `printf '%08x' $RANDOM$RANDOM`); give every
    /// LB node of a cluster the same one, so an ECMP rehash moves no flow, and keep it secret, so clients cannot
    /// choose tuples that all land on one real [default: 0].
    #[arg(long, value_name = "FILE")]
    hash_seed_file: Option<PathBuf>,
    /// File whose first line is the API's bearer token (at least 16 characters).
    #[arg(long, value_name = "FILE", requires = "api")]
    api_token_file: Option<PathBuf>,
    /// Directory on a bpf filesystem where the maps and the XDP link are pinned, so forwarding survives lbd and
    /// the next lbd takes over [default: /sys/fs/bpf/lbd/IFACE]. One per lbd instance.
    #[arg(long, value_name = "DIR")]
    pin_dir: Option<PathBuf>,
    /// Pin nothing: the program detaches whenever lbd exits, even by SIGKILL.
    #[arg(long, conflicts_with_all = ["pin_dir", "keep_on_exit", "cleanup"])]
    no_pin: bool,
    /// On SIGTERM/SIGINT leave XDP attached and pinned, forwarding with the last table, for the next lbd to take
    /// over (upgrades, restarts). Without it a deliberate stop detaches and removes the pins.
    #[arg(long)]
    keep_on_exit: bool,
    /// Detach the pinned dataplane of --iface (or --pin-dir) and remove its pins, then exit.
    #[arg(long)]
    cleanup: bool,
    /// Health checks in flight at once, over all reals.
    #[arg(long, default_value_t = lb_userspace::health::DEFAULT_CONCURRENCY)]
    check_concurrency: usize,
    /// State-change events kept for `lbctl events`.
    #[arg(long, default_value_t = lb_userspace::events::DEFAULT_CAPACITY)]
    events: usize,
    /// Idle time after which a flow of a removed real, and any UDP flow, is purged so its next packet is placed
    /// anew (IPVS's expire_nodest_conn and UDP timeout), e.g. 60s or 5m; 0 never purges [default: 60s].
    #[arg(long, value_name = "DURATION")]
    flow_idle_timeout: Option<svc::Dur>,
}

/// `--announce-table`: a table of the operator's own. The kernel's tables would route by the announcements:
/// main (254) forwards by them and local (255) makes each VIP an address of this host.
fn announce_table(s: &str) -> Result<u32, String> {
    let t: u32 = s.parse().map_err(|_| format!("{s:?} is not a routing table number (1-252 or 256-4294967295)"))?;
    let name = match t {
        0 => "unspec",
        253 => "default",
        254 => "main",
        255 => "local",
        _ => return Ok(t),
    };
    Err(format!(
        "table {t} is the kernel's {name} table, which routes by what is in it: give a table of its own (e.g. 100) for the routing daemon to read"
    ))
}

fn default_pin_dir(iface: &str) -> PathBuf {
    PathBuf::from("/sys/fs/bpf/lbd").join(iface)
}

#[tokio::main]
async fn main() -> Result<()> {
    svc::logging::init("info,netlink_packet_route=error");
    let args = Args::parse();
    let pin_dir = match (&args.pin_dir, &args.iface) {
        _ if args.no_pin => None,
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
    let iface = args.iface.clone().context("--iface is required")?;
    if args.max_services == 0 || args.conn_table_size == 0 {
        anyhow::bail!("--max-services and --conn-table-size must be at least 1");
    }
    if args.check_concurrency == 0 || args.events == 0 {
        anyhow::bail!("--check-concurrency and --events must be at least 1");
    }
    // Everything the operator gave is parsed and validated before the dataplane is touched.
    let initial = match (&args.state, &args.config) {
        (Some(state), _) if state.exists() => {
            tracing::info!(state = %state.display(), "restoring from the state file");
            LbState::load_state(state).context("restoring the state file")?
        }
        (_, Some(config)) => LbState::load(config).context("reading the config")?,
        _ => LbState::default(),
    };
    let metrics = match args.metrics {
        Some(addr) => {
            Some(tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot serve metrics on {addr}"))?)
        }
        None => None,
    };
    let api = match args.api {
        Some(addr) => {
            let bearer = match &args.api_token_file {
                Some(f) => svc::auth::Bearer::from_file(f).map_err(anyhow::Error::msg)?,
                None => svc::auth::Bearer::none(),
            };
            bearer.check_bind(addr, "the control API").map_err(anyhow::Error::msg)?;
            let l =
                tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot serve the API on {addr}"))?;
            Some((l, bearer))
        }
        None => None,
    };
    let sync = match (args.sync_listen, &args.sync_key_file) {
        (Some(listen), Some(key)) => Some(lb_userspace::sync::SyncConfig {
            listen,
            peers: args.sync_peer.clone(),
            key: lb_userspace::sync::read_key(key).map_err(anyhow::Error::msg)?,
            rate: args.sync_rate,
        }),
        _ => None,
    };
    let hash_seed = match &args.hash_seed_file {
        Some(f) => read_seed(f)?,
        None => 0,
    };
    // Every resource that is this lbd's alone is claimed before any map is opened, so a second lbd is refused
    // without touching the running one's dataplane: the control socket (bound now; a failed start removes it),
    // the pin directory's lock (held until exit) and the interface's XDP attachment.
    let listener = lb_userspace::daemon::bind_socket(&args.socket)?;
    let _socket_file = RemoveOnDrop(args.socket.clone());
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
    let limits = Limits { max_services: args.max_services, conn_table_size: args.conn_table_size };
    let pins_existed = pin_dir.as_ref().is_some_and(|d| d.join("CONN_TABLE").exists());
    let dp = match &pin_dir {
        Some(dir) => Dataplane::load_pinned(limits, dir),
        None => Dataplane::load(limits),
    }
    .context("loading the XDP program (are you root?)")?;
    let opts = Options {
        state_path: args.state.clone(),
        manage_vips: args.manage_vips,
        check_concurrency: args.check_concurrency,
        event_capacity: args.events,
        keep_on_exit: args.keep_on_exit,
        flow_idle_timeout: args.flow_idle_timeout.map_or(lb_userspace::daemon::DEFAULT_FLOW_IDLE_TIMEOUT, |d| d.0),
        hash_seed,
        announce: args.announce_table.map(|t| (args.announce_when, t)),
        sync,
        ..Options::new(iface.clone(), args.xdp_mode)
    };
    let daemon = match Daemon::start(opts, dp, initial).await {
        Ok(d) => d,
        Err(e) => {
            // A failed start leaves nothing behind that it created (pins an earlier lbd left stay as they were).
            if let (Some(dir), false) = (&pin_dir, pins_existed) {
                let _ = dataplane::remove_pins(dir);
            }
            return Err(e).with_context(|| format!("starting on {iface}"));
        }
    };
    let mode = daemon.mode();
    if let Some(m) = &metrics {
        tracing::info!(addr = %m.local_addr()?, "serving metrics on /metrics");
    }
    if let Some((l, bearer)) = &api {
        tracing::info!(addr = %l.local_addr()?, token = bearer.is_set(), "serving the control API on /api/v1/");
    }
    tracing::info!(socket = %args.socket.display(), %mode, "lbd ready");
    daemon.run((listener, &args.socket), metrics, api, svc::shutdown::signal()).await?;
    Ok(())
}

/// Removes the control socket's file when lbd ends, by an error too (run removes it on a normal stop).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The flow-hash seed in `path`: one hexadecimal number of up to 32 bits (`0x` optional).
fn read_seed(path: &std::path::Path) -> Result<u32> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the hash seed {}", path.display()))?;
    let word = text.split_whitespace().next().unwrap_or("");
    let hex = word.strip_prefix("0x").unwrap_or(word);
    u32::from_str_radix(hex, 16).map_err(|_| {
        anyhow::anyhow!(
            "{}: the hash seed must be a hexadecimal number of up to 8 digits, e.g. 5f3a91c2",
            path.display()
        )
    })
}
