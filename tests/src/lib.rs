//! Helpers for the end-to-end tests: a lab with lbd running on the LB, lbctl calls, and traffic from the client.
pub mod fixture;
pub mod malformed;
pub mod packet;
pub mod xdpobj;

use anyhow::{Context, Result};
use lb_lab::{bin_path, Lab};
use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

pub use lb_lab::{real_ip, LabOptions, CLIENT_IP, LB_IP, VIP};

/// Attach mode under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Native,
    Skb,
}

impl Mode {
    pub fn flag(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Skb => "skb",
        }
    }
}

/// A lab whose LB runs lbd.
pub struct LbLab {
    pub lab: Lab,
    pub mode: Mode,
    pub lbd_pid: Option<u32>,
    lbd_runs: u32,
}

impl LbLab {
    /// Builds the lab, starts the reals' HTTP servers and (native mode) the XDP pass program on the LB's switch port.
    pub fn new(mode: Mode, reals: usize) -> Result<Self> {
        Self::with_options(mode, &LabOptions { reals, vip_on_lb: true })
    }

    pub fn with_options(mode: Mode, opts: &LabOptions) -> Result<Self> {
        let mut lab = Lab::up(opts)?;
        lab.start_http(80)?;
        if mode == Mode::Native {
            let sw = lab.switch();
            let pass = bin_path("lb-xdp-pass");
            let args = [pass.to_str().unwrap(), "--iface", "vlb", "--xdp-mode", "native"];
            lab.spawn_ready(&sw, "xdp-pass.log", &args, "attached", Duration::from_secs(10))?;
        }
        Ok(LbLab { lab, mode, lbd_pid: None, lbd_runs: 0 })
    }

    pub fn socket(&self) -> String {
        self.lab.dir.join("lbd.sock").display().to_string()
    }

    pub fn state_file(&self) -> String {
        self.lab.dir.join("state.toml").display().to_string()
    }

    /// Writes a config with a VIP:80 service over the given reals.
    pub fn write_config(&self, reals: &[usize]) -> Result<String> {
        let mut s = format!("[[service]]\nvip = \"{VIP}:80\"\nproto = \"tcp\"\n");
        for i in reals {
            s.push_str(&format!("[[service.real]]\naddr = \"{}\"\nweight = 1\n", real_ip(*i)));
        }
        let path = self.lab.dir.join("lb.toml");
        std::fs::write(&path, s)?;
        Ok(path.display().to_string())
    }

    /// Starts lbd on the LB with the lab's socket and state file, plus `extra` flags; waits until it serves.
    pub fn start_lbd(&mut self, extra: &[&str]) -> Result<u32> {
        let lbd = bin_path("lbd");
        let sock = self.socket();
        let state = self.state_file();
        let mut args = vec![
            lbd.to_str().unwrap(),
            "--iface",
            "eth0",
            "--socket",
            &sock,
            "--state",
            &state,
            "--xdp-mode",
            self.mode.flag(),
        ];
        // Small maps keep tests quick; a test that passes its own size wins.
        for (flag, default) in [("--conn-table-size", "65536"), ("--max-services", "8")] {
            if !extra.contains(&flag) {
                args.extend_from_slice(&[flag, default]);
            }
        }
        args.extend_from_slice(extra);
        self.lbd_runs += 1;
        let log = format!("lbd-{}.log", self.lbd_runs);
        let lb = self.lab.lb();
        let pid = self.lab.spawn_ready(&lb, &log, &args, "lbd ready", Duration::from_secs(30))?;
        self.lbd_pid = Some(pid);
        Ok(pid)
    }

    pub fn stop_lbd(&mut self, sig: i32) -> Result<()> {
        if let Some(pid) = self.lbd_pid.take() {
            self.lab.stop(pid, sig)?;
        }
        Ok(())
    }

    pub fn lbd_log(&self) -> String {
        self.lab.log(&format!("lbd-{}.log", self.lbd_runs))
    }

    /// Runs lbctl against this lab's lbd.
    pub fn lbctl(&self, args: &[&str]) -> Output {
        Command::new(bin_path("lbctl")).arg("--socket").arg(self.socket()).args(args).output().expect("running lbctl")
    }

    /// lbctl that must succeed; returns stdout.
    pub fn lbctl_ok(&self, args: &[&str]) -> String {
        let out = self.lbctl(args);
        assert!(
            out.status.success(),
            "lbctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn list_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.lbctl_ok(&["list", "--json"])).expect("list --json parses")
    }

    /// `n` new connections to the VIP from the client; how many each real answered.
    pub fn spread(&self, n: usize) -> Result<BTreeMap<String, usize>> {
        let url = format!("http://{VIP}/");
        let script = format!("for i in $(seq {n}); do curl -sS --max-time 3 {url} || echo FAIL; done");
        let out = self.lab.exec(&self.lab.client(), &["bash", "-c", &script])?;
        let mut m = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            *m.entry(line.trim().to_string()).or_insert(0) += 1;
        }
        Ok(m)
    }
}

/// Polls `f` for up to 10 s (the lab's [`lb_lab::wait::wait_within`] with the lbd tests' usual limit).
pub fn wait_for(f: impl FnMut() -> bool, what: &str) -> Result<()> {
    lb_lab::wait::wait_within(Duration::from_secs(10), what, f).map(|_| ())
}

/// Fails the test early with a clear message when not root (namespaces and BPF need it).
pub fn require_root() {
    // SAFETY: trivial libc call.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests need root (namespaces, XDP); run `cargo xtask test` as root"
    );
}

pub fn context<T>(r: Result<T>, what: &str) -> T {
    r.context(what.to_string()).unwrap_or_else(|e| panic!("{e:#}"))
}

pub mod health;

/// The streaming cluster of `lb_lab::cluster` on a native-mode lab with `opts.edges` edges: lbd runs with the edges'
/// services (no reals: the manager adds them) and its HTTP API, then the camera, origins, manager and edges start.
pub fn cluster_lab(opts: lb_lab::cluster::Options) -> (LbLab, lb_lab::cluster::Cluster) {
    use lb_lab::cluster::Cluster;
    let mut l = context(LbLab::new(Mode::Native, opts.edges), "lab");
    let mut c = context(Cluster::new(&l.lab, opts), "cluster");
    let cfg = l.lab.dir.join("lbd.toml");
    context(std::fs::write(&cfg, Cluster::lbd_config()).map_err(anyhow::Error::from), "lbd config");
    let mut flags = vec!["--config".to_string(), cfg.display().to_string()];
    flags.extend(c.lbd_api_flags());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    context(l.start_lbd(&flags), "lbd");
    context(c.start(&mut l.lab), "cluster");
    (l, c)
}
