//! A three-member etcd cluster in a lab (hosts etcd1-etcd3 at 10.99.0.51-53), the store of the stream managers'
//! high-availability mode: started, health-checked, and members killed and restarted with their data kept.
use anyhow::{bail, Context, Result};
use std::process::Output;
use std::time::Duration;

use crate::Lab;

/// Members of the lab's etcd cluster.
pub const MEMBERS: usize = 3;
/// etcd's client port.
pub const CLIENT_PORT: u16 = 2379;
/// etcd's peer port.
pub const PEER_PORT: u16 = 2380;

/// Member `i`'s address: 10.99.0.51, .52, .53.
pub fn member_ip(i: usize) -> String {
    format!("10.99.0.{}", 51 + i)
}

/// Member `i`'s client URL.
pub fn client_url(i: usize) -> String {
    format!("http://{}:{CLIENT_PORT}", member_ip(i))
}

/// Every member's client URL, the `endpoints` of a client.
pub fn endpoints() -> Vec<String> {
    (0..MEMBERS).map(client_url).collect()
}

/// The lab's etcd: which members run (their pids) and how many times each was started (each run logs to its own
/// file, `etcd-N-RUN.log`, so a restart keeps the earlier log).
pub struct Etcd {
    pids: Vec<Option<u32>>,
    runs: Vec<u32>,
}

impl Etcd {
    /// Adds the three hosts to the lab, starts every member and waits until the cluster answers health checks.
    pub fn start(lab: &mut Lab) -> Result<Etcd> {
        for i in 0..MEMBERS {
            lab.add_host(&host(i), &member_ip(i), &format!("fd00:99::{}", 51 + i))?;
        }
        let mut etcd = Etcd { pids: vec![None; MEMBERS], runs: vec![0; MEMBERS] };
        for i in 0..MEMBERS {
            etcd.spawn_member(lab, i)?;
        }
        etcd.wait_healthy(lab, &[0, 1, 2], Duration::from_secs(20)).context("the lab's etcd cluster starting")?;
        Ok(etcd)
    }

    /// Member `i`'s namespace.
    pub fn ns(lab: &Lab, i: usize) -> String {
        lab.ns(&host(i))
    }

    /// Member `i`'s data directory (kept across its restarts, removed with the lab).
    pub fn data_dir(lab: &Lab, i: usize) -> std::path::PathBuf {
        lab.dir.join(format!("etcd-{}", i + 1))
    }

    /// Member `i`'s pid, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.pids[i]
    }

    /// Member `i`'s current (or last) log.
    pub fn log(&self, lab: &Lab, i: usize) -> String {
        lab.log(&format!("etcd-{}-{}.log", i + 1, self.runs[i]))
    }

    fn spawn_member(&mut self, lab: &mut Lab, i: usize) -> Result<u32> {
        let cluster: Vec<String> =
            (0..MEMBERS).map(|m| format!("{}=http://{}:{PEER_PORT}", name(m), member_ip(m))).collect();
        let client = client_url(i);
        let peer = format!("http://{}:{PEER_PORT}", member_ip(i));
        let data = Self::data_dir(lab, i).display().to_string();
        let cluster = cluster.join(",");
        let token = lab.prefix.clone();
        // Heartbeat 100 ms, election 1 s (etcd 3.4's defaults, given explicitly so the lab's timing does not follow
        // another etcd's): a new etcd leader within about a second of a member's death, which the smd's lease
        // (seconds) absorbs.
        let args = [
            "etcd",
            "--name",
            &name(i),
            "--data-dir",
            &data,
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &cluster,
            // Ignored by a member whose data directory already holds the cluster (a restart): it rejoins.
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            &token,
            "--heartbeat-interval",
            "100",
            "--election-timeout",
            "1000",
        ];
        self.runs[i] += 1;
        let ns = Self::ns(lab, i);
        let pid = lab.spawn(&ns, &format!("etcd-{}-{}.log", i + 1, self.runs[i]), &args)?;
        self.pids[i] = Some(pid);
        Ok(pid)
    }

    /// Kills member `i` with SIGKILL (a crash: its data directory stays as the crash left it).
    pub fn kill(&mut self, lab: &mut Lab, i: usize) -> Result<()> {
        if let Some(pid) = self.pids[i].take() {
            lab.stop(pid, libc::SIGKILL)?;
        }
        Ok(())
    }

    /// Starts member `i` again on its data directory (it rejoins the cluster); returns once it answers a health
    /// check.
    pub fn restart(&mut self, lab: &mut Lab, i: usize) -> Result<()> {
        if self.pids[i].is_some() {
            bail!("etcd member {} is running", name(i));
        }
        self.spawn_member(lab, i)?;
        self.wait_healthy(lab, &[i], Duration::from_secs(20))
            .with_context(|| format!("etcd {} restarting", name(i)))
            .map(|_| ())
    }

    /// Kills every member with SIGKILL: the store is gone for every client.
    pub fn kill_all(&mut self, lab: &mut Lab) -> Result<()> {
        for i in 0..MEMBERS {
            self.kill(lab, i)?;
        }
        Ok(())
    }

    /// Starts every stopped member again on its data directory; returns once the whole cluster is healthy.
    pub fn start_all(&mut self, lab: &mut Lab) -> Result<()> {
        let stopped: Vec<usize> = (0..MEMBERS).filter(|i| self.pids[*i].is_none()).collect();
        for i in &stopped {
            self.spawn_member(lab, *i)?;
        }
        self.wait_healthy(lab, &[0, 1, 2], Duration::from_secs(20))
            .context("the lab's etcd cluster restarting")
            .map(|_| ())
    }

    /// `etcdctl` against `members` (member indexes), run in the first member's namespace; its output whatever its
    /// exit status.
    pub fn etcdctl(&self, lab: &Lab, members: &[usize], args: &[&str]) -> Result<Output> {
        let eps: Vec<String> = members.iter().map(|i| client_url(*i)).collect();
        let eps = format!("--endpoints={}", eps.join(","));
        let mut full = vec!["env", "ETCDCTL_API=3", "etcdctl", &eps, "--dial-timeout=1s", "--command-timeout=2s"];
        full.extend_from_slice(args);
        lab.exec_status(&Self::ns(lab, 0), &full)
    }

    /// Whether every member of `members` answers `etcdctl endpoint health` (a member is healthy when it serves a
    /// quorum read, so this also says the cluster has a quorum).
    pub fn healthy(&self, lab: &Lab, members: &[usize]) -> bool {
        self.etcdctl(lab, members, &["endpoint", "health"]).is_ok_and(|o| o.status.success())
    }

    /// Waits until every member of `members` is healthy; fails with the unhealthy ones' logs.
    pub fn wait_healthy(&self, lab: &Lab, members: &[usize], timeout: Duration) -> Result<Duration> {
        let what = format!("etcd members {members:?} healthy");
        crate::wait::wait_within(timeout, &what, || self.healthy(lab, members)).with_context(|| {
            let health = self
                .etcdctl(lab, members, &["endpoint", "health"])
                .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
                .unwrap_or_default();
            let logs: Vec<String> = members
                .iter()
                .map(|i| {
                    let log = self.log(lab, *i);
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    format!("--- {} ---\n{}", name(*i), tail.join("\n"))
                })
                .collect();
            format!("{health}\n{}", logs.join("\n"))
        })
    }

    /// `etcdctl put KEY VALUE` through `members`.
    pub fn put(&self, lab: &Lab, members: &[usize], key: &str, value: &str) -> Result<()> {
        let out = self.etcdctl(lab, members, &["put", key, value])?;
        if !out.status.success() {
            bail!("etcdctl put {key}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// `etcdctl get KEY --print-value-only` through `members`: the value, None when the key is absent.
    pub fn get(&self, lab: &Lab, members: &[usize], key: &str) -> Result<Option<String>> {
        let out = self.etcdctl(lab, members, &["get", key, "--print-value-only"])?;
        if !out.status.success() {
            bail!("etcdctl get {key}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let v = String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_string();
        Ok((!v.is_empty()).then_some(v))
    }
}

/// Member `i`'s etcd name: e1, e2, e3.
pub fn name(i: usize) -> String {
    format!("e{}", i + 1)
}

/// Member `i`'s lab host: etcd1, etcd2, etcd3 (not e1: the cluster's edges are nodes e1-e3).
fn host(i: usize) -> String {
    format!("etcd{}", i + 1)
}
