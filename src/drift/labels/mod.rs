//! Delayed labels: scored events' `(score, action)` are kept in Redis for
//! `drift.labels_horizon_s` (`{prefix}:s:{event_id}`, with TTL); a consumer of
//! `drift.labels_topic` joins each arriving label to its event with `GETDEL` (so a
//! duplicate label is not counted twice) and adds it to the window's [`LabelStats`]:
//! precision and recall at the band thresholds, Brier score, reliability bins.
//!
//! Workers never wait on this: they hand scored events to a bounded queue drained by a
//! writer thread (one pipelined round trip per chunk); when the queue is full the event is
//! not kept (counted), so its label will count as unknown.
//!
//! Failures that repeat while Redis or the broker is down are logged rate limited
//! ([`crate::lograte`]), and never with the Redis URL's password.

mod join;

use serde::{Deserialize, Serialize};

pub use join::{scored_channel, spawn_writer, LabelJoiner, LabelStore, ScoredSink, ScoredWriter};

/// Where the joiner hands labels of events that a version on trial scored too (the guarded
/// rollout compares both versions on the same labelled events).
pub trait PairedLabels: Send + Sync {
    /// A label joined to an event scored `serving` by the serving version and `trial` by
    /// the trial version of rollout `epoch`.
    fn joined(&self, epoch: u64, serving: f64, trial: f64, positive: bool);
}

/// Reliability (calibration) bins over [0, 1].
pub const RELIABILITY_BINS: usize = 10;

/// Confusion counts at one threshold (predicted positive: score ≥ threshold).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    /// The score threshold.
    pub threshold: f64,
    /// True positives.
    pub tp: i64,
    /// False positives.
    pub fp: i64,
    /// False negatives.
    pub r#fn: i64,
    /// True negatives.
    pub tn: i64,
    /// tp / (tp + fp), None when nothing was predicted positive.
    pub precision: Option<f64>,
    /// tp / (tp + fn), None without positives.
    pub recall: Option<f64>,
}

/// One calibration bin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Lower score bound (inclusive).
    pub lo: f64,
    /// Upper score bound (exclusive; 1.0 inclusive in the last bin).
    pub hi: f64,
    /// Labeled events in the bin.
    pub count: i64,
    /// Sum of their scores (mean predicted = score_sum / count).
    pub score_sum: f64,
    /// Positives among them (observed rate = positives / count).
    pub positives: i64,
}

/// Label statistics of a window; mergeable (counts and sums).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelStats {
    /// Labels joined to a scored event.
    pub joined: i64,
    /// Labels whose event is unknown or expired (past the horizon).
    pub unknown: i64,
    /// Labels that could not be read (no id, label not 0/1/true/false).
    pub invalid: i64,
    /// Sum of (score − label)² over joined labels.
    pub brier_sum: f64,
    /// Brier score: brier_sum / joined.
    pub brier: Option<f64>,
    /// Per threshold.
    pub thresholds: Vec<Confusion>,
    /// Calibration.
    pub reliability: Vec<ReliabilityBin>,
}

impl LabelStats {
    /// Empty stats at these thresholds (the review and decline thresholds).
    pub fn new(thresholds: &[f64]) -> Self {
        Self {
            thresholds: thresholds.iter().map(|&t| Confusion { threshold: t, ..Default::default() }).collect(),
            reliability: (0..RELIABILITY_BINS)
                .map(|i| ReliabilityBin {
                    lo: i as f64 / RELIABILITY_BINS as f64,
                    hi: (i + 1) as f64 / RELIABILITY_BINS as f64,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Adds one joined label.
    pub fn add(&mut self, score: f64, positive: bool) {
        let y = if positive { 1.0 } else { 0.0 };
        self.joined += 1;
        self.brier_sum += (score - y) * (score - y);
        for c in &mut self.thresholds {
            match (score >= c.threshold, positive) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, true) => c.r#fn += 1,
                (false, false) => c.tn += 1,
            }
        }
        let i = ((score * RELIABILITY_BINS as f64) as usize).min(RELIABILITY_BINS - 1);
        let b = &mut self.reliability[i];
        b.count += 1;
        b.score_sum += score;
        b.positives += i64::from(positive);
        self.derive();
    }

    /// Adds `o`'s counts.
    pub fn merge(&mut self, o: &LabelStats) {
        self.joined += o.joined;
        self.unknown += o.unknown;
        self.invalid += o.invalid;
        self.brier_sum += o.brier_sum;
        for (a, b) in self.thresholds.iter_mut().zip(&o.thresholds) {
            a.tp += b.tp;
            a.fp += b.fp;
            a.r#fn += b.r#fn;
            a.tn += b.tn;
        }
        for (a, b) in self.reliability.iter_mut().zip(&o.reliability) {
            a.count += b.count;
            a.score_sum += b.score_sum;
            a.positives += b.positives;
        }
        self.derive();
    }

    /// Recomputes precision, recall and Brier from the counts.
    pub fn derive(&mut self) {
        self.brier = (self.joined > 0).then(|| self.brier_sum / self.joined as f64);
        for c in &mut self.thresholds {
            c.precision = (c.tp + c.fp > 0).then(|| c.tp as f64 / (c.tp + c.fp) as f64);
            c.recall = (c.tp + c.r#fn > 0).then(|| c.tp as f64 / (c.tp + c.r#fn) as f64);
        }
    }
}

/// A label message: `{"event_id": "...", "label": 1}` (label 0/1 or true/false).
#[derive(Debug, Deserialize)]
struct LabelMsg {
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    label: Option<serde_json::Value>,
}

/// Parses a label message: (event id, positive) or None if unreadable.
pub fn parse_label(payload: &[u8]) -> Option<(String, bool)> {
    let m: LabelMsg = serde_json::from_slice(payload).ok()?;
    let id = m.event_id.filter(|s| !s.is_empty())?;
    let positive = match m.label? {
        serde_json::Value::Bool(b) => b,
        serde_json::Value::Number(n) if n.as_f64() == Some(1.0) => true,
        serde_json::Value::Number(n) if n.as_f64() == Some(0.0) => false,
        _ => return None,
    };
    Some((id, positive))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked_precision_recall_and_brier() {
        // Five labeled events at thresholds 0.5 and 0.9.
        let mut s = LabelStats::new(&[0.5, 0.9]);
        for (score, y) in [(0.95, true), (0.6, false), (0.7, true), (0.2, true), (0.1, false)] {
            s.add(score, y);
        }
        // At 0.5: predicted positive {0.95, 0.6, 0.7}: tp 2, fp 1; fn 1 (0.2), tn 1 (0.1).
        let t = &s.thresholds[0];
        assert_eq!((t.tp, t.fp, t.r#fn, t.tn), (2, 1, 1, 1));
        assert_eq!(t.precision, Some(2.0 / 3.0));
        assert_eq!(t.recall, Some(2.0 / 3.0));
        // At 0.9: only 0.95: tp 1, fp 0, fn 2, tn 2.
        let t = &s.thresholds[1];
        assert_eq!((t.tp, t.fp, t.r#fn, t.tn), (1, 0, 2, 2));
        assert_eq!((t.precision, t.recall), (Some(1.0), Some(1.0 / 3.0)));
        // Brier: (0.05² + 0.6² + 0.3² + 0.8² + 0.1²) / 5 = 1.1025 / 5.
        assert!((s.brier.unwrap() - 0.2205).abs() < 1e-12, "{:?}", s.brier);
        // Reliability: 0.95 → bin 9, 0.6 → 6, 0.7 → 7, 0.2 → 2, 0.1 → 1.
        let counts: Vec<i64> = s.reliability.iter().map(|b| b.count).collect();
        assert_eq!(counts, [0, 1, 1, 0, 0, 0, 1, 1, 0, 1]);
        assert_eq!(s.reliability[9].positives, 1);
        // Merging two halves gives the same.
        let (mut a, mut b) = (LabelStats::new(&[0.5, 0.9]), LabelStats::new(&[0.5, 0.9]));
        for (i, (score, y)) in
            [(0.95, true), (0.6, false), (0.7, true), (0.2, true), (0.1, false)].into_iter().enumerate()
        {
            if i % 2 == 0 {
                a.add(score, y)
            } else {
                b.add(score, y)
            }
        }
        a.merge(&b);
        assert_eq!(a.thresholds, s.thresholds);
        assert!((a.brier.unwrap() - s.brier.unwrap()).abs() < 1e-15);
    }

    #[test]
    fn label_messages() {
        assert_eq!(parse_label(br#"{"event_id":"tx-1","label":1}"#), Some(("tx-1".into(), true)));
        assert_eq!(parse_label(br#"{"event_id":"tx-1","label":false}"#), Some(("tx-1".into(), false)));
        assert_eq!(parse_label(br#"{"event_id":"tx-1","label":0.5}"#), None);
        assert_eq!(parse_label(br#"{"label":1}"#), None);
        assert_eq!(parse_label(b"nope"), None);
    }
}
