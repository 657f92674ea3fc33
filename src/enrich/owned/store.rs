//! Redis I/O of the partition-owned state: claiming a partition (a new owner epoch and its
//! checkpoint), reading entity states on first touch, writing checkpoints (one atomic
//! script call per partition, every key in the partition's cluster slot), and the start-up
//! check of which layout holds each entity's state.
//!
//! Key layout (`{topic/partition}` is the hash tag):
//! * `{prefix}:po:{topic/partition}` — the partition's hash: `epoch` (the owner's claim),
//!   `offset` (where the checkpointed state stands: resume here), `acked` (every event
//!   below it has a published decision), `layout`;
//! * `{prefix}:po:{topic/partition}:{entity}:{id}` — an entity's window fields (`n`,
//!   `b:<start>`, `h:<key>`: see `window`), expiring after the longest window;
//! * `{prefix}:layout` — per entity type, which layout writes its state
//!   ([`PARTITION_LAYOUT`] or `shared`), so two layouts never write the same entity.

use std::sync::Arc;
use std::time::Duration;

use redis::{ConnectionLike, RedisResult};

use super::super::breaker::Breaker;
use super::super::redis::{classify, redis_error};
use super::super::EnrichError;
use super::writes::{self, EntityWrites};
use crate::core::redis::{Client, Connection, RedisConfig};

/// The layout record of a partition-owned entity. `partition`, what builds before
/// 2026-12-06 recorded (distinct values as `d:<value>` fields), is taken over: this build
/// reads those fields and rewrites them, and records this name, which those builds refuse
/// at start-up (they ignore `h:` fields, so they would undercount distinct values).
pub const PARTITION_LAYOUT: &str = "partition-v2";

/// The checkpoint script (see its header for KEYS and ARGV).
pub const CHECKPOINT_SCRIPT: &str = include_str!("checkpoint.lua");
/// The claim script.
pub const CLAIM_SCRIPT: &str = include_str!("claim.lua");

/// The partition's meta key (also the prefix of its entity keys).
pub fn partition_key(prefix: &str, topic: &str, partition: i32) -> String {
    format!("{prefix}:po:{{{topic}/{partition}}}")
}

/// An entity's key within its partition.
pub fn entity_key(partition_key: &str, entity: &str, id: &str) -> String {
    format!("{partition_key}:{entity}:{id}")
}

/// An entity hash's fields and values, as read.
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// This owner's epoch: its writes are refused once another instance claims.
    pub epoch: u64,
    /// Where the checkpointed state stands (resume here); None: never checkpointed.
    pub offset: Option<i64>,
    /// Every event below this offset has a published decision (re-decisions say so).
    pub acked: Option<i64>,
}

/// One partition's write: its acknowledged offset, and a checkpoint if one was sealed.
#[derive(Debug, Clone, Default)]
pub struct Write {
    /// The partition's meta key.
    pub key: String,
    /// The claim's epoch.
    pub epoch: u64,
    /// Acknowledged offset.
    pub acked: i64,
    /// Resume offset and the entities' changed fields.
    pub checkpoint: Option<(i64, EntityWrites)>,
}

impl Write {
    /// Hash fields the write changes.
    pub fn fields(&self) -> u64 {
        self.checkpoint.as_ref().map_or(0, |(_, es)| es.fields())
    }

    /// The entities written (none without a checkpoint).
    fn entities(&self) -> Option<&EntityWrites> {
        self.checkpoint.as_ref().map(|(_, es)| es)
    }
}

/// How a partition's write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Durable.
    Ok,
    /// Refused: another instance claimed the partition (its epoch, as Redis holds it).
    Fenced(String),
    /// Refused: Redis holds no claim for the partition any more (it lost data).
    Lost,
}

/// A blocking connection for one thread (the consume thread, the acker, one per worker),
/// connected on first use and again after a failure; to one node or to a Redis Cluster.
pub struct Store {
    client: Client,
    conn: Option<Connection>,
    timeout: Duration,
    shown: String,
    checkpoint: redis::Script,
    claim: redis::Script,
    breaker: Arc<Breaker>,
}

/// One checkpoint script call writing `call`, in the Redis protocol: the entities' keys and
/// arguments copied once from where sealing encoded them, into a buffer of the exact size.
fn script_call(sha: &str, call: &[&Write], ttl_ms: i64) -> Vec<u8> {
    let entities = |w: &Write| w.entities().map_or(0, EntityWrites::len);
    let keys: usize = call.iter().map(|w| 1 + entities(w)).sum();
    let args: usize = call.iter().map(|w| 4 + w.entities().map_or(0, EntityWrites::arg_count)).sum();
    let bulk_bytes: usize = call.iter().map(|w| w.entities().map_or(0, EntityWrites::bytes)).sum();
    let mut out = Vec::with_capacity(128 + bulk_bytes + call.iter().map(|w| 128 + w.key.len()).sum::<usize>());
    writes::array(&mut out, 3 + keys + 2 + args);
    writes::bulk(&mut out, b"EVALSHA");
    writes::bulk(&mut out, sha.as_bytes());
    writes::bulk_int(&mut out, keys as i64);
    for w in call {
        writes::bulk(&mut out, w.key.as_bytes());
        out.extend_from_slice(w.entities().map_or(&[][..], EntityWrites::keys));
    }
    writes::bulk_int(&mut out, ttl_ms);
    writes::bulk_int(&mut out, call.len() as i64);
    for w in call {
        writes::bulk_int(&mut out, entities(w) as i64);
        writes::bulk_int(&mut out, w.epoch as i64);
        match &w.checkpoint {
            Some((offset, _)) => writes::bulk_int(&mut out, *offset),
            None => writes::bulk(&mut out, b""),
        }
        writes::bulk_int(&mut out, w.acked);
        out.extend_from_slice(w.entities().map_or(&[][..], EntityWrites::args));
    }
    out
}

/// Runs `f`; a NOSCRIPT reply (first use, Redis restarted, a replica promoted) loads the
/// checkpoint script (on a cluster: on every primary) and runs `f` again: the writes are
/// absolute values, so repeating is safe.
fn with_script<T>(c: &mut Connection, f: impl Fn(&mut Connection) -> RedisResult<T>) -> RedisResult<T> {
    match f(c) {
        Err(e) if e.code() == Some("NOSCRIPT") => {
            redis::cmd("SCRIPT").arg("LOAD").arg(CHECKPOINT_SCRIPT).query::<String>(c)?;
            f(c)
        }
        r => r,
    }
}

impl Store {
    /// A store for `url` with `security`'s TLS and credentials (not connected yet); with
    /// `cluster`, for the Redis Cluster whose seed nodes `url` lists; `breaker` is shared by
    /// every connection to that Redis.
    pub fn new(
        url: &str,
        security: &RedisConfig,
        timeout: Duration,
        cluster: bool,
        breaker: Arc<Breaker>,
    ) -> Result<Self, EnrichError> {
        let shown = crate::redact::redis_url(url).into_owned();
        let client =
            Client::new("enrich.redis_url", url, security, cluster).map_err(|e| EnrichError::Config(e.to_string()))?;
        Ok(Self {
            client,
            conn: None,
            timeout,
            shown,
            checkpoint: redis::Script::new(CHECKPOINT_SCRIPT),
            claim: redis::Script::new(CLAIM_SCRIPT),
            breaker,
        })
    }

    /// Runs `f` on the connection (at once an error while the breaker is open); a failure
    /// drops the connection (the next call reconnects).
    fn call<T>(&mut self, f: impl Fn(&mut Connection, &Self) -> RedisResult<T>) -> Result<T, EnrichError> {
        self.breaker.check()?;
        let result = self.call_unchecked(f);
        self.breaker.record(&result);
        result
    }

    /// A connection Redis closed while it sat idle (Redis restarted, a proxy's idle timeout)
    /// is not an outage: the call is made once more on a new connection. (Each call is safe
    /// to repeat: reads, a claim's new epoch, checkpoints of absolute values behind their fence.)
    fn call_unchecked<T>(&mut self, f: impl Fn(&mut Connection, &Self) -> RedisResult<T>) -> Result<T, EnrichError> {
        let mut retried = false;
        loop {
            let fresh = self.conn.is_none();
            if fresh {
                let conn = self.client.connect(self.timeout).map_err(|e| {
                    EnrichError::Unavailable(format!("connecting to {}: {}", self.shown, redis_error(&e)))
                })?;
                self.conn = Some(conn);
            }
            let mut conn = self.conn.take().expect("connected above");
            match f(&mut conn, self) {
                Ok(v) => {
                    self.conn = Some(conn);
                    return Ok(v);
                }
                Err(e) if !fresh && !retried && e.is_connection_dropped() && !e.is_timeout() => retried = true,
                Err(e) => return Err(classify(&e)),
            }
        }
    }

    /// Claims `key`'s partition: a new epoch, and where its checkpoint stands.
    pub fn claim(&mut self, key: &str) -> Result<Claim, EnrichError> {
        let (epoch, offset, acked): (String, String, String) = self.call(|c, s| s.claim.key(key).invoke(c))?;
        let num = |v: &str| v.parse::<i64>().ok();
        let epoch = epoch.parse().map_err(|_| EnrichError::Protocol(format!("{key}: epoch '{epoch}'")))?;
        Ok(Claim { epoch, offset: num(&offset), acked: num(&acked) })
    }

    /// Every field of each key (empty: no such entity), in one pipelined round trip.
    pub fn load(&mut self, keys: &[String]) -> Result<Vec<Fields>, EnrichError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.call(|c, _| {
            let mut pipe = redis::pipe();
            for k in keys {
                pipe.cmd("HGETALL").arg(k);
            }
            // On a cluster: one round trip per node holding some of the partitions.
            c.query_pipe::<Vec<Fields>>(&pipe)
        })
    }

    /// The partitions' writes in one round trip: one script call for all of them, or one
    /// per partition (`per_partition`: Redis Cluster, where each partition is its own slot).
    pub fn write(&mut self, writes: &[&Write], ttl_ms: i64, per_partition: bool) -> Result<Vec<Written>, EnrichError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let sha = self.checkpoint.get_hash().to_string();
        let replies: Vec<Vec<String>> = if per_partition {
            // Redis Cluster: a script call per partition (its own slot), as commands of one
            // pipeline, so that each node gets its share in one round trip per chunk and each
            // call is routed by its first key, the partition's. The encoded call is read back
            // into a command: its arguments are copied once more, in cluster mode only.
            let mut pipe = redis::pipe();
            for call in writes.chunks(1) {
                let mut cmd = redis::cmd("EVALSHA");
                for arg in writes::command_args(&script_call(&sha, call, ttl_ms)).skip(1) {
                    cmd.arg(arg);
                }
                pipe.add_command(cmd);
            }
            self.call(|c, _| with_script(c, |c| c.query_pipe::<Vec<Vec<String>>>(&pipe)))?
        } else {
            let cmd = script_call(&sha, writes, ttl_ms);
            let reply = self.call(|c, _| with_script(c, |c| c.req_packed_command(&cmd)?.extract_error()))?;
            vec![redis::from_redis_value::<Vec<String>>(reply).map_err(|e| EnrichError::Protocol(e.to_string()))?]
        };
        let replies: Vec<String> = replies.into_iter().flatten().collect();
        if replies.len() != writes.len() {
            return Err(EnrichError::Protocol(format!(
                "checkpoint script replied {} statuses for {} partitions",
                replies.len(),
                writes.len()
            )));
        }
        replies
            .into_iter()
            .map(|r| match r.as_str() {
                "ok" => Ok(Written::Ok),
                "lost" => Ok(Written::Lost),
                f if f.starts_with("fenced:") => Ok(Written::Fenced(f["fenced:".len()..].to_string())),
                other => Err(EnrichError::Protocol(format!("checkpoint script replied '{other}'"))),
            })
            .collect()
    }

    /// Start-up: which layout holds each entity type's state (`{prefix}:layout`). An entity
    /// recorded under the other layout, or a partition-owned entity with state in the
    /// shared layout (written by an earlier verdict, which records nothing), is refused:
    /// two layouts must never write one entity. Records the layout of each entity otherwise
    /// (a partition-owned entity recorded by an earlier build is recorded anew).
    pub fn check_layout(&mut self, prefix: &str, entities: &[(&str, bool)]) -> Result<(), EnrichError> {
        let layout_key = format!("{prefix}:layout");
        let mut problems = Vec::new();
        for &(entity, owned) in entities {
            let want = if owned { PARTITION_LAYOUT } else { "shared" };
            let have: Option<String> = self.call(|c, _| redis::cmd("HGET").arg(&layout_key).arg(entity).query(c))?;
            match have.as_deref() {
                Some(h) if h == want => continue,
                Some("partition") if owned => {
                    tracing::warn!(
                        entity,
                        key = %layout_key,
                        "partition-owned state recorded by a build before 2026-12-06: its checkpoints are read and \
                         rewritten as entities change; builds before 2026-12-06 now refuse to start on this Redis"
                    );
                    self.call(|c, _| redis::cmd("HSET").arg(&layout_key).arg(entity).arg(want).query::<i64>(c))?;
                    continue;
                }
                Some(h) => problems.push(format!(
                    "entity '{entity}': Redis holds its window state in the '{h}' layout ({layout_key} {entity}), \
                     and this config makes it {}-owned; stop every instance of the other layout and delete \
                     that state (or wait for it to expire after the longest window) before changing ownership",
                    if owned { "partition" } else { "shared" }
                )),
                None if owned => {
                    let pattern = format!("{prefix}:win:{entity}:*");
                    if let Some(found) = self.scan_one(&pattern)? {
                        problems.push(format!(
                            "entity '{entity}': Redis holds window state in the shared layout written by an earlier \
                             verdict (e.g. {found}); set ownership = \"shared\" for it to keep that state, or stop \
                             those instances and delete the keys {pattern} (they also expire after the longest \
                             window) to start partition-owned state"
                        ));
                        continue;
                    }
                }
                None => {}
            }
            self.call(|c, _| redis::cmd("HSETNX").arg(&layout_key).arg(entity).arg(want).query::<i64>(c))?;
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(EnrichError::Config(problems.join("; ")))
        }
    }

    /// The first key matching `pattern` (a full SCAN of each primary: start-up only).
    fn scan_one(&mut self, pattern: &str) -> Result<Option<String>, EnrichError> {
        self.call(|c, _| c.scan_first(pattern))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_call_is_the_command_redis_rs_would_pack() {
        let mut es = EntityWrites::default();
        let set: Vec<(&[u8], &[u8])> = vec![(b"b:60000", &[7; 41]), (b"n", b"12")];
        es.push(&["v:po:{t/0}", "card", "c1"], set.into_iter(), [&b"h:9"[..]].into_iter());
        es.push(&["v:po:{t/0}", "card", "c2"], std::iter::empty(), std::iter::empty());
        let with = Write { key: "v:po:{t/0}".into(), epoch: 4, acked: 11, checkpoint: Some((11, es)) };
        let without = Write { key: "v:po:{t/1}".into(), epoch: 2, acked: 7, checkpoint: None };
        assert_eq!((with.fields(), without.fields()), (3, 0));
        let call = [&with, &without];
        let sent = script_call("abc", &call, 3_600_000);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg("abc").arg(4).arg("v:po:{t/0}").arg("v:po:{t/0}:card:c1").arg("v:po:{t/0}:card:c2");
        cmd.arg("v:po:{t/1}").arg(3_600_000).arg(2);
        cmd.arg(2).arg(4).arg(11).arg(11).arg(2).arg("b:60000").arg(&[7u8; 41][..]).arg("n").arg("12");
        cmd.arg(1).arg("h:9").arg(0).arg(0);
        cmd.arg(0).arg(2).arg("").arg(7);
        assert_eq!(String::from_utf8_lossy(&sent), String::from_utf8_lossy(&cmd.get_packed_command()));
    }
}
