//! A real browser in a lab namespace: Debian's headless Chromium driven by chromedriver over the W3C WebDriver
//! protocol (JSON over HTTP, spoken with curl inside the namespace), for console tests that load a page, let its
//! own scripts run, read what it shows and save a screenshot.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Duration;

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
    fn base64() {
        assert_eq!(super::base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(super::base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(super::base64_decode("YWJj").unwrap(), b"abc");
        assert!(super::base64_decode("a*==").is_err());
    }
}
