//! The enrich stage: takes the decoded events (identity, entities, event time) and hands on
//! their window aggregates and online features, written into the model rows' enriched
//! columns (defaults where a value is missing, noted per row) and kept for the rules.
//!
//! Window updates must be applied per source partition in offset order, so the stage runs
//! in batch-sequence order across workers (the [`Turnstile`]). A failure is handled as its
//! error's own policy says: a transient one follows `enrich.on_failure` (decide on defaults,
//! or pause and retry with a backoff until the abort), a dead-letter one sends the batch's
//! events to the dead-letter topic, a fatal one stops the pipeline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::decode::Vectorizer;
use crate::enrich::{BatchStats, EnrichError, Enricher, FailurePolicy, Request, Turnstile};
use crate::error::{Policy, StageError};
use crate::stage::{Abort, Outcome, Stage, StageFailure, StagedBatch};
use crate::telemetry::Metrics;

/// Enriches a batch through the shared enricher.
pub struct Enrich {
    turnstile: Arc<Turnstile<Enricher>>,
    policy: FailurePolicy,
    /// The serving model's columns (which of them are enriched, and their defaults).
    vectorizer: Vectorizer,
    metrics: Arc<Metrics>,
    abort: Abort,
    /// `topic/partition` per source partition seen (the replay fence's key).
    fence_keys: Vec<(Arc<str>, i32, String)>,
}

impl Enrich {
    /// From the shared enricher, `enrich.on_failure` and the serving model's columns.
    pub fn new(
        turnstile: Arc<Turnstile<Enricher>>,
        policy: FailurePolicy,
        vectorizer: Vectorizer,
        metrics: Arc<Metrics>,
        abort: Abort,
    ) -> Self {
        Self { turnstile, policy, vectorizer, metrics, abort, fence_keys: Vec::new() }
    }

    /// Another model's columns (model hot-reload).
    pub fn set_vectorizer(&mut self, vectorizer: Vectorizer) {
        self.vectorizer = vectorizer;
    }

    /// Lets batch `seq + 1` through without enriching `seq` (its worker lost it to a panic).
    pub fn pass(&self, seq: u64) {
        self.turnstile.pass(seq, self.abort.flag());
    }

    fn fence_key(&mut self, topic: &Arc<str>, partition: i32) -> usize {
        match self.fence_keys.iter().position(|(t, p, _)| *p == partition && t == topic) {
            Some(i) => i,
            None => {
                self.fence_keys.push((topic.clone(), partition, format!("{topic}/{partition}")));
                self.fence_keys.len() - 1
            }
        }
    }

    fn observe(&self, stats: &BatchStats) {
        let m = &self.metrics;
        if m.state_store_up.get() == 0 {
            tracing::info!("state store reachable again");
        }
        m.state_store_up.set(1);
        m.enrich_round_trips.inc_by(stats.round_trips);
        m.enrich_commands.inc_by(stats.commands);
        for (result, n) in [("hit", stats.cache_hits), ("miss", stats.cache_misses)] {
            if n > 0 {
                m.feature_cache.with_label_values(&[result]).inc_by(n);
            }
        }
        for (result, n) in
            [("written", stats.state_written), ("conflict", stats.state_conflicts), ("miss", stats.state_misses)]
        {
            if n > 0 {
                m.window_state_cache.with_label_values(&[result]).inc_by(n);
            }
        }
        for (result, n) in [("applied", stats.applied), ("replayed", stats.replayed), ("late", stats.late)] {
            if n > 0 {
                m.window_updates.with_label_values(&[result]).inc_by(n);
            }
        }
    }

    fn failed(&self, e: &EnrichError) {
        let m = &self.metrics;
        m.enrich_failures.inc();
        if m.state_store_up.get() == 1 {
            tracing::warn!(error = %e, policy = ?self.policy, "state store unavailable");
        }
        m.state_store_up.set(0);
    }
}

impl Stage for Enrich {
    fn name(&self) -> &'static str {
        "enrich"
    }

    fn run(&mut self, b: &mut StagedBatch) -> Result<(), StageFailure> {
        let t = Instant::now();
        let mut keys = Vec::with_capacity(b.decided_count());
        for (ev, _) in b.decided() {
            keys.push(self.fence_key(&ev.origin.topic, ev.origin.partition));
        }
        let reqs: Vec<Request<'_>> = b
            .batch
            .events
            .iter()
            .zip(&b.outcomes)
            .filter_map(|(ev, o)| match o {
                Outcome::Decided(d) => Some((ev, d)),
                Outcome::Dead(_) => None,
            })
            .zip(&keys)
            .map(|((ev, d), &key)| Request {
                fence_key: &self.fence_keys[key].2,
                offset: ev.origin.offset,
                time_ms: d.event_time_ms,
                entities: &d.entities,
            })
            .collect();
        let out = &mut b.enriched;
        let this = &*self;
        let degraded = this.turnstile.run(b.batch.seq, this.abort.flag(), |enricher| {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
            loop {
                let e = match enricher.enrich(&reqs, out) {
                    Ok(stats) => {
                        this.observe(&stats);
                        return Ok(false);
                    }
                    Err(e) => e,
                };
                this.failed(&e);
                match (e.policy(), this.policy) {
                    (Policy::Retry, FailurePolicy::Degraded) => {
                        out.clear();
                        out.resize(reqs.len() * enricher.names().len(), None);
                        this.metrics.degraded_events.inc_by(reqs.len() as u64);
                        return Ok(true);
                    }
                    (Policy::Retry, FailurePolicy::Pause) => {
                        if !this.abort.sleep(backoff.next_delay()) {
                            return Err(StageFailure::Aborted);
                        }
                    }
                    (Policy::DeadLetter, _) => {
                        return Err(StageFailure::DeadLetterRest { stage: "enrich", detail: e.to_string() })
                    }
                    (Policy::Fatal, _) => return Err(StageFailure::Stop(format!("enrich failed for good: {e}"))),
                }
            }
        });
        let degraded = degraded.ok_or(StageFailure::Aborted)??;
        let n = reqs.len();
        drop(reqs);
        b.degraded = degraded;
        b.enriched_width = b.enriched.len() / n.max(1);
        let w = b.enriched_width;
        if b.defaults.len() < n {
            b.defaults.resize_with(n, Vec::new);
        }
        for k in 0..n {
            let d = &mut b.defaults[k];
            d.clear();
            self.vectorizer.fill_enriched(&b.enriched[k * w..(k + 1) * w], b.rows.row_mut(k).values, d);
            self.metrics.feature_defaults.inc_by(d.len() as u64);
        }
        b.defaults.truncate(n);
        self.metrics.stage_seconds.with_label_values(&["enrich"]).observe(t.elapsed().as_secs_f64());
        Ok(())
    }
}
