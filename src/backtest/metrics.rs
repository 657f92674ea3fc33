//! What a backtest keeps while the events stream past: fixed-size histograms and counters per
//! side, the flip matrix, per-rule hit counts and a bounded heap of the most changed flips.
//! Memory does not grow with the number of events (rule ids and dead-letter reasons are
//! bounded by the rules files and the reason codes).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

use serde::Serialize;

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
    /// Events per (label class, action).
    pub actions: [[u64; 3]; CLASSES],
    /// Value per (label class, action).
    pub action_amount: [[f64; 3]; CLASSES],
    /// Sum of (score − label)² over labelled events.
    pub brier_sum: f64,
    /// Per reliability bin: labelled events, sum of scores, frauds.
    pub reliability: [(u64, f64, u64); RELIABILITY_BINS],
    /// Hits per rule id (enforce and monitor).
    pub rule_hits: HashMap<Arc<str>, u64>,
}

impl Default for SideStats {
    fn default() -> Self {
        Self {
            hist: vec![[0; BINS]; CLASSES],
            amount_hist: vec![[0.0; BINS]; CLASSES],
            actions: [[0; 3]; CLASSES],
            action_amount: [[0.0; 3]; CLASSES],
            brier_sum: 0.0,
            reliability: [(0, 0.0, 0); RELIABILITY_BINS],
            rule_hits: HashMap::new(),
        }
    }
}

impl SideStats {
    /// Counts one decided event of `class` with `value`.
    fn add(&mut self, class: usize, value: f64, d: &Decision) {
        let b = bin(d.score);
        self.hist[class][b] += 1;
        self.amount_hist[class][b] += value;
        self.actions[class][d.action as usize] += 1;
        self.action_amount[class][d.action as usize] += value;
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

/// A flipped event kept for the report (the largest score changes).
#[derive(Debug, Clone, Serialize)]
pub struct Flip {
    /// Absolute score change.
    pub score_change: f32,
    /// Record number in the input (from 1).
    pub line: u64,
    /// Event id.
    pub event_id: String,
    /// The event as read (truncated to 2,000 bytes).
    pub input: String,
    /// Label, when known.
    pub label: Option<u8>,
    /// Value field.
    pub value: f64,
    /// Baseline then candidate: score, action, reason, rule hits.
    pub sides: [FlipSide; 2],
}

/// One side of a kept flip.
#[derive(Debug, Clone, Serialize)]
pub struct FlipSide {
    /// Score.
    pub score: f32,
    /// Action (its custom name if a rule named one).
    pub action: String,
    /// Reason code.
    pub reason: String,
    /// Rules that fired.
    pub rules: Vec<String>,
}

impl FlipSide {
    fn of(d: &Decision) -> Self {
        Self {
            score: d.score,
            action: d.action_name.as_deref().unwrap_or(d.action.label()).to_string(),
            reason: d.reason.to_string(),
            rules: d.rule_hits.iter().map(|h| h.id.to_string()).collect(),
        }
    }
}

/// Heap entry ordered by score change (then by line, for a stable report).
struct Ranked(Flip);

impl PartialEq for Ranked {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ranked {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Earlier lines rank higher among equal changes.
        self.0.score_change.total_cmp(&o.0.score_change).then(o.0.line.cmp(&self.0.line))
    }
}

/// Everything a backtest accumulates.
pub struct Accumulator {
    /// Baseline, candidate.
    pub sides: [SideStats; 2],
    /// Events per (baseline action, candidate action).
    pub flips: [[u64; 3]; 3],
    /// Value per (baseline action, candidate action).
    pub flip_amount: [[f64; 3]; 3],
    /// Hits per rule id (either side) on events whose action changed.
    pub flipped_rules: HashMap<Arc<str>, u64>,
    /// Records read.
    pub events: u64,
    /// Dead-lettered records per reason code.
    pub dead: BTreeMap<&'static str, u64>,
    /// First and last record number decided, and their event times.
    pub range: Option<[(u64, i64); 2]>,
    top: BinaryHeap<Reverse<Ranked>>,
    top_n: usize,
}

/// One decided event as both sides saw it.
pub struct Seen<'a> {
    /// Record number (from 1).
    pub line: u64,
    /// Event id.
    pub event_id: &'a str,
    /// Event time, ms.
    pub event_time_ms: i64,
    /// Label, when known.
    pub label: Option<u8>,
    /// Value field (0 when absent).
    pub value: f64,
    /// The raw payload (only read for a kept flip).
    pub payload: &'a [u8],
}

impl Accumulator {
    /// Keeps the `top_n` flips with the largest score change.
    pub fn new(top_n: usize) -> Self {
        Self {
            sides: [SideStats::default(), SideStats::default()],
            flips: [[0; 3]; 3],
            flip_amount: [[0.0; 3]; 3],
            flipped_rules: HashMap::new(),
            events: 0,
            dead: BTreeMap::new(),
            range: None,
            top: BinaryHeap::new(),
            top_n,
        }
    }

    /// Counts one event decided by both sides.
    pub fn add(&mut self, e: &Seen<'_>, base: &Decision, cand: &Decision) {
        let class = e.label.map_or(2, |l| usize::from(l.min(1)));
        self.sides[0].add(class, e.value, base);
        self.sides[1].add(class, e.value, cand);
        let (a, b) = (base.action as usize, cand.action as usize);
        self.flips[a][b] += 1;
        self.flip_amount[a][b] += e.value;
        let point = (e.line, e.event_time_ms);
        self.range = Some(match self.range {
            None => [point, point],
            Some([first, _]) => [first, point],
        });
        if base.action == cand.action {
            return;
        }
        for h in base.rule_hits.iter().chain(&cand.rule_hits) {
            *self.flipped_rules.entry(h.id.clone()).or_default() += 1;
        }
        let change = (cand.score - base.score).abs();
        if self.top.len() >= self.top_n {
            match self.top.peek() {
                Some(Reverse(min)) if min.0.score_change < change => {
                    self.top.pop();
                }
                _ => return,
            }
        }
        // A cut inside a character shows as one replacement character.
        let end = e.payload.len().min(2000);
        self.top.push(Reverse(Ranked(Flip {
            score_change: change,
            line: e.line,
            event_id: e.event_id.to_string(),
            input: String::from_utf8_lossy(&e.payload[..end]).into_owned(),
            label: e.label,
            value: e.value,
            sides: [FlipSide::of(base), FlipSide::of(cand)],
        })));
    }

    /// Counts a dead-lettered record.
    pub fn dead(&mut self, reason: &'static str) {
        *self.dead.entry(reason).or_default() += 1;
    }

    /// The kept flips, largest score change first.
    pub fn top_flips(&self) -> Vec<Flip> {
        let mut v: Vec<&Ranked> = self.top.iter().map(|Reverse(r)| r).collect();
        v.sort_by(|a, b| b.cmp(a));
        v.into_iter().map(|r| r.0.clone()).collect()
    }

    /// Actions per side, summed over label classes.
    pub fn action_totals(&self, side: usize) -> [u64; 3] {
        let mut t = [0; 3];
        for c in &self.sides[side].actions {
            for (t, n) in t.iter_mut().zip(c) {
                *t += n;
            }
        }
        t
    }
}

/// Whether an action sends the event away from approval (review or decline: "caught").
pub fn flagged(a: Action) -> bool {
    a != Action::Approve
}
