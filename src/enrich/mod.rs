//! Enrich stage: per-entity sliding-window aggregates and online features.
//!
//! The public face is [`Enricher`]. For a batch it groups events by entity (in event
//! order), and reads-then-applies each group's window updates and reads its online
//! features in **one round trip per batch** (Redis) or in process (memory backend).
//! Every value it produces has a name the model manifest can use as a column `source`:
//!
//! * `window:{entity}.{window}.{count|sum|avg|min|max|distinct}` — before the event;
//! * `window:{entity}.since_last_s` — seconds since the entity's previous event;
//! * `session:{entity}.{events|duration_s|since_start_s|distinct}` — its current session
//!   before the event (entities with a session window, `window/session.rs`);
//! * `feature:{entity}.{name}` — online feature from Redis (missing or stale → the column's
//!   missing policy, recorded in the decision's `defaults_used`).
//!
//! Takes each event's [`EntityInput`]s (from the decoder, via [`crate::core::event`]); hands on
//! one value per name, per event, which the worker writes into the row's enriched columns.
//!
//! Files: `plan.rs` (groups, compare-and-set planning), `reply.rs` (the script reply
//! protocol), `cache.rs` (state copies, feature cache, version tokens), [`redis`] (the
//! store), [`breaker`] (calls refused at once while Redis is down), [`feast`] (features read
//! from a Feast online store's layout), [`window`] (window state), [`turnstile`] (one batch
//! at a time), [`config`].

pub mod breaker;
mod cache;
pub mod config;
pub mod feast;
mod hashes;
pub mod owned;
mod plan;
pub mod redis;
mod reply;
pub mod setup;
pub mod stage;
pub mod turnstile;
pub mod window;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

pub use config::{Backend, EnrichConfig, EntityConfig, FailurePolicy, Ownership};
pub use plan::{CompareAndSet, Group};
pub use setup::EnrichSetup;
pub use turnstile::Turnstile;
pub use window::{EntityState, Update, WindowSpec};

use cache::{EntityKey, FeatureCache, SharedFeatureCache, StateCache, Tokens};
use plan::{compare_and_set, group, knows_values};
use reply::{count, write_cached, write_seen, write_session, ReplyReader};

pub use crate::core::event::{EntityInput, EntityPaths};
use crate::core::field::FieldPath;
use crate::core::redis::RedisConfig;
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
    /// The store answered something unexpected, or refused this batch's data (a key of the
    /// wrong type, a script error): the same batch would fail again, so it is not retried.
    #[error("state store reply: {0}")]
    Protocol(String),
}

impl StageError for EnrichError {
    fn policy(&self) -> Policy {
        match self {
            EnrichError::Config(_) => Policy::Fatal,
            EnrichError::Unavailable(_) => Policy::Retry,
            // Retrying cannot help: the batch's events go to the dead-letter topic with the
            // reply in the detail, and the pipeline goes on (it used to retry for ever).
            EnrichError::Protocol(_) => Policy::DeadLetter,
        }
    }
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

struct Entity {
    cfg: EntityConfig,
    spec: WindowSpec,
    /// Index of this entity's first output value.
    first: usize,
    /// Its features' reader when they live in a Feast online store.
    feast: Option<feast::FeastReader>,
    /// The fields of its feature hash read without the script: its features, then `_ts`.
    hash_fields: Vec<Vec<u8>>,
}

/// Which entities an [`Enricher`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Every entity, windows and features, through the store (tools and tests).
    All,
    /// Only the online features of entities whose windows are partition-owned (or that
    /// have none): read per batch, in parallel with other batches.
    Features,
    /// Only the shared entities, windows and features (one batch at a time).
    Shared,
}

impl Part {
    /// Whether `e` is served, and whether its windows are. With the features in their own
    /// Redis (`features_apart`), the feature readers serve every entity's features and the
    /// shared windows' script reads none.
    fn serves(self, e: &EntityConfig, features_apart: bool) -> (bool, bool) {
        let shared = e.ownership == Ownership::Shared && !e.windows.is_empty();
        match self {
            Part::All => (true, true),
            Part::Features => ((!shared || features_apart) && !e.features.is_empty(), false),
            Part::Shared => (shared, true),
        }
    }
}

enum Store {
    Off,
    Memory(moka::sync::Cache<EntityKey, Arc<Mutex<EntityState>>>),
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
    cache: Option<SharedFeatureCache>,
    states: Option<StateCache>,
    tokens: Tokens,
    per_group: bool,
    missing: redis::MissingHashes,
    part: Part,
    /// Online features live in their own Redis (`enrich.features_redis_url`).
    features_apart: bool,
    /// Redis key prefix (`enrich.key_prefix`).
    key_prefix: String,
}

/// A session window's values, in output order (`reply::write_session`).
const SESSION_AGGS: [&str; config::SESSION_VALUES] = ["events", "duration_s", "since_start_s", "distinct"];

impl Enricher {
    /// Builds the enricher and connects to its store by its URL alone, without `[redis]`
    /// security settings (tests, tools); the service uses [`Enricher::connect`].
    pub fn new(cfg: &EnrichConfig) -> Result<Self, EnrichError> {
        Self::connect(cfg, &RedisConfig::default())
    }

    /// Builds the enricher and connects to its store with `redis`' TLS and credentials.
    pub fn connect(cfg: &EnrichConfig, redis: &RedisConfig) -> Result<Self, EnrichError> {
        Self::open(cfg, redis, false)
    }

    /// A worker's online-feature reader ([`Part::Features`]): connected to the features'
    /// Redis (`enrich.features_redis_url`, else `enrich.redis_url`), for `HMGET`s only
    /// when that is a Redis of its own.
    pub fn connect_features(cfg: &EnrichConfig, redis: &RedisConfig) -> Result<Self, EnrichError> {
        let reader = if cfg.features_apart() {
            let mut e = Self::open(&cfg.for_features(), redis, true)?;
            e.features_apart = true;
            e
        } else {
            Self::open(cfg, redis, false)?
        };
        Ok(reader.for_part(Part::Features))
    }

    fn open(cfg: &EnrichConfig, redis: &RedisConfig, features_only: bool) -> Result<Self, EnrichError> {
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
                let bits = w.aggregate_bits();
                let offered = config::AGGREGATES.iter().enumerate().filter(|&(i, _)| bits & 1 << i != 0);
                for a in offered.map(|(_, a)| a) {
                    names.push(format!("window:{}.{}.{a}", e.name, w.name));
                }
            }
            if !e.windows.is_empty() {
                names.push(format!("window:{}.since_last_s", e.name));
            }
            if e.session.is_some() {
                for a in SESSION_AGGS {
                    names.push(format!("session:{}.{a}", e.name));
                }
            }
            for f in &e.features {
                names.push(format!("feature:{}.{f}", e.name));
            }
            if !e.features.is_empty() {
                // Seconds since the entity's features were written (`_ts`), as read.
                names.push(format!("feature:{}.age_s", e.name));
            }
            let spec = WindowSpec::of_entity(e, cfg.allowed_lateness_s);
            let feast = e.feast.as_ref().map(|f| feast::FeastReader::new(f, &e.features, e.max_feature_age_s));
            let hash_fields = hashes::fields(&e.features);
            entities.push(Entity { cfg: e.clone(), spec, first, feast, hash_fields });
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
            Backend::Redis => {
                let key = if features_only { "enrich.features_redis_url" } else { "enrich.redis_url" };
                Store::Redis(Box::new(redis::RedisStore::connect(
                    (key, &cfg.redis_url),
                    redis,
                    &cfg.key_prefix,
                    Duration::from_millis(cfg.timeout_ms),
                    (cfg.redis_cluster, features_only),
                )?))
            }
        };
        let cache = (cfg.backend == Backend::Redis && cfg.cache_capacity > 0)
            .then(|| FeatureCache::shared(cfg.cache_capacity, cfg.cache_ttl_ms));
        let states = (cfg.backend == Backend::Redis && cfg.state_cache_capacity > 0)
            .then(|| StateCache::new(cfg.state_cache_capacity));
        let mut missing = redis::MissingHashes::new(
            &cfg.key_prefix,
            entities.iter().map(|e| (e.cfg.name.as_str(), &e.cfg.features[..])),
        );
        for (i, e) in entities.iter().enumerate() {
            if let Some(f) = &e.cfg.feast {
                missing.in_feast(i, &f.project);
            }
        }
        Ok(Self {
            entities,
            names,
            store,
            cache,
            states,
            tokens: Tokens::new(),
            per_group: cfg.redis_cluster,
            missing,
            part: Part::All,
            features_apart: cfg.features_apart(),
            key_prefix: cfg.key_prefix.clone(),
        })
    }

    /// Uses `cache` instead of its own online-feature cache (if it has one). The pipeline gives
    /// every worker's reader the same one, so `cache_capacity` bounds them all together and a
    /// value one worker read serves the others' batches.
    pub(in crate::enrich) fn with_feature_cache(mut self, cache: Option<SharedFeatureCache>) -> Self {
        if self.cache.is_some() {
            self.cache = cache;
        }
        self
    }

    /// Shares `breaker` (the pipeline's view of its Redis) with this enricher's connection.
    pub fn with_breaker(mut self, breaker: &Arc<breaker::Breaker>) -> Self {
        if let Store::Redis(s) = &mut self.store {
            s.share_breaker(breaker.clone());
        }
        self
    }

    /// Serves only `part` of the entities.
    pub fn for_part(mut self, part: Part) -> Self {
        self.part = part;
        self
    }

    /// Whether this enricher has anything to do for its part.
    pub fn serves_any(&self) -> bool {
        self.entities.iter().any(|e| self.part.serves(&e.cfg, self.features_apart).0)
    }

    /// The entities whose windows are partition-owned, with where their values go.
    pub fn owned_entities(&self) -> Vec<owned::OwnedEntity> {
        self.entities
            .iter()
            .enumerate()
            .filter(|(_, e)| e.cfg.ownership == Ownership::Partition && e.cfg.has_state())
            .map(|(index, e)| owned::OwnedEntity {
                index,
                name: e.cfg.name.clone(),
                spec: e.spec.clone(),
                first: e.first,
            })
            .collect()
    }

    /// Leaves the ids of the entities whose key field is `redacted` (by `publish.redact`)
    /// out of the log: the missing-feature warning then shows the Redis key without the id.
    pub fn hide_ids(mut self, redacted: impl Fn(&str) -> bool) -> Self {
        for (i, e) in self.entities.iter().enumerate() {
            if redacted(&e.cfg.key) {
                self.missing.hide(i);
            }
        }
        self
    }

    /// The key paths of the entities whose ids [`Enricher::hide_ids`] left out of the log.
    pub fn hidden_ids(&self) -> Vec<String> {
        let hidden = self.entities.iter().enumerate().filter(|(i, _)| self.missing.is_hidden(*i));
        hidden.map(|(_, e)| e.cfg.key.clone()).collect()
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
                more_keys: e
                    .cfg
                    .feast
                    .iter()
                    .flat_map(|f| f.fields(&e.cfg.key).skip(1))
                    .map(FieldPath::parse)
                    .collect(),
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
        out.clear();
        out.resize(reqs.len() * self.names.len(), None);
        self.enrich_into(reqs, out)
    }

    /// Enriches a batch into `out`, already `names().len()` values per request: only the
    /// values of this enricher's part are written.
    pub fn enrich_into(&mut self, reqs: &[Request<'_>], out: &mut [Option<f64>]) -> Result<BatchStats, EnrichError> {
        let width = self.names.len();
        let mut stats = BatchStats::default();
        if self.entities.is_empty() || reqs.is_empty() {
            return Ok(stats);
        }
        let (part, apart) = (self.part, self.features_apart);
        let mut groups = group(&self.entities, reqs);
        groups.retain_mut(|g| {
            let (served, windows) = part.serves(&self.entities[g.entity_idx].cfg, apart);
            g.windows &= windows;
            if part == Part::Shared && apart {
                // The feature readers read them from the features' Redis.
                g.features = &[];
            }
            served && (g.windows || !g.features.is_empty())
        });
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
                        write_seen(&mut out[ev * width + e.first..], &e.spec, &seen.windows, seen.since_last_ms);
                        if e.cfg.session.is_some() {
                            let at = ev * width + e.first + e.cfg.state_width() - config::SESSION_VALUES;
                            write_session(&mut out[at..], &seen.session);
                        }
                    }
                }
            }
            Store::Redis(store) => {
                let mut groups = groups;
                if let Some(cache) = &self.cache {
                    let mut cache = cache.lock();
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
                // Feast-layout features, and those of entities without windows in Redis: an
                // HMGET each, in the same pipeline as the script.
                let reads = feast::take_reads(&self.entities, &mut groups);
                let plain = hashes::take_reads(&self.key_prefix, &mut groups);
                // A group with nothing left to ask Redis is served from the cache alone.
                let (ask, local): (Vec<_>, Vec<_>) =
                    groups.into_iter().partition(|g| g.windows || !g.features.is_empty());
                for g in &local {
                    write_cached(g, &self.entities[g.entity_idx], width, out);
                }
                if !ask.is_empty() || !reads.is_empty() || !plain.is_empty() {
                    let now = crate::core::clock::wall_clock_ms();
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
                    let mut hmgets = feast::commands(&self.entities, &reads);
                    let n_feast = hmgets.len();
                    hmgets.extend(hashes::commands(&self.entities, &plain));
                    let (reply, replies) = store.run(&ask, now, self.per_group, &hmgets)?;
                    stats.round_trips = 1;
                    stats.commands = if ask.is_empty() { 0 } else { calls(&ask) } + hmgets.len() as u64;
                    self.missing.clear();
                    if replies.len() != hmgets.len() {
                        let n = hmgets.len();
                        return Err(EnrichError::Protocol(format!("{} HMGET replies, {n} expected", replies.len())));
                    }
                    let (feast_replies, plain_replies) = replies.split_at(n_feast);
                    let mut again = {
                        // The cache is shared by the workers' readers: locked once for the batch's values.
                        let mut cache = self.cache.as_ref().map(|c| c.lock());
                        let mut sink = hashes::Sink {
                            width,
                            out: &mut *out,
                            cache: cache.as_deref_mut(),
                            missing: &mut self.missing,
                        };
                        feast::write(&self.entities, reads, feast_replies, now, &mut sink);
                        hashes::write(&self.entities, plain, plain_replies, now, &mut sink);
                        let mut read = ReplyReader {
                            entities: &self.entities,
                            now,
                            width,
                            cache: cache.as_deref_mut(),
                            states: self.states.as_mut(),
                            tokens: &mut self.tokens,
                            missing: &mut self.missing,
                        };
                        let again = read.reply(&mut ask, &reply, out, &mut stats)?;
                        read.missing.report();
                        again
                    };
                    // Copies Redis no longer matched (another instance wrote meanwhile): a
                    // second round trip has the script apply those groups' events (their
                    // features were read in the first: `Group::retry`, so no cache here).
                    if !again.is_empty() {
                        let (reply, _) = store.run(&again, now, self.per_group, &[])?;
                        stats.round_trips += 1;
                        stats.commands += calls(&again);
                        let mut read = ReplyReader {
                            entities: &self.entities,
                            now,
                            width,
                            cache: None,
                            states: self.states.as_mut(),
                            tokens: &mut self.tokens,
                            missing: &mut self.missing,
                        };
                        read.reply(&mut again, &reply, out, &mut stats)?;
                    }
                }
            }
        }
        Ok(stats)
    }
}
