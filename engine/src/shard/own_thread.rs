//! Long blocking jobs (a received snapshot of gigabytes synced) on a
//! thread of their own.
//!
//! Not glommio's `spawn_blocking`: its pool has one thread per core, and a
//! tree sync queued behind a copy of seconds would wait for it, and the
//! shard with it once its unsynced bytes reach their bound.

use std::future::Future;
use std::io;

/// Runs `job` on a new thread named `name`; the future answers its
/// outcome, or the error that kept the thread from running it.
pub fn on_own_thread(
    name: &str,
    job: impl FnOnce() -> io::Result<()> + Send + 'static,
) -> impl Future<Output = io::Result<()>> {
    let (reply, answer) = futures_channel::oneshot::channel();
    let started = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let _ = reply.send(job());
        });
    async move {
        started?;
        answer
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the job's thread ended without an answer")))
    }
}
