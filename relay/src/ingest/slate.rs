//! A key's slate: the last-resort source an origin plays itself (a generated test card, or a file looped) through
//! an ffmpeg child that publishes `KEY?role=slate` to this relay's own RTMP listener, so it joins the key's sources
//! like any pushed encoder and stays warm until every other source is gone.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use api_types::relay::{Slate, SLATE_ROLE};
use tracing::{info, warn};

use super::Ingest;

/// Keyframe interval of the slate: one a second, so a switch to it never waits long and HLS cuts stay regular.
const GOP_FRAMES: &str = "30";

/// ffmpeg's arguments for `slate` publishing to `target`.
fn args(slate: &Slate, target: &str) -> Vec<String> {
    let mut a: Vec<String> = ["-hide_banner", "-nostdin", "-loglevel", "error"].iter().map(|s| s.to_string()).collect();
    match slate {
        Slate::TestCard => a.extend(
            ["-re", "-f", "lavfi", "-i", "smptebars=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=1000"]
                .iter()
                .map(|s| s.to_string()),
        ),
        // Re-encoded rather than copied: whatever the file holds, players get H.264 + AAC with regular keyframes.
        Slate::File(f) => a.extend(["-re", "-stream_loop", "-1", "-i", f.as_str()].iter().map(|s| s.to_string())),
    }
    a.extend(
        [
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-g",
            GOP_FRAMES,
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-ar",
            "44100",
            "-f",
            "flv",
            target,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    a
}

/// Runs the slate of app/key until it is removed or the relay stops; a failed ffmpeg is restarted after a second.
pub(crate) async fn run(ctx: Arc<Ingest>, app: String, key: String, slate: Slate, removed: Arc<AtomicBool>) {
    let Some(addr) = ctx.rtmp_addr.get().copied() else {
        warn!(app, key, "slate: the RTMP listener's address is unknown; the slate cannot publish");
        return;
    };
    let token = match &ctx.config.role {
        crate::config::Role::Origin { publish_token: Some(t) } => format!("&token={t}"),
        _ => String::new(),
    };
    let target = format!("rtmp://{addr}/{app}/{key}?role={SLATE_ROLE}{token}");
    let mut stop = ctx.stopping.clone();
    while !removed.load(Ordering::Acquire) {
        let child = tokio::process::Command::new("ffmpeg")
            .args(args(&slate, &target))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                warn!(app, key, error = %e, "slate: cannot start ffmpeg (install the ffmpeg package); retrying in 5 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = stop.wait() => return,
                }
            }
        };
        info!(app, key, pid = child.id().unwrap_or(0), "slate started");
        let ended = loop {
            tokio::select! {
                r = child.wait() => break Some(r),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if removed.load(Ordering::Acquire) { break None; }
                }
                _ = stop.wait() => break None,
            }
        };
        match ended {
            // Removed or stopping: dropping the child kills it.
            None => return,
            Some(status) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = tokio::time::timeout(Duration::from_millis(200), e.read_to_string(&mut err)).await;
                }
                warn!(app, key, status = ?status.ok(), error = %err.lines().last().unwrap_or(""), "slate's ffmpeg ended; restarting in 1 s");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait() => return,
        }
    }
}
