//! The XDP object of another git revision, for `cargo xtask bench xdp --compare REV`: built once per commit into
//! the target dir (cached), from a temporary `git worktree`, the way lb-userspace/build.rs (aya-build) builds it.
use crate::root;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `spec` as an object file: an existing file is taken as it is; anything else is a git revision built here.
pub fn resolve(spec: &str) -> Result<(PathBuf, String)> {
    let p = Path::new(spec);
    if p.is_file() {
        return Ok((p.to_path_buf(), spec.to_string()));
    }
    let out = Command::new("git")
        .current_dir(root())
        .args(["rev-parse", "--verify", "--quiet", &format!("{spec}^{{commit}}")])
        .output()
        .context("running git rev-parse")?;
    if !out.status.success() {
        bail!("--compare {spec:?}: neither a file nor a git revision");
    }
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let short = &commit[..10];
    Ok((build(&commit)?, format!("{spec} ({short})")))
}

fn build(commit: &str) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let dir = target.join("xdp-baseline").join(commit);
    let object = dir.join("lb-ebpf.o");
    if object.is_file() {
        eprintln!("xtask: baseline object of {commit} from {}", object.display());
        return Ok(object);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tree = dir.join("src");
    let remove_tree = || {
        let _ = Command::new("git").current_dir(root()).args(["worktree", "remove", "--force"]).arg(&tree).output();
        let _ = std::fs::remove_dir_all(&tree);
        let _ = Command::new("git").current_dir(root()).args(["worktree", "prune"]).output();
    };
    remove_tree();
    crate::status(
        Command::new("git").current_dir(root()).args(["worktree", "add", "--detach", "-f"]).arg(&tree).arg(commit),
    )?;
    let res = (|| -> Result<()> {
        eprintln!("xtask: building the XDP object of {commit} (nightly, bpf-linker)");
        let arch = std::env::consts::ARCH;
        // The same flags aya-build passes, so the object is what that revision's lbd would have embedded.
        let flags = format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf");
        let mut c = Command::new("rustup");
        c.current_dir(&tree)
            .args(["run", "nightly", "cargo", "build", "--package", "lb-ebpf", "--bins", "--release"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core", "--target-dir"])
            .arg(dir.join("target"))
            .env("CARGO_ENCODED_RUSTFLAGS", flags);
        for key in ["RUSTC", "RUSTC_WORKSPACE_WRAPPER", "CARGO", "RUSTUP_TOOLCHAIN", "RUSTFLAGS", "CARGO_TARGET_DIR"] {
            c.env_remove(key);
        }
        crate::status(&mut c)?;
        let built = dir.join("target/bpfel-unknown-none/release/lb-ebpf");
        std::fs::copy(&built, &object).with_context(|| format!("copying {}", built.display()))?;
        Ok(())
    })();
    remove_tree();
    res.with_context(|| format!("building the XDP object of {commit}"))?;
    Ok(object)
}
