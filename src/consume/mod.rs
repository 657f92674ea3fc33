//! Consume stage: a consumer-group member on a dedicated thread that turns messages
//! into batches (max events or max wait, whichever first) for the workers.
//!
//! Offsets are never stored here: `enable.auto.offset.store=false`, and the publish
//! stage's acker stores each batch's offsets after its outputs are acknowledged.
//! Stored offsets are committed by this loop on an interval, on partition revoke (after
//! in-flight batches drain) and on shutdown. Not by librdkafka's auto-commit: it skips
//! every commit while the group rebalances, and a rebalance waiting for a dead member's
//! session to time out can last many seconds, all of which a crash would then replay.
//!
//! Backpressure: when the worker queue is full the consumer waits; if it stays full for
//! longer than a short grace period, the assigned partitions are paused (fetching stops,
//! nothing is buffered beyond librdkafka's bounded prefetch) and resumed once the batch
//! is taken.

mod client;
pub mod config;
mod context;
mod control;
mod fetch;
mod incoming;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{SendTimeoutError, Sender};
use rdkafka::consumer::{BaseConsumer, Consumer};

pub use client::{commit_stored, consumer_config, create_consumer, ConsumerOffsets};
pub use context::VerdictContext;
pub use control::Control;

use crate::envelope::{Batch, BatchLimit, Envelope, GenerationSource, PartitionTurns, RawMessage, RulesSource, Turn};
use crate::telemetry::Metrics;
use config::BatchConfig;

/// How long a full worker queue may block the consumer before its partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_millis(250);

/// The consumer's own queue is served at least this often, even when its callback did not
/// wake the consume thread.
const SERVE_EVERY: Duration = Duration::from_millis(100);

/// The consumer type verdict uses.
pub type KafkaConsumer = BaseConsumer<VerdictContext>;

/// How the consume loop ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Graceful: flush the partial batch; the caller drains and commits.
    Drain,
    /// Crash-like: drop the partial batch; nothing more is stored.
    Abort,
}

/// The consume loop: runs on its own thread until `control` says stop.
pub struct ConsumeLoop {
    consumer: Arc<KafkaConsumer>,
    batch_cfg: BatchConfig,
    tx: Sender<Batch>,
    metrics: Arc<Metrics>,
    in_flight: Arc<AtomicUsize>,
    control: Arc<Control>,
    topics: Vec<Arc<str>>,
    next_seq: u64,
    paused: bool,
    commit_interval: Duration,
    last_commit: Instant,
    rules: Option<Arc<dyn RulesSource>>,
    models: Option<Arc<dyn GenerationSource>>,
    budget: Option<Arc<dyn BatchLimit>>,
    turns: Option<Arc<dyn PartitionTurns>>,
    /// Partitions another instance took over: not fetched, their messages dropped, until revoked.
    fenced: HashSet<(Arc<str>, i32)>,
    /// Per partition with state: when a batch of it was last dispatched, and whether one was
    /// since the last idle flush.
    dispatched: std::collections::HashMap<(Arc<str>, i32), (Instant, bool)>,
    last_flush_check: Instant,
    /// Queued batches' oldest event times, for the deadline check (`decide.deadline_ms`).
    pub queued: Option<Arc<crate::envelope::Queued>>,
    /// Copies payloads into buffers the workers gave back.
    pub payloads: crate::envelope::Payloads,
    /// The fetch queue (None if librdkafka refused one: then `poll` returns every message).
    reader: Option<fetch::Reader>,
    /// When the consumer's queue is served next even if its callback did not fire.
    serve_due: Instant,
}

impl Drop for ConsumeLoop {
    fn drop(&mut self) {
        // The fetch queue goes first: a consumer destroyed while its messages wait there
        // would wait for them forever (librdkafka's broker threads hold the partitions).
        self.reader.take();
    }
}

impl ConsumeLoop {
    /// Builds the loop; `in_flight` counts batches dispatched and not yet stored; stored
    /// offsets are committed every `commit_interval`.
    pub fn new(
        consumer: Arc<KafkaConsumer>,
        batch_cfg: BatchConfig,
        commit_interval: Duration,
        tx: Sender<Batch>,
        metrics: Arc<Metrics>,
        in_flight: Arc<AtomicUsize>,
        control: Arc<Control>,
    ) -> Self {
        // Opened before the consumer's first poll: no partition is assigned yet.
        let reader = consumer.context().fetch().and_then(fetch::Fetch::open);
        Self {
            consumer,
            batch_cfg,
            tx,
            metrics,
            in_flight,
            control,
            topics: Vec::new(),
            next_seq: 0,
            paused: false,
            commit_interval,
            last_commit: Instant::now(),
            rules: None,
            models: None,
            budget: None,
            turns: None,
            fenced: HashSet::new(),
            dispatched: std::collections::HashMap::new(),
            last_flush_check: Instant::now(),
            queued: None,
            payloads: Default::default(),
            reader,
            serve_due: Instant::now(),
        }
    }

    /// Stamps each batch with its turn in each of its partitions' order (partition-owned state).
    pub fn with_turns(mut self, turns: Option<Arc<dyn PartitionTurns>>) -> Self {
        self.turns = turns;
        self
    }

    /// Caps batches to what the scoring budget allows.
    pub fn with_budget<B: BatchLimit + 'static>(mut self, budget: Option<Arc<B>>) -> Self {
        self.budget = budget.map(|b| b as Arc<dyn BatchLimit>);
        self
    }

    /// Stamps each batch with the model generation in force when it is dispatched.
    pub fn with_models(mut self, models: Arc<dyn GenerationSource>) -> Self {
        self.models = Some(models);
        self
    }

    /// Stamps each batch with the rules version in force when it is dispatched.
    pub fn with_rules(mut self, rules: Arc<dyn RulesSource>) -> Self {
        self.rules = Some(rules);
        self
    }

    /// Commits the stored offsets (asynchronously; the result arrives in the context's
    /// commit callback) once per commit interval — rebalancing or not. A broker that
    /// refuses a commit mid-rebalance gets it again at the next interval.
    fn commit_tick(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_commit) < self.commit_interval {
            return;
        }
        self.last_commit = now;
        client::commit_async(&self.consumer);
    }

    /// One poll. Serves the consumer's queue first when it has something (rebalances, commit
    /// results, errors, statistics, and messages of any partition not forwarded to the fetch
    /// queue), at least every `SERVE_EVERY`; then waits up to `timeout` for a message on the
    /// fetch queue. Messages go to `out`. `last` is the clock as last read; returns it read
    /// after the poll.
    fn poll_into(&mut self, timeout: Duration, out: &mut Vec<Envelope<RawMessage>>, last: Instant) -> Instant {
        let Some(reader) = &self.reader else {
            let polled = self.consumer.poll(timeout);
            let now = Instant::now();
            match polled {
                Some(Ok(m)) => out.push(incoming::envelope(&mut self.topics, &mut self.payloads, &m, now)),
                Some(Err(e)) => self.consumer.context().poll_error(&e),
                None => {}
            }
            return now;
        };
        let mut timeout = timeout;
        if reader.take_pending() || last >= self.serve_due {
            self.serve_due = last + SERVE_EVERY;
            // Each `poll` handles one event; what librdkafka queued meanwhile is served too
            // (its callback fires only when the queue stops being empty).
            for _ in 0..64 {
                match self.consumer.poll(Duration::ZERO) {
                    Some(Ok(m)) => {
                        out.push(incoming::envelope(&mut self.topics, &mut self.payloads, &m, last));
                        timeout = Duration::ZERO;
                    }
                    Some(Err(e)) => self.consumer.context().poll_error(&e),
                    None => {}
                }
                if reader.main_len() == 0 {
                    break;
                }
            }
        }
        let fetched = reader.next(timeout);
        let now = Instant::now();
        if let Some(m) = fetched {
            match m.error() {
                Some(e) => self.consumer.context().poll_error(&e),
                None => out.push(incoming::envelope(&mut self.topics, &mut self.payloads, &m, now)),
            }
        }
        now
    }

    /// Polls, batches and dispatches until stopped. Returns how it ended.
    pub fn run(mut self) -> Exit {
        let max_wait = Duration::from_millis(self.batch_cfg.max_wait_ms);
        let mut events: Vec<Envelope<RawMessage>> = self.payloads.spent().lists.try_take(self.batch_cfg.max_events);
        let mut deadline = Instant::now();
        // The clock as read after the last poll: the next poll's timeout is counted from it
        // (the loop's own work since is microseconds; after a dispatch that leaves a partial
        // batch it is read again).
        let mut now = deadline;
        loop {
            if self.control.aborted() {
                return Exit::Abort;
            }
            if self.control.stopping() {
                if !events.is_empty() {
                    let batch = std::mem::take(&mut events);
                    if !self.dispatch(batch, &mut Vec::new()) {
                        return Exit::Abort;
                    }
                }
                return Exit::Drain;
            }
            let timeout = if events.is_empty() {
                Duration::from_millis(100)
            } else {
                // librdkafka waits in whole milliseconds: round up, or a sub-millisecond
                // remainder becomes a non-blocking poll and this loop spins.
                let left = deadline.saturating_duration_since(now);
                Duration::from_millis(left.as_micros().div_ceil(1000) as u64)
            };
            let was_empty = events.is_empty();
            // One clock read per message for everything here (the clock is not free: on
            // this project's VMs it was a fifth of this thread's time when read five times).
            now = self.poll_into(timeout, &mut events, now);
            if was_empty && !events.is_empty() {
                deadline = now + max_wait;
            }
            self.commit_tick(now);
            self.drop_revoked(&mut events);
            if !self.flush_idle(&events, now) {
                return Exit::Abort;
            }
            let max_events = self.budget.as_ref().map_or(self.batch_cfg.max_events, |b| b.max_events());
            if events.len() >= max_events || (!events.is_empty() && now >= deadline) {
                let next = self.payloads.spent().lists.try_take(self.batch_cfg.max_events);
                let batch = std::mem::replace(&mut events, next);
                let mut overflow = Vec::new();
                if !self.dispatch(batch, &mut overflow) {
                    return Exit::Abort;
                }
                if !overflow.is_empty() {
                    now = Instant::now();
                    deadline = now;
                    events = overflow;
                }
            }
        }
    }

    /// Messages of partitions revoked while they sat in the partial batch are dropped:
    /// their offsets were never stored, so the partitions' new owner reads them again.
    fn drop_revoked(&mut self, events: &mut Vec<Envelope<RawMessage>>) {
        // A newly assigned partition is fetched, whatever paused it while it was ours before:
        // librdkafka keeps an application pause across revocation and re-assignment, so a
        // partition fenced (or paused for back-pressure) and revoked, then given back to this
        // member, would otherwise never be fetched again. Resuming an unpaused partition is a
        // no-op (librdkafka ≥ 2.6). While the queue is full, `resume` does it later.
        let assigned = self.consumer.context().take_assigned();
        if !assigned.is_empty() {
            self.fenced.retain(|(t, p)| !assigned.iter().any(|(at, ap)| ap == p && **t == **at));
            if !self.paused {
                let mut tpl = rdkafka::TopicPartitionList::new();
                for (t, p) in &assigned {
                    tpl.add_partition(t, *p);
                }
                let _ = self.consumer.resume(&tpl);
            }
        }
        let revoked = self.consumer.context().take_revoked();
        if !revoked.is_empty() {
            self.fenced.retain(|(t, p)| !revoked.iter().any(|(rt, rp)| rp == p && **t == **rt));
            if !events.is_empty() {
                let set: HashSet<(String, i32)> = revoked.into_iter().collect();
                events.retain(|e| !set.contains(&(e.origin.topic.to_string(), e.origin.partition)));
            }
        }
        // Partitions fenced by another instance's claim: stop fetching them; the group
        // revokes them from this member soon (it was presumed dead).
        if let Some(turns) = &self.turns {
            let fenced = turns.take_fenced();
            if !fenced.is_empty() {
                let mut tpl = rdkafka::TopicPartitionList::new();
                for (t, p) in &fenced {
                    tpl.add_partition(t, *p);
                }
                let _ = self.consumer.pause(&tpl);
                tracing::warn!(partitions = ?fenced, "partitions fenced by another instance; not fetched any more");
                self.fenced.extend(fenced);
            }
        }
        if !self.fenced.is_empty() {
            let fenced = &self.fenced;
            events.retain(|e| !fenced.contains(&(e.origin.topic.clone(), e.origin.partition)));
        }
    }

    /// Partitions with state that got events and then none for a checkpoint interval get an
    /// empty batch: its turn seals their last changes into a checkpoint, which the acker
    /// writes in order (otherwise a drained partition's state and offset would wait for its
    /// next event). Not for a partition with events in the partial batch. False if aborted.
    fn flush_idle(&mut self, partial: &[Envelope<RawMessage>], now: Instant) -> bool {
        let Some(interval) = self.turns.as_ref().and_then(|t| t.idle_flush()) else { return true };
        if now.saturating_duration_since(self.last_flush_check) < interval / 4 {
            return true;
        }
        self.last_flush_check = now;
        let idle: Vec<(Arc<str>, i32)> = self
            .dispatched
            .iter()
            .filter(|(k, (at, pending))| {
                *pending
                    && at.elapsed() >= interval
                    && !self.fenced.contains(*k)
                    && !partial.iter().any(|e| e.origin.partition == k.1 && e.origin.topic == k.0)
            })
            .map(|(k, _)| k.clone())
            .collect();
        if idle.is_empty() {
            return true;
        }
        let assigned = self.consumer.assignment().ok();
        let turns: Vec<Turn> = idle
            .iter()
            .filter(|(t, p)| {
                assigned.as_ref().is_some_and(|a| a.elements().iter().any(|e| e.partition() == *p && e.topic() == &**t))
            })
            .filter_map(|(t, p)| self.turns.as_ref().and_then(|s| s.next_turn(t, *p)))
            .collect();
        for k in &idle {
            self.dispatched.remove(k);
        }
        if turns.is_empty() {
            return true;
        }
        self.send(
            Batch { seq: self.next_seq, events: Vec::new(), rules: None, model_generation: 0, turns },
            &mut Vec::new(),
        )
    }

    /// The batch's turn in each of its partitions' order, in first-seen order.
    fn turns(&self, events: &[Envelope<RawMessage>]) -> Vec<Turn> {
        let Some(source) = &self.turns else { return Vec::new() };
        let mut seen: smallvec::SmallVec<[(&Arc<str>, i32); 16]> = smallvec::SmallVec::new();
        for e in events {
            if !seen.iter().any(|(t, p)| *p == e.origin.partition && ***t == *e.origin.topic) {
                seen.push((&e.origin.topic, e.origin.partition));
            }
        }
        let mut turns = self.payloads.spent().turns.try_take(seen.len());
        turns.extend(seen.into_iter().filter_map(|(t, p)| source.next_turn(t, p)));
        turns
    }

    /// Hands a batch to the workers, pausing the partitions while the queue is full.
    /// Messages polled meanwhile (already prefetched) go to `overflow`. False if aborted.
    fn dispatch(&mut self, events: Vec<Envelope<RawMessage>>, overflow: &mut Vec<Envelope<RawMessage>>) -> bool {
        self.metrics.batch_events.observe(events.len() as f64);
        self.metrics.count("consume", "received", events.len() as u64);
        let rules = self.rules.as_ref().map(|r| r.current_stamp());
        let model_generation = self.models.as_ref().map_or(0, |m| m.current_generation());
        let turns = self.turns(&events);
        let now = Instant::now();
        for t in &turns {
            self.dispatched.insert((t.topic.clone(), t.partition), (now, true));
        }
        let batch = Batch { seq: self.next_seq, events, rules, model_generation, turns };
        if let Some(q) = &self.queued {
            if let Some(t) = batch.oldest_ms(crate::core::clock::wall_clock_ms()) {
                q.push(batch.seq, t);
            }
        }
        self.send(batch, overflow)
    }

    /// Sends a batch to the workers (see [`ConsumeLoop::dispatch`]). False if aborted.
    fn send(&mut self, mut batch: Batch, overflow: &mut Vec<Envelope<RawMessage>>) -> bool {
        // Short waits are ordinary backpressure: block (without polling) instead of pausing.
        // Pausing purges librdkafka's prefetched messages and resuming re-fetches them, which
        // measured 3.5x slower when done for every full queue. Pause only when the wait is long
        // (a Redis outage, say), so rebalances and the poll deadline keep being served.
        let mut wait = PAUSE_AFTER;
        loop {
            let timeout = std::mem::replace(&mut wait, Duration::from_millis(20));
            match self.tx.send_timeout(batch, timeout) {
                Ok(()) => {
                    // Counted after the send: a revoke (run inside our own poll) then waits only
                    // for batches the workers can finish. The acker may decrement first; the
                    // counter wraps and is back in step before this thread polls again.
                    self.in_flight.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                Err(SendTimeoutError::Timeout(b)) => {
                    batch = b;
                    if self.control.aborted() {
                        return false;
                    }
                    self.pause();
                    // Keep serving rebalances and the poll-interval deadline while paused.
                    let now = self.poll_into(Duration::ZERO, overflow, Instant::now());
                    self.commit_tick(now);
                }
                Err(SendTimeoutError::Disconnected(_)) => return false,
            }
        }
        self.next_seq += 1;
        self.metrics.queue_depth.with_label_values(&["batches"]).set(self.tx.len() as i64);
        self.resume();
        true
    }

    fn pause(&mut self) {
        if let Ok(assignment) = self.consumer.assignment() {
            // Re-applied on each wait: a rebalance may have added partitions meanwhile.
            let _ = self.consumer.pause(&assignment);
        }
        if !self.paused {
            self.paused = true;
            self.metrics.paused.set(1);
            tracing::info!("worker queue full; partitions paused");
        }
    }

    fn resume(&mut self) {
        if self.paused {
            if let Ok(assignment) = self.consumer.assignment() {
                let mut tpl = rdkafka::TopicPartitionList::new();
                for e in assignment.elements() {
                    if !self.fenced.iter().any(|(t, p)| *p == e.partition() && **t == *e.topic()) {
                        tpl.add_partition(e.topic(), e.partition());
                    }
                }
                let _ = self.consumer.resume(&tpl);
            }
            self.paused = false;
            self.metrics.paused.set(0);
            tracing::info!("worker queue has room; partitions resumed");
        }
    }
}

#[cfg(test)]
mod tests;
