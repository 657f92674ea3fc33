//! Latency-budgeted batching: the consumer caps batches so that scoring one batch stays
//! within `batch.score_budget_us`. Workers report each batch's scoring time; an EWMA of
//! the cost per event gives the largest batch that fits, clamped to
//! [`MIN_EVENTS`, `batch.max_events`]. At low load batches stay small anyway (they leave at
//! `max_wait_ms`); under load they grow up to what the budget allows.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// The smallest batch the budget may ask for.
pub const MIN_EVENTS: usize = 8;

/// Shared between the workers (which observe) and the consumer (which caps).
#[derive(Debug)]
pub struct BatchBudget {
    budget_ns: u64,
    cap: usize,
    /// EWMA of scoring nanoseconds per event, ×16 fixed point (0 = no sample yet).
    cost: AtomicU64,
    limit: AtomicUsize,
}

impl BatchBudget {
    /// A budget of `budget_us` per batch's scoring, batches at most `cap` events.
    pub fn new(budget_us: u64, cap: usize) -> Self {
        Self {
            budget_ns: budget_us * 1000,
            cap: cap.max(MIN_EVENTS),
            cost: AtomicU64::new(0),
            limit: AtomicUsize::new(cap.max(MIN_EVENTS)),
        }
    }

    /// The current batch-size cap.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Scoring `events` took `elapsed`: update the cost estimate and the cap.
    pub fn observe(&self, events: usize, elapsed: Duration) {
        if events == 0 {
            return;
        }
        let per = (elapsed.as_nanos() as u64 / events as u64).max(1) * 16;
        let old = self.cost.load(Ordering::Relaxed);
        // Racy read-modify-write between workers is fine for an estimate.
        let new = if old == 0 { per } else { old - old / 8 + per / 8 };
        self.cost.store(new, Ordering::Relaxed);
        let fit = (self.budget_ns * 16 / new.max(1)) as usize;
        self.limit.store(fit.clamp(MIN_EVENTS, self.cap), Ordering::Relaxed);
    }

    /// The estimated scoring cost per event (ns).
    pub fn cost_ns(&self) -> u64 {
        self.cost.load(Ordering::Relaxed) / 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_follows_the_cost_per_event() {
        let b = BatchBudget::new(1_000, 512); // 1 ms of scoring per batch
        assert_eq!(b.limit(), 512, "no sample: the configured maximum");
        b.observe(100, Duration::from_micros(400)); // 4 µs per event → 250 fit
        assert_eq!(b.limit(), 250);
        for _ in 0..100 {
            b.observe(100, Duration::from_micros(100)); // 1 µs per event → 1000, capped
        }
        assert_eq!(b.limit(), 512);
        for _ in 0..100 {
            b.observe(10, Duration::from_millis(10)); // 1 ms per event: the floor
        }
        assert_eq!(b.limit(), MIN_EVENTS);
        assert!((999_000..=1_001_000).contains(&b.cost_ns()), "{}", b.cost_ns());
    }
}
