//! The row runner of the mistakes suite: runs a binary of the workspace in a scratch directory with the files a row
//! needs, and checks its exit code and message. A command that should refuse but keeps running is a failure too
//! (it accepted the mistake): it is killed at the row's deadline.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One mistake and what the program must answer.
pub struct Row {
    /// What the row tries, shown when it fails.
    pub name: &'static str,
    /// The workspace binary (lbd, lbctl, relay, smd, smctl).
    pub bin: &'static str,
    /// Its arguments; `{dir}` is replaced by the row's scratch directory.
    pub args: Vec<String>,
    /// Files written into the scratch directory first: (relative path, contents).
    pub files: Vec<(&'static str, String)>,
    /// The exit code it must give.
    pub code: i32,
    /// A fragment its stderr (or stdout) must contain: the reason, so the user can fix the mistake.
    pub says: &'static str,
}

impl Row {
    pub fn new(name: &'static str, bin: &'static str, args: &[&str]) -> Self {
        Row { name, bin, args: args.iter().map(|a| a.to_string()).collect(), files: vec![], code: 2, says: "" }
    }
    pub fn file(mut self, path: &'static str, contents: &str) -> Self {
        self.files.push((path, contents.to_string()));
        self
    }
    pub fn code(mut self, code: i32) -> Self {
        self.code = code;
        self
    }
    pub fn says(mut self, fragment: &'static str) -> Self {
        self.says = fragment;
        self
    }
}

/// A scratch directory removed on drop, even when the row fails.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mistakes-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one run gave.
pub struct Outcome {
    /// None when it was still running at the deadline (and was killed).
    pub code: Option<i32>,
    pub output: String,
}

/// Runs `bin args` (with `{dir}` replaced) until it exits or `deadline` passes, without `RUST_BACKTRACE` (a user's
/// shell may set it; messages must read the same either way).
pub fn run(bin: &str, args: &[String], dir: &Path, deadline: Duration) -> Outcome {
    let path = lb_lab::bin_path(bin);
    let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", &dir.display().to_string())).collect();
    let mut child = Command::new(&path)
        .args(&args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
    let start = Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st.code();
        }
        if start.elapsed() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut output);
    }
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut output);
    }
    Outcome { code, output }
}

/// Runs every row (each in its own scratch directory) and panics with every row that failed, not just the first.
pub fn check(rows: &[Row]) {
    let mut failed = Vec::new();
    for row in rows {
        let scratch = Scratch::new(row.bin);
        for (rel, contents) in &row.files {
            let p = scratch.path().join(rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("row directory");
            }
            std::fs::write(&p, contents.replace("{dir}", &scratch.path().display().to_string())).expect("row file");
        }
        let out = run(row.bin, &row.args, scratch.path(), Duration::from_secs(5));
        let ok = out.code == Some(row.code) && out.output.contains(row.says);
        if !ok {
            let code =
                out.code.map_or("still running after 5 s (the mistake was accepted)".to_string(), |c| c.to_string());
            failed.push(format!(
                "{}: `{} {}` gave exit {code}, want {} saying {:?}; output: {}",
                row.name,
                row.bin,
                row.args.join(" "),
                row.code,
                row.says,
                out.output.trim()
            ));
        }
    }
    assert!(failed.is_empty(), "{} of {} rows failed:\n{}", failed.len(), rows.len(), failed.join("\n"));
}
