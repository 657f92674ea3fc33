//! The envelope every event travels in, from consume to publish.
//!
//! Source coordinates (topic, partition, offset) ride along so that only the publish
//! stage, after the broker acknowledged every output, marks the offset done.
//!
//! The consumer builds a [`Batch`] and stamps it with what is in force at dispatch; it
//! learns that through the narrow traits here ([`RulesSource`], [`GenerationSource`],
//! [`BatchLimit`]), and the publish stage hands offsets back through [`OffsetStore`], so
//! the consumer knows neither the rules, the model, the scoring budget nor the publisher.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Where a message came from in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// Source topic (shared, so cloning is a reference-count bump).
    pub topic: Arc<str>,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
}

/// One event plus its source coordinates and timing.
#[derive(Debug, Clone)]
pub struct Envelope<T> {
    /// Source topic/partition/offset.
    pub origin: Origin,
    /// When verdict polled the message.
    pub received_at: Instant,
    /// Kafka message timestamp (ms since epoch), if the broker gave one.
    pub timestamp_ms: Option<i64>,
    /// The stage-specific payload.
    pub payload: T,
}

/// A record key as consumed: inline up to 24 bytes (entity ids: no heap allocation).
pub type Key = smallvec::SmallVec<[u8; 24]>;

/// A message as consumed: bytes owned, nothing interpreted yet.
#[derive(Debug, Clone, Default)]
pub struct RawMessage {
    /// Message key.
    pub key: Option<Key>,
    /// Message payload.
    pub payload: Option<Vec<u8>>,
    /// Message headers, copied so a dead-letter record can carry them on.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A batch handed from the consumer to a worker. `seq` orders acknowledgement.
#[derive(Debug)]
pub struct Batch {
    /// Monotonic sequence number assigned by the consumer.
    pub seq: u64,
    /// The events, in consume order.
    pub events: Vec<Envelope<RawMessage>>,
    /// The rules version that decides this batch, stamped at dispatch in `seq` order, so
    /// versions never go backwards along a partition even with several workers.
    /// Opaque here: the decide stage reads it back with [`Batch::rules_as`].
    pub rules: Option<Stamp>,
    /// The model generation in force at dispatch (see `reload`): the worker swaps in
    /// a newer model before deciding this batch.
    pub model_generation: u64,
    /// Per source partition of the batch with partition-owned state, its place in that
    /// partition's order (stamped at dispatch, in consume order).
    pub turns: Vec<Turn>,
}

/// A batch's place in one partition's order: the enrich stage applies the partition's
/// events batch after batch in this order, whichever worker holds each batch.
#[derive(Debug, Clone)]
pub struct Turn {
    /// Source topic.
    pub topic: Arc<str>,
    /// Source partition.
    pub partition: i32,
    /// The batch's number in this partition's order (0, 1, ...).
    pub seq: u64,
    /// The partition's state, as its owner made it (opaque here).
    pub slot: Stamp,
}

/// Where the consumer gets each partition's next turn (the partition-owned state).
pub trait PartitionTurns: Send + Sync {
    /// The next turn of `topic`/`partition`, None when it keeps no state.
    fn next_turn(&self, topic: &Arc<str>, partition: i32) -> Option<Turn>;

    /// Partitions whose state another instance took over (fenced) since the last call: the
    /// consumer stops fetching them until the group revokes them.
    fn take_fenced(&self) -> Vec<(Arc<str>, i32)>;

    /// How long a partition may sit idle with changes not yet checkpointed before the
    /// consumer sends it an empty batch to seal them (None: nothing is checkpointed).
    fn idle_flush(&self) -> Option<std::time::Duration>;
}

/// What the consumer's rebalance callbacks tell the partition-owned state.
pub trait PartitionResume: Send + Sync {
    /// `topic`/`partition` is now ours: claims its state and returns the offset to resume
    /// from (its checkpoint), None to start from the committed offset. Blocks until the
    /// state store answers or `abort` is cancelled.
    fn assigned(&self, topic: &str, partition: i32, abort: &tokio_util::sync::CancellationToken) -> Option<i64>;

    /// `topic`/`partition` is no longer ours. `drained`: every batch of it is acknowledged,
    /// so a final checkpoint is written (and its offset stored into `offsets`) first.
    fn revoked(&self, topic: &str, partition: i32, drained: bool, offsets: &dyn OffsetStore);
}

/// What the acker runs once a batch's outputs are all acknowledged, before storing offsets:
/// it makes the batch's partition-state checkpoints durable and says which offsets may be
/// stored now (a partition's offset only once a checkpoint covering it is durable).
pub trait AfterAck: Send {
    /// Runs; returns the offsets to store (none if `abort` was cancelled meanwhile).
    fn run(self: Box<Self>, abort: &tokio_util::sync::CancellationToken) -> Vec<Origin>;
}

/// Batches dispatched to the workers and not yet taken by one, as (sequence number, wall-clock
/// ms of the batch's oldest event), in dispatch order. The deadline check bounds a batch's
/// scoring by the oldest queued event's slack, so batches waiting behind it still arrive in
/// time to be decided (kept only with `decide.deadline_ms`).
#[derive(Debug, Default)]
pub struct Queued(Mutex<VecDeque<(u64, i64)>>);

impl Queued {
    /// Batch `seq`, whose oldest event happened at `oldest_ms`, is about to be queued.
    pub fn push(&self, seq: u64, oldest_ms: i64) {
        self.0.lock().expect("queued batches").push_back((seq, oldest_ms));
    }

    /// A worker took batch `seq`.
    pub fn take(&self, seq: u64) {
        let mut q = self.0.lock().expect("queued batches");
        if let Some(k) = q.iter().position(|&(s, _)| s == seq) {
            q.remove(k);
        }
    }

    /// When the oldest event still queued happened (wall-clock ms).
    pub fn oldest_ms(&self) -> Option<i64> {
        self.0.lock().expect("queued batches").iter().map(|&(_, t)| t).min()
    }
}

/// A version stamped on a batch at dispatch (the rules set in force), opaque to the consumer.
pub type Stamp = Arc<dyn Any + Send + Sync>;

/// Where the consumer gets the rules version to stamp on each batch (the rules handle).
pub trait RulesSource: Send + Sync {
    /// The version in force now.
    fn current_stamp(&self) -> Stamp;
}

/// Where the consumer gets the model generation to stamp on each batch (the model slots).
pub trait GenerationSource: Send + Sync {
    /// The newest generation.
    fn current_generation(&self) -> u64;
}

/// How many events a batch may hold now (the scoring budget).
pub trait BatchLimit: Send + Sync {
    /// The most events per batch.
    fn max_events(&self) -> usize;
}

/// Where acknowledged offsets go (the consumer, in production).
pub trait OffsetStore: Send + Sync {
    /// Marks `offset` of `topic`/`partition` processed; the next commit covers it.
    fn store(&self, topic: &str, partition: i32, offset: i64);
}

impl Batch {
    /// The rules version stamped at dispatch, as the type its source made (`None` when
    /// nothing was stamped or it is of another type).
    pub fn rules_as<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.rules.clone().and_then(|r| r.downcast::<T>().ok())
    }

    /// When its oldest event happened (wall-clock ms): the Kafka timestamp, or the poll time
    /// for events without one. `now_ms` is the wall clock now.
    pub fn oldest_ms(&self, now_ms: i64) -> Option<i64> {
        self.events
            .iter()
            .map(|e| e.timestamp_ms.unwrap_or_else(|| now_ms - e.received_at.elapsed().as_millis() as i64))
            .min()
    }
}
