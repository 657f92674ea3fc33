//! A single Redis node or a Redis Cluster behind one type ([`Client`], [`Connection`],
//! [`AsyncConnection`]): with `enrich.redis_cluster` every connection verdict makes is a
//! cluster connection (slots routed by key, `MOVED`/`ASK` followed, the slot map refreshed
//! and nodes reconnected after a failover), built from the same URLs, TLS and ACL settings.
//!
//! Seed nodes: in cluster mode the URL may list several, comma-separated
//! (`redis://a:6379,redis://b:6379`); any one that answers gives the whole topology.
//!
//! Pipelines: on one node a pipeline is one round trip. On a cluster its commands are split
//! by node (one round trip per node, sync) or sent concurrently on the multiplexed
//! connection (async); each command must then hold keys of one slot, which the callers
//! guarantee by hash tags (an entity's id, a partition's `topic/partition`).

use std::time::Duration;

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ConnectionLike, FromRedisValue, Pipeline, RedisResult, Value};

use super::{prepared, refusal, ClientError, RedisConfig};

/// Commands per round trip of a pipeline on a Redis Cluster (see [`Connection::query_pipe`]).
const CLUSTER_CHUNK: usize = 16;

/// A client for one Redis node or for a Redis Cluster; connects nothing yet.
// Built a few times per process: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Client {
    /// One node (`enrich.redis_cluster = false`).
    Node(redis::Client),
    /// A cluster, from its seed nodes.
    Cluster(redis::cluster::ClusterClient),
}

impl Client {
    /// A client for `urls` (under the key `key`, named in errors) with `cfg`'s TLS files and
    /// credentials: one node, or with `cluster` the cluster whose seed nodes `urls` lists
    /// (comma-separated).
    pub fn new(key: &str, urls: &str, cfg: &RedisConfig, cluster: bool) -> Result<Self, ClientError> {
        if !cluster {
            return super::client(key, urls, cfg).map(Client::Node);
        }
        let mut nodes = Vec::new();
        let mut certificates = None;
        for url in seed_urls(urls) {
            let (info, certs) = prepared(key, url, cfg)?;
            nodes.push(info);
            certificates = certificates.or(certs);
        }
        let mut builder = redis::cluster::ClusterClientBuilder::new(nodes).tcp_settings(super::tcp_settings());
        if let Some(c) = certificates {
            builder = builder.certs(c);
        }
        builder.build().map(Client::Cluster).map_err(refusal(key, urls))
    }

    /// A blocking connection whose connects, reads and writes each give up after `timeout`.
    pub fn connect(&self, timeout: Duration) -> RedisResult<Connection> {
        match self {
            Client::Node(c) => {
                let conn = c.get_connection_with_timeout(timeout)?;
                conn.set_read_timeout(Some(timeout))?;
                conn.set_write_timeout(Some(timeout))?;
                Ok(Connection::Node(conn))
            }
            Client::Cluster(c) => {
                let config =
                    redis::cluster::ClusterConfig::new().set_connection_timeout(timeout).set_response_timeout(timeout);
                Ok(Connection::Cluster(Box::new(c.get_connection_with_config(config)?)))
            }
        }
    }

    /// An async connection that reconnects by itself: a `ConnectionManager` on one node
    /// (`manager` its settings), the multiplexed cluster connection on a cluster.
    pub async fn connect_async(
        &self,
        manager: redis::aio::ConnectionManagerConfig,
        timeout: Duration,
    ) -> RedisResult<AsyncConnection> {
        match self {
            Client::Node(c) => Ok(AsyncConnection::Node(c.get_connection_manager_with_config(manager).await?)),
            Client::Cluster(c) => {
                let config =
                    redis::cluster::ClusterConfig::new().set_connection_timeout(timeout).set_response_timeout(timeout);
                Ok(AsyncConnection::Cluster(c.get_async_connection_with_config(config).await?))
            }
        }
    }
}

/// The seed URLs of a comma-separated list (blanks around each ignored).
pub fn seed_urls(urls: &str) -> impl Iterator<Item = &str> {
    urls.split(',').map(str::trim).filter(|u| !u.is_empty())
}

/// A blocking connection to one node or to a cluster.
pub enum Connection {
    /// One node.
    Node(redis::Connection),
    /// A cluster: one connection per node, opened as slots are met (boxed: the
    /// single-node variant stays small).
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl Connection {
    /// Runs `pipe` and returns its replies: one round trip on a node; on a cluster, one per
    /// node holding some of its keys for each `CLUSTER_CHUNK` commands (`MOVED`/`ASK` replies
    /// followed). Each command must hold keys of one slot; replies of ignored commands are
    /// kept on a cluster, so use `ignore` only with a `()` result.
    pub fn query_pipe<T: FromRedisValue>(&mut self, pipe: &Pipeline) -> RedisResult<T> {
        if let Connection::Cluster(c) = self {
            // redis-rs reads every reply of a node's share of a pipeline, each up to the
            // response timeout, whatever happened to the one before: on a master that stopped
            // answering, a pipeline took one timeout per command routed to it (200 entity
            // loads, 65 of them on the stopped master: 20.8 s at 300 ms). Sent in chunks, a
            // pipeline gives up after the first chunk that fails: at most `CLUSTER_CHUNK`
            // timeouts, for one more round trip per chunk when all is well.
            let cmds: Vec<&Cmd> = pipe.cmd_iter().collect();
            let mut replies = Vec::with_capacity(cmds.len());
            for chunk in cmds.chunks(CLUSTER_CHUNK) {
                let mut cluster = redis::cluster::ClusterPipeline::new();
                for &cmd in chunk {
                    cluster.add_command(cmd.clone());
                }
                replies.extend(cluster.query::<Vec<Value>>(c)?);
            }
            return Ok(redis::from_redis_value(Value::Array(replies))?);
        }
        // One node: through `req_packed_commands` below, which gives up at the first reply
        // that does not come.
        pipe.query(self)
    }

    /// The first key matching `pattern`, on any primary (a full `SCAN` of each: start-up only).
    pub fn scan_first(&mut self, pattern: &str) -> RedisResult<Option<String>> {
        let nodes: Vec<Option<(String, u16)>> = match self {
            Connection::Node(_) => vec![None],
            Connection::Cluster(c) => primaries(c)?.into_iter().map(Some).collect(),
        };
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(10_000);
                let reply = match (&mut *self, &node) {
                    (Connection::Cluster(c), Some((host, port))) => {
                        let to = SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port };
                        c.route_command(&scan, RoutingInfo::SingleNode(to))?
                    }
                    (conn, _) => conn.req_command(&scan)?,
                };
                let (next, keys): (u64, Vec<String>) = redis::from_redis_value(reply)?;
                if let Some(k) = keys.into_iter().next() {
                    return Ok(Some(k));
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(None)
    }
}

/// The cluster's primaries (`CLUSTER NODES`: flag `master`, not failed), as host and port.
fn primaries(c: &mut redis::cluster::ClusterConnection) -> RedisResult<Vec<(String, u16)>> {
    let text: String = redis::cmd("CLUSTER").arg("NODES").query(c)?;
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else { continue };
        if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
            continue;
        }
        // `host:port@cport[,hostname]`
        let addr = addr.split('@').next().unwrap_or(addr);
        if let Some((host, port)) = addr.rsplit_once(':') {
            if let Ok(port) = port.parse() {
                out.push((host.to_string(), port));
            }
        }
    }
    Ok(out)
}

/// The `count` replies of a pipeline sent to one node, read until one fails. redis-rs reads
/// every reply whatever happened to the one before, so on a Redis that stopped answering
/// (stopped, a network that drops packets) a pipeline of n commands took n read timeouts: a
/// batch's n entity loads, 300 ms each, held its partition's turn for minutes and stalled the
/// pipeline. After a failed read the connection is out of step with its replies: every caller
/// drops it. (Error replies are replies: they are kept, as redis-rs keeps them.)
fn replies_until_failure(c: &mut redis::Connection, cmd: &[u8], count: usize) -> RedisResult<Vec<Value>> {
    c.send_packed_command(cmd)?;
    let mut replies = Vec::with_capacity(count);
    while replies.len() < count {
        match c.recv_response()? {
            // RESP3 push data between the replies is not one of them.
            Value::Push { .. } => {}
            reply => replies.push(reply),
        }
    }
    Ok(replies)
}

impl ConnectionLike for Connection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            Connection::Node(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(&mut self, cmd: &[u8], offset: usize, count: usize) -> RedisResult<Vec<Value>> {
        match self {
            Connection::Node(c) if offset == 0 => replies_until_failure(c, cmd, count),
            Connection::Node(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Connection::Node(c) => c.req_command(cmd),
            // Routed by the command's key (a script call by its first key).
            Connection::Cluster(c) => c.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Node(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Connection::Node(c) => c.check_connection(),
            Connection::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Connection::Node(c) => c.is_open(),
            Connection::Cluster(c) => c.is_open(),
        }
    }
}

/// An async connection to one node or to a cluster; clones share it.
#[derive(Clone)]
pub enum AsyncConnection {
    /// One node, reconnected by the manager.
    Node(redis::aio::ConnectionManager),
    /// A cluster (multiplexed per node, reconnected and re-routed by the client library).
    Cluster(redis::cluster_async::ClusterConnection),
}

impl AsyncConnection {
    /// Runs `pipe` and returns its replies: one round trip on a node; on a cluster, its
    /// commands concurrently, each routed by its key (each must hold keys of one slot).
    pub async fn query_pipe<T: FromRedisValue>(&mut self, pipe: &Pipeline) -> RedisResult<T> {
        match self {
            AsyncConnection::Node(c) => pipe.query_async(c).await,
            AsyncConnection::Cluster(c) => {
                let calls = pipe.cmd_iter().map(|cmd| {
                    let mut c = c.clone();
                    async move { cmd.query_async::<Value>(&mut c).await }
                });
                let replies = futures::future::try_join_all(calls).await?;
                Ok(redis::from_redis_value(Value::Array(replies))?)
            }
        }
    }
}

impl redis::aio::ConnectionLike for AsyncConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            AsyncConnection::Node(c) => c.req_packed_command(cmd),
            AsyncConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            AsyncConnection::Node(c) => c.req_packed_commands(cmd, offset, count),
            AsyncConnection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AsyncConnection::Node(c) => c.get_db(),
            AsyncConnection::Cluster(c) => c.get_db(),
        }
    }
}

/// Whether `e` (or one of a pipeline's errors) is a cluster redirect or a cluster in
/// transition (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`).
pub fn is_cluster_error(e: &redis::RedisError) -> bool {
    e.is_cluster_error()
        || e.clone().into_server_errors().is_some_and(|items| {
            items.iter().any(|(_, s)| matches!(s.code(), "MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN"))
        })
}

/// Every problem of the Redis URLs in use (`(key, url)` pairs) for the mode `cluster`
/// (`enrich.redis_cluster`) selects, each naming its key: several URLs without cluster mode;
/// in cluster mode, seeds that do not parse, a Unix socket or a database other than 0 (a
/// cluster has neither), seeds that disagree on TLS, and a `key_prefix` with braces (it would
/// become every key's hash tag: one slot for all state).
pub fn validate_urls(urls: &[(&str, &str)], cluster: bool, key_prefix: &str) -> Vec<String> {
    let mut e = Vec::new();
    for (key, url) in urls {
        let seeds: Vec<&str> = seed_urls(url).collect();
        if !cluster {
            if seeds.len() > 1 {
                e.push(format!(
                    "{key}: lists {} URLs; several seed nodes need enrich.redis_cluster = true",
                    seeds.len()
                ));
            }
            continue;
        }
        let mut schemes = Vec::new();
        for seed in &seeds {
            let shown = crate::redact::redis_url(seed);
            match redis::IntoConnectionInfo::into_connection_info(*seed) {
                Err(err) => e.push(format!("{key}: seed '{shown}': {}", crate::redact::redis_error(&err))),
                Ok(info) => {
                    if matches!(info.addr(), redis::ConnectionAddr::Unix(_)) {
                        e.push(format!(
                            "{key}: seed '{shown}': a Redis Cluster is reached over TCP, not a Unix socket"
                        ));
                    }
                    if info.redis_settings().db() != 0 {
                        e.push(format!("{key}: seed '{shown}': a Redis Cluster has only database 0"));
                    }
                    schemes.push(matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }));
                }
            }
        }
        if schemes.windows(2).any(|w| w[0] != w[1]) {
            e.push(format!("{key}: seed nodes mix redis:// and rediss://; use one"));
        }
    }
    if cluster && (key_prefix.contains('{') || key_prefix.contains('}')) {
        e.push(format!(
            "enrich.key_prefix: '{key_prefix}' holds a brace; with enrich.redis_cluster it would be every key's hash \
             tag and put all state in one slot"
        ));
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_url_problems_are_reported_at_once_with_their_keys() {
        let urls = [
            ("enrich.redis_url", "redis://a:6379/2, rediss://b:6380/,unix:///tmp/redis.sock"),
            ("rules.redis_url", "redis://u:hunter2@c:6379/,x"),
        ];
        let e = validate_urls(&urls, true, "app{x}");
        let has = |s: &str| e.iter().any(|p| p.contains(s));
        assert!(has("enrich.redis_url: seed 'redis://a:6379/2': a Redis Cluster has only database 0"), "{e:?}");
        assert!(has("enrich.redis_url: seed 'unix:///tmp/redis.sock': a Redis Cluster is reached over TCP"), "{e:?}");
        assert!(has("enrich.redis_url: seed nodes mix redis:// and rediss://"), "{e:?}");
        assert!(has("rules.redis_url: seed 'x'"), "{e:?}");
        assert!(has("enrich.key_prefix: 'app{x}' holds a brace"), "{e:?}");
        assert!(!e.iter().any(|p| p.contains("hunter2")), "{e:?}");
        let single = validate_urls(&[("enrich.redis_url", "redis://a:6379/,redis://b:6379/")], false, "verdict");
        assert_eq!(single, ["enrich.redis_url: lists 2 URLs; several seed nodes need enrich.redis_cluster = true"]);
        let ok = [("enrich.redis_url", "redis://a:6379/, redis://b:6379/")];
        assert!(validate_urls(&ok, true, "verdict").is_empty());
        assert!(validate_urls(&[("enrich.redis_url", "redis://a:6379/3")], false, "v{x}").is_empty());
        // Every seed's password is masked wherever the list is shown, and known as a secret.
        let list = "redis://u:pw-one@a:6379/,redis://u:pw-two@b:6379/";
        let shown = crate::redact::redis_url(list);
        assert!(!shown.contains("pw-one") && !shown.contains("pw-two") && shown.contains("@b:6379"), "{shown}");
        let mut cfg = crate::config::Config::default();
        cfg.enrich.redis_url = list.into();
        let scrubbed = crate::redact::Secrets::of(&cfg).scrub("auth pw-one then pw-two");
        assert!(!scrubbed.contains("pw-one") && !scrubbed.contains("pw-two"), "{scrubbed}");
    }

    #[test]
    fn a_cluster_client_takes_every_seed_with_the_redis_section_credentials() {
        let cfg = RedisConfig { username: "verdict".into(), password: "s3cret".into(), ..Default::default() };
        let c = Client::new("enrich.redis_url", "redis://a:7000/, redis://b:7001/", &cfg, true).unwrap();
        assert!(matches!(c, Client::Cluster(_)));
        let node = Client::new("enrich.redis_url", "redis://a:7000/", &cfg, false).unwrap();
        let Client::Node(n) = node else { panic!("one node") };
        assert_eq!(n.get_connection_info().redis_settings().password(), Some("s3cret"));
        let e = Client::new("enrich.redis_url", "redis://a:7000/,rediss://b:7001/", &cfg, true).err().unwrap();
        assert!(e.to_string().starts_with("enrich.redis_url "), "{e}");
    }
}
