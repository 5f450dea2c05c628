//! Mistakes rows for smd: see table.rs for what a row is.

use crate::table::{check, Row};

#[test]
fn smd_refuses_bad_config() {
    check(&[
        Row::new("a config file that does not exist", "smd", &["--config", "{dir}/missing.toml"])
            .code(1)
            .says("missing.toml: No such file or directory"),
        Row::new("an unknown key", "smd", &["--config", "{dir}/smd.toml", "--check"])
            .file("smd.toml", "bogus_key = 1\n")
            .code(1)
            .says("unknown field `bogus_key`"),
    ]);
}
