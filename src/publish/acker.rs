//! Waits for every output of a batch to be acknowledged, in batch order, records the
//! batch's latency, then hands its source offsets to the offset stage ([`super::offsets`]). A delivery that failed for a transient reason is re-sent with
//! a bounded backoff until it succeeds or the pipeline aborts; one the broker refused for good
//! is handled by `publish.on_refused` (dead-lettered, skipped, or the pipeline stops), never
//! retried. A batch whose outputs are not all accounted for never has its offsets stored.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;

use super::config::RefusedPolicy;
use super::delivery::{Deliveries, Waited};
use super::limits::{self, Class};
use super::offsets::{Acked, Offsets};
use super::Publisher;
use crate::backoff::Backoff;
use crate::envelope::{AfterAck, Origin};
use crate::error::DeadLetterReason;
use crate::telemetry::Metrics;
use tracing::Level;

pub use crate::envelope::OffsetStore;

/// A decided batch whose outputs are in flight.
pub struct Completed {
    /// The consumer's batch sequence number.
    pub seq: u64,
    /// Highest offset per (topic, partition) in the batch.
    pub offsets: Vec<Origin>,
    /// Partition-owned state: makes the batch's checkpoints durable once its outputs are
    /// acknowledged, and says which offsets to store instead of `offsets`.
    pub after_ack: Option<Box<dyn AfterAck>>,
    /// The batch's produced records, counted until each has its delivery report.
    pub deliveries: Deliveries,
    /// Poll time of every event, for latency.
    pub received: Vec<Instant>,
    /// Kafka timestamps of decided events (ms), for event→decision latency.
    pub timestamps: Vec<i64>,
    /// When the worker checked the batch's deadlines (deadline fallback on) and the scoring
    /// time it predicted for the rows it admitted: whatever the time from the check to
    /// acknowledgement exceeds that prediction by is what later checks keep in reserve.
    pub checked: Option<(Instant, Duration)>,
}

/// Per acknowledged batch, how much of the deadline reserve is kept: it halves in about
/// 140 batches (a second or two under load), so one slow batch is remembered for a while.
const RESERVE_DECAY: f64 = 0.995;

/// Orders acknowledgements and hands offsets on.
pub struct Acker {
    rx: Receiver<Completed>,
    offsets: Offsets,
    to_store: Sender<Acked>,
    publisher: Publisher,
    metrics: Arc<Metrics>,
    abort: CancellationToken,
    refused: Refusals,
    log: crate::lograte::LogRate,
    /// Where batches' latency lists go back to the workers (None: they are freed).
    spent: Option<crate::envelope::Spent>,
}

/// What to do with outputs the broker refuses for good.
#[derive(Debug, Clone)]
pub struct Refusals {
    /// `publish.on_refused`.
    pub policy: RefusedPolicy,
    /// `kafka.dead_letter_topic`.
    pub dead_letter_topic: String,
}

impl Acker {
    /// An acker fed by `rx` that hands acknowledged batches to `offsets` (through `to_store`
    /// when they must wait for the offset thread); once `abort` is cancelled nothing further
    /// is handed on or re-sent.
    pub fn new(
        rx: Receiver<Completed>,
        offsets: Offsets,
        to_store: Sender<Acked>,
        publisher: Publisher,
        metrics: Arc<Metrics>,
        abort: CancellationToken,
        refused: Refusals,
    ) -> Self {
        let log = crate::lograte::LogRate::new("publish", crate::lograte::WINDOW, Some(&metrics));
        Self { rx, offsets, to_store, publisher, metrics, abort, refused, log, spent: None }
    }

    /// Hands each acknowledged batch's latency lists back to the workers through `spent`.
    pub fn with_spent(mut self, spent: crate::envelope::Spent) -> Self {
        self.spent = Some(spent);
        self
    }

    /// Runs until the channel closes (all workers done) or the pipeline aborts.
    pub fn run(mut self) {
        let mut waiting: BTreeMap<u64, Completed> = BTreeMap::new();
        let mut next_seq = 0u64;
        let mut latencies = Vec::new();
        while let Ok(done) = self.rx.recv() {
            self.metrics.queue_depth.with_label_values(&["unacked"]).set(self.rx.len() as i64);
            waiting.insert(done.seq, done);
            while let Some(batch) = waiting.remove(&next_seq) {
                if !self.await_deliveries(&batch.deliveries) || self.abort.is_cancelled() {
                    return; // aborted: nothing further is stored
                }
                // The decisions are acknowledged: that is the batch's latency. Its offsets
                // wait, on the offset thread, for any checkpoint that must cover them.
                let now = Instant::now();
                latencies.clear();
                latencies.extend(batch.received.iter().map(|r| now.duration_since(*r).as_micros() as u64));
                self.metrics.record_latencies(&latencies);
                self.metrics.record_event_latencies(&batch.timestamps, wall_clock_ms());
                if let Some((at, predicted)) = batch.checked {
                    // The check's error: publishing, waiting for earlier batches, and scoring
                    // beyond the prediction. A decaying maximum follows a slower tail at once
                    // and forgets it over a few hundred batches.
                    let beyond = now.duration_since(at).saturating_sub(predicted).as_secs_f64();
                    let r = &self.metrics.deadline_reserve;
                    r.set(beyond.max(r.get() * RESERVE_DECAY));
                }
                if let Some(spent) = &self.spent {
                    spent.received.give(batch.received);
                    spent.timestamps.give(batch.timestamps);
                    let mut deliveries = batch.deliveries;
                    if deliveries.is_clean() {
                        spent.deliveries.put(deliveries);
                    }
                }
                let acked = Acked { offsets: batch.offsets, after_ack: batch.after_ack };
                if !self.offsets.hand_on(acked, &self.to_store) {
                    return;
                }
                next_seq += 1;
            }
        }
    }

    /// Waits for every delivery report of the batch, then settles its failures. False if the
    /// batch's offsets must not be stored (aborted, or a refused output under
    /// `on_refused = "stop"`, or a fatal producer error).
    fn await_deliveries(&mut self, deliveries: &Deliveries) -> bool {
        if !self.wait(deliveries) {
            return false;
        }
        deliveries.take_failed().into_iter().all(|(error, msg)| self.settle(error, msg, true))
    }

    /// Waits for `d`'s delivery reports, looking at the abort flag every 100 ms. False if
    /// the pipeline aborted first.
    fn wait(&self, d: &Deliveries) -> bool {
        while d.wait(Duration::from_millis(100)) == Waited::Pending {
            if self.abort.is_cancelled() {
                return false;
            }
        }
        true
    }

    /// A record whose delivery failed: re-sent with a bounded backoff while the failure is
    /// transient, handed to the policy when refused (`dead_letter` only when
    /// `may_dead_letter`: not for a copy that is itself a dead letter of a refused output).
    fn settle(&mut self, mut error: rdkafka::error::KafkaError, mut msg: OwnedMessage, may_dead_letter: bool) -> bool {
        let mut backoff = resend_backoff();
        loop {
            if self.abort.is_cancelled() {
                return false;
            }
            let label = limits::error_label(&error);
            match limits::classify(&error) {
                Class::Retryable => {
                    self.metrics.delivery_retries.inc();
                    self.metrics.guards.produce_errors.with_label_values(&[&label, "retried"]).inc();
                    if self.log.admit(Level::WARN, "delivery failed; re-sending") {
                        tracing::warn!(%error, topic = rdkafka::Message::topic(&msg), "delivery failed; re-sending");
                    }
                    if !backoff.wait(&self.abort) {
                        return false;
                    }
                    let again = Deliveries::default();
                    loop {
                        match self.publisher.resend(&msg, &again) {
                            Ok(()) => break,
                            Err(e) if e.class() == Class::Retryable && !self.abort.is_cancelled() => {
                                if !backoff.wait(&self.abort) {
                                    return false;
                                }
                            }
                            Err(super::PublishError::Send { error, .. }) if !self.abort.is_cancelled() => {
                                return self.refused(&msg, &error, may_dead_letter);
                            }
                            Err(_) => return false,
                        }
                    }
                    if !self.wait(&again) {
                        return false;
                    }
                    match again.take_failed().pop() {
                        None => return true,
                        Some((e, m)) => (error, msg) = (e, m),
                    }
                }
                Class::Refused => return self.refused(&msg, &error, may_dead_letter),
                Class::Fatal => {
                    self.metrics.guards.produce_errors.with_label_values(&[&label, "stopped"]).inc();
                    self.metrics.guards.fail(format!("producer failed for good: {error}"));
                    return false;
                }
            }
        }
    }

    /// An output the broker refused for good, handled by `publish.on_refused`. False if the
    /// pipeline must stop here.
    fn refused(&mut self, msg: &OwnedMessage, error: &rdkafka::error::KafkaError, may_dead_letter: bool) -> bool {
        use rdkafka::Message;
        let label = limits::error_label(error);
        let topic = msg.topic().to_string();
        if limits::classify(error) == Class::Fatal {
            self.metrics.guards.produce_errors.with_label_values(&[&label, "stopped"]).inc();
            self.metrics.guards.fail(format!("producer failed for good: {error}"));
            return false;
        }
        let dead_letter = may_dead_letter && topic != self.refused.dead_letter_topic;
        match self.refused.policy {
            RefusedPolicy::Stop => {
                self.metrics.guards.produce_errors.with_label_values(&[&label, "stopped"]).inc();
                self.metrics.guards.fail(format!(
                    "topic '{topic}' refused an output for good ({error}) and publish.on_refused = \"stop\""
                ));
                false
            }
            RefusedPolicy::DeadLetter if dead_letter => {
                self.metrics.guards.produce_errors.with_label_values(&[&label, "dead_lettered"]).inc();
                self.metrics.dead_letters.with_label_values(&[DeadLetterReason::OutputRefused.code()]).inc();
                if self.log.admit(Level::WARN, "output refused for good; sent to the dead-letter topic") {
                    tracing::warn!(%error, topic, "output refused for good; sent to the dead-letter topic");
                }
                let mut backoff = resend_backoff();
                loop {
                    let copy = Deliveries::default();
                    match self.publisher.dead_letter_refused(&self.refused.dead_letter_topic, msg, error, &copy) {
                        Ok(()) => {
                            if !self.wait(&copy) {
                                return false;
                            }
                            return copy.take_failed().into_iter().all(|(e, m)| self.settle(e, m, false));
                        }
                        Err(e) if e.class() == Class::Retryable && !self.abort.is_cancelled() => {
                            if !backoff.wait(&self.abort) {
                                return false;
                            }
                        }
                        Err(super::PublishError::Send { error, .. }) if !self.abort.is_cancelled() => {
                            let msg = OwnedMessage::new(
                                None,
                                None,
                                self.refused.dead_letter_topic.clone(),
                                rdkafka::Timestamp::NotAvailable,
                                -1,
                                -1,
                                None,
                            );
                            return self.refused(&msg, &error, false);
                        }
                        Err(_) => return false,
                    }
                }
            }
            RefusedPolicy::DeadLetter | RefusedPolicy::Skip => {
                self.metrics.guards.produce_errors.with_label_values(&[&label, "skipped"]).inc();
                if self.log.admit(Level::ERROR, "output refused for good; skipped") {
                    tracing::error!(%error, topic, "output refused for good; skipped");
                }
                true
            }
        }
    }
}

/// Re-sends after a transient failure: from 50 ms, doubling, at most 5 s apart.
fn resend_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_secs(5))
}

pub use crate::core::clock::wall_clock_ms;
