//! The control socket: a unix socket (mode 0600) taking one JSON request per line and giving one JSON answer per
//! line. Connections are served by their own tasks; requests go to the control task as messages.

use super::DaemonError;
use crate::api::{Request, Response};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use svc::Stopping;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

/// Largest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;

/// A request and where its answer goes.
pub type Job = (Request, oneshot::Sender<Response>);

/// Binds the socket. A socket file left by a daemon that died is replaced; a live daemon on it is not. lbd binds it
/// before it opens any map, so a second lbd on the same socket is refused before it changes anything.
pub fn bind(path: &Path) -> Result<UnixListener, DaemonError> {
    let err = |cause| DaemonError::Socket { path: path.display().to_string(), cause };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            err(std::io::Error::new(e.kind(), format!("cannot create its directory {}: {e}", dir.display())))
        })?;
    }
    if path.exists() {
        if let Some(pid) = super::guard::socket_server(path) {
            let who = pid.map_or("another lbd".to_string(), |p| format!("another lbd (pid {p})"));
            let msg =
                format!("{who} is serving this socket: stop it first, or give this one its own --socket and --pin-dir");
            return Err(err(std::io::Error::new(std::io::ErrorKind::AddrInUse, msg)));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Serves connections until `stop` fires.
pub async fn serve(listener: UnixListener, jobs: mpsc::Sender<Job>, mut stop: Stopping) {
    while let Some((stream, _)) = svc::accept::next(&listener, &mut stop, "control socket").await {
        let jobs = jobs.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut rd = BufReader::new(rd).take(MAX_REQUEST as u64);
            let mut line = String::new();
            let resp = match rd.read_line(&mut line).await {
                Ok(0) => return,
                Ok(_) => match serde_json::from_str::<Request>(&line) {
                    Ok(req) => {
                        let (tx, rx) = oneshot::channel();
                        if jobs.send((req, tx)).await.is_err() {
                            return;
                        }
                        match rx.await {
                            Ok(r) => r,
                            Err(_) => return,
                        }
                    }
                    Err(e) => Response::err(format!("malformed request: {e}")),
                },
                Err(e) => Response::err(format!("unreadable request: {e}")),
            };
            let mut out =
                serde_json::to_string(&resp).unwrap_or_else(|_| "{\"ok\":false,\"message\":\"internal\"}".into());
            out.push('\n');
            let _ = wr.write_all(out.as_bytes()).await;
        });
    }
}
