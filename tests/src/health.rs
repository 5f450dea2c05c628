//! Helpers for the issue-4 tests (health checks, drain, events, metrics, pinned restarts): a bpffs per lab for
//! the pins, removed on Drop even when a test fails, and small readers of lbctl and metrics output.
use crate::LbLab;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A bpf filesystem mounted in the lab's directory, holding the pins of this lab's lbd. Mounted in the host's
/// mount namespace, so it outlives every lbd (which runs under `ip netns exec`, in a mount namespace of its own
/// where /sys is remounted). Drop detaches it: the pins, and with them the XDP link and maps, go away as soon as
/// no lbd holds them, whatever the test did.
pub struct BpfMount {
    pub root: PathBuf,
}

impl BpfMount {
    pub fn new(l: &LbLab) -> Result<Self> {
        Self::at(l.lab.dir.join("bpf"))
    }

    /// A bpffs mounted at `root` (created if missing).
    pub fn at(root: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&root)?;
        lb_lab::run(std::process::Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&root))
            .context("mounting a bpf filesystem for the lab's pins")?;
        Ok(BpfMount { root })
    }

    /// The pin directory to give lbd.
    pub fn pin_dir(&self) -> String {
        self.root.join("lbd").display().to_string()
    }
}

impl Drop for BpfMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.root).status();
    }
}

/// The one deadline wait of every test (the health tests have always called it from here).
pub use lb_lab::wait::wait_within;

/// `lbctl list --json`: (service "VIP:PORT", real) -> the real's JSON.
pub fn reals(l: &LbLab) -> BTreeMap<(String, String), serde_json::Value> {
    let mut m = BTreeMap::new();
    for s in l.list_json().as_array().cloned().unwrap_or_default() {
        let svc = format!("{}:{}", s["vip"].as_str().unwrap_or(""), s["port"]);
        for r in s["reals"].as_array().cloned().unwrap_or_default() {
            m.insert((svc.clone(), r["addr"].as_str().unwrap_or("").to_string()), r);
        }
    }
    m
}

/// The health lbctl shows for a real of a service ("up", "down", "unknown").
pub fn health(l: &LbLab, svc: &str, real: &str) -> String {
    reals(l)
        .get(&(svc.to_string(), real.to_string()))
        .map(|r| r["health"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// `lbctl events --json`.
pub fn events(l: &LbLab) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&l.lbctl_ok(&["events", "--json"]))
        .expect("events --json parses")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Events of `kind` about `real` (any service when `svc` is None).
pub fn count_events(evs: &[serde_json::Value], kind: &str, real: Option<&str>) -> usize {
    evs.iter().filter(|e| e["kind"] == kind && real.is_none_or(|r| e["real"] == r)).count()
}

/// Fetches `http://ADDR/metrics` from inside the LB namespace.
pub fn scrape(l: &LbLab, addr: &str) -> Result<String> {
    let out = l.lab.exec(&l.lab.lb(), &["curl", "-sS", "--max-time", "5", &format!("http://{addr}/metrics")])?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Starts `curl http://VIP/stream?secs=N` in the client namespace; its output goes to `log`. Returns the pid.
pub fn start_stream(l: &mut LbLab, secs: u32, log: &str) -> Result<u32> {
    let url = format!("http://{}/stream?secs={secs}", crate::VIP);
    let client = l.lab.client();
    let max = (secs + 20).to_string();
    l.lab.spawn(&client, log, &["curl", "-sS", "-N", "--max-time", &max, &url])
}

/// The real a stream landed on (its first line is "rN 0").
pub fn stream_real(l: &LbLab, log: &str) -> Result<String> {
    let mut name = None;
    wait_within(Duration::from_secs(5), "the stream's first line", || {
        name = l.lab.log(log).split_whitespace().next().map(str::to_string);
        name.is_some()
    })?;
    Ok(name.unwrap_or_default())
}
