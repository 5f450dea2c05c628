//! Mistakes rows for relay: see table.rs for what a row is.

use crate::table::{check, Row};

#[test]
fn relay_refuses_bad_flags() {
    check(&[Row::new("an edge with nowhere to pull from", "relay", &["edge", "--listen", "127.0.0.1:0"])
        .code(1)
        .says("an edge needs at least one --origin")]);
}
