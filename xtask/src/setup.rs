//! `cargo xtask setup`: rust-src for the nightly, bpf-linker built against the nightly's own libLLVM, the
//! Debian tools the lab and tests use (etcd and protoc among them), and the npm packages of the browser tests
//! (tests/browser: hls.js, which the relay's player page serves, and playwright-core). Each step checks first, so a
//! second run takes a moment.
use crate::{root, status};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// bpf-linker release that builds against a rustc-provided libLLVM (see ../shared/NOTES.md).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages and a file each one provides, checked before installing.
const PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "/usr/sbin/ip"),
    ("ethtool", "/usr/sbin/ethtool"),
    ("curl", "/usr/bin/curl"),
    ("procps", "/usr/sbin/sysctl"),
    ("util-linux", "/usr/bin/taskset"),
    ("ffmpeg", "/usr/bin/ffprobe"),
    // librtmp's player, one of the real clients of the relay's stream-end tests.
    ("rtmpdump", "/usr/bin/rtmpdump"),
    // `systemd-analyze verify` of the shipped units (tests/tests/operable.rs).
    ("systemd", "/usr/bin/systemd-analyze"),
    // The RTSP camera of the source tests and the lab (scripts/rtsp-camera.py): gst-rtsp-server from Python.
    ("python3-gi", "/usr/lib/python3/dist-packages/gi/__init__.py"),
    ("python3-gst-1.0", "/usr/lib/python3/dist-packages/gi/overrides/Gst.py"),
    ("gir1.2-gst-rtsp-server-1.0", "/usr/lib/x86_64-linux-gnu/girepository-1.0/GstRtspServer-1.0.typelib"),
    ("gstreamer1.0-plugins-base", "/usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstvideotestsrc.so"),
    ("gstreamer1.0-plugins-good", "/usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstrtp.so"),
    ("gstreamer1.0-plugins-ugly", "/usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstx264.so"),
    ("gstreamer1.0-libav", "/usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstlibav.so"),
    // GStreamer's HLS player (hlsdemux) and gst-launch-1.0, one of the real clients of the HLS tests.
    ("gstreamer1.0-plugins-bad", "/usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgsthls.so"),
    ("gstreamer1.0-tools", "/usr/bin/gst-launch-1.0"),
    // The browser tests' Chromium: the console test drives it through chromedriver (WebDriver), the HLS player
    // tests through playwright-core (tests/browser/play.mjs) under Node.js.
    ("chromium", "/usr/bin/chromium"),
    ("chromium-driver", "/usr/bin/chromedriver"),
    ("nodejs", "/usr/bin/node"),
    ("npm", "/usr/bin/npm"),
    ("nginx-core", "/usr/sbin/nginx"),
    ("libnginx-mod-rtmp", "/usr/lib/nginx/modules/ngx_rtmp_module.so"),
    ("bpftool", "/usr/sbin/bpftool"),
    ("bird2", "/usr/sbin/bird"),
    ("prometheus", "/usr/bin/promtool"),
    // Peers of `cargo xtask bench vip`.
    ("wrk", "/usr/bin/wrk"),
    ("haproxy", "/usr/sbin/haproxy"),
    ("nftables", "/usr/sbin/nft"),
    // The stream manager's high-availability store (3.4 in Debian 12): the lab runs three members as plain
    // processes in namespaces. On a machine that runs systemd, installing etcd-server also starts Debian's own
    // etcd on 127.0.0.1:2379; the lab never uses it (its members listen inside the lab's namespaces), so it is
    // harmless, and `systemctl disable --now etcd` stops it.
    ("etcd-server", "/usr/bin/etcd"),
    ("etcd-client", "/usr/bin/etcdctl"),
    // protoc: the etcd-client crate compiles etcd's protobuf definitions when smd builds. Setup runs before any
    // build of `cargo xtask test|run|lint|bench` (xtask itself does not depend on it).
    ("protobuf-compiler", "/usr/bin/protoc"),
];

pub fn run() -> Result<()> {
    lint_tools()?;
    nightly_rust_src()?;
    bpf_linker()?;
    debian_packages()?;
    browser_packages()?;
    Ok(())
}

/// Only what building lbd needs beyond stable Rust (its eBPF program): the nightly's rust-src and bpf-linker.
pub fn build_tools() -> Result<()> {
    nightly_rust_src()?;
    bpf_linker()
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn nightly_sysroot() -> Result<PathBuf> {
    let s = output(Command::new("rustc").arg("+nightly").args(["--print", "sysroot"]))
        .context("the nightly toolchain is needed to build the eBPF program (rustup toolchain install nightly)")?;
    Ok(PathBuf::from(s))
}

/// rustfmt and clippy for the stable toolchain: `cargo xtask test` runs them as gates.
fn lint_tools() -> Result<()> {
    let have = |tool: &str| Command::new("cargo").args([tool, "--version"]).output().is_ok_and(|o| o.status.success());
    for (tool, component) in [("fmt", "rustfmt"), ("clippy", "clippy")] {
        if !have(tool) {
            eprintln!("xtask setup: adding {component} to the stable toolchain");
            status(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    Ok(())
}

fn nightly_rust_src() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    if sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Ok(());
    }
    eprintln!("xtask setup: adding rust-src to the nightly toolchain");
    status(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// The LLVM major version the nightly rustc is built on, e.g. 22 from "LLVM version: 22.1.4".
pub fn llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
}

fn bpf_linker() -> Result<()> {
    if Command::new("bpf-linker").arg("--version").output().map(|o| o.status.success()).unwrap_or(false) {
        return Ok(());
    }
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let major = llvm_major(&vv).context("cannot tell the nightly's LLVM version from `rustc +nightly -vV`")?;
    let lib = nightly_sysroot()?.join("lib");
    let libllvm = std::fs::read_dir(&lib)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("libLLVM.so.{major}"))))
        .with_context(|| format!("no libLLVM.so.{major}* in {}", lib.display()))?;
    // bpf-linker's build looks for LLVM under LLVM_PREFIX; give it a prefix whose lib/libLLVM.so is the nightly's.
    let prefix = home().join(".cache/lb-xtask/llvm");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)?;
    eprintln!(
        "xtask setup: building bpf-linker {BPF_LINKER_VERSION} against {} (LLVM {major}), about a minute",
        libllvm.display()
    );
    status(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--locked", "--no-default-features"])
            .args(["--features", &format!("llvm-{major}")])
            .env("LLVM_PREFIX", &prefix)
            .env("RUSTFLAGS", format!("-C link-args=-Wl,-rpath,{}", lib.display())),
    )
}

/// cargo-fuzz, for `cargo xtask fuzz` only (the tests run the same entry points through a seeded loop).
pub fn cargo_fuzz() -> Result<()> {
    if Command::new("cargo").args(["fuzz", "--version"]).output().map(|o| o.status.success()).unwrap_or(false) {
        return Ok(());
    }
    eprintln!("xtask setup: installing cargo-fuzz");
    status(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"))
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().filter(|(_, f)| !Path::new(f).exists()).map(|(p, _)| *p).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask setup: installing {}", missing.join(" "));
    status(Command::new("apt-get").arg("update").arg("-q"))?;
    status(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The npm packages of tests/browser, as its package-lock.json pins them: `npm ci` when node_modules lacks them or
/// holds other versions (`npm install` if there is no lock yet, which writes one to commit).
fn browser_packages() -> Result<()> {
    let dir = root().join("tests/browser");
    let lock = std::fs::read_to_string(dir.join("package-lock.json")).ok();
    let installed = std::fs::read_to_string(dir.join("node_modules/.package-lock.json")).ok();
    if let Some(lock) = &lock {
        if npm_deps_current(lock, installed.as_deref()) {
            return Ok(());
        }
    }
    let verb = if lock.is_some() { "ci" } else { "install" };
    eprintln!("xtask setup: npm {verb} in {} (hls.js, playwright-core)", dir.display());
    status(Command::new("npm").args([verb, "--no-audit", "--no-fund"]).current_dir(&dir)).with_context(|| {
        format!(
            "npm {verb} in {} failed (see npm's output above): the browser tests and the relay's player page need \
             its packages from the npm registry; fix that and run `cargo xtask setup` again",
            dir.display()
        )
    })
}

/// Whether the hidden lockfile npm keeps in node_modules (`installed`) has every package of `lock` at the same
/// version and integrity.
pub fn npm_deps_current(lock: &str, installed: Option<&str>) -> bool {
    let packages = |text: &str| -> Option<serde_json::Map<String, serde_json::Value>> {
        serde_json::from_str::<serde_json::Value>(text).ok()?.get("packages")?.as_object().cloned()
    };
    let (Some(want), Some(have)) = (packages(lock), installed.and_then(packages)) else {
        return false;
    };
    want.iter().filter(|(name, _)| !name.is_empty()).all(|(name, w)| {
        have.get(name).is_some_and(|h| h["version"] == w["version"] && h["integrity"] == w["integrity"])
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_llvm_major_from_rustc_vv() {
        let vv = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nhost: x86_64-unknown-linux-gnu\nLLVM version: 22.1.4\n";
        assert_eq!(super::llvm_major(vv), Some(22));
        assert_eq!(super::llvm_major("rustc 1.0"), None);
    }

    #[test]
    fn npm_packages_are_current_only_when_every_locked_version_is_installed() {
        let lock = r#"{"packages": {"": {"name": "x"},
            "node_modules/hls.js": {"version": "1.6.19", "integrity": "sha512-a"},
            "node_modules/playwright-core": {"version": "1.65.2", "integrity": "sha512-b"}}}"#;
        let same = r#"{"packages": {
            "node_modules/hls.js": {"version": "1.6.19", "integrity": "sha512-a"},
            "node_modules/playwright-core": {"version": "1.65.2", "integrity": "sha512-b"}}}"#;
        assert!(super::npm_deps_current(lock, Some(same)));
        let older = same.replace("1.6.19", "1.5.0");
        assert!(!super::npm_deps_current(lock, Some(&older)));
        let missing = r#"{"packages": {"node_modules/hls.js": {"version": "1.6.19", "integrity": "sha512-a"}}}"#;
        assert!(!super::npm_deps_current(lock, Some(missing)));
        assert!(!super::npm_deps_current(lock, None));
        assert!(!super::npm_deps_current(lock, Some("not json")));
    }
}
