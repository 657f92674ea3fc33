//! Redis state store: one pipelined round trip per batch carrying one `EVALSHA` for the
//! whole batch, or one per entity with `redis_cluster` (window updates + feature reads,
//! atomically; an entity's keys share one cluster slot).
//!
//! Key layout (the entity id is the hash tag):
//! * `{prefix}:win:{entity}:{id}` — window hash: field `s` = state (msgpack: buckets, fences,
//!   newest), field `d:{value}` = start of the distinct value's latest bucket; TTL = longest
//!   window + lateness;
//! * `{prefix}:f:{entity}:{id}` — online features: a hash of `name → number` plus `_ts`
//!   (ms since epoch of the last update), written by the feature pipeline, read here. The
//!   braces are part of the key. A read that finds no hash (or one without `_ts`) is counted
//!   per entity and told in a rate-limited warning naming the key ([`MissingHashes`]): a
//!   hash written under another key is otherwise invisible, every feature its default.

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use tracing::Level;

use super::breaker::Breaker;
use super::{EnrichError, Group};
use crate::core::redis::{AsyncConnection, RedisConfig};
use crate::lograte::LogRate;
pub use crate::redact::redis_error;
use crate::telemetry::Metrics;

/// How often the missing-hash warning repeats per entity type (with a count in between).
const MISSING_WINDOW: Duration = Duration::from_secs(600);

/// The window script, loaded once per connection (re-loaded on `NOSCRIPT`).
pub const WINDOW_SCRIPT: &str = include_str!("window.lua");

/// Connection and script of the Redis backend.
pub struct RedisStore {
    rt: Arc<tokio::runtime::Runtime>,
    conn: AsyncConnection,
    /// Kept to connect afresh when a cluster's slot map went stale.
    client: crate::core::redis::Client,
    sha: String,
    prefix: String,
    timeout: Duration,
    /// Shared with the pipeline's other connections to this Redis ([`RedisStore::share_breaker`]).
    breaker: Arc<Breaker>,
}

/// What [`RedisStore::run`] returns: the script replies, then one reply per `HMGET`.
pub type ScriptAndHashes = (Vec<Vec<u8>>, Vec<Vec<Vec<u8>>>);

/// Window hash of an entity: state in field `s`, distinct values in fields `d:{value}`.
pub fn window_key(prefix: &str, entity: &str, id: &str) -> String {
    format!("{prefix}:win:{entity}:{{{id}}}")
}

/// Online-feature key of an entity.
pub fn feature_key(prefix: &str, entity: &str, id: &str) -> String {
    format!("{prefix}:f:{entity}:{{{id}}}")
}

impl RedisStore {
    /// Connects (reconnecting by itself; TLS and credentials from `security`; to the Redis
    /// Cluster whose seed nodes `url` lists with `cluster`) and loads the script, unless
    /// the connection only reads online features (`reads_only`: a feature store's Redis,
    /// whose ACL need not allow scripts). `key` names the URL's setting in messages.
    pub fn connect(
        (key, url): (&'static str, &str),
        security: &RedisConfig,
        prefix: &str,
        timeout: Duration,
        (cluster, reads_only): (bool, bool),
    ) -> Result<Self, EnrichError> {
        let rt = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| EnrichError::Config(format!("redis runtime: {e}")))?,
        );
        // The URL may carry a password: only its redacted form goes into messages.
        let shown = crate::redact::redis_url(url);
        let client = crate::core::redis::Client::new(key, url, security, cluster)
            .map_err(|e| EnrichError::Config(e.to_string()))?;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = rt
            .block_on(async { tokio::time::timeout(timeout * 3, client.connect_async(cfg, timeout)).await })
            .map_err(|_| EnrichError::Unavailable(format!("connecting to {shown}: timed out")))?
            .map_err(|e| EnrichError::Unavailable(format!("connecting to {shown}: {}", redis_error(&e))))?;
        let mut store =
            Self { rt, conn, client, sha: String::new(), prefix: prefix.to_string(), timeout, breaker: Arc::default() };
        if !reads_only {
            store.sha = store.load_script()?;
        }
        Ok(store)
    }

    fn load_script(&self) -> Result<String, EnrichError> {
        let mut conn = self.conn.clone();
        self.rt
            .block_on(async {
                // On a cluster: loaded on every primary.
                redis::cmd("SCRIPT").arg("LOAD").arg(WINDOW_SCRIPT).query_async::<String>(&mut conn).await
            })
            .map_err(|e| EnrichError::Unavailable(format!("SCRIPT LOAD: {}", redis_error(&e))))
    }

    /// Runs the groups' script calls in one pipelined round trip — one call per group
    /// (`per_group`, Redis Cluster: one slot per call) or one call for the whole batch —
    /// with the `hmgets` (key, fields) of Feast-layout features after them, and returns the
    /// script replies concatenated in group order (bytes: window states are msgpack) and
    /// one reply per `HMGET` (a field Redis does not have: empty).
    /// While the breaker is open, fails at once.
    pub fn run(
        &mut self,
        groups: &[Group<'_>],
        now_ms: i64,
        per_group: bool,
        hmgets: &[(&[u8], &[Vec<u8>])],
    ) -> Result<ScriptAndHashes, EnrichError> {
        self.breaker.check()?;
        let result = self.run_unchecked(groups, now_ms, per_group, hmgets);
        self.breaker.record(&result);
        result
    }

    /// Shares `breaker` (the pipeline's view of this Redis) instead of this store's own.
    pub fn share_breaker(&mut self, breaker: Arc<Breaker>) {
        self.breaker = breaker;
    }

    fn run_unchecked(
        &mut self,
        groups: &[Group<'_>],
        now_ms: i64,
        per_group: bool,
        hmgets: &[(&[u8], &[Vec<u8>])],
    ) -> Result<ScriptAndHashes, EnrichError> {
        let mut pipe = redis::pipe();
        let chunks: Vec<&[Group<'_>]> = match (per_group, groups.is_empty()) {
            (_, true) => Vec::new(),
            (true, false) => groups.chunks(1).collect(),
            (false, false) => vec![groups],
        };
        for chunk in &chunks {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(&self.sha).arg(2 * chunk.len());
            for g in chunk.iter() {
                cmd.arg(window_key(&self.prefix, g.entity, g.id)).arg(feature_key(&self.prefix, g.entity, g.id));
            }
            // Entity types once per call; each group names its type.
            let mut types: Vec<&Group<'_>> = Vec::new();
            for g in chunk.iter() {
                if !types.iter().any(|t| t.entity_idx() == g.entity_idx()) {
                    types.push(g);
                }
            }
            cmd.arg(now_ms).arg(types.len());
            for t in &types {
                push_type(&mut cmd, t);
            }
            cmd.arg(chunk.len());
            for g in chunk.iter() {
                let ty = types.iter().position(|t| t.entity_idx() == g.entity_idx()).expect("listed") + 1;
                cmd.arg(ty).arg(if g.features.is_empty() { "0" } else { "1" });
                push_group(&mut cmd, g);
            }
            pipe.add_command(cmd);
        }
        for (key, fields) in hmgets {
            pipe.cmd("HMGET").arg(*key).arg(*fields);
        }
        // Each command's error comes back in its place: a feature key holding another type
        // (written by hand) is no hash, as the script's `pcall` reads it, not a failed batch.
        pipe.ignore_errors();
        let (mut reloaded, mut resent) = (false, false);
        loop {
            let mut conn = self.conn.clone();
            let timeout = self.timeout;
            let reply = self.rt.block_on(async {
                tokio::time::timeout(timeout, conn.query_pipe::<Vec<redis::RedisResult<Vec<Vec<u8>>>>>(&pipe)).await
            });
            match reply.map(|r| r.and_then(|r| split_replies(r, chunks.len()))) {
                Ok(Ok(replies)) => return Ok(replies),
                Ok(Err(e)) if e.code() == Some("NOSCRIPT") && !reloaded => {
                    reloaded = true;
                    // Redis restarted or flushed its script cache, or a replica was promoted
                    // (scripts are not replicated): load it again (its SHA1 depends only on
                    // its text, so the pipeline is re-sent unchanged; on a cluster the calls
                    // that did run are re-sent too, which their replay fences make harmless).
                    self.sha = self.load_script()?;
                }
                // A connection Redis closed while it sat idle (a restart, a proxy's idle
                // timeout) is not an outage: the connection manager reconnects and the
                // pipeline is sent once more (reads, and script calls behind replay fences).
                Ok(Err(e)) if !resent && e.is_connection_dropped() && !e.is_timeout() => resent = true,
                Ok(Err(e)) => {
                    if crate::core::redis::is_cluster_error(&e) {
                        self.reconnect();
                    }
                    return Err(classify(&e));
                }
                Err(_) => return Err(EnrichError::Unavailable(format!("no reply within {timeout:?}"))),
            }
        }
    }
}

/// The script replies (concatenated) and the `HMGET` replies of one pipeline: a script's
/// error is the batch's; an `HMGET` on a key of another type reads as no hash.
fn split_replies(r: Vec<redis::RedisResult<Vec<Vec<u8>>>>, scripts: usize) -> redis::RedisResult<ScriptAndHashes> {
    let mut script = Vec::new();
    let mut hashes = Vec::with_capacity(r.len().saturating_sub(scripts));
    for (i, reply) in r.into_iter().enumerate() {
        match reply {
            Ok(v) if i < scripts => script.extend(v),
            Ok(v) => hashes.push(v),
            Err(e) if i >= scripts && e.code() == Some("WRONGTYPE") => hashes.push(Vec::new()),
            Err(e) => return Err(e),
        }
    }
    Ok((script, hashes))
}

impl RedisStore {
    /// A cluster redirect that outlived the client library's retries (a failover still
    /// settling): connects afresh, so the next try starts from the cluster's current slot map.
    /// Kept as is when that fails (the next batch tries again).
    fn reconnect(&mut self) {
        let cfg = redis::aio::ConnectionManagerConfig::new();
        let timeout = self.timeout;
        let client = self.client.clone();
        if let Ok(Ok(conn)) =
            self.rt.block_on(async { tokio::time::timeout(timeout * 3, client.connect_async(cfg, timeout)).await })
        {
            self.conn = conn;
        }
    }
}

/// A Redis error as the enrich stage treats it: the server or the connection failing
/// (unreachable, timed out, loading, busy, out of memory, read-only replica, cluster down,
/// credentials refused: an operator or time fixes it) is `Unavailable` and retried; a reply
/// about this batch's data (a key holding another type, the script failing on a stored
/// value) or one verdict cannot parse is `Protocol`: retrying the batch would fail the same way.
pub fn classify(e: &redis::RedisError) -> EnrichError {
    let text = redis_error(e);
    let script_failed = text.to_ascii_lowercase().contains("user_script");
    // A pipeline's errors come as a list, one per failed command; a plain error has one code.
    let codes: Vec<String> = match e.clone().into_server_errors() {
        Some(items) => items.iter().map(|(_, s)| s.code().to_string()).collect(),
        None => e.code().map(str::to_string).into_iter().collect(),
    };
    let data = codes.iter().any(|c| c == "WRONGTYPE" || (c == "ERR" && script_failed))
        || matches!(e.kind(), redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType);
    if data {
        EnrichError::Protocol(text)
    } else {
        EnrichError::Unavailable(text)
    }
}

/// Online-feature reads that found no hash, per entity type: counted in
/// `verdict_feature_hash_missing_total{entity}` and told in a warning naming the exact key
/// read, once per entity type every ten minutes (`verdict_log_suppressed_total` counts the
/// rest). Gathered per batch: one counter update and at most one log call per entity type.
pub struct MissingHashes {
    prefix: String,
    /// Per entity type: its name, first feature, warning kind and counter.
    entities: Vec<(String, String, String, Option<IntCounter>)>,
    /// Per entity type, in the current batch: reads that found no hash, and the first
    /// such entity's id.
    batch: Vec<(u64, String)>,
    log: LogRate,
    /// Per entity type: its ids are redacted from the outputs (`publish.redact`), so the
    /// warning shows the key without the id.
    hidden: Vec<bool>,
    /// Per entity type: the Feast project its features are read from (README "Using Feast").
    feast: Vec<Option<String>>,
}

impl MissingHashes {
    /// For entity types `(name, feature names)` under key prefix `prefix`.
    pub fn new<'a>(prefix: &str, entities: impl Iterator<Item = (&'a str, &'a [String])>) -> Self {
        let entities: Vec<_> = entities
            .map(|(name, features)| {
                let first = features.first().cloned().unwrap_or_default();
                (name.to_string(), first, format!("no online-feature hash for entity {name}"), None)
            })
            .collect();
        let batch = vec![(0, String::new()); entities.len()];
        let hidden = vec![false; entities.len()];
        let feast = vec![None; entities.len()];
        let log = LogRate::new("enrich", MISSING_WINDOW, None);
        Self { prefix: prefix.to_string(), entities, batch, log, hidden, feast }
    }

    /// Entity type `index` reads its features from Feast project `project`: the warning
    /// names that store instead of verdict's key.
    pub fn in_feast(&mut self, index: usize, project: &str) {
        if let Some(f) = self.feast.get_mut(index) {
            *f = Some(project.to_string());
        }
    }

    /// The ids of entity type `index` are redacted: warnings leave them out of the key.
    pub fn hide(&mut self, index: usize) {
        if let Some(h) = self.hidden.get_mut(index) {
            *h = true;
        }
    }

    /// Whether [`MissingHashes::hide`] was called for entity type `index`.
    pub fn is_hidden(&self, index: usize) -> bool {
        self.hidden.get(index).copied().unwrap_or(false)
    }

    /// Counts into `metrics` from now on.
    pub fn count_in(&mut self, metrics: &Metrics) {
        for (name, _, _, counter) in &mut self.entities {
            *counter = Some(metrics.guards.feature_hash_missing.with_label_values(&[name.as_str()]));
        }
        self.log.count_in(metrics);
    }

    /// Notes that entity `id` of entity type `entity` has no hash (the batch's first such id
    /// is kept for the warning).
    pub fn note(&mut self, entity: usize, id: &str) {
        let b = &mut self.batch[entity];
        if b.0 == 0 {
            b.1.clear();
            b.1.push_str(id);
        }
        b.0 += 1;
    }

    /// Counts and tells the batch's missing hashes, and starts the next batch.
    pub fn report(&mut self) {
        for (i, b) in self.batch.iter_mut().enumerate() {
            let n = std::mem::take(&mut b.0);
            if n == 0 {
                continue;
            }
            let (entity, feature, kind, counter) = &self.entities[i];
            if let Some(c) = counter {
                c.inc_by(n);
            }
            if let Some(project) = &self.feast[i] {
                if self.log.admit(Level::WARN, kind) {
                    tracing::warn!(
                        entity = %entity,
                        project = %project,
                        missing = n,
                        "no row in the Feast online store (project {project}) for {n} {entity} entities of the batch \
                         (not materialized, or written with other join keys, types or serialization version); \
                         features take their defaults"
                    );
                }
                continue;
            }
            if self.log.admit(Level::WARN, kind) {
                let id = if self.hidden[i] { "<redacted>" } else { b.1.as_str() };
                let key = feature_key(&self.prefix, entity, id);
                tracing::warn!(
                    entity = %entity,
                    %key,
                    missing = n,
                    "no online-feature hash at {key} (write it with HSET {key} {feature} <value> ... _ts <ms since \
                     epoch>; the braces are part of the key); features take their defaults"
                );
            }
        }
    }

    /// Forgets a batch that failed half-way.
    pub fn clear(&mut self) {
        self.batch.iter_mut().for_each(|b| b.0 = 0);
    }
}

/// Appends an entity type's arguments (see the ARGV layout in `window.lua`).
fn push_type(cmd: &mut redis::Cmd, g: &Group<'_>) {
    cmd.arg(g.spec.bucket_ms).arg(g.spec.lateness_ms).arg(g.spec.retention_ms());
    if g.windows {
        cmd.arg(g.spec.sizes_ms.len());
        for s in &g.spec.sizes_ms {
            cmd.arg(*s);
        }
    } else {
        cmd.arg(0);
    }
    cmd.arg(g.all_features.len());
    for f in g.all_features {
        cmd.arg(f.as_str());
    }
    cmd.arg(g.max_age_ms);
}

/// Appends one group's window arguments (see the ARGV layout in `window.lua`).
fn push_group(cmd: &mut redis::Cmd, g: &Group<'_>) {
    if g.windows {
        match &g.cas {
            Some(c) => {
                cmd.arg("c").arg(c.expected.as_str()).arg(g.token.as_str()).arg(c.distinct.len());
                for (v, before, after) in &c.distinct {
                    cmd.arg(v.as_str());
                    match before {
                        Some(b) => cmd.arg(*b),
                        None => cmd.arg(""),
                    };
                    match after {
                        Some(a) => cmd.arg(*a),
                        None => cmd.arg(""),
                    };
                }
                cmd.arg(c.blob.as_slice());
                match c.horizon {
                    Some(h) => cmd.arg(h),
                    None => cmd.arg(""),
                };
                cmd.arg(if c.refresh { "1" } else { "0" });
            }
            None => {
                cmd.arg("f").arg(g.token.as_str()).arg(g.updates.len());
                for u in &g.updates {
                    cmd.arg(u.fence_key).arg(u.offset).arg(u.time_ms);
                    match u.value {
                        Some(v) => cmd.arg(v.to_string()),
                        None => cmd.arg(""),
                    };
                    cmd.arg(u.distinct.unwrap_or(""));
                }
            }
        }
    }
    // A group without windows (an entity with none, or whose windows are partition-owned)
    // sends nothing more: its type says nw = 0 and the script reads no mode.
}
