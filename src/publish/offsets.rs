//! The offset stage: stores each acknowledged batch's source offsets, in batch order, after
//! whatever must be durable first (partition-owned state: the checkpoint that covers them).
//!
//! It runs on its own thread behind the acker, so a checkpoint write to Redis delays only
//! the offsets it covers, never the acknowledgement (and latency) of the decisions behind
//! it. A batch with nothing to make durable goes straight to the offset store from the
//! acker when nothing is queued here, so the in-process backend pays no extra thread hop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use tokio_util::sync::CancellationToken;

use crate::core::pool::VecPool;
use crate::envelope::{AfterAck, OffsetStore, Origin};
use crate::telemetry::Metrics;

/// Acknowledged batches waiting for their offsets to be stored. The consumer's
/// `max_unacked_batches` bounds them first; this only keeps the channel bounded.
pub const QUEUE: usize = 256;

/// A batch whose outputs are all acknowledged.
pub struct Acked {
    /// Highest offset per (topic, partition) in the batch.
    pub offsets: Vec<Origin>,
    /// Makes the batch's checkpoints durable and says which offsets to store instead.
    pub after_ack: Option<Box<dyn AfterAck>>,
}

/// Where acknowledged batches' offsets go, shared by the acker and the offset thread.
#[derive(Clone)]
pub struct Offsets {
    store: Arc<dyn OffsetStore>,
    metrics: Arc<Metrics>,
    in_flight: Arc<AtomicUsize>,
    /// Batches sent to the offset thread and not yet stored.
    queued: Arc<AtomicUsize>,
    /// Where stored offset lists go back to the workers (None: freed).
    spent: Option<VecPool<Origin>>,
}

impl Offsets {
    /// Offsets stored into `store`; `in_flight` counts dispatched, not yet stored, batches.
    pub fn new(store: Arc<dyn OffsetStore>, metrics: Arc<Metrics>, in_flight: Arc<AtomicUsize>) -> Self {
        Self { store, metrics, in_flight, queued: Arc::new(AtomicUsize::new(0)), spent: None }
    }

    /// Hands each stored batch's offset list back to the workers through `spent`.
    pub fn with_spent(mut self, spent: VecPool<Origin>) -> Self {
        self.spent = Some(spent);
        self
    }

    /// Hands an acknowledged batch on: stored at once when it needs nothing made durable and
    /// no earlier batch is still queued (order is kept), else queued for the offset thread.
    /// False if the offset thread has gone (the pipeline is aborting).
    pub fn hand_on(&self, acked: Acked, tx: &Sender<Acked>) -> bool {
        if acked.after_ack.is_none() && self.queued.load(Ordering::SeqCst) == 0 {
            self.store(acked.offsets);
            return true;
        }
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.metrics.queue_depth.with_label_values(&["unstored"]).set(tx.len() as i64 + 1);
        tx.send(acked).is_ok()
    }

    /// The offset thread: makes each batch's state durable, then stores its offsets, in
    /// order, until the acker ends (the channel closes) or the pipeline aborts.
    pub fn run(self, rx: Receiver<Acked>, abort: CancellationToken) {
        while let Ok(acked) = rx.recv() {
            self.metrics.queue_depth.with_label_values(&["unstored"]).set(rx.len() as i64);
            let offsets = match acked.after_ack {
                Some(after) => after.run(&abort),
                None => acked.offsets,
            };
            if abort.is_cancelled() {
                return; // aborted: nothing further is stored
            }
            self.store(offsets);
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn store(&self, offsets: Vec<Origin>) {
        for o in &offsets {
            self.store.store(&o.topic, o.partition, o.offset);
        }
        if let Some(spent) = &self.spent {
            spent.give(offsets);
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.metrics.guards.last_progress.set(super::acker::wall_clock_ms() as f64 / 1e3);
    }
}
