//! The load balancer's desired state (services and their reals), its TOML form, and validation of user input.
//!
//! The same format is the `--config` file an operator writes and the `--state` file lbd rewrites after every
//! runtime change, so a state file can be read, diffed and reused as a config.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::str::FromStr;

/// Largest weight accepted; bounds the Maglev rounds a build can take.
pub const MAX_WEIGHT: u32 = 65_535;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("bad service address {0:?}: expected VIP:PORT, e.g. 10.0.0.100:80")]
    BadService(String),
    #[error("bad real address {0:?}: expected an IPv4 address, e.g. 10.0.0.11")]
    BadReal(String),
    #[error("unknown protocol {0:?}: expected tcp or udp")]
    BadProto(String),
    #[error("IPv6 is not supported by the dataplane yet ({0})")]
    Ipv6(IpAddr),
    #[error("port 0 is not a valid service port")]
    PortZero,
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    #[default]
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => lb_common::PROTO_TCP,
            Proto::Udp => lb_common::PROTO_UDP,
        }
    }
}

impl FromStr for Proto {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(ModelError::BadProto(s.to_string())),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        })
    }
}

/// A service: what the dataplane matches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceKey {
    pub vip: IpAddr,
    pub port: u16,
    pub proto: Proto,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.proto, SocketAddr::new(self.vip, self.port))
    }
}

impl ServiceKey {
    /// Parses `VIP:PORT` as a user typed it.
    pub fn parse(addr: &str, proto: Proto) -> Result<Self, ModelError> {
        let sa: SocketAddr = addr.trim().parse().map_err(|_| ModelError::BadService(addr.to_string()))?;
        let key = ServiceKey { vip: sa.ip(), port: sa.port(), proto };
        key.validate()?;
        Ok(key)
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        if self.vip.is_ipv6() {
            return Err(ModelError::Ipv6(self.vip));
        }
        if self.port == 0 {
            return Err(ModelError::PortZero);
        }
        if self.vip.is_unspecified() || self.vip.is_multicast() {
            return Err(ModelError::BadService(self.vip.to_string()));
        }
        Ok(())
    }

    /// The dataplane's key for this service.
    pub fn vip_key(&self) -> lb_common::VipKey {
        let mut addr = [0u8; 16];
        if let IpAddr::V4(a) = self.vip {
            addr[..4].copy_from_slice(&a.octets());
        }
        lb_common::VipKey {
            addr,
            port: self.port.to_be(),
            proto: self.proto.number(),
            family: lb_common::FAMILY_V4,
        }
    }
}

/// Parses a real server address as a user typed it.
pub fn parse_real(s: &str) -> Result<IpAddr, ModelError> {
    let ip: IpAddr = s.trim().parse().map_err(|_| ModelError::BadReal(s.to_string()))?;
    if ip.is_ipv6() {
        return Err(ModelError::Ipv6(ip));
    }
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
        return Err(ModelError::BadReal(s.to_string()));
    }
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

/// A real server of a service, as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealSpec {
    pub addr: IpAddr,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// One service in the file: `[[service]]` with `vip = "10.0.0.100:80"`, `proto = "tcp"` and `[[service.real]]`s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub vip: String,
    #[serde(default)]
    pub proto: Proto,
    #[serde(default, rename = "real")]
    pub reals: Vec<RealSpec>,
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSpec {
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceSpec>,
}

/// Desired state, validated: services in a stable order, reals by address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbState {
    pub services: BTreeMap<ServiceKey, BTreeMap<IpAddr, RealSpec>>,
}

impl LbState {
    /// Validates a parsed file completely before anything is applied.
    pub fn from_spec(spec: &FileSpec) -> Result<Self, ModelError> {
        let mut st = LbState::default();
        for s in &spec.services {
            let key = ServiceKey::parse(&s.vip, s.proto)?;
            st.add_service(key)?;
            for r in &s.reals {
                if r.addr.is_ipv6() {
                    return Err(ModelError::Ipv6(r.addr));
                }
                parse_real(&r.addr.to_string())?;
                st.add_real(key, r.addr, r.weight)?;
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

    pub fn to_toml(&self) -> String {
        let header = "# lbd state: rewritten after every runtime change; the same format as --config.\n";
        format!("{header}{}", toml::to_string_pretty(&self.to_spec()).unwrap_or_default())
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
        self.services.remove(key).ok_or(ModelError::UnknownService(*key))
    }

    pub fn add_real(&mut self, key: ServiceKey, addr: IpAddr, weight: u32) -> Result<(), ModelError> {
        check_weight(weight)?;
        let reals = self.services.get_mut(&key).ok_or(ModelError::UnknownService(key))?;
        if reals.contains_key(&addr) {
            return Err(ModelError::DuplicateReal { service: key, real: addr });
        }
        reals.insert(addr, RealSpec { addr, weight });
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
    fn state_round_trips_through_toml() {
        let st = LbState::parse(SAMPLE, "sample").unwrap();
        let again = LbState::parse(&st.to_toml(), "round trip").unwrap();
        assert_eq!(st, again);
    }

    #[test]
    fn broken_configs_are_rejected_with_the_reason() {
        let cases = [
            ("[[service]]\nvip = \"10.0.0.1\"\n", "VIP:PORT"),
            ("[[service]]\nvip = \"10.0.0.1:0\"\n", "port 0"),
            ("[[service]]\nvip = \"[::1]:80\"\n", "IPv6"),
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
