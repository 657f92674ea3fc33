//! Planning a batch's store calls: events grouped by entity ([`Group`], in event order),
//! and, where verdict holds a current copy of the entity's window state, the updates
//! applied to that copy ahead of time so Redis only compares and sets ([`CompareAndSet`]).

use std::collections::HashMap;

use super::cache::{CachedState, EntityKey, FeatureValues};
use super::window::{self, EntityState, Update, WindowSpec};
use super::{Entity, Request};

/// One entity's calls within a batch (for the Redis backend).
pub struct Group<'a> {
    /// Entity name.
    pub entity: &'a str,
    /// Entity id.
    pub id: &'a str,
    /// Window spec of the entity.
    pub spec: &'a WindowSpec,
    /// Whether the entity has windows.
    pub windows: bool,
    /// Feature names to read (none when they are cached).
    pub features: &'a [String],
    /// The entity's feature names.
    pub all_features: &'a [String],
    /// Max feature age (ms).
    pub max_age_ms: i64,
    /// Window updates, in event order.
    pub updates: Vec<Update<'a>>,
    pub(super) events: Vec<usize>,
    pub(super) entity_idx: usize,
    /// (entity index, id): the key of the entity's state and features in verdict's caches.
    pub(super) key: EntityKey,
    /// Online features served from the in-process cache (then `features` is empty).
    pub(super) cached: Option<FeatureValues>,
    /// The batch applied to verdict's copy of the window state, sent as a compare and set.
    pub cas: Option<Box<CompareAndSet>>,
    /// The version token Redis gets when it stores this group's state.
    pub token: String,
    /// A copy Redis did not match (what it knew of distinct values is still worth keeping).
    pub(super) stale: Option<EntityState>,
}

impl Group<'_> {
    /// Which configured entity this group is of.
    pub fn entity_idx(&self) -> usize {
        self.entity_idx
    }

    /// The same group without its features (already read) or copy, to be applied by the
    /// script after a compare and set found the state changed.
    pub(super) fn retry(&mut self, token: String) -> Self {
        Group {
            entity: self.entity,
            id: self.id,
            spec: self.spec,
            windows: self.windows,
            features: &[],
            all_features: self.all_features,
            max_age_ms: self.max_age_ms,
            updates: std::mem::take(&mut self.updates),
            events: std::mem::take(&mut self.events),
            entity_idx: self.entity_idx,
            key: std::mem::take(&mut self.key),
            cached: None,
            cas: None,
            token,
            stale: self.stale.take(),
        }
    }
}

/// A group's window updates applied by verdict to its cached copy of the entity's state:
/// the script stores the result if Redis still holds `expected` (see `window.lua`).
pub struct CompareAndSet {
    /// The version token verdict's copy was read or written at.
    pub expected: String,
    /// Per distinct value of the batch: the value, its bucket before the batch as verdict
    /// knows it, and its bucket after the batch if that changed.
    pub distinct: Vec<(String, Option<i64>, Option<i64>)>,
    /// The state after the batch, msgpack.
    pub blob: Vec<u8>,
    /// Buckets expired: the horizon below which distinct values go.
    pub horizon: Option<i64>,
    /// The key's expiry is due to be pushed back.
    pub refresh: bool,
    /// The copy knew every distinct value of the entity.
    pub(super) complete: bool,
    pub(super) state: EntityState,
    pub(super) seen: Vec<window::Seen>,
}

/// Groups a batch's updates by (entity, id), keeping event order within each group.
pub(super) fn group<'a>(entities: &'a [Entity], reqs: &'a [Request<'a>]) -> Vec<Group<'a>> {
    let mut index: HashMap<(usize, &str), usize> = HashMap::new();
    let mut groups: Vec<Group<'a>> = Vec::new();
    for (ev, r) in reqs.iter().enumerate() {
        for (ei, (e, input)) in entities.iter().zip(r.entities).enumerate() {
            let Some(id) = input.id.as_deref() else { continue };
            let gi = *index.entry((ei, id)).or_insert_with(|| {
                groups.push(Group {
                    entity: &e.cfg.name,
                    id,
                    spec: &e.spec,
                    windows: e.cfg.has_state(),
                    features: &e.cfg.features,
                    all_features: &e.cfg.features,
                    max_age_ms: i64::try_from(e.cfg.max_feature_age_s).unwrap_or(i64::MAX).saturating_mul(1000),
                    updates: Vec::new(),
                    events: Vec::new(),
                    entity_idx: ei,
                    key: (ei, compact_str::CompactString::new(id)),
                    cached: None,
                    cas: None,
                    token: String::new(),
                    stale: None,
                });
                groups.len() - 1
            });
            let g = &mut groups[gi];
            g.updates.push(Update {
                fence_key: r.fence_key,
                offset: r.offset,
                time_ms: r.time_ms,
                value: input.value,
                // An empty value is no value (as in `window.lua`).
                distinct: input.distinct.as_deref().filter(|d| !d.is_empty()),
            });
            g.events.push(ev);
        }
    }
    groups
}

/// Whether the copy knows the bucket of every distinct value in the group.
pub(super) fn knows_values(g: &Group<'_>, state: &EntityState) -> bool {
    g.updates.iter().filter_map(|u| u.distinct).all(|d| state.distinct_bucket(d).is_some())
}

/// Applies a group's updates to a copy of the cached state, for a compare and set.
pub(super) fn compare_and_set(g: &Group<'_>, cached: CachedState, now_ms: i64) -> CompareAndSet {
    let mut state = cached.state;
    // The distinct values the applied events used, with their bucket before the batch: only
    // those matter (replayed and late events leave distinct values alone).
    let mut distinct: Vec<(String, Option<i64>, Option<i64>)> = Vec::new();
    let mut pruned = false;
    let mut seen = Vec::with_capacity(g.updates.len());
    for u in &g.updates {
        let before = u.distinct.filter(|d| !distinct.iter().any(|(v, _, _)| v == d)).map(|d| state.distinct_bucket(d));
        let s = state.apply(g.spec, u);
        if let (Some(before), true) = (before, s.applied) {
            distinct.push((u.distinct.expect("checked").to_string(), before, None));
        }
        pruned |= s.pruned;
        seen.push(s);
    }
    for (v, before, after) in &mut distinct {
        let now_in = state.distinct_bucket(v);
        if now_in != *before {
            *after = now_in;
        }
    }
    let horizon = pruned.then(|| state.newest_ms().expect("pruned after applying") - g.spec.retention_ms());
    let refresh = state.push_expiry(now_ms, g.spec.retention_ms());
    let mut blob = Vec::with_capacity(256);
    state.to_msgpack(&mut blob);
    CompareAndSet { expected: cached.version, complete: cached.complete, distinct, blob, horizon, refresh, state, seen }
}
