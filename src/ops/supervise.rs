//! Keeps a background task alive: a task that panics is
//! logged, counted and started again after a backoff, so that a bug in the
//! token refresher does not leave the proxy without a token once the current
//! one expires. Beside the stack; `run` supervises the refresher with it.

use std::future::Future;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The first restart waits this long, the next twice as long, up to
/// [`RESTART_MAX`]: a task that panics at once every time costs one attempt a
/// minute, not a busy loop.
pub(crate) const RESTART_FIRST: Duration = Duration::from_secs(1);
pub(crate) const RESTART_MAX: Duration = Duration::from_secs(60);

/// Spawns `factory()` and spawns it again whenever it panics, after
/// [`restart_delay`]; each restart increments `restarts`. A run that returns
/// (or is cancelled) ends the supervision: only a panic is a fault, and a
/// task that chose to stop would otherwise be re-run in a loop.
///
/// Aborting the returned handle also aborts the task it supervises.
pub(crate) fn spawn_supervised<F, Fut>(
    task: &'static str,
    restarts: Counter,
    factory: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut quick_panics: u32 = 0;
        loop {
            let started = Instant::now();
            let run = AbortOnDrop(tokio::spawn(factory()));
            let ended = run.wait().await;
            match ended {
                Err(e) if e.is_panic() => {}
                _ => return,
            }
            // A run that lasted a while was healthy: start the backoff over.
            if started.elapsed() >= RESTART_MAX {
                quick_panics = 0;
            }
            quick_panics += 1;
            let delay = restart_delay(quick_panics);
            restarts.inc();
            // The payload is not logged: it is whatever the panic formatted,
            // which no one has checked for secrets.
            tracing::error!(
                task,
                restart_in_secs = delay.as_secs(),
                "background task panicked; restarting it"
            );
            tokio::time::sleep(delay).await;
        }
    })
}

/// How long to wait before the `n`-th restart in a row (n ≥ 1).
pub(crate) fn restart_delay(n: u32) -> Duration {
    let doublings = n.saturating_sub(1).min(16);
    RESTART_FIRST
        .saturating_mul(1 << doublings)
        .min(RESTART_MAX)
}

/// Stops a task when its owner stops, however the owner ends.
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl AbortOnDrop {
    async fn wait(mut self) -> Result<(), tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// A factory whose runs are counted; run `n` (from 1) does `body(n)`.
    fn counted<Fut>(
        body: impl Fn(u32) -> Fut + Send + Sync + 'static,
    ) -> (Arc<AtomicU32>, impl Fn() -> Fut + Send + 'static) {
        let runs = Arc::new(AtomicU32::new(0));
        let r = Arc::clone(&runs);
        (runs, move || body(r.fetch_add(1, Ordering::SeqCst) + 1))
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn restart_delay_doubles_from_one_second_to_a_minute() {
        let want = [1, 2, 4, 8, 16, 32, 60, 60];
        for (i, secs) in want.iter().enumerate() {
            assert_eq!(restart_delay(i as u32 + 1), s(*secs), "restart {}", i + 1);
        }
        assert_eq!(restart_delay(u32::MAX), s(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_is_restarted_after_a_second_and_counted() {
        let second_run = Arc::new(tokio::sync::Notify::new());
        let reached = Arc::clone(&second_run);
        let (runs, factory) = counted(move |n| {
            let reached = Arc::clone(&reached);
            async move {
                assert!(n > 1, "first run panics");
                reached.notify_one();
                std::future::pending::<()>().await
            }
        });
        let restarts = Counter::default();
        let supervisor = spawn_supervised("test", restarts.clone(), factory);
        settle().await;
        assert_eq!((runs.load(Ordering::SeqCst), restarts.get()), (1, 1));
        tokio::time::sleep(s(1) - Duration::from_millis(1)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "restarted before 1 s");
        tokio::time::timeout(s(1), second_run.notified())
            .await
            .expect("the second run runs");
        assert_eq!((runs.load(Ordering::SeqCst), restarts.get()), (2, 1));
        assert!(!supervisor.is_finished());
        supervisor.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_keeps_panicking_is_restarted_ever_more_slowly() {
        let (runs, factory) = counted(|_| async { panic!("always") });
        let restarts = Counter::default();
        let supervisor = spawn_supervised("test", restarts.clone(), factory);
        // Runs start at 0, 1, 3, 7, 15, 31, 63, 123, 183 s.
        let mut at = Vec::new();
        let start = Instant::now();
        for _ in 0..9 {
            let n = runs.load(Ordering::SeqCst);
            while runs.load(Ordering::SeqCst) == n {
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert!(start.elapsed() < s(300), "no restart");
            }
            at.push(start.elapsed().as_secs());
        }
        assert_eq!(at, [0, 1, 3, 7, 15, 31, 63, 123, 183]);
        settle().await;
        assert_eq!(restarts.get(), 9, "each panic counted");
        supervisor.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_returns_is_not_restarted() {
        let (runs, factory) = counted(|_| async {});
        let restarts = Counter::default();
        let supervisor = spawn_supervised("test", restarts.clone(), factory);
        tokio::time::timeout(s(1), supervisor)
            .await
            .expect("supervision ends")
            .unwrap();
        tokio::time::sleep(s(120)).await;
        assert_eq!((runs.load(Ordering::SeqCst), restarts.get()), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn aborting_the_supervisor_stops_the_task() {
        struct Dropped(Arc<AtomicU32>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicU32::new(0));
        let d = Arc::clone(&dropped);
        let (_, factory) = counted(move |_| {
            let guard = Dropped(Arc::clone(&d));
            async move {
                let _guard = guard;
                std::future::pending::<()>().await
            }
        });
        let supervisor = spawn_supervised("test", Counter::default(), factory);
        settle().await;
        supervisor.abort();
        settle().await;
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }
}
