//! The drift stage: takes a published batch's model rows, scores and decisions (and the
//! dead-letter reasons of events that did not decode) and adds them to this worker's drift
//! window; it hands nothing on. The scored-event sink is what the decide stage keeps
//! decided events in (for the delayed-label join).

use std::sync::Arc;
use std::time::Instant;

use crate::core::decision::Action;
use crate::drift::labels::ScoredSink;
use crate::drift::DriftRecorder;
use crate::stage::{Outcome, ScoredEvents, Stage, StageFailure, StagedBatch};
use crate::telemetry::Metrics;

/// Records a batch's inputs and outputs for the drift statistics.
pub struct Drift {
    recorder: DriftRecorder,
    metrics: Arc<Metrics>,
    actions: Vec<Action>,
}

impl Drift {
    /// Observes into `recorder` (this worker's window).
    pub fn new(recorder: DriftRecorder, metrics: Arc<Metrics>) -> Self {
        Self { recorder, metrics, actions: Vec::new() }
    }
}

impl Stage for Drift {
    fn name(&self) -> &'static str {
        "drift"
    }

    fn run(&mut self, b: &mut StagedBatch) -> Result<(), StageFailure> {
        let t = Instant::now();
        self.actions.clear();
        self.actions.extend(b.decisions.iter().map(|d| d.action));
        let dead: Vec<&str> = b
            .outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Dead(e) => Some(e.reason.code()),
                Outcome::Decided(_) => None,
            })
            .collect();
        self.recorder.observe(&b.rows, &b.scores, (&b.class_scores, b.classes.len()), &self.actions, &dead);
        self.metrics.stage_seconds.with_label_values(&["drift"]).observe(t.elapsed().as_secs_f64());
        Ok(())
    }
}

impl ScoredEvents for ScoredSink {
    fn keep(&self, event_id: &str, score: f32, action: Action) {
        ScoredSink::keep(self, event_id, score, action);
    }

    fn keep_with_trial(&self, event_id: &str, score: f32, action: Action, trial: Option<(f32, u64)>) {
        ScoredSink::keep_paired(self, event_id, score, action, trial);
    }
}
