//! Waits for every output of a batch to be acknowledged, in batch order, then stores
//! the batch's source offsets. Failed deliveries are re-sent until they succeed or the
//! pipeline aborts; a batch whose outputs are not all delivered never has its offsets stored.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use rdkafka::producer::DeliveryFuture;

use super::Publisher;
use crate::envelope::Origin;
use crate::telemetry::Metrics;

/// Where acknowledged offsets go (the consumer, in production).
pub trait OffsetStore: Send + Sync {
    /// Marks `offset` of `topic`/`partition` processed; the next commit covers it.
    fn store(&self, topic: &str, partition: i32, offset: i64);
}

/// A decided batch whose outputs are in flight.
pub struct Completed {
    /// The consumer's batch sequence number.
    pub seq: u64,
    /// Highest offset per (topic, partition) in the batch.
    pub offsets: Vec<Origin>,
    /// One future per produced record.
    pub deliveries: Vec<DeliveryFuture>,
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

/// Orders acknowledgements and stores offsets.
pub struct Acker {
    rx: Receiver<Completed>,
    offsets: Arc<dyn OffsetStore>,
    publisher: Publisher,
    metrics: Arc<Metrics>,
    abort: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
}

impl Acker {
    /// An acker fed by `rx`; `in_flight` counts dispatched, not yet stored, batches.
    pub fn new(
        rx: Receiver<Completed>,
        offsets: Arc<dyn OffsetStore>,
        publisher: Publisher,
        metrics: Arc<Metrics>,
        abort: Arc<AtomicBool>,
        in_flight: Arc<AtomicUsize>,
    ) -> Self {
        Self { rx, offsets, publisher, metrics, abort, in_flight }
    }

    /// Runs until the channel closes (all workers done) or the pipeline aborts.
    pub fn run(self) {
        let mut waiting: BTreeMap<u64, Completed> = BTreeMap::new();
        let mut next_seq = 0u64;
        let mut latencies = Vec::new();
        while let Ok(done) = self.rx.recv() {
            self.metrics.queue_depth.with_label_values(&["unacked"]).set(self.rx.len() as i64);
            waiting.insert(done.seq, done);
            while let Some(batch) = waiting.remove(&next_seq) {
                if !self.await_deliveries(batch.deliveries) || self.abort.load(Ordering::SeqCst) {
                    return; // aborted: nothing further is stored
                }
                for o in &batch.offsets {
                    self.offsets.store(&o.topic, o.partition, o.offset);
                }
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
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
                next_seq += 1;
            }
        }
    }

    /// Waits for each delivery; re-sends failures with backoff. False if aborted first.
    fn await_deliveries(&self, deliveries: Vec<DeliveryFuture>) -> bool {
        for mut fut in deliveries {
            let mut backoff = Duration::from_millis(50);
            loop {
                match futures::executor::block_on(fut) {
                    Ok(Ok(_)) => break,
                    Ok(Err((error, msg))) => {
                        if self.abort.load(Ordering::SeqCst) {
                            return false;
                        }
                        self.metrics.delivery_retries.inc();
                        tracing::warn!(%error, "delivery failed; re-sending");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        match self.publisher.resend(&msg) {
                            Ok(f) => fut = f,
                            Err(e) => {
                                tracing::error!(error = %e, "re-send refused; batch offsets will not be stored");
                                return false;
                            }
                        }
                    }
                    // The producer went away: the pipeline is being torn down.
                    Err(_canceled) => return false,
                }
            }
        }
        true
    }
}

/// Milliseconds since the Unix epoch.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
