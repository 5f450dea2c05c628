//! `cargo xtask dist`: Debian packages of lbd (with lbctl), the relay and smd (with smctl), built with `dpkg-deb`
//! from the workspace's binaries: the units of scripts/systemd, the default configs (conffiles) and maintainer
//! scripts of scripts/package/PACKAGE, and man pages and shell completions that each binary writes from its own clap
//! definition (`PROG --write-docs SECTION DIR`, svc::docs).
use crate::{bin_dir, build, cargo, root, setup, status};
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A binary of a package: where it is installed and its man section. Daemons only root runs live in /usr/sbin with
/// their page in section 8 (lbd); commands anyone may run, and daemons that run unprivileged (the relay and smd run as
/// a dynamic user), in /usr/bin and section 1. The units' `Documentation=` lines name these pages.
struct Bin {
    name: &'static str,
    dir: &'static str,
    section: &'static str,
}

struct Package {
    name: &'static str,
    bins: &'static [Bin],
    /// Units copied from scripts/systemd.
    units: &'static [&'static str],
    /// Packages the maintainer scripts call, besides what the binaries link.
    depends: &'static [&'static str],
    summary: &'static str,
    /// The control file's long description, one paragraph.
    description: &'static str,
}

const PACKAGES: [Package; 3] = [
    Package {
        name: "lbd",
        bins: &[
            Bin { name: "lbd", dir: "usr/sbin", section: "8" },
            Bin { name: "lbctl", dir: "usr/bin", section: "1" },
        ],
        units: &["lbd.service"],
        depends: &[],
        summary: "XDP direct-routing (LVS-DR) layer-4 load balancer",
        description: "lbd attaches an XDP program (embedded in the binary) to an interface and balances TCP and UDP \
                      services over real servers with Maglev hashing, health checks and a connection table pinned \
                      in the bpf filesystem, so a restart or an upgrade keeps every flow. lbctl is its CLI.",
    },
    Package {
        name: "relay",
        bins: &[Bin { name: "relay", dir: "usr/bin", section: "1" }],
        units: &["relay@.service"],
        depends: &[],
        summary: "RTMP origin and edge relay with HLS, LL-HLS and HTTP-FLV",
        description: "relay runs as an origin (publishers, camera sources) or an edge (pulls streams from origins on \
                      demand, GOP cache, fan-out to players over RTMP, RTMPT, HTTP-FLV, HLS and LL-HLS). One \
                      relay@ROLE unit per role and config file.",
    },
    Package {
        name: "smd",
        bins: &[Bin { name: "smd", dir: "usr/bin", section: "1" }, Bin { name: "smctl", dir: "usr/bin", section: "1" }],
        units: &["smd.service"],
        depends: &["adduser"],
        summary: "stream manager for the relay cluster",
        description: "smd manages origin groups with failover and failback, edges that pre-pull and follow a \
                      failover, edges in the load balancer and their maintenance, autoscaling, events and alarms, \
                      alone or as several smd sharing an etcd store. smctl is its CLI.",
    },
];

/// What `cargo xtask dist` was asked for.
struct Options {
    out: PathBuf,
    /// Package the binaries already in this directory and build nothing.
    bins: Option<PathBuf>,
    debug: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options { out: PathBuf::new(), bins: None, debug: false };
    let mut out = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = Some(PathBuf::from(it.next().context("--out needs a directory")?)),
            "--bin-dir" => o.bins = Some(PathBuf::from(it.next().context("--bin-dir needs a directory")?)),
            "--debug" => o.debug = true,
            other => bail!(
                "dist: unknown argument {other:?} (usage: cargo xtask dist [--out DIR] [--debug] [--bin-dir DIR])"
            ),
        }
    }
    o.out = out.unwrap_or_else(|| bin_dir(true).parent().expect("a target directory").join("dist"));
    Ok(o)
}

/// `cargo xtask dist [--out DIR] [--debug] [--bin-dir DIR]`: builds the binaries (release, or debug with
/// `--debug`; none with `--bin-dir`) and writes `PACKAGE_VERSION_ARCH.deb` for each package into DIR.
pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    for tool in ["dpkg-deb", "dpkg", "gzip", "ldd"] {
        if Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map_or(true, |o| !o.status.success())
        {
            bail!("dist needs {tool} (Debian's dpkg, gzip and libc-bin packages)");
        }
    }
    // xz, Debian's default, for the release packages; debug binaries are large (about 35 MB each stripped) and only
    // for trying out, so they get quick gzip (a second each instead of half a minute).
    let fast = o.debug || o.bins.is_some();
    let bins = match &o.bins {
        Some(d) => d.clone(),
        None => {
            // lbd embeds its eBPF program: the nightly's rust-src and bpf-linker build it.
            setup::build_tools()?;
            if o.debug {
                // The build `cargo xtask test` makes (every binary), so a dist after the tests builds nothing.
                build(false)?;
            } else {
                // Only the packaged binaries: a release build of the rest (labs, benches) would cost minutes and
                // gigabytes for nothing.
                let mut c = cargo();
                c.args(["build", "--release"]);
                for b in PACKAGES.iter().flat_map(|p| p.bins) {
                    c.args(["--bin", b.name]);
                }
                status(&mut c)?;
            }
            bin_dir(!o.debug)
        }
    };
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let out = o.out.canonicalize()?;
    for p in &PACKAGES {
        let deb = package(p, &bins, &out, &arch, fast)?;
        let size = std::fs::metadata(&deb)?.len();
        println!("{} ({:.1} MiB)", deb.display(), size as f64 / (1 << 20) as f64);
    }
    Ok(())
}

/// Stages one package's tree under `out` and builds its .deb there; returns the .deb's path.
fn package(p: &Package, bins: &Path, out: &Path, arch: &str, fast: bool) -> Result<PathBuf> {
    let (version, commit) = binary_version(&bins.join(p.bins[0].name), p.bins[0].name)?;
    let deb_version = debian_version(&version, &commit);
    let stage = out.join(format!("{}_{deb_version}_{arch}", p.name));
    if stage.exists() {
        std::fs::remove_dir_all(&stage).with_context(|| format!("removing the old {}", stage.display()))?;
    }
    let src = root().join("scripts/package").join(p.name);
    let mut depends = BTreeSet::new();
    for b in p.bins {
        let from = bins.join(b.name);
        let (v, c) = binary_version(&from, b.name)?;
        if (v.as_str(), c.as_str()) != (version.as_str(), commit.as_str()) {
            bail!("{} is {v} ({c}) but {} is {version} ({commit}): build them from one tree", b.name, p.bins[0].name);
        }
        let to = stage.join(b.dir).join(b.name);
        install_binary(&from, &to)?;
        depends.extend(shared_library_packages(&to)?);
        docs(&to, b, &stage)?;
    }
    for u in p.units {
        install(&root().join("scripts/systemd").join(u), &stage.join("lib/systemd/system").join(u), 0o644)?;
    }
    // Every file of scripts/package/PACKAGE/etc is a default config: installed, and a conffile (dpkg keeps the
    // operator's edits on upgrade and asks when both changed).
    let mut conffiles = Vec::new();
    for f in files_under(&src.join("etc"))? {
        let rel = f.strip_prefix(&src)?;
        install(&f, &stage.join(rel), 0o644)?;
        conffiles.push(format!("/{}", rel.display()));
    }
    let doc = stage.join("usr/share/doc").join(p.name);
    std::fs::create_dir_all(&doc)?;
    std::fs::write(
        doc.join("copyright"),
        format!(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: lb\n\n\
             Files: *\nLicense: MIT OR Apache-2.0\n Built from commit {commit}.\n"
        ),
    )?;
    let debian = stage.join("DEBIAN");
    std::fs::create_dir_all(&debian)?;
    for f in files_under(&src.join("DEBIAN"))? {
        install(&f, &debian.join(f.file_name().unwrap()), 0o755)?;
    }
    std::fs::write(debian.join("conffiles"), conffiles.iter().map(|c| format!("{c}\n")).collect::<String>())?;
    depends.extend(p.depends.iter().map(|d| d.to_string()));
    let control = control(p, &deb_version, arch, &depends, installed_kib(&stage)?);
    std::fs::write(debian.join("control"), control)?;
    let deb = out.join(format!("{}_{deb_version}_{arch}.deb", p.name));
    let compress: &[&str] = if fast { &["-Zgzip", "-z1"] } else { &["-Zxz"] };
    status(Command::new("dpkg-deb").arg("--root-owner-group").args(compress).arg("--build").arg(&stage).arg(&deb))?;
    std::fs::remove_dir_all(&stage)?;
    Ok(deb)
}

fn control(p: &Package, version: &str, arch: &str, depends: &BTreeSet<String>, kib: u64) -> String {
    let maintainer = std::env::var("DEBEMAIL").unwrap_or_else(|_| "lb developers <lb@localhost>".into());
    let mut long = String::new();
    let mut line = String::new();
    for w in p.description.split_whitespace() {
        if !line.is_empty() && line.len() + w.len() > 78 {
            long.push_str(&format!(" {line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    long.push_str(&format!(" {line}\n"));
    format!(
        "Package: {}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: {maintainer}\nInstalled-Size: {kib}\n\
         Depends: {}\nSection: net\nPriority: optional\nDescription: {}\n{long}",
        p.name,
        depends.iter().cloned().collect::<Vec<_>>().join(", "),
        p.summary
    )
}

/// `NAME VERSION (COMMIT)` from `BIN --version`: the package carries what its binaries say they are.
fn binary_version(bin: &Path, name: &str) -> Result<(String, String)> {
    let line = output(Command::new(bin).arg("--version"))
        .with_context(|| format!("{} --version (build the binaries first, or drop --bin-dir)", bin.display()))?;
    let parse = || {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        let (v, c) = rest.split_once(" (")?;
        Some((v.to_string(), c.strip_suffix(')')?.to_string()))
    };
    parse().with_context(|| format!("{} --version said {line:?}, not `{name} VERSION (COMMIT)`", bin.display()))
}

/// The Debian version: the product version, then the commit's time (so a later commit sorts higher for dpkg and
/// apt) and the commit: `0.1.0+git20261206031200.1a2b3c4`. Without git, `0.1.0+git1a2b3c4`; outside a git tree,
/// the version alone.
pub fn debian_version(version: &str, commit: &str) -> String {
    if commit == "unknown" {
        return version.to_string();
    }
    let when = Command::new("git")
        .current_dir(root())
        .env("TZ", "UTC")
        .args(["show", "-s", "--format=%cd", "--date=format-local:%Y%m%d%H%M%S", commit])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| s.len() == 14);
    match when {
        Some(t) => format!("{version}+git{t}.{commit}"),
        None => format!("{version}+git{commit}"),
    }
}

/// Man pages (gzipped, as Debian ships them) and completions, written by the binary itself.
fn docs(bin: &Path, b: &Bin, stage: &Path) -> Result<()> {
    let tmp = stage.join(format!(".docs-{}", b.name));
    status(Command::new(bin).arg("--write-docs").arg(b.section).arg(&tmp).stdout(std::process::Stdio::null()))?;
    let man = stage.join(format!("usr/share/man/man{}", b.section));
    std::fs::create_dir_all(&man)?;
    for page in files_under(&tmp.join("man"))? {
        let gz = man.join(format!("{}.gz", page.file_name().unwrap().to_string_lossy()));
        let f = std::fs::File::create(&gz)?;
        status(Command::new("gzip").args(["-9n", "-c"]).arg(&page).stdout(f))?;
    }
    for (from, to) in [
        (format!("bash/{}", b.name), format!("usr/share/bash-completion/completions/{}", b.name)),
        (format!("zsh/_{}", b.name), format!("usr/share/zsh/vendor-completions/_{}", b.name)),
        (format!("fish/{}.fish", b.name), format!("usr/share/fish/vendor_completions.d/{}.fish", b.name)),
    ] {
        install(&tmp.join(from), &stage.join(to), 0o644)?;
    }
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}

/// The packages of the shared libraries `bin` links (what `ldd` resolves, owned per `dpkg -S`), libc6 with the
/// newest GLIBC_ symbol version the binary asks for: what dpkg-shlibdeps would say, without needing dpkg-dev.
fn shared_library_packages(bin: &Path) -> Result<BTreeSet<String>> {
    let ldd = output(Command::new("ldd").arg(bin))?;
    let glibc = glibc_needed(&std::fs::read(bin)?);
    let mut pkgs = BTreeSet::new();
    for path in ldd.lines().filter_map(|l| l.split_once("=> ").map(|(_, r)| r)).filter_map(|r| r.split(' ').next()) {
        if !path.starts_with('/') {
            continue;
        }
        let owner =
            owner_of(path).with_context(|| format!("which Debian package has {path} ({} links it)?", bin.display()))?;
        pkgs.insert(match (&owner[..], &glibc) {
            ("libc6", Some((maj, min))) => format!("libc6 (>= {maj}.{min})"),
            _ => owner,
        });
    }
    Ok(pkgs)
}

/// `dpkg -S` of a library path, trying /lib and /usr/lib both (Debian 12 has merged /usr; dpkg knows one of them).
fn owner_of(path: &str) -> Result<String> {
    let alt = match path.strip_prefix("/usr") {
        Some(p) => p.to_string(),
        None => format!("/usr{path}"),
    };
    for p in [path, &alt] {
        if let Ok(s) = output(Command::new("dpkg").args(["-S", p])) {
            if let Some((pkg, _)) = s.lines().next().and_then(|l| l.split_once(": ")) {
                return Ok(pkg.split(':').next().unwrap_or(pkg).to_string());
            }
        }
    }
    bail!("dpkg -S {path} found no package")
}

/// The newest `GLIBC_2.N` version named in an ELF file's strings (its version needs), e.g. (2, 34).
pub fn glibc_needed(elf: &[u8]) -> Option<(u32, u32)> {
    const TAG: &[u8] = b"GLIBC_2.";
    let mut best = None;
    let mut i = 0;
    while let Some(at) = elf[i..].windows(TAG.len()).position(|w| w == TAG) {
        let start = i + at + TAG.len();
        let digits: String = elf[start..].iter().take_while(|b| b.is_ascii_digit()).map(|&b| b as char).collect();
        // The string ends right after the minor version (or a `.patch`): `GLIBC_2.34\0`.
        let end = elf.get(start + digits.len()).copied();
        if let (Ok(min), Some(0 | b'.')) = (digits.parse::<u32>(), end) {
            best = best.max(Some((2, min)));
        }
        i = start;
    }
    best
}

/// Copies a binary without its debug sections (release builds keep line tables for backtraces, `debug = 1`), as
/// Debian's packaging does; as built when binutils' `strip` is not installed.
fn install_binary(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to.parent().unwrap())?;
    match Command::new("strip").arg("--strip-debug").arg("-o").arg(to).arg(from).status() {
        Ok(s) if s.success() => {}
        Ok(s) => bail!("strip --strip-debug -o {} {}: {s}", to.display(), from.display()),
        Err(_) => {
            eprintln!("dist: no `strip` (binutils): {} keeps its debug sections", to.display());
            std::fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
    }
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to.parent().unwrap())?;
    std::fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Every regular file below `dir`, sorted; none when it does not exist.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(files_under(&p)?);
        } else {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// The control file's Installed-Size: the files' sizes in KiB, the DEBIAN directory left out.
fn installed_kib(stage: &Path) -> Result<u64> {
    let mut bytes = 0;
    for f in files_under(stage)? {
        if !f.strip_prefix(stage)?.starts_with("DEBIAN") {
            bytes += std::fs::metadata(&f)?.len().div_ceil(1024) * 1024;
        }
    }
    Ok(bytes / 1024)
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_version_is_the_newest_named() {
        let elf = b"\0GLIBC_2.2.5\0GLIBC_2.34\0GLIBC_2.3\0GLIBC_PRIVATE\0GLIBC_2.9x\0";
        assert_eq!(glibc_needed(elf), Some((2, 34)));
        assert_eq!(glibc_needed(b"\0nothing\0"), None);
    }

    #[test]
    fn version_without_a_commit_is_the_version() {
        assert_eq!(debian_version("0.1.0", "unknown"), "0.1.0");
        // A commit git does not know: no time, the commit alone.
        assert_eq!(debian_version("0.1.0", "zzzzzzz"), "0.1.0+gitzzzzzzz");
    }

    #[test]
    fn every_package_has_its_files() {
        for p in &PACKAGES {
            let src = root().join("scripts/package").join(p.name);
            assert!(!files_under(&src.join("etc")).unwrap().is_empty(), "{}: no default config", p.name);
            assert!(src.join("DEBIAN/postinst").is_file(), "{}: no postinst", p.name);
            for u in p.units {
                assert!(root().join("scripts/systemd").join(u).is_file(), "{u}");
            }
        }
    }
}
