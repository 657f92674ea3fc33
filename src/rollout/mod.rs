//! Guarded model rollout (`model.rollout.mode = "guarded"`, the default). A new valid
//! version found in the model directory does not serve at once:
//!
//! 1. **candidate**: every worker scores its share of events with it after the serving
//!    model ([`Trial`]); it never decides. Once it has scored `min_events`, it is refused at
//!    the first failing criterion (agreement of band actions, score PSI against its
//!    manifest's baseline, scoring errors, p99 latency per row); when all hold for
//!    `min_seconds` it is **promoted**: a new generation serves it.
//! 2. **watch**: the previous version stays loaded as the trial, so both versions score
//!    the same events and the label join sees both scores. If the new version's precision
//!    or recall at the thresholds, or its Brier score, regress beyond `max_regression`
//!    against the previous version's on those labelled events, or its score PSI crosses
//!    `drift.psi_alert`, verdict **rolls back** (a new generation serving the previous
//!    version, the new one refused until the directory changes). After `watch_seconds` and
//!    `watch_events` without either, the new version is **kept** and the previous let go.
//!
//! The state machine is here; [`crate::reload`] loads versions and offers the workers the
//! changes it decides; [`criteria`] holds the judgements as pure functions.

pub use crate::score::rollout_config as config;
pub mod criteria;
pub mod observe;
mod transition;
pub mod trial;

use std::sync::Arc;

use parking_lot::Mutex;

pub use config::{RolloutConfig, RolloutMode};
pub use observe::Observed;
pub use transition::{To, TransitionRecord, Transitions};
pub use trial::Trial;

use crate::drift::FeatureBaseline;
use criteria::{judge_candidate, judge_watch, Evidence, Judgement, Watch};

/// What the reloader must do after a [`Rollout::tick`].
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Serve the candidate (its directory fingerprint); the serving version becomes the
    /// trial under `epoch`.
    Promote {
        /// The watch's epoch.
        epoch: u64,
        /// The promoted version's fingerprint.
        fingerprint: Vec<u8>,
    },
    /// Drop the candidate; do not load this fingerprint again.
    Refuse {
        /// The refused version's fingerprint.
        fingerprint: Vec<u8>,
    },
    /// Serve the trial (the previous version) again and drop the serving one.
    RollBack {
        /// The rolled-back version's fingerprint (not loaded again).
        refused: Vec<u8>,
        /// The previous version's fingerprint (serving again).
        serving: Vec<u8>,
    },
    /// Drop the trial (the previous version).
    Keep,
}

#[derive(Debug, Clone)]
struct Version {
    name: String,
    version: String,
    fingerprint: Vec<u8>,
    baseline: Option<FeatureBaseline>,
}

enum Phase {
    Steady,
    Candidate { new: Version, serving: Version },
    Watching { new: Version, previous: Version },
}

/// The rollout state machine of one instance.
pub struct Rollout {
    cfg: RolloutConfig,
    psi_alert: f64,
    observed: Arc<Observed>,
    transitions: Transitions,
    state: Mutex<(u64, Phase)>,
}

impl Rollout {
    /// A rollout with nothing on trial; `psi_alert` is the drift alert level (`drift.psi_alert`).
    pub fn new(cfg: RolloutConfig, psi_alert: f64, observed: Arc<Observed>, transitions: Transitions) -> Self {
        for to in To::ALL {
            transitions.metrics.model_transitions.with_label_values(&[to.label()]);
        }
        Self { cfg, psi_alert, observed, transitions, state: Mutex::new((0, Phase::Steady)) }
    }

    /// The configuration.
    pub fn config(&self) -> &RolloutConfig {
        &self.cfg
    }

    /// The tallies workers report to.
    pub fn observed(&self) -> &Arc<Observed> {
        &self.observed
    }

    /// Whether a candidate or a watched previous version is on trial.
    pub fn on_trial(&self) -> bool {
        !matches!(self.state.lock().1, Phase::Steady)
    }

    /// The candidate's fingerprint, while there is one (it is not loaded again).
    pub fn candidate_fingerprint(&self) -> Option<Vec<u8>> {
        match &self.state.lock().1 {
            Phase::Candidate { new, .. } => Some(new.fingerprint.clone()),
            _ => None,
        }
    }

    /// A new version goes on trial against `serving` (replacing any candidate or watch).
    /// Returns the trial's epoch.
    pub fn candidate(
        &self,
        name: &str,
        version: &str,
        fingerprint: Vec<u8>,
        baseline: Option<FeatureBaseline>,
        serving: (&str, Vec<u8>, Option<FeatureBaseline>),
    ) -> u64 {
        let mut st = self.state.lock();
        st.0 += 1;
        let epoch = st.0;
        self.observed.reset(epoch, true, baseline.clone());
        let new = Version { name: name.into(), version: version.into(), fingerprint, baseline };
        let serving =
            Version { name: name.into(), version: serving.0.into(), fingerprint: serving.1, baseline: serving.2 };
        let reason = "a new version in the model directory: scored alongside the serving one".to_string();
        self.emit(To::Candidate, &new, &serving.version, Some(&serving.version), reason, Evidence::default(), None);
        self.transitions.metrics.set_rollout(&serving.version, Some(&new.version), None);
        st.1 = Phase::Candidate { new, serving };
        epoch
    }

    /// A version that cannot be put on trial (its inputs differ from the serving model's).
    pub fn refuse(&self, name: &str, version: &str, serving: &str, reason: String) {
        let v = Version { name: name.into(), version: version.into(), fingerprint: Vec::new(), baseline: None };
        self.emit(To::Refused, &v, serving, Some(serving), reason, Evidence::default(), None);
    }

    /// Judges the phase; returns what the reloader must do, if anything.
    pub fn tick(&self) -> Option<Step> {
        let mut st = self.state.lock();
        let (e, serving_labels, trial_labels) = self.observed.evidence();
        match std::mem::replace(&mut st.1, Phase::Steady) {
            Phase::Steady => None,
            Phase::Candidate { new, serving } => match judge_candidate(&self.cfg, &e) {
                Judgement::Wait => {
                    st.1 = Phase::Candidate { new, serving };
                    None
                }
                Judgement::Refuse(why) => {
                    self.emit(To::Refused, &new, &serving.version, Some(&serving.version), why, e, None);
                    self.transitions.metrics.set_rollout(&serving.version, None, None);
                    Some(Step::Refuse { fingerprint: new.fingerprint })
                }
                Judgement::Promote => {
                    st.0 += 1;
                    let epoch = st.0;
                    self.observed.reset(epoch, false, new.baseline.clone());
                    let why = "every promotion criterion held".to_string();
                    self.emit(To::Promoted, &new, &new.version, Some(&serving.version), why, e, None);
                    self.transitions.metrics.set_rollout(&new.version, None, Some(&serving.version));
                    let fingerprint = new.fingerprint.clone();
                    st.1 = Phase::Watching { new, previous: serving };
                    Some(Step::Promote { epoch, fingerprint })
                }
            },
            Phase::Watching { new, previous } => {
                // The score PSI of a handful of events is noise: the alarm needs min_events.
                let alarm = e.score_psi.filter(|&p| p > self.psi_alert && e.events >= self.cfg.min_events);
                let labels = Some((serving_labels.clone(), trial_labels.clone()));
                match judge_watch(&self.cfg, &e, &serving_labels, &trial_labels, alarm) {
                    Watch::Wait => {
                        st.1 = Phase::Watching { new, previous };
                        None
                    }
                    Watch::Keep => {
                        let why = "the watch ended without a regression".to_string();
                        self.emit(To::Kept, &new, &new.version, Some(&previous.version), why, e, labels);
                        self.transitions.metrics.set_rollout(&new.version, None, None);
                        Some(Step::Keep)
                    }
                    Watch::RollBack(why) => {
                        self.emit(To::RolledBack, &new, &previous.version, Some(&previous.version), why, e, labels);
                        self.transitions.metrics.set_rollout(&previous.version, None, None);
                        Some(Step::RollBack { refused: new.fingerprint, serving: previous.fingerprint })
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &self,
        to: To,
        v: &Version,
        serving: &str,
        other: Option<&str>,
        reason: String,
        evidence: Evidence,
        labels: Option<(crate::drift::labels::LabelStats, crate::drift::labels::LabelStats)>,
    ) {
        let (labels, other_labels) = labels.map(|(a, b)| (Some(a), Some(b))).unwrap_or_default();
        self.transitions.emit(TransitionRecord {
            kind: "model_transition",
            to,
            model: v.name.clone(),
            version: v.version.clone(),
            serving_version: serving.into(),
            other_version: other.map(str::to_string),
            reason,
            evidence,
            labels,
            other_labels,
            instance: String::new(),
            at_ms: 0,
        });
    }
}
