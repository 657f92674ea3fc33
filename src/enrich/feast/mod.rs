//! Online features read from a Feast Redis online store as `feast materialize` writes it
//! (verified against Feast 0.67.0, `feast/infra/online_stores/redis.py`).
//!
//! Feast keeps one Redis hash per entity and project, at a binary key ([`key::redis_key`]);
//! in it, per feature view, one field per feature (the murmur3 of `view:feature`, holding a
//! serialized `feast.types.Value`) and `_ts:view` (a serialized `google.protobuf.Timestamp`,
//! the row's event time). An entity configured with `[enrich.entities.feast]` is read with
//! one `HMGET` of every feature field and every view's `_ts`, sent in the batch's one
//! pipelined round trip beside the window script; each view's features count as missing
//! when its `_ts` is absent or older than the view's `max_age_s`.
//!
//! Files: [`config`] (the `feast` table), [`key`] (key and field names), [`value`]
//! (protobuf decoding).

pub mod config;
pub mod key;
pub mod value;

pub use config::{FeastSource, JoinKeyConfig, KeyType, ViewAge};
use key::JoinKey;

use super::cache::EntityKey;
use super::hashes::Sink;
use super::plan::Group;
use super::Entity;
use crate::core::event::KEY_SEPARATOR;

/// How one entity type's Feast features are read: its key parts, hash fields and limits.
#[derive(Debug, Clone)]
pub struct FeastReader {
    project: String,
    version: u32,
    /// Join keys sorted by name (Feast's order), each naming its part of the entity id.
    sorted: Vec<JoinKey>,
    parts: usize,
    /// Every feature's hash field, then `_ts:{view}` per view.
    fields: Vec<Vec<u8>>,
    /// Per feature, the index of its view.
    view_of: Vec<usize>,
    /// Per view, its freshness limit (ms).
    max_age_ms: Vec<i64>,
}

impl FeastReader {
    /// For an entity with `features` (`view:feature`), whose views default to `default_age_s`.
    pub fn new(src: &FeastSource, features: &[String], default_age_s: u64) -> Self {
        let mut sorted: Vec<JoinKey> = src
            .join_keys
            .iter()
            .enumerate()
            .map(|(part, k)| JoinKey { name: k.name.clone(), kind: k.kind, part })
            .collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let views = FeastSource::views_of(features);
        let ms = |s: u64| i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000);
        let max_age_ms = views
            .iter()
            .map(|v| ms(src.views.iter().find(|a| a.name == *v).map_or(default_age_s, |a| a.max_age_s)))
            .collect();
        let view_of = features
            .iter()
            .map(|f| {
                let v = f.split_once(':').map_or("", |(v, _)| v);
                views.iter().position(|x| *x == v).expect("listed")
            })
            .collect();
        let fields = features
            .iter()
            .map(|f| key::feature_field(f))
            .chain(views.iter().map(|v| format!("_ts:{v}").into_bytes()))
            .collect();
        Self {
            project: src.project.clone(),
            version: src.entity_key_serialization_version,
            sorted,
            parts: src.join_keys.len(),
            fields,
            view_of,
            max_age_ms,
        }
    }

    /// The Redis key of entity `id` (its join key values joined by [`KEY_SEPARATOR`], in
    /// config order); None when the id cannot be a Feast entity of this type.
    pub fn key(&self, id: &str) -> Option<Vec<u8>> {
        let parts: Vec<&str> = id.split(KEY_SEPARATOR).collect();
        if parts.len() != self.parts {
            return None;
        }
        key::redis_key(&self.project, self.version, &self.sorted, &parts)
    }

    /// The hash fields one `HMGET` asks for.
    pub fn fields(&self) -> &[Vec<u8>] {
        &self.fields
    }

    /// The entity's values from its `HMGET` reply (`reply`: one entry per field, empty when
    /// absent): each feature (None: missing, stale or not a number), then the age in seconds
    /// of its oldest view that has a timestamp (None: no view has one).
    pub fn values(&self, reply: &[Vec<u8>], now_ms: i64) -> Vec<Option<f64>> {
        let nf = self.view_of.len();
        let ts: Vec<Option<i64>> =
            (0..self.max_age_ms.len()).map(|v| reply.get(nf + v).and_then(|b| value::timestamp_ms(b))).collect();
        let fresh: Vec<bool> =
            ts.iter().zip(&self.max_age_ms).map(|(t, max)| t.is_some_and(|t| now_ms - t <= *max)).collect();
        let mut out = Vec::with_capacity(nf + 1);
        for (i, &v) in self.view_of.iter().enumerate() {
            out.push(if fresh[v] { reply.get(i).and_then(|b| value::number(b)) } else { None });
        }
        out.push(ts.iter().flatten().min().map(|t| (now_ms - t) as f64 / 1000.0));
        out
    }
}

/// One group's Feast read in a batch: the group's events and cache key, its Redis key.
pub(super) struct Read {
    entity_idx: usize,
    events: Vec<usize>,
    cache_key: EntityKey,
    /// None: the id cannot be a Feast key of this type (every feature missing).
    pub(super) key: Option<Vec<u8>>,
}

/// Takes the Feast reads out of `groups` (those of Feast entities still asking for
/// features): their features are then no longer asked of the window script.
pub(super) fn take_reads(entities: &[Entity], groups: &mut [Group<'_>]) -> Vec<Read> {
    let mut reads = Vec::new();
    for g in groups.iter_mut().filter(|g| !g.features.is_empty()) {
        let Some(reader) = &entities[g.entity_idx].feast else { continue };
        reads.push(Read {
            entity_idx: g.entity_idx,
            events: g.events.clone(),
            cache_key: g.key.clone(),
            key: reader.key(g.id),
        });
        g.features = &[];
    }
    reads
}

/// The `HMGET`s of `reads` (key and fields), for the pipeline; reads without a key send none.
pub(super) fn commands<'a>(entities: &'a [Entity], reads: &'a [Read]) -> Vec<(&'a [u8], &'a [Vec<u8>])> {
    reads
        .iter()
        .filter_map(|r| {
            let reader = entities[r.entity_idx].feast.as_ref()?;
            Some((r.key.as_deref()?, reader.fields()))
        })
        .collect()
}

/// Writes the reads' values for their events (and into the feature cache), from the `HMGET`
/// replies in [`commands`] order; an entity Feast has no row for (no view's `_ts`) is noted
/// as missing.
pub(super) fn write(entities: &[Entity], reads: Vec<Read>, replies: &[Vec<Vec<u8>>], now_ms: i64, to: &mut Sink<'_>) {
    let mut replies = replies.iter();
    for r in reads {
        let e = &entities[r.entity_idx];
        let Some(reader) = &e.feast else { continue };
        let mut values = match r.key {
            Some(_) => replies.next().map_or_else(Vec::new, |reply| reader.values(reply, now_ms)),
            None => Vec::new(),
        };
        values.resize(reader.view_of.len() + 1, None);
        to.serve(e, r.entity_idx, &r.events, values, r.cache_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader() -> FeastReader {
        let src = FeastSource {
            project: "p".into(),
            join_keys: vec![JoinKeyConfig { name: "id".into(), field: String::new(), kind: KeyType::Int64 }],
            entity_key_serialization_version: 3,
            views: vec![ViewAge { name: "fast".into(), max_age_s: 60 }],
        };
        let features = ["fast:a".to_string(), "slow:b".to_string(), "fast:c".to_string()];
        FeastReader::new(&src, &features, 3600)
    }

    fn ts(ms: i64) -> Vec<u8> {
        // google.protobuf.Timestamp { seconds } (field 1, varint).
        let mut b = vec![0x08];
        let mut s = (ms / 1000) as u64;
        while s >= 0x80 {
            b.push((s as u8) | 0x80);
            s >>= 7;
        }
        b.push(s as u8);
        b
    }

    #[test]
    fn each_views_features_go_stale_by_its_own_limit() {
        let r = reader();
        assert_eq!(r.fields().len(), 5, "three features, two _ts fields");
        assert_eq!(&r.fields()[3..], [b"_ts:fast".to_vec(), b"_ts:slow".to_vec()]);
        let now = 1_700_000_000_000;
        let double = |x: f64| [vec![0x29], x.to_le_bytes().to_vec()].concat();
        let reply = vec![double(1.0), double(2.0), double(3.0), ts(now - 120_000), ts(now - 120_000)];
        // The fast view (60 s) is stale at 120 s; the slow one (the entity's 3600 s) is not.
        assert_eq!(r.values(&reply, now), vec![None, Some(2.0), None, Some(120.0)]);
        let reply = vec![double(1.0), vec![], double(3.0), ts(now - 1000), vec![]];
        assert_eq!(r.values(&reply, now), vec![Some(1.0), None, Some(3.0), Some(1.0)], "no _ts: missing");
    }

    #[test]
    fn an_id_that_is_not_the_key_type_has_no_key() {
        let r = reader();
        assert!(r.key("12").is_some());
        assert!(r.key("twelve").is_none());
        assert!(r.key(&format!("1{KEY_SEPARATOR}2")).is_none(), "two parts for one join key");
    }
}
