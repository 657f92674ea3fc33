//! Decide stage: score → action with a reason code.
//!
//! Threshold bands are the default decision; a rules file ([`set`]) adds expression rules
//! over the event, its features and windows, the score and named lists, which can
//! override the band ([`set`] documents the conflict resolution). Rule sets are reloaded
//! live ([`live`]); each batch is decided by exactly one version.

pub mod config;
pub mod expr;
pub mod live;
pub mod set;
pub mod stage;

use std::sync::Arc;

pub use crate::core::decision::{Action, Actions, Decision, RuleHit, RuleMode};
pub use live::{LiveRules, RulesHandle};
pub use set::{RuleSet, RulesOutcome};

use config::DecideConfig;

/// The names rules can read besides event fields: the enrichment names, then a multi-output
/// model's class scores (`score:<class>`, read as `scores.<class>`), in the order the decide
/// stage lays out each event's values.
pub fn readable_names(enriched: &[String], classes: &[String]) -> Vec<String> {
    let mut names = enriched.to_vec();
    names.extend(classes.iter().map(|c| format!("{}{c}", expr::CLASS_SCORE)));
    names
}

/// Score bands of the decision vocabulary: each score gets the action whose band it falls in
/// (by default below `review_at` approve, below `decline_at` review, else decline).
#[derive(Debug, Clone)]
pub struct ThresholdBands {
    actions: Arc<Actions>,
    /// Reason code per action (by vocabulary index).
    reasons: Vec<Arc<str>>,
    fallback: (Action, Arc<str>),
    /// The empty rules version of a band decision (cloned: no allocation per event).
    unversioned: Arc<str>,
}

/// Reason code: decided without the model because the event's deadline had passed.
pub const REASON_FALLBACK: &str = "deadline_fallback";

/// Reason code: score below the review threshold.
pub const REASON_LOW: &str = "score_below_review_threshold";
/// Reason code: score in the review band.
pub const REASON_REVIEW: &str = "score_in_review_band";
/// Reason code: score at or above the decline threshold.
pub const REASON_DECLINE: &str = "score_above_decline_threshold";

/// Reason code prefix of a named vocabulary's band: `score_band_<action>`.
pub const REASON_BAND: &str = "score_band_";

impl ThresholdBands {
    /// Bands of `cfg`'s vocabulary (validated when the config was loaded).
    pub fn new(cfg: &DecideConfig) -> Self {
        Self::of(Arc::new(cfg.actions()))
    }

    /// Bands of a vocabulary.
    pub fn of(actions: Arc<Actions>) -> Self {
        let reasons = if actions.is_fraud() {
            vec![REASON_LOW.into(), REASON_REVIEW.into(), REASON_DECLINE.into()]
        } else {
            actions.all().iter().map(|a| format!("{REASON_BAND}{}", a.label()).into()).collect()
        };
        let fallback = (actions.fallback(), REASON_FALLBACK.into());
        Self { actions, reasons, fallback, unversioned: Arc::from("") }
    }

    /// The vocabulary.
    pub fn actions(&self) -> &Arc<Actions> {
        &self.actions
    }

    /// The band decision for one score.
    pub fn decide(&self, score: f32) -> Decision {
        let action = self.actions.band(score);
        Decision {
            action,
            action_name: None,
            reason: self.reasons[action.index()].clone(),
            score,
            rule_hits: Vec::new(),
            rule_errors: 0,
            rules_version: self.unversioned.clone(),
            review_priority: None,
            fallback: false,
            top: Vec::new(),
        }
    }

    /// The decision without a score (deadline passed): the configured fallback action.
    pub fn fallback(&self) -> Decision {
        let mut d = self.decide(f32::NAN);
        d.action = self.fallback.0;
        d.reason = self.fallback.1.clone();
        d.fallback = true;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_are_half_open_at_each_threshold() {
        let b = ThresholdBands::new(&DecideConfig { review_at: 0.5, decline_at: 0.9, ..Default::default() });
        assert_eq!(b.decide(0.49).action, Action::APPROVE);
        assert_eq!(b.decide(0.5).action, Action::REVIEW);
        assert_eq!(b.decide(0.8999).action, Action::REVIEW);
        assert_eq!(b.decide(0.9).action, Action::DECLINE);
        assert_eq!(&*b.decide(0.95).reason, REASON_DECLINE);
        let b = ThresholdBands::new(&DecideConfig { review_at: 0.7, decline_at: 0.7, ..Default::default() });
        assert_eq!(b.decide(0.7).action, Action::DECLINE, "an empty review band reviews nothing");
        assert_eq!(b.fallback().action, Action::REVIEW);
    }
}
