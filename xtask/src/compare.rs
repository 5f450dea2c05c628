//! `cargo xtask bench xdp --compare REV [--passes N]`: the XDP benchmark of the working tree against the one of a git
//! revision, in the same run. Each side's bench binary (its own program inside) is built in its own target dir, the
//! two run alternately N times, and the medians per path are printed side by side with their ratio, so machine noise
//! hits both sides alike.

use crate::{root, status};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the xdp bench of the tree at `dir` into `target` and returns the binary.
fn build(dir: &Path, target: &Path) -> Result<PathBuf> {
    let out = Command::new("cargo")
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .args(["bench", "-p", "lb-tests", "--bench", "xdp", "--no-run", "--message-format=json"])
        .output()
        .context("building the xdp bench")?;
    if !out.status.success() {
        bail!("building the xdp bench in {} failed:\n{}", dir.display(), String::from_utf8_lossy(&out.stderr));
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["reason"] == "compiler-artifact" && v["target"]["name"] == "xdp" {
            if let Some(exe) = v["executable"].as_str() {
                return Ok(PathBuf::from(exe));
            }
        }
    }
    bail!("no xdp bench binary in cargo's output for {}", dir.display())
}

/// Runs a bench binary once; its per-path medians (ns).
fn run(bin: &Path) -> Result<BTreeMap<String, f64>> {
    let out = Command::new(bin).args(["--runs", "5"]).output().with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("{} failed (as root?): {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    }
    let mut m = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "<path name, padded>  <median>  [<min>..<max>]"
        let Some((head, _)) = line.split_once('[') else { continue };
        let mut words: Vec<&str> = head.split_whitespace().collect();
        let Some(Ok(median)) = words.pop().map(str::parse::<f64>) else { continue };
        m.insert(words.join(" "), median);
    }
    Ok(m)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub fn xdp(rev: &str, passes: usize) -> Result<()> {
    let root = root();
    let base_dir = root.join("target/compare/tree");
    let _ = Command::new("git").current_dir(&root).args(["worktree", "remove", "--force"]).arg(&base_dir).output();
    status(Command::new("git").current_dir(&root).args(["worktree", "add", "--detach", "-f"]).arg(&base_dir).arg(rev))?;
    let result = (|| -> Result<()> {
        eprintln!("xtask: building the xdp bench of {rev} and of the working tree");
        let base = build(&base_dir, &root.join("target/compare/target"))?;
        let current = build(&root, &root.join("target"))?;
        let mut runs: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for pass in 0..passes.max(1) {
            eprintln!("xtask: pass {} of {passes}", pass + 1);
            for (path, ns) in run(&base)? {
                runs.entry(path).or_default().0.push(ns);
            }
            for (path, ns) in run(&current)? {
                runs.entry(path).or_default().1.push(ns);
            }
        }
        println!("ns/packet, medians of {passes} alternating passes (each a median of 5 runs); {rev} vs working tree");
        println!("{:<44} {:>9} {:>9} {:>7}", "path", rev, "now", "ratio");
        for (path, (b, c)) in runs.iter_mut() {
            let bm = (!b.is_empty()).then(|| median(b));
            let cm = (!c.is_empty()).then(|| median(c));
            let show = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
            let ratio = match (bm, cm) {
                (Some(b), Some(c)) if b > 0.0 => format!("{:.2}", c / b),
                _ => "-".into(),
            };
            println!("{path:<44} {:>9} {:>9} {ratio:>7}", show(bm), show(cm));
        }
        Ok(())
    })();
    let _ = Command::new("git").current_dir(&root).args(["worktree", "remove", "--force"]).arg(&base_dir).output();
    result
}
