//! The decode stage: takes the batch's raw messages and hands on, per event, its decoded
//! identity (or the reason it goes to the dead-letter topic) and the decoded events' model
//! rows. The rules snapshot stamped on the batch says which event fields to extract for the
//! rules; a new rules version rebuilds the extraction paths once.

use std::sync::Arc;
use std::time::Instant;

use crate::decode::Decoder;
use crate::rules::RuleSet;
use crate::stage::{Outcome, Stage, StageFailure, StagedBatch};
use crate::telemetry::Metrics;

/// Decodes every message of a batch.
pub struct Decode {
    decoder: Decoder,
    /// The rules version whose paths the decoder extracts.
    rules_seen: Option<Arc<RuleSet>>,
    metrics: Arc<Metrics>,
}

impl Decode {
    /// From a decoder for the serving model's columns.
    pub fn new(decoder: Decoder, metrics: Arc<Metrics>) -> Self {
        Self { decoder, rules_seen: None, metrics }
    }

    /// Swaps in a decoder for another model's columns, extracting the same rule fields.
    pub fn replace_decoder(&mut self, mut decoder: Decoder) {
        if let Some(set) = &self.rules_seen {
            decoder.set_rule_paths(set.event_paths());
        }
        self.decoder = decoder;
    }
}

impl Stage for Decode {
    fn name(&self) -> &'static str {
        "decode"
    }

    fn run(&mut self, b: &mut StagedBatch) -> Result<(), StageFailure> {
        let t = Instant::now();
        let set = &b.rules().set;
        if !self.rules_seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, set)) {
            self.decoder.set_rule_paths(set.event_paths());
            self.rules_seen = Some(set.clone());
        }
        b.outcomes.clear();
        b.rows.clear();
        let mut dec = self.decoder.batch();
        for ev in &b.batch.events {
            let start = b.rows.len();
            match dec.decode(ev.payload.payload.as_deref(), b.rows.push()) {
                Ok(d) => b.outcomes.push(Outcome::Decided(d)),
                Err(e) => {
                    b.rows.truncate(start);
                    b.outcomes.push(Outcome::Dead(e));
                }
            }
        }
        self.metrics.stage_seconds.with_label_values(&["decode"]).observe(t.elapsed().as_secs_f64());
        Ok(())
    }
}
