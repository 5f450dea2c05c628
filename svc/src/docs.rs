//! Man pages and shell completions generated from a binary's own clap definition, for `cargo xtask dist`.
//!
//! Every packaged binary calls [`maybe_write`] first thing in `main`: `PROG --write-docs SECTION DIR` then writes
//! `DIR/man/PROG.SECTION` (and `PROG-SUB.SECTION` for each subcommand), `DIR/bash/PROG`, `DIR/zsh/_PROG` and
//! `DIR/fish/PROG.fish`, and exits. The flag is not a clap argument, so `--help` never shows it; the packager runs
//! the very binary it ships, so the pages cannot drift from the options the binary takes.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Command;
use clap_complete::Shell;

/// The hidden flag, only ever recognised as the first argument.
pub const FLAG: &str = "--write-docs";

/// Writes the docs and exits when the first argument is [`FLAG`]; returns at once otherwise. `cmd` builds the
/// binary's clap command (e.g. `Cli::command`); it is only called when the flag is given.
pub fn maybe_write(cmd: impl FnOnce() -> Command) {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().and_then(|a| a.to_str()) != Some(FLAG) {
        return;
    }
    let code = match parse(&args[1..]).and_then(|(section, dir)| write_all(cmd(), &section, &dir)) {
        Ok(written) => {
            for p in written {
                println!("{}", p.display());
            }
            0
        }
        Err(e) => {
            eprintln!("{FLAG}: {e}");
            2
        }
    };
    std::process::exit(code);
}

/// [`maybe_write`] for a binary whose `--help` shows each setting's default (lbd, the relay): the pages show them too.
pub fn maybe_write_with_defaults<T: serde::Serialize>(cmd: impl FnOnce() -> Command, defaults: impl FnOnce() -> T) {
    maybe_write(|| crate::config::show_defaults(cmd(), &crate::config::flags_table(&defaults())))
}

fn parse(args: &[OsString]) -> Result<(String, PathBuf), String> {
    let usage = format!("usage: {FLAG} SECTION DIR (SECTION 1-9, e.g. 1 for commands, 8 for root daemons)");
    let [section, dir] = args else { return Err(usage) };
    let section = section.to_str().filter(|s| matches!(s.as_bytes(), [b'1'..=b'9'])).ok_or(usage)?;
    Ok((section.to_string(), PathBuf::from(dir)))
}

/// Writes every page and completion of `cmd` under `dir` and returns the files written.
pub fn write_all(cmd: Command, section: &str, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let name = cmd.get_name().to_string();
    let mut written = Vec::new();
    let man = dir.join("man");
    mkdir(&man)?;
    man_pages(&cmd, section, &man, &mut written)?;
    for (shell, sub, file) in [
        (Shell::Bash, "bash", name.clone()),
        (Shell::Zsh, "zsh", format!("_{name}")),
        (Shell::Fish, "fish", format!("{name}.fish")),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), &name, &mut buf);
        let d = dir.join(sub);
        mkdir(&d)?;
        written.push(write(&d.join(file), &buf)?);
    }
    Ok(written)
}

/// One page per command: the binary's, then one per visible subcommand (`relay-edge`, `smctl-maintenance`...).
fn man_pages(cmd: &Command, section: &str, dir: &Path, written: &mut Vec<PathBuf>) -> Result<(), String> {
    let page = clap_mangen::Man::new(cmd.clone()).section(section).manual("lb");
    let mut buf = Vec::new();
    page.render(&mut buf).map_err(|e| format!("rendering {}: {e}", page.get_filename()))?;
    written.push(write(&dir.join(page.get_filename()), &buf)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, section, dir, written)?;
    }
    Ok(())
}

fn mkdir(d: &Path) -> Result<(), String> {
    std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<PathBuf, String> {
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Parser, Subcommand};

    #[derive(Parser)]
    #[command(name = "demo", version = "1.2.3", about = "A demo daemon")]
    struct Cli {
        /// The config file.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        cmd: Option<Sub>,
    }

    #[derive(Subcommand)]
    enum Sub {
        /// Shows the state.
        Show {
            /// Print JSON.
            #[arg(long)]
            json: bool,
        },
    }

    #[test]
    fn pages_and_completions_for_the_command_and_each_subcommand() {
        use clap::CommandFactory;
        let dir = std::env::temp_dir().join(format!("svc-docs-{}", std::process::id()));
        let written = write_all(Cli::command(), "8", &dir).unwrap();
        let names: Vec<String> = written.iter().map(|p| p.strip_prefix(&dir).unwrap().display().to_string()).collect();
        assert_eq!(names, ["man/demo.8", "man/demo-show.8", "bash/demo", "zsh/_demo", "fish/demo.fish"]);
        let page = std::fs::read_to_string(dir.join("man/demo.8")).unwrap();
        assert!(page.contains(".TH demo 8  \"demo 1.2.3\" lb"), "{page}");
        assert!(page.contains("\\-\\-config") && page.contains("A demo daemon"), "{page}");
        let sub = std::fs::read_to_string(dir.join("man/demo-show.8")).unwrap();
        assert!(sub.contains("\\-\\-json") && sub.contains("Shows the state"), "{sub}");
        let bash = std::fs::read_to_string(dir.join("bash/demo")).unwrap();
        assert!(bash.contains("complete -F _demo") && bash.contains("--config"), "{bash}");
        assert!(std::fs::read_to_string(dir.join("zsh/_demo")).unwrap().starts_with("#compdef demo"));
        assert!(std::fs::read_to_string(dir.join("fish/demo.fish")).unwrap().contains("complete -c demo"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_arguments_are_refused_with_the_usage() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(parse(&os(&["8", "/tmp/x"])).unwrap(), ("8".to_string(), PathBuf::from("/tmp/x")));
        for bad in [&["8"][..], &["0", "/tmp"], &["18", "/tmp"], &["x", "/tmp"], &["1", "/a", "/b"]] {
            let e = parse(&os(bad)).unwrap_err();
            assert!(e.starts_with("usage: --write-docs SECTION DIR"), "{bad:?}: {e}");
        }
    }
}
