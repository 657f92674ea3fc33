//! What a stage needs to write records out without naming the producer: the record
//! encoding (`publish.format`, shared by decision and drift records) and a sink that queues
//! a record on a topic. The publish stage's producer implements [`RecordSink`]; the drift
//! publisher writes its records through it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Encodings of decision records (and drift records, which follow `publish.format`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DecisionFormat {
    /// Confluent wire format with `schemas/decision.avsc`.
    Avro,
    /// One JSON object per record.
    Json,
}

/// Why a record could not be queued (the producer's own error, as text with its class).
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Queues records on topics; delivery is the sink's business.
pub trait RecordSink: Send + Sync {
    /// Queues `payload` under `key` on `topic`.
    fn send_record(&self, topic: &str, key: Option<&[u8]>, payload: &[u8]) -> Result<(), SinkError>;

    /// Waits up to `timeout` for queued records to be delivered.
    fn flush_records(&self, timeout: Duration);
}
