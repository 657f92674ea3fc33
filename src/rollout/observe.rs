//! What the workers observe of a trial version (a candidate, or the previous version during
//! the watch after a promotion): per batch, the rows both versions scored, how often their
//! band actions agree, the judged version's score histogram, scoring time per row, and
//! failures; and, from the label joiner, both versions' label statistics on the same
//! labelled events. One lock per batch.

use std::collections::VecDeque;
use std::time::Instant;

use parking_lot::Mutex;

use super::criteria::Evidence;
use crate::drift::labels::{LabelStats, PairedLabels};
use crate::drift::{FeatureBaseline, Moments};

/// Batches whose scoring time per row is kept for the p99.
const LATENCY_SAMPLES: usize = 2048;

/// The tallies of the current trial, reset at each phase (`epoch`).
pub struct Observed {
    tally: Mutex<Tally>,
    thresholds: Vec<f64>,
}

struct Tally {
    epoch: u64,
    since: Instant,
    events: u64,
    agree: u64,
    errors: u64,
    /// Which version's scores are judged against the baseline: the trial's (candidate) or
    /// the serving one's (watch).
    judge_trial: bool,
    baseline: Option<FeatureBaseline>,
    judged: Vec<u64>,
    serving_us: VecDeque<f64>,
    trial_us: VecDeque<f64>,
    labels_serving: LabelStats,
    labels_trial: LabelStats,
}

/// One batch's observation by a worker.
pub struct BatchObservation<'a> {
    /// The trial's epoch.
    pub epoch: u64,
    /// Serving scores of the rows the trial scored.
    pub serving: &'a [f32],
    /// The trial's scores of the same rows.
    pub trial: &'a [f32],
    /// Rows on which both band actions agree.
    pub agree: u64,
    /// Serving scoring time per row in this batch, µs.
    pub serving_us: f64,
    /// Trial scoring time per row in this batch, µs.
    pub trial_us: f64,
}

impl Observed {
    /// Empty tallies; labels are counted at `thresholds` (the band boundaries).
    pub fn new(thresholds: Vec<f64>) -> Self {
        let tally = Tally::new(0, false, None, &thresholds);
        Self { tally: Mutex::new(tally), thresholds }
    }

    /// Starts counting for `epoch`; `judge_trial`: the trial's scores are judged against
    /// `baseline` (else the serving version's).
    pub fn reset(&self, epoch: u64, judge_trial: bool, baseline: Option<FeatureBaseline>) {
        *self.tally.lock() = Tally::new(epoch, judge_trial, baseline, &self.thresholds);
    }

    /// Adds one batch (ignored when it belongs to an earlier epoch).
    pub fn record(&self, o: &BatchObservation<'_>) {
        let mut guard = self.tally.lock();
        let t = &mut *guard;
        if t.epoch != o.epoch {
            return;
        }
        t.events += o.trial.len() as u64;
        t.agree += o.agree;
        let judged = if t.judge_trial { o.trial } else { o.serving };
        if let Some(b) = &t.baseline {
            for &s in judged {
                t.judged[b.bucket(f64::from(s))] += 1;
            }
        }
        for (q, v) in [(&mut t.serving_us, o.serving_us), (&mut t.trial_us, o.trial_us)] {
            if q.len() == LATENCY_SAMPLES {
                q.pop_front();
            }
            q.push_back(v);
        }
    }

    /// Counts a trial batch whose scoring failed.
    pub fn error(&self, epoch: u64) {
        let mut t = self.tally.lock();
        if t.epoch == epoch {
            t.errors += 1;
        }
    }

    /// The evidence so far, and both versions' label statistics (serving, trial).
    pub fn evidence(&self) -> (Evidence, LabelStats, LabelStats) {
        let t = self.tally.lock();
        let psi = t
            .baseline
            .as_ref()
            .filter(|_| t.judged.iter().sum::<u64>() > 0)
            .map(|b| Moments { counts: t.judged.clone(), sum: 0.0, sum_sq: 0.0 }.stats(b).psi);
        let e = Evidence {
            events: t.events,
            seconds: t.since.elapsed().as_secs_f64(),
            agreement: (t.events > 0).then(|| t.agree as f64 / t.events as f64),
            errors: t.errors,
            score_psi: psi,
            serving_p99_us: p99(&t.serving_us),
            trial_p99_us: p99(&t.trial_us),
        };
        (e, t.labels_serving.clone(), t.labels_trial.clone())
    }
}

impl PairedLabels for Observed {
    fn joined(&self, epoch: u64, serving: f64, trial: f64, positive: bool) {
        let mut t = self.tally.lock();
        if t.epoch == epoch {
            t.labels_serving.add(serving, positive);
            t.labels_trial.add(trial, positive);
        }
    }
}

impl Tally {
    fn new(epoch: u64, judge_trial: bool, baseline: Option<FeatureBaseline>, thresholds: &[f64]) -> Self {
        Self {
            epoch,
            since: Instant::now(),
            events: 0,
            agree: 0,
            errors: 0,
            judge_trial,
            judged: vec![0; baseline.as_ref().map_or(0, FeatureBaseline::buckets)],
            baseline,
            serving_us: VecDeque::new(),
            trial_us: VecDeque::new(),
            labels_serving: LabelStats::new(thresholds),
            labels_trial: LabelStats::new(thresholds),
        }
    }
}

/// The 99th percentile (nearest rank), None when empty.
fn p99(q: &VecDeque<f64>) -> Option<f64> {
    if q.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = q.iter().copied().collect();
    v.sort_by(f64::total_cmp);
    Some(v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline() -> FeatureBaseline {
        FeatureBaseline {
            name: "score".into(),
            edges: vec![0.0, 0.5, 1.0],
            expected: vec![0.0, 0.0, 0.8, 0.2, 0.0],
            default: None,
            mean: f64::NAN,
            std: f64::NAN,
            categories: None,
        }
    }

    #[test]
    fn tallies_count_agreement_psi_and_p99_and_ignore_a_stale_epoch() {
        let o = Observed::new(vec![0.5, 0.8]);
        o.reset(3, true, Some(baseline()));
        let serving = [0.1f32; 10];
        let trial = [0.1f32, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9, 0.9];
        o.record(&BatchObservation {
            epoch: 3,
            serving: &serving,
            trial: &trial,
            agree: 8,
            serving_us: 2.0,
            trial_us: 3.0,
        });
        o.record(&BatchObservation {
            epoch: 2,
            serving: &serving,
            trial: &serving,
            agree: 10,
            serving_us: 1.0,
            trial_us: 99.0,
        });
        let (e, _, _) = o.evidence();
        assert_eq!((e.events, e.agreement), (10, Some(0.8)));
        assert_eq!((e.serving_p99_us, e.trial_p99_us), (Some(2.0), Some(3.0)));
        // The trial's scores match the baseline's 80/20 split exactly.
        assert!(e.score_psi.unwrap().abs() < 1e-9, "{e:?}");
        o.joined(3, 0.9, 0.1, true);
        o.joined(2, 0.9, 0.1, true);
        let (_, serving, trial) = o.evidence();
        assert_eq!((serving.joined, trial.joined), (1, 1));
        assert_eq!(serving.thresholds[0].tp, 1);
        assert_eq!(trial.thresholds[0].r#fn, 1);
        o.error(2);
        assert_eq!(o.evidence().0.errors, 0);
        o.error(3);
        assert_eq!(o.evidence().0.errors, 1);
    }

    #[test]
    fn p99_is_the_nearest_rank() {
        let q: VecDeque<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(p99(&q), Some(198.0));
        assert_eq!(p99(&VecDeque::from(vec![5.0])), Some(5.0));
        assert_eq!(p99(&VecDeque::new()), None);
    }
}
