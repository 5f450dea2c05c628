//! lbd's settings: every flag with its default and range in one place, read from the top of the `--config` file
//! and the command line through `svc::config` (the relay and smd load theirs the same way), checked before anything
//! is bound or attached.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use svc::config::{in_range, ConfigError};
use svc::Dur;

use crate::api::AnnounceWhen;
use crate::dataplane::AttachMode;

/// The most services the dataplane may be sized for: each costs a 256 KiB Maglev table (1 GiB at the top).
pub const MAX_SERVICES: u32 = 4096;
/// The largest connection table: about 100 bytes an entry, 5 GB at the top.
pub const MAX_CONN_TABLE: u32 = 50_000_000;

/// Every lbd setting, as a flag (`--max-services`) and as a key at the top of the `--config` file
/// (`max_services = 128`, `-` or `_`), with its default: documented one row each in README.md ("lbd settings"; a
/// unit test fails when one has no row there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub iface: Option<String>,
    pub socket: PathBuf,
    pub state: Option<PathBuf>,
    pub xdp_mode: AttachMode,
    pub max_services: u32,
    pub conn_table_size: u32,
    pub manage_vips: bool,
    pub metrics: Option<SocketAddr>,
    pub api: Option<SocketAddr>,
    pub api_token_file: Option<PathBuf>,
    pub announce_table: Option<u32>,
    pub announce_when: AnnounceWhen,
    pub sync_listen: Option<SocketAddr>,
    pub sync_peer: Vec<SocketAddr>,
    pub sync_key_file: Option<PathBuf>,
    pub sync_rate: u32,
    pub hash_seed_file: Option<PathBuf>,
    pub pin_dir: Option<PathBuf>,
    pub no_pin: bool,
    pub keep_on_exit: bool,
    pub check_concurrency: usize,
    pub events: usize,
    pub flow_idle_timeout: Dur,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            iface: None,
            socket: PathBuf::from(crate::api::DEFAULT_SOCKET),
            state: None,
            xdp_mode: AttachMode::Native,
            max_services: lb_common::DEFAULT_MAX_SERVICES,
            conn_table_size: lb_common::DEFAULT_CONN_TABLE_SIZE,
            manage_vips: false,
            metrics: None,
            api: None,
            api_token_file: None,
            announce_table: None,
            announce_when: AnnounceWhen::Any,
            sync_listen: None,
            sync_peer: Vec::new(),
            sync_key_file: None,
            sync_rate: 2000,
            hash_seed_file: None,
            pin_dir: None,
            no_pin: false,
            keep_on_exit: false,
            check_concurrency: crate::health::DEFAULT_CONCURRENCY,
            events: crate::events::DEFAULT_CAPACITY,
            flow_idle_timeout: Dur(crate::daemon::DEFAULT_FLOW_IDLE_TIMEOUT),
        }
    }
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

impl Settings {
    /// The keys the file's top may hold (the `[[service]]` tables besides).
    pub fn keys() -> &'static [&'static str] {
        svc::config::fields::<Settings>()
    }

    /// Refuses every value out of its range and every combination that cannot work, naming the flag and why.
    /// `cleanup` is `lbd --cleanup`, which needs only where the pins are.
    pub fn validate(&self, cleanup: bool) -> Result<(), ConfigError> {
        if self.iface.is_none() && !(cleanup && self.pin_dir.is_some()) {
            return Err(invalid("--iface is required (or iface = \"NAME\" in the --config file)"));
        }
        in_range("--max-services", self.max_services, 1, MAX_SERVICES, "each service costs a 256 KiB Maglev table")?;
        in_range("--conn-table-size", self.conn_table_size, 1, MAX_CONN_TABLE, "each entry costs about 100 bytes")?;
        in_range("--sync-rate", self.sync_rate, 1, 1_000_000, "0 would send no flow to the peers")?;
        in_range("--check-concurrency", self.check_concurrency, 1, 10_000, "0 would never check a real")?;
        in_range("--events", self.events, 1, 1_000_000, "each event kept costs memory")?;
        in_range(
            "--flow-idle-timeout",
            self.flow_idle_timeout,
            Dur::secs(0),
            Dur(svc::duration::MAX),
            "0 never purges",
        )?;
        if let Some(t) = self.announce_table {
            announce_table(&t.to_string()).map_err(|why| invalid(format!("--announce-table {t}: {why}")))?;
        }
        if self.sync_listen.is_some() && (self.sync_peer.is_empty() || self.sync_key_file.is_none()) {
            return Err(invalid("--sync-listen needs --sync-peer (one per other LB node) and --sync-key-file"));
        }
        if self.sync_listen.is_none() && (!self.sync_peer.is_empty() || self.sync_key_file.is_some()) {
            return Err(invalid("--sync-peer and --sync-key-file need --sync-listen (where the peers' flows arrive)"));
        }
        if self.api_token_file.is_some() && self.api.is_none() {
            return Err(invalid("--api-token-file needs --api (the token guards the HTTP API)"));
        }
        if self.no_pin && (self.pin_dir.is_some() || self.keep_on_exit || cleanup) {
            return Err(invalid("--no-pin pins nothing: it cannot go with --pin-dir, --keep-on-exit or --cleanup"));
        }
        Ok(())
    }
}

/// `--announce-table`: a table of the operator's own. The kernel's tables would route by the announcements:
/// main (254) forwards by them and local (255) makes each VIP an address of this host.
pub fn announce_table(s: &str) -> Result<u32, String> {
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

/// The flow-hash seed in `path`: one hexadecimal number of up to 8 digits (32 bits, `0x` optional); more digits
/// are refused, not cut, so two nodes never differ by what was dropped.
pub fn read_seed(path: &Path) -> Result<u32, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read the hash seed {}: {e}", path.display()))?;
    let word = text.split_whitespace().next().unwrap_or("");
    let hex = word.strip_prefix("0x").unwrap_or(word);
    if hex.len() > 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{}: the hash seed {hex} has {} hex digits; it is a 32-bit number, at most 8 (e.g. 5f3a91c2)",
            path.display(),
            hex.len()
        ));
    }
    u32::from_str_radix(hex, 16).map_err(|_| {
        format!("{}: the hash seed must be a hexadecimal number of up to 8 digits, e.g. 5f3a91c2", path.display())
    })
}

/// The `--config` file split in two: its top-level settings (checked like the flags) and the text of its
/// `[[service]]` tables for the model's parser, the settings' lines blanked so its line numbers stay the file's.
pub fn split_file(path: &Path) -> Result<(svc::config::File, String), ConfigError> {
    let mut file = svc::config::File::read(path)?;
    let spans: std::collections::BTreeMap<String, toml::Spanned<toml::Value>> =
        toml::from_str(&file.text).map_err(|e| invalid(format!("{}: {}", path.display(), e.message())))?;
    let mut services = file.text.clone().into_bytes();
    for (key, value) in &spans {
        if key == "service" {
            continue;
        }
        // From the start of the key's line to the end of its value (which may span lines).
        let start = file.text[..value.span().start].rfind('\n').map_or(0, |i| i + 1);
        for b in &mut services[start..value.span().end] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    }
    file.table.remove("service");
    Ok((file, String::from_utf8_lossy(&services).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ranges_refused_with_the_reason() {
        let ok = Settings { iface: Some("eth0".into()), ..Settings::default() };
        ok.validate(false).unwrap();
        for (s, want) in [
            (Settings { max_services: 0, ..ok.clone() }, "--max-services 0 is out of range 1..=4096"),
            (Settings { max_services: 5000, ..ok.clone() }, "--max-services 5000 is out of range 1..=4096"),
            (Settings { conn_table_size: 0, ..ok.clone() }, "--conn-table-size 0 is out of range"),
            (Settings { sync_rate: 0, ..ok.clone() }, "--sync-rate 0 is out of range 1..=1000000"),
            (Settings { check_concurrency: 0, ..ok.clone() }, "--check-concurrency 0 is out of range"),
            (Settings { events: 0, ..ok.clone() }, "--events 0 is out of range"),
            (Settings { announce_table: Some(254), ..ok.clone() }, "kernel's main table"),
            (Settings { sync_listen: Some("10.0.0.1:7946".parse().unwrap()), ..ok.clone() }, "needs --sync-peer"),
            (Settings { iface: None, ..ok.clone() }, "--iface is required"),
        ] {
            let e = s.validate(false).unwrap_err().to_string();
            assert!(e.contains(want), "wanted {want:?} in {e:?}");
        }
    }

    #[test]
    fn the_seed_takes_at_most_eight_hex_digits() {
        let dir = std::env::temp_dir().join(format!("lbd-seed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("seed");
        for (text, want) in [("5f3a91c2\n", Ok(0x5f3a91c2)), ("0xff", Ok(0xff)), ("123456789", Err("9 hex digits"))] {
            std::fs::write(&f, text).unwrap();
            match (read_seed(&f), want) {
                (Ok(v), Ok(w)) => assert_eq!(v, w),
                (Err(e), Err(w)) => assert!(e.contains(w), "{e}"),
                (got, _) => panic!("{text}: {got:?}"),
            }
        }
        std::fs::write(&f, "nothex").unwrap();
        assert!(read_seed(&f).unwrap_err().contains("hexadecimal number of up to 8 digits"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn settings_lines_are_blanked_for_the_services_parser() {
        let dir = std::env::temp_dir().join(format!("lbd-split-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("lb.toml");
        std::fs::write(
            &f,
            "max_services = 8\nsync_peer = [\n  \"10.0.0.2:7946\",\n]\n[[service]]\nvip = \"10.0.0.1:80\"\n",
        )
        .unwrap();
        let (file, services) = split_file(&f).unwrap();
        assert_eq!(file.table.keys().collect::<Vec<_>>(), ["max_services", "sync_peer"]);
        assert_eq!(services.lines().count(), 6);
        assert_eq!(services.lines().nth(4), Some("[[service]]"));
        assert!(services.lines().take(4).all(|l| l.trim().is_empty()), "{services}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every setting has its row in README.md ("lbd settings"), as `--flag`.
    #[test]
    fn every_setting_is_in_the_readme() {
        let readme = include_str!("../../README.md");
        let names: Vec<String> = Settings::keys().iter().map(|k| svc::config::Keys::Flags.show(k)).collect();
        assert_eq!(names.len(), 23);
        assert_eq!(svc::config::undocumented(readme, &names), Vec::<String>::new());
    }
}
