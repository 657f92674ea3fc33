//! One pipeline's view of whether its Redis answers, shared by every connection that talks
//! to it (each worker's feature reader, the shared windows, the partition-owned state's
//! claims, loads and checkpoints).
//!
//! Without it, a Redis that stops answering (frozen, a network partition, a black-holed
//! route: no refusal, only silence) costs every call its full `enrich.timeout_ms`: under
//! `on_failure = "degraded"` each batch then waited one timeout for its features and one per
//! partition for its windows, and the acker one per checkpoint (tests/enrich.rs, 300 ms
//! timeout: 1.3 s of enrich time per batch; 0.7 ms with the breaker); a rebalance waited three
//! timeouts per assigned partition. After [`OPEN_AFTER`] failures in a row the breaker opens:
//! calls fail at once (as `Unavailable`, handled by `enrich.on_failure` like any outage) and
//! one call per [`COOL_DOWN`] tries Redis again; its success closes the breaker. A connection
//! Redis closed while idle is not counted: the call is made again on a new one first.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::EnrichError;

/// Failed calls in a row (any connection) that open the breaker. Two, not one: a single
/// failure is often one stale connection, which the next call's reconnect fixes.
pub const OPEN_AFTER: u32 = 2;

/// How long an open breaker fails calls at once before one call tries Redis again.
pub const COOL_DOWN: Duration = Duration::from_secs(1);

/// Whether the pipeline's Redis answers; see the module docs.
#[derive(Debug)]
pub struct Breaker {
    since: Instant,
    /// Failures in a row.
    failures: AtomicU32,
    /// Open until this many ms after `since` (0: closed).
    open_until_ms: AtomicU64,
    /// The failure that opened it, for the errors of the calls it refuses.
    last: Mutex<String>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            since: Instant::now(),
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            last: Mutex::new(String::new()),
        }
    }
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        // Never 0, which means closed.
        self.since.elapsed().as_millis() as u64 + 1
    }

    /// Ok to call Redis: closed, or open past its cool-down and this caller is the one
    /// that tries again. Otherwise the error to handle as the outage it is.
    pub fn check(&self) -> Result<(), EnrichError> {
        let until = self.open_until_ms.load(Ordering::Relaxed);
        if until == 0 {
            return Ok(());
        }
        let now = self.now_ms();
        let next = now + COOL_DOWN.as_millis() as u64;
        if now >= until && self.open_until_ms.compare_exchange(until, next, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            return Ok(());
        }
        Err(EnrichError::Unavailable(format!(
            "not tried: Redis failed {} calls in a row (the last: {}); one call a second tries it again",
            self.failures.load(Ordering::Relaxed),
            self.last.lock()
        )))
    }

    /// Records a call's outcome: an `Unavailable` error counts as a failure; anything
    /// else (a reply, even an error reply about the data) means Redis answered.
    pub fn record<T>(&self, result: &Result<T, EnrichError>) {
        match result {
            Err(EnrichError::Unavailable(e)) => self.failed(e),
            _ => self.answered(),
        }
    }

    fn failed(&self, error: &str) {
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= OPEN_AFTER {
            *self.last.lock() = error.to_string();
            self.open_until_ms.store(self.now_ms() + COOL_DOWN.as_millis() as u64, Ordering::Release);
        }
    }

    fn answered(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Release);
        }
        if self.open_until_ms.load(Ordering::Relaxed) != 0 {
            self.open_until_ms.store(0, Ordering::Release);
        }
    }

    /// Whether calls are refused now (open, within its cool-down).
    pub fn is_open(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Relaxed);
        until != 0 && self.now_ms() < until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> Result<(), EnrichError> {
        Err(EnrichError::Unavailable("no reply within 1s".into()))
    }

    #[test]
    fn opens_after_failures_in_a_row_and_one_call_tries_again_after_the_cool_down() {
        let b = Breaker::default();
        b.record(&down());
        assert!(b.check().is_ok(), "one failure (a stale connection) does not open it");
        b.record(&Ok(()));
        b.record(&down());
        assert!(b.check().is_ok(), "a success in between resets the count");
        b.record(&down());
        let refused = b.check().unwrap_err().to_string();
        assert!(refused.contains("not tried") && refused.contains("no reply within 1s"), "{refused}");
        assert!(b.is_open());
        std::thread::sleep(COOL_DOWN + Duration::from_millis(20));
        assert!(b.check().is_ok(), "past the cool-down one call tries");
        assert!(b.check().is_err(), "and only one");
        b.record(&down());
        assert!(b.check().is_err(), "its failure opens it again");
        std::thread::sleep(COOL_DOWN + Duration::from_millis(20));
        assert!(b.check().is_ok());
        b.record(&Err::<(), _>(EnrichError::Protocol("WRONGTYPE".into())));
        assert!(b.check().is_ok() && b.check().is_ok() && !b.is_open(), "an answer closes it");
    }
}
