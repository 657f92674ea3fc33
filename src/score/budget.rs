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

impl crate::envelope::BatchLimit for BatchBudget {
    fn max_events(&self) -> usize {
        self.limit()
    }
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

/// How long scoring `rows` takes: a cost per ORT call (`chunk` rows at most each) plus a
/// cost per row, fitted by exponentially weighted least squares over the batches a worker
/// scores, starting from the warm-up's measurement. The deadline check predicts with it.
///
/// A single cost per row is not enough: a model whose weights do not fit in cache pays most
/// of its time per call, so the per-row average of small batches is large, the check admits
/// fewer rows, and the average grows further.
#[derive(Debug, Clone)]
pub struct ScoringCost {
    chunk: usize,
    /// Weighted sums: calls², calls·rows, rows², calls·µs, rows·µs.
    sums: [f64; 5],
    call_us: f64,
    row_us: f64,
}

/// Weight kept by older samples per observed batch (memory of about 20 batches).
const COST_DECAY: f64 = 0.95;

impl ScoringCost {
    /// A model that costs `call_us` per call of at most `chunk` rows plus `row_us` per row.
    pub fn new(chunk: usize, call_us: f64, row_us: f64) -> Self {
        let mut c = Self { chunk: chunk.max(1), sums: [0.0; 5], call_us: call_us.max(0.0), row_us: row_us.max(0.0) };
        // The prior: one call of one row and one full call, as the warm-up measured them.
        let (one, full) = (c.predict_us(1), c.predict_us(c.chunk));
        c.add(1.0, 1.0, one);
        c.add(1.0, c.chunk as f64, full);
        c
    }

    /// The cost per call and per row (µs) now in use.
    pub fn parts_us(&self) -> (f64, f64) {
        (self.call_us, self.row_us)
    }

    /// Predicted time to score `rows` rows (µs; 0 for none).
    pub fn predict_us(&self, rows: usize) -> f64 {
        if rows == 0 {
            return 0.0;
        }
        rows.div_ceil(self.chunk) as f64 * self.call_us + rows as f64 * self.row_us
    }

    /// Scoring `rows` rows took `elapsed_us`: refit.
    pub fn observe(&mut self, rows: usize, elapsed_us: f64) {
        if rows == 0 {
            return;
        }
        for s in &mut self.sums {
            *s *= COST_DECAY;
        }
        self.add(rows.div_ceil(self.chunk) as f64, rows as f64, elapsed_us);
        let [cc, cr, rr, ct, rt] = self.sums;
        let det = cc * rr - cr * cr;
        if det > 1e-9 * cc * rr {
            let (a, b) = ((ct * rr - rt * cr) / det, (rt * cc - ct * cr) / det);
            if a >= 0.0 && b >= 0.0 {
                (self.call_us, self.row_us) = (a, b);
                return;
            }
            if a < 0.0 {
                (self.call_us, self.row_us) = (0.0, (rt / rr).max(0.0));
            } else {
                (self.call_us, self.row_us) = ((ct / cc).max(0.0), 0.0);
            }
            return;
        }
        // Every sample had the same shape: keep the split, fit the scale.
        let (a, b) = (self.call_us, self.row_us);
        let pred = a * a * cc + 2.0 * a * b * cr + b * b * rr;
        if pred > 0.0 {
            let f = (a * ct + b * rt) / pred;
            (self.call_us, self.row_us) = (a * f, b * f);
        }
    }

    fn add(&mut self, calls: f64, rows: f64, us: f64) {
        let s = &mut self.sums;
        s[0] += calls * calls;
        s[1] += calls * rows;
        s[2] += rows * rows;
        s[3] += calls * us;
        s[4] += rows * us;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scoring_cost_separates_the_cost_per_call_from_the_cost_per_row() {
        // Warm-up guessed 100 µs per row and nothing per call; the model really costs
        // 5 ms per call (its weights stream from memory) and 20 µs per row.
        let mut c = ScoringCost::new(64, 0.0, 100.0);
        let truth = |k: usize| k.div_ceil(64) as f64 * 5000.0 + k as f64 * 20.0;
        for i in 0..200 {
            let k = [3, 17, 40, 64, 90, 128][i % 6];
            c.observe(k, truth(k));
        }
        let (call, row) = c.parts_us();
        assert!((call - 5000.0).abs() < 1.0 && (row - 20.0).abs() < 0.1, "{call} {row}");
        // A per-row average from 3-row batches would have predicted 1,687 µs per row.
        assert!((c.predict_us(10) - 5200.0).abs() < 2.0);
        assert!((c.predict_us(65) - 11300.0).abs() < 5.0);
        assert_eq!(c.predict_us(0), 0.0);
        // Batches of one shape only: the split is kept, the scale follows.
        let mut c = ScoringCost::new(64, 1000.0, 10.0);
        for _ in 0..500 {
            c.observe(64, 3280.0); // twice the prior's 1,640 µs
        }
        let (call, row) = c.parts_us();
        assert!((c.predict_us(64) - 3280.0).abs() < 1.0 && call > row, "{call} {row}");
    }

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
