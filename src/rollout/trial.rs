//! A trial version on a worker: the candidate, or the previous version watched after a
//! promotion. The score stage has it score its share of the batch's rows after the serving
//! model, and it reports to [`Observed`]. It never decides; its scores go to the label join
//! only, so both versions are compared on the same labelled events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::observe::{BatchObservation, Observed};
use crate::core::rows::Rows;
use crate::decode::Vectorizer;
use crate::score::stage::in_sample;
use crate::score::OnnxScorer;
use crate::stage::StagedBatch;

/// One worker's session of a trial version.
pub struct Trial {
    /// Its session.
    pub scorer: OnnxScorer,
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// Its columns (the serving model's names; its own defaults).
    pub vectorizer: Vectorizer,
    /// The phase it reports to.
    pub epoch: u64,
    /// Share threshold (event-id hash below it is scored; `u64::MAX`: every event).
    pub threshold: u64,
    /// Where it reports.
    pub observed: Arc<Observed>,
    /// The band boundaries (`Actions::thresholds`; band actions compared for agreement).
    pub bands: Arc<[f32]>,
    rows: Option<Rows>,
    scores: Vec<f32>,
    serving: Vec<f32>,
}

impl crate::score::stage::Trialled for Trial {
    fn scorer_mut(&mut self) -> &mut OnnxScorer {
        &mut self.scorer
    }

    fn run(&mut self, b: &mut StagedBatch, serving: Duration) {
        Trial::run(self, b, serving);
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

impl Trial {
    /// A trial of `scorer` reporting to `observed` under `epoch`, scoring `share` of events.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scorer: OnnxScorer,
        name: String,
        version: String,
        vectorizer: Vectorizer,
        epoch: u64,
        share: f64,
        observed: Arc<Observed>,
        bands: Arc<[f32]>,
    ) -> Self {
        let threshold = if share >= 1.0 { u64::MAX } else { (share.max(0.0) * u64::MAX as f64) as u64 };
        Self {
            scorer,
            name,
            version,
            vectorizer,
            epoch,
            threshold,
            observed,
            bands,
            rows: None,
            scores: Vec::new(),
            serving: Vec::new(),
        }
    }

    /// After its session changed places with the serving one: takes the serving version's
    /// identity (`serving` gets this one's) and reports under `epoch` from now on.
    pub fn exchange(&mut self, serving: &mut (String, String, Vectorizer), epoch: u64) {
        std::mem::swap(&mut self.name, &mut serving.0);
        std::mem::swap(&mut self.version, &mut serving.1);
        std::mem::swap(&mut self.vectorizer, &mut serving.2);
        self.epoch = epoch;
    }

    fn band(&self, s: f32) -> u8 {
        self.bands.iter().map(|&t| u8::from(s >= t)).sum()
    }

    /// Scores the share of `b`'s scored rows into `b.trial_scores` and reports the batch;
    /// `serving` is the time the serving model took for the batch's scored rows.
    pub fn run(&mut self, b: &mut StagedBatch, serving: Duration) {
        let rows = self.rows.get_or_insert_with(|| self.scorer.empty_rows());
        rows.clear();
        self.serving.clear();
        let mut picked = std::mem::take(&mut b.trial_scores);
        picked.clear();
        for (k, (_, d)) in b.decided().enumerate() {
            if !b.is_late(k) && in_sample(&d.event_id, self.threshold) {
                rows.push_copy(&b.rows, k);
                self.serving.push(b.scores[k]);
                picked.push(Some(f32::NAN));
            } else {
                picked.push(None);
            }
        }
        b.trial_epoch = self.epoch;
        if self.serving.is_empty() {
            b.trial_scores = picked;
            return;
        }
        self.scores.clear();
        let t = Instant::now();
        let result = self.scorer.score(rows, &mut self.scores);
        let trial_us = t.elapsed().as_secs_f64() * 1e6 / self.serving.len() as f64;
        if let Err(e) = result {
            tracing::warn!(error = %e, version = %self.version, "trial scoring failed");
            self.observed.error(self.epoch);
            picked.iter_mut().for_each(|s| *s = None);
            b.trial_scores = picked;
            return;
        }
        let mut it = self.scores.iter();
        for s in picked.iter_mut().flatten() {
            *s = *it.next().expect("a trial score per picked row");
        }
        b.trial_scores = picked;
        let agree =
            self.serving.iter().zip(&self.scores).filter(|(&a, &t)| self.band(a) == self.band(t)).count() as u64;
        let scored = b.scores.iter().filter(|s| !s.is_nan()).count().max(1);
        self.observed.record(&BatchObservation {
            epoch: self.epoch,
            serving: &self.serving,
            trial: &self.scores,
            agree,
            serving_us: serving.as_secs_f64() * 1e6 / scored as f64,
            trial_us,
        });
    }
}
