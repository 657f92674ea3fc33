//! The score stage: takes the decoded events' model rows (enriched columns filled) and hands
//! on one score per row, the deadline mask (rows decided without the model because scoring
//! them would miss their deadline) and the shadow model's scores for its sample.
//!
//! A failed inference is retried with a backoff (a device busy or out of memory for a
//! moment); one that persists, or is not retryable, is the batch's: its events go to the
//! dead-letter topic, so it cannot hold up every batch behind it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::core::clock::wall_clock_ms;
use crate::core::rows::Rows;
use crate::envelope::Queued;
use crate::error::{Policy, StageError};
use crate::score::budget::{BatchBudget, ScoringCost};
use crate::score::{OnnxScorer, ScoreError};
use crate::stage::{Abort, Stage, StageFailure, StagedBatch};
use crate::telemetry::Metrics;

/// Tries at scoring one batch before its events are dead-lettered as `internal_error`
/// (backoff 0.1, 0.2, 0.4, 0.8 s between them).
const SCORE_ATTEMPTS: u32 = 5;

/// A shadow (challenger) model on a worker.
pub struct Shadow {
    /// Its session (same inputs as the serving model).
    pub scorer: OnnxScorer,
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// Events whose id hash is below this are shadowed (`u64::MAX` = all).
    pub threshold: u64,
}

impl Shadow {
    /// Whether `event_id` is in the shadowed sample (stable across replays and instances).
    pub fn sampled(&self, event_id: &str) -> bool {
        in_sample(event_id, self.threshold)
    }
}

/// Whether `event_id` hashes below `threshold` (`u64::MAX`: every event); stable across
/// replays, processes and instances.
pub fn in_sample(event_id: &str, threshold: u64) -> bool {
    if threshold == u64::MAX {
        return true;
    }
    // FNV-1a: stable, cheap, no per-process seed.
    let mut h = event_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x1_0000_01b3));
    // fmix64 (MurmurHash3's finalizer): FNV's high bits barely move between similar ids.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h < threshold
}

/// The deadline check's inputs (`decide.deadline_ms` set).
pub struct Deadline {
    /// `decide.deadline_ms`.
    pub deadline_ms: u64,
    /// Batches queued behind this one: scoring leaves them time.
    pub queued: Option<Arc<Queued>>,
}

/// Scores a batch with the serving model (and its shadow's sample).
pub struct Score {
    scorer: OnnxScorer,
    /// Scoring cost (per call and per row, fitted to recent batches), for the deadline check.
    cost: ScoringCost,
    deadline: Option<Deadline>,
    /// Scoring budget per batch: this stage reports its scoring time to it.
    budget: Option<Arc<BatchBudget>>,
    shadow: Option<(Shadow, Arc<str>, Arc<str>)>,
    /// A version on trial (guarded rollout): scored after the serving model, never deciding.
    trial: Option<Box<dyn Trialled>>,
    metrics: Arc<Metrics>,
    abort: Abort,
    live_rows: Rows,
    live_scores: Vec<f32>,
    shadow_rows: Rows,
    shadow_scores: Vec<f32>,
}

impl Score {
    /// From the serving model's session.
    pub fn new(scorer: OnnxScorer, rows: Rows, metrics: Arc<Metrics>, abort: Abort) -> Self {
        Self {
            cost: scorer.scoring_cost(),
            scorer,
            deadline: None,
            budget: None,
            shadow: None,
            trial: None,
            metrics,
            abort,
            live_rows: rows.clone(),
            live_scores: Vec::new(),
            shadow_rows: rows,
            shadow_scores: Vec::new(),
        }
    }

    /// Decides events that cannot make their deadline without the model.
    pub fn with_deadline(mut self, deadline: Option<Deadline>) -> Self {
        self.deadline = deadline.filter(|d| d.deadline_ms > 0);
        self
    }

    /// Reports scoring time to the per-batch budget.
    pub fn with_budget(mut self, budget: Option<Arc<BatchBudget>>) -> Self {
        self.budget = budget;
        self
    }

    /// Scores a sample with a shadow model too.
    pub fn with_shadow(mut self, shadow: Option<Shadow>) -> Self {
        self.shadow = shadow.map(|s| {
            let (name, version) = (Arc::from(s.name.as_str()), Arc::from(s.version.as_str()));
            (s, name, version)
        });
        self
    }

    /// Swaps in another model's session; `rows` has its layout.
    pub fn replace_scorer(&mut self, scorer: OnnxScorer, rows: Rows) {
        self.cost = scorer.scoring_cost();
        self.scorer = scorer;
        self.live_rows = rows.clone();
        self.shadow_rows = rows;
    }

    /// The serving session and the trial's change places (a promotion, or a rollback);
    /// returns the trial, now holding the session that served.
    pub fn swap_with_trial(&mut self) -> Option<&mut dyn Trialled> {
        let trial = self.trial.as_deref_mut()?;
        std::mem::swap(&mut self.scorer, trial.scorer_mut());
        self.cost = self.scorer.scoring_cost();
        Some(trial)
    }

    /// Puts a version on trial (or none); returns the one it replaces.
    pub fn set_trial(&mut self, trial: Option<Box<dyn Trialled>>) -> Option<Box<dyn Trialled>> {
        std::mem::replace(&mut self.trial, trial)
    }

    /// Fills `b.late`: only events that can be scored and still be acknowledged within their
    /// budget are scored; the rest are decided without the model.
    fn check_deadline(&self, b: &mut StagedBatch) {
        let Some(dl) = &self.deadline else { return };
        let now = wall_clock_ms();
        let ages = b
            .decided()
            .map(|(ev, _)| ev.timestamp_ms.map_or_else(|| ev.received_at.elapsed().as_millis() as i64, |ts| now - ts));
        let (deadline, reserve) = (dl.deadline_ms as f64, self.metrics.deadline_reserve.get() * 1e3);
        let slack: Vec<f64> = ages.map(|age| deadline - age as f64 - reserve).collect();
        // The oldest event queued behind this batch waits for its scoring too.
        let behind = dl.queued.as_ref().and_then(|q| q.oldest_ms()).map(|t| deadline - (now - t) as f64 - reserve);
        b.late = admit(&slack, behind, |k| self.cost.predict_us(k) / 1e3);
        let admitted = b.late.iter().filter(|&&l| !l).count();
        b.checked = Some((Instant::now(), Duration::from_secs_f64(self.cost.predict_us(admitted) / 1e6)));
    }

    /// Scores the admitted rows into `b.scores` (NaN for late ones), retrying what may pass.
    fn score(&mut self, b: &mut StagedBatch) -> Result<(), StageFailure> {
        let any_late = b.late.iter().any(|&l| l);
        if any_late {
            self.live_rows.clear();
            for (k, late) in b.late.iter().enumerate() {
                if !late {
                    self.live_rows.push_copy(&b.rows, k);
                }
            }
        }
        let injected = b.fault == Some(crate::fault::Fault::ScoreError);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let (rows, out) =
                if any_late { (&self.live_rows, &mut self.live_scores) } else { (&b.rows, &mut b.scores) };
            out.clear();
            let result = if injected {
                Err(ScoreError::Inference("injected fault: scoring failed".into()))
            } else {
                self.scorer.score(rows, out)
            };
            let Err(e) = result else { break };
            if self.abort.is_set() {
                return Err(StageFailure::Aborted);
            }
            let attempts = backoff.attempts() + 1;
            if e.policy() != Policy::Retry || attempts >= SCORE_ATTEMPTS {
                tracing::error!(error = %e, attempts, events = b.batch.events.len(), "scoring failed; the batch goes to the dead-letter topic");
                return Err(StageFailure::DeadLetterRest { stage: "score", detail: format!("scoring failed: {e}") });
            }
            tracing::error!(error = %e, attempts, "scoring failed; retrying batch");
            if !self.abort.sleep(backoff.next_delay()) {
                return Err(StageFailure::Aborted);
            }
        }
        if any_late {
            let mut live = self.live_scores.iter();
            b.scores.clear();
            b.scores
                .extend(b.late.iter().map(|&l| if l { f32::NAN } else { *live.next().expect("a score per live row") }));
        }
        // A multi-output model's class scores, NaN for the late rows.
        if !Arc::ptr_eq(&b.classes, self.scorer.classes()) {
            b.classes = self.scorer.classes().clone();
        }
        let k = b.classes.len();
        if k > 0 {
            let mut live = self.scorer.class_scores().chunks_exact(k);
            b.class_scores.clear();
            for late in (0..b.scores.len()).map(|r| any_late && b.late[r]) {
                match late {
                    true => b.class_scores.extend(std::iter::repeat_n(f32::NAN, k)),
                    false => b.class_scores.extend_from_slice(live.next().expect("class scores per live row")),
                }
            }
        }
        Ok(())
    }

    /// Scores the sampled rows with the shadow model. A shadow failure is logged and costs
    /// the batch nothing but its shadow scores.
    fn score_shadow(&mut self, b: &mut StagedBatch) {
        let Some((sh, name, version)) = self.shadow.as_mut() else { return };
        let t = Instant::now();
        self.shadow_rows.clear();
        let mut shadowed = std::mem::take(&mut b.shadow_scores);
        shadowed.clear();
        for (k, (_, d)) in b.decided().enumerate() {
            if !b.is_late(k) && sh.sampled(&d.event_id) {
                self.shadow_rows.push_copy(&b.rows, k);
                shadowed.push(Some(f32::NAN));
            } else {
                shadowed.push(None);
            }
        }
        self.shadow_scores.clear();
        if !self.shadow_rows.is_empty() {
            match sh.scorer.score(&self.shadow_rows, &mut self.shadow_scores) {
                Ok(()) => {
                    let mut scores = self.shadow_scores.iter();
                    for s in shadowed.iter_mut().flatten() {
                        *s = *scores.next().expect("a shadow score per shadowed row");
                    }
                    b.shadow_model = Some((name.clone(), version.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "shadow scoring failed; batch recorded without shadow scores");
                    shadowed.iter_mut().for_each(|s| *s = None);
                }
            }
        }
        b.shadow_scores = shadowed;
        self.metrics.stage_seconds.with_label_values(&["shadow"]).observe(t.elapsed().as_secs_f64());
    }
}

/// A version on trial, scored after the serving one and never deciding (guarded rollout;
/// implemented above the stages, by `rollout::Trial`).
pub trait Trialled: Send {
    /// Its session (a promotion or rollback exchanges it with the serving one).
    fn scorer_mut(&mut self) -> &mut OnnxScorer;
    /// Scores the batch's rows with it; `serving` is how long the serving model took.
    fn run(&mut self, b: &mut StagedBatch, serving: Duration);
    /// For the owner to reach its concrete type.
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

impl Stage for Score {
    fn name(&self) -> &'static str {
        "score"
    }

    fn run(&mut self, b: &mut StagedBatch) -> Result<(), StageFailure> {
        self.check_deadline(b);
        let t = Instant::now();
        let scored_rows = b.rows.len() - b.late.iter().filter(|&&l| l).count();
        self.score(b)?;
        let serving = t.elapsed();
        let m = &self.metrics;
        m.stage_seconds.with_label_values(&["score"]).observe(t.elapsed().as_secs_f64());
        self.cost.observe(scored_rows, t.elapsed().as_secs_f64() * 1e6);
        if let Some(budget) = &self.budget {
            budget.observe(b.scores.len(), t.elapsed());
            m.batch_limit.set(budget.limit() as i64);
        }
        self.score_shadow(b);
        if let Some(trial) = &mut self.trial {
            trial.run(b, serving);
        }
        Ok(())
    }
}

/// Which events to decide without the model (`true`), given each one's slack (ms left of
/// its deadline after the reserve for publishing) and the time (ms) scoring k rows takes:
/// the most events, freshest first, such that scoring all of them together still ends within
/// the slack of every event of the batch that can still make its deadline (a batch is
/// published as a whole, so its unscored events wait for the scored ones too), and within
/// `behind`, the slack of the oldest event queued behind the batch, if it can still make it.
pub fn admit(slack: &[f64], behind: Option<f64>, scoring_ms: impl Fn(usize) -> f64) -> Vec<bool> {
    let mut order: Vec<usize> = (0..slack.len()).collect();
    order.sort_by(|&a, &b| slack[b].total_cmp(&slack[a]));
    let tightest = slack.iter().copied().chain(behind).filter(|&s| s >= 0.0).fold(f64::INFINITY, f64::min);
    let admitted = order
        .iter()
        .enumerate()
        .take_while(|&(i, &k)| {
            let scoring = scoring_ms(i + 1);
            slack[k] >= scoring && tightest >= scoring
        })
        .count();
    let mut late = vec![true; slack.len()];
    for &k in &order[..admitted] {
        late[k] = false;
    }
    late
}

#[cfg(test)]
mod tests {
    use super::admit;

    #[test]
    fn the_deadline_admits_the_most_events_whose_slack_covers_scoring_them_all() {
        let per_row = |k: usize| k as f64; // 1 ms per row
                                           // Slacks (ms): 10, -5 (already past), 2.5, 3, 4.
        let late = admit(&[10.0, -5.0, 2.5, 3.0, 4.0], None, per_row);
        // Freshest first: 10 ≥ 1, 4 ≥ 2, but the batch's tightest in-time event (2.5 ms)
        // cannot wait for 3 rows: two rows are scored. The event already past does not count.
        assert_eq!(late, [false, true, true, true, false]);
        // An event about to expire keeps the whole batch from waiting for the model.
        assert_eq!(admit(&[10.0, 9.0, 0.5], None, per_row), [true, true, true]);
        // Free scoring admits everything that is not past its deadline.
        assert_eq!(admit(&[10.0, -5.0, 2.5, 3.0, 4.0], None, |_| 0.0), [false, true, false, false, false]);
        assert_eq!(admit(&[], None, per_row), Vec::<bool>::new());
        // A cost per call: 6 ms for the call plus 0.5 ms per row. One row needs 6.5 ms.
        let per_call = |k: usize| 6.0 + 0.5 * k as f64;
        assert_eq!(admit(&[9.0, 8.0, 7.0, 20.0], None, per_call), [false, true, true, false]);
        assert_eq!(admit(&[6.0, 20.0], None, per_call), [true, true]);
        // A queued event with 6.8 ms left: this batch's scoring leaves it time.
        assert_eq!(admit(&[30.0, 20.0], Some(6.8), per_call), [false, true]);
        assert_eq!(admit(&[30.0, 20.0], Some(-1.0), per_call), [false, false]);
    }
}
