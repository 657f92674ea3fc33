//! The Kafka connection, topics and client overrides: read by the consume stage (group,
//! input topics, consumer properties) and the publish stage (output topics, producer
//! properties), so it lives below both.
//!
//! `config` composes this into the one tree ([`crate::config::Config`], section `[kafka]`);
//! serde names, defaults and `deny_unknown_fields` are the file format, so change them here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::kafka_security::KafkaSecurity;

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
    /// TLS and SASL for every Kafka client (`[kafka.security]`).
    pub security: KafkaSecurity,
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
            security: KafkaSecurity::default(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
        }
    }
}
