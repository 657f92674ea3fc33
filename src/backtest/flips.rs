//! One candidate against the baseline: the flip matrix (events and value per pair of
//! actions), the rules that fire on flipped events, and a bounded heap of the flips with the
//! largest score change. A pass keeps one [`Comparison`] per candidate.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::core::decision::Decision;

/// One decided event, as every side saw it.
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

/// One candidate's decisions against the baseline's.
pub struct Comparison {
    /// Events per (baseline action, candidate action), by vocabulary index.
    pub flips: Vec<Vec<u64>>,
    /// Value per (baseline action, candidate action), by vocabulary index.
    pub flip_amount: Vec<Vec<f64>>,
    /// Hits per rule id (either side) on events whose action changed.
    pub flipped_rules: HashMap<Arc<str>, u64>,
    top: BinaryHeap<Reverse<Ranked>>,
    top_n: usize,
}

impl Comparison {
    /// Keeps the `top_n` flips with the largest score change; `actions` is the vocabulary's size.
    pub fn new(top_n: usize, actions: usize) -> Self {
        Self {
            flips: vec![vec![0; actions]; actions],
            flip_amount: vec![vec![0.0; actions]; actions],
            flipped_rules: HashMap::new(),
            top: BinaryHeap::new(),
            top_n,
        }
    }

    /// Counts one event as the baseline and this candidate decided it.
    pub fn add(&mut self, e: &Seen<'_>, base: &Decision, cand: &Decision) {
        let (a, b) = (base.action.index(), cand.action.index());
        if let Some(n) = self.flips.get_mut(a).and_then(|r| r.get_mut(b)) {
            *n += 1;
            self.flip_amount[a][b] += e.value;
        }
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

    /// Events whose action changed, and their value.
    pub fn flipped(&self) -> (u64, f64) {
        let n = self.flips.len();
        let off_diagonal = (0..n).flat_map(|a| (0..n).map(move |b| (a, b))).filter(|(a, b)| a != b);
        off_diagonal.fold((0, 0.0), |(n, v), (a, b)| (n + self.flips[a][b], v + self.flip_amount[a][b]))
    }

    /// The kept flips, largest score change first.
    pub fn top_flips(&self) -> Vec<Flip> {
        let mut v: Vec<&Ranked> = self.top.iter().map(|Reverse(r)| r).collect();
        v.sort_by(|a, b| b.cmp(a));
        v.into_iter().map(|r| r.0.clone()).collect()
    }
}
