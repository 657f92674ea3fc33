//! The decision vocabulary: what happens to an event ([`Action`]), which rules fired
//! ([`RuleHit`]) and the whole outcome ([`Decision`]).
//!
//! In `core` because the decide stage makes decisions and the publish and drift stages
//! record them; neither should need the rules engine to name one.

use std::sync::Arc;

use serde::Serialize;

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
    pub id: Arc<str>,
    /// Reason code of the rule.
    pub reason: Arc<str>,
    /// Enforce or monitor.
    pub mode: RuleMode,
    /// The rule's action (approve / review / decline or its custom name).
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
}
