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
pub mod stage;
pub mod turnstile;
pub mod window;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

pub use config::{Backend, EnrichConfig, EntityConfig, FailurePolicy};
pub use turnstile::Turnstile;
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
    /// Feature names to read (none when they are cached).
    pub features: &'a [String],
    /// The entity's feature names.
    pub all_features: &'a [String],
    /// Max feature age (ms).
    pub max_age_ms: i64,
    /// Window updates, in event order.
    pub updates: Vec<Update<'a>>,
    events: Vec<usize>,
    entity_idx: usize,
    /// (entity index, id): the key of the entity's state and features in verdict's caches.
    key: (usize, String),
    /// Online features served from the in-process cache (then `features` is empty).
    cached: Option<Arc<Vec<Option<f64>>>>,
    /// The batch applied to verdict's copy of the window state, sent as a compare and set.
    pub cas: Option<Box<CompareAndSet>>,
    /// The version token Redis gets when it stores this group's state.
    pub token: String,
    /// A copy Redis did not match (what it knew of distinct values is still worth keeping).
    stale: Option<EntityState>,
}

impl Group<'_> {
    /// Which configured entity this group is of.
    pub fn entity_idx(&self) -> usize {
        self.entity_idx
    }

    /// The same group without its features (already read) or copy, to be applied by the
    /// script after a compare and set found the state changed.
    fn retry(&mut self, token: String) -> Self {
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

/// Version tokens: this process's random prefix and a counter, so a token names one write
/// by one writer (a compare and set must not mistake another instance's write for its own).
struct Tokens {
    prefix: u64,
    next: u64,
}

impl Tokens {
    fn new() -> Self {
        Self { prefix: rand::random::<u64>(), next: 0 }
    }

    fn next(&mut self) -> String {
        self.next += 1;
        format!("{:016x}{:x}", self.prefix, self.next)
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
    complete: bool,
    state: EntityState,
    seen: Vec<window::Seen>,
}

/// Verdict's copy of an entity's window state in Redis and the version it has there.
struct CachedState {
    state: EntityState,
    version: String,
    /// The copy knows every distinct value of the entity (it was new when first read), so a
    /// value it does not know has never been seen. Otherwise a batch with a value the copy
    /// does not know is applied by the script, which reports the value's bucket.
    complete: bool,
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
    Memory(moka::sync::Cache<(usize, String), Arc<Mutex<EntityState>>>),
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
    /// Window groups stored by compare and set from verdict's copy of the state.
    pub state_written: u64,
    /// Window groups whose copy was stale (applied by the script instead).
    pub state_conflicts: u64,
    /// Window groups with no copy (applied by the script).
    pub state_misses: u64,
}

/// Windows and online features of the configured entities.
pub struct Enricher {
    entities: Vec<Entity>,
    names: Vec<String>,
    store: Store,
    cache: Option<FeatureCache>,
    states: Option<StateCache>,
    tokens: Tokens,
    per_group: bool,
    missing: redis::MissingHashes,
}

/// A bounded map used only inside the turnstile (one batch at a time, so no lock): two
/// generations. A lookup moves an entry into the current generation; when that holds half
/// the capacity, the previous one (everything not used since) is dropped. Cheaper than a
/// concurrent cache on this path, where every entity of every batch is looked up.
struct Generations<V> {
    current: HashMap<(usize, String), V>,
    previous: HashMap<(usize, String), V>,
    half: usize,
}

impl<V: Send + 'static> Generations<V> {
    fn new(capacity: u64) -> Self {
        Self { current: HashMap::new(), previous: HashMap::new(), half: (capacity as usize / 2).max(1) }
    }

    /// Removes and returns the entry.
    fn take(&mut self, key: &(usize, String)) -> Option<V> {
        self.current.remove(key).or_else(|| self.previous.remove(key))
    }

    /// The entry, moved into the current generation.
    fn get(&mut self, key: &(usize, String)) -> Option<&V> {
        if !self.current.contains_key(key) {
            let v = self.previous.remove(key)?;
            self.put(key.clone(), v);
        }
        self.current.get(key)
    }

    fn put(&mut self, key: (usize, String), value: V) {
        if self.current.len() >= self.half && !self.current.contains_key(&key) {
            let dropped = std::mem::replace(&mut self.previous, std::mem::take(&mut self.current));
            if dropped.len() > 1000 {
                // Freeing tens of thousands of states takes milliseconds: not in the turnstile.
                std::thread::spawn(move || drop(dropped));
            }
        }
        self.previous.remove(&key);
        self.current.insert(key, value);
    }
}

/// Verdict's copies of window states.
type StateCache = Generations<CachedState>;

/// Online feature vectors read from Redis, with when they were read: used for `ttl`.
struct FeatureCache {
    map: Generations<(std::time::Instant, Arc<Vec<Option<f64>>>)>,
    ttl: Duration,
}

impl FeatureCache {
    fn get(&mut self, key: &(usize, String)) -> Option<Arc<Vec<Option<f64>>>> {
        let ttl = self.ttl;
        self.map.get(key).filter(|(at, _)| at.elapsed() < ttl).map(|(_, v)| v.clone())
    }

    fn insert(&mut self, key: (usize, String), values: Arc<Vec<Option<f64>>>) {
        self.map.put(key, (std::time::Instant::now(), values));
    }
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
            let spec = WindowSpec::from_seconds(e.bucket_s, e.windows.iter().map(|w| w.size_s), cfg.allowed_lateness_s);
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
        let cache = (cfg.backend == Backend::Redis && cfg.cache_capacity > 0).then(|| FeatureCache {
            map: Generations::new(cfg.cache_capacity),
            ttl: Duration::from_millis(cfg.cache_ttl_ms.max(1)),
        });
        let states = (cfg.backend == Backend::Redis && cfg.state_cache_capacity > 0)
            .then(|| StateCache::new(cfg.state_cache_capacity));
        let missing = redis::MissingHashes::new(
            &cfg.key_prefix,
            entities.iter().map(|e| (e.cfg.name.as_str(), &e.cfg.features[..])),
        );
        Ok(Self { entities, names, store, cache, states, tokens: Tokens::new(), per_group: cfg.redis_cluster, missing })
    }

    /// Counts online-feature reads that find no hash in
    /// `verdict_feature_hash_missing_total{entity}` (the warning naming the key is logged
    /// with or without this).
    pub fn with_metrics(mut self, metrics: &crate::telemetry::Metrics) -> Self {
        self.missing.count_in(metrics);
        self
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
                for mut g in groups {
                    if !g.windows {
                        continue;
                    }
                    let state =
                        cache.get_with(std::mem::take(&mut g.key), || Arc::new(Mutex::new(EntityState::default())));
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
                if let Some(cache) = &mut self.cache {
                    for g in groups.iter_mut().filter(|g| !g.features.is_empty()) {
                        match cache.get(&g.key) {
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
                    let now = crate::publish::acker::wall_clock_ms();
                    let mut ask = ask;
                    for g in ask.iter_mut().filter(|g| g.windows) {
                        g.token = self.tokens.next();
                        // A copy is taken out of the cache and applied to in place; it goes
                        // back once Redis has stored it.
                        if let Some(states) = &mut self.states {
                            match states.take(&g.key) {
                                Some(c) if c.complete || knows_values(g, &c.state) => {
                                    g.cas = Some(Box::new(compare_and_set(g, c, now)))
                                }
                                Some(c) => {
                                    g.stale = Some(c.state);
                                    stats.state_misses += 1;
                                }
                                None => stats.state_misses += 1,
                            }
                        }
                    }
                    let calls = |groups: &[Group<'_>]| if self.per_group { groups.len() as u64 } else { 1 };
                    let reply = store.run(&ask, now, self.per_group)?;
                    stats.round_trips = 1;
                    stats.commands = calls(&ask);
                    self.missing.clear();
                    let mut read = ReplyReader {
                        entities: &self.entities,
                        now,
                        width,
                        cache: self.cache.as_mut(),
                        states: self.states.as_mut(),
                        tokens: &mut self.tokens,
                        missing: &mut self.missing,
                    };
                    let mut again = read.reply(&mut ask, &reply, out, &mut stats)?;
                    read.missing.report(&ask);
                    // Copies Redis no longer matched (another instance wrote meanwhile): a
                    // second round trip has the script apply those groups' events.
                    if !again.is_empty() {
                        let reply = store.run(&again, now, self.per_group)?;
                        stats.round_trips += 1;
                        stats.commands += calls(&again);
                        read.reply(&mut again, &reply, out, &mut stats)?;
                    }
                }
            }
        }
        Ok(stats)
    }
}

/// What reading a script reply needs besides the groups: where values, features and copies go.
struct ReplyReader<'e> {
    entities: &'e [Entity],
    now: i64,
    width: usize,
    cache: Option<&'e mut FeatureCache>,
    states: Option<&'e mut StateCache>,
    tokens: &'e mut Tokens,
    missing: &'e mut redis::MissingHashes,
}

impl ReplyReader<'_> {
    /// Reads one reply for `groups`, in order: values into `out`, online features into the
    /// cache, states into the copies. Returns the groups whose copy was stale, to send again.
    fn reply<'a>(
        &mut self,
        groups: &mut [Group<'a>],
        reply: &[Vec<u8>],
        out: &mut [Option<f64>],
        stats: &mut BatchStats,
    ) -> Result<Vec<Group<'a>>, EnrichError> {
        let mut at = 0;
        let mut again = Vec::new();
        for (i, g) in groups.iter_mut().enumerate() {
            let e = &self.entities[g.entity_idx];
            let rest = &reply[at.min(reply.len())..];
            let (used, stored) = parse_reply(g, e, rest, self.now, self.width, out, stats, self.states.as_deref_mut())?;
            // Features read and no `_ts`: no hash at the key (or one verdict cannot date).
            if !g.features.is_empty() && rest[g.features.len()].is_empty() {
                self.missing.note(g.entity_idx, i);
            }
            if let (Some(cache), false) = (self.cache.as_deref_mut(), g.features.is_empty()) {
                let values = reply[at..at + g.features.len() + 1].iter().map(|v| number(v)).collect();
                cache.insert(g.key.clone(), Arc::new(values));
            }
            at += used;
            if !stored {
                again.push(g.retry(self.tokens.next()));
            }
        }
        if at != reply.len() {
            return Err(EnrichError::Protocol(format!("{} values in the reply, {at} expected", reply.len())));
        }
        Ok(again)
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
                    all_features: &e.cfg.features,
                    max_age_ms: i64::try_from(e.cfg.max_feature_age_s).unwrap_or(i64::MAX).saturating_mul(1000),
                    updates: Vec::new(),
                    events: Vec::new(),
                    entity_idx: ei,
                    key: (ei, id.to_string()),
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

/// Whether the copy knows the bucket of every distinct value in the group.
fn knows_values(g: &Group<'_>, state: &EntityState) -> bool {
    g.updates.iter().filter_map(|u| u.distinct).all(|d| state.distinct_bucket(d).is_some())
}

/// Applies a group's updates to a copy of the cached state, for a compare and set.
fn compare_and_set(g: &Group<'_>, cached: CachedState, now_ms: i64) -> CompareAndSet {
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

/// One group's part of the script reply: its online features, then (with windows) '=' (the
/// compare and set was stored: the values are the ones verdict computed), 'x' (the state had
/// changed: nothing was applied, the group goes again without its copy), or its state before
/// the batch and one status per event, from which each event's window values are computed
/// here exactly as the in-process backend computes them. Returns the values used and whether
/// the group's window updates are done.
#[allow(clippy::too_many_arguments)]
fn parse_reply(
    g: &mut Group<'_>,
    e: &Entity,
    reply: &[Vec<u8>],
    now_ms: i64,
    width: usize,
    out: &mut [Option<f64>],
    stats: &mut BatchStats,
    states: Option<&mut StateCache>,
) -> Result<(usize, bool), EnrichError> {
    // Feature values plus their age, when the group asked for features.
    let nf = g.features.len() + usize::from(!g.features.is_empty());
    let short =
        |n: usize| EnrichError::Protocol(format!("entity {} {}: {} values, expected {n}", g.entity, g.id, reply.len()));
    if reply.len() < nf {
        return Err(short(nf));
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
        return Ok((nf, true));
    }
    if let Some(cas) = g.cas.take() {
        return match reply.get(nf).map(Vec::as_slice) {
            Some(b"=") => {
                for (seen, &ev) in cas.seen.iter().zip(&g.events) {
                    count(stats, seen.applied, seen.late);
                    write_seen(&mut out[ev * width + e.first..], &seen.windows, seen.since_last_ms);
                }
                stats.state_written += 1;
                if let Some(states) = states {
                    states.put(
                        g.key.clone(),
                        CachedState { state: cas.state, version: std::mem::take(&mut g.token), complete: cas.complete },
                    );
                }
                Ok((nf + 1, true))
            }
            Some(b"x") => {
                stats.state_conflicts += 1;
                g.stale = Some(cas.state);
                Ok((nf + 1, false))
            }
            _ => Err(EnrichError::Protocol(format!(
                "entity {} {}: no compare-and-set result in the reply",
                g.entity, g.id
            ))),
        };
    }
    let expected = nf + 1 + g.events.len();
    if reply.len() < expected {
        return Err(short(expected));
    }
    let blob = &reply[nf];
    let complete = blob.is_empty();
    let mut state =
        if blob.is_empty() { EntityState::default() } else { EntityState::from_msgpack(blob).map_err(protocol(g))? };
    for ((u, &ev), status) in g.updates.iter().zip(&g.events).zip(&reply[nf + 1..expected]) {
        let seen = state.follow(g.spec, u, status).map_err(protocol(g))?;
        count(stats, seen.applied, seen.late);
        write_seen(&mut out[ev * width + e.first..], &seen.windows, seen.since_last_ms);
    }
    if let Some(states) = states {
        // The script pushed the expiry back by the same rule.
        state.push_expiry(now_ms, g.spec.retention_ms());
        if let Some(old) = &g.stale {
            state.learn_distinct(old);
        }
        states.put(g.key.clone(), CachedState { state, version: std::mem::take(&mut g.token), complete });
    }
    Ok((expected, true))
}

fn protocol<'a>(g: &'a Group<'_>) -> impl Fn(String) -> EnrichError + 'a {
    move |e| EnrichError::Protocol(format!("entity {} {}: {e}", g.entity, g.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> (usize, String) {
        (0, format!("card-{i}"))
    }

    #[test]
    fn the_generational_cache_stays_bounded_and_keeps_what_is_used() {
        let mut c: Generations<usize> = Generations::new(10);
        for i in 0..6 {
            c.put(key(i), i); // the sixth turns the first five into the previous generation
        }
        assert_eq!(c.get(&key(0)), Some(&0), "moved back into the current generation");
        for i in 6..12 {
            c.put(key(i), i);
            assert!(c.current.len() + c.previous.len() <= 10);
        }
        assert_eq!(c.get(&key(0)), Some(&0), "used since the last turnover: kept");
        assert_eq!(c.get(&key(1)), None, "not used for two turnovers: dropped");
        assert_eq!(c.take(&key(11)), Some(11));
        assert_eq!(c.take(&key(11)), None);
    }

    #[test]
    fn cached_features_expire_after_their_ttl() {
        let mut c = FeatureCache { map: Generations::new(100), ttl: Duration::from_millis(50) };
        c.insert(key(1), Arc::new(vec![Some(1.0), None]));
        assert_eq!(c.get(&key(1)).as_deref(), Some(&vec![Some(1.0), None]));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(&key(1)), None);
    }

    #[test]
    fn version_tokens_are_unique_per_writer_and_write() {
        let (mut a, mut b) = (Tokens::new(), Tokens::new());
        let ta: Vec<String> = (0..3).map(|_| a.next()).collect();
        let tb = b.next();
        assert!(ta[0] != ta[1] && ta[1] != ta[2]);
        assert!(!ta.contains(&tb), "another instance's first write is not ours");
    }
}
