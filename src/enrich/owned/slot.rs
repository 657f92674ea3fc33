//! One partition's state: its entities, its turn (batches apply in consume order), where
//! its checkpoint stands, and sealing the changes since the last checkpoint.

use std::hash::RandomState;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use compact_str::CompactString;
use hashlink::LinkedHashMap;
use parking_lot::{Condvar, Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;

use super::store::{partition_key, Claim, Write};
use super::writes::EntityWrites;
use super::OwnedEntity;
use crate::enrich::window::{Delta, EntityState};
use crate::telemetry::Metrics;

/// One partition held by this instance.
pub struct Slot {
    /// Source topic.
    pub topic: Arc<str>,
    /// Source partition.
    pub partition: i32,
    /// Its Redis meta key (and entity key prefix).
    pub(super) key: String,
    /// Turns handed out at dispatch.
    pub(super) dispatched: AtomicU64,
    pub(super) state: Mutex<Held>,
    turn: Condvar,
    /// Revoked, or fenced by another instance's claim: nothing more is checkpointed.
    pub(super) gone: AtomicBool,
    pub(super) assigned_at: Instant,
    /// Its first batch after assignment has been acknowledged.
    pub(super) first_done: AtomicBool,
    /// The newest seal whose checkpoint is durable in Redis.
    pub(super) durable_seal: AtomicU64,
}

/// A partition's entities of one configured type: id → state, least recently seen first
/// (an event moves its entity to the back), so letting go of the least recently seen costs
/// what is let go, not a walk of every entity held.
pub(super) type Entities = LinkedHashMap<CompactString, Entry, RandomState>;

/// Entities that cannot go yet (changed since the last durable checkpoint) that one trim
/// moves to the back before it gives up: a trim costs at most this beyond what it lets go.
const TRIM_SKIP: usize = 64;

/// An entity's state in memory.
pub(super) struct Entry {
    pub(super) state: EntityState,
    /// The batch tick it was last seen at (least recently seen are let go first).
    pub(super) seen: u64,
    /// The seal its last changes went into (0: none since it was read).
    pub(super) sealed_in: u64,
}

/// What the turn protects.
pub(super) struct Held {
    next: u64,
    /// The claim (Redis): epoch, checkpoint offset, acknowledged offset.
    pub(super) claim: Option<Claim>,
    /// Per configured entity index: its entities, least recently seen first.
    pub(super) entities: Vec<Entities>,
    /// Highest source offset applied.
    pub(super) last_offset: Option<i64>,
    pub(super) last_seal: Instant,
    /// The entities changed since the last seal (entity index, id), each once.
    pub(super) dirty: Vec<(usize, CompactString)>,
    seals: u64,
    /// One entity's changes while sealing (its buffers reused from entity to entity).
    delta: Delta,
    /// The last checkpoint's entities and the bytes of their keys and arguments.
    sealed_size: (usize, usize, usize),
    /// Newest event time applied (ms).
    pub(super) clock_ms: Option<i64>,
    /// Batches applied.
    pub(super) tick: u64,
    /// Claimed only at a first batch (Redis was down at assignment): events below this
    /// offset are already in the checkpointed state, read but not applied again.
    pub(super) applied_below: Option<i64>,
}

/// A sealed checkpoint: the write, its seal number, and the last offset it covers.
pub(super) struct Sealed {
    pub(super) write: Write,
    pub(super) seal: u64,
    pub(super) last: i64,
}

impl Slot {
    pub(super) fn new(topic: Arc<str>, partition: i32, prefix: &str, entities: usize, claim: Option<Claim>) -> Self {
        Self {
            key: partition_key(prefix, &topic, partition),
            topic,
            partition,
            dispatched: AtomicU64::new(0),
            state: Mutex::new(Held {
                next: 0,
                claim,
                entities: (0..entities).map(|_| Entities::with_hasher(RandomState::new())).collect(),
                last_offset: None,
                last_seal: Instant::now(),
                dirty: Vec::new(),
                seals: 0,
                delta: Delta::default(),
                sealed_size: (0, 0, 0),
                clock_ms: None,
                tick: 0,
                applied_below: None,
            }),
            turn: Condvar::new(),
            gone: AtomicBool::new(false),
            assigned_at: Instant::now(),
            first_done: AtomicBool::new(false),
            durable_seal: AtomicU64::new(0),
        }
    }

    /// Waits for turn `seq` (None if `abort` is cancelled meanwhile), runs `f`, and passes
    /// the turn on, also when `f` unwinds.
    pub(super) fn run<R>(&self, seq: u64, abort: &CancellationToken, f: impl FnOnce(&mut Held) -> R) -> Option<R> {
        let mut g = self.state.lock();
        while g.next != seq {
            if abort.is_cancelled() || g.next > seq {
                return None;
            }
            self.turn.wait_for(&mut g, Duration::from_millis(50));
        }
        struct Next<'a, 'b>(&'a mut MutexGuard<'b, Held>, &'a Condvar);
        impl Drop for Next<'_, '_> {
            fn drop(&mut self) {
                self.0.next += 1;
                self.1.notify_all();
            }
        }
        let next = Next(&mut g, &self.turn);
        Some(f(next.0))
    }

    /// Passes turn `seq` on without applying anything (its batch was lost to a panic
    /// before its enrich stage), once the turns before it are done.
    pub(super) fn pass(&self, seq: u64, abort: &CancellationToken) {
        let mut g = self.state.lock();
        while g.next < seq {
            if abort.is_cancelled() {
                return;
            }
            self.turn.wait_for(&mut g, Duration::from_millis(50));
        }
        if g.next == seq {
            g.next += 1;
            self.turn.notify_all();
        }
    }
}

impl Held {
    pub(super) fn entity_count(&self) -> usize {
        self.entities.iter().map(Entities::len).sum()
    }

    /// Seals the changes since the last seal into a checkpoint at the offset after the last
    /// applied event. None without a claim or an applied event.
    pub(super) fn seal(&mut self, slot: &Slot, entities: &[OwnedEntity]) -> Option<Sealed> {
        let claim = self.claim?;
        let last = self.last_offset?;
        self.seals += 1;
        self.last_seal = Instant::now();
        // Room for as many bytes per entity as the last checkpoint took (no copying as the
        // buffers grow: they are the largest this partition allocates).
        let per = |bytes: usize| bytes / self.sealed_size.0.max(1) * self.dirty.len() * 9 / 8;
        let mut writes = EntityWrites::with_capacity(per(self.sealed_size.1), per(self.sealed_size.2));
        for (index, id) in self.dirty.drain(..) {
            let Some(e) = entities.iter().find(|e| e.index == index) else { continue };
            // A dirty entity is never let go, so it is still held.
            let Some(entry) = self.entities[index].get_mut(&id) else { continue };
            if !entry.state.is_dirty() {
                continue;
            }
            self.delta.clear();
            entry.state.take_delta(&e.spec, &mut self.delta);
            entry.sealed_in = self.seals;
            let set = self.delta.set.iter().map(|(f, v)| (f.as_slice(), v.as_slice()));
            writes.push(&[&slot.key, &e.name, &id], set, self.delta.del.iter().map(Vec::as_slice));
        }
        self.sealed_size = (writes.len(), writes.keys().len(), writes.args().len());
        Some(Sealed {
            write: Write {
                key: slot.key.clone(),
                epoch: claim.epoch,
                acked: last + 1,
                checkpoint: Some((last + 1, writes)),
            },
            seal: self.seals,
            last,
        })
    }

    /// The partition's events up to `offset` are applied (-1: a batch without any of its
    /// events, such as an idle flush).
    pub(super) fn advance(&mut self, offset: i64) {
        if offset >= 0 {
            self.last_offset = Some(self.last_offset.map_or(offset, |o| o.max(offset)));
        }
    }

    /// Records a trim without a checkpoint (the memory backend).
    pub(super) fn mark_sealed(&mut self) {
        self.last_seal = Instant::now();
        self.dirty.clear();
    }

    /// Whether a checkpoint is due: `interval` since the last, or `max_dirty` entities changed.
    pub(super) fn due(&self, interval: Duration, max_dirty: usize) -> bool {
        self.dirty.len() >= max_dirty || self.last_seal.elapsed() >= interval
    }

    /// Lets go of entities from the least recently seen end: those whose windows have all
    /// expired, then the least recently seen past `budget`; with Redis only those whose state
    /// is durable there (read again on their next event). Runs after every batch: it costs
    /// what it lets go plus at most [`TRIM_SKIP`] entities that cannot go yet (moved to the
    /// back, as if seen: they are looked at again once the rest has had its turn).
    pub(super) fn trim(&mut self, entities: &[OwnedEntity], budget: usize, durable: Option<u64>, m: &Metrics) {
        let before = self.entity_count();
        let evictable = |e: &Entry| !e.state.is_dirty() && durable.is_none_or(|d| e.sealed_in <= d);
        let mut skips = 0;
        if let Some(clock) = self.clock_ms {
            let mut expired = 0u64;
            for e in entities {
                let horizon = clock.saturating_sub(e.spec.retention_ms());
                let map = &mut self.entities[e.index];
                while let Some((_, front)) = map.front() {
                    if !evictable(front) {
                        if skips == TRIM_SKIP {
                            break;
                        }
                        skips += 1;
                        let (id, entry) = map.pop_front().expect("a front entry");
                        map.insert(id, entry);
                    } else if front.state.newest_ms().is_some_and(|n| n < horizon) {
                        map.pop_front();
                        expired += 1;
                    } else {
                        // The least recently seen has not expired, so (as far as event
                        // times follow arrival, within the lateness) nothing behind it has.
                        break;
                    }
                }
            }
            if expired > 0 {
                m.state.evictions.with_label_values(&["expired"]).inc_by(expired);
            }
        }
        let mut bound = 0u64;
        while self.entity_count() > budget && skips < TRIM_SKIP {
            // The least recently seen front over the configured entity types.
            let Some(index) = entities
                .iter()
                .filter_map(|e| self.entities[e.index].front().map(|(_, f)| (f.seen, e.index)))
                .min()
                .map(|(_, index)| index)
            else {
                break;
            };
            let map = &mut self.entities[index];
            let (id, entry) = map.pop_front().expect("a front entry");
            if evictable(&entry) {
                bound += 1;
            } else {
                skips += 1;
                map.insert(id, entry);
            }
        }
        if bound > 0 {
            m.state.evictions.with_label_values(&["bound"]).inc_by(bound);
        }
        let after = self.entity_count();
        m.state.entities.add(after as i64 - before as i64);
    }
}

/// Turns of a slot: whether `gone` (revoked or fenced).
impl Slot {
    /// Revoked or fenced: nothing more is checkpointed for it.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }
}
