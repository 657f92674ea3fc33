//! Window state in Redis (either layout), checkpoint offsets, and what the decisions say
//! about re-decisions: the checks of the crash, rebalance and zombie tests.

use std::collections::HashMap;
use std::time::Duration;

use super::{DecisionRow, RedisServer};

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

/// Which layout writes `entity`'s state (`HGET verdict:layout <entity>`): `partition-v2`,
/// `shared`, or None before any instance recorded one.
pub fn layout(conn: &mut redis::Connection, entity: &str) -> Option<String> {
    redis::cmd("HGET").arg("verdict:layout").arg(entity).query(conn).unwrap()
}

/// An entity's (count, sum, distinct) in Redis, from whichever layout `verdict:layout` names.
pub fn stored_entity_totals(conn: &mut redis::Connection, entity: &str, id: &str) -> (u64, f64, u64) {
    if layout(conn, entity).as_deref() == Some("partition-v2") {
        partition_totals(conn, entity, id, MAX_PARTITIONS)
    } else {
        stored_blob_totals(conn, entity, id)
    }
}

/// A partition-owned entity's checkpointed (count, sum, distinct); zeros when none.
pub fn partition_totals(conn: &mut redis::Connection, entity: &str, id: &str, partitions: i32) -> (u64, f64, u64) {
    let spec = card_spec();
    verdict::enrich::owned::stored_state(conn, "verdict", "events", partitions, (entity, &spec), id)
        .map_or((0, 0.0, 0), |s| s.totals())
}

/// The windows checkpoints are read with: the demo card's (1-minute, 5-minute and 1-hour
/// buckets). A state written under the default windows (one 1-minute width) reads the same.
fn card_spec() -> verdict::enrich::WindowSpec {
    verdict::enrich::WindowSpec::of_entity(&verdict::config::demo().enrich.entities[0], 60)
}

/// What a reference entity saw: event count, value sum, each distinct value's latest event
/// time, and its newest event time.
#[derive(Debug, Default, Clone)]
pub struct Ref {
    pub count: u64,
    pub sum: f64,
    pub seen: HashMap<String, i64>,
    pub newest: i64,
}

impl Ref {
    /// The distinct values a partition-owned entity of `spec` still remembers as of its
    /// newest event (those within the horizon of a window that counts them).
    pub fn remembered(&self, spec: &verdict::enrich::WindowSpec) -> u64 {
        self.seen.values().filter(|&&t| spec.remembers(t, self.newest)).count() as u64
    }
}

/// Reference per entity id.
pub type Reference = HashMap<String, Ref>;

/// Reference totals per card from the produced events.
pub fn reference_totals(events: &[verdict::demo::Transaction]) -> Reference {
    reference_by(events.iter().map(|e| (e.card_id.as_str(), e.amount, e.merchant_id.as_str(), e.event_time)))
}

/// Reference totals from (entity id, value, distinct value, event time) items.
pub fn reference_by<'a>(items: impl Iterator<Item = (&'a str, f64, &'a str, i64)>) -> Reference {
    let mut m = Reference::new();
    for (id, value, distinct, t) in items {
        let r = m.entry(id.to_string()).or_insert_with(|| Ref { newest: i64::MIN, ..Ref::default() });
        r.count += 1;
        r.sum += value;
        r.newest = r.newest.max(t);
        let last = r.seen.entry(distinct.to_string()).or_insert(t);
        *last = (*last).max(t);
    }
    m
}

/// Asserts that Redis holds exactly the reference aggregates for every card, reading the
/// layout `verdict:layout` names (partition-owned checkpoints or the shared blob).
pub fn assert_windows_exact(redis: &RedisServer, events: &[verdict::demo::Transaction]) {
    assert_entity_exact(&mut redis.conn(), "card", &reference_totals(events));
}

/// Asserts that Redis holds exactly `reference` for every id of `entity`: every distinct
/// value in the shared blob, the ones the demo card's windows remember in partition-owned
/// checkpoints.
pub fn assert_entity_exact(conn: &mut redis::Connection, entity: &str, reference: &Reference) {
    let layout = layout(conn, entity);
    let spec = card_spec();
    for (id, r) in reference {
        let ((c, s, d), distinct) = match layout.as_deref() {
            Some("partition-v2") => (partition_totals(conn, entity, id, MAX_PARTITIONS), r.remembered(&spec)),
            _ => (stored_blob_totals(conn, entity, id), r.seen.len() as u64),
        };
        let (count, sum) = (r.count, r.sum);
        assert_eq!(c, count, "{entity} {id} ({layout:?} layout): window count");
        assert!((s - sum).abs() <= 1e-6 * sum.abs().max(1.0), "{entity} {id} ({layout:?} layout): sum {s} vs {sum}");
        assert_eq!(d, distinct, "{entity} {id} ({layout:?} layout): distinct values");
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
    pub event_id: String,
    pub partition: i32,
    pub offset: i64,
    pub card: String,
    pub amount: f64,
    pub merchant: String,
    /// Event time (ms).
    pub time_ms: i64,
}

/// Reads `topic` back up to each partition's high watermark at the time of the call (a
/// stream may still be producing), with partition and offset.
pub fn read_inputs(client: &verdict::demo::KafkaClient, topic: &str) -> Vec<InputEvent> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", client.bootstrap())
        .set("group.id", "inputs-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let partitions = md.topics()[0].partitions().len() as i32;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut high = Vec::new();
    for p in 0..partitions {
        high.push(consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1);
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut next = vec![0i64; partitions as usize];
    let mut out = Vec::new();
    let start = std::time::Instant::now();
    while next.iter().zip(&high).any(|(n, h)| n < h) {
        assert!(start.elapsed() < Duration::from_secs(120), "reading {topic} back: at {next:?} of {high:?}");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let p = m.partition() as usize;
                next[p] = m.offset() + 1;
                if m.offset() >= high[p] {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                out.push(InputEvent {
                    event_id: v["event_id"].as_str().unwrap().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    card: v["card_id"].as_str().unwrap().to_string(),
                    amount: v["amount"].as_f64().unwrap(),
                    merchant: v["merchant_id"].as_str().unwrap().to_string(),
                    time_ms: v["event_time"].as_i64().unwrap(),
                });
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// Every partition's checkpoint of `topic` read in one atomic step (a Lua script: no
/// checkpoint write lands between two reads): its offset and the fields of each stored
/// `entity` hash, by id.
pub type Snapshot = Vec<(Option<i64>, HashMap<String, Vec<(Vec<u8>, Vec<u8>)>>)>;

/// Reads [`Snapshot`] of `partitions` partitions of `topic`.
pub fn checkpoint_snapshot(conn: &mut redis::Connection, topic: &str, entity: &str, partitions: i32) -> Snapshot {
    let script = redis::Script::new(
        "local out = {}
         for p = 0, tonumber(ARGV[1]) - 1 do
           local meta = 'verdict:po:{' .. ARGV[2] .. '/' .. p .. '}'
           local part = {redis.call('HGET', meta, 'offset') or ''}
           for _, k in ipairs(redis.call('KEYS', meta .. ':' .. ARGV[3] .. ':*')) do
             table.insert(part, k)
             table.insert(part, redis.call('HGETALL', k))
           end
           table.insert(out, part)
         end
         return out",
    );
    let parts: Vec<redis::Value> = script.arg(partitions).arg(topic).arg(entity).invoke(conn).unwrap();
    let bytes = |v: &redis::Value| -> Vec<u8> { redis::from_redis_value(v.clone()).unwrap() };
    parts
        .iter()
        .enumerate()
        .map(|(p, part)| {
            let redis::Value::Array(items) = part else { panic!("snapshot of partition {p}: {part:?}") };
            let offset = String::from_utf8(bytes(&items[0])).unwrap();
            let prefix = format!("{}:{entity}:", partition_meta_key(topic, p as i32));
            let mut states = HashMap::new();
            for kv in items[1..].chunks(2) {
                let key = String::from_utf8(bytes(&kv[0])).unwrap();
                let flat: Vec<Vec<u8>> = redis::from_redis_value(kv[1].clone()).unwrap();
                let fields = flat.chunks(2).map(|f| (f[0].clone(), f[1].clone())).collect();
                states.insert(key.strip_prefix(&prefix).unwrap().to_string(), fields);
            }
            ((!offset.is_empty()).then(|| offset.parse().unwrap()), states)
        })
        .collect()
}

/// Checks, partition by partition, that the checkpointed card states equal the reference
/// computed from that partition's events below its checkpoint offset: every card with an
/// event below it, and every stored card (one with none must hold nothing). The checkpoints
/// are read in one atomic step first, the inputs after (re-read while they do not yet reach
/// a checkpoint offset), so an instance still checkpointing cannot tear the comparison.
/// Returns (partitions checkpointed, partitions not, cards compared).
pub fn assert_checkpoints_match_inputs(
    conn: &mut redis::Connection,
    mut read: impl FnMut() -> Vec<InputEvent>,
    partitions: i32,
) -> (usize, usize, usize) {
    let snapshot = checkpoint_snapshot(conn, "events", "card", partitions);
    let covers = |inputs: &[InputEvent]| {
        snapshot.iter().enumerate().all(|(p, (offset, _))| {
            let end = inputs.iter().filter(|e| e.partition == p as i32).map(|e| e.offset + 1).max().unwrap_or(0);
            end >= offset.unwrap_or(0)
        })
    };
    let mut inputs = read();
    for _ in 0..20 {
        if covers(&inputs) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        inputs = read();
    }
    assert!(covers(&inputs), "the inputs read back do not reach the checkpoint offsets");
    let (mut checkpointed, mut cards) = (0, 0);
    for (p, (offset, states)) in snapshot.iter().enumerate() {
        let below = offset.unwrap_or(0);
        checkpointed += usize::from(offset.is_some());
        let reference = reference_by(
            inputs
                .iter()
                .filter(|e| e.partition == p as i32 && e.offset < below)
                .map(|e| (e.card.as_str(), e.amount, e.merchant.as_str(), e.time_ms)),
        );
        let ids: std::collections::HashSet<&str> =
            reference.keys().map(String::as_str).chain(states.keys().map(String::as_str)).collect();
        let spec = card_spec();
        for id in ids {
            let (c, s, d) = states.get(id).map_or((0, 0.0, 0), |fields| {
                verdict::enrich::EntityState::from_fields(
                    &spec,
                    fields.iter().map(|(f, v)| (f.as_slice(), v.as_slice())),
                )
                .unwrap()
                .totals()
            });
            let (count, sum, distinct) =
                reference.get(id).map_or((0, 0.0, 0), |r| (r.count, r.sum, r.remembered(&spec)));
            assert_eq!(c, count, "partition {p} (checkpoint {offset:?}): card {id}: window count");
            assert!(
                (s - sum).abs() <= 1e-6 * sum.abs().max(1.0),
                "partition {p} (checkpoint {offset:?}): card {id}: sum {s} vs {sum}"
            );
            assert_eq!(d, distinct, "partition {p} (checkpoint {offset:?}): card {id}: distinct merchants");
            cards += 1;
        }
    }
    (checkpointed, snapshot.len() - checkpointed, cards)
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
            if r.score.to_bits() != first.score.to_bits()
                || r.action != first.action
                || r.aggregates != first.aggregates
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

/// Reads a decisions topic from the beginning, continuously, on a thread (JSON or Avro
/// records): a mock partition keeps only ~5 MiB, so a long stream's first decisions are
/// gone unless read while the test runs.
pub struct DecisionTail {
    rows: std::sync::Arc<std::sync::Mutex<Vec<DecisionRow>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl DecisionTail {
    /// Tails every partition of `topic` at `bootstrap`.
    pub fn start(bootstrap: &str, topic: &str) -> Self {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::Message;
        use std::sync::atomic::Ordering;
        let rows = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "decision-tail")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "20")
            .create()
            .unwrap();
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..md.topics()[0].partitions().len() as i32 {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let (r, st) = (rows.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => {
                        let payload = m.payload().unwrap_or(&[]);
                        let row = if payload.first() == Some(&0) {
                            let msg = verdict::demo::ReadMessage {
                                partition: m.partition(),
                                offset: m.offset(),
                                key: None,
                                payload: payload.to_vec(),
                                headers: vec![],
                            };
                            super::decode_decisions(&[msg]).pop().unwrap()
                        } else {
                            DecisionRow::from_json(&serde_json::from_slice(payload).unwrap())
                        };
                        r.lock().unwrap().push(row);
                    }
                    Some(Err(e)) => panic!("tailing decisions: {e}"),
                    None => {}
                }
            }
        });
        Self { rows, stop, handle: Some(handle) }
    }

    /// Every decision read so far, in the order read.
    pub fn rows(&self) -> Vec<DecisionRow> {
        self.rows.lock().unwrap().clone()
    }

    /// Every decision, once nothing new arrived for a second.
    pub fn settled_rows(&self) -> Vec<DecisionRow> {
        let mut n = self.rows.lock().unwrap().len();
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = self.rows.lock().unwrap().len();
            if now == n {
                return self.rows();
            }
            n = now;
        }
    }

    /// Whether every event of `events` has a decision.
    pub fn all_decided(&self, events: &[verdict::demo::Transaction]) -> bool {
        let rows = self.rows.lock().unwrap();
        let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
        events.iter().all(|e| ids.contains(e.event_id.as_str()))
    }
}

impl Drop for DecisionTail {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
