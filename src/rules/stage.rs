//! The decide stage: takes the scores (and the deadline mask, the enriched values and the
//! event fields the rules read) and hands on one decision per decoded event: the score's
//! band, or the fallback action for an event decided without the model, then the rules of
//! the batch's snapshot, the review priority, and what the shadow model's score would have
//! decided. Decided events go to the scored-event sink for the delayed-label join.

use std::sync::Arc;
use std::time::Instant;

use super::expr::Scope;
use super::{RuleMode, RulesOutcome, ThresholdBands};
use crate::stage::{ScoredEvents, Stage, StageFailure, StagedBatch};
use crate::telemetry::Metrics;

/// Decides a scored batch.
pub struct Decide {
    bands: ThresholdBands,
    /// Scored events kept for the delayed-label join.
    scored: Option<Arc<dyn ScoredEvents>>,
    metrics: Arc<Metrics>,
    out: RulesOutcome,
    /// How often each rule of the batch's snapshot fired in the last batch.
    fired: Vec<u64>,
    /// A multi-output model's event: its enrichment values, then its class scores (what
    /// rules read as `scores.<class>`, after the enrichment names).
    scope_values: Vec<Option<f64>>,
    /// Decisions per action (vocabulary index) in the last batch.
    counts: Vec<u64>,
}

impl Decide {
    /// With the score bands (`decide.*`).
    pub fn new(bands: ThresholdBands, metrics: Arc<Metrics>) -> Self {
        Self {
            bands,
            scored: None,
            metrics,
            out: RulesOutcome::default(),
            fired: Vec::new(),
            scope_values: Vec::new(),
            counts: Vec::new(),
        }
    }

    /// Hands every event decided with the model to `scored`.
    pub fn with_scored(mut self, scored: Option<Arc<dyn ScoredEvents>>) -> Self {
        self.scored = scored;
        self
    }

    /// How often each rule (in the snapshot's order) fired in the last batch.
    pub fn fired(&self) -> &[u64] {
        &self.fired
    }
}

impl Stage for Decide {
    fn name(&self) -> &'static str {
        "decide"
    }

    fn run(&mut self, b: &mut StagedBatch) -> Result<(), StageFailure> {
        let t = Instant::now();
        let m = &self.metrics;
        let live = b.batch.rules_as::<super::LiveRules>().expect("a rules snapshot is stamped on every staged batch");
        let set = &live.set;
        self.fired.clear();
        self.fired.resize(set.rules.len(), 0);
        let actions = self.bands.actions().clone();
        self.counts.clear();
        self.counts.resize(actions.len(), 0);
        let mut rule_errors = 0u64;
        let mut decisions = std::mem::take(&mut b.decisions);
        let mut shadow_actions = std::mem::take(&mut b.shadow_actions);
        decisions.clear();
        shadow_actions.clear();
        for (k, (_, d)) in b.decided().enumerate() {
            let score = b.scores[k];
            let late = b.is_late(k);
            let mut decision = if late { self.bands.fallback() } else { self.bands.decide(score) };
            if late {
                m.fallback_decisions.inc();
            }
            let classes = b.class_row(k);
            if !classes.is_empty() {
                b.classes.top(classes, &mut decision.top);
            }
            let enriched = if classes.is_empty() || set.rules.is_empty() {
                b.enriched_row(k)
            } else {
                self.scope_values.clear();
                self.scope_values.extend_from_slice(b.enriched_row(k));
                self.scope_values.resize(b.enriched_width, None);
                self.scope_values.extend(classes.iter().map(|&s| (!s.is_nan()).then_some(f64::from(s))));
                &self.scope_values
            };
            let scope = Scope { score: f64::from(score), fields: &d.fields, enriched, lists: &live.lists };
            if !set.rules.is_empty() {
                let out = &mut self.out;
                set.decide(decision.action, &scope, out, &mut self.fired);
                decision.action = out.action;
                if let Some(r) = out.reason.take() {
                    decision.reason = r;
                }
                decision.action_name = out.action_name.take();
                decision.rule_hits = std::mem::take(&mut out.hits);
                decision.rule_errors = out.errors;
                rule_errors += u64::from(out.errors);
            }
            decision.rules_version = set.version.clone();
            if decision.action.is_review() {
                let fixed = actions.review_priority(decision.action);
                decision.review_priority = Some(fixed.unwrap_or_else(|| set.review_priority(&scope)));
            }
            let shadow = b.shadow_scores.get(k).copied().flatten().map(|s| {
                let band = self.bands.decide(s).action;
                let action = if set.rules.is_empty() {
                    band
                } else {
                    // The decision took its hits already: the buffer is free to reuse.
                    let scope = Scope { score: f64::from(s), ..scope };
                    set.decide(band, &scope, &mut self.out, &mut []);
                    self.out.action
                };
                let agree = if action == decision.action { "true" } else { "false" };
                m.shadow_decisions.with_label_values(&[agree]).inc();
                action
            });
            shadow_actions.push(shadow);
            self.counts[decision.action.index()] += 1;
            if let (Some(s), false) = (&self.scored, decision.fallback) {
                let trial = b.trial_scores.get(k).copied().flatten().map(|t| (t, b.trial_epoch));
                s.keep_with_trial(&d.event_id, score, decision.action, trial);
            }
            decisions.push(decision);
        }
        b.decisions = decisions;
        b.shadow_actions = shadow_actions;
        for (a, &n) in actions.all().iter().zip(&self.counts) {
            m.count("decide", a.label(), n);
        }
        for (r, &n) in set.rules.iter().zip(&self.fired) {
            if n > 0 {
                let mode = if r.mode == RuleMode::Enforce { "enforce" } else { "monitor" };
                m.rule_hits.with_label_values(&[&*r.id, mode]).inc_by(n);
            }
        }
        m.rule_errors.inc_by(rule_errors);
        m.stage_seconds.with_label_values(&["decide"]).observe(t.elapsed().as_secs_f64());
        Ok(())
    }
}
