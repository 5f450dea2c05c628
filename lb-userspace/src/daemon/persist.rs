//! Writes the state file on a task of its own, in the order changes were made, so the control task never waits on
//! a disk. An answer whose change must be saved goes out once it is, or says that it was not.

use crate::api::Response;
use crate::model;
use std::path::PathBuf;
use tokio::sync::{mpsc, oneshot};

/// A state to write, and the answer that waits for it.
pub struct Write {
    pub toml: Result<String, model::ModelError>,
    pub reply: Option<(oneshot::Sender<Response>, Response)>,
}

/// Starts the writer. Without a state file, answers go out at once.
pub fn spawn(path: Option<PathBuf>) -> mpsc::UnboundedSender<Write> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Write>();
    tokio::spawn(async move {
        while let Some(w) = rx.recv().await {
            let result = match (&path, w.toml) {
                (None, _) => Ok(()),
                (Some(_), Err(e)) => Err(e.to_string()),
                (Some(p), Ok(text)) => {
                    let p = p.clone();
                    match tokio::task::spawn_blocking(move || model::write_atomic(&p, &text)).await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            };
            if let (Err(e), Some(p)) = (&result, &path) {
                tracing::error!(state = %p.display(), error = %e, "change applied but not saved to the state file");
            }
            if let Some((tx, resp)) = w.reply {
                let resp = match (result, &path) {
                    (Err(e), Some(p)) => Response::err(format!(
                        "{}, but it was not saved: state file {}: {e}",
                        resp.message,
                        p.display()
                    )),
                    _ => resp,
                };
                let _ = tx.send(resp);
            }
        }
    });
    tx
}
