//! Online features of entities without windows in Redis (their windows are partition-owned,
//! or they have none) read with one plain `HMGET` each, pipelined in the batch's round trip,
//! instead of through the window script.
//!
//! The script is for what must be atomic: a shared entity's window update with its features.
//! A read alone needs no atomicity, and the script's cost per entity (its arguments become
//! Lua strings, a table per call) was most of Redis's time for such batches. The values are
//! the script's, computed the same way: a feature counts when the hash's `_ts` is a number
//! and `now - _ts <= max_feature_age_s`, and the value is a number; the age is
//! `(now - _ts) / 1000` seconds. A key holding another type reads as no hash, as in the
//! script (counted and named by [`MissingHashes`]).

use std::sync::Arc;

use super::cache::{EntityKey, FeatureCache, FeatureValues};
use super::plan::Group;
use super::redis::{feature_key, MissingHashes};
use super::reply::{number, write_features};
use super::Entity;

/// One group's read in a batch: its events and cache key, the hash's key.
pub(super) struct Read {
    entity_idx: usize,
    events: Vec<usize>,
    cache_key: EntityKey,
    id_key: String,
    max_age_ms: i64,
}

/// The fields one entity type's `HMGET` asks for: its features, then `_ts`.
pub(super) fn fields(features: &[String]) -> Vec<Vec<u8>> {
    features.iter().map(|f| f.as_bytes().to_vec()).chain(std::iter::once(b"_ts".to_vec())).collect()
}

/// Takes the reads out of `groups`: those without windows in Redis still asking for
/// features (a Feast entity's were taken before). Their features are then no longer asked
/// of the script, and a group left with nothing to ask is served locally.
pub(super) fn take_reads(prefix: &str, groups: &mut [Group<'_>]) -> Vec<Read> {
    let mut reads = Vec::new();
    for g in groups.iter_mut().filter(|g| !g.windows && !g.features.is_empty()) {
        reads.push(Read {
            entity_idx: g.entity_idx,
            events: std::mem::take(&mut g.events),
            cache_key: std::mem::take(&mut g.key),
            id_key: feature_key(prefix, g.entity, g.id),
            max_age_ms: g.max_age_ms,
        });
        g.features = &[];
    }
    reads
}

/// The `HMGET`s of `reads` (key and fields), for the pipeline.
pub(super) fn commands<'a>(entities: &'a [Entity], reads: &'a [Read]) -> Vec<(&'a [u8], &'a [Vec<u8>])> {
    reads.iter().map(|r| (r.id_key.as_bytes(), &entities[r.entity_idx].hash_fields[..])).collect()
}

/// An entity's values from its `HMGET` reply (one entry per field, empty when absent; no
/// entries at all when the key holds another type): each feature, then the age in seconds.
pub(super) fn values(reply: &[Vec<u8>], nf: usize, now_ms: i64, max_age_ms: i64) -> Vec<Option<f64>> {
    // As the script computes it, in doubles (Lua's numbers).
    let ts = reply.get(nf).and_then(|b| number(b));
    let fresh = ts.is_some_and(|ts| now_ms as f64 - ts <= max_age_ms as f64);
    let mut out = Vec::with_capacity(nf + 1);
    for i in 0..nf {
        out.push(if fresh { reply.get(i).and_then(|b| number(b)) } else { None });
    }
    out.push(ts.map(|ts| (now_ms as f64 - ts) / 1000.0));
    out
}

/// Writes the reads' values for their events (and into the feature cache), from the `HMGET`
/// replies in [`commands`] order; a hash without `_ts` (or none at all) is noted as missing.
pub(super) fn write(entities: &[Entity], reads: Vec<Read>, replies: &[Vec<Vec<u8>>], now_ms: i64, to: &mut Sink<'_>) {
    for (r, reply) in reads.into_iter().zip(replies) {
        let e = &entities[r.entity_idx];
        let values = values(reply, e.cfg.features.len(), now_ms, r.max_age_ms);
        to.serve(e, r.entity_idx, &r.events, values, r.cache_key);
    }
}

/// Where a batch's read features go: the batch's values, the feature cache, the missing
/// hashes' count.
pub(super) struct Sink<'a> {
    /// Values per event.
    pub(super) width: usize,
    pub(super) out: &'a mut [Option<f64>],
    pub(super) cache: Option<&'a mut FeatureCache>,
    pub(super) missing: &'a mut MissingHashes,
}

impl Sink<'_> {
    /// Writes one entity's `values` (each feature, then the age; an age of None: no hash,
    /// noted as missing) for its `events`, and keeps them in the cache under `cache_key`.
    pub(super) fn serve(
        &mut self,
        e: &Entity,
        entity_idx: usize,
        events: &[usize],
        values: Vec<Option<f64>>,
        cache_key: EntityKey,
    ) {
        if values.last() == Some(&None) {
            self.missing.note(entity_idx, &cache_key.1);
        }
        let values: FeatureValues = Arc::from(values);
        write_features(&values, events, e, self.width, self.out);
        if let Some(cache) = self.cache.as_deref_mut() {
            cache.insert(cache_key, values);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::values;

    fn reply(fields: &[&str]) -> Vec<Vec<u8>> {
        fields.iter().map(|f| f.as_bytes().to_vec()).collect()
    }

    #[test]
    fn fresh_features_and_their_age_as_the_script_computes_them() {
        let v = values(&reply(&["2", "57.5", "1000"]), 2, 3_500, 60_000);
        assert_eq!(v, vec![Some(2.0), Some(57.5), Some(2.5)]);
        // Not a number: missing; the others stay.
        let v = values(&reply(&["x", "", "1000"]), 2, 3_500, 60_000);
        assert_eq!(v, vec![None, None, Some(2.5)]);
    }

    #[test]
    fn stale_or_undated_hashes_give_no_features() {
        // Older than the limit: no features, the age still says how old.
        assert_eq!(values(&reply(&["2", "3", "1000"]), 2, 62_000, 60_000), vec![None, None, Some(61.0)]);
        // At the limit: still fresh (`<=`, as the script).
        assert_eq!(values(&reply(&["2", "3", "1000"]), 2, 61_000, 60_000), vec![Some(2.0), Some(3.0), Some(60.0)]);
        // No `_ts`, or no hash (or another type at the key: no fields at all).
        assert_eq!(values(&reply(&["2", "3", ""]), 2, 1_000, 60_000), vec![None, None, None]);
        assert_eq!(values(&[], 2, 1_000, 60_000), vec![None, None, None]);
    }
}
