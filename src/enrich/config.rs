//! Configuration of the enrich stage: which entities, their windows and online features.

use serde::{Deserialize, Serialize};

/// Where window state and online features live.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// No enrichment: models may only use event fields.
    Off,
    /// In-process state (demo, single instance): not shared, lost on restart.
    Memory,
    /// Redis: partition state checkpointed with its offsets, shared entities read and written per batch.
    Redis,
}

/// What to do while the state store is unreachable.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Stop taking work and retry with backoff; readiness false; nothing is lost.
    Pause,
    /// Score with defaults, mark decisions `degraded=true`, skip window updates.
    Degraded,
}

/// The enrich stage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichConfig {
    /// `off`, `memory` or `redis`.
    pub backend: Backend,
    /// Redis URL for the `redis` backend; with `redis_cluster`, one or more seed nodes of the
    /// cluster, comma-separated.
    pub redis_url: String,
    /// Redis the online features are read from when they live apart from the window state
    /// (a feature store's Redis: Feast's online store, a feature pipeline's); empty:
    /// `redis_url`. Read only (`HMGET`); `[redis]` TLS and credentials and `redis_cluster`
    /// apply to it too. Checkpoint writes then never hold up a feature read. With the
    /// `memory` backend, the one Redis verdict reads (windows in process, features from here).
    pub features_redis_url: String,
    /// `pause` or `degraded`.
    pub on_failure: FailurePolicy,
    /// Prefix of every Redis key verdict writes or reads.
    pub key_prefix: String,
    /// Events older than the entity's newest event by more than this are counted late and not applied.
    pub allowed_lateness_s: u64,
    /// Entries in the online-feature cache in front of Redis (0 disables it).
    pub cache_capacity: u64,
    /// How long a cached feature vector is used before Redis is asked again (ms).
    pub cache_ttl_ms: u64,
    /// Entity window states verdict keeps a copy of (0 disables it). With a copy, verdict
    /// applies a batch's events itself and Redis only checks that the state is unchanged
    /// (compare and set) before storing the result; without one, the script applies them.
    pub state_cache_capacity: u64,
    /// Redis command timeout (ms); past it the batch counts as a Redis failure.
    pub timeout_ms: u64,
    /// Redis Cluster: every Redis connection (windows, features, checkpoints, labels,
    /// `redis_set` lists) is a cluster connection (slot routing, `MOVED`/`ASK`, failover);
    /// one script call per entity and one checkpoint call per partition (one slot each)
    /// instead of one per batch, sent together. README "Scaling out".
    pub redis_cluster: bool,
    /// Event path whose value producers use as the Kafka record key (so one partition sees
    /// every event of that value). Empty: `decode.fields.entity_key`. A partition-owned
    /// entity must be keyed by it (checked at start-up).
    pub record_key: String,
    /// How often each partition's window state is checkpointed to Redis with its offset
    /// (ms; partition-owned entities, `redis` backend). Longer: fewer Redis writes, and more
    /// events decided again after a crash (everything since the last checkpoint).
    pub checkpoint_interval_ms: u64,
    /// A partition's checkpoint is also sealed as soon as this many of its entities have
    /// changed since the last one: it bounds the size of one checkpoint write, and so how
    /// long Redis (single-threaded) is busy with it while other reads wait.
    pub checkpoint_max_entities: u64,
    /// Partition-owned entities kept in process per partition (all partitions together);
    /// past it, entities whose state is already in Redis are dropped from memory and read
    /// again when next seen (`memory` backend: the least recently seen are dropped and
    /// their windows restart; counted in `verdict_window_evictions_total`).
    pub max_entities: u64,
    /// Entities whose windows and features the model can use.
    pub entities: Vec<EntityConfig>,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Memory,
            redis_url: "redis://127.0.0.1:6379/".into(),
            features_redis_url: String::new(),
            on_failure: FailurePolicy::Pause,
            key_prefix: "verdict".into(),
            allowed_lateness_s: 60,
            cache_capacity: 100_000,
            cache_ttl_ms: 1_000,
            state_cache_capacity: 100_000,
            timeout_ms: 1_000,
            redis_cluster: false,
            record_key: String::new(),
            checkpoint_interval_ms: 1_000,
            checkpoint_max_entities: 2_048,
            max_entities: 1_000_000,
            entities: vec![EntityConfig::default()],
        }
    }
}

/// Who owns an entity's window state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Ownership {
    /// Keyed by the input record key, so one partition sees all of the entity's events: the
    /// state lives in process with the partition that owns it and is checkpointed to Redis
    /// with the partition's offset (a replayed event sees what it saw the first time).
    #[default]
    Partition,
    /// Keyed by another field (merchant windows on a topic keyed by card): events of one
    /// entity arrive on many partitions, so every batch reads and writes the state in Redis
    /// (compare and set, replay-fenced per source partition).
    Shared,
}

/// One entity type (card, device, merchant...): its key, windows and online features.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EntityConfig {
    /// Name used in feature names (`window:card.10m.count`, `feature:card.chargebacks_90d`).
    pub name: String,
    /// Dotted event path of the entity id.
    pub key: String,
    /// `partition` (the default: keyed by the record key) or `shared`.
    pub ownership: Ownership,
    /// Bucket width of this entity's windows (s): the default of each window's
    /// `bucket_s`. Window sizes must be multiples of their width.
    pub bucket_s: u64,
    /// Sliding windows in event time.
    pub windows: Vec<WindowConfig>,
    /// Event path summed / averaged / min / max over windows.
    pub value_field: Option<String>,
    /// Event path whose distinct values are counted over windows.
    pub distinct_field: Option<String>,
    /// Online feature names read from the Redis hash `{prefix}:f:{name}:{id}`.
    pub features: Vec<String>,
    /// Features whose `_ts` is older than this (s) count as missing.
    pub max_feature_age_s: u64,
    /// Read the features from a Feast Redis online store instead (`features` are then
    /// `feature_view:feature` names); unset: verdict's own hashes. README "Using Feast".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feast: Option<super::feast::FeastSource>,
    /// A session window (partition-owned entities): activity since the entity's current
    /// session started, a session ending after `gap_s` without events. README "Enrichment: windows and online features".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionConfig>,
}

/// A session window: the entity's events since its session started, where a session ends
/// after `gap_s` of event time without events.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// Inactivity gap (s): an event more than this after the entity's latest one opens a
    /// new session.
    pub gap_s: u64,
    /// Distinct values of the entity's `distinct_field` a session counts at most (the
    /// count stops there; it bounds a session's memory).
    #[serde(default = "default_max_distinct")]
    pub max_distinct: u32,
}

fn default_max_distinct() -> u32 {
    1_000
}

impl Default for EntityConfig {
    fn default() -> Self {
        Self {
            name: "card".into(),
            key: "card_id".into(),
            ownership: Ownership::Partition,
            bucket_s: 60,
            windows: vec![
                WindowConfig::new("10m", 600),
                WindowConfig::new("1h", 3600),
                WindowConfig::new("24h", 86_400),
            ],
            value_field: Some("amount".into()),
            distinct_field: Some("merchant_id".into()),
            features: vec!["chargebacks_90d".into(), "avg_amount_30d".into()],
            max_feature_age_s: 7 * 86_400,
            feast: None,
            session: None,
        }
    }
}

/// A sliding window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Name used in feature names.
    pub name: String,
    /// Length in seconds (a multiple of its bucket width).
    pub size_s: u64,
    /// This window's bucket width (s); unset: the entity's `bucket_s`. Windows of one width
    /// share their buckets; a coarser width holds fewer buckets (a day in 1-hour buckets:
    /// 25 instead of 1,441) and its window covers whole buckets, so it reaches back up to
    /// one width further than `size_s`. Each width must be a multiple of the entity's
    /// finest, and a shared entity's windows must all use the entity's `bucket_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_s: Option<u64>,
    /// The aggregates this window computes and offers (`count`, `sum`, `avg`, `min`, `max`,
    /// `distinct`); unset: all six. A partition-owned entity keeps only what they need: no
    /// distinct values beyond the longest window that counts them, no min/max bookkeeping
    /// where no window reads them. A model or rule that reads one not listed is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregates: Option<Vec<String>>,
}

/// The aggregates a window can compute, in the order their values are laid out.
pub const AGGREGATES: [&str; 6] = ["count", "sum", "avg", "min", "max", "distinct"];

impl WindowConfig {
    /// A window of `size_s` in the entity's bucket width, computing every aggregate.
    pub fn new(name: &str, size_s: u64) -> Self {
        Self { name: name.into(), size_s, bucket_s: None, aggregates: None }
    }

    /// The aggregates computed, as a bit set over [`AGGREGATES`] (bit `i`: `AGGREGATES[i]`);
    /// unknown names are left out (config validation refuses them).
    pub fn aggregate_bits(&self) -> u8 {
        match &self.aggregates {
            None => (1 << AGGREGATES.len()) - 1,
            Some(names) => {
                names.iter().filter_map(|n| AGGREGATES.iter().position(|a| a == n)).fold(0, |bits, i| bits | 1 << i)
            }
        }
    }
}

/// Session values per entity with a session window: events, duration, time since start,
/// distinct values.
pub const SESSION_VALUES: usize = 4;

impl EntityConfig {
    /// Each window's bucket width (s), in window order.
    pub fn widths_s(&self) -> impl Iterator<Item = u64> + '_ {
        self.windows.iter().map(|w| w.bucket_s.unwrap_or(self.bucket_s))
    }

    /// Whether the entity keeps event state (sliding windows or a session window).
    pub fn has_state(&self) -> bool {
        !self.windows.is_empty() || self.session.is_some()
    }

    /// How many values its windows produce: each window's aggregates and `since_last_s` (when
    /// it has any), then its session values; its online features come after them.
    pub fn state_width(&self) -> usize {
        let aggregates: u32 = self.windows.iter().map(|w| w.aggregate_bits().count_ones()).sum();
        let windows = if self.windows.is_empty() { 0 } else { aggregates as usize + 1 };
        windows + if self.session.is_some() { SESSION_VALUES } else { 0 }
    }
}

impl EnrichConfig {
    /// The event path producers key records by: `record_key`, else `entity_key`
    /// (`decode.fields.entity_key`).
    pub fn record_key_path<'a>(&'a self, entity_key: &'a str) -> &'a str {
        if self.record_key.is_empty() {
            entity_key
        } else {
            &self.record_key
        }
    }

    /// Whether online features are read from their own Redis (`features_redis_url` set to
    /// another URL than `redis_url`, or set with the windows in process).
    pub fn features_apart(&self) -> bool {
        !self.features_redis_url.is_empty()
            && (self.backend == Backend::Memory || self.features_redis_url != self.redis_url)
    }

    /// The config of the online-feature reader: a Redis backend whose `redis_url` is the
    /// features' Redis.
    pub fn for_features(&self) -> Self {
        let mut cfg = self.clone();
        if self.features_apart() {
            cfg.redis_url = self.features_redis_url.clone();
            cfg.backend = Backend::Redis;
        }
        cfg
    }

    /// Whether the workers read online features (from `redis_url`, or `features_redis_url`).
    pub fn reads_features(&self) -> bool {
        self.backend == Backend::Redis || (self.backend == Backend::Memory && self.features_apart())
    }

    /// Partition-owned entities with windows must be keyed by the record key's source
    /// (`entity_key`: `decode.fields.entity_key`); every problem, naming the keys.
    pub fn validate_ownership(&self, entity_key: &str) -> Vec<String> {
        let record_key = self.record_key_path(entity_key);
        let source = if self.record_key.is_empty() { "decode.fields.entity_key" } else { "enrich.record_key" };
        self.entities
            .iter()
            .enumerate()
            .filter(|(_, ent)| ent.ownership == Ownership::Partition && ent.has_state() && ent.key != record_key)
            .map(|(i, ent)| {
                format!(
                    "enrich.entities[{i}].ownership: '{}' is partition-owned, so its key ('{}') must be the field the \
                     input records are keyed by ({source} = '{record_key}'); set ownership = \"shared\" for an \
                     entity keyed by another field, or enrich.record_key if the records are keyed by '{}'",
                    ent.name, ent.key, ent.key
                )
            })
            .collect()
    }

    /// Whether any entity keeps partition-owned windows.
    pub fn has_owned_windows(&self) -> bool {
        self.backend != Backend::Off
            && self.entities.iter().any(|e| e.ownership == Ownership::Partition && e.has_state())
    }

    /// Whether any entity keeps shared windows.
    pub fn has_shared_windows(&self) -> bool {
        self.backend != Backend::Off
            && self.entities.iter().any(|e| e.ownership == Ownership::Shared && !e.windows.is_empty())
    }

    /// Every problem, with its path.
    pub fn validate(&self) -> Vec<String> {
        let mut e = Vec::new();
        if self.backend == Backend::Redis && !self.redis_url.starts_with("redis") {
            e.push(format!("enrich.redis_url: '{}' is not a redis:// URL", crate::redact::redis_url(&self.redis_url)));
        }
        if !self.features_redis_url.is_empty() {
            let shown = crate::redact::redis_url(&self.features_redis_url);
            if self.backend == Backend::Off {
                e.push(format!(
                    "enrich.features_redis_url: '{shown}' is set, but backend = \"off\" reads no online features"
                ));
            } else if !self.features_redis_url.starts_with("redis") {
                e.push(format!("enrich.features_redis_url: '{shown}' is not a redis:// URL"));
            }
        }
        if self.timeout_ms == 0 {
            e.push("enrich.timeout_ms: must be > 0".into());
        }
        if self.max_entities == 0 {
            e.push("enrich.max_entities: must be > 0".into());
        }
        if self.checkpoint_max_entities == 0 {
            e.push("enrich.checkpoint_max_entities: must be > 0".into());
        }
        for (i, ent) in self.entities.iter().enumerate() {
            let p = format!("enrich.entities[{i}]");
            if ent.name.is_empty() || ent.name.contains(['.', ':', '{', '}']) {
                e.push(format!("{p}.name: must be non-empty without '.', ':', '{{', '}}'"));
            }
            if ent.key.is_empty() {
                e.push(format!("{p}.key: must not be empty"));
            }
            if ent.bucket_s == 0 {
                e.push(format!("{p}.bucket_s: must be > 0"));
            }
            let finest = ent.widths_s().filter(|&w| w > 0).min().unwrap_or(0);
            for (j, (w, width)) in ent.windows.iter().zip(ent.widths_s()).enumerate() {
                if w.bucket_s == Some(0) {
                    e.push(format!("{p}.windows[{j}].bucket_s: must be > 0"));
                } else if width > 0 && finest > 0 && width % finest != 0 {
                    e.push(format!(
                        "{p}.windows[{j}].bucket_s: {width} is not a multiple of the entity's finest width ({finest} s)"
                    ));
                }
                if w.bucket_s.is_some_and(|b| b != ent.bucket_s) && ent.ownership == Ownership::Shared {
                    e.push(format!(
                        "{p}.windows[{j}].bucket_s: a shared entity's windows all use the entity's bucket_s ({}); \
                         per-window widths are for partition-owned entities",
                        ent.bucket_s
                    ));
                }
                if let Some(names) = &w.aggregates {
                    let unknown: Vec<&str> =
                        names.iter().filter(|n| !AGGREGATES.contains(&n.as_str())).map(String::as_str).collect();
                    if !unknown.is_empty() {
                        e.push(format!(
                            "{p}.windows[{j}].aggregates: unknown {} (one of {})",
                            unknown.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", "),
                            AGGREGATES.join(", ")
                        ));
                    } else if names.is_empty() {
                        e.push(format!("{p}.windows[{j}].aggregates: lists none (leave it out for all six)"));
                    } else if names.iter().enumerate().any(|(k, n)| names[..k].contains(n)) {
                        e.push(format!("{p}.windows[{j}].aggregates: lists one twice"));
                    }
                }
                if w.size_s == 0 || (width > 0 && w.size_s % width != 0) {
                    let of = if w.bucket_s.is_some() { "the window's bucket_s" } else { "bucket_s" };
                    e.push(format!("{p}.windows[{j}].size_s: must be a positive multiple of {of} ({width})"));
                }
            }
            if let Some(session) = &ent.session {
                if session.gap_s == 0 {
                    e.push(format!("{p}.session.gap_s: must be > 0"));
                }
                if session.max_distinct == 0 {
                    e.push(format!("{p}.session.max_distinct: must be > 0"));
                }
                if ent.ownership == Ownership::Shared {
                    e.push(format!(
                        "{p}.session: session windows are for partition-owned entities (one partition sees \
                         all of the entity's events, in order); '{}' is shared",
                        ent.name
                    ));
                }
            }
            if let Some(feast) = &ent.feast {
                e.extend(feast.validate(&p, &ent.key, &ent.features));
            }
            if self.entities[..i].iter().any(|o| o.name == ent.name) {
                e.push(format!("{p}.name: '{}' is used twice", ent.name));
            }
        }
        e
    }
}
