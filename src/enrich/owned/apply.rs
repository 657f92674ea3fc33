//! A worker's part of the partition-owned state: in each of a batch's partitions' turn,
//! claim the partition if nobody did, read the entities it has not seen yet (one pipelined
//! round trip), apply the events in offset order, and seal a checkpoint when one is due.

use std::sync::Arc;

use compact_str::CompactString;
use hashlink::linked_hash_map::RawEntryMut;
use tokio_util::sync::CancellationToken;

use super::ack::{Checkpoints, Mark};
use super::slot::{Entry, Held, Slot};
use super::store::{entity_key, Store};
use super::Partitions;
use crate::enrich::reply::{write_seen, write_session};
use crate::enrich::window::{EntityState, WindowAggs};
use crate::enrich::{EnrichError, Request};
use crate::envelope::{AfterAck, Turn};

/// What to do about a failed claim or read (the caller's `enrich.on_failure` and backoff).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Try again (the caller has waited).
    Retry,
    /// Decide this partition's events without their windows, which are not updated.
    Degrade,
    /// Give up: the error goes back to the caller.
    Fail,
}

/// One partition's share of a batch.
pub struct TurnEvents<'a> {
    /// The enrich requests of the batch.
    pub reqs: &'a [Request<'a>],
    /// Indices into `reqs` of this partition's events, in offset order.
    pub which: &'a [usize],
    /// The partition's highest offset in the batch (dead-lettered events included).
    pub max_offset: i64,
    /// An idle flush (a batch without events): checkpoint now, due or not.
    pub flush: bool,
}

/// What applying a partition's events did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Applied {
    /// Window updates applied.
    pub applied: u64,
    /// Updates dropped as late.
    pub late: u64,
    /// Entity states read from Redis.
    pub loaded: u64,
    /// Entities new to Redis.
    pub new: u64,
    /// Windows skipped: the store failed and `Degrade` was chosen.
    pub degraded: bool,
    /// Events whose decision was published before (re-decisions).
    pub redelivered: u64,
}

/// Where a partition's events' window values go.
pub struct Outputs<'a> {
    /// Values per request.
    pub width: usize,
    /// `width` values per request of the batch.
    pub values: &'a mut [Option<f64>],
    /// Per request: a re-decision.
    pub redelivered: &'a mut [bool],
}

/// A worker's handle on the partition-owned state.
pub struct OwnedWindows {
    parts: Arc<Partitions>,
    store: Option<Store>,
    aggs: Vec<WindowAggs>,
    missing: Vec<(usize, CompactString)>,
    keys: Vec<String>,
    marks: Vec<Mark>,
}

impl OwnedWindows {
    /// A worker's handle (its own Redis connection, made on first use).
    pub fn new(parts: Arc<Partitions>) -> Result<Self, EnrichError> {
        let store = parts.store()?;
        Ok(Self { parts, store, aggs: Vec::new(), missing: Vec::new(), keys: Vec::new(), marks: Vec::new() })
    }

    /// The state these windows belong to.
    pub fn partitions(&self) -> &Arc<Partitions> {
        &self.parts
    }

    /// Applies one partition's events of a batch in the partition's turn `turn`, writing
    /// each event's window values and re-decision flag into `out`. None if aborted while
    /// waiting (or the turn was gone).
    pub fn apply(
        &mut self,
        turn: &Turn,
        events: &TurnEvents<'_>,
        out: &mut Outputs<'_>,
        abort: &CancellationToken,
        on_error: &mut dyn FnMut(&EnrichError) -> OnError,
    ) -> Option<Result<Applied, EnrichError>> {
        let slot: Arc<Slot> = turn.slot.clone().downcast::<Slot>().ok()?;
        let this = &mut *self;
        slot.run(turn.seq, abort, |held| {
            let mut applied = Applied::default();
            loop {
                match this.prepare(&slot, held, events, &mut applied) {
                    Ok(()) => break,
                    Err(e) => match on_error(&e) {
                        OnError::Retry => continue,
                        OnError::Degrade => {
                            applied.degraded = true;
                            held.last_offset =
                                Some(held.last_offset.map_or(events.max_offset, |o| o.max(events.max_offset)));
                            this.after(&slot, held, events.flush);
                            return Ok(applied);
                        }
                        OnError::Fail => return Err(e),
                    },
                }
            }
            this.apply_events(held, events, out, &mut applied);
            this.after(&slot, held, events.flush);
            Ok(applied)
        })
    }

    /// Lets turn `turn` go by without applying anything (its batch was lost to a panic).
    pub fn pass(&self, turn: &Turn, abort: &CancellationToken) {
        if let Ok(slot) = turn.slot.clone().downcast::<Slot>() {
            slot.pass(turn.seq, abort);
        }
    }

    /// What the acker runs for this batch (its checkpoints and acknowledged offsets), when
    /// the state is checkpointed to Redis.
    pub fn take_after_ack(&mut self) -> Option<Box<dyn AfterAck>> {
        if self.marks.is_empty() {
            return None;
        }
        Some(Box::new(Checkpoints::new(self.parts.clone(), std::mem::take(&mut self.marks))))
    }

    /// Claims the partition if nobody has, and reads the entities it has not seen yet.
    fn prepare(
        &mut self,
        slot: &Slot,
        held: &mut Held,
        events: &TurnEvents<'_>,
        applied: &mut Applied,
    ) -> Result<(), EnrichError> {
        let Some(store) = self.store.as_mut() else { return Ok(()) };
        if held.claim.is_none() {
            let claim = store.claim(&slot.key)?;
            // Consumption started at the committed offset, which may lag the checkpoint.
            held.applied_below = claim.offset;
            held.claim = Some(claim);
            tracing::info!(topic = %slot.topic, partition = slot.partition, epoch = claim.epoch,
                "partition state claimed at its first batch");
        }
        self.missing.clear();
        self.keys.clear();
        for e in self.parts.entities() {
            let map = &held.entities[e.index];
            for &r in events.which {
                if let Some(id) = events.reqs[r].entities[e.index].id.as_deref() {
                    if !map.contains_key(id) && !self.missing.iter().any(|(i, m)| *i == e.index && m == id) {
                        self.missing.push((e.index, CompactString::from(id)));
                        self.keys.push(entity_key(&slot.key, &e.name, id));
                    }
                }
            }
        }
        if self.missing.is_empty() {
            return Ok(());
        }
        let found = store.load(&self.keys)?;
        for ((index, id), fields) in self.missing.drain(..).zip(found) {
            let state = if fields.is_empty() {
                applied.new += 1;
                EntityState::default()
            } else {
                applied.loaded += 1;
                let ent = self.parts.entities.iter().find(|x| x.index == index).expect("a configured entity");
                EntityState::from_fields(&ent.spec, fields.iter().map(|(f, v)| (f.as_slice(), v.as_slice())))
                    .map_err(|e| EnrichError::Protocol(format!("{}: {e}", entity_key(&slot.key, &ent.name, &id))))?
            };
            if state.is_dirty() {
                // Fields of another bucket width to delete: written with the next checkpoint.
                held.dirty.push((index, id.clone()));
            }
            held.entities[index].insert(id, Entry { state, seen: held.tick, sealed_in: 0 });
            self.parts.metrics.state.entities.inc();
        }
        Ok(())
    }

    fn apply_events(&mut self, held: &mut Held, events: &TurnEvents<'_>, out: &mut Outputs<'_>, applied: &mut Applied) {
        held.tick += 1;
        let acked = held.claim.and_then(|c| c.acked);
        let memory = self.store.is_none();
        let mut added = 0i64;
        for &r in events.which {
            let req = &events.reqs[r];
            if acked.is_some_and(|a| req.offset < a) {
                out.redelivered[r] = true;
                applied.redelivered += 1;
            }
            for e in self.parts.entities() {
                let input = &req.entities[e.index];
                let Some(id) = input.id.as_deref() else { continue };
                let entry = match held.entities[e.index].raw_entry_mut().from_key(id) {
                    RawEntryMut::Occupied(mut o) => {
                        o.to_back();
                        o.into_mut()
                    }
                    // Memory backend (nothing to read), or an entity first seen in this batch.
                    RawEntryMut::Vacant(v) => {
                        added += 1;
                        let entry = Entry { state: EntityState::default(), seen: 0, sealed_in: 0 };
                        v.insert(CompactString::from(id), entry).1
                    }
                };
                entry.seen = held.tick;
                if memory {
                    entry.state.untracked();
                }
                let was_dirty = entry.state.is_dirty();
                self.aggs.clear();
                self.aggs.resize(e.spec.sizes_ms.len(), WindowAggs::default());
                let distinct = input.distinct.as_deref().filter(|d| !d.is_empty());
                if held.applied_below.is_some_and(|b| req.offset < b) {
                    // Already in the checkpointed state: read, not applied twice.
                    entry.state.aggregates_running(&e.spec, req.time_ms, &mut self.aggs);
                    let since = entry.state.newest_ms().map(|n| req.time_ms.saturating_sub(n).max(0));
                    write_seen(&mut out.values[r * out.width + e.first..], &e.spec, &self.aggs, since);
                    if let Some(s) = &e.spec.session {
                        let at = r * out.width + e.first + e.spec.window_values();
                        write_session(&mut out.values[at..], &entry.state.session_seen(s, req.time_ms));
                    }
                    continue;
                }
                let seen = entry.state.apply_owned(&e.spec, req.time_ms, input.value, distinct, &mut self.aggs);
                if !was_dirty && entry.state.is_dirty() {
                    held.dirty.push((e.index, CompactString::from(id)));
                }
                if seen.applied {
                    applied.applied += 1;
                } else if seen.late {
                    applied.late += 1;
                }
                write_seen(&mut out.values[r * out.width + e.first..], &e.spec, &self.aggs, seen.since_last_ms);
                if e.spec.session.is_some() {
                    let at = r * out.width + e.first + e.spec.window_values();
                    write_session(&mut out.values[at..], &seen.session);
                }
            }
            held.clock_ms = Some(held.clock_ms.map_or(req.time_ms, |c| c.max(req.time_ms)));
        }
        held.advance(events.max_offset);
        self.parts.metrics.state.entities.add(added);
    }

    /// After a partition's events: a checkpoint when due (Redis), the acknowledged offset
    /// otherwise; then entities are let go ([`Held::trim`]).
    fn after(&mut self, slot: &Arc<Slot>, held: &mut Held, flush: bool) {
        let due = flush || held.due(self.parts.interval, self.parts.max_dirty);
        if self.store.is_some() {
            if slot.is_gone() {
                return;
            }
            if due {
                if let Some(sealed) = held.seal(slot, &self.parts.entities) {
                    self.marks.push(Mark {
                        slot: slot.clone(),
                        write: sealed.write,
                        seal: Some(sealed.seal),
                        last: sealed.last,
                    });
                }
            } else if let (Some(claim), Some(last)) = (held.claim, held.last_offset) {
                let write = super::store::Write {
                    key: slot.key.clone(),
                    epoch: claim.epoch,
                    acked: last + 1,
                    checkpoint: None,
                };
                self.marks.push(Mark { slot: slot.clone(), write, seal: None, last });
            }
            let durable = slot.durable_seal.load(std::sync::atomic::Ordering::SeqCst);
            held.trim(&self.parts.entities, self.parts.budget(), Some(durable), &self.parts.metrics);
        } else {
            if due {
                held.mark_sealed();
            }
            held.trim(&self.parts.entities, self.parts.budget(), None, &self.parts.metrics);
        }
    }
}
