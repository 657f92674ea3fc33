//! Configuration of the consumer: the Kafka connection, topics and client overrides, and how events are batched.
//!
//! `config` composes this into the one tree ([`crate::config::Config`]) and re-exports it;
//! serde names, defaults and `deny_unknown_fields` are the file format, so change them there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Kafka connection, topics and client overrides.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Consumer group id; instances sharing it split the partitions.
    pub group_id: String,
    /// Topics to consume events from.
    pub input_topics: Vec<String>,
    /// Topic receiving every decision record.
    pub decisions_topic: String,
    /// Topic receiving a copy of every `review` decision.
    pub review_topic: String,
    /// Topic receiving every message that could not be decided, with its reason.
    pub dead_letter_topic: String,
    /// How often stored offsets are committed (ms).
    pub commit_interval_ms: u64,
    /// Producer compression codec: none, gzip, snappy, lz4, zstd.
    pub compression: String,
    /// Extra librdkafka consumer properties (override the ones verdict sets).
    pub consumer: BTreeMap<String, String>,
    /// Extra librdkafka producer properties (override the ones verdict sets).
    pub producer: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".into(),
            group_id: "verdict".into(),
            input_topics: vec!["events".into()],
            decisions_topic: "decisions".into(),
            review_topic: "review".into(),
            dead_letter_topic: "dead-letter".into(),
            commit_interval_ms: 1000,
            compression: "lz4".into(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
        }
    }
}

/// Batching and in-flight limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// A batch is dispatched when it holds this many events...
    pub max_events: usize,
    /// ...or when its first event has waited this long (ms), whichever comes first.
    pub max_wait_ms: u64,
    /// Batches queued for the workers; when full, the consumer pauses its partitions.
    pub queue_batches: usize,
    /// Batches decided but not yet acknowledged by the broker before workers wait.
    pub max_unacked_batches: usize,
    /// Latency budget for scoring one batch, µs: batches are capped to what fits (measured
    /// cost per event), between 8 and `max_events`. 0: batches up to `max_events`.
    pub score_budget_us: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { max_events: 512, max_wait_ms: 2, queue_batches: 4, max_unacked_batches: 16, score_budget_us: 0 }
    }
}
