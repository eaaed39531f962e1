//! Idle upstream HTTP/1 connections, handed out whole to the request that
//! takes one (which then drives it on its own task) and given back when the
//! answer's body has ended. Most recently used first, so that a steady load
//! keeps reusing the same few warm connections and the rest age out.
//!
//! One shelf per thread: the proxy serves each connection on one thread
//! with its own runtime (`inbound/workers.rs`), and a socket is watched by
//! the I/O driver of the runtime that opened it. A thread takes only from
//! its own shelf, so it reuses only connections its own driver watches
//! (one taken from another thread would be woken through that thread's
//! driver: late whenever that thread is busy, which showed as a higher
//! p99), and no two threads contend for a lock. A thread whose shelf is
//! empty opens a new connection.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// At most this many idle connections per shelf: enough for every
/// connection a burst opened, without keeping thousands.
const MAX_IDLE_PER_SHELF: usize = 1024;

/// Threads are numbered as they first use a pool; beyond this many they
/// share shelves (harmless, only slower).
const MAX_SHELVES: usize = 64;

pub(super) struct Pool<T> {
    shelves: Box<[Mutex<VecDeque<Idle<T>>>]>,
    /// A connection idle for longer is closed rather than reused: long
    /// enough to carry a steady trickle of paced requests, short enough to
    /// drop peers that went away.
    idle_timeout: Duration,
}

struct Idle<T> {
    since: Instant,
    item: T,
}

impl<T> Pool<T> {
    pub(super) fn new(idle_timeout: Duration) -> Self {
        Pool {
            shelves: (0..MAX_SHELVES)
                .map(|_| Mutex::new(VecDeque::new()))
                .collect(),
            idle_timeout,
        }
    }

    /// The most recently returned connection on this thread's shelf that
    /// has not been idle for too long.
    pub(super) fn take(&self) -> Option<T> {
        let own = shelf_of_this_thread(self.shelves.len());
        self.take_from(own, Instant::now())
    }

    fn take_from(&self, shelf: usize, now: Instant) -> Option<T> {
        let mut idle = self.shelves[shelf]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let newest = idle.pop_back()?;
        if now.saturating_duration_since(newest.since) < self.idle_timeout {
            return Some(newest.item);
        }
        // Everything below the newest is older still: close it all, after
        // the lock is let go.
        let expired = std::mem::take(&mut *idle);
        drop(idle);
        drop((newest, expired));
        None
    }

    /// Shelves an idle connection on this thread's shelf; the oldest ones
    /// go when they have expired or the shelf is full.
    pub(super) fn put(&self, item: T) {
        let now = Instant::now();
        let shelf = shelf_of_this_thread(self.shelves.len());
        let mut idle = self.shelves[shelf]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut closed = Vec::new();
        while let Some(oldest) = idle.front() {
            let expired = now.saturating_duration_since(oldest.since) >= self.idle_timeout;
            if !expired && idle.len() < MAX_IDLE_PER_SHELF {
                break;
            }
            closed.extend(idle.pop_front());
        }
        idle.push_back(Idle { since: now, item });
        drop(idle);
        drop(closed);
    }
}

/// Each thread gets a shelf number the first time it asks.
fn shelf_of_this_thread(shelves: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHELF: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SHELF.with(|s| *s) % shelves
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn newest_first_and_expired_ones_are_closed() {
        let pool = Pool::new(Duration::from_secs(90));
        pool.put(1);
        tokio::time::advance(Duration::from_secs(60)).await;
        pool.put(2);
        assert_eq!(pool.take(), Some(2));
        pool.put(2);
        tokio::time::advance(Duration::from_secs(31)).await;
        // 1 has been idle 91 s, 2 only 31 s.
        assert_eq!(pool.take(), Some(2));
        assert_eq!(pool.take(), None, "the expired one is not handed out");
        pool.put(3);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(pool.take(), None);
    }

    #[test]
    fn a_full_shelf_drops_its_oldest() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let pool = Pool::new(Duration::from_secs(90));
            for i in 0..MAX_IDLE_PER_SHELF + 1 {
                pool.put(i);
            }
            let mut left = Vec::new();
            while let Some(i) = pool.take() {
                left.push(i);
            }
            assert_eq!(left.len(), MAX_IDLE_PER_SHELF);
            assert_eq!(left.last(), Some(&1), "0 was dropped");
        });
    }

    #[test]
    fn another_threads_idle_connection_is_left_to_it() {
        let pool = std::sync::Arc::new(Pool::new(Duration::from_secs(90)));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _enter = rt.enter();
        let other = std::sync::Arc::clone(&pool);
        let handle = rt.handle().clone();
        std::thread::spawn(move || {
            let _enter = handle.enter();
            other.put(7);
            // Its own thread takes it back.
            other.put(8);
            assert_eq!(other.take(), Some(8));
        })
        .join()
        .unwrap();
        assert_eq!(pool.take(), None, "watched by the other thread's driver");
        pool.put(9);
        assert_eq!(pool.take(), Some(9));
    }
}
