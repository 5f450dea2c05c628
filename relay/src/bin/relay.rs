//! `relay` binary: parses arguments, binds sockets, installs logging and signal handling, then runs the library.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use relay::config::Settings;
use relay::{Config, OriginUrl, Role};
use serde::Serialize;
use svc::config::{File, Keys};
use svc::Dur;

/// The command line. Every setting is an `Option` with no clap default: a flag given overrides the `--config`
/// file, one not given leaves the file's value or the default of [`Settings`] (shown in `--help` from there).
#[derive(Parser)]
#[command(name = "relay", version = svc::version::LONG, about = "RTMP origin/edge relay with GOP cache, on-demand pull and fan-out")]
struct Cli {
    #[command(subcommand)]
    role: RoleCmd,
    /// Log lines as plain text (colours only on a terminal, never with NO_COLOR) or one JSON object per line
    /// (also LOG_FORMAT).
    #[arg(long, global = true, value_name = "plain|json", value_parser = ["plain", "json"])]
    log_format: Option<String>,
}

/// The settings the command line and the `--config` file give now, checked, with the role they make.
fn load(cli: &Cli) -> anyhow::Result<(Settings, Role)> {
    match &cli.role {
        RoleCmd::Origin { common, origin } => {
            let s = settings(common, svc::config::flags_table(origin), "origin")?;
            let role = Role::Origin { publish_token: s.publish_token.clone() };
            Ok((s, role))
        }
        RoleCmd::Edge { common, edge } => {
            let s = settings(common, svc::config::flags_table(edge), "edge")?;
            let origins = s.origin.iter().map(|u| OriginUrl::parse(u)).collect::<Result<Vec<_>, _>>()?;
            Ok((s, Role::Edge { origins }))
        }
    }
}

/// The settings a SIGHUP applies live (see [`relay::config::Reloadable`]); every other one waits for a start.
const RELOADABLE: &[&str] = &[
    "max_connections",
    "max_connections_per_ip",
    "max_streams_per_connection",
    "max_pulls",
    "max_new_pulls_per_ip",
    "max_rtmpt_sessions_per_ip",
    "on_publish",
    "on_unpublish",
    "on_play",
    "on_stop",
    "callback_timeout",
    "api_token",
    "publish_token",
    "hls_cors_origin",
];

/// SIGHUP: the settings are read and checked again as a start would (a refusal keeps the running ones); the
/// reloadable ones are swapped in for the next connection, play, pull and API request (players connected see
/// nothing), the others are named as waiting for the next start.
async fn watch_reloads(
    mut reloads: svc::reload::Reloads,
    cli: Cli,
    mut running: Settings,
    live: std::sync::Arc<relay::config::Live>,
) {
    while reloads.next().await {
        let new = load(&cli).and_then(|(s, role)| Ok((build(&s, role)?, s)));
        let (config, s) = match new {
            Ok(x) => x,
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
            live.set(relay::config::Reloadable::of(&config));
            // Names only: a token's value never reaches the log.
            tracing::info!(settings = %now.join(", "), "SIGHUP: applied: {}", now.join(", "));
            for k in &now {
                set_key(&mut running, &s, k);
            }
        }
        if !later.is_empty() {
            tracing::warn!(
                settings = %later.join(", "),
                "SIGHUP: changed, applied at the next start (a restart; an edge drains first through maintenance)"
            );
        }
    }
}

/// Copies setting `key` of `from` into `to` (a reloadable one, once applied), through their serialised form.
fn set_key(to: &mut Settings, from: &Settings, key: &str) {
    let (Ok(serde_json::Value::Object(mut a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(&*to), serde_json::to_value(from))
    else {
        return;
    };
    match b.get(key) {
        Some(v) => a.insert(key.to_string(), v.clone()),
        None => a.remove(key),
    };
    if let Ok(s) = serde_json::from_value(serde_json::Value::Object(a)) {
        *to = s;
    }
}

#[derive(Subcommand)]
enum RoleCmd {
    /// Accept publishers and players.
    Origin {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        origin: OriginFlags,
    },
    /// Serve players by pulling streams from origins on demand.
    Edge {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        edge: EdgeFlags,
    },
}

#[derive(Args, Serialize)]
struct OriginFlags {
    /// Require ?token=TOKEN on the publish stream key or tcUrl.
    #[arg(long)]
    publish_token: Option<String>,
    /// Ingest a source into a stream: APP/KEY=rtmp://HOST[:PORT]/APP/KEY (repeatable); reconnects until stopped.
    #[arg(long = "source", value_name = "APP/KEY=URL")]
    source: Vec<String>,
}

#[derive(Args, Serialize)]
struct EdgeFlags {
    /// rtmp://HOST:PORT/APP; repeat for failover, tried in turn. Optional with --manager, which sets the list.
    #[arg(long = "origin")]
    origin: Vec<String>,
    /// Stop pulling a stream this long after its last player left (e.g. 30s, 1.5s, 2m or bare seconds; 0 stops at
    /// once; at most 1 day).
    #[arg(long)]
    idle_timeout: Option<Dur>,
    /// Upstream pulls running at once (1-100000); a play that would start one more is refused
    /// (NetStream.Play.Failed).
    #[arg(long)]
    max_pulls: Option<u32>,
    /// Pulls one client IP may have started that have received no media yet (unknown keys each cost an
    /// upstream connection); a play that would start one more is refused (NetStream.Play.Failed, HTTP 503)
    /// until one of them gets media or ends. Players of running streams are not counted. 0 = no limit
    /// (0-100000).
    #[arg(long)]
    max_new_pulls_per_ip: Option<u32>,
    /// Reconnect backoff, minimum, in milliseconds (1-600000), doubled per failure up to --backoff-max-ms.
    #[arg(long)]
    backoff_min_ms: Option<u64>,
    /// Reconnect backoff, maximum, in milliseconds (1-600000; at least --backoff-min-ms).
    #[arg(long)]
    backoff_max_ms: Option<u64>,
}

#[derive(Args, Serialize)]
struct Common {
    /// TOML file of settings: `flag-name = value` per line (e.g. `on-publish = "http://..."`, `max-pulls = 100`,
    /// `origin = ["rtmp://a/live", "rtmp://b/live"]`). Flags on the command line override the file's.
    #[arg(long)]
    #[serde(skip)]
    config: Option<std::path::PathBuf>,
    /// Check the settings (and the --config file) and exit: 0 and a one-line summary, or the reason; binds nothing.
    #[arg(long)]
    #[serde(skip)]
    check: bool,
    /// RTMP listen address, e.g. 0.0.0.0:1935 (required, here or in the --config file).
    #[arg(long)]
    listen: Option<SocketAddr>,
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
    #[arg(long)]
    grace_period: Option<Dur>,
    /// How long a player may accept no data before it is disconnected (same forms, above 0).
    #[arg(long)]
    player_timeout: Option<Dur>,
    /// How long a publisher/upstream may send nothing before it is dropped (same forms, above 0).
    #[arg(long)]
    source_timeout: Option<Dur>,
    /// Largest chunk size a peer may set (128, RTMP's default, to 16777215).
    #[arg(long)]
    max_chunk_size: Option<u32>,
    /// Largest RTMP message a peer may send, in bytes (4096 to 16777215, what RTMP's 3-byte length can say).
    #[arg(long)]
    max_message_size: Option<u32>,
    /// Most RTMP connections open at once (1-1000000).
    #[arg(long)]
    max_connections: Option<u32>,
    /// Messages a player may fall behind before skipping to the next keyframe (8-1000000).
    #[arg(long)]
    player_queue: Option<u32>,
    /// The RTMP handshake must complete within this (same forms, above 0).
    #[arg(long)]
    handshake_timeout: Option<Dur>,
    /// After the handshake, the client must send connect within this (same forms, above 0).
    #[arg(long)]
    connect_timeout: Option<Dur>,
    /// A connection that neither plays nor publishes and sends nothing for this long is closed (same forms, above 0).
    #[arg(long)]
    conn_idle_timeout: Option<Dur>,
    /// Play and publish requests one connection may make in its life (1-10000).
    #[arg(long)]
    max_streams_per_connection: Option<u32>,
    /// RTMP connections open at once from one client IP (up to 1000000); 0 turns the limit off.
    #[arg(long)]
    max_connections_per_ip: Option<u32>,
    /// RTMPT sessions (POST /open/1, no auth) open at once from one client IP (up to 100000); 0 turns the limit
    /// off. Past it, and past half of --max-connections for all RTMPT sessions, /open/1 answers 503.
    #[arg(long)]
    max_rtmpt_sessions_per_ip: Option<u32>,
    /// Bytes of recent frames a stream keeps for its players, 64 KiB to 64 GiB; the oldest leave first.
    #[arg(long)]
    stream_buffer_bytes: Option<u64>,
    /// Bytes a player may fall behind before it skips to the next keyframe, 64 KiB to 64 GiB.
    #[arg(long)]
    player_buffer_bytes: Option<u64>,
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
    #[arg(long)]
    callback_timeout: Option<Dur>,
    /// Milliseconds audio and metadata may wait for the next video frame, so players get them in one socket
    /// write (less CPU per player, at most this much added audio latency); 0 sends each message at once. The
    /// default holds audio about one video frame, like SRS's merged writes but far shorter. At most 1000.
    #[arg(long)]
    coalesce_ms: Option<u64>,
    /// Merged writes: milliseconds a stream's frames are gathered so each player gets them in one write (less
    /// CPU per player, up to this much added latency); new players still start at once from the GOP cache.
    /// 0 turns merging off (then --coalesce-ms applies). The default of 100 ms is chosen from the fan-out
    /// benchmark (relay/BENCHMARKS.md): less than half the CPU per player of no merging, for about 60 ms more
    /// mean delivery lag. At most 1000 (more is refused).
    #[arg(long)]
    merge_ms: Option<u64>,
    /// The stream manager to register with (http://HOST:PORT), or every smd of an HA deployment separated by
    /// commas (http://A:PORT,http://B:PORT) or in repeated flags, tried in turn until one answers: it then drives
    /// this node (origin lists, pre-pulls, maintenance) through --api, with the --api-token both sides share.
    #[arg(long, value_name = "URL[,URL...]")]
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "comma_list")]
    manager: Vec<String>,
    /// This node's name in the cluster (with --manager): 1-64 of A-Z a-z 0-9 - _ . (the manager's rule); default: the
    /// host name.
    #[arg(long)]
    node_name: Option<String>,
    /// The address the manager, edges and the load balancer reach this node at (with --manager); default: the
    /// --listen address when it is not a wildcard.
    #[arg(long)]
    advertise: Option<std::net::IpAddr>,
    /// Package every stream as HLS and LL-HLS on --http-listen (GET /APP/KEY/index.m3u8); false turns it off.
    #[arg(long, value_name = "true|false")]
    hls: Option<bool>,
    /// HLS target segment duration, 500ms to 30s: segments start at the first keyframe of each window of it on
    /// the stream's clock, so set the encoder's keyframe interval to it or a divisor of it.
    #[arg(long)]
    hls_segment: Option<Dur>,
    /// LL-HLS part duration, 100ms to half of --hls-segment; 0 turns Low-Latency HLS (parts, preload hints) off.
    #[arg(long)]
    hls_part: Option<Dur>,
    /// Segments an HLS playlist lists (3-1000); two more stay fetchable, all within --stream-buffer-bytes.
    #[arg(long)]
    hls_window: Option<u32>,
    /// Access-Control-Allow-Origin of HLS answers (default *, so players on any page may fetch); empty sends none.
    #[arg(long)]
    hls_cors_origin: Option<String>,
    /// hls.js (hls.min.js) to serve as /hls.min.js for the player page /APP/KEY/play.html (cargo xtask setup
    /// vendors it under tests/browser/node_modules/hls.js/dist/).
    #[arg(long)]
    hls_js: Option<std::path::PathBuf>,
    /// On SIGTERM, how long to keep serving the players already connected after the listeners close (and the
    /// manager is told, with --manager); the relay exits once they are gone or this passes. 0 stops at once;
    /// at most 1h.
    #[arg(long)]
    drain_timeout: Option<Dur>,
}

/// Repeated `--manager` flags as the one comma list the `manager` setting is (in a `--config` file too).
fn comma_list<S: serde::Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&urls.join(","))
}

/// The manager link of `--manager`, checked before anything is bound.
fn manager_link(common: &Settings, listen: SocketAddr) -> anyhow::Result<Option<relay::managed::ManagerLink>> {
    // Checked with or without --manager: a name the manager would refuse forever is refused now.
    if let Some(name) = &common.node_name {
        check_node_name(name)?;
    }
    let Some(urls) = &common.manager else {
        return Ok(None);
    };
    let managers = manager_urls(urls)?;
    let api = common.api.context("--manager needs --api: the manager drives the node through it")?;
    let ip = match common.advertise {
        Some(ip) => ip,
        None if !listen.ip().is_unspecified() => listen.ip(),
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
        managers,
        name,
        api: format!("http://{}", at(api.port())),
        rtmp: at(listen.port()),
        http: common.http_listen.map(|h| at(h.port())),
    }))
}

/// `--manager URL[,URL...]`: every smd of the deployment, each URL checked, none empty or named twice.
fn manager_urls(urls: &str) -> anyhow::Result<Vec<svc::client::BaseUrl>> {
    let parts: Vec<&str> = urls.split(',').map(str::trim).collect();
    let mut managers: Vec<svc::client::BaseUrl> = Vec::new();
    for (i, url) in parts.iter().enumerate() {
        let which = format!("--manager {urls:?}: URL {} of {}", i + 1, parts.len());
        if url.is_empty() {
            anyhow::bail!("{which} is empty; give http://HOST:PORT of every stream manager, separated by commas");
        }
        let manager = svc::client::BaseUrl::parse(url).with_context(|| which.clone())?;
        if managers.contains(&manager) {
            anyhow::bail!("{which} ({manager}) is named twice; name each stream manager once");
        }
        managers.push(manager);
    }
    Ok(managers)
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

/// The settings of the command line merged over its `--config` file's, checked, for `role` ("origin" or "edge").
fn settings(common: &Common, role_flags: toml::Table, role: &str) -> anyhow::Result<Settings> {
    let file = common.config.as_deref().map(File::read).transpose()?;
    let mut flags = svc::config::flags_table(common);
    flags.extend(role_flags);
    let keys = Settings::keys(role);
    let hint = format!("keys are the long flags of `relay {role} --help` (with - or _)");
    let s: Settings = svc::config::merge(file.as_ref(), flags, &keys, Keys::Flags, &hint)?;
    s.validate()?;
    Ok(s)
}

/// The running configuration of checked settings: URLs, sources and the manager link parsed, before any socket.
fn build(s: &Settings, role: Role) -> anyhow::Result<Config> {
    let listen = s.listen.context("--listen is required")?;
    let mut sources = Vec::new();
    for spec in &s.source {
        let (stream, url) = spec.split_once('=').context("--source takes APP/KEY=URL")?;
        let (app, key) = stream.split_once('/').context("--source takes APP/KEY=URL")?;
        if !relay::valid_name(app) || !relay::valid_name(key) {
            anyhow::bail!("--source {stream}: bad app or stream name (1-128 of A-Z a-z 0-9 - _ . ~)");
        }
        relay::source::SourceUrl::parse(url)?;
        sources.push((app.to_string(), key.to_string(), url.to_string()));
    }
    let mut config = Config::from_settings(s, role);
    config.manager = manager_link(s, listen)?;
    config.sources = sources;
    let url = |u: &Option<String>| u.as_deref().map(relay::callback::CallbackUrl::parse).transpose();
    config.callbacks = relay::callback::Callbacks {
        on_publish: url(&s.on_publish).map_err(anyhow::Error::msg)?,
        on_unpublish: url(&s.on_unpublish).map_err(anyhow::Error::msg)?,
        on_play: url(&s.on_play).map_err(anyhow::Error::msg)?,
        on_stop: url(&s.on_stop).map_err(anyhow::Error::msg)?,
        timeout: s.callback_timeout.into(),
    };
    config.validate()?;
    if let Some(api) = s.api {
        // Before binding anything: an open API on a reachable address is refused at start.
        config.validate_api_addr(api)?;
    }
    Ok(config)
}

fn main() -> anyhow::Result<()> {
    svc::docs::maybe_write_with_defaults(Cli::command, Settings::default);
    svc::logging::init("info");
    let defaults = svc::config::flags_table(&Settings::default());
    let matches = svc::config::show_defaults(Cli::command(), &defaults).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Validate everything before binding anything.
    let (s, role) = load(&cli)?;
    let check = match &cli.role {
        RoleCmd::Origin { common, .. } | RoleCmd::Edge { common, .. } => common.check,
    };
    let config = build(&s, role)?;
    let listen = s.listen.context("--listen is required")?;
    if check {
        println!(
            "ok: relay {} on {listen}{}, merge {} ms, at most {} connections{}",
            config.role.name(),
            s.api.map(|a| format!(", API on {a}")).unwrap_or_default(),
            s.merge_ms,
            s.max_connections,
            match &config.role {
                Role::Edge { origins } => format!(", {} origins", origins.len()),
                Role::Origin { .. } => format!(", {} sources", config.sources.len()),
            }
        );
        return Ok(());
    }

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        // First, before any socket: from here a SIGHUP re-reads the configuration instead of ending the relay.
        let reloads = svc::reload::reloads().context("installing the SIGHUP handler")?;
        tokio::spawn(watch_reloads(reloads, cli, s.clone(), config.live.clone()));
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding RTMP listener {listen}"))?;
        let api = match s.api {
            Some(a) => {
                Some(tokio::net::TcpListener::bind(a).await.with_context(|| format!("binding API listener {a}"))?)
            }
            None => None,
        };
        let http = match s.http_listen {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a).await.with_context(|| format!("binding HTTP media listener {a}"))?,
            ),
            None => None,
        };
        // SIGTERM handled from before systemd hears READY=1.
        let stop = svc::shutdown::signal();
        svc::notify::notify(svc::notify::State::Ready, Some(&format!("relay {} on {listen}", config.role.name())));
        relay::run_on(relay::Listeners { rtmp: listener, api, http }, config, stop).await?;
        Ok(())
    })
}
