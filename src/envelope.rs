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
    pub headers: Headers,
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

/// Payload buffers (and header lists) of decided batches, handed back by the workers so that
/// the consumer copies the next messages into them instead of allocating per message (issue
/// 23's allocations per event). Clones share the pool; one lock per batch on each side.
#[derive(Debug, Clone, Default)]
pub struct Spent {
    pool: Arc<Mutex<SpentPool>>,
    /// The poll times of acknowledged batches' events (read by the acker for latency).
    pub received: crate::core::pool::VecPool<Instant>,
    /// The Kafka timestamps of acknowledged batches' decided events.
    pub timestamps: crate::core::pool::VecPool<i64>,
    /// Decided batches' partition turns.
    pub turns: crate::core::pool::VecPool<Turn>,
    /// Decided batches' event lists, emptied.
    pub lists: crate::core::pool::VecPool<Envelope<RawMessage>>,
    /// Acknowledged batches' delivery counters (each clean: nothing counted, nothing holds it).
    pub deliveries: crate::core::pool::Pool<crate::core::delivery::Deliveries>,
    /// Stored batches' offset lists.
    pub offsets: crate::core::pool::VecPool<Origin>,
}

/// A message's headers as copied: (name, value) pairs.
pub type Headers = Vec<(String, Vec<u8>)>;

/// What the pool keeps, and the capacity of each kind in bytes.
#[derive(Debug, Default)]
struct SpentPool {
    buffers: (Vec<Vec<u8>>, usize),
    headers: (Vec<Headers>, usize),
}

/// Bytes a header list holds (its entries' capacities).
fn header_bytes(h: &Headers) -> usize {
    h.capacity() * std::mem::size_of::<(String, Vec<u8>)>()
        + h.iter().map(|(k, v)| k.capacity() + v.capacity()).sum::<usize>()
}

impl Spent {
    /// A buffer (or header list) larger than this is freed, not kept: a rare large message
    /// does not keep its memory for the small ones.
    pub const MAX_BUFFER: usize = 64 * 1024;
    /// The most bytes of capacity the pool keeps of each kind (payload buffers, header
    /// lists); beyond it, spent ones are freed. The consume thread holds at most as much
    /// again: what it took and has not reused yet.
    pub const MAX_BYTES: usize = 16 * 1024 * 1024;

    /// A worker is done with `events`: their payload buffers and header lists go to the pool
    /// (the events keep neither).
    pub fn give_back(&self, events: &mut [Envelope<RawMessage>]) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        for e in events {
            if let Some(buffer) = e.payload.payload.take() {
                keep(&mut pool.buffers, buffer.capacity(), buffer);
            }
            if e.payload.headers.capacity() > 0 {
                let headers = std::mem::take(&mut e.payload.headers);
                keep(&mut pool.headers, header_bytes(&headers), headers);
            }
        }
    }

    /// A worker is done with a batch: its payload buffers and header lists go to the pool as
    /// in [`Spent::give_back`], and so does the emptied list itself (`events` is left empty,
    /// without capacity), for the consumer's next batch (no allocation per batch).
    pub fn give_back_batch(&self, events: &mut Vec<Envelope<RawMessage>>) {
        self.give_back(events);
        self.lists.give(std::mem::take(events));
    }

    /// Swaps `spare` (used up) with the pool's buffers, unless a worker holds the pool now
    /// (the consumer never waits for it: it allocates instead).
    fn take_buffers(&self, spare: &mut Vec<Vec<u8>>) {
        if let Some(mut pool) = self.try_lock() {
            take(&mut pool.buffers, spare);
        }
    }

    /// Swaps `spare` (used up) with the pool's header lists, unless a worker holds the pool.
    fn take_headers(&self, spare: &mut Vec<Headers>) {
        if let Some(mut pool) = self.try_lock() {
            take(&mut pool.headers, spare);
        }
    }

    fn try_lock(&self) -> Option<std::sync::MutexGuard<'_, SpentPool>> {
        match self.pool.try_lock() {
            Ok(pool) => Some(pool),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

/// Keeps `item` of `size` bytes in `kind` unless it is too large or the kind is full.
fn keep<T>(kind: &mut (Vec<T>, usize), size: usize, item: T) {
    if size <= Spent::MAX_BUFFER && kind.1 + size <= Spent::MAX_BYTES {
        kind.1 += size;
        kind.0.push(item);
    }
}

/// Swaps `spare` (used up) with what `kind` keeps.
fn take<T>(kind: &mut (Vec<T>, usize), spare: &mut Vec<T>) {
    debug_assert!(spare.is_empty(), "the spare ones are used up first");
    std::mem::swap(spare, &mut kind.0);
    kind.1 = 0;
}

/// The consumer's side of [`Spent`]: copies payloads and headers into spent buffers.
#[derive(Debug, Default)]
pub struct Payloads {
    spent: Spent,
    /// Buffers taken from the pool, not yet reused.
    buffers: Vec<Vec<u8>>,
    /// Header lists taken from the pool, not yet reused.
    headers: Vec<Headers>,
}

impl Payloads {
    /// Copies into buffers that the workers give back to `spent`.
    pub fn new(spent: Spent) -> Self {
        Self { spent, ..Self::default() }
    }

    /// `bytes` in a buffer of its own: a spent one when there is one, else a new one.
    pub fn copy(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.buffers.is_empty() {
            self.spent.take_buffers(&mut self.buffers);
        }
        match self.buffers.pop() {
            Some(mut buffer) => {
                buffer.clear();
                buffer.extend_from_slice(bytes);
                buffer
            }
            None => bytes.to_vec(),
        }
    }

    /// Where the workers hand spent lists back.
    pub fn spent(&self) -> &Spent {
        &self.spent
    }

    /// A header list to copy a message's headers into: a spent one, its entries still
    /// holding an earlier message's headers (overwrite them in place with [`set_header`],
    /// then truncate), or a new one.
    pub fn headers(&mut self) -> Headers {
        if self.headers.is_empty() {
            self.spent.take_headers(&mut self.headers);
        }
        self.headers.pop().unwrap_or_default()
    }
}

/// Writes header `n` of `into` (reusing the entry's name and value buffers when there is one).
pub fn set_header(into: &mut Headers, n: usize, name: &str, value: &[u8]) {
    if n == into.len() {
        into.push((String::new(), Vec::new()));
    }
    let (k, v) = &mut into[n];
    k.clear();
    k.push_str(name);
    v.clear();
    v.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload: Option<Vec<u8>>) -> Envelope<RawMessage> {
        let origin = Origin { topic: Arc::from("in"), partition: 0, offset: 0 };
        let payload = RawMessage { payload, ..RawMessage::default() };
        Envelope { origin, received_at: Instant::now(), timestamp_ms: None, payload }
    }

    #[test]
    fn payloads_are_copied_into_the_buffers_the_workers_gave_back() {
        let spent = Spent::default();
        let mut payloads = Payloads::new(spent.clone());
        let first = b"first event, long enough".to_vec();
        let (address, capacity) = (first.as_ptr(), first.capacity());
        let big = vec![0u8; Spent::MAX_BUFFER + 1];
        let mut events = vec![event(Some(first)), event(None), event(Some(big))];
        spent.give_back(&mut events);
        assert!(events.iter().all(|e| e.payload.payload.is_none()), "the payloads went to the pool");
        // The small buffer is reused, with the new bytes; the large one was freed.
        let again = payloads.copy(b"second");
        assert_eq!(again, b"second");
        assert_eq!((again.as_ptr(), again.capacity()), (address, capacity));
        assert_eq!(payloads.copy(b"third"), b"third", "a new buffer when none is left");
    }

    #[test]
    fn header_lists_are_reused_entry_by_entry() {
        let spent = Spent::default();
        let mut payloads = Payloads::new(spent.clone());
        let mut first = Headers::new();
        set_header(&mut first, 0, "traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        set_header(&mut first, 1, "source", b"pos-terminal-17");
        let name_at = first[0].0.as_ptr();
        let mut events = vec![event(None)];
        events[0].payload.headers = first;
        spent.give_back(&mut events);
        assert!(events[0].payload.headers.is_empty());
        // The next message has one header: the first entry's buffers are reused.
        let mut next = payloads.headers();
        set_header(&mut next, 0, "tp", b"x");
        next.truncate(1);
        assert_eq!(next, vec![("tp".to_string(), b"x".to_vec())]);
        assert_eq!(next[0].0.as_ptr(), name_at);
    }

    #[test]
    fn the_pool_keeps_at_most_its_byte_bound() {
        let spent = Spent::default();
        let n = Spent::MAX_BYTES / Spent::MAX_BUFFER + 10;
        let mut events: Vec<_> = (0..n).map(|_| event(Some(Vec::with_capacity(Spent::MAX_BUFFER)))).collect();
        spent.give_back(&mut events);
        let mut spare = Vec::new();
        spent.take_buffers(&mut spare);
        assert_eq!(spare.len(), Spent::MAX_BYTES / Spent::MAX_BUFFER);
        let mut again = Vec::new();
        spent.take_buffers(&mut again);
        assert!(again.is_empty(), "taken once");
    }
}
