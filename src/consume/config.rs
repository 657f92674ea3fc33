//! Configuration of the consumer: how events are batched. The Kafka connection, topics and
//! client overrides ([`KafkaConfig`]) live in `core`: the publish stage reads them too.
//!
//! `config` composes this into the one tree ([`crate::config::Config`]) and re-exports it;
//! serde names, defaults and `deny_unknown_fields` are the file format, so change them there.

use serde::{Deserialize, Serialize};

pub use crate::core::kafka::KafkaConfig;

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
