//! The Debian packages of `cargo xtask dist` (issue 26): built from the suite's debug binaries (`xtask dist
//! --bin-dir`), each one's control fields, then unpacked into a fresh root (`dpkg-deb -x`) where its binaries answer
//! `--version`, its default configs pass the daemons' `--check` at the paths the units use, its man pages render
//! with `man -l`, its bash completions load, and its units name binaries it ships; then dpkg installs all three into
//! an empty root and purges them (maintainer scripts included). Needs root (a private mount namespace shows the
//! unpacked /var at /var to the checks); touches no real /etc or /var.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use lb_lab::{bin_path, repo_file};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).trim().to_string()
}

/// A scratch directory removed on drop, even when the test fails.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What each package must hold: (path under the root, mode) of its binaries, and its units and default configs.
struct Expect {
    bins: &'static [(&'static str, &'static str)],
    units: &'static [&'static str],
    configs: &'static [&'static str],
    /// Man pages (besides the binaries' own) of subcommands that must be there.
    pages: &'static [&'static str],
}

fn expected() -> BTreeMap<&'static str, Expect> {
    BTreeMap::from([
        (
            "lbd",
            Expect {
                bins: &[("lbd", "usr/sbin/lbd"), ("lbctl", "usr/bin/lbctl")],
                units: &["lbd.service"],
                configs: &["etc/lb/lbd.toml"],
                pages: &["usr/share/man/man8/lbd.8.gz", "usr/share/man/man1/lbctl.1.gz"],
            },
        ),
        (
            "relay",
            Expect {
                bins: &[("relay", "usr/bin/relay")],
                units: &["relay@.service"],
                configs: &["etc/relay/edge.toml", "etc/relay/origin.toml"],
                pages: &[
                    "usr/share/man/man1/relay.1.gz",
                    "usr/share/man/man1/relay-edge.1.gz",
                    "usr/share/man/man1/relay-origin.1.gz",
                ],
            },
        ),
        (
            "smd",
            Expect {
                bins: &[("smd", "usr/bin/smd"), ("smctl", "usr/bin/smctl")],
                units: &["smd.service"],
                configs: &["etc/smd/smd.toml"],
                pages: &[
                    "usr/share/man/man1/smd.1.gz",
                    "usr/share/man/man1/smctl.1.gz",
                    "usr/share/man/man1/smctl-maintenance.1.gz",
                ],
            },
        ),
    ])
}

/// The Debian version xtask must give: the binaries' version, the commit's time in UTC and the commit.
fn expected_version(version: &str, commit: &str) -> String {
    if commit == "unknown" {
        return version.to_string();
    }
    let t = Command::new("git")
        .current_dir(repo_file(""))
        .env("TZ", "UTC")
        .args(["show", "-s", "--format=%cd", "--date=format-local:%Y%m%d%H%M%S", commit])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&t.stdout).trim().to_string();
    if t.is_empty() {
        format!("{version}+git{commit}")
    } else {
        format!("{version}+git{t}.{commit}")
    }
}

/// Runs `args` in a private mount namespace where `root`/var is /var: the daemons' checks see the state paths their
/// units use (/var/lib/smd, /var/lib/lbd) inside the unpacked root, and the machine's own /var is untouched.
fn in_root_var(root: &Path, args: &[&Path]) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "--", "sh", "-c", "mount --bind \"$0/var\" /var && exec \"$@\""]);
    c.arg(root).args(args).env_remove("RUST_BACKTRACE").env_remove("RUST_LOG");
    c
}

#[test]
fn packages_unpack_into_documented_checked_daemons() {
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test mounts in a private mount namespace: run it as root (cargo xtask test)");
    }
    let tmp = std::env::temp_dir().join(format!("lbx-dist-{}", std::process::id()));
    assert!(!tmp.starts_with("/var"), "TMPDIR {} is under /var, which the checks bind over", tmp.display());
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let scratch = Scratch(tmp);
    let bins = bin_path("lbd").parent().unwrap().to_path_buf();

    // The version every binary of this build reports: `lbd 0.1.0 (1a2b3c4)`.
    let line = stdout(Command::new(bins.join("lbd")).arg("--version"));
    let (version, commit) = line.strip_prefix("lbd ").unwrap().split_once(" (").unwrap();
    let commit = commit.strip_suffix(')').unwrap();
    let deb_version = expected_version(version, commit);
    let arch = stdout(Command::new("dpkg").arg("--print-architecture"));

    let out = scratch.0.join("out");
    let started = Instant::now();
    let said = stdout(Command::new(bin_path("xtask")).arg("dist").arg("--bin-dir").arg(&bins).arg("--out").arg(&out));
    eprintln!("xtask dist --bin-dir: {:.1} s\n{said}", started.elapsed().as_secs_f64());
    let mut debs: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    debs.sort();
    let want: Vec<String> = expected().keys().map(|p| format!("{p}_{deb_version}_{arch}.deb")).collect();
    assert_eq!(debs, want, "xtask said: {said}");

    for (pkg, exp) in expected() {
        let deb = out.join(format!("{pkg}_{deb_version}_{arch}.deb"));
        // The control fields.
        let info = stdout(Command::new("dpkg-deb").arg("--info").arg(&deb));
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.trim_start().strip_prefix(&format!("{name}: ")))
                .unwrap_or_else(|| panic!("{pkg}: no {name} in\n{info}"))
                .to_string()
        };
        assert_eq!(field("Package"), pkg);
        assert_eq!(field("Version"), deb_version);
        assert_eq!(field("Architecture"), arch);
        let depends = field("Depends");
        assert!(depends.contains("libc6 (>= 2."), "{pkg}: Depends: {depends}");
        assert!(!depends.contains("ffmpeg"), "{pkg}: Depends: {depends}");
        assert_eq!(depends.contains("adduser"), pkg == "smd", "{pkg}: Depends: {depends}");

        let root = scratch.0.join(format!("root-{pkg}"));
        std::fs::create_dir_all(&root).unwrap();
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
        let ctrl = scratch.0.join(format!("ctrl-{pkg}"));
        run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&ctrl));

        // Binaries: their own name, this build's version and commit.
        for (name, path) in exp.bins {
            let p = root.join(path);
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o755, "{path}");
            assert_eq!(stdout(Command::new(&p).arg("--version")), format!("{name} {version} ({commit})"), "{path}");
        }

        // Units as in scripts/systemd, and every binary they start is in this package.
        for u in exp.units {
            let shipped = std::fs::read_to_string(root.join("lib/systemd/system").join(u)).unwrap();
            assert_eq!(shipped, std::fs::read_to_string(repo_file("scripts/systemd").join(u)).unwrap(), "{u}");
            for exec in shipped.lines().filter(|l| l.starts_with("ExecStart")) {
                let bin = exec.split(['=', ' ', '\'']).find(|w| w.starts_with("/usr/")).unwrap();
                assert!(root.join(&bin[1..]).is_file(), "{u}: {bin} is not in the package ({exec})");
            }
        }

        // Default configs are the conffiles.
        let conffiles = std::fs::read_to_string(ctrl.join("conffiles")).unwrap();
        let want: Vec<String> = exp.configs.iter().map(|c| format!("/{c}")).collect();
        assert_eq!(conffiles.lines().collect::<Vec<_>>(), want, "{pkg} conffiles");

        // The postinst honours DPKG_ROOT: under the unpacked root it touches only that root (smd's makes the
        // token there) and starts nothing.
        std::fs::create_dir_all(root.join("var")).unwrap();
        run(Command::new("sh").arg(ctrl.join("postinst")).arg("configure").env("DPKG_ROOT", &root));

        // Each shipped config passes its daemon's --check, invoked as the unit does.
        let check = |args: &[&Path]| {
            let out = run(&mut in_root_var(&root, args));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let p = |s: &str| root.join(s);
        match pkg {
            "lbd" => {
                let ok = check(&[
                    &p("usr/sbin/lbd"),
                    "--config".as_ref(),
                    &p("etc/lb/lbd.toml"),
                    "--state".as_ref(),
                    "/var/lib/lbd/state.toml".as_ref(),
                    "--check".as_ref(),
                ]);
                assert!(ok.starts_with("ok: lbd on lo ") && ok.contains(", 0 services, 0 reals"), "{ok}");
            }
            "relay" => {
                for role in ["origin", "edge"] {
                    let conf = p(&format!("etc/relay/{role}.toml"));
                    let ok =
                        check(&[&p("usr/bin/relay"), role.as_ref(), "--config".as_ref(), &conf, "--check".as_ref()]);
                    assert!(ok.starts_with(&format!("ok: relay {role} on 127.0.0.1:")), "{ok}");
                }
            }
            "smd" => {
                let token = std::fs::read_to_string(p("etc/smd/token")).unwrap();
                assert!(token.len() == 65 && token[..64].bytes().all(|b| b.is_ascii_hexdigit()), "{token:?}");
                let mode = std::fs::metadata(p("etc/smd/token")).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o640, "the token is not for every user");
                let conf = p("etc/smd/smd.toml");
                let ok = check(&[&p("usr/bin/smd"), "--config".as_ref(), &conf, "--check".as_ref()]);
                assert_eq!(ok, format!("ok: {}: 0 nodes, 0 groups, 0 pools", conf.display()));
                assert!(p("var/lib/smd").is_dir(), "the state file's directory is made under the root's /var");
            }
            _ => unreachable!(),
        }

        // Man pages: the binaries' and their subcommands', each rendered by man without a warning.
        for page in exp.pages {
            assert!(root.join(page).is_file(), "{pkg}: no {page}");
        }
        let mut rendered = 0;
        for section in ["man1", "man8"] {
            let dir = root.join("usr/share/man").join(section);
            for e in std::fs::read_dir(&dir).into_iter().flatten() {
                let page = e.unwrap().path();
                let out =
                    run(Command::new("man").arg("-l").arg(&page).env("MANWIDTH", "100").env("MAN_KEEP_STDERR", "1"));
                let text = String::from_utf8_lossy(&out.stdout);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(stderr.trim().is_empty(), "{}: {stderr}", page.display());
                let name = page.file_name().unwrap().to_string_lossy().split('.').next().unwrap().to_string();
                assert!(text.contains("NAME") && text.contains(&name), "{}:\n{text}", page.display());
                rendered += 1;
            }
        }
        assert!(rendered >= exp.pages.len(), "{pkg}: {rendered} pages");

        // Completions for bash, zsh and fish where Debian's shells look; the bash one loads and registers.
        for (name, _) in exp.bins {
            let bash = root.join("usr/share/bash-completion/completions").join(name);
            let registered =
                stdout(Command::new("bash").arg("-c").arg(format!("source \"$0\" && complete -p {name}")).arg(&bash));
            assert!(
                registered.starts_with("complete ") && registered.ends_with(&format!(" -F _{name} {name}")),
                "{registered}"
            );
            let zsh = std::fs::read_to_string(root.join("usr/share/zsh/vendor-completions").join(format!("_{name}")));
            assert!(zsh.unwrap().starts_with(&format!("#compdef {name}")), "{name}: zsh");
            let fish = root.join("usr/share/fish/vendor_completions.d").join(format!("{name}.fish"));
            assert!(std::fs::read_to_string(fish).unwrap().contains(&format!("complete -c {name} ")), "{name}: fish");
        }
    }

    // dpkg itself installs all three into an empty root (its scripts run with DPKG_ROOT, outside a chroot, as
    // `dpkg --root` runs them), registers the conffiles, and a purge leaves nothing behind.
    let r = scratch.0.join("dpkg-root");
    std::fs::create_dir_all(r.join("var/lib/dpkg/info")).unwrap();
    std::fs::create_dir_all(r.join("var/lib/dpkg/updates")).unwrap();
    std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    let dpkg = || {
        let mut c = Command::new("dpkg");
        c.arg(format!("--root={}", r.display())).args(["--force-script-chrootless", "--force-depends"]);
        c
    };
    let debs: Vec<PathBuf> = expected().keys().map(|p| out.join(format!("{p}_{deb_version}_{arch}.deb"))).collect();
    run(dpkg().arg("--install").args(&debs));
    for (pkg, exp) in expected() {
        let st = stdout(dpkg().args(["--status", pkg]));
        assert!(st.contains("Status: install ok installed"), "{st}");
        for c in exp.configs {
            assert!(st.contains(&format!(" /{c} ")), "{pkg}: {c} is not a registered conffile:\n{st}");
        }
    }
    assert!(r.join("etc/smd/token").is_file() && r.join("usr/sbin/lbd").is_file());
    run(dpkg().arg("--purge").args(expected().keys()));
    let mut left = Vec::new();
    let mut dirs = vec![r.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.starts_with(r.join("var/lib/dpkg")) {
                continue;
            }
            if p.is_dir() {
                dirs.push(p);
            } else {
                left.push(p);
            }
        }
    }
    assert!(left.is_empty(), "a purge left {left:?}");
    eprintln!("dist test: {:.1} s", started.elapsed().as_secs_f64());
}
