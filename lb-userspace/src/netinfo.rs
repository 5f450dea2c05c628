//! What lbd learns from the kernel over netlink: the LB interface (index, MAC, subnets), real servers' MACs from
//! the neighbour table, and the VIP addresses it may add to the interface.

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("interface {0} not found")]
    NoIface(String),
    #[error("interface {0} has no Ethernet address")]
    NoMac(String),
}

/// The interface lbd balances on.
#[derive(Clone, Debug)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    /// Directly connected subnets, IPv4 and IPv6 (address, prefix length).
    pub nets: Vec<(IpAddr, u8)>,
}

impl Iface {
    /// True when `ip` is on one of the interface's subnets: DR needs the real on the same L2 segment.
    pub fn on_link(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|(net, len)| same_subnet(*net, ip, *len))
    }

    pub fn is_local(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|(a, _)| *a == ip)
    }

    /// When `ip` is the network or (IPv4) broadcast address of one of the interface's subnets: which, and the
    /// subnet. IPv4 /31 and /32 and IPv6 /127 and /128 have no such addresses (RFC 3021, RFC 6164).
    pub fn subnet_edge(&self, ip: IpAddr) -> Option<(&'static str, String)> {
        self.nets.iter().find_map(|(net, len)| {
            if !same_subnet(*net, ip, *len) {
                return None;
            }
            let subnet = format!("{}/{}", mask(*net, *len), len);
            match ip {
                IpAddr::V4(a) if *len <= 30 => {
                    let all = !u32::MAX.checked_shl(32 - *len as u32).unwrap_or(0);
                    let host = u32::from(a) & all;
                    (host == 0)
                        .then_some(("network", subnet.clone()))
                        .or((host == all).then_some(("broadcast", subnet)))
                }
                IpAddr::V6(_) if *len <= 126 => {
                    (mask(ip, *len) == ip).then_some(("network (subnet-router anycast)", subnet))
                }
                _ => None,
            }
        })
    }

    pub fn subnets(&self) -> String {
        let v: Vec<String> = self.nets.iter().map(|(a, l)| format!("{}/{}", mask(*a, *l), l)).collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }
}

fn mask(a: IpAddr, len: u8) -> IpAddr {
    match a {
        IpAddr::V4(a) => {
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len.min(32) as u32) };
            IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = if len == 0 { 0 } else { u128::MAX << (128 - len.min(128) as u32) };
            IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// True when `a` and `b` are of one family and share the first `len` bits.
pub fn same_subnet(a: IpAddr, b: IpAddr, len: u8) -> bool {
    a.is_ipv4() == b.is_ipv4() && mask(a, len) == mask(b, len)
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A neighbour entry: MAC and whether the kernel considers it usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub mac: [u8; 6],
    pub usable: bool,
}

/// An entry of a neighbour dump or a neighbour event: (interface index, address, entry), when it names both an
/// IPv4 address and a MAC.
pub fn parse_neighbour(msg: &NeighbourMessage) -> Option<(u32, IpAddr, Neighbour)> {
    let mut ip = None;
    let mut mac = None;
    for a in &msg.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => ip = Some(IpAddr::V4(*v4)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => ip = Some(IpAddr::V6(*v6)),
            NeighbourAttribute::LinkLocalAddress(m) if m.len() == 6 => mac = Some([m[0], m[1], m[2], m[3], m[4], m[5]]),
            _ => {}
        }
    }
    let usable =
        !matches!(msg.header.state, NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None);
    Some((msg.header.ifindex, ip?, Neighbour { mac: mac?, usable }))
}

/// A netlink connection (its task runs on the current tokio runtime).
#[derive(Clone)]
pub struct Net {
    handle: rtnetlink::Handle,
}

impl Net {
    pub fn new() -> Result<Self, NetError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Net { handle })
    }

    pub async fn iface(&self, name: &str) -> Result<Iface, NetError> {
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        let link = match links.try_next().await {
            Ok(Some(l)) => l,
            Ok(None) | Err(rtnetlink::Error::NetlinkError(_)) => return Err(NetError::NoIface(name.into())),
            Err(e) => return Err(e.into()),
        };
        let index = link.header.index;
        let mac = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(m) if m.len() == 6 => Some([m[0], m[1], m[2], m[3], m[4], m[5]]),
                _ => None,
            })
            .ok_or_else(|| NetError::NoMac(name.into()))?;
        let mut nets = Vec::new();
        let mut addrs = self.handle.address().get().set_link_index_filter(index).execute();
        while let Some(msg) = addrs.try_next().await? {
            for a in &msg.attributes {
                // Link-local IPv6 addresses are on every link: they say nothing about where reals are.
                match a {
                    AddressAttribute::Address(IpAddr::V6(v6)) if v6.is_unicast_link_local() => {}
                    AddressAttribute::Address(ip) => nets.push((*ip, msg.header.prefix_len)),
                    _ => {}
                }
            }
        }
        Ok(Iface { name: name.into(), index, mac, nets })
    }

    /// The id of the XDP program attached to interface `name`, if any (what `ip link show` prints as `prog/xdp id N`).
    pub async fn xdp_prog(&self, name: &str) -> Result<Option<u32>, NetError> {
        use netlink_packet_route::link::LinkXdp;
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        let link = match links.try_next().await {
            Ok(Some(l)) => l,
            Ok(None) | Err(rtnetlink::Error::NetlinkError(_)) => return Err(NetError::NoIface(name.into())),
            Err(e) => return Err(e.into()),
        };
        let id = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Xdp(xdp) => xdp.iter().find_map(|x| match x {
                LinkXdp::ProgId(id) | LinkXdp::DrvProgId(id) | LinkXdp::SkbProgId(id) | LinkXdp::HwProgId(id)
                    if *id != 0 =>
                {
                    Some(*id)
                }
                _ => None,
            }),
            _ => None,
        });
        Ok(id)
    }

    /// The neighbour table (ARP and NDP) of one interface.
    pub async fn neighbours(&self, ifindex: u32) -> Result<HashMap<IpAddr, Neighbour>, NetError> {
        let mut out = HashMap::new();
        for family in [rtnetlink::IpVersion::V4, rtnetlink::IpVersion::V6] {
            let mut stream = self.handle.neighbours().get().set_family(family).execute();
            while let Some(msg) = stream.try_next().await? {
                if let Some((idx, ip, n)) = parse_neighbour(&msg) {
                    if idx == ifindex {
                        out.insert(ip, n);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Adds `vip/32` (or `/128`) to the interface so the LB answers ARP or NDP for it (the IPVS way). An address
    /// that is already there is not an error.
    pub async fn ensure_address(&self, ifindex: u32, vip: IpAddr) -> Result<bool, NetError> {
        let len = if vip.is_ipv4() { 32 } else { 128 };
        let mut req = self.handle.address().add(ifindex, vip, len);
        if vip.is_ipv6() {
            // No duplicate-address detection (usable at once), and deprecated (preferred lifetime 0) so this host
            // never picks the VIP as the source of its own connections: IPv6 source selection would prefer it,
            // and a real answers its VIP locally, so health checks would never get an answer.
            use netlink_packet_route::address::{AddressAttribute as A, AddressFlag, CacheInfo};
            let attrs = &mut req.message_mut().attributes;
            attrs.push(A::Flags(vec![AddressFlag::Nodad]));
            let mut lifetimes = CacheInfo::default();
            lifetimes.ifa_valid = u32::MAX;
            attrs.push(A::CacheInfo(lifetimes));
        }
        match req.execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Makes the kernel resolve `ip` on `iface` by sending it one empty UDP datagram (discard port). The neighbour
/// subsystem then ARPs (or, for IPv6, sends a neighbour solicitation); lbd reads the answer from the neighbour table.
pub fn trigger_resolution(iface: &str, ip: IpAddr) -> std::io::Result<()> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(if ip.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 }, Type::DGRAM, None)?;
    sock.bind_device(Some(iface.as_bytes()))?;
    sock.set_nonblocking(true)?;
    let to: SocketAddr = SocketAddr::new(ip, 9);
    match sock.send_to(&[], &to.into()) {
        Ok(_) => Ok(()),
        // The first datagram to an unresolved neighbour may be queued or refused; the ARP request still goes out.
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EHOSTUNREACH) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_membership() {
        let i = Iface {
            name: "x".into(),
            index: 1,
            mac: [0; 6],
            nets: vec![
                ("10.99.0.2".parse().unwrap(), 24),
                ("192.168.7.9".parse().unwrap(), 30),
                ("fd00:99::2".parse().unwrap(), 64),
            ],
        };
        assert!(i.on_link("fd00:99::11".parse().unwrap()));
        assert!(!i.on_link("fd00:98::11".parse().unwrap()));
        assert!(!i.on_link("::ffff:10.99.0.7".parse().unwrap()), "a mapped address is not the IPv4 one");
        assert!(i.on_link("10.99.0.200".parse().unwrap()));
        assert!(i.on_link("192.168.7.10".parse().unwrap()));
        assert!(!i.on_link("192.168.7.12".parse().unwrap()));
        assert!(!i.on_link("10.98.0.1".parse().unwrap()));
        assert_eq!(i.subnets(), "10.99.0.0/24, 192.168.7.8/30, fd00:99::/64");
        // A subnet's network and broadcast addresses name no host.
        let edge = |a: &str| i.subnet_edge(a.parse().unwrap()).map(|(w, n)| format!("{w} {n}"));
        assert_eq!(edge("10.99.0.0").as_deref(), Some("network 10.99.0.0/24"));
        assert_eq!(edge("10.99.0.255").as_deref(), Some("broadcast 10.99.0.0/24"));
        assert_eq!(edge("192.168.7.11").as_deref(), Some("broadcast 192.168.7.8/30"));
        assert_eq!(edge("fd00:99::").as_deref(), Some("network (subnet-router anycast) fd00:99::/64"));
        for host in ["10.99.0.1", "10.99.0.254", "192.168.7.10", "fd00:99::1", "10.98.0.0"] {
            assert_eq!(edge(host), None, "{host}");
        }
        let wide = Iface { nets: vec![("10.0.0.1".parse().unwrap(), 0), ("10.1.0.1".parse().unwrap(), 31)], ..i };
        assert_eq!(wide.subnet_edge("0.0.0.0".parse().unwrap()).map(|e| e.0), Some("network"), "/0 does not overflow");
        assert_eq!(wide.subnet_edge("10.1.0.0".parse().unwrap()), None, "a /31 has no network address (RFC 3021)");
        assert_eq!(format_mac(&[2, 0, 0xab, 1, 2, 3]), "02:00:ab:01:02:03");
    }
}
