//! Running a test body on a glommio executor with little locked memory.

use std::future::Future;

/// Runs `body` on a fresh executor thread and returns its output.
pub(crate) fn run_local<T, F, G>(body: G) -> T
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    #[allow(clippy::unwrap_used)]
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(body)
        .unwrap()
        .join()
        .unwrap()
}
