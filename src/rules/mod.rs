//! Decide stage: score → action with a reason code.
//!
//! Threshold bands are the default decision. [`Decision`] already carries rule hits
//! so that a rules engine can add or override without changing the record.

use serde::Serialize;

use crate::config::DecideConfig;

/// What happens to the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let it through.
    Approve,
    /// Send to a human; also published to the review topic.
    Review,
    /// Block it.
    Decline,
}

impl Action {
    /// Lowercase label (metrics, JSON).
    pub fn label(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Review => "review",
            Action::Decline => "decline",
        }
    }

    /// Index in the Avro `Action` enum symbols.
    pub fn avro_index(self) -> i64 {
        self as i64
    }
}

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
    pub id: String,
    /// Reason code of the rule.
    pub reason: String,
    /// Enforce or monitor.
    pub mode: RuleMode,
}

/// The outcome for one event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The action taken.
    pub action: Action,
    /// Reason code of the band or rule that decided.
    pub reason: &'static str,
    /// Positive-class probability.
    pub score: f32,
    /// Rules that fired (empty with bands alone).
    pub rule_hits: Vec<RuleHit>,
}

/// Score bands: below `review_at` approve, below `decline_at` review, else decline.
#[derive(Debug, Clone, Copy)]
pub struct ThresholdBands {
    review_at: f32,
    decline_at: f32,
}

/// Reason code: score below the review threshold.
pub const REASON_LOW: &str = "score_below_review_threshold";
/// Reason code: score in the review band.
pub const REASON_REVIEW: &str = "score_in_review_band";
/// Reason code: score at or above the decline threshold.
pub const REASON_DECLINE: &str = "score_above_decline_threshold";

impl ThresholdBands {
    /// Bands from config (validated: `review_at <= decline_at`).
    pub fn new(cfg: &DecideConfig) -> Self {
        Self { review_at: cfg.review_at as f32, decline_at: cfg.decline_at as f32 }
    }

    /// The band decision for one score.
    pub fn decide(&self, score: f32) -> Decision {
        let (action, reason) = if score >= self.decline_at {
            (Action::Decline, REASON_DECLINE)
        } else if score >= self.review_at {
            (Action::Review, REASON_REVIEW)
        } else {
            (Action::Approve, REASON_LOW)
        };
        Decision { action, reason, score, rule_hits: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_are_half_open_at_each_threshold() {
        let b = ThresholdBands::new(&DecideConfig { review_at: 0.5, decline_at: 0.9 });
        assert_eq!(b.decide(0.49).action, Action::Approve);
        assert_eq!(b.decide(0.5).action, Action::Review);
        assert_eq!(b.decide(0.8999).action, Action::Review);
        assert_eq!(b.decide(0.9).action, Action::Decline);
        assert_eq!(b.decide(0.95).reason, REASON_DECLINE);
    }
}
