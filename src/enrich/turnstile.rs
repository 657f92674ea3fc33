//! Runs the enrich stage's closures in batch-sequence order across workers.
//!
//! A turn always passes on, even when the closure panics or the batch never reaches the
//! stage (a worker that caught a panic calls [`Turnstile::pass`]): one bad batch must not
//! stop every batch behind it.

use std::time::Duration;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// Runs closures in batch-sequence order: window updates must be applied per source
/// partition in offset order (the replay fence relies on it), while workers decode and
/// score batches in parallel.
pub struct Turnstile<T> {
    state: Mutex<(u64, T)>,
    turn: parking_lot::Condvar,
}

impl<T> Turnstile<T> {
    /// Wraps `inner`; the first batch is sequence 0.
    pub fn new(inner: T) -> Self {
        Self { state: Mutex::new((0, inner)), turn: parking_lot::Condvar::new() }
    }

    /// Waits for batch `seq`'s turn, runs `f`, passes the turn on. None if `abort` was
    /// cancelled while waiting.
    pub fn run<R>(&self, seq: u64, abort: &CancellationToken, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let mut g = self.state.lock();
        while g.0 != seq {
            if abort.is_cancelled() {
                return None;
            }
            self.turn.wait_for(&mut g, Duration::from_millis(50));
        }
        // Passes the turn on when `f` returns and when it unwinds.
        struct Next<'a, 'b, T>(&'a mut parking_lot::MutexGuard<'b, (u64, T)>, &'a parking_lot::Condvar);
        impl<T> Drop for Next<'_, '_, T> {
            fn drop(&mut self) {
                self.0 .0 += 1;
                self.1.notify_all();
            }
        }
        let next = Next(&mut g, &self.turn);
        Some(f(&mut next.0 .1))
    }

    /// Passes batch `seq`'s turn on without running anything, if it has not been taken:
    /// waits for the turn (unless aborted), then lets `seq + 1` go. A worker that lost a
    /// batch to a panic before its enrich turn calls this so later batches are not stuck.
    pub fn pass(&self, seq: u64, abort: &CancellationToken) {
        let mut g = self.state.lock();
        while g.0 < seq {
            if abort.is_cancelled() {
                return;
            }
            self.turn.wait_for(&mut g, Duration::from_millis(50));
        }
        if g.0 == seq {
            g.0 += 1;
            self.turn.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Turnstile;
    use tokio_util::sync::CancellationToken;

    #[test]
    fn a_panicking_turn_and_a_passed_turn_both_let_the_next_batch_go() {
        let t = Turnstile::new(0u32);
        let abort = CancellationToken::new();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            t.run(0, &abort, |_| panic!("boom"));
        }));
        assert!(r.is_err());
        t.pass(1, &abort); // batch 1 never reached the stage
        t.pass(1, &abort); // a second pass of the same turn changes nothing
        assert_eq!(
            t.run(2, &abort, |n| {
                *n += 1;
                *n
            }),
            Some(1)
        );
        assert_eq!(t.run(3, &abort, |n| *n), Some(1));
    }
}
