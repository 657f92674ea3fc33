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
    let g = Generator::new(seed, 20_000, 1_764_000_000_000).with_first_id(first);
    produce_from(mock, topic, g, n, None).into_iter().map(|tx| tx.event_id).collect()
}

/// Waits until `f` holds, up to `timeout`; panics with `what` otherwise.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
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

/// Config using Redis for enrichment.
pub fn with_redis(cfg: &mut Config, redis: &RedisServer) {
    cfg.enrich.backend = verdict::enrich::Backend::Redis;
    cfg.enrich.redis_url = redis.url();
    cfg.enrich.timeout_ms = 300;
}

/// Per-card (count, sum, distinct merchants) from the stored window state (shared layout).
pub fn stored_totals(conn: &mut redis::Connection, card: &str) -> (u64, f64, u64) {
    stored_blob_totals(conn, "card", card)
}

/// An entity's (count, sum, distinct) from the shared layout: the msgpack blob `s` of
/// `verdict:win:{entity}:{<id>}` and its `d:` fields.
pub fn stored_blob_totals(conn: &mut redis::Connection, entity: &str, id: &str) -> (u64, f64, u64) {
    let script = redis::Script::new(
        "local raw = redis.call('HGET', KEYS[1], 's'); if not raw then return {'0','0','0'} end
         local st = cmsgpack.unpack(raw); local c, s = 0, 0
         for _, b in ipairs(st.b) do c = c + b[2]; s = s + b[3] end
         local d = 0
         for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
           if string.sub(f, 1, 2) == 'd:' then d = d + 1 end
         end
         return {tostring(c), string.format('%.17g', s), tostring(d)}",
    );
    let r: Vec<String> = script.key(verdict::enrich::redis::window_key("verdict", entity, id)).invoke(conn).unwrap();
    (r[0].parse().unwrap(), r[1].parse().unwrap(), r[2].parse().unwrap())
}

/// Partitions tried when reading a partition-owned entity's state.
pub const MAX_PARTITIONS: i32 = 16;

/// Which layout writes `entity`'s state (`HGET verdict:layout <entity>`): `partition`,
/// `shared`, or None before any instance recorded one.
pub fn layout(conn: &mut redis::Connection, entity: &str) -> Option<String> {
    redis::cmd("HGET").arg("verdict:layout").arg(entity).query(conn).unwrap()
}

/// An entity's (count, sum, distinct) in Redis, from whichever layout `verdict:layout` names.
pub fn stored_entity_totals(conn: &mut redis::Connection, entity: &str, id: &str) -> (u64, f64, u64) {
    if layout(conn, entity).as_deref() == Some("partition") {
        partition_totals(conn, entity, id, MAX_PARTITIONS)
    } else {
        stored_blob_totals(conn, entity, id)
    }
}

/// A partition-owned entity's checkpointed (count, sum, distinct); zeros when none.
pub fn partition_totals(conn: &mut redis::Connection, entity: &str, id: &str, partitions: i32) -> (u64, f64, u64) {
    verdict::enrich::owned::stored_state(conn, "verdict", "events", partitions, entity, id)
        .map_or((0, 0.0, 0), |s| s.totals())
}

/// Reference (count, sum, distinct values) per entity id.
pub type Reference = HashMap<String, (u64, f64, std::collections::HashSet<String>)>;

/// Reference totals per card from the produced events.
pub fn reference_totals(events: &[verdict::demo::Transaction]) -> Reference {
    reference_by(events.iter().map(|e| (e.card_id.as_str(), e.amount, e.merchant_id.as_str())))
}

/// Reference totals from (entity id, value, distinct value) triples.
pub fn reference_by<'a>(items: impl Iterator<Item = (&'a str, f64, &'a str)>) -> Reference {
    let mut m = Reference::new();
    for (id, value, distinct) in items {
        let r = m.entry(id.to_string()).or_default();
        r.0 += 1;
        r.1 += value;
        r.2.insert(distinct.to_string());
    }
    m
}

/// Asserts that Redis holds exactly the reference aggregates for every card, reading the
/// layout `verdict:layout` names (partition-owned checkpoints or the shared blob).
pub fn assert_windows_exact(redis: &RedisServer, events: &[verdict::demo::Transaction]) {
    assert_entity_exact(&mut redis.conn(), "card", &reference_totals(events));
}

/// Asserts that Redis holds exactly `reference` for every id of `entity`.
pub fn assert_entity_exact(conn: &mut redis::Connection, entity: &str, reference: &Reference) {
    let layout = layout(conn, entity);
    for (id, (count, sum, distinct)) in reference {
        let (c, s, d) = match layout.as_deref() {
            Some("partition") => partition_totals(conn, entity, id, MAX_PARTITIONS),
            _ => stored_blob_totals(conn, entity, id),
        };
        assert_eq!(c, *count, "{entity} {id} ({layout:?} layout): window count");
        assert!((s - sum).abs() <= 1e-6 * sum.abs().max(1.0), "{entity} {id} ({layout:?} layout): sum {s} vs {sum}");
        assert_eq!(d, distinct.len() as u64, "{entity} {id} ({layout:?} layout): distinct values");
    }
}

/// The partition meta hash `verdict:po:{<topic>/<p>}`.
pub fn partition_meta_key(topic: &str, partition: i32) -> String {
    format!("verdict:po:{{{topic}/{partition}}}")
}

/// Per-partition checkpoint (resume) offsets of `topic` (`HGET <meta> offset`); None for a
/// partition never checkpointed.
pub fn checkpoint_offsets(conn: &mut redis::Connection, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    meta_offsets(conn, topic, partitions, "offset")
}

/// Per-partition offsets below which every event's decision is acknowledged (`HGET <meta> acked`).
pub fn acked_offsets(conn: &mut redis::Connection, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    meta_offsets(conn, topic, partitions, "acked")
}

fn meta_offsets(conn: &mut redis::Connection, topic: &str, partitions: i32, field: &str) -> Vec<Option<i64>> {
    (0..partitions)
        .map(|p| {
            let v: Option<String> =
                redis::cmd("HGET").arg(partition_meta_key(topic, p)).arg(field).query(conn).unwrap();
            v.filter(|s| !s.is_empty()).map(|s| s.parse().unwrap())
        })
        .collect()
}

/// The input events read back from a topic (JSON payloads), with their partition and offset.
#[derive(Debug, Clone)]
pub struct InputEvent {
    pub partition: i32,
    pub offset: i64,
    pub card: String,
    pub amount: f64,
    pub merchant: String,
}

/// Reads every event of `topic` back, with partition and offset.
pub fn read_inputs(client: &verdict::demo::KafkaClient, topic: &str) -> Vec<InputEvent> {
    client
        .read_all(topic, Duration::from_secs(2))
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            InputEvent {
                partition: m.partition,
                offset: m.offset,
                card: v["card_id"].as_str().unwrap().to_string(),
                amount: v["amount"].as_f64().unwrap(),
                merchant: v["merchant_id"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

/// Checks, partition by partition, that the checkpointed card states equal the reference
/// computed from that partition's events below its checkpoint offset (cards with no event
/// below it: no state). A partition whose offset moves while it is read (an instance is
/// still checkpointing it) is read again, up to 5 times, then skipped. Returns (partitions
/// compared, skipped, cards compared).
pub fn assert_checkpoints_match_inputs(
    conn: &mut redis::Connection,
    inputs: &[InputEvent],
    partitions: i32,
) -> (usize, usize, usize) {
    let (mut compared, mut skipped, mut cards) = (0, 0, 0);
    for p in 0..partitions {
        let mut done = false;
        for _ in 0..5 {
            let before = checkpoint_offsets(conn, "events", partitions)[p as usize];
            let below = before.unwrap_or(0);
            let mine: Vec<&InputEvent> = inputs.iter().filter(|e| e.partition == p).collect();
            let reference = reference_by(
                mine.iter().filter(|e| e.offset < below).map(|e| (e.card.as_str(), e.amount, e.merchant.as_str())),
            );
            let ids: std::collections::HashSet<&str> = mine.iter().map(|e| e.card.as_str()).collect();
            let mut found = Vec::with_capacity(ids.len());
            for id in &ids {
                let key = format!("{}:card:{id}", partition_meta_key("events", p));
                let fields: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL").arg(&key).query(conn).unwrap();
                let totals = if fields.is_empty() {
                    (0, 0.0, 0)
                } else {
                    verdict::enrich::owned::stored_state(conn, "verdict", "events", p + 1, "card", id)
                        .map_or((0, 0.0, 0), |s| s.totals())
                };
                found.push((*id, totals));
            }
            if checkpoint_offsets(conn, "events", partitions)[p as usize] != before {
                continue;
            }
            for (id, (c, s, d)) in found {
                let (count, sum, distinct) = reference.get(id).map_or((0, 0.0, 0), |r| (r.0, r.1, r.2.len() as u64));
                assert_eq!(c, count, "partition {p} (checkpoint {before:?}): card {id}: window count");
                assert!(
                    (s - sum).abs() <= 1e-6 * sum.abs().max(1.0),
                    "partition {p} (checkpoint {before:?}): card {id}: sum {s} vs {sum}"
                );
                assert_eq!(d, distinct, "partition {p} (checkpoint {before:?}): card {id}: distinct merchants");
                cards += 1;
            }
            done = true;
            break;
        }
        if done {
            compared += 1;
        } else {
            skipped += 1;
        }
    }
    (compared, skipped, cards)
}

/// What the decisions say about re-decisions.
#[derive(Debug, Default, Clone, Copy)]
pub struct Redecisions {
    /// Events decided more than once.
    pub events: usize,
    /// Decisions beyond the first of each event.
    pub copies: usize,
    /// Decisions that carry `redelivery`.
    pub flagged: usize,
}

/// Checks the decisions of `events`: each has one at least, none is of an event never
/// produced, every copy of an event's decision is of the same input record with a bit-equal
/// score, the same action and bit-equal aggregates, and at least one copy of each event is
/// not flagged `redelivery` (the flag marks a copy of a decision published before).
pub fn check_redecisions(events: &[verdict::demo::Transaction], rows: &[DecisionRow]) -> Redecisions {
    let mut by_id: HashMap<&str, Vec<&DecisionRow>> = HashMap::new();
    for r in rows {
        by_id.entry(&r.event_id).or_default().push(r);
    }
    let missing: Vec<&str> =
        events.iter().map(|e| e.event_id.as_str()).filter(|id| !by_id.contains_key(id)).take(5).collect();
    assert!(missing.is_empty(), "events without a decision, e.g. {missing:?}");
    assert_eq!(by_id.len(), events.len(), "decisions for events never produced");
    let mut out = Redecisions::default();
    let mut differing = Vec::new();
    for (id, rs) in &by_id {
        out.flagged += rs.iter().filter(|r| r.redelivery).count();
        assert!(rs.iter().any(|r| !r.redelivery), "{id}: every decision of it is flagged redelivery");
        if rs.len() < 2 {
            continue;
        }
        out.events += 1;
        out.copies += rs.len() - 1;
        let first = rs[0];
        for r in &rs[1..] {
            assert_eq!(
                (r.source_partition, r.source_offset),
                (first.source_partition, first.source_offset),
                "{id}: decided twice from different input records"
            );
            if r.score.to_bits() != first.score.to_bits() || r.action != first.action || r.aggregates != first.aggregates
            {
                differing.push(format!(
                    "{id}: score {} vs {}, action {} vs {}, aggregates {:?} vs {:?}",
                    first.score, r.score, first.action, r.action, first.aggregates, r.aggregates
                ));
            }
        }
    }
    assert!(
        differing.is_empty(),
        "{} of {} re-decisions differ from the first decision, e.g.\n{}",
        differing.len(),
        out.copies,
        differing.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
    out
}

/// Produces generated events and returns them.
pub fn produce_transactions(
    mock: &MockKafka,
    topic: &str,
    n: u64,
    seed: u64,
    partition: Option<i32>,
) -> Vec<verdict::demo::Transaction> {
    produce_from(mock, topic, Generator::new(seed, 20_000, 1_764_000_000_000), n, partition)
}

fn produce_from(
    mock: &MockKafka,
    topic: &str,
    mut g: Generator,
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
