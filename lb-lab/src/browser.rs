//! A real browser in a lab namespace: Debian's headless Chromium driven by chromedriver over the W3C WebDriver
//! protocol (JSON over HTTP, spoken with curl inside the namespace), for console tests that load a page, let its
//! own scripts run, read what it shows and save a screenshot; and `play`, which plays an HLS player page
//! (the relay's play.html, hls.js) in Chromium through playwright-core (tests/browser/play.mjs) and reports what
//! the player saw.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Lab;

pub struct Browser {
    ns: String,
    port: u16,
    session: String,
    pid: u32,
}

impl Browser {
    /// Starts chromedriver in `ns` and a headless Chromium session (a fresh profile in the lab's directory).
    pub fn start(lab: &mut Lab, ns: &str, port: u16) -> Result<Browser> {
        let pid = lab.spawn_ready(
            ns,
            "chromedriver.log",
            &["/usr/bin/chromedriver", &format!("--port={port}"), "--allowed-ips=127.0.0.1"],
            "started successfully",
            Duration::from_secs(20),
        )?;
        let profile = lab.dir.join("chromium-profile");
        let caps = serde_json::json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    // The machine's network is closed: no background connections, no first-run work.
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             "--disable-dev-shm-usage", "--window-size=1280,2400",
                             format!("--user-data-dir={}", profile.display())]
                }
            }}
        });
        let mut b = Browser { ns: ns.to_string(), port, session: String::new(), pid };
        let v = b.call(lab, "POST", "/session", Some(&caps))?;
        b.session = v["value"]["sessionId"].as_str().context("no session id from chromedriver")?.to_string();
        Ok(b)
    }

    fn call(&self, lab: &Lab, method: &str, path: &str, body: Option<&serde_json::Value>) -> Result<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let body = body.map(|b| b.to_string()).unwrap_or_else(|| "{}".into());
        let mut args =
            vec!["curl", "-sS", "--max-time", "60", "-X", method, "-H", "Content-Type: application/json", &url];
        if method == "POST" {
            args.extend(["--data-binary", &body]);
        }
        let out = lab.exec_status(&self.ns, &args)?;
        if !out.status.success() {
            bail!("WebDriver {method} {path}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("WebDriver {method} {path}: {}", String::from_utf8_lossy(&out.stdout)))?;
        if v["value"]["error"].is_string() {
            bail!("WebDriver {method} {path}: {} {}", v["value"]["error"], v["value"]["message"]);
        }
        Ok(v)
    }

    /// Opens `url` and waits for it to load.
    pub fn open(&self, lab: &Lab, url: &str) -> Result<()> {
        self.call(lab, "POST", &format!("/session/{}/url", self.session), Some(&serde_json::json!({ "url": url })))?;
        Ok(())
    }

    /// The page's current DOM as HTML (after its scripts ran, and after any reload they did).
    pub fn source(&self, lab: &Lab) -> Result<String> {
        let v = self.call(lab, "GET", &format!("/session/{}/source", self.session), None)?;
        Ok(v["value"].as_str().unwrap_or_default().to_string())
    }

    /// Runs `script` in the page and returns its value.
    pub fn eval(&self, lab: &Lab, script: &str) -> Result<serde_json::Value> {
        let body = serde_json::json!({ "script": script, "args": [] });
        Ok(self.call(lab, "POST", &format!("/session/{}/execute/sync", self.session), Some(&body))?["value"].clone())
    }

    /// Waits until the page source satisfies `f` (polling every 250 ms); the time it took.
    pub fn wait_for(
        &self,
        lab: &Lab,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&str) -> bool,
    ) -> Result<Duration> {
        let mut last = String::new();
        let what = format!("the page to show {what}");
        let (shown, took) = crate::wait::wait_for(timeout, &what, || match self.source(lab) {
            Ok(page) if f(&page) => Some(Ok(())),
            Ok(page) => {
                last = page;
                None
            }
            Err(e) => Some(Err(e)),
        })
        .with_context(|| format!("it shows:\n{}", &last[..last.len().min(4000)]))?;
        shown.map(|()| took)
    }

    /// Resizes the window (a phone's 390 x 844, say).
    pub fn set_window(&self, lab: &Lab, width: u32, height: u32) -> Result<()> {
        let body = serde_json::json!({ "width": width, "height": height });
        self.call(lab, "POST", &format!("/session/{}/window/rect", self.session), Some(&body))?;
        Ok(())
    }

    /// Saves a PNG screenshot of the window to `path`.
    pub fn screenshot(&self, lab: &Lab, path: &Path) -> Result<()> {
        let v = self.call(lab, "GET", &format!("/session/{}/screenshot", self.session), None)?;
        let b64 = v["value"].as_str().context("no screenshot data")?;
        std::fs::write(path, base64_decode(b64)?)?;
        Ok(())
    }

    /// Ends the session and chromedriver.
    pub fn quit(self, lab: &mut Lab) {
        let _ = self.call(lab, "DELETE", &format!("/session/{}", self.session), None);
        let _ = lab.stop(self.pid, libc::SIGTERM);
    }
}

/// Debian's Chromium, which both drivers start (never a browser build of a test tool's own).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// tests/browser: play.mjs and the npm packages `cargo xtask setup` installs beside it.
pub fn browser_dir() -> PathBuf {
    let dir = crate::repo_file("tests/browser");
    dir.canonicalize().unwrap_or(dir)
}

/// hls.js as the npm registry ships it (vendored by `cargo xtask setup`): what a player page loads as /hls.min.js.
pub fn hls_js() -> PathBuf {
    browser_dir().join("node_modules/hls.js/dist/hls.min.js")
}

/// `target/test-artifacts/NAME` (the directory is created): where tests leave screenshots for people to look at.
pub fn artifact(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| crate::repo_file("target"));
    let dir = target.join("test-artifacts");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(name)
}

/// Whether `play` can run here: Chromium, Node.js and the npm packages of tests/browser; else what is missing.
pub fn available() -> std::result::Result<(), String> {
    let fix = "run `cargo xtask setup`";
    if !Path::new(CHROMIUM).is_file() {
        return Err(format!("{CHROMIUM} is missing (Debian package chromium): {fix}"));
    }
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => return Err(format!("`node --version` failed: {}: {fix}", String::from_utf8_lossy(&out.stderr))),
        Err(e) => return Err(format!("Node.js is missing (`node`: {e}): {fix}")),
    }
    let dir = browser_dir();
    for need in [dir.join("node_modules/playwright-core/package.json"), hls_js()] {
        if !need.is_file() {
            return Err(format!("{} is missing (npm ci in {}): {fix}", need.display(), dir.display()));
        }
    }
    Ok(())
}

/// What the player page did during a `play`, as play.mjs reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Playback {
    /// From opening the page to the video element playing with its clock moving.
    pub started_after_ms: u64,
    /// How far the video's currentTime advanced over the sampled seconds (about `secs` when nothing stalled).
    pub played_secs: f64,
    /// 'waiting' events after playback began.
    pub stalls: u32,
    /// The longest of those stalls (one still going at the end counts as it stood).
    pub max_stall_ms: u64,
    /// Fatal player errors (play fails when there is one, so a returned Playback has none).
    pub errors: Vec<String>,
    /// Median distance to the live edge (hls.js' `latency`), None if the player never knew it.
    pub latency_s: Option<f64>,
    /// Median of now minus the wall-clock time of the frame on screen (EXT-X-PROGRAM-DATE-TIME), None without one.
    pub glass_to_glass_ms: Option<i64>,
}

impl Playback {
    /// Reads play.mjs's JSON line.
    pub fn parse(line: &str) -> Result<Playback> {
        let v: serde_json::Value =
            serde_json::from_str(line.trim()).with_context(|| format!("play.mjs printed {line:?}, not JSON"))?;
        let u = |k: &str| v[k].as_u64().with_context(|| format!("play.mjs: no {k} in {line}"));
        let f = |k: &str| v[k].as_f64().with_context(|| format!("play.mjs: no {k} in {line}"));
        let errors = v["errors"].as_array().with_context(|| format!("play.mjs: no errors in {line}"))?;
        Ok(Playback {
            started_after_ms: u("started_after_ms")?,
            played_secs: f("played_secs")?,
            stalls: u32::try_from(u("stalls")?)?,
            max_stall_ms: u("max_stall_ms")?,
            errors: errors.iter().map(|e| e.as_str().map(String::from).unwrap_or_else(|| e.to_string())).collect(),
            latency_s: v["latency_s"].as_f64(),
            glass_to_glass_ms: v["glass_to_glass_ms"].as_f64().map(|ms| ms.round() as i64),
        })
    }
}

/// One play.mjs run in the background, so a test can run several players at once; killed (browser and profile
/// cleaned up by the script's own SIGTERM handler) if dropped before `wait`.
pub struct Player {
    child: Option<Child>,
    url: String,
}

impl Player {
    /// Opens `url` (a player page) in headless Chromium, inside network namespace `netns` if given (where a lab's
    /// VIP is reachable), to play `secs` seconds after it starts; `screenshot` is saved at the end, with the run's
    /// requests and stats beside it (`NAME.trace.txt`).
    pub fn start(url: &str, secs: u32, screenshot: Option<&Path>, netns: Option<&str>) -> Result<Player> {
        available().map_err(anyhow::Error::msg)?;
        let script = browser_dir().join("play.mjs");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "node"]);
                c
            }
            None => Command::new("node"),
        };
        cmd.arg(&script).args(["--url", url, "--secs", &secs.to_string(), "--chromium", CHROMIUM]);
        if let Some(path) = screenshot {
            // Beside the screenshot, what the player asked for and when: what tells a stall's cause afterwards.
            cmd.arg("--screenshot").arg(path).arg("--trace").arg(path.with_extension("trace.txt"));
        }
        let child = cmd
            .current_dir(browser_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        Ok(Player { child: Some(child), url: url.to_string() })
    }

    /// Waits for the run to end: what the player saw, or why it did not play (play.mjs's reason).
    pub fn wait(mut self) -> Result<Playback> {
        let child = self.child.take().expect("a Player is waited once");
        let out = child.wait_with_output().context("waiting for play.mjs")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let reason = stderr.lines().filter(|l| l.starts_with("play.mjs: ")).collect::<Vec<_>>().join("; ");
        if !out.status.success() {
            let why = if reason.is_empty() { stderr.trim().to_string() } else { reason };
            bail!("hls.js in Chromium could not play {}: {why} ({})", self.url, out.status);
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().with_context(|| format!("play.mjs printed nothing for {}", self.url))?;
        Playback::parse(line)
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SIGTERM first: the script closes Chromium and removes its profile; SIGKILL if it does not end.
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if child.try_wait().is_ok_and(|s| s.is_some()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Plays the player page at `url` for `secs` seconds after it starts (see `Player::start`) and returns what the
/// player saw. Fails, naming the reason, when the page or playlist is not served, playback does not start within
/// 20 s, or the player hits a fatal error.
pub fn play(url: &str, secs: u32, screenshot: Option<&Path>, netns: Option<&str>) -> Result<Playback> {
    Player::start(url, secs, screenshot, netns)?.wait()
}

/// Standard base64 (what WebDriver sends screenshots in).
fn base64_decode(s: &str) -> Result<Vec<u8>> {
    let val = |c: u8| -> Result<u32> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("bad base64 byte {c}"),
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= if c == b'=' { 0 } else { val(c)? } << (18 - 6 * i);
        }
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..4 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_what_play_mjs_prints() {
        let line = r#"{"started_after_ms":1095,"played_secs":9.982,"stalls":0,"max_stall_ms":0,"errors":[],"latency_s":6.68,"glass_to_glass_ms":6712}"#;
        let p = super::Playback::parse(line).unwrap();
        assert_eq!(
            p,
            super::Playback {
                started_after_ms: 1095,
                played_secs: 9.982,
                stalls: 0,
                max_stall_ms: 0,
                errors: vec![],
                latency_s: Some(6.68),
                glass_to_glass_ms: Some(6712),
            }
        );
        let unknown = r#"{"started_after_ms":5,"played_secs":1,"stalls":2,"max_stall_ms":300,"errors":["x"],"latency_s":null,"glass_to_glass_ms":null}"#;
        let p = super::Playback::parse(unknown).unwrap();
        assert_eq!(
            (p.stalls, p.max_stall_ms, p.errors, p.latency_s, p.glass_to_glass_ms),
            (2, 300, vec!["x".into()], None, None)
        );
        assert!(super::Playback::parse("play.mjs: boom").is_err());
        assert!(super::Playback::parse(r#"{"played_secs":1}"#).is_err());
    }

    #[test]
    fn base64() {
        assert_eq!(super::base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(super::base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(super::base64_decode("YWJj").unwrap(), b"abc");
        assert!(super::base64_decode("a*==").is_err());
    }
}
