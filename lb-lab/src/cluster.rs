//! The streaming cluster on top of a lab, shared by the demo and the tests: a camera host (an RTMP source fed by
//! ffmpeg), origin hosts forming one origin group, an edge on every real, and the stream manager on the LB host
//! driving them and lbd. lbd itself is started by the caller (with [`Cluster::lbd_config`] and the token).
//! With [`Options::ha`], the manager is two or three smd on their own hosts (m1-m3) sharing a three-member etcd
//! (`crate::etcd`): one leads, the others follow, and the relays name every one of them.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::etcd::Etcd;
use crate::{bin_path, real_ip, Lab, LB_IP, VIP};

/// The camera host: an RTMP origin fed by ffmpeg (live/cam1), what an encoder or IP camera would be.
pub const CAMERA_IP: &str = "10.99.0.30";
/// Origins are 10.99.0.21, .22, .23...
pub fn origin_ip(i: usize) -> String {
    format!("10.99.0.{}", 21 + i)
}
/// The origin group's ingest address: an LB service whose only real is the active origin.
pub const INGEST_VIP: &str = "10.99.0.101";
/// The manager's API (on the LB host, beside lbd's API).
pub const MANAGER_PORT: u16 = 9300;
/// lbd's HTTP API.
pub const LBD_API_PORT: u16 = 9400;
/// Every relay's API port.
pub const RELAY_API_PORT: u16 = 8081;
/// The edges' HTTP media port (HTTP-FLV, RTMPT) behind VIP:8080.
pub const HTTP_PORT: u16 = 8080;

#[derive(Clone, Debug)]
pub struct Options {
    /// Origins in the group (2: N+1; 3: N+2), priorities 100, 50, 10.
    pub origins: usize,
    pub failback: bool,
    pub keepalive: &'static str,
    pub failover_time: &'static str,
    pub drain_timeout: &'static str,
    /// How long edge players wait without a source (must cover a failover).
    pub edge_grace: &'static str,
    /// Add an RTSP camera (GStreamer's gst-rtsp-server) as a second source, `live/rtspcam`.
    pub rtsp_camera: bool,
    /// A second group "tv" (app tv, source tv/ch1) whose members are o3 (100) and o2 (50): o2 is then a standby
    /// shared by both groups. Needs three origins.
    pub second_group: bool,
    /// The console's sample interval and refresh.
    pub console_refresh: &'static str,
    /// Always-on edges (one per real of the lab).
    pub edges: usize,
    /// Autoscaling of the edge pool through the namespace provider (scripts/providers/netns-edge).
    pub scale: Option<ScaleOptions>,
    /// Several smd on an etcd store instead of one smd with a state file on the LB host.
    pub ha: Option<HaOptions>,
}

/// The manager in high availability: `managers` smd (m1, m2, m3 at 10.99.0.61-63), each with its own config file
/// (its name, listen and advertise address, `[store] kind = "etcd"` over the lab's three etcd members).
#[derive(Clone, Debug)]
pub struct HaOptions {
    /// 2 or 3.
    pub managers: usize,
    /// The leader's lease: a follower leads within this after the leader's death.
    pub lease_ttl: &'static str,
}

/// smd `k`'s host address in high availability: 10.99.0.61, .62, .63.
pub fn smd_ip(k: usize) -> String {
    format!("10.99.0.{}", 61 + k)
}

/// smd `k`'s API URL in high availability (what relays and the other smd use).
pub fn smd_url(k: usize) -> String {
    format!("http://{}:{MANAGER_PORT}", smd_ip(k))
}

/// The pool's autoscaling policy in the lab: bit rate per edge, min/max, timings (see manager/README.md).
#[derive(Clone, Debug)]
pub struct ScaleOptions {
    pub min: usize,
    pub max: usize,
    /// Bit/s one edge carries.
    pub capacity: u64,
    pub scale_out_at: f64,
    pub scale_in_at: f64,
    pub cooldown: &'static str,
    pub warm_up: &'static str,
    pub min_lifetime: &'static str,
    /// Use this provider instead of the namespace one (a failing or hanging one, in tests).
    pub provider: Option<std::path::PathBuf>,
    pub provider_timeout: &'static str,
}

/// Addresses the namespace provider gives started edges.
pub fn scaled_edge_ip(i: usize) -> String {
    format!("10.99.0.{}", 41 + i)
}

impl Default for Options {
    fn default() -> Self {
        Options {
            origins: 2,
            failback: true,
            keepalive: "1s",
            failover_time: "3s",
            drain_timeout: "60s",
            edge_grace: "30s",
            rtsp_camera: false,
            second_group: false,
            console_refresh: "15s",
            edges: 3,
            scale: None,
            ha: None,
        }
    }
}

pub struct Cluster {
    pub opts: Options,
    pub token: String,
    pub token_file: PathBuf,
    pub manager_config: PathBuf,
    pub origin_pids: Vec<Option<u32>>,
    pub edge_pids: Vec<u32>,
    pub manager_pid: Option<u32>,
    manager_runs: u32,
    origin_runs: Vec<u32>,
    /// High availability: the etcd cluster, then per smd its pid (while it runs), config file and runs.
    pub etcd: Option<Etcd>,
    pub smd_pids: Vec<Option<u32>>,
    pub smd_configs: Vec<PathBuf>,
    smd_runs: Vec<u32>,
}

impl Cluster {
    /// The token every API of the cluster shares (lbd's, the manager's, the relays').
    pub const TOKEN: &'static str = "lab-cluster-token-0123456789";

    /// Writes the token file; call before starting lbd (it needs the file) and then [`Cluster::start`].
    pub fn new(lab: &Lab, opts: Options) -> Result<Cluster> {
        let token_file = lab.dir.join("cluster.token");
        std::fs::write(&token_file, format!("{}\n", Self::TOKEN))?;
        let smds = match &opts.ha {
            None => 0,
            Some(ha) if (2..=3).contains(&ha.managers) => ha.managers,
            Some(ha) => bail!("the lab runs 2 or 3 managers in high availability, not {}", ha.managers),
        };
        Ok(Cluster {
            etcd: None,
            smd_pids: vec![None; smds],
            smd_configs: (0..smds).map(|k| lab.dir.join(format!("manager-m{}.toml", k + 1))).collect(),
            smd_runs: vec![0; smds],
            origin_pids: vec![None; opts.origins],
            origin_runs: vec![0; opts.origins],
            opts,
            token: Self::TOKEN.into(),
            token_file,
            manager_config: lab.dir.join("manager.toml"),
            edge_pids: Vec::new(),
            manager_pid: None,
            manager_runs: 0,
        })
    }

    /// lbd's services for the edges, without reals: the manager adds each edge once it is up.
    pub fn lbd_config() -> String {
        format!(
            "[[service]]\nvip = \"{VIP}:1935\"\n[service.check]\nkind = \"rtmp\"\ninterval = \"500ms\"\ntimeout = \"400ms\"\n\
             [[service]]\nvip = \"{VIP}:{HTTP_PORT}\"\npersistent = 60\n[service.check]\nkind = \"http\"\npath = \"/healthz\"\n\
             interval = \"500ms\"\ntimeout = \"400ms\"\n\
             [[service]]\nvip = \"{INGEST_VIP}:1935\"\n[service.check]\nkind = \"rtmp\"\ninterval = \"500ms\"\ntimeout = \"400ms\"\n"
        )
    }

    /// lbd's flags for its HTTP API with the cluster token.
    pub fn lbd_api_flags(&self) -> Vec<String> {
        vec![
            "--api".into(),
            format!("{LB_IP}:{LBD_API_PORT}"),
            "--api-token-file".into(),
            self.token_file.display().to_string(),
        ]
    }

    /// The manager's config: the LB host's smd with a state file, or (`smd` = Some(k)) smd k of the high
    /// availability set, with its own name and address and the etcd store.
    fn manager_toml(&self, lab: &Lab, smd: Option<usize>) -> String {
        let head = match smd {
            None => format!(
                "listen = \"{LB_IP}:{MANAGER_PORT}\"\ntoken_file = \"{}\"\nstate_file = \"{}\"\n",
                self.token_file.display(),
                lab.dir.join("manager-state.json").display(),
            ),
            Some(k) => format!(
                "name = \"m{}\"\nlisten = \"{}:{MANAGER_PORT}\"\nadvertise = \"{}\"\ntoken_file = \"{}\"\n",
                k + 1,
                smd_ip(k),
                smd_url(k),
                self.token_file.display(),
            ),
        };
        let mut s = format!(
            "{head}keepalive = \"{}\"\n\
             failover_time = \"{}\"\ndrain_timeout = \"{}\"\nconsole_refresh = \"{}\"\n\n[lb]\napi = \"http://{LB_IP}:{LBD_API_PORT}\"\n\
             services = [\"{VIP}:1935\", \"{VIP}:{HTTP_PORT}\"]\n\n[[pool]]\nname = \"edges\"\n",
            self.opts.keepalive,
            self.opts.failover_time,
            self.opts.drain_timeout,
            self.opts.console_refresh,
        );
        match &self.opts.scale {
            None => s.push_str("min = 2\n"),
            Some(sc) => {
                let provider = sc.provider.clone().unwrap_or_else(|| crate::repo_file("scripts/providers/netns-edge"));
                let addrs: Vec<String> = (0..8).map(scaled_edge_ip).collect();
                s.push_str(&format!(
                    "min = {}\nmax = {}\n[pool.scale]\ncapacity = {}\nscale_out_at = {}\nscale_in_at = {}\ncooldown = \"{}\"\n\
                     warm_up = \"{}\"\nmin_lifetime = \"{}\"\nprovider = \"{}\"\nprovider_timeout = \"{}\"\n\
                     [pool.scale.env]\nLAB_PREFIX = \"{}\"\nLAB_DIR = \"{}\"\nEDGE_ADDRS = \"{}\"\nVIP = \"{VIP}\"\nRELAY = \"{}\"\n",
                    sc.min,
                    sc.max,
                    sc.capacity,
                    sc.scale_out_at,
                    sc.scale_in_at,
                    sc.cooldown,
                    sc.warm_up,
                    sc.min_lifetime,
                    provider.display(),
                    sc.provider_timeout,
                    lab.prefix,
                    lab.dir.display(),
                    addrs.join(" "),
                    bin_path("relay").display(),
                ));
            }
        }
        for i in 0..self.opts.origins {
            s.push_str(&format!(
                "\n[[node]]\nname = \"o{}\"\nrole = \"origin\"\napi = \"http://{ip}:{RELAY_API_PORT}\"\nrtmp = \"{ip}:1935\"\n",
                i + 1,
                ip = origin_ip(i)
            ));
        }
        let members: Vec<String> = (0..self.opts.origins)
            .map(|i| format!("{{ node = \"o{}\", priority = {} }}", i + 1, [100, 50, 10][i % 3]))
            .collect();
        s.push_str(&format!(
            "\n[[group]]\nname = \"cams\"\napp = \"live\"\nfailback = {}\nreplication = \"pre-pull\"\ningest = \"{INGEST_VIP}:1935\"\nmembers = [{}]\n\
             sources = [{{ key = \"cam1\", url = \"rtmp://{CAMERA_IP}:1935/live/cam1\" }}{}]\n",
            self.opts.failback,
            members.join(", "),
            if self.opts.rtsp_camera {
                format!(", {{ key = \"rtspcam\", url = \"rtsp://{CAMERA_IP}:8554/cam\" }}")
            } else {
                String::new()
            }
        ));
        if self.opts.second_group {
            s.push_str(&format!(
                "\n[[group]]\nname = \"tv\"\napp = \"tv\"\nfailback = {}\nmembers = [{{ node = \"o3\", priority = 100 }}, \
                 {{ node = \"o2\", priority = 50 }}]\nsources = [{{ key = \"ch1\", url = \"rtmp://{CAMERA_IP}:1935/tv/ch1\" }}]\n",
                self.opts.failback
            ));
        }
        if let (Some(ha), Some(_)) = (&self.opts.ha, smd) {
            // One prefix per lab: two labs never share a store, whatever etcd they reach.
            let eps: Vec<String> = crate::etcd::endpoints().iter().map(|e| format!("\"{e}\"")).collect();
            s.push_str(&format!(
                "\n[store]\nkind = \"etcd\"\nendpoints = [{}]\nprefix = \"/{}/smd\"\nlease_ttl = \"{}\"\n",
                eps.join(", "),
                lab.prefix,
                ha.lease_ttl
            ));
        }
        s
    }

    /// The camera, the origins, the manager, then the edges (which register themselves).
    pub fn start(&mut self, lab: &mut Lab) -> Result<()> {
        let cam = lab.add_host("cam", CAMERA_IP, "fd00:99::30")?;
        let relay = bin_path("relay");
        let relay = relay.to_str().unwrap();
        lab.spawn(&cam, "camera.log", &[relay, "origin", "--listen", "0.0.0.0:1935"])?;
        lab.wait_port(&cam, CAMERA_IP, 1935)?;
        let url = format!("rtmp://{CAMERA_IP}:1935/live/cam1");
        let publisher: Vec<&str> = crate::FFMPEG_PUBLISH.iter().copied().chain([url.as_str()]).collect();
        lab.spawn(&cam, "camera-ffmpeg.log", &publisher)?;
        if self.opts.second_group {
            // A small second channel: the second group's source.
            let url = format!("rtmp://{CAMERA_IP}:1935/tv/ch1");
            let args = [
                "ffmpeg",
                "-hide_banner",
                "-loglevel",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x180:rate=15",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-g",
                "15",
                "-f",
                "flv",
                &url,
            ];
            lab.spawn(&cam, "camera-tv.log", &args)?;
        }
        if self.opts.rtsp_camera {
            let script = crate::repo_file("scripts/rtsp-camera.py");
            let script = script.to_str().unwrap();
            lab.spawn(&cam, "rtsp-camera.log", &["/usr/bin/python3", script, "--port", "8554", "--path", "/cam"])?;
            lab.wait_port(&cam, CAMERA_IP, 8554)?;
        }
        // The ingest address: on the LB (lbd --manage-vips may have put it there already) and, LVS-DR style, on
        // every origin's lo without ARP.
        lab.ip(&lab.lb(), &["addr", "replace", &format!("{INGEST_VIP}/32"), "dev", "eth0"])?;
        for i in 0..self.opts.origins {
            let ns = lab.add_host(&format!("o{}", i + 1), &origin_ip(i), &format!("fd00:99::{}", 21 + i))?;
            lab.ip(&ns, &["addr", "add", &format!("{INGEST_VIP}/32"), "dev", "lo"])?;
            for kv in ["net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"] {
                lab.exec(&ns, &["sysctl", "-q", "-w", kv])?;
            }
            self.start_origin(lab, i)?;
        }
        if self.opts.ha.is_some() {
            self.start_ha_managers(lab)?;
        } else {
            std::fs::write(&self.manager_config, self.manager_toml(lab, None))?;
            self.start_manager(lab)?;
        }
        for i in 0..lab.reals {
            let ns = lab.real(i);
            let ip = real_ip(i);
            let mut args = self.relay_args("edge", &ip, &format!("e{}", i + 1));
            let http = format!("0.0.0.0:{HTTP_PORT}");
            args.extend(["--http-listen", &http, "--grace-period", self.opts.edge_grace].map(String::from));
            // The HLS player page's hls.js, when `cargo xtask setup` vendored it.
            let hls_js = crate::browser::hls_js();
            if hls_js.is_file() {
                args.extend(["--hls-js".to_string(), hls_js.display().to_string()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let pid = lab.spawn(&ns, &format!("edge{}.log", i + 1), &args)?;
            self.edge_pids.push(pid);
            lab.wait_port(&ns, &ip, 1935)?;
        }
        Ok(())
    }

    /// A relay of the cluster: its role, RTMP on :1935, its API on `ip` with the cluster token, registered with
    /// the manager under `name`.
    fn relay_args(&self, role: &str, ip: &str, name: &str) -> Vec<String> {
        let relay = bin_path("relay").display().to_string();
        let api = format!("{ip}:{RELAY_API_PORT}");
        let manager = match self.opts.ha {
            None => format!("http://{LB_IP}:{MANAGER_PORT}"),
            Some(_) => (0..self.smd_pids.len()).map(smd_url).collect::<Vec<_>>().join(","),
        };
        [&relay, role, "--listen", "0.0.0.0:1935", "--api", &api, "--api-token", &self.token, "--manager", &manager]
            .into_iter()
            .chain(["--node-name", name, "--advertise", ip])
            .map(String::from)
            .collect()
    }

    /// Starts (or restarts) origin `i` on its host.
    pub fn start_origin(&mut self, lab: &mut Lab, i: usize) -> Result<u32> {
        let ns = lab.ns(&format!("o{}", i + 1));
        let ip = origin_ip(i);
        self.origin_runs[i] += 1;
        let args = self.relay_args("origin", &ip, &format!("o{}", i + 1));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let pid = lab.spawn(&ns, &format!("origin{}-{}.log", i + 1, self.origin_runs[i]), &args)?;
        self.origin_pids[i] = Some(pid);
        lab.wait_port(&ns, &ip, 1935)?;
        Ok(pid)
    }

    /// Kills origin `i` with SIGKILL (a crash, not a shutdown).
    pub fn kill_origin(&mut self, lab: &mut Lab, i: usize) -> Result<()> {
        if let Some(pid) = self.origin_pids[i].take() {
            lab.stop(pid, libc::SIGKILL)?;
        }
        Ok(())
    }

    pub fn start_manager(&mut self, lab: &mut Lab) -> Result<u32> {
        self.manager_runs += 1;
        let smd = bin_path("smd");
        let lb = lab.lb();
        let pid = lab.spawn_ready(
            &lb,
            &format!("smd-{}.log", self.manager_runs),
            &[smd.to_str().unwrap(), "--config", self.manager_config.to_str().unwrap()],
            "stream manager API listening",
            Duration::from_secs(10),
        )?;
        self.manager_pid = Some(pid);
        Ok(pid)
    }

    pub fn stop_manager(&mut self, lab: &mut Lab, sig: i32) -> Result<()> {
        if let Some(pid) = self.manager_pid.take() {
            lab.stop(pid, sig)?;
        }
        Ok(())
    }

    /// The manager's log; in high availability every smd's current log, each under a header line.
    pub fn manager_log(&self, lab: &Lab) -> String {
        if self.opts.ha.is_some() {
            return (0..self.smd_pids.len())
                .map(|k| format!("--- smd m{} ---\n{}", k + 1, self.smd_log(lab, k)))
                .collect::<Vec<_>>()
                .join("\n");
        }
        lab.log(&format!("smd-{}.log", self.manager_runs))
    }

    /// `GET` (or `POST` with `post`) on an API from the LB host, with the cluster token; the JSON answer.
    pub fn call(&self, lab: &Lab, method: &str, url: &str) -> Result<serde_json::Value> {
        let auth = format!("Authorization: Bearer {}", self.token);
        let out = lab.exec_status(&lab.lb(), &["curl", "-sS", "--max-time", "3", "-X", method, "-H", &auth, url])?;
        if !out.status.success() {
            bail!("{method} {url}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{method} {url}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// The manager's `/api/v1/{path}`; in high availability, the leader's (or a running smd's while none leads).
    pub fn manager(&self, lab: &Lab, path: &str) -> Result<serde_json::Value> {
        self.call(lab, "GET", &format!("{}/api/v1/{path}", self.manager_api(lab)))
    }

    pub fn manager_post(&self, lab: &Lab, path: &str) -> Result<serde_json::Value> {
        self.call(lab, "POST", &format!("{}/api/v1/{path}", self.manager_api(lab)))
    }

    /// The manager API the helpers ask: the LB host's smd, or in high availability the smd that says it leads,
    /// else the first one running (a follower serves reads and forwards writes).
    pub fn manager_api(&self, lab: &Lab) -> String {
        if self.opts.ha.is_none() {
            return format!("http://{LB_IP}:{MANAGER_PORT}");
        }
        match self.leader(lab) {
            Some(k) => smd_url(k),
            None => smd_url(self.smd_pids.iter().position(Option::is_some).unwrap_or(0)),
        }
    }

    /// A relay's `GET /status` (edge `i` or origin by IP).
    pub fn relay_status(&self, lab: &Lab, ip: &str) -> Result<serde_json::Value> {
        self.call(lab, "GET", &format!("http://{ip}:{RELAY_API_PORT}/status"))
    }

    /// `GET /api/v1/leader` of smd `k` (high availability): `{"me", "leader", "leader_api", "term", "leading",
    /// "store", "store_ok"}`.
    pub fn leader_of(&self, lab: &Lab, k: usize) -> Result<serde_json::Value> {
        self.call(lab, "GET", &format!("{}/api/v1/leader", smd_url(k)))
    }

    /// The running smd that says it leads, if exactly one does.
    pub fn leader(&self, lab: &Lab) -> Option<usize> {
        let leading: Vec<usize> = (0..self.smd_pids.len())
            .filter(|k| self.smd_pids[*k].is_some())
            .filter(|k| self.leader_of(lab, *k).is_ok_and(|v| v["leading"] == true))
            .collect();
        (leading.len() == 1).then(|| leading[0])
    }

    /// Waits until exactly one running smd leads, other than `not` if given; which one and how long it took.
    pub fn wait_leader(&self, lab: &Lab, not: Option<usize>, timeout: Duration) -> Result<(usize, Duration)> {
        let what = match not {
            None => "one smd to lead".to_string(),
            Some(k) => format!("an smd other than m{} to lead", k + 1),
        };
        crate::wait::wait_for(timeout, &what, || self.leader(lab).filter(|k| Some(*k) != not))
    }

    /// The etcd cluster, the smd config files and every smd, then a leader (high availability).
    fn start_ha_managers(&mut self, lab: &mut Lab) -> Result<()> {
        self.etcd = Some(Etcd::start(lab)?);
        for k in 0..self.smd_pids.len() {
            lab.add_host(&format!("m{}", k + 1), &smd_ip(k), &format!("fd00:99::{}", 61 + k))?;
            std::fs::write(&self.smd_configs[k], self.manager_toml(lab, Some(k)))?;
        }
        for k in 0..self.smd_pids.len() {
            self.start_smd(lab, k)?;
        }
        self.wait_leader(lab, None, Duration::from_secs(20)).with_context(|| self.manager_log(lab))?;
        Ok(())
    }

    /// Starts (or restarts) smd `k` on its host (high availability); returns once its API listens.
    pub fn start_smd(&mut self, lab: &mut Lab, k: usize) -> Result<u32> {
        if self.smd_pids.get(k).is_none() {
            bail!("there is no smd m{} in this cluster", k + 1);
        }
        self.smd_runs[k] += 1;
        let smd = bin_path("smd");
        let ns = lab.ns(&format!("m{}", k + 1));
        let pid = lab.spawn_ready(
            &ns,
            &format!("smd-m{}-{}.log", k + 1, self.smd_runs[k]),
            &[smd.to_str().unwrap(), "--config", self.smd_configs[k].to_str().unwrap()],
            "stream manager API listening",
            Duration::from_secs(10),
        )?;
        self.smd_pids[k] = Some(pid);
        Ok(pid)
    }

    /// Kills smd `k` with SIGKILL (a crash).
    pub fn kill_smd(&mut self, lab: &mut Lab, k: usize) -> Result<()> {
        if let Some(pid) = self.smd_pids.get_mut(k).and_then(Option::take) {
            lab.stop(pid, libc::SIGKILL)?;
        }
        Ok(())
    }

    /// smd `k`'s current (or last) log.
    pub fn smd_log(&self, lab: &Lab, k: usize) -> String {
        lab.log(&format!("smd-m{}-{}.log", k + 1, self.smd_runs[k]))
    }

    /// smd `k`'s namespace (high availability).
    pub fn smd_ns(&self, lab: &Lab, k: usize) -> String {
        lab.ns(&format!("m{}", k + 1))
    }

    /// Cuts smd `k` from every etcd member and only from them (netfilter drops in its namespace, both ways): it
    /// still reaches the relays, lbd and the other smd. [`Cluster::heal_smd`] removes the rules.
    pub fn partition_smd(&self, lab: &Lab, k: usize) -> Result<()> {
        let members = format!("{}-{}", crate::etcd::member_ip(0), crate::etcd::member_ip(crate::etcd::MEMBERS - 1));
        let rules = format!(
            "add table inet labpart
             add chain inet labpart out {{ type filter hook output priority 0 ; policy accept ; }}
             add chain inet labpart in {{ type filter hook input priority 0 ; policy accept ; }}
             add rule inet labpart out ip daddr {members} drop
             add rule inet labpart in ip saddr {members} drop
"
        );
        let file = lab.dir.join(format!("partition-m{}.nft", k + 1));
        std::fs::write(&file, rules)?;
        lab.exec(&self.smd_ns(lab, k), &["nft", "-f", file.to_str().unwrap()]).map(|_| ())
    }

    /// Removes the partition of [`Cluster::partition_smd`].
    pub fn heal_smd(&self, lab: &Lab, k: usize) -> Result<()> {
        lab.exec(&self.smd_ns(lab, k), &["nft", "delete", "table", "inet", "labpart"]).map(|_| ())
    }

    /// The sum of every sample of metric `name` on a `/metrics` page (a relay's, lbd's or an smd's); None when
    /// the page has no such metric or cannot be read.
    pub fn metric(&self, lab: &Lab, metrics_url: &str, name: &str) -> Option<f64> {
        let auth = format!("Authorization: Bearer {}", self.token);
        let out = lab.exec_status(&lab.lb(), &["curl", "-sS", "--max-time", "3", "-H", &auth, metrics_url]).ok()?;
        if !out.status.success() {
            return None;
        }
        let samples: Vec<f64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!samples.is_empty()).then(|| samples.iter().sum())
    }

    /// Waits until `f` holds (the lab's [`crate::wait::wait_within`], in the argument order of the cluster
    /// tests); the time it took.
    pub fn wait(what: &str, timeout: Duration, f: impl FnMut() -> bool) -> Result<Duration> {
        crate::wait::wait_within(timeout, what, f)
    }

    /// The "cams" group's active member per the manager.
    pub fn active(&self, lab: &Lab) -> Option<String> {
        self.active_of(lab, "cams")
    }

    /// A group's active member per the manager.
    pub fn active_of(&self, lab: &Lab, group: &str) -> Option<String> {
        let g = self.manager(lab, "groups").ok()?;
        g.as_array()?.iter().find(|x| x["name"] == group)?["active"].as_str().map(str::to_string)
    }

    /// Whether edge `i` has `live/key` with a live source pulled from `origin_ip`.
    pub fn edge_pulls_from(&self, lab: &Lab, i: usize, key: &str, origin_ip: &str) -> bool {
        self.edge_pulls(lab, i, "live", key, origin_ip)
    }

    /// Whether edge `i` has `app/key` with a live source pulled from `origin_ip`.
    pub fn edge_pulls(&self, lab: &Lab, i: usize, app: &str, key: &str, origin_ip: &str) -> bool {
        self.relay_status(lab, &real_ip(i)).is_ok_and(|s| {
            s["streams"].as_array().is_some_and(|v| {
                v.iter().any(|st| {
                    st["app"] == app
                        && st["key"] == key
                        && st["source"]["peer"].as_str().is_some_and(|p| p.contains(&format!("//{origin_ip}:")))
                })
            })
        })
    }
}

/// ffmpeg players in the client namespace, each writing what it receives to a file (flushed per packet), so a
/// test or bench sees when frames arrive and can read the timeline afterwards.
pub struct Players {
    pub pids: Vec<u32>,
    pub files: Vec<String>,
}

impl Players {
    /// `n` players of `url`, started from the client namespace; `tag` names their files and logs.
    pub fn start(lab: &mut Lab, url: &str, n: usize, tag: &str) -> Result<Players> {
        let client = lab.client();
        let (mut pids, mut files) = (Vec::new(), Vec::new());
        for i in 0..n {
            let file = lab.dir.join(format!("{tag}{i}.flv")).display().to_string();
            let args = [
                "ffmpeg",
                "-nostdin",
                "-loglevel",
                "error",
                "-i",
                url,
                "-c",
                "copy",
                "-flush_packets",
                "1",
                "-f",
                "flv",
                "-y",
                &file,
            ];
            pids.push(lab.spawn(&client, &format!("{tag}{i}.log"), &args)?);
            files.push(file);
        }
        Ok(Players { pids, files })
    }

    pub fn sizes(&self) -> Vec<u64> {
        self.files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).collect()
    }

    /// Waits until every player has received at least `bytes` more than in `since`.
    pub fn wait_growth(&self, since: &[u64], bytes: u64, timeout: Duration) -> Result<Duration> {
        Cluster::wait("every player receiving frames", timeout, || {
            self.sizes().iter().zip(since).all(|(now, before)| *now >= before + bytes)
        })
    }

    /// Watches the players for `during` (sampling every 20 ms) while `event` runs at the start; returns each
    /// player's longest time without a byte arriving: the gap a viewer saw.
    pub fn longest_stall(&self, during: Duration, event: impl FnOnce()) -> Vec<Duration> {
        let start = Instant::now();
        let mut last = self.sizes();
        let mut last_change = vec![start; last.len()];
        let mut longest = vec![Duration::ZERO; last.len()];
        event();
        while start.elapsed() < during {
            std::thread::sleep(Duration::from_millis(20));
            let now = Instant::now();
            for (i, s) in self.sizes().into_iter().enumerate() {
                if s != last[i] {
                    longest[i] = longest[i].max(now - last_change[i]);
                    last[i] = s;
                    last_change[i] = now;
                }
            }
        }
        for i in 0..last.len() {
            longest[i] = longest[i].max(Instant::now() - last_change[i]);
        }
        longest
    }

    /// Stops every player (SIGTERM).
    pub fn stop(&self, lab: &mut Lab) {
        for pid in &self.pids {
            let _ = lab.stop(*pid, libc::SIGTERM);
        }
    }

    /// Video packet times (seconds) of player `i`'s file, in file order.
    pub fn video_times(&self, lab: &Lab, i: usize) -> Vec<f64> {
        let args = [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
            &self.files[i],
        ];
        let out = lab.exec_status(&lab.client(), &args).map(|o| o.stdout).unwrap_or_default();
        String::from_utf8_lossy(&out).lines().filter_map(|l| l.trim().trim_end_matches(',').parse().ok()).collect()
    }
}

/// The median of some durations (the figure a bench quotes).
pub fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lab value without namespaces (nothing to build for a config's text): its directory only.
    fn paper_lab(tag: &str) -> Lab {
        let prefix = format!("{}{}x{tag}", crate::NS_PREFIX, std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).unwrap();
        Lab { prefix, dir, reals: 3, namespaces: Vec::new(), procs: Vec::new() }
    }

    #[test]
    fn the_single_manager_keeps_its_state_file_and_ha_managers_share_etcd() {
        let lab = paper_lab("cfg1");
        let single = Cluster::new(&lab, Options::default()).unwrap();
        let text = single.manager_toml(&lab, None);
        assert!(text.starts_with(&format!("listen = \"{LB_IP}:{MANAGER_PORT}\"\ntoken_file = ")), "{text}");
        assert!(text.contains("\nstate_file = ") && !text.contains("[store]") && !text.contains("name = \"m"));
        let args = single.relay_args("edge", "10.99.0.11", "e1");
        assert_eq!(args.iter().position(|a| a == "--manager").map(|i| &args[i + 1][..]), Some("http://10.99.0.2:9300"));

        let opts = Options { ha: Some(HaOptions { managers: 3, lease_ttl: "4s" }), ..Default::default() };
        let ha = Cluster::new(&lab, opts).unwrap();
        assert_eq!(ha.smd_configs.len(), 3);
        let text = ha.manager_toml(&lab, Some(1));
        assert!(
            text.starts_with("name = \"m2\"\nlisten = \"10.99.0.62:9300\"\nadvertise = \"http://10.99.0.62:9300\"\n"),
            "{text}"
        );
        assert!(!text.contains("state_file"), "{text}");
        let store = format!(
            "\n[store]\nkind = \"etcd\"\nendpoints = [\"http://10.99.0.51:2379\", \"http://10.99.0.52:2379\", \
             \"http://10.99.0.53:2379\"]\nprefix = \"/{}/smd\"\nlease_ttl = \"4s\"\n",
            lab.prefix
        );
        assert!(text.ends_with(&store), "{text}");
        let args = ha.relay_args("edge", "10.99.0.11", "e1");
        let manager = args.iter().position(|a| a == "--manager").map(|i| &args[i + 1][..]);
        assert_eq!(manager, Some("http://10.99.0.61:9300,http://10.99.0.62:9300,http://10.99.0.63:9300"));

        let four = Options { ha: Some(HaOptions { managers: 4, lease_ttl: "4s" }), ..Default::default() };
        let err = Cluster::new(&lab, four).err().unwrap().to_string();
        assert_eq!(err, "the lab runs 2 or 3 managers in high availability, not 4");
    }
}
