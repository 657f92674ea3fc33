//! Transitions of a guarded rollout: each one is logged once, counted
//! (`verdict_model_transitions_total{to}`), shown on `/readyz` and published as a JSON
//! record on the drift topic.

use std::sync::Arc;

use serde::Serialize;

use super::criteria::Evidence;
use crate::core::clock::wall_clock_ms;
use crate::core::output::RecordSink;
use crate::drift::labels::LabelStats;
use crate::telemetry::Metrics;

/// Where a version went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum To {
    /// Loaded and validated; scored alongside the serving version, on trial.
    Candidate,
    /// Serving; the previous version is watched as a shadow.
    Promoted,
    /// A criterion failed; not served until the directory changes again.
    Refused,
    /// Regressed in its watch; the previous version serves again.
    RolledBack,
    /// Its watch ended without a regression; the previous version is let go.
    Kept,
}

impl To {
    /// Metric label and log word.
    pub fn label(self) -> &'static str {
        match self {
            To::Candidate => "candidate",
            To::Promoted => "promoted",
            To::Refused => "refused",
            To::RolledBack => "rolled_back",
            To::Kept => "kept",
        }
    }

    /// Every transition (to pre-register the metric's labels).
    pub const ALL: [To; 5] = [To::Candidate, To::Promoted, To::Refused, To::RolledBack, To::Kept];
}

/// One transition, as published on the drift topic.
#[derive(Debug, Clone, Serialize)]
pub struct TransitionRecord {
    /// Always `model_transition` (drift windows have no `kind`).
    pub kind: &'static str,
    /// What happened.
    pub to: To,
    /// Model name.
    pub model: String,
    /// The version the transition is about.
    pub version: String,
    /// The version serving after it.
    pub serving_version: String,
    /// The other version involved: the serving one for a candidate, the previous one after
    /// a promotion, a rollback or a watch.
    pub other_version: Option<String>,
    /// Why, in words.
    pub reason: String,
    /// The figures it was decided on.
    pub evidence: Evidence,
    /// Label statistics of `version` on the labelled events both versions scored.
    pub labels: Option<LabelStats>,
    /// Label statistics of `other_version` on the same events.
    pub other_labels: Option<LabelStats>,
    /// Instance that decided it.
    pub instance: String,
    /// When, ms since epoch.
    pub at_ms: i64,
}

/// Publishes transitions.
pub struct Transitions {
    /// The drift topic, and the producer (None: drift records off, transitions only logged).
    pub sink: Option<(String, Arc<dyn RecordSink>)>,
    /// Instance id (record key).
    pub instance: String,
    /// Counters and the `/readyz` view.
    pub metrics: Arc<Metrics>,
}

impl Transitions {
    /// Logs, counts and publishes `r`.
    pub fn emit(&self, mut r: TransitionRecord) {
        r.instance.clone_from(&self.instance);
        r.at_ms = wall_clock_ms();
        let e = &r.evidence;
        let other = r.other_version.as_deref().unwrap_or("");
        let fields = format!(
            "events={} seconds={:.0} agreement={:?} errors={} score_psi={:?} serving_p99_us={:?} trial_p99_us={:?}",
            e.events, e.seconds, e.agreement, e.errors, e.score_psi, e.serving_p99_us, e.trial_p99_us
        );
        match r.to {
            To::Refused | To::RolledBack => {
                tracing::warn!(model = %r.model, version = %r.version, other, serving = %r.serving_version,
                reason = %r.reason, figures = %fields, "model {}", r.to.label())
            }
            _ => tracing::info!(model = %r.model, version = %r.version, other, serving = %r.serving_version,
                reason = %r.reason, figures = %fields, "model {}", r.to.label()),
        }
        self.metrics.model_transitions.with_label_values(&[r.to.label()]).inc();
        let Some((topic, sink)) = &self.sink else { return };
        match serde_json::to_vec(&r) {
            Ok(p) => {
                if let Err(e) = sink.send_record(topic, Some(self.instance.as_bytes()), &p) {
                    tracing::warn!(error = %e, "model transition record not sent");
                }
            }
            Err(e) => tracing::error!(error = %e, "model transition record not encoded"),
        }
    }
}
