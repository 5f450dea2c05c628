//! `relay` binary: parses arguments, binds sockets, installs logging and signal handling, then runs the library.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use relay::{ChunkLimits, Config, OriginUrl, Role};
use svc::Dur;

/// The largest message RTMP's 3-byte length field can carry.
const MAX_RTMP_MESSAGE: i64 = (1 << 24) - 1;
/// Bounds of the per-stream and per-player byte budgets: below 64 KiB not even a keyframe fits.
const MIN_BUFFER: u64 = 64 << 10;
const MAX_BUFFER: u64 = 64 << 30;

#[derive(Parser)]
#[command(about = "RTMP origin/edge relay with GOP cache, on-demand pull and fan-out")]
// A flag given again (on the command line after the --config file's) replaces the earlier value.
#[command(args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    role: RoleCmd,
}

#[derive(Subcommand)]
enum RoleCmd {
    /// Accept publishers and players.
    Origin {
        #[command(flatten)]
        common: Common,
        /// Require ?token=TOKEN on the publish stream key or tcUrl.
        #[arg(long)]
        publish_token: Option<String>,
        /// Ingest a source into a stream: APP/KEY=rtmp://HOST[:PORT]/APP/KEY (repeatable); reconnects until stopped.
        #[arg(long = "source", value_name = "APP/KEY=URL")]
        sources: Vec<String>,
    },
    /// Serve players by pulling streams from origins on demand.
    Edge {
        #[command(flatten)]
        common: Common,
        /// rtmp://HOST:PORT/APP; repeat for failover, tried in turn. Optional with --manager, which sets the list.
        #[arg(long = "origin")]
        origins: Vec<String>,
        /// Stop pulling a stream this long after its last player left (e.g. 30s, 1.5s, 2m or bare seconds; 0 stops at
        /// once; at most 1 day).
        #[arg(long, default_value_t = Dur::secs(30))]
        idle_timeout: Dur,
        /// Upstream pulls running at once (1-100000); a play that would start one more is refused
        /// (NetStream.Play.Failed).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        max_pulls: u32,
        /// Pulls one client IP may have started that have received no media yet (unknown keys each cost an
        /// upstream connection); a play that would start one more is refused (NetStream.Play.Failed, HTTP 503)
        /// until one of them gets media or ends. Players of running streams are not counted. 0 = no limit
        /// (0-100000).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(0..=100_000))]
        max_new_pulls_per_ip: u32,
        /// Reconnect backoff bounds in milliseconds (1-600000 each; the maximum at least the minimum).
        #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=600_000))]
        backoff_min_ms: u64,
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
        backoff_max_ms: u64,
    },
}

#[derive(Args)]
struct Common {
    /// TOML file of flags: `flag-name = value` per line (e.g. `on-publish = "http://..."`, `max-pulls = 100`,
    /// `origin = ["rtmp://a/live", "rtmp://b/live"]`). Flags on the command line override the file's.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// RTMP listen address, e.g. 0.0.0.0:1935.
    #[arg(long)]
    listen: SocketAddr,
    /// Media over HTTP for players: HTTP-FLV (GET /APP/KEY.flv), e.g. 0.0.0.0:8080. Public like --listen; not
    /// the API's port, which is for operators and may need a token.
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// HTTP API listen address (GET /streams, GET /metrics, POST /streams/{app}/{key}/pull).
    #[arg(long)]
    api: Option<SocketAddr>,
    /// How long players stay attached while a stream has no publisher/upstream (e.g. 10s, 500ms, 1.5s, 1m 30s or bare
    /// seconds; 0 ends them at once; durations are at most 1 day). Also how long a player of a key nobody
    /// publishes waits before it is told "not found".
    #[arg(long, default_value_t = Dur::secs(10))]
    grace_period: Dur,
    /// How long a player may accept no data before it is disconnected (same forms, above 0).
    #[arg(long, default_value_t = Dur::secs(10))]
    player_timeout: Dur,
    /// How long a publisher/upstream may send nothing before it is dropped (same forms, above 0).
    #[arg(long, default_value_t = Dur::secs(10))]
    source_timeout: Dur,
    /// Largest chunk size a peer may set (128, RTMP's default, to 16777215).
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(128..=MAX_RTMP_MESSAGE))]
    max_chunk_size: u32,
    /// Largest RTMP message a peer may send, in bytes (4096 to 16777215, what RTMP's 3-byte length can say).
    #[arg(long, default_value_t = 8 << 20, value_parser = clap::value_parser!(u32).range(4096..=MAX_RTMP_MESSAGE))]
    max_message_size: u32,
    /// Most RTMP connections open at once (1-1000000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Messages a player may fall behind before skipping to the next keyframe (8-1000000).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(8..=1_000_000))]
    player_queue: u32,
    /// The RTMP handshake must complete within this (same forms, above 0).
    #[arg(long, default_value_t = Dur::secs(10))]
    handshake_timeout: Dur,
    /// After the handshake, the client must send connect within this (same forms, above 0).
    #[arg(long, default_value_t = Dur::secs(10))]
    connect_timeout: Dur,
    /// A connection that neither plays nor publishes and sends nothing for this long is closed (same forms, above 0).
    #[arg(long, default_value_t = Dur::secs(30))]
    conn_idle_timeout: Dur,
    /// Play and publish requests one connection may make in its life (1-10000).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_streams_per_connection: u32,
    /// RTMP connections open at once from one client IP (up to 1000000); 0, the default, turns the limit off.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    max_connections_per_ip: u32,
    /// RTMPT sessions (POST /open/1, no auth) open at once from one client IP (up to 100000); 0 turns the limit
    /// off. Past it, and past half of --max-connections for all RTMPT sessions, /open/1 answers 503.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    max_rtmpt_sessions_per_ip: u32,
    /// Bytes of recent frames a stream keeps for its players, 64 KiB to 64 GiB; the oldest leave first.
    #[arg(long, default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(MIN_BUFFER..=MAX_BUFFER))]
    stream_buffer_bytes: u64,
    /// Bytes a player may fall behind before it skips to the next keyframe, 64 KiB to 64 GiB.
    #[arg(long, default_value_t = 8 << 20, value_parser = clap::value_parser!(u64).range(MIN_BUFFER..=MAX_BUFFER))]
    player_buffer_bytes: u64,
    /// Bearer token the HTTP API requires (Authorization: Bearer TOKEN); required when --api is not loopback.
    /// Also read from the RELAY_API_TOKEN environment variable, which keeps it out of the process list.
    #[arg(long, env = "RELAY_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// POST JSON {action, app, stream, client_addr, protocol, query, tc_url} here before a publish; a non-2xx
    /// answer or a timeout refuses it (http://HOST[:PORT]/PATH).
    #[arg(long)]
    on_publish: Option<String>,
    /// POST here when a publish ends (the answer is ignored).
    #[arg(long)]
    on_unpublish: Option<String>,
    /// POST here before a play; a non-2xx answer or a timeout refuses it.
    #[arg(long)]
    on_play: Option<String>,
    /// POST here when a play ends (the answer is ignored).
    #[arg(long)]
    on_stop: Option<String>,
    /// Longest wait for a callback's answer, connect included (same forms as the other durations, above 0).
    #[arg(long, default_value_t = Dur::secs(3))]
    callback_timeout: Dur,
    /// Milliseconds audio and metadata may wait for the next video frame, so players get them in one socket
    /// write (less CPU per player, at most this much added audio latency); 0 sends each message at once. The
    /// default holds audio about one video frame, like SRS's merged writes but far shorter. At most 1000.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=1000))]
    coalesce_ms: u64,
    /// Merged writes: milliseconds a stream's frames are gathered so each player gets them in one write (less
    /// CPU per player, up to this much added latency); new players still start at once from the GOP cache.
    /// 0 turns merging off (then --coalesce-ms applies). The default of 100 ms is chosen from the fan-out
    /// benchmark (relay/BENCHMARKS.md): less than half the CPU per player of no merging, for about 60 ms more
    /// mean delivery lag. At most 1000.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=1000))]
    merge_ms: u64,
    /// A stream manager to register with (http://HOST:PORT): it then drives this node (origin lists, pre-pulls,
    /// maintenance) through --api, with the --api-token both sides share.
    #[arg(long)]
    manager: Option<String>,
    /// This node's name in the cluster (with --manager): 1-64 of A-Z a-z 0-9 - _ . (the manager's rule); default: the
    /// host name.
    #[arg(long)]
    node_name: Option<String>,
    /// The address the manager, edges and the load balancer reach this node at (with --manager); default: the
    /// --listen address when it is not a wildcard.
    #[arg(long)]
    advertise: Option<std::net::IpAddr>,
}

/// The manager link of `--manager`, checked before anything is bound.
fn manager_link(common: &Common) -> anyhow::Result<Option<relay::managed::ManagerLink>> {
    // Checked with or without --manager: a name the manager would refuse forever is refused now.
    if let Some(name) = &common.node_name {
        check_node_name(name)?;
    }
    let Some(url) = &common.manager else {
        return Ok(None);
    };
    let manager = svc::client::BaseUrl::parse(url)?;
    let api = common.api.context("--manager needs --api: the manager drives the node through it")?;
    let ip = match common.advertise {
        Some(ip) => ip,
        None if !common.listen.ip().is_unspecified() => common.listen.ip(),
        None => {
            anyhow::bail!("--manager with a wildcard --listen needs --advertise ADDRESS (how others reach this node)")
        }
    };
    let at = |port: u16| std::net::SocketAddr::new(ip, port).to_string();
    let name = match &common.node_name {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("--node-name not given and the host name is unreadable")?
            .trim()
            .to_string(),
    };
    check_node_name(&name)?;
    Ok(Some(relay::managed::ManagerLink {
        manager,
        name,
        api: format!("http://{}", at(api.port())),
        rtmp: at(common.listen.port()),
        http: common.http_listen.map(|h| at(h.port())),
    }))
}

fn check_node_name(name: &str) -> anyhow::Result<()> {
    if !svc::names::valid_cluster_name(name) {
        anyhow::bail!(
            "--node-name {name:?}: {} (the stream manager's rule for node names; the default is the host name)",
            svc::names::CLUSTER_NAME_RULE
        );
    }
    Ok(())
}

/// Turns a `--config FILE` into flags placed right after the role, before the command line's own flags (which
/// then override them). Keys are long flag names, with `-` or `_`.
fn expand_config(mut argv: Vec<String>) -> anyhow::Result<Vec<String>> {
    let Some(i) = argv.iter().position(|a| a == "--config" || a.starts_with("--config=")) else {
        return Ok(argv);
    };
    let path = match argv[i].strip_prefix("--config=") {
        Some(p) => p.to_string(),
        None => argv.get(i + 1).cloned().context("--config needs a file")?,
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading --config {path}"))?;
    let table: toml::Table = text.parse().with_context(|| format!("--config {path} is not valid TOML"))?;
    // The role's own flags: a key that names none is a typo, refused with the file's name rather than as an
    // unexpected argument the user never typed.
    let role = argv.iter().find(|a| *a == "origin" || *a == "edge").cloned();
    let known: Vec<String> = role
        .and_then(|r| Cli::command().find_subcommand(&r).cloned())
        .map(|c| c.get_arguments().filter_map(|a| a.get_long().map(str::to_string)).collect())
        .unwrap_or_default();
    let mut flags = Vec::new();
    for (key, value) in &table {
        let flag = format!("--{}", key.replace('_', "-"));
        if flag == "--config" {
            anyhow::bail!("--config {path}: a config file cannot name another (key {key:?})");
        }
        if !known.is_empty() && !known.iter().any(|k| flag[2..] == *k) {
            anyhow::bail!("--config {path}: unknown key {key:?}: keys are the long flags of `relay origin --help` or `relay edge --help`");
        }
        let values = match value {
            toml::Value::Array(a) => a.clone(),
            v => vec![v.clone()],
        };
        for v in values {
            let v = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => anyhow::bail!("--config {path}: {key} = {other} is not a string or a number"),
            };
            flags.push(format!("{flag}={v}"));
        }
    }
    // Drop the --config flag itself, then put the file's flags right after the role subcommand.
    let n = if argv[i].starts_with("--config=") { 1 } else { 2 };
    argv.drain(i..i + n);
    let at = argv.iter().position(|a| a == "origin" || a == "edge").map_or(argv.len(), |p| p + 1);
    argv.splice(at..at, flags);
    Ok(argv)
}

fn main() -> anyhow::Result<()> {
    svc::logging::init("info");
    let argv = expand_config(std::env::args().collect())?;
    let cli = Cli::parse_from(argv);
    // Validate everything before binding anything.
    let mut max_pulls = None;
    let mut sources = Vec::new();
    let (common, role, idle, backoff) = match cli.role {
        RoleCmd::Origin { common, publish_token, sources: s } => {
            for spec in &s {
                let (stream, url) = spec.split_once('=').context("--source takes APP/KEY=URL")?;
                let (app, key) = stream.split_once('/').context("--source takes APP/KEY=URL")?;
                if !relay::valid_name(app) || !relay::valid_name(key) {
                    anyhow::bail!("--source {stream}: bad app or stream name (1-128 of A-Z a-z 0-9 - _ . ~)");
                }
                relay::source::SourceUrl::parse(url)?;
                sources.push((app.to_string(), key.to_string(), url.to_string()));
            }
            (common, Role::Origin { publish_token }, None, None)
        }
        RoleCmd::Edge {
            common,
            origins,
            idle_timeout,
            max_pulls: mp,
            max_new_pulls_per_ip: per_ip,
            backoff_min_ms,
            backoff_max_ms,
        } => {
            let origins = origins.iter().map(|u| OriginUrl::parse(u)).collect::<Result<Vec<_>, _>>()?;
            max_pulls = Some((mp, per_ip));
            (common, Role::Edge { origins }, Some(idle_timeout), Some((backoff_min_ms, backoff_max_ms)))
        }
    };
    for (flag, d) in [
        ("--player-timeout", common.player_timeout),
        ("--source-timeout", common.source_timeout),
        ("--handshake-timeout", common.handshake_timeout),
        ("--connect-timeout", common.connect_timeout),
        ("--conn-idle-timeout", common.conn_idle_timeout),
        ("--callback-timeout", common.callback_timeout),
    ] {
        if Duration::from(d).is_zero() {
            anyhow::bail!("{flag} 0: a zero timeout would drop every connection at once; give a duration above 0");
        }
    }
    let mut config = Config::new(role);
    config.limits = ChunkLimits { max_chunk_size: common.max_chunk_size, max_message_size: common.max_message_size };
    config.max_connections = common.max_connections as usize;
    config.grace_period = common.grace_period.into();
    config.player_timeout = common.player_timeout.into();
    config.source_timeout = common.source_timeout.into();
    config.player_queue = common.player_queue as usize;
    config.coalesce = Duration::from_millis(common.coalesce_ms);
    config.merge = Duration::from_millis(common.merge_ms);
    config.handshake_timeout = common.handshake_timeout.into();
    config.connect_timeout = common.connect_timeout.into();
    config.conn_idle_timeout = common.conn_idle_timeout.into();
    config.max_streams_per_connection = common.max_streams_per_connection as usize;
    config.max_connections_per_ip = common.max_connections_per_ip as usize;
    config.max_rtmpt_sessions_per_ip = common.max_rtmpt_sessions_per_ip as usize;
    config.stream_buffer_bytes = usize::try_from(common.stream_buffer_bytes).context("--stream-buffer-bytes")?;
    config.player_buffer_bytes = usize::try_from(common.player_buffer_bytes).context("--player-buffer-bytes")?;
    config.api_token = common.api_token.clone();
    config.manager = manager_link(&common)?;
    config.sources = sources;
    let url = |u: &Option<String>| u.as_deref().map(relay::callback::CallbackUrl::parse).transpose();
    config.callbacks = relay::callback::Callbacks {
        on_publish: url(&common.on_publish).map_err(anyhow::Error::msg)?,
        on_unpublish: url(&common.on_unpublish).map_err(anyhow::Error::msg)?,
        on_play: url(&common.on_play).map_err(anyhow::Error::msg)?,
        on_stop: url(&common.on_stop).map_err(anyhow::Error::msg)?,
        timeout: common.callback_timeout.into(),
    };
    if let Some((mp, per_ip)) = max_pulls {
        config.max_pulls = mp as usize;
        config.max_new_pulls_per_ip = per_ip as usize;
    }
    if let Some(idle) = idle {
        config.idle_timeout = idle.into();
    }
    if let Some((lo, hi)) = backoff {
        if hi < lo {
            anyhow::bail!(
                "--backoff-max-ms {hi} is below --backoff-min-ms {lo}: the maximum must be at least the minimum"
            );
        }
        config.backoff_min = Duration::from_millis(lo);
        config.backoff_max = Duration::from_millis(hi);
    }
    config.validate()?;
    if let Some(api) = common.api {
        // Before binding anything: an open API on a reachable address is refused at start.
        config.validate_api_addr(api)?;
    }

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(common.listen)
            .await
            .with_context(|| format!("binding RTMP listener {}", common.listen))?;
        let api = match common.api {
            Some(a) => {
                Some(tokio::net::TcpListener::bind(a).await.with_context(|| format!("binding API listener {a}"))?)
            }
            None => None,
        };
        let http = match common.http_listen {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a).await.with_context(|| format!("binding HTTP media listener {a}"))?,
            ),
            None => None,
        };
        relay::run_on(relay::Listeners { rtmp: listener, api, http }, config, svc::shutdown::signal()).await?;
        Ok(())
    })
}
