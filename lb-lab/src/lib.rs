//! A direct-routing lab in network namespaces: a client, the LB and N real servers on one bridge (in its own
//! namespace, so the host's interfaces are never touched). Everything it creates is removed on Drop.
pub mod browser;
pub mod cluster;
pub mod etcd;
pub mod ports;
pub mod wait;

use anyhow::{bail, Context, Result};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Subnet shared by every host of a lab (namespaces isolate labs from each other and from the host).
pub const NET: &str = "10.99.0";
pub const CLIENT_IP: &str = "10.99.0.10";
pub const LB_IP: &str = "10.99.0.2";
pub const VIP: &str = "10.99.0.100";
/// The same hosts over IPv6 (every lab is dual-stack): fd00:99::/64.
pub const CLIENT_IP6: &str = "fd00:99::10";
pub const LB_IP6: &str = "fd00:99::2";
pub const VIP6: &str = "fd00:99::100";

/// Prefix of every namespace a lab makes; `cleanup_stale` removes leftovers with it.
pub const NS_PREFIX: &str = "lbx";

/// ffmpeg publishing a live test stream (640x360 at 30 fps, H.264 with a keyframe every 2 s, AAC) as FLV to the
/// URL that follows these arguments: the demo's and the tests' publisher.
pub const FFMPEG_PUBLISH: &[&str] = &[
    "ffmpeg",
    "-hide_banner",
    "-loglevel",
    "error",
    "-re",
    "-f",
    "lavfi",
    "-i",
    "testsrc2=size=640x360:rate=30",
    "-f",
    "lavfi",
    "-i",
    "sine=frequency=1000",
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-tune",
    "zerolatency",
    "-g",
    "60",
    "-pix_fmt",
    "yuv420p",
    "-c:a",
    "aac",
    "-f",
    "flv",
];

pub fn real_ip(i: usize) -> String {
    format!("{NET}.{}", 11 + i)
}

pub fn real_ip6(i: usize) -> String {
    format!("fd00:99::{}", 11 + i)
}

#[derive(Clone, Debug)]
pub struct LabOptions {
    pub reals: usize,
    /// Put the VIP on the LB's interface (the IPVS way). Off when lbd is asked to do it (--manage-vips).
    pub vip_on_lb: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions { reals: 3, vip_on_lb: true }
    }
}

pub struct Lab {
    /// Unique per lab: namespaces are `{prefix}sw`, `{prefix}c`, `{prefix}lb`, `{prefix}r1`...
    pub prefix: String,
    pub dir: PathBuf,
    pub reals: usize,
    namespaces: Vec<String>,
    procs: Vec<(String, Child)>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs a command and fails with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

fn sh(args: &[&str]) -> Result<Output> {
    run(Command::new(args[0]).args(&args[1..]))
}

/// Removes namespaces left by labs whose process died without cleaning up: only ours (by prefix), and only those
/// whose creator (the pid in the name) is gone, so a lab that is running is never pulled from under its owner.
pub fn cleanup_stale() {
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            let Some(rest) = name.strip_prefix(NS_PREFIX) else { continue };
            let owner = rest.split('x').next().and_then(|p| p.parse::<u32>().ok());
            if owner.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
                continue;
            }
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// A file of this repository (scripts the lab runs), found from this crate's source directory.
pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Finds a binary of this workspace: $LB_BIN_DIR, else beside (or above) the running executable.
pub fn bin_path(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("LB_BIN_DIR") {
        return Path::new(&dir).join(name);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent();
    while let Some(d) = dir {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
        dir = d.parent();
        if d.file_name().is_some_and(|n| n == "target") {
            break;
        }
    }
    PathBuf::from(name)
}

impl Lab {
    pub fn up(opts: &LabOptions) -> Result<Lab> {
        let prefix = format!("{NS_PREFIX}{}x{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir)?;
        let mut lab = Lab { prefix, dir, reals: opts.reals, namespaces: Vec::new(), procs: Vec::new() };
        lab.build(opts).context("building the lab")?;
        Ok(lab)
    }

    pub fn ns(&self, host: &str) -> String {
        format!("{}{}", self.prefix, host)
    }
    pub fn client(&self) -> String {
        self.ns("c")
    }
    pub fn lb(&self) -> String {
        self.ns("lb")
    }
    pub fn real(&self, i: usize) -> String {
        self.ns(&format!("r{}", i + 1))
    }
    pub fn switch(&self) -> String {
        self.ns("sw")
    }

    fn add_ns(&mut self, name: &str) -> Result<()> {
        sh(&["ip", "netns", "add", name])?;
        self.namespaces.push(name.to_string());
        self.ip(name, &["link", "set", "lo", "up"])?;
        Ok(())
    }

    /// `ip -n NS args...`
    pub fn ip(&self, ns: &str, args: &[&str]) -> Result<Output> {
        run(Command::new("ip").arg("-n").arg(ns).args(args))
    }

    /// Runs a command inside a namespace and waits for it.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Result<Output> {
        run(Command::new("ip").args(["netns", "exec", ns]).args(args))
    }

    /// Like exec, but returns the output whatever the exit status.
    pub fn exec_status(&self, ns: &str, args: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {args:?} in {ns}"))
    }

    fn sysctl(&self, ns: &str, kv: &str) -> Result<()> {
        self.exec(ns, &["sysctl", "-q", "-w", kv]).map(|_| ())
    }

    /// Connects a host namespace to the bridge with a veth: `eth0` inside, `v<host>` on the switch.
    fn wire(&mut self, host: &str, addr: &str, addr6: &str) -> Result<()> {
        let ns = self.ns(host);
        self.add_ns(&ns)?;
        let sw = self.switch();
        let port = format!("v{host}");
        self.ip(&sw, &["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
        self.ip(&sw, &["link", "set", &port, "master", "br0", "up"])?;
        self.ip(&ns, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        // nodad: the address is usable at once (no duplicate-address detection delay).
        self.ip(&ns, &["addr", "add", &format!("{addr6}/64"), "dev", "eth0", "nodad"])?;
        self.ip(&ns, &["link", "set", "eth0", "up"])?;
        // Native XDP_TX of a frame that arrived with CHECKSUM_PARTIAL leaves with a bad checksum: send full sums.
        self.exec(&ns, &["ethtool", "-K", "eth0", "tx", "off"])?;
        Ok(())
    }

    fn build(&mut self, opts: &LabOptions) -> Result<()> {
        let sw = self.switch();
        self.add_ns(&sw)?;
        self.ip(&sw, &["link", "add", "br0", "type", "bridge"])?;
        self.ip(&sw, &["link", "set", "br0", "up"])?;
        self.wire("c", CLIENT_IP, CLIENT_IP6)?;
        self.wire("lb", LB_IP, LB_IP6)?;
        if opts.vip_on_lb {
            self.ip(&self.lb(), &["addr", "add", &format!("{VIP}/32"), "dev", "eth0"])?;
            // Deprecated (preferred_lft 0) so the LB never picks the VIP as the source of its own connections
            // (health checks): IPv6 source selection would prefer it, and a real answers its VIP locally.
            self.ip(
                &self.lb(),
                &["addr", "add", &format!("{VIP6}/128"), "dev", "eth0", "nodad", "preferred_lft", "0"],
            )?;
        }
        for i in 0..opts.reals {
            let host = format!("r{}", i + 1);
            self.wire(&host, &real_ip(i), &real_ip6(i))?;
            let ns = self.ns(&host);
            // LVS-DR real server: the VIP on lo, and never answer or announce ARP for it. IPv6 needs no sysctl:
            // Linux answers neighbour solicitations only for addresses of the interface they arrive on.
            self.ip(&ns, &["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            self.ip(&ns, &["addr", "add", &format!("{VIP6}/128"), "dev", "lo"])?;
            for kv in [
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
                "net.ipv4.conf.eth0.arp_ignore=1",
                "net.ipv4.conf.eth0.arp_announce=2",
            ] {
                self.sysctl(&ns, kv)?;
            }
        }
        for ns in self.namespaces.clone() {
            // Tests open many short connections: let TIME_WAIT ports be reused.
            let _ = self.sysctl(&ns, "net.ipv4.tcp_tw_reuse=1");
        }
        Ok(())
    }

    /// Starts a long-running process in a namespace; it is killed when the lab goes. Output goes to `<dir>/<log>`.
    pub fn spawn(&mut self, ns: &str, log: &str, args: &[&str]) -> Result<u32> {
        let path = self.dir.join(log);
        let out = std::fs::File::create(&path)?;
        let err = out.try_clone()?;
        // Own process group: a Ctrl-C at the terminal reaches the lab's owner, which stops children in order.
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {args:?} in {ns}"))?;
        let pid = child.id();
        self.procs.push((log.to_string(), child));
        Ok(pid)
    }

    /// Like spawn, then waits until the process's log contains `ready`; fails with the log if the process exits
    /// first or `timeout` passes.
    pub fn spawn_ready(&mut self, ns: &str, log: &str, args: &[&str], ready: &str, timeout: Duration) -> Result<u32> {
        let pid = self.spawn(ns, log, args)?;
        let (up, _) = wait::wait_for(timeout, &format!("{} to log {ready:?}", args[0]), || {
            if self.log(log).contains(ready) {
                Some(true)
            } else {
                (!self.alive(pid)).then_some(false)
            }
        })
        .with_context(|| self.log(log))?;
        if !up {
            bail!("{} exited during start-up:\n{}", args[0], self.log(log));
        }
        Ok(pid)
    }

    /// Sends `sig` to a process started with spawn and waits for it (up to 10 s, then SIGKILL).
    pub fn stop(&mut self, pid: u32, sig: i32) -> Result<std::process::ExitStatus> {
        let i = self.procs.iter().position(|(_, c)| c.id() == pid).context("no such lab process")?;
        let (_, mut child) = self.procs.remove(i);
        // SAFETY: signalling a child we started and have not reaped.
        unsafe { libc::kill(pid as i32, sig) };
        match wait::wait_for(Duration::from_secs(10), "the process to exit", || child.try_wait().transpose()) {
            Ok((st, _)) => Ok(st?),
            Err(_) => {
                let _ = child.kill();
                Ok(child.wait()?)
            }
        }
    }

    /// Waits up to `timeout` for a spawned process to exit by itself.
    pub fn wait(&mut self, pid: u32, timeout: Duration) -> Result<std::process::ExitStatus> {
        let i = self.procs.iter().position(|(_, c)| c.id() == pid).context("no such lab process")?;
        let child = &mut self.procs[i].1;
        let (st, _) = wait::wait_for(timeout, &format!("process {pid} to exit"), || child.try_wait().transpose())?;
        self.procs.remove(i);
        Ok(st?)
    }

    /// The pid of the running process started with spawn whose output goes to `log`.
    pub fn pid_of(&mut self, log: &str) -> Option<u32> {
        for (l, c) in self.procs.iter_mut() {
            if l == log && matches!(c.try_wait(), Ok(None)) {
                return Some(c.id());
            }
        }
        None
    }

    /// Whether a spawned process is still running.
    pub fn alive(&mut self, pid: u32) -> bool {
        self.procs.iter_mut().any(|(_, c)| c.id() == pid && matches!(c.try_wait(), Ok(None)))
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// Starts the lab's HTTP server on every real (answers with its name: r1, r2, ...).
    pub fn start_http(&mut self, port: u16) -> Result<()> {
        let httpd = bin_path("lab-httpd");
        for i in 0..self.reals {
            let ns = self.real(i);
            let name = format!("r{}", i + 1);
            self.spawn(
                &ns,
                &format!("httpd-{name}.log"),
                &[httpd.to_str().unwrap(), "--name", &name, "--port", &port.to_string()],
            )?;
        }
        for i in 0..self.reals {
            self.wait_port(&self.real(i), &real_ip(i), port)?;
        }
        Ok(())
    }

    /// Starts `lab-udp serve` on every real: each datagram to `port` is answered with the real's name.
    pub fn start_udp(&mut self, port: u16) -> Result<()> {
        let udp = bin_path("lab-udp");
        for i in 0..self.reals {
            let ns = self.real(i);
            let name = format!("r{}", i + 1);
            let args = [udp.to_str().unwrap(), "serve", "--name", &name, "--port", &port.to_string()];
            self.spawn_ready(&ns, &format!("udp-{name}.log"), &args, "serving", Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// Adds a host `host` on the bridge with these addresses (another LB node, say); returns its namespace.
    pub fn add_host(&mut self, host: &str, addr: &str, addr6: &str) -> Result<String> {
        self.wire(host, addr, addr6)?;
        let ns = self.ns(host);
        let _ = self.sysctl(&ns, "net.ipv4.tcp_tw_reuse=1");
        Ok(ns)
    }

    /// Adds a router `rt` on the bridge (10.99.0.1, fd00:99::1) and a client `c2` behind it (10.98.0.10,
    /// fd00:98::10), whose link from the router has `mtu` (the client's own side stays at 1500, so its TCP MSS
    /// does not reveal the bottleneck: path-MTU discovery has to). Reals route the client's subnets via the
    /// router. Returns the client's namespace.
    pub fn add_routed_client(&mut self, mtu: u32) -> Result<String> {
        let rt = self.ns("rt");
        self.wire("rt", "10.99.0.1", "fd00:99::1")?;
        let c2 = self.ns("c2");
        self.add_ns(&c2)?;
        self.ip(&rt, &["link", "add", "down0", "type", "veth", "peer", "name", "eth0", "netns", &c2])?;
        self.ip(&rt, &["addr", "add", "10.98.0.1/24", "dev", "down0"])?;
        self.ip(&rt, &["addr", "add", "fd00:98::1/64", "dev", "down0", "nodad"])?;
        self.ip(&rt, &["link", "set", "down0", "mtu", &mtu.to_string(), "up"])?;
        self.ip(&c2, &["addr", "add", "10.98.0.10/24", "dev", "eth0"])?;
        self.ip(&c2, &["addr", "add", "fd00:98::10/64", "dev", "eth0", "nodad"])?;
        self.ip(&c2, &["link", "set", "eth0", "up"])?;
        self.ip(&c2, &["route", "add", "default", "via", "10.98.0.1"])?;
        self.ip(&c2, &["-6", "route", "add", "default", "via", "fd00:98::1"])?;
        // Full checksums from the client: its packets cross the router to a native-mode XDP_TX (see `wire`).
        self.exec(&c2, &["ethtool", "-K", "eth0", "tx", "off"])?;
        self.exec(&rt, &["ethtool", "-K", "down0", "tx", "off"])?;
        self.sysctl(&rt, "net.ipv4.ip_forward=1")?;
        self.sysctl(&rt, "net.ipv6.conf.all.forwarding=1")?;
        for i in 0..self.reals {
            let ns = self.real(i);
            self.ip(&ns, &["route", "add", "10.98.0.0/24", "via", "10.99.0.1"])?;
            self.ip(&ns, &["-6", "route", "add", "fd00:98::/64", "via", "fd00:99::1"])?;
        }
        Ok(c2)
    }

    /// Waits until something accepts TCP on addr:port, seen from inside `ns`.
    pub fn wait_port(&self, ns: &str, addr: &str, port: u16) -> Result<()> {
        let what = format!("something to listen on {addr}:{port} in {ns}");
        wait::wait_within(Duration::from_secs(10), &what, || {
            self.exec_status(ns, &["bash", "-c", &format!("exec 3<>/dev/tcp/{addr}/{port}")])
                .is_ok_and(|out| out.status.success())
        })
        .map(|_| ())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in self.procs.iter_mut() {
            // SAFETY: signalling children we started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, child) in self.procs.iter_mut() {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Processes a provider started for this lab carry its prefix in their environment (LAB_PREFIX): ours too,
        // wherever they run, even in a namespace already gone. Again until a pass finds none, for a provider that
        // forks just then (a pass that finds none leaves nothing that could fork).
        for _ in 0..5 {
            if kill_tagged(&format!("LAB_PREFIX={}", self.prefix)) == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Namespaces something else made for this lab (a provider's edges): their processes are ours too.
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or("");
                if name.starts_with(&self.prefix) && !self.namespaces.iter().any(|n| n == name) {
                    kill_in_netns(name);
                    let _ = Command::new("ip").args(["netns", "del", name]).status();
                }
            }
        }
        // Processes started by hand in the lab's own namespaces (the demo prints commands that restart an origin
        // or an smd there): deleting a namespace does not end them, and Ctrl-C promises to remove everything.
        for ns in &self.namespaces {
            kill_in_netns(ns);
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if std::env::var_os("LB_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// SIGKILLs every process in namespace `ns` (one of a lab's: every process there was started for the lab).
fn kill_in_netns(ns: &str) {
    if let Ok(pids) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            // SAFETY: a process in this lab's namespace, started for this lab.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// SIGKILLs every process whose environment holds `tag` (`NAME=VALUE`); how many it found.
fn kill_tagged(tag: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    let me = std::process::id();
    let mut found = 0;
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(e.path().join("environ")) else { continue };
        if env.split(|b| *b == 0).any(|kv| kv == tag.as_bytes()) {
            // SAFETY: a process started for this lab (it carries the lab's tag).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            found += 1;
        }
    }
    found
}

/// Forwards TCP from `listen` in the host's own namespace (loopback only) to `target` inside namespace `ns`, so a
/// browser on the host reaches a lab service (the demo's console). Runs until the process ends.
pub fn forward(listen: std::net::SocketAddr, ns: &str, target: std::net::SocketAddr) -> Result<()> {
    if !listen.ip().is_loopback() {
        bail!("forward listens on loopback only, not {listen}");
    }
    let listener = std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let netns = PathBuf::from(format!("/run/netns/{ns}"));
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let netns = netns.clone();
            std::thread::spawn(move || {
                // This thread enters the lab namespace to connect; the socket stays there, the client stays here.
                let Ok(f) = std::fs::File::open(&netns) else { return };
                // SAFETY: setns on a valid namespace fd affects only this thread.
                if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) } != 0 {
                    return;
                }
                let Ok(upstream) = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(3)) else {
                    return;
                };
                let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else { return };
                let t = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
                let (mut c, mut u) = (client, upstream);
                let _ = std::io::copy(&mut c, &mut u);
                let _ = u.shutdown(std::net::Shutdown::Write);
                let _ = t.join();
            });
        }
    });
    Ok(())
}
