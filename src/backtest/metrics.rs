//! What a backtest keeps while the events stream past: fixed-size histograms and counters per
//! side, and per candidate its flip matrix, rule hits on flips and most changed flips
//! ([`super::flips`]).
//! Memory does not grow with the number of events (rule ids and dead-letter reasons are
//! bounded by the rules files and the reason codes).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::flips::{Comparison, Seen};
use crate::core::decision::{Action, Decision};

/// Score histogram bins over [0, 1] (curves and the threshold search step by 1 / BINS).
pub const BINS: usize = 100;

/// Reliability-chart bins over [0, 1].
pub const RELIABILITY_BINS: usize = 10;

/// Label classes: 0 legitimate, 1 fraud, 2 unlabelled.
pub const CLASSES: usize = 3;

/// The histogram bin of a score.
pub fn bin(score: f32) -> usize {
    if score.is_nan() {
        return 0;
    }
    ((f64::from(score) * BINS as f64) as usize).min(BINS - 1)
}

/// One side's running summaries.
#[derive(Debug, Clone)]
pub struct SideStats {
    /// Events per (label class, score bin).
    pub hist: Vec<[u64; BINS]>,
    /// Value (amount) per (label class, score bin).
    pub amount_hist: Vec<[f64; BINS]>,
    /// Events per (label class, action by vocabulary index).
    pub actions: [Vec<u64>; CLASSES],
    /// Value per (label class, action by vocabulary index).
    pub action_amount: [Vec<f64>; CLASSES],
    /// Sum of (score − label)² over labelled events.
    pub brier_sum: f64,
    /// Per reliability bin: labelled events, sum of scores, frauds.
    pub reliability: [(u64, f64, u64); RELIABILITY_BINS],
    /// Hits per rule id (enforce and monitor).
    pub rule_hits: HashMap<Arc<str>, u64>,
}

impl Default for SideStats {
    /// For the default approve / review / decline vocabulary.
    fn default() -> Self {
        Self::new(3)
    }
}

impl SideStats {
    /// Empty, for a vocabulary of `actions` actions.
    pub fn new(actions: usize) -> Self {
        Self {
            hist: vec![[0; BINS]; CLASSES],
            amount_hist: vec![[0.0; BINS]; CLASSES],
            actions: std::array::from_fn(|_| vec![0; actions]),
            action_amount: std::array::from_fn(|_| vec![0.0; actions]),
            brier_sum: 0.0,
            reliability: [(0, 0.0, 0); RELIABILITY_BINS],
            rule_hits: HashMap::new(),
        }
    }

    /// Counts one decided event of `class` with `value`.
    fn add(&mut self, class: usize, value: f64, d: &Decision) {
        let b = bin(d.score);
        self.hist[class][b] += 1;
        self.amount_hist[class][b] += value;
        let a = d.action.index();
        if let (Some(n), Some(v)) = (self.actions[class].get_mut(a), self.action_amount[class].get_mut(a)) {
            *n += 1;
            *v += value;
        }
        if class < 2 && !d.score.is_nan() {
            let s = f64::from(d.score);
            self.brier_sum += (s - class as f64).powi(2);
            let r = ((s * RELIABILITY_BINS as f64) as usize).min(RELIABILITY_BINS - 1);
            let cell = &mut self.reliability[r];
            cell.0 += 1;
            cell.1 += s;
            cell.2 += class as u64;
        }
        for h in &d.rule_hits {
            *self.rule_hits.entry(h.id.clone()).or_default() += 1;
        }
    }
}

/// Everything a backtest accumulates.
pub struct Accumulator {
    /// The baseline, then each candidate in order.
    pub sides: Vec<SideStats>,
    /// Per candidate, in order: its decisions against the baseline's.
    pub comparisons: Vec<Comparison>,
    /// Records read.
    pub events: u64,
    /// Dead-lettered records per reason code.
    pub dead: BTreeMap<&'static str, u64>,
    /// First and last record number decided, and their event times.
    pub range: Option<[(u64, i64); 2]>,
}

impl Accumulator {
    /// For `candidates` candidates deciding with a vocabulary of `actions` actions, each
    /// keeping the `top_n` flips with the largest score change.
    pub fn new(candidates: usize, top_n: usize, actions: usize) -> Self {
        Self {
            sides: vec![SideStats::new(actions); candidates + 1],
            comparisons: (0..candidates).map(|_| Comparison::new(top_n, actions)).collect(),
            events: 0,
            dead: BTreeMap::new(),
            range: None,
        }
    }

    /// Counts one event decided by the baseline and by each candidate (in order).
    pub fn add<'d>(&mut self, e: &Seen<'_>, base: &Decision, cands: impl IntoIterator<Item = &'d Decision>) {
        let class = e.label.map_or(2, |l| usize::from(l.min(1)));
        self.sides[0].add(class, e.value, base);
        for ((stats, comparison), cand) in self.sides[1..].iter_mut().zip(&mut self.comparisons).zip(cands) {
            stats.add(class, e.value, cand);
            comparison.add(e, base, cand);
        }
        let point = (e.line, e.event_time_ms);
        self.range = Some(match self.range {
            None => [point, point],
            Some([first, _]) => [first, point],
        });
    }

    /// Counts a dead-lettered record.
    pub fn dead(&mut self, reason: &'static str) {
        *self.dead.entry(reason).or_default() += 1;
    }

    /// Actions per side (by vocabulary index), summed over label classes.
    pub fn action_totals(&self, side: usize) -> Vec<u64> {
        let s = &self.sides[side];
        (0..s.actions[0].len()).map(|a| s.actions.iter().map(|c| c[a]).sum()).collect()
    }
}

/// Whether an action sends the event away from the least severe one (approval): review or
/// decline by default, "caught" in precision and recall.
pub fn flagged(a: Action) -> bool {
    a.index() != 0
}
