//! Partition-owned window state: an entity keyed by the input record key is seen by one
//! partition only, so its windows live in process with the partition that owns it (as
//! Kafka Streams and Flink keep keyed state). Redis is where the state is checkpointed and
//! handed over between instances, not where each event is applied:
//!
//! * **Turns.** A partition's events are applied batch after batch in consume order (each
//!   batch carries its turn in each of its partitions); workers on different partitions do
//!   not wait for each other.
//! * **Checkpoint.** Every `checkpoint_interval_ms`, or once `checkpoint_max_entities` of
//!   its entities have changed, a partition's changed window fields are sealed together with
//!   the offset after its last applied event; the offset thread writes them in one atomic
//!   script call per partition once every decision up to there is acknowledged, and only
//!   then stores that offset for the commit.
//! * **Resume.** On assignment the partition is claimed (a new owner epoch: an earlier
//!   owner's writes are refused from then on) and consumed from its checkpoint offset, with
//!   entity states read on first touch, as of the checkpoint: a replayed event sees what it
//!   saw the first time, and its decision says `redelivery` when it was published before.
//!
//! Files: `store.rs` (Redis I/O and scripts), `writes.rs` (a checkpoint's entity writes in
//! the Redis protocol), `apply.rs` (a worker's part), `ack.rs` (the acker's part), `slot.rs`
//! (one partition's state and turn).

mod ack;
pub mod apply;
mod slot;
pub mod store;
pub mod writes;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

pub use apply::OwnedWindows;
pub use slot::Slot;
pub use store::{Claim, Store};

use super::breaker::Breaker;
use super::config::{Backend, EnrichConfig};
use super::window::{EntityState, WindowSpec};
use super::EnrichError;
use crate::backoff::Backoff;
use crate::core::redis::RedisConfig;
use crate::envelope::{OffsetStore, PartitionResume, PartitionTurns, Turn};
use crate::telemetry::Metrics;

/// A partition-owned entity type: where its values go in the enrich output.
#[derive(Debug, Clone)]
pub struct OwnedEntity {
    /// Configured index.
    pub index: usize,
    /// Name (in keys).
    pub name: String,
    /// Its windows.
    pub spec: WindowSpec,
    /// Index of its first output value.
    pub first: usize,
}

/// The partitions held, by (topic, partition).
type SlotMap = HashMap<(Arc<str>, i32), Arc<Slot>>;

/// Redis connection settings of the owned state.
#[derive(Debug, Clone)]
struct RedisTarget {
    url: String,
    security: RedisConfig,
    timeout: Duration,
    cluster: bool,
    breaker: Arc<Breaker>,
}

/// Every partition this instance holds, with their state.
pub struct Partitions {
    prefix: String,
    entities: Vec<OwnedEntity>,
    /// Configured entity count (the per-partition maps are indexed by configured index).
    configured: usize,
    slots: Mutex<SlotMap>,
    redis: Option<RedisTarget>,
    /// The consume thread's connection (claims, final checkpoints).
    consume_store: Mutex<Option<Store>>,
    /// The acker's connection (checkpoints).
    acker_store: Mutex<Option<Store>>,
    interval: Duration,
    /// Entities changed since a partition's last checkpoint at which the next is sealed.
    max_dirty: usize,
    max_entities: u64,
    ttl_ms: i64,
    fenced: Mutex<Vec<(Arc<str>, i32)>>,
    /// Writes held back while Redis is unreachable (`on_failure = "degraded"`), and
    /// acknowledged offsets waiting for the next write (see `ack::ACK_ONLY_GAP`).
    pending: Mutex<Vec<ack::Mark>>,
    /// When the acker last wrote to Redis.
    last_write: Mutex<Option<std::time::Instant>>,
    policy: super::FailurePolicy,
    /// One checkpoint call per partition (Redis Cluster) instead of one per batch.
    per_partition: bool,
    metrics: Arc<Metrics>,
}

impl Partitions {
    /// The owned state of `cfg`'s partition-owned entities (`entities`, from the enricher),
    /// None when there are none. With Redis, checks which layout holds each entity's state;
    /// `breaker` is shared with the pipeline's other connections to that Redis.
    pub fn new(
        cfg: &EnrichConfig,
        security: &RedisConfig,
        entities: Vec<OwnedEntity>,
        metrics: Arc<Metrics>,
        breaker: &Arc<Breaker>,
    ) -> Result<Option<Arc<Self>>, EnrichError> {
        if entities.is_empty() || cfg.backend == Backend::Off {
            return Ok(None);
        }
        let redis = (cfg.backend == Backend::Redis).then(|| RedisTarget {
            url: cfg.redis_url.clone(),
            security: security.clone(),
            timeout: Duration::from_millis(cfg.timeout_ms),
            cluster: cfg.redis_cluster,
            breaker: breaker.clone(),
        });
        if let Some(r) = &redis {
            let mut store = Store::new(&r.url, &r.security, r.timeout, r.cluster, r.breaker.clone())?;
            let layouts: Vec<(&str, bool)> = cfg
                .entities
                .iter()
                .filter(|e| e.has_state())
                .map(|e| (e.name.as_str(), e.ownership == super::Ownership::Partition))
                .collect();
            store.check_layout(&cfg.key_prefix, &layouts)?;
        }
        let ttl_ms = entities.iter().map(|e| e.spec.retention_ms()).max().unwrap_or(0).max(1000);
        Ok(Some(Arc::new(Self {
            prefix: cfg.key_prefix.clone(),
            entities,
            configured: cfg.entities.len(),
            slots: Mutex::new(HashMap::new()),
            redis,
            consume_store: Mutex::new(None),
            acker_store: Mutex::new(None),
            interval: Duration::from_millis(cfg.checkpoint_interval_ms),
            max_dirty: usize::try_from(cfg.checkpoint_max_entities).unwrap_or(usize::MAX).max(1),
            max_entities: cfg.max_entities,
            ttl_ms,
            fenced: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
            last_write: Mutex::new(None),
            policy: cfg.on_failure,
            per_partition: cfg.redis_cluster,
            metrics,
        })))
    }

    /// The partition-owned entity types.
    pub fn entities(&self) -> &[OwnedEntity] {
        &self.entities
    }

    /// Whether the state is checkpointed to Redis.
    pub fn durable(&self) -> bool {
        self.redis.is_some()
    }

    /// A connection of this state's Redis (one per thread that uses it).
    fn store(&self) -> Result<Option<Store>, EnrichError> {
        self.redis
            .as_ref()
            .map(|r| Store::new(&r.url, &r.security, r.timeout, r.cluster, r.breaker.clone()))
            .transpose()
    }

    /// The partition's slot, made (unclaimed) if it has none.
    fn slot(&self, topic: &Arc<str>, partition: i32) -> Arc<Slot> {
        let mut slots = self.slots.lock();
        if let Some(s) = slots.get(&(topic.clone(), partition)) {
            return s.clone();
        }
        let s = Arc::new(Slot::new(topic.clone(), partition, &self.prefix, self.configured, None));
        slots.insert((topic.clone(), partition), s.clone());
        s
    }

    /// Entities held per partition before the least recently seen are let go.
    fn budget(&self) -> usize {
        let n = self.slots.lock().len().max(1) as u64;
        (self.max_entities / n).max(1) as usize
    }

    /// Writes a final checkpoint of every partition (graceful shutdown, once every batch is
    /// acknowledged) and stores its offset into `offsets`.
    pub fn release_all(&self, offsets: &dyn OffsetStore) {
        let slots: Vec<Arc<Slot>> = self.slots.lock().drain().map(|(_, s)| s).collect();
        for s in slots {
            self.release(&s, true, offsets);
        }
    }

    fn release(&self, slot: &Arc<Slot>, drained: bool, offsets: &dyn OffsetStore) {
        slot.gone.store(true, Ordering::SeqCst);
        let held = &mut *slot.state.lock();
        let entities = held.entity_count();
        self.metrics.state.entities.sub(entities as i64);
        if !drained || self.redis.is_none() {
            return;
        }
        let Some(sealed) = held.seal(slot, &self.entities) else { return };
        // Writes of this partition still held back by an outage go first (deltas, in order).
        let mut earlier = Vec::new();
        self.pending.lock().retain(|k| {
            let mine = Arc::ptr_eq(&k.slot, slot);
            if mine {
                earlier.push(k.write.clone());
            }
            !mine
        });
        let writes: Vec<&store::Write> = earlier.iter().chain(std::iter::once(&sealed.write)).collect();
        let mut guard = self.consume_store.lock();
        let store = match guard.as_mut() {
            Some(s) => s,
            None => match self.store() {
                Ok(Some(s)) => guard.insert(s),
                _ => return,
            },
        };
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
        for attempt in 0..5 {
            match store.write(&writes, self.ttl_ms, self.per_partition) {
                Ok(r) if r.iter().all(|w| *w == store::Written::Ok) => {
                    self.metrics.state.checkpoints.with_label_values(&["written"]).inc();
                    self.metrics.state.checkpoint_fields.inc_by(sealed.write.fields());
                    offsets.store(&slot.topic, slot.partition, sealed.last);
                    tracing::info!(topic = %slot.topic, partition = slot.partition, offset = sealed.last + 1,
                        "partition released with a final checkpoint");
                    return;
                }
                Ok(r) if r.contains(&store::Written::Lost) => {
                    self.metrics.state.checkpoints.with_label_values(&["failed"]).inc();
                    tracing::warn!(topic = %slot.topic, partition = slot.partition,
                        "final checkpoint refused: the partition's claim is gone from Redis (it lost data); \
                         the next owner starts from what Redis still holds");
                    return;
                }
                Ok(r) => {
                    self.metrics.state.checkpoints.with_label_values(&["fenced"]).inc();
                    tracing::warn!(topic = %slot.topic, partition = slot.partition, reply = ?r,
                        "final checkpoint refused: another instance has claimed the partition");
                    return;
                }
                Err(e) => {
                    if attempt == 4 {
                        self.metrics.state.checkpoints.with_label_values(&["failed"]).inc();
                        tracing::warn!(topic = %slot.topic, partition = slot.partition, error = %e,
                            "final checkpoint not written; the next owner replays from the last one");
                        return;
                    }
                    std::thread::sleep(backoff.next_delay());
                }
            }
        }
    }
}

impl PartitionTurns for Partitions {
    fn next_turn(&self, topic: &Arc<str>, partition: i32) -> Option<Turn> {
        let slot = self.slot(topic, partition);
        let seq = slot.dispatched.fetch_add(1, Ordering::SeqCst);
        Some(Turn { topic: topic.clone(), partition, seq, slot: slot as crate::envelope::Stamp })
    }

    fn idle_flush(&self) -> Option<Duration> {
        self.redis.is_some().then_some(self.interval.max(Duration::from_millis(10)))
    }

    fn take_fenced(&self) -> Vec<(Arc<str>, i32)> {
        let mut f = self.fenced.lock();
        if f.is_empty() {
            Vec::new()
        } else {
            std::mem::take(&mut *f)
        }
    }
}

impl PartitionResume for Partitions {
    fn assigned(&self, topic: &str, partition: i32, abort: &CancellationToken) -> Option<i64> {
        let topic: Arc<str> = Arc::from(topic);
        // A few quick tries: the rebalance callback must not hold the consumer for long. If
        // Redis does not answer, the partition starts from its committed offset (stored only
        // up to durable checkpoints) and the enrich stage claims it on its first batch, as
        // `enrich.on_failure` says (pause: wait; degraded: decide without its windows). While
        // Redis is known to be down (the breaker is open) no more tries: a rebalance of many
        // partitions must not wait a timeout for each.
        let claim = match &self.redis {
            None => None,
            Some(target) => {
                let mut guard = self.consume_store.lock();
                let key = store::partition_key(&self.prefix, &topic, partition);
                let mut claim = None;
                for attempt in 0..3 {
                    let result = match guard.as_mut() {
                        Some(s) => s.claim(&key),
                        None => match self.store() {
                            Ok(Some(s)) => guard.insert(s).claim(&key),
                            Ok(None) => break,
                            Err(e) => Err(e),
                        },
                    };
                    match result {
                        Ok(c) => {
                            claim = Some(c);
                            break;
                        }
                        Err(e) if attempt == 2 || target.breaker.is_open() => {
                            tracing::warn!(%topic, partition, error = %e,
                                "partition state not claimed at assignment; its first batch claims it");
                            break;
                        }
                        Err(_) => {
                            if !crate::backoff::sleep_unless(Duration::from_millis(100), abort) {
                                return None;
                            }
                        }
                    }
                }
                claim
            }
        };
        let slot = Arc::new(Slot::new(topic.clone(), partition, &self.prefix, self.configured, claim));
        if let Some(old) = self.slots.lock().insert((topic.clone(), partition), slot) {
            old.gone.store(true, Ordering::SeqCst);
        }
        let c = claim?;
        tracing::info!(%topic, partition, epoch = c.epoch, resume = ?c.offset, acked = ?c.acked, "partition state claimed");
        c.offset
    }

    fn revoked(&self, topic: &str, partition: i32, drained: bool, offsets: &dyn OffsetStore) {
        let slot = self.slots.lock().remove(&(Arc::from(topic), partition));
        if let Some(s) = slot {
            self.release(&s, drained, offsets);
        }
    }
}

/// Reads an entity's checkpointed state (of windows `spec`) from Redis (tests and tools):
/// the partitions of `topic` are tried in turn; None when no partition holds it.
pub fn stored_state(
    conn: &mut redis::Connection,
    prefix: &str,
    topic: &str,
    partitions: i32,
    (entity, spec): (&str, &WindowSpec),
    id: &str,
) -> Option<EntityState> {
    for p in 0..partitions {
        let key = store::entity_key(&store::partition_key(prefix, topic, p), entity, id);
        let fields: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL").arg(&key).query(conn).ok()?;
        if !fields.is_empty() {
            return EntityState::from_fields(spec, fields.iter().map(|(f, v)| (f.as_slice(), v.as_slice()))).ok();
        }
    }
    None
}
