//! Reading a port's TLS files again when they change: a thread looks at
//! their modification times and sizes every [`CHECK_INTERVAL`], and ends
//! once the port's [`ServerTls`] is dropped. (etcd reads the certificate
//! and key on every handshake; this reads them once per change, and the
//! trusted authorities too.)

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use super::ServerTls;

/// How often the files are looked at.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What a file looked like: changed files differ in one or the other
/// (a renewal written in place keeps the size but not the time; one
/// renamed over the old keeps neither).
type Stamp = Option<(SystemTime, u64)>;

fn stamps(paths: &[PathBuf]) -> Vec<Stamp> {
    paths
        .iter()
        .map(|path| {
            let metadata = std::fs::metadata(path).ok()?;
            Some((metadata.modified().ok()?, metadata.len()))
        })
        .collect()
}

/// Starts the thread that reloads `tls` when its files change.
pub(super) fn watch(tls: &Arc<ServerTls>) {
    let paths = tls.files().paths();
    let weak: Weak<ServerTls> = Arc::downgrade(tls);
    let spawned = std::thread::Builder::new()
        .name("keel-tls-reload".to_string())
        .spawn(move || {
            let mut seen = stamps(&paths);
            loop {
                std::thread::sleep(CHECK_INTERVAL);
                let Some(tls) = weak.upgrade() else {
                    return;
                };
                let now = stamps(&paths);
                if now == seen {
                    continue;
                }
                // A renewal caught half written fails here; the rest of
                // its writing changes the stamps again, and is read then.
                seen = now;
                match tls.reload() {
                    Ok(()) => {
                        tracing::info!(cert = %tls.files().cert.display(), "TLS files reloaded");
                    }
                    Err(error) => {
                        tracing::warn!(%error, "TLS files changed but cannot be used; keeping the ones before");
                    }
                }
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot watch the TLS files; they will not be reloaded");
    }
}
