//! The one shape every pipeline stage has, and the batch they pass along.
//!
//! A stage is a struct built from its parts (a decoder, the enricher's turnstile, a model
//! session, the rules, a producer) with one method, [`Stage::run`], that reads what the stages
//! before it left in a [`StagedBatch`] and adds its own part. The service's worker and the
//! offline tools (`verdict vectorize`, `verdict check-rules`) run the same stage objects; only
//! the source of batches and what happens to the result differ.
//!
//! ```text
//! Batch ─▶ Decode ─▶ Enrich ─▶ Fill ─▶ Score ─▶ Decide ─▶ Publish ─▶ Drift
//!          outcomes   enriched  rows    scores   decisions pending
//!          rows       degraded  defaults late    shadow    produced
//!                                       shadow   actions
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::decision::{Action, Decision};
use crate::core::event::{DecodeError, DecodedEvent};
use crate::core::rows::Rows;
use crate::envelope::{Batch, Envelope, RawMessage};
use tokio_util::sync::CancellationToken;

/// One step of the pipeline over a whole batch.
pub trait Stage {
    /// The stage's name (metric label, dead-letter `stage` header).
    fn name(&self) -> &'static str;

    /// Adds this stage's part to `batch`; an error says what becomes of the batch.
    fn run(&mut self, batch: &mut StagedBatch) -> Result<(), StageFailure>;
}

/// Where the decide stage hands events decided with the model (the drift folder's
/// scored-event sink, for the delayed-label join); a trait so that the decide stage need
/// not know the drift folder.
pub trait ScoredEvents: Send + Sync {
    /// Keeps one decided event (never blocks).
    fn keep(&self, event_id: &str, score: f32, action: Action);

    /// Keeps one decided event with the score of the version on trial and its rollout
    /// epoch, so its label compares both versions.
    fn keep_with_trial(&self, event_id: &str, score: f32, action: Action, trial: Option<(f32, u64)>) {
        let _ = trial;
        self.keep(event_id, score, action);
    }
}

/// What happens to a batch a stage could not finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StageFailure {
    /// The pipeline is aborting: drop the batch, store nothing more.
    #[error("aborted")]
    Aborted,
    /// The batch cannot be decided: its events without an output yet go to the
    /// dead-letter topic as `internal_error`, and the batch completes.
    #[error("{stage}: {detail}")]
    DeadLetterRest {
        /// The stage that gave up (dead-letter `stage` header).
        stage: &'static str,
        /// Why (dead-letter detail header).
        detail: String,
    },
    /// Nothing can go on: the pipeline fails with this reason.
    #[error("{0}")]
    Stop(String),
}

/// One event's decode result.
#[derive(Debug)]
pub enum Outcome {
    /// Decoded: its model row is the next row of [`StagedBatch::rows`].
    Decided(DecodedEvent),
    /// Not decodable: it goes to the dead-letter topic with this reason.
    Dead(DecodeError),
}

/// A batch on its way through the stages. Its buffers are kept and cleared between
/// batches, so the hot path does not reallocate them.
///
/// Per-event vectors (`outcomes`, `redelivered`) have one entry per event of `batch`; per-row vectors
/// (`defaults`, `late`, `scores`, `shadow_scores`, `decisions`, `shadow_actions`) one per
/// decoded event, in batch order.
pub struct StagedBatch {
    /// The batch as consumed (its rules snapshot stamped before the stages run; the decide
    /// stage reads it back with [`Batch::rules_as`]).
    pub batch: Batch,
    /// The event paths the batch's rules read (the decoder extracts them); set with
    /// [`StagedBatch::set_rule_paths`] by whoever stamps the rules.
    rule_paths: Vec<String>,
    /// Per event: decoded, or why not (Decode).
    pub outcomes: Vec<Outcome>,
    /// Whether each event is a re-decision: its decision was already published before a
    /// crash or rebalance (set by the enrich stage from the partition's checkpoint).
    pub redelivered: Vec<bool>,
    /// The decoded events' model rows (Decode; Fill writes the enriched columns).
    pub rows: Rows,
    /// Enrichment values, `enriched_width` per decoded event (Enrich).
    pub enriched: Vec<Option<f64>>,
    /// Enrichment values per decoded event (0 without an enrich stage).
    pub enriched_width: usize,
    /// Per decoded event, the columns that took their default (Fill).
    pub defaults: Vec<Vec<u16>>,
    /// The state store failed and the batch was decided on defaults (Enrich).
    pub degraded: bool,
    /// Per decoded event, decided without the model: its deadline cannot be met (Score;
    /// empty when no deadline is set).
    pub late: Vec<bool>,
    /// When the deadline check ran and the scoring time it predicted (Score).
    pub checked: Option<(Instant, Duration)>,
    /// Per decoded event, the model's score (NaN when late) (Score).
    pub scores: Vec<f32>,
    /// A multi-output model's classes (empty for a one-score model) (Score).
    pub classes: Arc<crate::core::decision::Classes>,
    /// Per decoded event, `classes.len()` class scores (NaN when late) (Score).
    pub class_scores: Vec<f32>,
    /// Per decoded event, the shadow model's score if it scored it (Score).
    pub shadow_scores: Vec<Option<f32>>,
    /// Name and version of the shadow model that scored (Score).
    pub shadow_model: Option<(Arc<str>, Arc<str>)>,
    /// Per decoded event, the score of the version on trial (guarded rollout) if it scored
    /// it (Score); kept with the serving score for the label join.
    pub trial_scores: Vec<Option<f32>>,
    /// The rollout epoch `trial_scores` belong to (Score).
    pub trial_epoch: u64,
    /// Per decoded event, the decision (Decide).
    pub decisions: Vec<Decision>,
    /// Per decoded event, what the shadow model's score would have decided (Decide).
    pub shadow_actions: Vec<Option<Action>>,
    /// The outputs queued so far, kept here so a caught panic does not lose them (Publish).
    pub pending: crate::core::delivery::Deliveries,
    /// How many of the batch's events (from the first) have every output queued (Publish).
    pub produced: usize,
    /// The test-only fault armed for this batch (see `crate::fault`).
    pub fault: Option<crate::fault::Fault>,
    /// What the acker runs once the batch's outputs are acknowledged: the partitions'
    /// state checkpoints and acknowledged offsets (Enrich, partition-owned state).
    pub after_ack: Option<Box<dyn crate::envelope::AfterAck>>,
    /// Where the events' payload buffers go once the batch is done (the consumer reuses them).
    spent: Option<crate::envelope::Spent>,
}

impl StagedBatch {
    /// An empty staged batch whose rows have `rows`' layout.
    pub fn new(rows: Rows) -> Self {
        Self {
            batch: Batch { seq: 0, events: Vec::new(), rules: None, model_generation: 0, turns: Vec::new() },
            rule_paths: Vec::new(),
            outcomes: Vec::new(),
            redelivered: Vec::new(),
            rows,
            enriched: Vec::new(),
            enriched_width: 0,
            defaults: Vec::new(),
            degraded: false,
            late: Vec::new(),
            checked: None,
            scores: Vec::new(),
            classes: Arc::default(),
            class_scores: Vec::new(),
            shadow_scores: Vec::new(),
            shadow_model: None,
            trial_scores: Vec::new(),
            trial_epoch: 0,
            decisions: Vec::new(),
            shadow_actions: Vec::new(),
            pending: Default::default(),
            produced: 0,
            fault: None,
            after_ack: None,
            spent: None,
        }
    }

    /// Where finished batches' buffers go back (None: they are freed).
    pub fn spent(&self) -> Option<&crate::envelope::Spent> {
        self.spent.as_ref()
    }

    /// Gives the payload buffers of each finished batch back to `spent`.
    pub fn with_spent(mut self, spent: crate::envelope::Spent) -> Self {
        self.spent = Some(spent);
        self
    }

    /// Takes `batch` in, clearing what the last batch left (buffers keep their capacity).
    pub fn start(&mut self, batch: Batch) {
        self.batch = batch;
        self.outcomes.clear();
        self.redelivered.clear();
        self.redelivered.resize(self.batch.events.len(), false);
        self.rows.clear();
        self.enriched.clear();
        self.enriched_width = 0;
        self.defaults.iter_mut().for_each(Vec::clear);
        self.degraded = false;
        self.late.clear();
        self.checked = None;
        self.scores.clear();
        self.class_scores.clear();
        self.shadow_scores.clear();
        self.shadow_model = None;
        self.trial_scores.clear();
        self.decisions.clear();
        self.shadow_actions.clear();
        if !self.pending.is_clean() {
            self.pending = self.spent.as_ref().map(|s| s.deliveries.get()).unwrap_or_default();
        }
        self.produced = 0;
        self.fault = None;
        self.after_ack = None;
    }

    /// The event paths the rules of this batch's snapshot read (the decoder extracts them).
    pub fn rule_paths(&self) -> &[String] {
        &self.rule_paths
    }

    /// The event paths the stamped rules read (kept until a snapshot reads other paths).
    pub fn set_rule_paths(&mut self, paths: &[String]) {
        if self.rule_paths != paths {
            self.rule_paths = paths.to_vec();
        }
    }

    /// Lets go of the batch's messages and decoded events once it is handed on (the
    /// buffers keep their capacity for the next batch).
    pub fn finish(&mut self) {
        match &self.spent {
            Some(spent) => {
                spent.give_back_batch(&mut self.batch.events);
                spent.turns.give(std::mem::take(&mut self.batch.turns));
            }
            None => self.batch.events.clear(),
        }
        self.outcomes.clear();
        self.redelivered.clear();
        self.decisions.clear();
    }

    /// The decoded events with their envelopes, in batch order (row k is the k-th).
    pub fn decided(&self) -> impl Iterator<Item = (&Envelope<RawMessage>, &DecodedEvent)> {
        self.batch.events.iter().zip(&self.outcomes).filter_map(|(ev, o)| match o {
            Outcome::Decided(d) => Some((ev, d)),
            Outcome::Dead(_) => None,
        })
    }

    /// How many events decoded.
    pub fn decided_count(&self) -> usize {
        self.rows.len()
    }

    /// Decoded event `k`'s enrichment values (empty without an enrich stage).
    pub fn enriched_row(&self, k: usize) -> &[Option<f64>] {
        let w = self.enriched_width;
        self.enriched.get(k * w..(k + 1) * w).unwrap_or(&[])
    }

    /// Whether event `i` (batch order, not decoded order) is a re-decision.
    pub fn is_redelivered(&self, i: usize) -> bool {
        self.redelivered.get(i).copied().unwrap_or(false)
    }

    /// Decoded event `k`'s class scores (a multi-output model; empty otherwise).
    pub fn class_row(&self, k: usize) -> &[f32] {
        let w = self.classes.len();
        self.class_scores.get(k * w..(k + 1) * w).unwrap_or(&[])
    }

    /// Whether decoded event `k` is decided without the model.
    pub fn is_late(&self, k: usize) -> bool {
        self.late.get(k).copied().unwrap_or(false)
    }
}

/// The pipeline's abort token as the stages see it: checked between retries, and the
/// sleep between them wakes early when it fires.
#[derive(Debug, Clone, Default)]
pub struct Abort(CancellationToken);

impl Abort {
    /// Watches `token`.
    pub fn new(token: CancellationToken) -> Self {
        Self(token)
    }

    /// Whether the pipeline is aborting.
    pub fn is_set(&self) -> bool {
        self.0.is_cancelled()
    }

    /// The token itself (for the turnstile).
    pub fn token(&self) -> &CancellationToken {
        &self.0
    }

    /// Sleeps `d` unless the abort comes first; whether it slept it all.
    pub fn sleep(&self, d: Duration) -> bool {
        crate::backoff::sleep_unless(d, &self.0)
    }
}
