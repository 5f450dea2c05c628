//! Builds the XDP object (lb-ebpf) with the nightly toolchain and bpf-linker; run `cargo xtask setup` first.
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../lb-ebpf");
    let root = root.canonicalize()?;
    let root_dir = root.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", root.display()))?;
    println!("cargo:rerun-if-changed={root_dir}/../lb-common/src");
    aya_build::build_ebpf(
        [aya_build::Package { name: "lb-ebpf", root_dir, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
