//! Where passwords are hashed and checked (bcrypt, tens of milliseconds
//! each at etcd's cost): a few threads of their own with a short queue,
//! so that a flood of logins, which need no user, neither takes the cores'
//! blocking threads (which sync the trees) nor queues without bound. Past
//! the queue a login is refused at once, to be tried again.

use crate::auth::AuthError;

/// Threads that hash and check passwords.
const THREADS: usize = 2;
/// Logins waiting for a thread, past which more are refused.
const QUEUE: usize = 64;

type Job = Box<dyn FnOnce() + Send>;

/// The pool; clones share it. Its threads end when every clone is gone.
#[derive(Clone)]
pub struct LoginPool {
    jobs: flume::Sender<Job>,
}

impl std::fmt::Debug for LoginPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginPool")
            .field("queued", &self.jobs.len())
            .finish()
    }
}

impl LoginPool {
    /// Starts the threads (fewer if some cannot start).
    pub fn start() -> LoginPool {
        let (jobs, queued) = flume::bounded::<Job>(QUEUE);
        for index in 0..THREADS {
            let queued = queued.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("keel-login-{index}"))
                .spawn(move || {
                    while let Ok(job) = queued.recv() {
                        job();
                    }
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "a login thread could not start");
            }
        }
        LoginPool { jobs }
    }

    /// Runs `work` on a login thread and answers what it gave, from any
    /// runtime (tokio's or glommio's).
    ///
    /// # Errors
    /// [`AuthError::Unavailable`] when the queue is full or the pool gone.
    pub async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, AuthError> {
        let (answer, answered) = flume::bounded(1);
        self.jobs
            .try_send(Box::new(move || {
                let _ = answer.send(work());
            }))
            .map_err(|_| {
                AuthError::Unavailable("too many logins at once; try again".to_string())
            })?;
        answered
            .recv_async()
            .await
            .map_err(|_| AuthError::Unavailable("the login threads stopped".to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_off_the_caller_and_a_full_queue_refuses_at_once() {
        let pool = LoginPool::start();
        let answer = futures_lite::future::block_on(pool.run(|| 6 * 7));
        assert_eq!(answer, Ok(42));
        // Both threads held, then the queue filled: the next is refused.
        let (release, held) = flume::bounded::<()>(0);
        let running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let hold = |count: usize| {
            (0..count)
                .map(|_| {
                    let (held, pool, running) = (held.clone(), pool.clone(), running.clone());
                    std::thread::spawn(move || {
                        futures_lite::future::block_on(pool.run(move || {
                            running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let _ = held.recv();
                        }))
                    })
                })
                .collect::<Vec<_>>()
        };
        let wait_until = |done: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !done() {
                assert!(std::time::Instant::now() < deadline, "never happened");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        };
        let mut started = hold(THREADS);
        // Every thread holds a job: what comes now stays queued.
        wait_until(&|| running.load(std::sync::atomic::Ordering::SeqCst) == THREADS);
        started.extend(hold(QUEUE));
        wait_until(&|| pool.jobs.len() == QUEUE);
        let refused = futures_lite::future::block_on(pool.run(|| ()));
        assert!(
            matches!(refused, Err(AuthError::Unavailable(_))),
            "{refused:?}"
        );
        drop(release);
        for thread in started {
            let _ = thread.join();
        }
    }
}
