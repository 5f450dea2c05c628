//! A short, seeded run of the dataplane's malformed-packet campaign (`cargo xtask fuzz dataplane` runs the long
//! one): 200,000 random and mutated frames, none transmitted unless well formed and for a service.
use lb_tests::dpfuzz::{campaign, configure_campaign};
use lb_userspace::dataplane::Dataplane;

#[test]
fn malformed_frames_are_never_transmitted() {
    lb_tests::require_root();
    let mut dp = Dataplane::load(lb_tests::fixture::LIMITS).expect("load the XDP object");
    configure_campaign(&mut dp);
    let rep = campaign(&dp, 200_000, 0x5eed_1234, None);
    eprintln!("{rep}");
    assert!(rep.violations.is_empty(), "{:#?}", &rep.violations[..rep.violations.len().min(5)]);
    assert!(rep.actions.get("tx").copied().unwrap_or(0) > 5_000, "the campaign must also exercise the TX paths");
    assert_eq!(rep.actions.get("aborted"), None);
}
