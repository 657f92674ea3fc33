//! Shared test harness: the mock cluster, config for it, producing generated events
//! and reading decisions back.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use verdict::config::Config;
use verdict::demo::{Generator, MockKafka, ReadMessage};
use verdict::telemetry::Metrics;

mod state;
#[allow(unused_imports)] // not every test binary uses the state checks
pub use state::*;
mod tls;
#[allow(unused_imports)] // only the Redis TLS tests use it
pub use tls::*;
mod cluster;
#[allow(unused_imports)] // only the Redis Cluster tests use it
pub use cluster::*;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Absolute path inside the crate.
pub fn crate_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A fresh mock cluster with the topics of `cfg`, and a config pointing at it.
pub fn mock_setup(partitions: i32) -> (MockKafka, Config) {
    verdict::telemetry::init_logging("pretty", &std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into()));
    let mock = MockKafka::start(1);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let mut cfg = verdict::config::demo();
    verdict::demo::use_mock(&mut cfg, &mock);
    cfg.kafka.group_id = format!("verdict-test-{n}");
    cfg.kafka.commit_interval_ms = 200;
    cfg.model.dir = crate_path("models/demo");
    cfg.decode.avro_schemas.insert("1".into(), crate_path("schemas/transaction.avsc"));
    cfg.telemetry.stats_interval_ms = 1000;
    cfg.model.workers = 2;
    // The mock coordinator holds a re-join of a group whose member just left for up to
    // twice the session timeout; keep it short so restarts in one test are quick.
    cfg.kafka.consumer.insert("session.timeout.ms".into(), "6000".into());
    cfg.kafka.consumer.insert("heartbeat.interval.ms".into(), "500".into());
    if let Ok(s) = std::env::var("TEST_RDKAFKA_DEBUG") {
        cfg.kafka.consumer.insert("debug".into(), s);
    }
    if let Ok(s) = std::env::var("TEST_ASSIGNOR") {
        cfg.kafka.consumer.insert("partition.assignment.strategy".into(), s);
    }
    verdict::demo::create_topics(&mock, &cfg, partitions);
    (mock, cfg)
}

/// Produces `n` generated events as JSON (ids `tx-{first..first+n}`); returns their ids.
pub fn produce_events(mock: &MockKafka, topic: &str, first: u64, n: u64, seed: u64) -> Vec<String> {
    let mut g = Generator::new(seed, 20_000, 1_764_000_000_000).with_first_id(first);
    produce_from(mock, topic, &mut g, n, None).into_iter().map(|tx| tx.event_id).collect()
}

/// Waits until `f` holds, up to `timeout`; panics with `what` otherwise.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Like `wait_for`, but a timeout is returned (to be asserted once the test's other checks
/// ran) instead of panicking at once.
pub fn wait_or_fail_later(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() >= timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Decided + dead-lettered events so far (also those a caught panic or a scoring failure
/// sent to the dead-letter topic).
pub fn handled(m: &Metrics) -> u64 {
    m.counted("decode", "ok")
        + m.counted("decode", "dead_letter")
        + m.counted("worker", "dead_letter")
        + m.counted("score", "dead_letter")
        + m.counted("enrich", "dead_letter")
}

/// A decoded decision record.
#[derive(Debug, Clone)]
pub struct DecisionRow {
    pub event_id: String,
    pub entity_key: String,
    pub action: String,
    pub score: f64,
    pub model_version: String,
    pub source_partition: i32,
    pub source_offset: i64,
    /// Window aggregates and online features, name → value bits, sorted by name (empty
    /// unless `publish.include_aggregates`).
    pub aggregates: Vec<(String, u64)>,
    /// The record says it is a re-decision (false where the schema has no such field).
    pub redelivery: bool,
}

impl DecisionRow {
    /// From a JSON decision record.
    pub fn from_json(v: &serde_json::Value) -> Self {
        let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k}: {v}")).to_string();
        let mut aggregates: Vec<(String, u64)> = v["aggregates"]
            .as_object()
            .map(|m| m.iter().map(|(k, x)| (k.clone(), x.as_f64().unwrap().to_bits())).collect())
            .unwrap_or_default();
        aggregates.sort();
        Self {
            event_id: s("event_id"),
            entity_key: s("entity_key"),
            action: s("action"),
            score: v["score"].as_f64().unwrap_or(f64::NAN),
            model_version: s("model_version"),
            source_partition: v["source_partition"].as_i64().unwrap() as i32,
            source_offset: v["source_offset"].as_i64().unwrap(),
            aggregates,
            redelivery: v.get("redelivery").is_some_and(|r| r == true),
        }
    }
}

/// Decodes JSON decision records.
pub fn json_decision_rows(msgs: &[ReadMessage]) -> Vec<DecisionRow> {
    msgs.iter().map(|m| DecisionRow::from_json(&serde_json::from_slice(&m.payload).unwrap())).collect()
}

/// Decodes Confluent-framed Avro decision records with `schemas/decision.avsc`.
pub fn decode_decisions(msgs: &[ReadMessage]) -> Vec<DecisionRow> {
    let schema = verdict::decode::parse_schema_file(&crate_path("schemas/decision.avsc")).unwrap();
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(&schema).build().unwrap();
    msgs.iter()
        .map(|m| {
            assert_eq!(m.payload[0], 0, "Confluent magic byte");
            let mut body = &m.payload[5..];
            let Value::Record(fields) = reader.read_value(&mut body).unwrap() else { panic!("not a record") };
            let f: HashMap<String, Value> = fields.into_iter().collect();
            let s = |k: &str| match &f[k] {
                Value::String(s) => s.clone(),
                Value::Enum(_, s) => s.clone(),
                v => panic!("{k}: {v:?}"),
            };
            DecisionRow {
                event_id: s("event_id"),
                entity_key: s("entity_key"),
                action: s("action"),
                score: match f["score"] {
                    Value::Double(d) => d,
                    _ => panic!(),
                },
                model_version: s("model_version"),
                source_partition: match f["source_partition"] {
                    Value::Int(i) => i,
                    _ => panic!(),
                },
                source_offset: match f["source_offset"] {
                    Value::Long(i) => i,
                    _ => panic!(),
                },
                aggregates: match f.get("aggregates") {
                    Some(Value::Map(m)) => {
                        let mut a: Vec<(String, u64)> = m
                            .iter()
                            .map(|(k, v)| match v {
                                Value::Double(d) => (k.clone(), d.to_bits()),
                                v => panic!("aggregate {k}: {v:?}"),
                            })
                            .collect();
                        a.sort();
                        a
                    }
                    _ => Vec::new(),
                },
                redelivery: matches!(f.get("redelivery"), Some(Value::Boolean(true))),
            }
        })
        .collect()
}

/// Counts per event id.
pub fn id_counts(rows: &[DecisionRow]) -> HashMap<String, u32> {
    let mut c = HashMap::new();
    for r in rows {
        *c.entry(r.event_id.clone()).or_insert(0) += 1;
    }
    c
}

/// A redis-server on a free port, killed on drop.
pub struct RedisServer {
    child: Option<std::process::Child>,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut s = Self { child: None, port };
        s.restart();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server again on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)");
        self.child = Some(child);
        wait_for("redis-server to accept connections", Duration::from_secs(10), || {
            redis::Client::open(self.url()).and_then(|c| c.get_connection()).is_ok()
        });
    }

    /// Stops the server (SIGKILL), keeping nothing... unless `keep` — see `pause`.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the server (SIGSTOP) so clients time out while its data survives.
    pub fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        std::process::Command::new("kill").args([if frozen { "-STOP" } else { "-CONT" }, &pid]).status().unwrap();
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection().unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Calls of `cmd` (lower case, as `INFO commandstats` names it) the server has answered.
pub fn redis_calls(redis: &RedisServer, cmd: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut redis.conn()).unwrap();
    info.lines()
        .find(|l| l.starts_with(&format!("cmdstat_{cmd}:")))
        .and_then(|l| l.split(&[':', '=', ','][..]).nth(2))
        .map_or(0, |n| n.parse::<u64>().unwrap())
}

/// Config using Redis for enrichment.
pub fn with_redis(cfg: &mut Config, redis: &RedisServer) {
    cfg.enrich.backend = verdict::enrich::Backend::Redis;
    cfg.enrich.redis_url = redis.url();
    cfg.enrich.timeout_ms = 300;
}

/// Produces generated events and returns them.
pub fn produce_transactions(
    mock: &MockKafka,
    topic: &str,
    n: u64,
    seed: u64,
    partition: Option<i32>,
) -> Vec<verdict::demo::Transaction> {
    produce_from(mock, topic, &mut Generator::new(seed, 20_000, 1_764_000_000_000), n, partition)
}

/// Produces the next `n` events of `g` and returns them.
pub fn produce_from(
    mock: &MockKafka,
    topic: &str,
    g: &mut Generator,
    n: u64,
    partition: Option<i32>,
) -> Vec<verdict::demo::Transaction> {
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let tx = g.next_event();
        mock.produce(topic, partition, tx.card_id.as_bytes(), &tx.to_json());
        out.push(tx);
    }
    mock.flush();
    out
}

/// HTTP GET on 127.0.0.1:`port`: (status, body), None if unreachable.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}

/// The value of the first Prometheus series starting with `series` (0 if absent).
pub fn metric(body: &str, series: &str) -> u64 {
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Produces `n` generated events (seed, 2,000 cards) on a thread, in bursts of 1,000 every
/// 40 ms, so a pipeline is mid-stream while a test changes something; returns the events.
pub fn produce_steadily(
    bootstrap: &str,
    seed: u64,
    n: u64,
) -> std::thread::JoinHandle<Vec<verdict::demo::Transaction>> {
    let bootstrap = bootstrap.to_string();
    std::thread::spawn(move || {
        let client = verdict::demo::KafkaClient::connect(&bootstrap);
        let mut g = Generator::new(seed, 2_000, 1_764_000_000_000);
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let tx = g.next_event();
            client.produce("events", None, tx.card_id.as_bytes(), &tx.to_json());
            out.push(tx);
            if i % 1_000 == 999 {
                client.flush();
                std::thread::sleep(Duration::from_millis(40));
            }
        }
        client.flush();
        out
    })
}

/// Every drift record on the `drift` topic (Avro).
pub fn drift_records(mock: &MockKafka) -> Vec<verdict::drift::DriftRecord> {
    let schema = apache_avro::Schema::parse_str(verdict::drift::SCHEMA).unwrap();
    mock.read_all("drift", Duration::from_secs(2))
        .iter()
        .map(|r| verdict::drift::DriftRecord::from_avro(&schema, &r.payload).unwrap())
        .collect()
}

/// Produces generated events (20,000 cards, keyed by card) at a steady rate on a thread,
/// so a pipeline is mid-stream while a test crashes, pauses or rescales it.
pub struct Stream {
    events: std::sync::Arc<std::sync::Mutex<Vec<verdict::demo::Transaction>>>,
    produced: std::sync::Arc<std::sync::atomic::AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Stream {
    /// `n` events with ids from `first_id`, `rate` a second, to `events` at `bootstrap`.
    pub fn start(bootstrap: &str, first_id: u64, n: u64, rate: u64, seed: u64) -> Self {
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::with_capacity(n as usize)));
        let produced = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (ev, pr, bootstrap) = (events.clone(), produced.clone(), bootstrap.to_string());
        let handle = std::thread::spawn(move || {
            let client = verdict::demo::KafkaClient::connect(&bootstrap);
            let mut g = Generator::new(seed, 20_000, 1_764_000_000_000 + first_id as i64 * 20).with_first_id(first_id);
            let start = Instant::now();
            for i in 0..n {
                let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let tx = g.next_event();
                client.produce("events", None, tx.card_id.as_bytes(), &tx.to_json());
                ev.lock().unwrap().push(tx);
                pr.fetch_add(1, Ordering::Relaxed);
            }
            client.flush();
        });
        Self { events, produced, handle: Some(handle) }
    }

    /// Events handed to the producer so far.
    pub fn produced(&self) -> u64 {
        self.produced.load(Ordering::Relaxed)
    }

    /// Waits for the last event to be acknowledged by the broker; returns every event.
    pub fn finish(mut self) -> Vec<verdict::demo::Transaction> {
        self.handle.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

/// `sum / count` of a Prometheus histogram in a /metrics body: (sum, count).
pub fn histogram(body: &str, name: &str) -> (f64, u64) {
    let value = |suffix: &str| {
        body.lines()
            .find(|l| l.starts_with(&format!("{name}_{suffix}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (value("sum"), value("count") as u64)
}

/// Writes the demo model's online feature for each card as a feature pipeline would: the
/// hash `verdict:f:card:{id}` with `chargebacks_90d = value(i)` (i: the card's index) and `_ts`
/// now.
pub fn seed_chargebacks(conn: &mut impl redis::ConnectionLike, cards: &[String], value: impl Fn(usize) -> usize) {
    let now = verdict::publish::acker::wall_clock_ms();
    for (i, card) in cards.iter().enumerate() {
        let key = verdict::enrich::redis::feature_key("verdict", "card", card);
        let _: () =
            redis::cmd("HSET").arg(&key).arg("chargebacks_90d").arg(value(i)).arg("_ts").arg(now).query(conn).unwrap();
    }
}
