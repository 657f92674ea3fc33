//! Enrich stage: per-entity sliding-window aggregates and online features.
//!
//! The public face is [`Enricher`]. For a batch it groups events by entity (in event
//! order), and reads-then-applies each group's window updates and reads its online
//! features in **one round trip per batch** (Redis) or in process (memory backend).
//! Every value it produces has a name the model manifest can use as a column `source`:
//!
//! * `window:{entity}.{window}.{count|sum|avg|min|max|distinct}` — before the event;
//! * `window:{entity}.since_last_s` — seconds since the entity's previous event;
//! * `feature:{entity}.{name}` — online feature from Redis (missing or stale → the column's
//!   missing policy, recorded in the decision's `defaults_used`).

pub mod config;
pub mod redis;
pub mod window;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

pub use config::{Backend, EnrichConfig, EntityConfig, FailurePolicy};
pub use window::{EntityState, Update, WindowSpec};

use crate::decode::FieldPath;
use crate::error::{Policy, StageError};

/// Enrich-stage failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EnrichError {
    /// Bad configuration (start-up).
    #[error("enrich config: {0}")]
    Config(String),
    /// The state store did not answer.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The store answered something unexpected.
    #[error("state store reply: {0}")]
    Protocol(String),
}

impl StageError for EnrichError {
    fn policy(&self) -> Policy {
        match self {
            EnrichError::Config(_) => Policy::Fatal,
            EnrichError::Unavailable(_) | EnrichError::Protocol(_) => Policy::Retry,
        }
    }
}

/// What the decoder extracts per event, per entity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityInput {
    /// Entity id (None: the event has no such entity; its values are missing).
    pub id: Option<String>,
    /// The value field.
    pub value: Option<f64>,
    /// The distinct field.
    pub distinct: Option<String>,
}

/// One event to enrich.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `topic/partition` of the source.
    pub fence_key: &'a str,
    /// Source offset.
    pub offset: i64,
    /// Event time (ms).
    pub time_ms: i64,
    /// One entry per configured entity.
    pub entities: &'a [EntityInput],
}

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
    /// Feature names to read.
    pub features: &'a [String],
    /// Max feature age (ms).
    pub max_age_ms: i64,
    /// Window updates, in event order.
    pub updates: Vec<Update<'a>>,
    events: Vec<usize>,
    entity_idx: usize,
    /// Online features served from the in-process cache (then `features` is empty).
    cached: Option<Arc<Vec<Option<f64>>>>,
}

/// Paths the decoder must extract for enrichment, per entity.
#[derive(Debug, Clone)]
pub struct EntityPaths {
    /// Entity id.
    pub key: FieldPath,
    /// Value field.
    pub value: Option<FieldPath>,
    /// Distinct field.
    pub distinct: Option<FieldPath>,
}

struct Entity {
    cfg: EntityConfig,
    spec: WindowSpec,
    /// Index of this entity's first output value.
    first: usize,
}

enum Store {
    Off,
    Memory(moka::sync::Cache<String, Arc<Mutex<EntityState>>>),
    Redis(Box<redis::RedisStore>),
}

/// Per-batch totals the worker turns into metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Round trips to the store.
    pub round_trips: u64,
    /// Commands (script calls) sent.
    pub commands: u64,
    /// Window updates applied.
    pub applied: u64,
    /// Updates skipped as replays (fenced).
    pub replayed: u64,
    /// Updates skipped as too late.
    pub late: u64,
    /// Online-feature cache hits.
    pub cache_hits: u64,
    /// Online-feature cache misses.
    pub cache_misses: u64,
}

type FeatureCache = moka::sync::Cache<(usize, String), Arc<Vec<Option<f64>>>>;

/// Windows and online features of the configured entities.
pub struct Enricher {
    entities: Vec<Entity>,
    names: Vec<String>,
    store: Store,
    cache: Option<FeatureCache>,
    per_group: bool,
}

const AGGS: [&str; 6] = ["count", "sum", "avg", "min", "max", "distinct"];

impl Enricher {
    /// Builds the enricher and connects to its store.
    pub fn new(cfg: &EnrichConfig) -> Result<Self, EnrichError> {
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(EnrichError::Config(problems.join("; ")));
        }
        let mut names = Vec::new();
        let mut entities = Vec::new();
        let entity_cfgs = if cfg.backend == Backend::Off { &[][..] } else { &cfg.entities[..] };
        for e in entity_cfgs {
            let first = names.len();
            for w in &e.windows {
                for a in AGGS {
                    names.push(format!("window:{}.{}.{a}", e.name, w.name));
                }
            }
            if !e.windows.is_empty() {
                names.push(format!("window:{}.since_last_s", e.name));
            }
            for f in &e.features {
                names.push(format!("feature:{}.{f}", e.name));
            }
            if !e.features.is_empty() {
                // Seconds since the entity's features were written (`_ts`), as read.
                names.push(format!("feature:{}.age_s", e.name));
            }
            let spec = WindowSpec {
                bucket_ms: e.bucket_s as i64 * 1000,
                sizes_ms: e.windows.iter().map(|w| w.size_s as i64 * 1000).collect(),
                lateness_ms: cfg.allowed_lateness_s as i64 * 1000,
            };
            entities.push(Entity { cfg: e.clone(), spec, first });
        }
        let store = match cfg.backend {
            Backend::Off => Store::Off,
            Backend::Memory => {
                let retention = entities.iter().map(|e| e.spec.retention_ms()).max().unwrap_or(0).max(1000);
                Store::Memory(
                    moka::sync::Cache::builder()
                        .max_capacity(1_000_000)
                        .time_to_idle(Duration::from_millis(retention as u64))
                        .build(),
                )
            }
            Backend::Redis => Store::Redis(Box::new(redis::RedisStore::connect(
                &cfg.redis_url,
                &cfg.key_prefix,
                Duration::from_millis(cfg.timeout_ms),
            )?)),
        };
        let cache = (cfg.backend == Backend::Redis && cfg.cache_capacity > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(cfg.cache_capacity)
                .time_to_live(Duration::from_millis(cfg.cache_ttl_ms.max(1)))
                .build()
        });
        Ok(Self { entities, names, store, cache, per_group: cfg.redis_cluster })
    }

    /// Names of the values this enricher produces, in output order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Paths the decoder must extract, one entry per entity.
    pub fn paths(&self) -> Vec<EntityPaths> {
        self.entities
            .iter()
            .map(|e| EntityPaths {
                key: FieldPath::parse(&e.cfg.key),
                value: e.cfg.value_field.as_deref().map(FieldPath::parse),
                distinct: e.cfg.distinct_field.as_deref().map(FieldPath::parse),
            })
            .collect()
    }

    /// Whether there is anything to do.
    pub fn is_enabled(&self) -> bool {
        !self.entities.is_empty()
    }

    /// Enriches a batch: `out` receives `names().len()` values per request (None = missing).
    pub fn enrich(&mut self, reqs: &[Request<'_>], out: &mut Vec<Option<f64>>) -> Result<BatchStats, EnrichError> {
        let width = self.names.len();
        out.clear();
        out.resize(reqs.len() * width, None);
        let mut stats = BatchStats::default();
        if self.entities.is_empty() || reqs.is_empty() {
            return Ok(stats);
        }
        let groups = group(&self.entities, reqs);
        match &mut self.store {
            Store::Off => {}
            Store::Memory(cache) => {
                for g in &groups {
                    if !g.windows {
                        continue;
                    }
                    let key = format!("{}:{}", g.entity, g.id);
                    let state = cache.get_with(key, || Arc::new(Mutex::new(EntityState::default())));
                    let mut state = state.lock();
                    for (u, &ev) in g.updates.iter().zip(&g.events) {
                        let seen = state.apply(g.spec, u);
                        count(&mut stats, seen.applied, seen.late);
                        let e = &self.entities[g.entity_idx];
                        write_seen(&mut out[ev * width + e.first..], &seen.windows, seen.since_last_ms);
                    }
                }
            }
            Store::Redis(store) => {
                let mut groups = groups;
                if let Some(cache) = &self.cache {
                    for g in groups.iter_mut().filter(|g| !g.features.is_empty()) {
                        match cache.get(&(g.entity_idx, g.id.to_string())) {
                            Some(v) => {
                                g.cached = Some(v);
                                g.features = &[];
                                stats.cache_hits += 1;
                            }
                            None => stats.cache_misses += 1,
                        }
                    }
                }
                // A group with nothing left to ask Redis is served from the cache alone.
                let (ask, local): (Vec<_>, Vec<_>) =
                    groups.into_iter().partition(|g| g.windows || !g.features.is_empty());
                for g in &local {
                    write_cached(g, &self.entities[g.entity_idx], width, out);
                }
                if !ask.is_empty() {
                    let reply = store.run(&ask, crate::publish::acker::wall_clock_ms(), self.per_group)?;
                    stats.round_trips = 1;
                    stats.commands = if self.per_group { ask.len() as u64 } else { 1 };
                    let mut at = 0;
                    for g in &ask {
                        let e = &self.entities[g.entity_idx];
                        let used = parse_reply(g, e, &reply[at.min(reply.len())..], width, out, &mut stats)?;
                        if let (Some(cache), false) = (&self.cache, g.features.is_empty()) {
                            let values = reply[at..at + g.features.len() + 1].iter().map(|v| number(v)).collect();
                            cache.insert((g.entity_idx, g.id.to_string()), Arc::new(values));
                        }
                        at += used;
                    }
                    if at != reply.len() {
                        return Err(EnrichError::Protocol(format!(
                            "{} values in the reply, {at} expected",
                            reply.len()
                        )));
                    }
                }
            }
        }
        Ok(stats)
    }
}

/// Groups a batch's updates by (entity, id), keeping event order within each group.
fn group<'a>(entities: &'a [Entity], reqs: &'a [Request<'a>]) -> Vec<Group<'a>> {
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
                    windows: !e.cfg.windows.is_empty(),
                    features: &e.cfg.features,
                    max_age_ms: e.cfg.max_feature_age_s as i64 * 1000,
                    updates: Vec::new(),
                    events: Vec::new(),
                    entity_idx: ei,
                    cached: None,
                });
                groups.len() - 1
            });
            let g = &mut groups[gi];
            g.updates.push(Update {
                fence_key: r.fence_key,
                offset: r.offset,
                time_ms: r.time_ms,
                value: input.value,
                distinct: input.distinct.as_deref(),
            });
            g.events.push(ev);
        }
    }
    groups
}

fn count(stats: &mut BatchStats, applied: bool, late: bool) {
    if applied {
        stats.applied += 1;
    } else if late {
        stats.late += 1;
    } else {
        stats.replayed += 1;
    }
}

/// Writes one event's window values (6 per window, then since_last) at the entity's offset.
fn write_seen(slot: &mut [Option<f64>], windows: &[window::WindowAggs], since_last_ms: Option<i64>) {
    let mut i = 0;
    for w in windows {
        slot[i] = Some(w.count as f64);
        slot[i + 1] = Some(w.sum);
        slot[i + 2] = w.avg();
        slot[i + 3] = w.min;
        slot[i + 4] = w.max;
        slot[i + 5] = Some(w.distinct as f64);
        i += 6;
    }
    if !windows.is_empty() {
        slot[i] = since_last_ms.map(|ms| ms as f64 / 1000.0);
    }
}

/// Writes a group's cached online features for each of its events.
fn write_cached(g: &Group<'_>, e: &Entity, width: usize, out: &mut [Option<f64>]) {
    let Some(values) = &g.cached else { return };
    let first = e.first + if e.cfg.windows.is_empty() { 0 } else { e.cfg.windows.len() * 6 + 1 };
    for &ev in &g.events {
        out[ev * width + first..ev * width + first + values.len()].copy_from_slice(values);
    }
}

/// A number in a script reply ('' or anything else: None).
fn number(v: &[u8]) -> Option<f64> {
    std::str::from_utf8(v).ok().and_then(|s| s.parse::<f64>().ok())
}

/// One group's part of the script reply: its online features, then (with windows) its state
/// before the batch and one status per event, from which each event's window values are
/// computed here exactly as the in-process backend computes them. Returns the values used.
fn parse_reply(
    g: &Group<'_>,
    e: &Entity,
    reply: &[Vec<u8>],
    width: usize,
    out: &mut [Option<f64>],
    stats: &mut BatchStats,
) -> Result<usize, EnrichError> {
    // Feature values plus their age, when the group asked for features.
    let nf = g.features.len() + usize::from(!g.features.is_empty());
    let expected = nf + if g.windows { 1 + g.events.len() } else { 0 };
    if reply.len() < expected {
        return Err(EnrichError::Protocol(format!(
            "entity {} {}: {} values, expected {expected}",
            g.entity,
            g.id,
            reply.len()
        )));
    }
    let feature_first = e.first + if g.windows { g.spec.sizes_ms.len() * 6 + 1 } else { 0 };
    if g.cached.is_some() {
        write_cached(g, e, width, out);
    } else {
        for &ev in &g.events {
            for (k, v) in reply[..nf].iter().enumerate() {
                out[ev * width + feature_first + k] = number(v);
            }
        }
    }
    if !g.windows {
        return Ok(expected);
    }
    let blob = &reply[nf];
    let mut state =
        if blob.is_empty() { EntityState::default() } else { EntityState::from_msgpack(blob).map_err(protocol(g))? };
    for ((u, &ev), status) in g.updates.iter().zip(&g.events).zip(&reply[nf + 1..expected]) {
        let seen = state.follow(g.spec, u, status).map_err(protocol(g))?;
        count(stats, seen.applied, seen.late);
        write_seen(&mut out[ev * width + e.first..], &seen.windows, seen.since_last_ms);
    }
    Ok(expected)
}

fn protocol<'a>(g: &'a Group<'_>) -> impl Fn(String) -> EnrichError + 'a {
    move |e| EnrichError::Protocol(format!("entity {} {}: {e}", g.entity, g.id))
}

/// Runs closures in batch-sequence order: window updates must be applied per source
/// partition in offset order (the replay fence relies on it), while workers decode and
/// score batches in parallel.
pub struct Turnstile<T> {
    state: Mutex<(u64, T)>,
    turn: parking_lot::Condvar,
}

impl<T> Turnstile<T> {
    /// Wraps `inner`; the first batch is sequence 0.
    pub fn new(inner: T) -> Self {
        Self { state: Mutex::new((0, inner)), turn: parking_lot::Condvar::new() }
    }

    /// Waits for batch `seq`'s turn, runs `f`, passes the turn on. None if `abort` was set
    /// while waiting.
    pub fn run<R>(&self, seq: u64, abort: &std::sync::atomic::AtomicBool, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let mut g = self.state.lock();
        while g.0 != seq {
            if abort.load(std::sync::atomic::Ordering::SeqCst) {
                return None;
            }
            self.turn.wait_for(&mut g, Duration::from_millis(50));
        }
        let r = f(&mut g.1);
        g.0 += 1;
        self.turn.notify_all();
        Some(r)
    }
}
