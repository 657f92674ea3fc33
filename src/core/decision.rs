//! One event's outcome: what happens to it ([`Action`], one of the configured [`Actions`],
//! defined in [`super::actions`]), which rules fired ([`RuleHit`]), the whole outcome
//! ([`Decision`]) and a multi-output model's classes ([`Classes`]).
//!
//! In `core` because the decide stage makes decisions and the publish and drift stages
//! record them; neither should need the rules engine to name one.

use std::sync::Arc;

use serde::Serialize;

pub use super::actions::{Action, ActionSpec, Actions, MAX_ACTIONS};

/// Whether a rule acts or is only recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleMode {
    /// The rule's action takes effect.
    Enforce,
    /// Recorded in the decision, never acting.
    Monitor,
}

/// A rule that fired for an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleHit {
    /// Rule id.
    pub id: Arc<str>,
    /// Reason code of the rule.
    pub reason: Arc<str>,
    /// Enforce or monitor.
    pub mode: RuleMode,
    /// The rule's action (a vocabulary action's name, or its custom name).
    pub action: Arc<str>,
}

/// The outcome for one event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The action taken.
    pub action: Action,
    /// The deciding rule's custom action name, if it has one (`action` is what it routes as).
    pub action_name: Option<Arc<str>>,
    /// Reason code of the band or rule that decided.
    pub reason: Arc<str>,
    /// Positive-class probability.
    pub score: f32,
    /// Rules that fired, enforce and monitor (empty with bands alone).
    pub rule_hits: Vec<RuleHit>,
    /// Rules whose condition could not be evaluated for this event (absent value, type).
    pub rule_errors: u32,
    /// Content hash of the rules file that decided ("" with bands alone).
    pub rules_version: Arc<str>,
    /// Review-queue priority (review decisions only; higher first).
    pub review_priority: Option<i64>,
    /// Decided without the model: the event's deadline had passed (score is NaN).
    pub fallback: bool,
    /// A multi-output model's best classes for this event, best first: (class index,
    /// score), at most `top_k`, each at or above `min_score` (empty otherwise). Records
    /// write them by class name.
    #[serde(skip)]
    pub top: Vec<(u16, f32)>,
}

/// A multi-output model's classes and how many of them a decision carries (from its
/// manifest: `classes`, `top_k`, `min_score`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Classes {
    /// Class names, in the model output's column order (empty: a one-score model).
    pub names: Vec<String>,
    /// How many of the best classes a decision carries.
    pub top_k: usize,
    /// A class is carried only with at least this score.
    pub min_score: f32,
}

impl Classes {
    /// How many classes the model scores (0 for a one-score model).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether this is a one-score model.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The best `top_k` of one event's class `scores` at or above `min_score` into `out`,
    /// best first; equal scores in class order, so the choice is the same every time. NaN
    /// scores (decided without the model) choose none.
    pub fn top(&self, scores: &[f32], out: &mut Vec<(u16, f32)>) {
        out.clear();
        out.extend(scores.iter().enumerate().filter(|(_, s)| **s >= self.min_score).map(|(i, &s)| (i as u16, s)));
        out.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(self.top_k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_classes_are_the_best_at_or_above_the_minimum_ties_in_class_order() {
        let c = Classes { names: (0..5).map(|i| format!("c{i}")).collect(), top_k: 3, min_score: 0.1 };
        let mut out = Vec::new();
        c.top(&[0.05, 0.3, 0.1, 0.3, 0.25], &mut out);
        assert_eq!(out, vec![(1, 0.3), (3, 0.3), (4, 0.25)]);
        c.top(&[0.05, 0.09, 0.1, 0.0, 0.0], &mut out);
        assert_eq!(out, vec![(2, 0.1)], "fewer than top_k reach the minimum");
        c.top(&[f32::NAN; 5], &mut out);
        assert!(out.is_empty(), "a late event's NaN scores choose nothing");
    }
}
