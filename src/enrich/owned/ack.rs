//! The acker's part of the partition-owned state: once a batch's decisions are all
//! acknowledged, write its partitions' checkpoints and acknowledged offsets (one pipelined
//! round trip, one atomic script call per partition), and only then hand back the offsets
//! the consumer may store: a partition's, up to its checkpoint, once that is durable.
//!
//! A batch that seals no checkpoint only moves acknowledged offsets, which say which
//! re-decisions to flag after a crash. Those are written at most every [`ACK_ONLY_GAP`]
//! (with the next checkpoint otherwise), the latest per partition: one write per batch kept
//! the acker busy most of its time at 40k events/s.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::slot::Slot;
use super::store::{Write, Written};
use super::Partitions;
use crate::backoff::Backoff;
use crate::enrich::{EnrichError, FailurePolicy};
use crate::envelope::{AfterAck, Origin};

/// One partition's write for a batch.
pub(super) struct Mark {
    pub(super) slot: Arc<Slot>,
    pub(super) write: Write,
    /// The seal number when `write` carries a checkpoint.
    pub(super) seal: Option<u64>,
    /// The last offset the write covers.
    pub(super) last: i64,
}

/// A batch's writes, run by the acker.
pub(super) struct Checkpoints {
    parts: Arc<Partitions>,
    marks: Vec<Mark>,
}

impl Checkpoints {
    pub(super) fn new(parts: Arc<Partitions>, marks: Vec<Mark>) -> Self {
        Self { parts, marks }
    }
}

/// Writes held back while Redis was unreachable (`on_failure = "degraded"`) past which the
/// acker waits for Redis instead.
const MAX_PENDING: usize = 20_000;

/// The least time between two writes that carry acknowledged offsets only.
pub(super) const ACK_ONLY_GAP: Duration = Duration::from_millis(100);

/// Drops every acknowledgement-only write that a later write of the same partition
/// supersedes (it carries a later acknowledged offset); checkpoints all stay, in order.
fn coalesce(pending: &mut Vec<Mark>) {
    let mut seen: Vec<*const Slot> = Vec::new();
    let mut keep = vec![true; pending.len()];
    for (i, k) in pending.iter().enumerate().rev() {
        let slot = Arc::as_ptr(&k.slot);
        if k.seal.is_none() && seen.contains(&slot) {
            keep[i] = false;
        } else if !seen.contains(&slot) {
            seen.push(slot);
        }
    }
    let mut keep = keep.into_iter();
    pending.retain(|_| keep.next().unwrap_or(true));
}

impl AfterAck for Checkpoints {
    fn run(self: Box<Self>, abort: &CancellationToken) -> Vec<Origin> {
        let Checkpoints { parts, marks } = *self;
        let m = &parts.metrics.state;
        // Writes held back by an outage go first: checkpoints are deltas, written in order.
        let mut pending = parts.pending.lock();
        pending.extend(marks);
        // A revoked or fenced partition's writes are dropped: its new owner resumes from
        // the last checkpoint that was durable.
        pending.retain(|k| !k.slot.is_gone());
        coalesce(&mut pending);
        let recent = parts.last_write.lock().is_some_and(|t| t.elapsed() < ACK_ONLY_GAP);
        if pending.is_empty() || (recent && pending.iter().all(|k| k.seal.is_none())) {
            return Vec::new();
        }
        let writes: Vec<&Write> = pending.iter().map(|k| &k.write).collect();
        let mut guard = parts.acker_store.lock();
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let started = Instant::now();
        let replies = loop {
            let store = match guard.as_mut() {
                Some(s) => s,
                None => match parts.store() {
                    Ok(Some(s)) => guard.insert(s),
                    _ => return Vec::new(),
                },
            };
            match store.write(&writes, parts.ttl_ms, parts.per_partition) {
                Ok(r) => break r,
                Err(e @ EnrichError::Unavailable(_)) => {
                    m.checkpoints.with_label_values(&["retried"]).inc();
                    parts.metrics.state_store_up.set(0);
                    // Degraded: decisions go on (the windows are in process and exact); the
                    // writes wait, and so do the offsets they cover.
                    if parts.policy == FailurePolicy::Degraded && writes.len() < MAX_PENDING {
                        tracing::debug!(error = %e, pending = writes.len(), "checkpoint held back until Redis answers");
                        return Vec::new();
                    }
                    tracing::warn!(error = %e, "checkpoint not written; retrying (offsets wait for it)");
                    if !crate::backoff::sleep_unless(backoff.next_delay(), abort) {
                        return Vec::new();
                    }
                }
                Err(e) => {
                    // Checkpoints are deltas: after one is lost, a later one would leave Redis
                    // inconsistent. These partitions stop being checkpointed and the pipeline fails.
                    m.checkpoints.with_label_values(&["failed"]).inc();
                    for k in pending.iter() {
                        k.slot.gone.store(true, Ordering::SeqCst);
                    }
                    pending.clear();
                    parts.metrics.guards.fail(format!("a partition state checkpoint was refused by Redis: {e}"));
                    return Vec::new();
                }
            }
        };
        drop(writes);
        *parts.last_write.lock() = Some(Instant::now());
        parts.metrics.state_store_up.set(1);
        m.checkpoint_seconds.observe(started.elapsed().as_secs_f64());
        let mut offsets: Vec<Origin> = Vec::new();
        for (mark, reply) in pending.drain(..).zip(replies) {
            let slot = &mark.slot;
            match reply {
                Written::Ok => {
                    if let Some(seal) = mark.seal {
                        m.checkpoints.with_label_values(&["written"]).inc();
                        m.checkpoint_fields.inc_by(mark.write.fields());
                        slot.durable_seal.fetch_max(seal, Ordering::SeqCst);
                        match offsets.iter_mut().find(|o| o.partition == slot.partition && o.topic == slot.topic) {
                            Some(o) => o.offset = o.offset.max(mark.last),
                            None => offsets.push(Origin {
                                topic: slot.topic.clone(),
                                partition: slot.partition,
                                offset: mark.last,
                            }),
                        }
                    }
                    if !slot.first_done.swap(true, Ordering::SeqCst) {
                        let waited = slot.assigned_at.elapsed();
                        m.resume_seconds.observe(waited.as_secs_f64());
                        tracing::info!(topic = %slot.topic, partition = slot.partition,
                            ms = waited.as_millis() as u64, "first decisions of the partition acknowledged");
                    }
                }
                Written::Lost => {
                    // Nobody else holds the partition, so no rebalance will move it: pausing it
                    // would stall it for good. Redis lost the claim (and with it possibly
                    // window state): stop, so a restart claims again from what Redis holds.
                    m.checkpoints.with_label_values(&["failed"]).inc();
                    if !slot.gone.swap(true, Ordering::SeqCst) {
                        parts.metrics.guards.fail(format!(
                            "partition {}/{}: its claim is gone from Redis, which lost data (a failover to a \
                             replica that had not received it, a FLUSHALL, or eviction: run Redis with \
                             maxmemory-policy noeviction); restart to resume from what Redis still holds",
                            slot.topic, slot.partition
                        ));
                    }
                }
                Written::Fenced(epoch) => {
                    m.checkpoints.with_label_values(&["fenced"]).inc();
                    if !slot.gone.swap(true, Ordering::SeqCst) {
                        tracing::warn!(topic = %slot.topic, partition = slot.partition, ours = mark.write.epoch,
                            theirs = %epoch, "another instance has claimed the partition: this one stops processing it");
                        parts.fenced.lock().push((slot.topic.clone(), slot.partition));
                    }
                }
            }
        }
        offsets
    }
}
