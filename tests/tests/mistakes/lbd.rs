//! Mistakes rows for lbd: see table.rs for what a row is.

use crate::table::{check, Row};

#[test]
fn lbd_refuses_bad_flags() {
    check(&[Row::new("unknown XDP mode", "lbd", &["--iface", "lo", "--xdp-mode", "bogus"])
        .code(2)
        .says("expected native or skb")]);
}
