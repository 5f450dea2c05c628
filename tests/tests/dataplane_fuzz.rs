//! A short seeded run of the malformed-packet campaign (tests/src/malformed.rs) through BPF_PROG_TEST_RUN: the XDP
//! program transmits no frame the reference parser refuses and changes nothing but MACs. Needs root (loads XDP).
use lb_tests::malformed::{campaign, configure};
use lb_tests::xdpobj::{XdpObject, XDP_PASS, XDP_TX};

#[test]
fn malformed_frames_are_never_transmitted() {
    lb_tests::require_root();
    let obj = XdpObject::load(lb_userspace::dataplane::EBPF_OBJECT, "current", 1 << 16).expect("load");
    configure(&obj).expect("configure");
    let r = campaign(&obj, 0x5eed, 200_000, None);
    r.print();
    assert_eq!(r.frames, 200_000);
    assert_eq!(r.violations, 0, "violations: see the frames printed above");
    // The campaign means something only if it reached both outcomes: well-formed frames transmitted (IPv4, IPv6
    // and ICMP errors) and plenty of others passed.
    let tx = r.actions.get(&XDP_TX).copied().unwrap_or(0);
    assert!(tx > 10_000, "only {tx} frames transmitted: the services are not configured as the campaign expects");
    assert!(r.actions.get(&XDP_PASS).copied().unwrap_or(0) > 50_000);
    for k in ["ipv4", "ipv6", "icmpv4", "icmpv6"] {
        assert!(r.tx_as.get(k).copied().unwrap_or(0) > 0, "no {k} frame transmitted");
    }
}
