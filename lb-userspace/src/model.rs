//! The load balancer's desired state (services and their reals), its TOML form, and validation of user input.
//!
//! The same format is the `--config` file an operator writes and the `--state` file lbd rewrites after every
//! runtime change, so a state file can be read, diffed and reused as a config.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// The value types of the control API (service keys, protocols, health checks, the largest weight) are the contract
/// crate's, re-exported here so lbd and lbctl name them as before.
pub use api_types::lb::{
    check_addr, CheckKind, CheckSpec, Proto, ServiceKey, ValueError, DEFAULT_CHECK_TIMEOUT, MAX_WEIGHT,
};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A service address, protocol, address or health check the API's own rules refuse.
    #[error(transparent)]
    Value(#[from] ValueError),
    #[error("bad real address {0:?}: expected an IPv4 or IPv6 address, e.g. 10.0.0.11 or fd00::11")]
    BadReal(String),
    #[error("real {real} and the VIP of service {service} are of different IP families: direct routing forwards the client's packet unchanged, so the real must hold the VIP's family")]
    FamilyMismatch { service: ServiceKey, real: IpAddr },
    #[error("real {real} is the VIP of service {service} itself: a real is a server behind the VIP, at an address of its own")]
    RealIsVip { service: ServiceKey, real: IpAddr },
    #[error("persistence of {0} s is out of range 0..={MAX_PERSIST_SECS} (0 turns it off)")]
    BadPersistence(u32),
    #[error("weight {0} is out of range 0..={MAX_WEIGHT}")]
    BadWeight(u32),
    #[error("service {0} already exists")]
    DuplicateService(ServiceKey),
    #[error("unknown service {0}; `lbctl list` shows the configured ones")]
    UnknownService(ServiceKey),
    #[error("real {real} already exists in service {service}; use edit-real to change its weight")]
    DuplicateReal { service: ServiceKey, real: IpAddr },
    #[error("real {real} is not in service {service}")]
    UnknownReal { service: ServiceKey, real: IpAddr },
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("cannot parse {path}: {message}")]
    Parse { path: String, message: String },
    #[error("cannot write the state as TOML: {0}")]
    Serialize(String),
}

/// The protocol number the dataplane's keys hold.
fn proto_number(p: Proto) -> u8 {
    match p {
        Proto::Tcp => lb_common::PROTO_TCP,
        Proto::Udp => lb_common::PROTO_UDP,
    }
}

/// The dataplane's key of a service (a trait because [`ServiceKey`] is the contract crate's, which knows no
/// dataplane).
pub trait VipKeyOf {
    fn vip_key(&self) -> lb_common::VipKey;
}

impl VipKeyOf for ServiceKey {
    fn vip_key(&self) -> lb_common::VipKey {
        let (addr, family) = addr_key(self.vip);
        lb_common::VipKey { addr, port: self.port.to_be(), proto: proto_number(self.proto), family }
    }
}

/// An address as the dataplane's keys hold it: 16 bytes (IPv4 in the first 4, the rest zero) and the family.
pub fn addr_key(ip: IpAddr) -> ([u8; 16], u8) {
    match ip {
        IpAddr::V4(a) => {
            let mut k = [0u8; 16];
            k[..4].copy_from_slice(&a.octets());
            (k, lb_common::FAMILY_V4)
        }
        IpAddr::V6(a) => (a.octets(), lb_common::FAMILY_V6),
    }
}

/// The address a dataplane key holds, or None for an unknown family.
pub fn addr_of_key(k: &[u8; 16], family: u8) -> Option<IpAddr> {
    match family {
        lb_common::FAMILY_V4 => Some(IpAddr::from([k[0], k[1], k[2], k[3]])),
        lb_common::FAMILY_V6 => Some(IpAddr::from(*k)),
        _ => None,
    }
}

/// Longest persistence a service may have: one day.
pub const MAX_PERSIST_SECS: u32 = 86_400;

pub fn check_persistence(secs: u32) -> Result<u32, ModelError> {
    if secs > MAX_PERSIST_SECS {
        return Err(ModelError::BadPersistence(secs));
    }
    Ok(secs)
}

/// Refuses a real of another family than its service's VIP.
pub fn check_family(service: ServiceKey, real: IpAddr) -> Result<(), ModelError> {
    if service.vip.is_ipv4() != real.is_ipv4() {
        return Err(ModelError::FamilyMismatch { service, real });
    }
    Ok(())
}

/// Refuses `real` in `service`: another family than the VIP's, an unusable address, or the VIP itself.
pub fn check_real_of(service: ServiceKey, real: IpAddr) -> Result<(), ModelError> {
    check_addr(real, "real")?;
    check_family(service, real)?;
    if real == service.vip {
        return Err(ModelError::RealIsVip { service, real });
    }
    Ok(())
}

/// Parses a real server address as a user typed it.
pub fn parse_real(s: &str) -> Result<IpAddr, ModelError> {
    let ip: IpAddr = s.trim().parse().map_err(|_| ModelError::BadReal(s.to_string()))?;
    check_addr(ip, "real")?;
    Ok(ip)
}

pub fn check_weight(w: u32) -> Result<u32, ModelError> {
    if w > MAX_WEIGHT {
        return Err(ModelError::BadWeight(w));
    }
    Ok(w)
}

fn default_weight() -> u32 {
    1
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A real server of a service, as configured. Unknown keys are refused in every table of the file (a typo such as
/// `wieght` would otherwise be dropped in silence), the state file included: lbd writes only these keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealSpec {
    pub addr: IpAddr,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Drained: no new flows, established ones continue. Kept apart from the weight so undrain restores it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub drained: bool,
}

/// One service in the file: `[[service]]` with `vip = "10.0.0.100:80"`, `proto = "tcp"` and `[[service.real]]`s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub vip: String,
    #[serde(default)]
    pub proto: Proto,
    /// `[service.check]`; absent means no health check (every real with a MAC counts as up).
    #[serde(default, skip_serializing_if = "CheckSpec::is_none")]
    pub check: CheckSpec,
    /// Persistence timeout in seconds (`ipvsadm -p`): a client's connections go to the real it was last sent to
    /// while it was seen within this time. 0 or absent: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub persistent: u32,
    #[serde(default, rename = "real")]
    pub reals: Vec<RealSpec>,
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceSpec>,
}

/// Desired state, validated: services in a stable order, reals by address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbState {
    pub services: BTreeMap<ServiceKey, BTreeMap<IpAddr, RealSpec>>,
    /// Health check per service; a service without an entry has none.
    pub checks: BTreeMap<ServiceKey, CheckSpec>,
    /// Persistence timeout (seconds) per service; a service without an entry has none.
    pub persistence: BTreeMap<ServiceKey, u32>,
}

impl LbState {
    /// Validates a parsed file completely before anything is applied.
    pub fn from_spec(spec: &FileSpec) -> Result<Self, ModelError> {
        let mut st = LbState::default();
        for s in &spec.services {
            let key = ServiceKey::parse(&s.vip, s.proto)?;
            st.add_service(key)?;
            st.set_check(key, s.check.clone())?;
            st.set_persistence(key, s.persistent)?;
            for r in &s.reals {
                st.add_real(key, r.addr, r.weight)?;
                st.set_drained(key, r.addr, r.drained)?;
            }
        }
        Ok(st)
    }

    pub fn to_spec(&self) -> FileSpec {
        FileSpec {
            services: self
                .services
                .iter()
                .map(|(k, reals)| ServiceSpec {
                    vip: SocketAddr::new(k.vip, k.port).to_string(),
                    proto: k.proto,
                    check: self.check(k),
                    persistent: self.persistence(k),
                    reals: reals.values().cloned().collect(),
                })
                .collect(),
        }
    }

    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path)
            .map_err(|cause| ModelError::Read { path: path.display().to_string(), cause })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, ModelError> {
        let spec: FileSpec =
            toml::from_str(text).map_err(|e| ModelError::Parse { path: origin.to_string(), message: e.to_string() })?;
        Self::from_spec(&spec)
    }

    /// Reads a state file lbd wrote (`--state`). Like `load`, except for one migration: lbd before issue 29 stored a
    /// check timeout longer than its interval (`interval = "500ms"` with the default 1s) and probed with the interval;
    /// such a timeout is read as the interval, what those probes used, so an upgrade keeps the checks as they ran.
    pub fn load_state(path: &Path) -> Result<Self, ModelError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|cause| ModelError::Read { path: origin.clone(), cause })?;
        let mut spec: FileSpec =
            toml::from_str(&text).map_err(|e| ModelError::Parse { path: origin, message: e.to_string() })?;
        for s in &mut spec.services {
            if !s.check.is_none() && s.check.timeout.0 > s.check.interval.0 {
                tracing::warn!(service = %s.vip, timeout = %s.check.timeout, interval = %s.check.interval, "state file: a check timeout longer than its interval is read as the interval, which earlier lbds probed with");
                s.check.timeout = s.check.interval;
            }
        }
        Self::from_spec(&spec)
    }

    /// The file text. A failure is returned, never papered over: writing an empty table instead would bring the
    /// next lbd up with no services.
    pub fn to_toml(&self) -> Result<String, ModelError> {
        let header = "# lbd state: rewritten after every runtime change; the same format as --config.\n";
        let body = toml::to_string_pretty(&self.to_spec()).map_err(|e| ModelError::Serialize(e.to_string()))?;
        Ok(format!("{header}{body}"))
    }

    pub fn add_service(&mut self, key: ServiceKey) -> Result<(), ModelError> {
        key.validate()?;
        if self.services.contains_key(&key) {
            return Err(ModelError::DuplicateService(key));
        }
        self.services.insert(key, BTreeMap::new());
        Ok(())
    }

    pub fn del_service(&mut self, key: &ServiceKey) -> Result<BTreeMap<IpAddr, RealSpec>, ModelError> {
        let reals = self.services.remove(key).ok_or(ModelError::UnknownService(*key))?;
        self.checks.remove(key);
        self.persistence.remove(key);
        Ok(reals)
    }

    /// The service's persistence timeout in seconds (0: none).
    pub fn persistence(&self, key: &ServiceKey) -> u32 {
        self.persistence.get(key).copied().unwrap_or(0)
    }

    pub fn set_persistence(&mut self, key: ServiceKey, secs: u32) -> Result<(), ModelError> {
        check_persistence(secs)?;
        if !self.services.contains_key(&key) {
            return Err(ModelError::UnknownService(key));
        }
        if secs == 0 {
            self.persistence.remove(&key);
        } else {
            self.persistence.insert(key, secs);
        }
        Ok(())
    }

    /// The service's health check (kind `none` when it has none).
    pub fn check(&self, key: &ServiceKey) -> CheckSpec {
        self.checks.get(key).cloned().unwrap_or_default()
    }

    pub fn set_check(&mut self, key: ServiceKey, check: CheckSpec) -> Result<(), ModelError> {
        check.validate()?;
        if !self.services.contains_key(&key) {
            return Err(ModelError::UnknownService(key));
        }
        if check.is_none() {
            self.checks.remove(&key);
        } else {
            self.checks.insert(key, check);
        }
        Ok(())
    }

    /// Sets a real's drain flag; returns the previous value.
    pub fn set_drained(&mut self, key: ServiceKey, addr: IpAddr, drained: bool) -> Result<bool, ModelError> {
        let reals = self.services.get_mut(&key).ok_or(ModelError::UnknownService(key))?;
        let r = reals.get_mut(&addr).ok_or(ModelError::UnknownReal { service: key, real: addr })?;
        Ok(std::mem::replace(&mut r.drained, drained))
    }

    pub fn add_real(&mut self, key: ServiceKey, addr: IpAddr, weight: u32) -> Result<(), ModelError> {
        check_weight(weight)?;
        check_real_of(key, addr)?;
        let reals = self.services.get_mut(&key).ok_or(ModelError::UnknownService(key))?;
        if reals.contains_key(&addr) {
            return Err(ModelError::DuplicateReal { service: key, real: addr });
        }
        reals.insert(addr, RealSpec { addr, weight, drained: false });
        Ok(())
    }

    pub fn edit_real(&mut self, key: ServiceKey, addr: IpAddr, weight: u32) -> Result<(), ModelError> {
        check_weight(weight)?;
        let reals = self.services.get_mut(&key).ok_or(ModelError::UnknownService(key))?;
        let r = reals.get_mut(&addr).ok_or(ModelError::UnknownReal { service: key, real: addr })?;
        r.weight = weight;
        Ok(())
    }

    pub fn del_real(&mut self, key: ServiceKey, addr: IpAddr) -> Result<(), ModelError> {
        let reals = self.services.get_mut(&key).ok_or(ModelError::UnknownService(key))?;
        reals.remove(&addr).ok_or(ModelError::UnknownReal { service: key, real: addr })?;
        Ok(())
    }

    /// Every distinct real address over all services.
    pub fn real_addrs(&self) -> std::collections::BTreeSet<IpAddr> {
        self.services.values().flat_map(|r| r.keys().copied()).collect()
    }
}

/// Durations in the file and on lbctl's command line: `3s`, `500ms`, `1.5s`, a number of seconds, `1m 30s`.
pub use svc::Dur;

/// Writes `contents` to `path` atomically: a crash leaves either the old or the new file, never a torn one.
pub fn write_atomic(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
[[service]]
vip = "10.99.0.100:80"
proto = "tcp"
[[service.real]]
addr = "10.99.0.11"
weight = 3
[[service.real]]
addr = "10.99.0.12"

[[service]]
vip = "10.99.0.100:1935"
"#;

    #[test]
    fn parses_config_with_defaults() {
        let st = LbState::parse(SAMPLE, "sample").unwrap();
        assert_eq!(st.services.len(), 2);
        let k = ServiceKey::parse("10.99.0.100:80", Proto::Tcp).unwrap();
        let reals = &st.services[&k];
        assert_eq!(reals.len(), 2);
        assert_eq!(reals[&"10.99.0.11".parse::<IpAddr>().unwrap()].weight, 3);
        assert_eq!(reals[&"10.99.0.12".parse::<IpAddr>().unwrap()].weight, 1, "weight defaults to 1");
        let rtmp = ServiceKey::parse("10.99.0.100:1935", Proto::Tcp).unwrap();
        assert!(st.services[&rtmp].is_empty(), "proto defaults to tcp");
    }

    #[test]
    fn ipv6_services_and_persistence_round_trip() {
        let text = "[[service]]\nvip = \"[fd00::100]:80\"\npersistent = 300\n[[service.real]]\naddr = \"fd00::11\"\n";
        let st = LbState::parse(text, "t").unwrap();
        let k = ServiceKey::parse("[fd00::100]:80", Proto::Tcp).unwrap();
        assert_eq!(st.persistence(&k), 300);
        assert_eq!(k.vip_key().family, lb_common::FAMILY_V6);
        assert_eq!(k.vip_key().addr, "fd00::100".parse::<std::net::Ipv6Addr>().unwrap().octets());
        assert_eq!(k.to_string(), "TCP [fd00::100]:80");
        assert_eq!(LbState::parse(&st.to_toml().unwrap(), "again").unwrap(), st);
        assert_eq!(addr_of_key(&addr_key("fd00::11".parse().unwrap()).0, 6), Some("fd00::11".parse().unwrap()));
    }

    #[test]
    fn state_round_trips_through_toml() {
        let st = LbState::parse(SAMPLE, "sample").unwrap();
        let again = LbState::parse(&st.to_toml().unwrap(), "round trip").unwrap();
        assert_eq!(st, again);
    }

    #[test]
    fn broken_configs_are_rejected_with_the_reason() {
        let cases = [
            ("[[service]]\nvip = \"10.0.0.1\"\n", "VIP:PORT"),
            ("[[service]]\nvip = \"10.0.0.1:0\"\n", "port 0"),
            ("[[service]]\nvip = \"[::1]:80\"\n", "::1 cannot be a VIP: it is a loopback address"),
            ("[[service]]\nvip = \"[fe80::1]:80\"\n", "link-local"),
            ("[[service]]\nvip = \"[fd00::1]:80\"\n[[service.real]]\naddr = \"10.0.0.2\"\n", "different IP families"),
            ("[[service]]\nvip = \"10.0.0.1:80\"\npersistent = 100000\n", "persistence of 100000 s"),
            ("[[service]]\nvip = \"10.0.0.1:80\"\nproto = \"sctp\"\n", "unknown variant"),
            ("[[service]]\nvip = \"10.0.0.1:80\"\n[[service]]\nvip = \"10.0.0.1:80\"\n", "already exists"),
            ("[[service]]\nvip = \"10.0.0.1:80\"\n[[service.real]]\naddr = \"10.0.0.2\"\n[[service.real]]\naddr = \"10.0.0.2\"\n", "already exists"),
            ("[[service]]\nvip = \"10.0.0.1:80\"\n[[service.real]]\naddr = \"10.0.0.2\"\nweight = 70000\n", "out of range"),
            ("[[service]]\nvip = \"10.0.0.1:80\"\n[[service.real]]\naddr = \"nope\"\n", "cannot parse"),
            ("this is not toml", "cannot parse"),
        ];
        for (text, want) in cases {
            let err = LbState::parse(text, "t").unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: error {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn runtime_edits_validate() {
        let mut st = LbState::default();
        let k = ServiceKey::parse("10.0.0.1:80", Proto::Tcp).unwrap();
        let r: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(matches!(st.add_real(k, r, 1), Err(ModelError::UnknownService(_))));
        st.add_service(k).unwrap();
        assert!(matches!(st.add_service(k), Err(ModelError::DuplicateService(_))));
        st.add_real(k, r, 1).unwrap();
        assert!(matches!(st.add_real(k, r, 1), Err(ModelError::DuplicateReal { .. })));
        st.edit_real(k, r, 5).unwrap();
        assert_eq!(st.services[&k][&r].weight, 5);
        assert!(matches!(st.edit_real(k, r, MAX_WEIGHT + 1), Err(ModelError::BadWeight(_))));
        st.del_real(k, r).unwrap();
        assert!(matches!(st.del_real(k, r), Err(ModelError::UnknownReal { .. })));
        // A service on another protocol is another service.
        let u = ServiceKey::parse("10.0.0.1:80", Proto::Udp).unwrap();
        st.add_service(u).unwrap();
        assert_eq!(st.services.len(), 2);
    }

    #[test]
    fn user_addresses_are_checked() {
        assert!(ServiceKey::parse("10.0.0.1:80", Proto::Tcp).is_ok());
        for bad in ["10.0.0.1", "10.0.0.300:80", "host:80", "0.0.0.0:80", ""] {
            assert!(ServiceKey::parse(bad, Proto::Tcp).is_err(), "{bad}");
        }
        assert!(parse_real("10.0.0.2").is_ok());
        for bad in ["10.0.0", "127.0.0.1", "::1", "fe80::1", "x"] {
            assert!(parse_real(bad).is_err(), "{bad}");
        }
        assert!("sctp".parse::<Proto>().is_err());
        // Each refused with its own reason, not "expected VIP:PORT".
        let why = |s: &str| ServiceKey::parse(s, Proto::Tcp).unwrap_err().to_string();
        assert!(
            why("0.0.0.0:85").contains("0.0.0.0 cannot be a VIP: it is the unspecified address"),
            "{}",
            why("0.0.0.0:85")
        );
        assert!(why("255.255.255.255:85").contains("limited broadcast"), "{}", why("255.255.255.255:85"));
        assert!(why("[::ffff:10.77.0.100]:80").contains("write the IPv4 address 10.77.0.100"));
        assert!(why("[ff02::1]:80").contains("multicast"));
        assert!(parse_real("255.255.255.255").unwrap_err().to_string().contains("cannot be a real"));
        assert!(parse_real("::ffff:10.0.0.2").unwrap_err().to_string().contains("IPv4-mapped"));
        let k = ServiceKey::parse("10.0.0.100:80", Proto::Tcp).unwrap();
        let mut st = LbState::default();
        st.add_service(k).unwrap();
        assert!(matches!(st.add_real(k, k.vip, 1), Err(ModelError::RealIsVip { .. })));
        assert!(st.services[&k].is_empty());
    }

    #[test]
    fn an_earlier_state_files_long_timeout_is_read_as_the_interval_it_probed_with() {
        let text = "[[service]]\nvip = \"10.0.0.1:80\"\n[service.check]\nkind = \"tcp\"\ninterval = \"500ms\"\ntimeout = \"1s\"\n";
        assert!(LbState::parse(text, "config").unwrap_err().to_string().contains("longer than the interval"));
        let path = std::env::temp_dir().join(format!("lbd-old-state-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let st = LbState::load_state(&path);
        let _ = std::fs::remove_file(&path);
        let st = st.unwrap();
        let c = st.check(&ServiceKey::parse("10.0.0.1:80", Proto::Tcp).unwrap());
        assert_eq!((c.interval.0.as_millis(), c.timeout.0.as_millis()), (500, 500));
    }

    #[test]
    fn unknown_keys_are_refused_in_every_table() {
        for (text, key) in [
            ("services = 3\n", "services"),
            ("[[service]]\nvip = \"10.0.0.1:80\"\npersistant = 300\n", "persistant"),
            ("[[service]]\nvip = \"10.0.0.1:80\"\n[[service.real]]\naddr = \"10.0.0.2\"\nwieght = 2\n", "wieght"),
            ("[[service]]\nvip = \"10.0.0.1:80\"\n[service.check]\nkind = \"tcp\"\nintervall = \"1s\"\n", "intervall"),
        ] {
            let e = LbState::parse(text, "t").unwrap_err().to_string();
            assert!(e.contains(&format!("unknown field `{key}`")), "{text}: {e}");
        }
        // What this version writes (every key set) loads again.
        let mut st = LbState::parse(SAMPLE, "sample").unwrap();
        let k = *st.services.keys().next().unwrap();
        st.set_persistence(k, 300).unwrap();
        let r = *st.services[&k].keys().next().unwrap();
        st.set_drained(k, r, true).unwrap();
        assert_eq!(LbState::parse(&st.to_toml().unwrap(), "state").unwrap(), st);
    }

    #[test]
    fn checks_parse_with_defaults_and_round_trip() {
        let text = r#"
[[service]]
vip = "10.99.0.100:80"
[service.check]
kind = "http"
path = "/health"
interval = "500ms"
fall = 2
[[service.real]]
addr = "10.99.0.11"
drained = true
[[service]]
vip = "10.99.0.100:1935"
[service.check]
kind = "rtmp"
port = 1936
timeout = 0.25
"#;
        let st = LbState::parse(text, "t").unwrap();
        let web = ServiceKey::parse("10.99.0.100:80", Proto::Tcp).unwrap();
        let c = st.check(&web);
        assert_eq!(c.kind, CheckKind::Http);
        assert_eq!(c.path, "/health");
        assert_eq!(c.expect, 200);
        assert_eq!(c.interval.0, std::time::Duration::from_millis(500));
        assert_eq!(c.timeout.0, std::time::Duration::from_millis(500), "no timeout given: at most the interval");
        assert_eq!((c.rise, c.fall), (2, 2));
        assert!(st.services[&web][&"10.99.0.11".parse::<IpAddr>().unwrap()].drained);
        let rtmp = st.check(&ServiceKey::parse("10.99.0.100:1935", Proto::Tcp).unwrap());
        assert_eq!((rtmp.kind, rtmp.port), (CheckKind::Rtmp, Some(1936)));
        assert_eq!(rtmp.timeout.0, std::time::Duration::from_millis(250));
        assert_eq!(LbState::parse(&st.to_toml().unwrap(), "again").unwrap(), st);
        // An old state file (no check, no drained) still parses, and writes no check section back.
        let old = LbState::parse(SAMPLE, "old").unwrap();
        assert!(old.checks.is_empty());
        assert!(!old.to_toml().unwrap().contains("check"));
    }

    #[test]
    fn bad_checks_are_refused_with_the_reason() {
        let base = "[[service]]\nvip = \"10.0.0.1:80\"\n[service.check]\n";
        let cases = [
            ("kind = \"icmp\"", "unknown variant"),
            ("kind = \"tcp\"\ninterval = \"10ms\"", "below 50ms"),
            ("kind = \"tcp\"\ntimeout = \"0s\"", "timeout must be above 0"),
            ("kind = \"tcp\"\nrise = 0", "rise 0"),
            ("kind = \"http\"\npath = \"health\"", "must start with /"),
            ("kind = \"http\"\nexpect = 42", "not an HTTP status"),
            ("kind = \"tcp\"\ninterval = \"soon\"", "bad duration"),
            ("kind = \"tcp\"\nport = 0", "port 0"),
            ("kind = \"tcp\"\nbogus = 1", "unknown field"),
            ("kind = \"tcp\"\ninterval = \"2s\"\ntimeout = \"5s\"", "timeout 5s is longer than the interval 2s"),
        ];
        for (body, want) in cases {
            let err = LbState::parse(&format!("{base}{body}\n"), "t").unwrap_err().to_string();
            assert!(err.contains(want), "{body:?}: {err:?} lacks {want:?}");
        }
        for (text, ms) in [("3s", 3000), ("500ms", 500), ("1.5s", 1500), ("2", 2000), (" 250 ms", 250)] {
            assert_eq!(text.parse::<Dur>().unwrap().0.as_millis(), ms, "{text}");
        }
        assert_eq!(Dur(std::time::Duration::from_millis(1500)).to_string(), "1500ms");
        assert_eq!(Dur::secs(3).to_string(), "3s");
    }

    #[test]
    fn drain_is_kept_apart_from_weight() {
        let mut st = LbState::default();
        let k = ServiceKey::parse("10.0.0.1:80", Proto::Tcp).unwrap();
        let r: IpAddr = "10.0.0.2".parse().unwrap();
        st.add_service(k).unwrap();
        st.add_real(k, r, 3).unwrap();
        assert!(!st.set_drained(k, r, true).unwrap());
        assert!(st.set_drained(k, r, false).unwrap());
        assert_eq!(st.services[&k][&r].weight, 3, "undrain keeps the weight");
        assert!(matches!(st.set_drained(k, "10.0.0.3".parse().unwrap(), true), Err(ModelError::UnknownReal { .. })));
    }

    #[test]
    fn vip_key_is_network_order() {
        let k = ServiceKey::parse("10.1.2.3:1935", Proto::Tcp).unwrap().vip_key();
        assert_eq!(&k.addr[..4], &[10, 1, 2, 3]);
        assert_eq!(k.port.to_ne_bytes(), 1935u16.to_be_bytes());
        assert_eq!(k.proto, 6);
    }

    #[test]
    fn atomic_write_replaces_file() {
        let dir = std::env::temp_dir().join(format!("lbd-model-test-{}", std::process::id()));
        let p = dir.join("state.toml");
        write_atomic(&p, "a").unwrap();
        write_atomic(&p, "b").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "b");
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1, "no temp file is left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
