//! A dataplane loaded for packet fixtures through BPF_PROG_TEST_RUN (needs root, no namespaces): services, reals
//! and rings set directly, and readers of what the program did with a frame.
use crate::require_root;
use lb_common::{RealDef, REAL_F_VALID, RING_SIZE};
use lb_userspace::dataplane::{Dataplane, Limits, LB_PROGRAM};
use lb_userspace::maglev;
use lb_userspace::model::{Proto, ServiceKey, VipKeyOf};
use std::net::IpAddr;

pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const VIP: [u8; 4] = [10, 0, 0, 100];
pub const CLIENT: [u8; 4] = [192, 168, 1, 7];
pub const OUR_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x01];

pub fn real_mac(id: u32) -> [u8; 6] {
    [0x02, 0xbb, 0, 0, 0, id as u8]
}

pub fn real_addr(id: u32) -> IpAddr {
    IpAddr::from([10, 0, 0, 10 + id as u8])
}

/// A dataplane with TCP VIP:80 over reals 1..=3 and UDP VIP:53 over real 1, and TCP VIP:81 with no reals.
pub fn setup() -> Dataplane {
    require_root();
    let mut dp = Dataplane::load(LIMITS).expect("load XDP object");
    configure(&mut dp);
    dp
}

/// The fixtures' map sizes: four services, a 4096-entry connection table.
pub const LIMITS: Limits = Limits { max_services: 4, conn_table_size: 4096 };

/// Writes the fixtures' services, reals and rings (see `setup`).
pub fn configure(dp: &mut Dataplane) {
    // The source MAC the dataplane writes is its own config, not the incoming destination: set it apart from LB_MAC
    // so the test sees the rewrite.
    dp.set_src_mac(OUR_MAC).unwrap();
    for id in 1..=4u32 {
        let mut addr = [0u8; 16];
        if let IpAddr::V4(a) = real_addr(id) {
            addr[..4].copy_from_slice(&a.octets());
        }
        dp.set_real(id, RealDef { addr, mac: real_mac(id), _pad: [0; 2], flags: REAL_F_VALID, _pad2: 0 }).unwrap();
    }
    let http = ServiceKey::parse("10.0.0.100:80", Proto::Tcp).unwrap();
    dp.set_service(http.vip_key(), 0).unwrap();
    set_ring(dp, 0, &[1, 2, 3]);
    let dns = ServiceKey::parse("10.0.0.100:53", Proto::Udp).unwrap();
    dp.set_service(dns.vip_key(), 1).unwrap();
    set_ring(dp, 1, &[1]);
    let empty = ServiceKey::parse("10.0.0.100:81", Proto::Tcp).unwrap();
    dp.set_service(empty.vip_key(), 2).unwrap();
}

pub fn set_ring(dp: &mut Dataplane, vip_num: u32, ids: &[u32]) {
    let entries: Vec<maglev::Entry> =
        ids.iter().map(|id| maglev::Entry { id: *id, addr: real_addr(*id), weight: 1 }).collect();
    dp.write_ring(vip_num, &maglev::build(&entries, RING_SIZE)).unwrap();
}

pub fn run(dp: &Dataplane, frame: &[u8]) -> (u32, Vec<u8>) {
    let (action, out, _) = dp.test_run(LB_PROGRAM, frame, 1).expect("BPF_PROG_TEST_RUN");
    (action, out)
}

/// Which real a forwarded frame went to, by its destination MAC.
pub fn real_of(out: &[u8]) -> u32 {
    (1..=4).find(|id| out[..6] == real_mac(*id)).unwrap_or_else(|| panic!("unknown dst MAC {:x?}", &out[..6]))
}
