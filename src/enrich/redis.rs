//! Redis state store: one pipelined round trip per batch carrying one `EVALSHA` for the
//! whole batch, or one per entity with `redis_cluster` (window updates + feature reads,
//! atomically; an entity's keys share one cluster slot).
//!
//! Key layout (the entity id is the hash tag):
//! * `{prefix}:win:{entity}:{id}` — window hash: field `s` = state (msgpack: buckets, fences,
//!   newest), field `d:{value}` = start of the distinct value's latest bucket; TTL = longest
//!   window + lateness;
//! * `{prefix}:f:{entity}:{id}` — online features: a hash of `name → number` plus `_ts`
//!   (ms since epoch of the last update), written by the feature pipeline, read here.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::{EnrichError, Group};

/// The window script, loaded once per connection (re-loaded on `NOSCRIPT`).
pub const WINDOW_SCRIPT: &str = include_str!("window.lua");

/// Connection and script of the Redis backend.
pub struct RedisStore {
    rt: Arc<tokio::runtime::Runtime>,
    conn: ConnectionManager,
    sha: String,
    prefix: String,
    timeout: Duration,
}

/// Window hash of an entity: state in field `s`, distinct values in fields `d:{value}`.
pub fn window_key(prefix: &str, entity: &str, id: &str) -> String {
    format!("{prefix}:win:{entity}:{{{id}}}")
}

/// Online-feature key of an entity.
pub fn feature_key(prefix: &str, entity: &str, id: &str) -> String {
    format!("{prefix}:f:{entity}:{{{id}}}")
}

impl RedisStore {
    /// Connects (with reconnects managed by `ConnectionManager`) and loads the script.
    pub fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, EnrichError> {
        let rt = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| EnrichError::Config(format!("redis runtime: {e}")))?,
        );
        let client = redis::Client::open(url).map_err(|e| EnrichError::Config(format!("enrich.redis_url: {e}")))?;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = rt
            .block_on(async { tokio::time::timeout(timeout * 3, client.get_connection_manager_with_config(cfg)).await })
            .map_err(|_| EnrichError::Unavailable(format!("connecting to {url}: timed out")))?
            .map_err(|e| EnrichError::Unavailable(format!("connecting to {url}: {e}")))?;
        let mut store = Self { rt, conn, sha: String::new(), prefix: prefix.to_string(), timeout };
        store.sha = store.load_script()?;
        Ok(store)
    }

    fn load_script(&self) -> Result<String, EnrichError> {
        let mut conn = self.conn.clone();
        self.rt
            .block_on(async {
                redis::cmd("SCRIPT").arg("LOAD").arg(WINDOW_SCRIPT).query_async::<String>(&mut conn).await
            })
            .map_err(|e| EnrichError::Unavailable(format!("SCRIPT LOAD: {e}")))
    }

    /// Runs the groups' script calls in one pipelined round trip — one call per group
    /// (`per_group`, Redis Cluster: one slot per call) or one call for the whole batch —
    /// and returns the replies concatenated in group order (bytes: window states are msgpack).
    pub fn run(&mut self, groups: &[Group<'_>], now_ms: i64, per_group: bool) -> Result<Vec<Vec<u8>>, EnrichError> {
        let mut pipe = redis::pipe();
        let chunks: Vec<&[Group<'_>]> = if per_group { groups.chunks(1).collect() } else { vec![groups] };
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
        for attempt in 0..2 {
            let mut conn = self.conn.clone();
            let timeout = self.timeout;
            let reply = self.rt.block_on(async {
                tokio::time::timeout(timeout, pipe.query_async::<Vec<Vec<Vec<u8>>>>(&mut conn)).await
            });
            match reply {
                Ok(Ok(r)) => return Ok(r.into_iter().flatten().collect()),
                Ok(Err(e)) if e.code() == Some("NOSCRIPT") && attempt == 0 => {
                    // Redis restarted or flushed its script cache: load it again (its SHA1
                    // depends only on its text, so the pipeline is re-sent unchanged).
                    self.sha = self.load_script()?;
                }
                Ok(Err(e)) => return Err(EnrichError::Unavailable(e.to_string())),
                Err(_) => return Err(EnrichError::Unavailable(format!("no reply within {timeout:?}"))),
            }
        }
        Err(EnrichError::Unavailable("script could not be loaded".into()))
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
    } else {
        cmd.arg(0);
    }
}
