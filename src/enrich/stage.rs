//! The enrich stage: takes the decoded events (identity, entities, event time) and hands on
//! their window aggregates and online features (`enriched`, for the rules and, through the
//! fill stage, the model rows), and whether the batch was decided on defaults.
//!
//! Window updates must be applied per source partition in offset order, so the stage runs
//! in batch-sequence order across workers (the [`Turnstile`]). A failure is handled as its
//! error's own policy says: a transient one follows `enrich.on_failure` (decide on defaults,
//! or pause and retry with a backoff until the abort), a dead-letter one sends the batch's
//! events to the dead-letter topic, a fatal one stops the pipeline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::enrich::{BatchStats, EnrichError, Enricher, FailurePolicy, Request, Turnstile};
use crate::error::{Policy, StageError};
use crate::stage::{Abort, Outcome, Stage, StageFailure, StagedBatch};
use crate::telemetry::Metrics;

/// What the stage does about a failed enrich call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnFailure {
    /// Decide the batch on defaults, marked degraded.
    Degrade,
    /// Wait (backoff, cancellable) and try the same batch again.
    Retry,
    /// Send the batch's events to the dead-letter topic.
    DeadLetter,
    /// Stop the pipeline.
    Stop,
}

/// The error's own policy decides; only a transient error follows `enrich.on_failure`.
fn on_failure(error: Policy, configured: FailurePolicy) -> OnFailure {
    match (error, configured) {
        (Policy::Retry, FailurePolicy::Degraded) => OnFailure::Degrade,
        (Policy::Retry, FailurePolicy::Pause) => OnFailure::Retry,
        (Policy::DeadLetter, _) => OnFailure::DeadLetter,
        (Policy::Fatal, _) => OnFailure::Stop,
    }
}

/// Enriches a batch through the shared enricher.
pub struct Enrich {
    turnstile: Arc<Turnstile<Enricher>>,
    policy: FailurePolicy,
    metrics: Arc<Metrics>,
    abort: Abort,
    /// `topic/partition` per source partition seen (the replay fence's key).
    fence_keys: Vec<(Arc<str>, i32, String)>,
}

impl Enrich {
    /// From the shared enricher and `enrich.on_failure`.
    pub fn new(
        turnstile: Arc<Turnstile<Enricher>>,
        policy: FailurePolicy,
        metrics: Arc<Metrics>,
        abort: Abort,
    ) -> Self {
        Self { turnstile, policy, metrics, abort, fence_keys: Vec::new() }
    }

    /// Lets batch `seq + 1` through without enriching `seq` (its worker lost it to a panic).
    pub fn pass(&self, seq: u64) {
        self.turnstile.pass(seq, self.abort.token());
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
        let degraded = this.turnstile.run(b.batch.seq, this.abort.token(), |enricher| {
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
                match on_failure(e.policy(), this.policy) {
                    OnFailure::Degrade => {
                        out.clear();
                        out.resize(reqs.len() * enricher.names().len(), None);
                        this.metrics.degraded_events.inc_by(reqs.len() as u64);
                        return Ok(true);
                    }
                    OnFailure::Retry => {
                        if !this.abort.sleep(backoff.next_delay()) {
                            return Err(StageFailure::Aborted);
                        }
                    }
                    OnFailure::DeadLetter => {
                        return Err(StageFailure::DeadLetterRest { stage: "enrich", detail: e.to_string() })
                    }
                    OnFailure::Stop => return Err(StageFailure::Stop(format!("enrich failed for good: {e}"))),
                }
            }
        });
        let degraded = degraded.ok_or(StageFailure::Aborted)??;
        let n = reqs.len();
        drop(reqs);
        b.degraded = degraded;
        b.enriched_width = b.enriched.len() / n.max(1);
        self.metrics.stage_seconds.with_label_values(&["enrich"]).observe(t.elapsed().as_secs_f64());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_errors_follow_on_failure_the_others_dead_letter_or_stop() {
        for configured in [FailurePolicy::Degraded, FailurePolicy::Pause] {
            assert_eq!(on_failure(Policy::DeadLetter, configured), OnFailure::DeadLetter);
            assert_eq!(on_failure(Policy::Fatal, configured), OnFailure::Stop);
        }
        assert_eq!(on_failure(Policy::Retry, FailurePolicy::Degraded), OnFailure::Degrade);
        assert_eq!(on_failure(Policy::Retry, FailurePolicy::Pause), OnFailure::Retry);
        // A configuration error is fatal, whatever `on_failure` says.
        assert_eq!(on_failure(EnrichError::Config("x".into()).policy(), FailurePolicy::Pause), OnFailure::Stop);
    }
}
