//! The threads that serve connections: one current-thread tokio runtime
//! per thread, each driving the connections dealt to it to their end.
//!
//! The accept loop stays on the main runtime and deals accepted
//! connections out in turn. A connection then lives on one thread: its
//! requests, their upstream connections (the thread's own shelf,
//! `upstream/pool.rs`) and their timers never cross threads, so there is
//! no work-stealing bookkeeping and no cross-thread wake-up per request.
//! What the threads share (token, pacer, metrics) is behind `Arc`s and
//! atomics, as with any multi-threaded runtime.
//!
//! The binary starts one per core (or `TOKIO_WORKER_THREADS`); with one,
//! there are none and everything runs on the main thread.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// At shutdown, tasks still on a worker get this long to end after they
/// are cancelled (draining already gave them `listen.shutdown_grace`).
const STOP_GRACE: Duration = Duration::from_secs(1);

/// The serving threads. Dropping this stops them: their runtimes cancel
/// what is left and the threads are joined.
pub struct Workers {
    handles: Box<[Handle]>,
    next: AtomicUsize,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` threads (at least one), each running its own runtime.
    pub fn start(n: usize) -> io::Result<Workers> {
        let mut workers = Workers {
            handles: Box::default(),
            next: AtomicUsize::new(0),
            stops: Vec::new(),
            threads: Vec::new(),
        };
        let mut handles = Vec::new();
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("fitbit-proxy-worker-{i}"))
                .spawn(move || {
                    // A dropped sender ends the wait too.
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    runtime.shutdown_timeout(STOP_GRACE);
                })?;
            workers.stops.push(stop);
            workers.threads.push(thread);
        }
        workers.handles = handles.into_boxed_slice();
        Ok(workers)
    }

    /// Runs `task` on the next thread in turn.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        drop(self.handles[i].spawn(task));
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    #[test]
    fn tasks_are_dealt_to_every_thread_in_turn_and_each_runs_on_its_own() {
        let workers = Workers::start(3).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (done, mut all_done) = tokio::sync::mpsc::channel::<()>(6);
        for _ in 0..6 {
            let (seen, done) = (Arc::clone(&seen), done.clone());
            workers.spawn(async move {
                // A timer and a spawn of its own work on the worker.
                tokio::time::sleep(Duration::from_millis(1)).await;
                let name = tokio::spawn(async { std::thread::current().name().map(str::to_owned) })
                    .await
                    .unwrap();
                seen.lock().unwrap().push(name.unwrap());
                let _ = done.send(()).await;
            });
        }
        drop(done);
        while all_done.blocking_recv().is_some() {}
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 6);
        let threads: HashSet<&String> = seen.iter().collect();
        assert_eq!(threads.len(), 3, "{seen:?}");
        assert!(seen.iter().all(|n| n.starts_with("fitbit-proxy-worker-")));
    }

    #[test]
    fn dropping_the_workers_cancels_what_is_left_and_joins_the_threads() {
        let workers = Workers::start(2).unwrap();
        let (held, dropped) = oneshot::channel::<()>();
        workers.spawn(async move {
            let _held = held;
            std::future::pending::<()>().await;
        });
        drop(workers);
        // The task was dropped with its runtime: its sender is gone.
        assert!(dropped.blocking_recv().is_err());
    }
}
