//! The shipped Prometheus files (scripts/prometheus) pass promtool: the scrape config, the rules, and the rules' unit tests.
use std::path::{Path, PathBuf};
use std::process::Command;

fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| panic!("promtool not found (Debian package prometheus): run cargo xtask setup"))
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/prometheus")
}

/// Runs promtool with `args` in `cwd`; fails the test with promtool's output unless it succeeds.
fn run(cwd: &Path, args: &[&str]) -> String {
    let out = Command::new(promtool()).args(args).current_dir(cwd).output().expect("running promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {} failed ({}):\n{text}", args.join(" "), out.status);
    text
}

fn yml_files(sub: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir().join(sub))
        .unwrap_or_else(|e| panic!("reading scripts/prometheus/{sub}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .map(|p| format!("{sub}/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    v.sort();
    v
}

/// A copy of scripts/prometheus removed on drop, with placeholder token files: `check config` wants every
/// credentials_file to exist, and the real ones are the operator's.
struct Staged(PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn the_scrape_config_is_valid() {
    let staged = Staged(std::env::temp_dir().join(format!("lb-prometheus-{}", std::process::id())));
    copy_dir(&dir(), &staged.0);
    for token in ["relay.token", "smd.token"] {
        std::fs::write(staged.0.join(token), "placeholder-token-0123456789\n").unwrap();
    }
    let out = run(&staged.0, &["check", "config", "prometheus.yml"]);
    assert!(out.contains("3 rule files found"), "the config loads rules/*.yml: {out}");
}

#[test]
fn the_rules_are_valid_and_their_tests_pass() {
    let rules = yml_files("rules");
    assert_eq!(rules, ["rules/lb.yml", "rules/manager.yml", "rules/relay.yml"]);
    let mut args = vec!["check", "rules"];
    args.extend(rules.iter().map(String::as_str));
    run(&dir(), &args);
    let tests = yml_files("tests");
    assert_eq!(tests.len(), 3, "one test file per rule file: {tests:?}");
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let out = run(&dir(), &args);
    assert_eq!(out.matches("SUCCESS").count(), 3, "{out}");
}
