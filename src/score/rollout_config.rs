//! Configuration of guarded model rollout (`[model.rollout]`).
//!
//! `config` composes this into the one tree ([`crate::config::Config`]) under `model`;
//! serde names, defaults and `deny_unknown_fields` are the file format, so change them here.

use serde::{Deserialize, Serialize};

/// How a new model version found in the model directory comes to serve.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RolloutMode {
    /// Scored alongside the serving model as a candidate until the promotion criteria hold;
    /// watched after promotion and rolled back when it regresses.
    #[default]
    Guarded,
    /// Serves as soon as it loads and validates (no candidate phase, no watch).
    Immediate,
}

/// Promotion criteria and the watch after promotion.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    /// `guarded` (default) or `immediate`.
    pub mode: RolloutMode,
    /// Share of events the candidate (and, after promotion, the previous version) scores
    /// alongside the serving model, by event-id hash (1.0: every event). It never decides.
    pub share: f64,
    /// Events the candidate must have scored before it is judged.
    pub min_events: u64,
    /// Seconds the candidate must have run before it is promoted.
    pub min_seconds: u64,
    /// Least share of events whose threshold-band action the candidate agrees on with the
    /// serving model.
    pub min_agreement: f64,
    /// Largest PSI of the candidate's scores against its manifest's score baseline
    /// (not checked when the manifest has no baseline).
    pub max_score_psi: f64,
    /// Largest candidate p99 scoring time per row, as a multiple of the serving model's on
    /// the same batches.
    pub max_latency_ratio: f64,
    /// After promotion the previous version is kept as a shadow for at least this many seconds...
    pub watch_seconds: u64,
    /// ...and this many decided events (both), while it may be rolled back to.
    pub watch_events: u64,
    /// Rolled back when, on the same labelled events, the new version's precision or recall
    /// at a threshold is lower than the previous version's by more than this, or its Brier
    /// score higher by more than this.
    pub max_regression: f64,
    /// Labelled events (scored by both versions) needed before labels are compared.
    pub min_labels: u64,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            mode: RolloutMode::Guarded,
            share: 1.0,
            min_events: 5_000,
            min_seconds: 300,
            min_agreement: 0.95,
            max_score_psi: 0.25,
            max_latency_ratio: 3.0,
            watch_seconds: 3_600,
            watch_events: 50_000,
            max_regression: 0.05,
            min_labels: 200,
        }
    }
}

impl RolloutConfig {
    /// Every problem, each as `model.rollout.key: what is wrong`.
    pub fn validate(&self) -> Vec<String> {
        let mut e = Vec::new();
        let p = "model.rollout";
        if !(self.share > 0.0 && self.share <= 1.0) {
            e.push(format!("{p}.share: must be within (0, 1], got {}", self.share));
        }
        if self.min_events == 0 {
            e.push(format!("{p}.min_events: must be > 0"));
        }
        if !(0.0..=1.0).contains(&self.min_agreement) {
            e.push(format!("{p}.min_agreement: must be within [0, 1], got {}", self.min_agreement));
        }
        if self.max_score_psi.is_nan() || self.max_score_psi < 0.0 {
            e.push(format!("{p}.max_score_psi: must be >= 0, got {}", self.max_score_psi));
        }
        if self.max_latency_ratio.is_nan() || self.max_latency_ratio < 1.0 {
            e.push(format!("{p}.max_latency_ratio: must be >= 1, got {}", self.max_latency_ratio));
        }
        if !(0.0..=1.0).contains(&self.max_regression) {
            e.push(format!("{p}.max_regression: must be within [0, 1], got {}", self.max_regression));
        }
        e
    }
}
