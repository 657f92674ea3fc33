//! The backtest reading a Kafka topic range (`--topic T --from … --to …`) instead of a file:
//! every partition from its start to its end position, merged into one stream in timestamp
//! order (the order the windows see events in), with the service's brokers and security
//! (`[kafka]` of the baseline config). Reads only: no group, no commits. Labels may come
//! from a topic the same way (the whole topic up to its end when the backtest starts).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::BacktestError;
use crate::core::kafka::KafkaConfig;
use crate::lograte::LimitedContext;

/// How long the brokers may take to answer metadata, watermark and offset queries.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// A fetch that returns nothing for this long while records are still due is an error
/// (records deleted by retention, a broker gone): the backtest says so instead of hanging.
const STALL: Duration = Duration::from_secs(60);

/// A position in every partition of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The partition's first retained offset (`--from`) or its end when the backtest
    /// starts (`--to`).
    Edge,
    /// The same offset in every partition (`--to`: exclusive).
    Offset(i64),
    /// Records timestamped at or after this time (ms since the epoch; `--to`: before it).
    /// The brokers' offset-by-time lookup starts the read where it can.
    Time(i64),
}

impl Position {
    /// Parses `earliest` / `end`, an offset (`1200`), or a time (RFC 3339
    /// `2026-11-01T00:00:00Z`, or `@` and ms since the epoch).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if matches!(s, "earliest" | "end" | "latest") {
            return Ok(Self::Edge);
        }
        if let Some(ms) = s.strip_prefix('@') {
            return ms.parse().map(Self::Time).map_err(|_| format!("'{s}': @ takes milliseconds since the epoch"));
        }
        if let Ok(n) = s.parse::<i64>() {
            return if n >= 0 { Ok(Self::Offset(n)) } else { Err(format!("'{s}': offsets are not negative")) };
        }
        s.parse::<jiff::Timestamp>()
            .map(|t| Self::Time(t.as_millisecond()))
            .map_err(|_| format!("'{s}': expected earliest/end, an offset, an RFC 3339 time or @<ms since the epoch>"))
    }
}

/// One partition's share of the range.
struct Part {
    partition: i32,
    /// Next offset due.
    next: i64,
    /// Exclusive end.
    end: i64,
    /// Fetched, not yet handed out: (timestamp, payload).
    queue: VecDeque<(i64, Vec<u8>)>,
}

/// Records kept by timestamp: `[from, to)` in ms, each bound optional.
#[derive(Debug, Clone, Copy)]
struct Times {
    from: Option<i64>,
    to: Option<i64>,
}

impl Times {
    fn keeps(self, ts: i64) -> bool {
        self.from.is_none_or(|f| ts >= f) && self.to.is_none_or(|t| ts < t)
    }
}

/// A topic range, read in timestamp order across its partitions.
pub struct TopicRange {
    consumer: BaseConsumer<LimitedContext>,
    topic: String,
    parts: Vec<Part>,
    times: Times,
    /// Records in the range (offsets; records outside a time bound are skipped as read).
    pub total: u64,
    read: u64,
    /// Records fetched in the range (kept or not).
    seen: u64,
    /// (partition, first offset, end offset) per partition, for the report.
    pub bounds: Vec<(i32, i64, i64)>,
}

fn consumer(kafka: &KafkaConfig) -> Result<BaseConsumer<LimitedContext>, BacktestError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &kafka.brokers)
        .set("group.id", "verdict-backtest")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    let security = kafka.security.properties().map_err(|e| BacktestError::Input(format!("kafka.security: {e}")))?;
    for (k, v) in security {
        cc.set(k, v);
    }
    for (k, v) in &kafka.consumer {
        cc.set(k, v);
    }
    cc.create_with_context(LimitedContext::new("backtest_consumer", None)).map_err(|e| {
        let secrets = crate::redact::Secrets::from_values(kafka.security.secret_values());
        BacktestError::Input(format!("kafka consumer: {}", secrets.scrub(&e.to_string())))
    })
}

fn kafka_err(what: &str, e: rdkafka::error::KafkaError) -> BacktestError {
    BacktestError::Input(format!("{what}: {e}"))
}

/// Per partition, the offset `at` resolves to (`Edge` resolves to `edge`).
fn resolve(
    c: &BaseConsumer<LimitedContext>,
    topic: &str,
    partitions: &[i32],
    at: Position,
    edge: impl Fn(i64, i64) -> i64,
) -> Result<Vec<i64>, BacktestError> {
    let mut marks = Vec::new();
    for &p in partitions {
        marks.push(c.fetch_watermarks(topic, p, QUERY_TIMEOUT).map_err(|e| kafka_err("watermarks", e))?);
    }
    match at {
        Position::Edge => Ok(marks.iter().map(|&(lo, hi)| edge(lo, hi)).collect()),
        Position::Offset(n) => Ok(marks.iter().map(|&(lo, hi)| n.clamp(lo, hi)).collect()),
        Position::Time(ms) => {
            let mut tpl = TopicPartitionList::new();
            for &p in partitions {
                tpl.add_partition_offset(topic, p, Offset::Offset(ms)).map_err(|e| kafka_err("offsets", e))?;
            }
            let found = c.offsets_for_times(tpl, QUERY_TIMEOUT).map_err(|e| kafka_err("offsets for times", e))?;
            partitions
                .iter()
                .zip(&marks)
                .map(|(&p, &(lo, hi))| {
                    let e = found.find_partition(topic, p);
                    Ok(match e.map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o.clamp(lo, hi),
                        // No offset for the time (no record at or after it, or a broker that
                        // cannot look offsets up by time, like the librdkafka mock): the edge,
                        // and the records' timestamps decide.
                        _ => edge(lo, hi),
                    })
                })
                .collect()
        }
    }
}

impl TopicRange {
    /// Opens `topic` from `from` to `to` (exclusive) in every partition.
    pub fn open(kafka: &KafkaConfig, topic: &str, from: Position, to: Position) -> Result<Self, BacktestError> {
        let c = consumer(kafka)?;
        let md = c.fetch_metadata(Some(topic), QUERY_TIMEOUT).map_err(|e| kafka_err("metadata", e))?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(BacktestError::Input(format!("topic '{topic}': not found on {}", kafka.brokers)));
        }
        let starts = resolve(&c, topic, &partitions, from, |lo, _| lo)?;
        let ends = resolve(&c, topic, &partitions, to, |_, hi| hi)?;
        let mut tpl = TopicPartitionList::new();
        let mut parts = Vec::new();
        let mut bounds = Vec::new();
        for ((&p, &start), &end) in partitions.iter().zip(&starts).zip(&ends) {
            bounds.push((p, start, end.max(start)));
            if end > start {
                tpl.add_partition_offset(topic, p, Offset::Offset(start)).map_err(|e| kafka_err("assign", e))?;
                parts.push(Part { partition: p, next: start, end, queue: VecDeque::new() });
            }
        }
        let total = parts.iter().map(|p| (p.end - p.next) as u64).sum();
        if !parts.is_empty() {
            c.assign(&tpl).map_err(|e| kafka_err("assign", e))?;
        }
        let time = |p: Position| match p {
            Position::Time(ms) => Some(ms),
            _ => None,
        };
        let times = Times { from: time(from), to: time(to) };
        Ok(Self { consumer: c, topic: topic.to_string(), parts, times, total, read: 0, seen: 0, bounds })
    }

    /// Polls until every partition with records due has one queued.
    fn fill(&mut self) -> Result<(), BacktestError> {
        let mut last = Instant::now();
        while self.parts.iter().any(|p| p.queue.is_empty() && p.next < p.end) {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let Some(part) = self.parts.iter_mut().find(|p| p.partition == m.partition()) else { continue };
                    if m.offset() < part.next || m.offset() >= part.end {
                        continue;
                    }
                    part.next = m.offset() + 1;
                    self.seen += 1;
                    let ts = m.timestamp().to_millis().unwrap_or(0);
                    if self.times.keeps(ts) {
                        part.queue.push_back((ts, m.payload().unwrap_or_default().to_vec()));
                    }
                    if part.next >= part.end {
                        let mut done = TopicPartitionList::new();
                        done.add_partition(&self.topic, part.partition);
                        let _ = self.consumer.pause(&done);
                    }
                    last = Instant::now();
                }
                Some(Err(e)) => return Err(kafka_err(&format!("reading '{}'", self.topic), e)),
                None if last.elapsed() > STALL => {
                    let due: Vec<(i32, i64, i64)> =
                        self.parts.iter().filter(|p| p.next < p.end).map(|p| (p.partition, p.next, p.end)).collect();
                    return Err(BacktestError::Input(format!(
                        "topic '{}': nothing arrived for {STALL:?} with records still due (partition, next, end): \
                         {due:?}",
                        self.topic
                    )));
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Appends up to `n` (record number from 1, payload) pairs in timestamp order (ties: the
    /// lower partition first); false at the end of the range.
    pub fn next_batch(&mut self, n: usize, out: &mut Vec<(u64, Vec<u8>)>) -> Result<bool, BacktestError> {
        while out.len() < n {
            self.fill()?;
            let next = self
                .parts
                .iter_mut()
                .filter(|p| !p.queue.is_empty())
                .min_by_key(|p| (p.queue.front().map(|q| q.0), p.partition));
            let Some(part) = next else { break };
            let (_, payload) = part.queue.pop_front().expect("a non-empty queue");
            self.read += 1;
            out.push((self.read, payload));
        }
        Ok(!out.is_empty())
    }

    /// Share of the range read so far.
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.seen.saturating_sub(self.parts.iter().map(|p| p.queue.len() as u64).sum()) as f64 / self.total as f64
        }
    }
}

/// Reads a labels topic whole (up to its end when called): `{"event_id", "label"}` JSON
/// messages, later ones winning; unreadable messages are counted and skipped.
pub fn labels(kafka: &KafkaConfig, topic: &str) -> Result<(HashMap<String, u8>, u64), BacktestError> {
    let mut range = TopicRange::open(kafka, topic, Position::Edge, Position::Edge)?;
    let (mut out, mut unreadable) = (HashMap::new(), 0);
    let mut batch = Vec::new();
    while range.next_batch(10_000, &mut batch)? {
        for (_, payload) in batch.drain(..) {
            match crate::drift::labels::parse_label(&payload) {
                Some((id, positive)) => {
                    out.insert(id, u8::from(positive));
                }
                None => unreadable += 1,
            }
        }
    }
    Ok((out, unreadable))
}
