//! The enrich stage: takes the decoded events (identity, entities, event time) and hands on
//! their window aggregates and online features (`enriched`, for the rules and, through the
//! fill stage, the model rows), and whether the batch was decided on defaults.
//!
//! Three parts, each only when configured:
//! * **online features** of the batch, one pipelined round trip behind the feature cache,
//!   in parallel with other workers' batches;
//! * **partition-owned windows**, in each of the batch's partitions' turn (a partition's
//!   batches apply in consume order; different partitions do not wait for each other);
//!   the batch's checkpoints go to the acker ([`crate::enrich::owned`]);
//! * **shared windows**, in batch-sequence order across workers (the [`Turnstile`]).
//!
//! A failure is handled as its error's own policy says: a transient one follows
//! `enrich.on_failure` (decide on defaults, or pause and retry with a backoff until the
//! abort), a dead-letter one sends the batch's events to the dead-letter topic, a fatal one
//! stops the pipeline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::enrich::owned::apply::{Applied, OnError, Outputs, TurnEvents};
use crate::enrich::owned::OwnedWindows;
use crate::enrich::{BatchStats, EnrichError, Enricher, FailurePolicy, Request, Turnstile};
use crate::envelope::{AfterAck, Turn};
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

/// The enrich stage's parts (each None when not configured).
pub struct EnrichParts {
    /// Online features (this worker's own enricher, `Part::Features`).
    pub features: Option<Enricher>,
    /// Partition-owned windows.
    pub owned: Option<OwnedWindows>,
    /// Shared windows (`Part::Shared`), one batch at a time in sequence order.
    pub shared: Option<Arc<Turnstile<Enricher>>>,
    /// Values per event (every entity's, in output order).
    pub width: usize,
}

/// Enriches a batch.
pub struct Enrich {
    parts: EnrichParts,
    policy: FailurePolicy,
    metrics: Arc<Metrics>,
    abort: Abort,
    /// `topic/partition` per source partition seen (the shared windows' replay fence key).
    fence_keys: Vec<(Arc<str>, i32, String)>,
    /// Per request (decoded event): its index in the batch.
    events: Vec<usize>,
    /// Per turn: its requests, and its highest offset in the batch.
    which: Vec<(Vec<usize>, i64)>,
    /// Turns made here when the batch came without them (the offline tools).
    local_turns: Vec<Turn>,
    /// Per request: a re-decision.
    redelivered: Vec<bool>,
    /// Per decoded event: its partition's index in `fence_keys` (kept from batch to batch).
    keys: Vec<usize>,
    /// The last batch's request list, emptied: its allocation is the next batch's.
    requests: Vec<Request<'static>>,
}

/// An empty request list in `spare`'s allocation, for requests that borrow a batch (an
/// in-place collect of an emptied list: same element layout, so no new allocation).
fn recycled<'a>(mut spare: Vec<Request<'static>>) -> Vec<Request<'a>> {
    spare.clear();
    spare.into_iter().collect()
}

/// `used` emptied, to be [`recycled`] by the next batch.
fn emptied(mut used: Vec<Request<'_>>) -> Vec<Request<'static>> {
    used.clear();
    used.into_iter().map(|_| unreachable!("the list is empty")).collect()
}

impl Enrich {
    /// From its parts and `enrich.on_failure`.
    pub fn new(parts: EnrichParts, policy: FailurePolicy, metrics: Arc<Metrics>, abort: Abort) -> Self {
        Self {
            parts,
            policy,
            metrics,
            abort,
            fence_keys: Vec::new(),
            events: Vec::new(),
            which: Vec::new(),
            local_turns: Vec::new(),
            redelivered: Vec::new(),
            keys: Vec::new(),
            requests: Vec::new(),
        }
    }

    /// Lets the batch's turns go by without enriching it.
    pub fn pass(&self, batch: &crate::envelope::Batch) {
        if let Some(owned) = &self.parts.owned {
            for t in &batch.turns {
                owned.pass(t, self.abort.token());
            }
        }
        if let Some(t) = &self.parts.shared {
            t.pass(batch.seq, self.abort.token());
        }
    }

    /// After a panic lost the batch: lets its turns go by, and hands the acker whatever
    /// checkpoints were sealed before the panic (a later checkpoint must not overtake them).
    pub fn recover(&mut self, b: &mut StagedBatch) {
        self.pass(&b.batch);
        if let Some(owned) = self.parts.owned.as_mut() {
            if let Some(after) = owned.take_after_ack() {
                b.after_ack = Some(after);
            }
        }
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

    /// Groups the batch's decoded events by turn (partition), with each partition's highest
    /// offset; makes turns for a batch that came without them (the offline tools).
    fn plan(&mut self, b: &StagedBatch) {
        let Some(owned) = &self.parts.owned else { return };
        self.events.clear();
        let stamped = !b.batch.turns.is_empty();
        if !stamped {
            self.local_turns.clear();
        }
        let n_turns = |s: &Self| if stamped { b.batch.turns.len() } else { s.local_turns.len() };
        self.which.iter_mut().for_each(|(w, o)| {
            w.clear();
            *o = -1;
        });
        for (ev, (env, o)) in b.batch.events.iter().zip(&b.outcomes).enumerate() {
            let (topic, partition, offset) = (&env.origin.topic, env.origin.partition, env.origin.offset);
            let turns: &[Turn] = if stamped { &b.batch.turns } else { &self.local_turns };
            let t = match turns.iter().position(|t| t.partition == partition && *t.topic == **topic) {
                Some(t) => Some(t),
                None if !stamped => crate::envelope::PartitionTurns::next_turn(&**owned.partitions(), topic, partition)
                    .map(|turn| {
                        self.local_turns.push(turn);
                        self.local_turns.len() - 1
                    }),
                None => None,
            };
            let decided = matches!(o, Outcome::Decided(_));
            if let Some(t) = t {
                if self.which.len() <= t {
                    self.which.resize_with(t + 1, || (Vec::new(), -1));
                }
                let w = &mut self.which[t];
                w.1 = w.1.max(offset);
                if decided {
                    w.0.push(self.events.len());
                }
            }
            if decided {
                self.events.push(ev);
            }
        }
        let n = n_turns(self);
        self.which.resize_with(n.max(self.which.len()), || (Vec::new(), -1));
    }

    /// The partition-owned windows, partition by partition in each one's turn: whether
    /// some were decided on defaults, and the batch's checkpoints for the acker (taken also
    /// when a partition failed: sealed checkpoints must reach the acker in order).
    fn owned(
        &mut self,
        stamped: &[Turn],
        reqs: &[Request<'_>],
        out: &mut [Option<f64>],
    ) -> (Result<bool, StageFailure>, Option<Box<dyn AfterAck>>) {
        let Self { parts, local_turns, which, redelivered, policy, metrics, abort, .. } = self;
        let Some(owned) = parts.owned.as_mut() else { return (Ok(false), None) };
        let turns: &[Turn] = if stamped.is_empty() { local_turns } else { stamped };
        let ctx = Ctx { policy: *policy, metrics, abort };
        // A batch without events is the consumer's idle flush: it seals a checkpoint.
        let flush = !turns.is_empty() && which.iter().take(turns.len()).all(|(_, max_offset)| *max_offset < 0);
        let result = owned_turns(owned, turns, which, redelivered, &ctx, reqs, parts.width, out, flush);
        (result, owned.take_after_ack())
    }

    /// Features, then partition-owned windows, then shared windows, into `out`; the batch's
    /// checkpoints go back whatever happened after they were sealed.
    fn enrich_all(
        &mut self,
        batch: &crate::envelope::Batch,
        outcomes: &[Outcome],
        fence_keys: &[(Arc<str>, i32, String)],
        keys: &[usize],
        out: &mut [Option<f64>],
    ) -> (Result<bool, StageFailure>, Option<Box<dyn AfterAck>>) {
        let mut reqs = recycled(std::mem::take(&mut self.requests));
        reqs.extend(
            batch
                .events
                .iter()
                .zip(outcomes)
                .filter_map(|(ev, o)| match o {
                    Outcome::Decided(d) => Some((ev, d)),
                    Outcome::Dead(_) => None,
                })
                .zip(keys)
                .map(|((ev, d), &key)| Request {
                    fence_key: &fence_keys[key].2,
                    offset: ev.origin.offset,
                    time_ms: d.event_time_ms,
                    entities: &d.entities,
                }),
        );
        let result = self.enrich_requests(batch, &reqs, out);
        self.requests = emptied(reqs);
        result
    }

    /// [`Enrich::enrich_all`] for the batch's requests (one per decoded event).
    fn enrich_requests(
        &mut self,
        batch: &crate::envelope::Batch,
        reqs: &[Request<'_>],
        out: &mut [Option<f64>],
    ) -> (Result<bool, StageFailure>, Option<Box<dyn AfterAck>>) {
        let ctx = Ctx { policy: self.policy, metrics: &self.metrics, abort: &self.abort };
        let part = |name: &str, since: Instant| {
            self.metrics.enrich_part_seconds.with_label_values(&[name]).observe(since.elapsed().as_secs_f64())
        };
        let t = Instant::now();
        let features = match self.parts.features.as_mut() {
            Some(f) => {
                let r = with_policy(&ctx, out, |out| f.enrich_into(reqs, out));
                part("features", t);
                r
            }
            None => Ok(false),
        };
        let mut degraded = match features {
            Ok(d) => d,
            Err(e) => {
                self.pass(batch);
                return (Err(e), None);
            }
        };
        // Partition-owned windows take each partition's turn; shared windows then wait for the
        // batch's turn in sequence order (never the other way round: no cycle).
        let t = Instant::now();
        let (owned, after_ack) = self.owned(&batch.turns, reqs, out);
        if self.parts.owned.is_some() {
            self.metrics.enrich_part_seconds.with_label_values(&["owned"]).observe(t.elapsed().as_secs_f64());
        }
        match owned {
            Ok(d) => degraded |= d,
            Err(e) => {
                if let Some(t) = &self.parts.shared {
                    t.pass(batch.seq, self.abort.token());
                }
                return (Err(e), after_ack);
            }
        }
        if let Some(shared) = &self.parts.shared {
            let ctx = Ctx { policy: self.policy, metrics: &self.metrics, abort: &self.abort };
            let t = Instant::now();
            let r = shared.run(batch.seq, self.abort.token(), |enricher| {
                with_policy(&ctx, out, |out| enricher.enrich_into(reqs, out))
            });
            self.metrics.enrich_part_seconds.with_label_values(&["shared"]).observe(t.elapsed().as_secs_f64());
            match r {
                Some(Ok(d)) => degraded |= d,
                Some(Err(e)) => return (Err(e), after_ack),
                None => return (Err(StageFailure::Aborted), after_ack),
            }
        }
        (Ok(degraded), after_ack)
    }
}

/// What the failure handling needs.
struct Ctx<'a> {
    policy: FailurePolicy,
    metrics: &'a Metrics,
    abort: &'a Abort,
}

impl Ctx<'_> {
    fn failed(&self, e: &EnrichError) {
        let m = self.metrics;
        m.enrich_failures.inc();
        if m.state_store_up.get() == 1 {
            tracing::warn!(error = %e, policy = ?self.policy, "state store unavailable");
        }
        m.state_store_up.set(0);
    }

    fn up(&self) {
        let m = self.metrics;
        if m.state_store_up.get() == 0 {
            tracing::info!("state store reachable again");
        }
        m.state_store_up.set(1);
    }

    fn observe(&self, stats: &BatchStats) {
        // A batch served from the feature cache alone says nothing about the store.
        if stats.round_trips > 0 {
            self.up();
        }
        let m = self.metrics;
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

    /// Counts what the partition-owned windows did for one partition of a batch.
    fn observe_owned(&self, a: &Applied) {
        let m = self.metrics;
        for (result, n) in [("applied", a.applied), ("late", a.late)] {
            if n > 0 {
                m.window_updates.with_label_values(&[result]).inc_by(n);
            }
        }
        for (result, n) in [("found", a.loaded), ("new", a.new)] {
            if n > 0 {
                m.state.loads.with_label_values(&[result]).inc_by(n);
            }
        }
        m.state.redelivered.inc_by(a.redelivered);
    }
}

/// Runs `call` until it succeeds, as the error policy says. Ok(true): decided on defaults.
fn with_policy(
    ctx: &Ctx<'_>,
    out: &mut [Option<f64>],
    mut call: impl FnMut(&mut [Option<f64>]) -> Result<BatchStats, EnrichError>,
) -> Result<bool, StageFailure> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let e = match call(out) {
            Ok(stats) => {
                ctx.observe(&stats);
                return Ok(false);
            }
            Err(e) => e,
        };
        ctx.failed(&e);
        match on_failure(e.policy(), ctx.policy) {
            OnFailure::Degrade => {
                out.iter_mut().for_each(|v| *v = None);
                return Ok(true);
            }
            OnFailure::Retry => {
                if !ctx.abort.sleep(backoff.next_delay()) {
                    return Err(StageFailure::Aborted);
                }
            }
            OnFailure::DeadLetter => {
                return Err(StageFailure::DeadLetterRest { stage: "enrich", detail: e.to_string() })
            }
            OnFailure::Stop => return Err(StageFailure::Stop(format!("enrich failed for good: {e}"))),
        }
    }
}

/// Applies each turn's partition-owned windows in order; on a failure the later turns are
/// let go by.
#[allow(clippy::too_many_arguments)] // the stage's parts, borrowed apart
fn owned_turns(
    owned: &mut OwnedWindows,
    turns: &[Turn],
    which: &[(Vec<usize>, i64)],
    redelivered: &mut Vec<bool>,
    ctx: &Ctx<'_>,
    reqs: &[Request<'_>],
    width: usize,
    out: &mut [Option<f64>],
    flush: bool,
) -> Result<bool, StageFailure> {
    let mut degraded = false;
    redelivered.clear();
    redelivered.resize(reqs.len(), false);
    for (k, (t, (which, max_offset))) in turns.iter().zip(which).enumerate() {
        let events = TurnEvents { reqs, which, max_offset: *max_offset, flush };
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut failure: Option<StageFailure> = None;
        let mut on_error = |e: &EnrichError| {
            ctx.failed(e);
            match on_failure(e.policy(), ctx.policy) {
                OnFailure::Degrade => OnError::Degrade,
                OnFailure::Retry if ctx.abort.sleep(backoff.next_delay()) => OnError::Retry,
                OnFailure::Retry => {
                    failure = Some(StageFailure::Aborted);
                    OnError::Fail
                }
                OnFailure::DeadLetter => OnError::Fail,
                OnFailure::Stop => {
                    failure = Some(StageFailure::Stop(format!("enrich failed for good: {e}")));
                    OnError::Fail
                }
            }
        };
        let mut outputs = Outputs { width, values: out, redelivered };
        let result = owned.apply(t, &events, &mut outputs, ctx.abort.token(), &mut on_error);
        match result {
            Some(Ok(a)) => {
                degraded |= a.degraded;
                ctx.observe_owned(&a);
            }
            None | Some(Err(_)) => {
                for rest in &turns[k + 1..] {
                    owned.pass(rest, ctx.abort.token());
                }
                return Err(match result {
                    Some(Err(e)) => {
                        failure.unwrap_or(StageFailure::DeadLetterRest { stage: "enrich", detail: e.to_string() })
                    }
                    _ if ctx.abort.is_set() => StageFailure::Aborted,
                    // Not aborted, yet the turn was gone: never silently drop a batch.
                    _ => StageFailure::DeadLetterRest {
                        stage: "enrich",
                        detail: format!("the turn of {}/{} was already passed", t.topic, t.partition),
                    },
                });
            }
        }
    }
    Ok(degraded)
}

impl Stage for Enrich {
    fn name(&self) -> &'static str {
        "enrich"
    }

    fn run(&mut self, b: &mut StagedBatch) -> Result<(), StageFailure> {
        let t = Instant::now();
        let mut keys = std::mem::take(&mut self.keys);
        keys.clear();
        for (ev, _) in b.decided() {
            keys.push(self.fence_key(&ev.origin.topic, ev.origin.partition));
        }
        self.plan(b);
        let fence_keys = std::mem::take(&mut self.fence_keys);
        let mut out = std::mem::take(&mut b.enriched);
        out.clear();
        out.resize(b.decided_count() * self.parts.width, None);
        let (result, after_ack) = self.enrich_all(&b.batch, &b.outcomes, &fence_keys, &keys, &mut out);
        self.fence_keys = fence_keys;
        self.keys = keys;
        b.enriched = out;
        b.after_ack = after_ack;
        let degraded = result?;
        if self.parts.owned.is_some() {
            for (r, &ev) in self.events.iter().enumerate() {
                if self.redelivered.get(r).copied().unwrap_or(false) {
                    if let Some(flag) = b.redelivered.get_mut(ev) {
                        *flag = true;
                    }
                }
            }
        }
        b.degraded = degraded;
        if degraded {
            // Every decision of the batch says degraded: counted once per event.
            self.metrics.degraded_events.inc_by(b.decided_count() as u64);
        }
        b.enriched_width = self.parts.width;
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
