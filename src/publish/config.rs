//! Configuration of the publish stage: output topics, record format, and what happens to a refused record.
//!
//! `config` composes this into the one tree ([`crate::config::Config`]) and re-exports it;
//! serde names, defaults and `deny_unknown_fields` are the file format, so change them there.

use serde::{Deserialize, Serialize};

pub use super::redact::RedactConfig;
pub use crate::core::output::DecisionFormat;

/// How decision records are written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PublishConfig {
    /// `avro` or `json`.
    pub format: DecisionFormat,
    /// Schema id written in the Confluent header of Avro decision records.
    pub decision_schema_id: u32,
    /// Put every model input (name → value) in the decision record, for reviewers and audits.
    pub include_features: bool,
    /// Put the window aggregates and online features (name → value) in the decision record,
    /// independently of `include_features`; off by default: they are most of the record.
    pub include_aggregates: bool,
    /// Schema id written in the Confluent header of Avro drift records.
    pub drift_schema_id: u32,
    /// Largest dead-letter record (bytes, payload plus headers and key); a larger original is
    /// truncated to fit, with headers for its size and sha256. 0: what the producer's
    /// `message.max.bytes` allows.
    pub dead_letter_max_bytes: usize,
    /// What to do with an output the broker refuses for good (too large, invalid record,
    /// refused by a topic policy): `dead_letter` (its event goes to the dead-letter
    /// topic as `output_refused`), `skip` (counted and logged), or `stop` (the process exits
    /// with an error; nothing after it is committed).
    pub on_refused: RefusedPolicy,
    /// PII redaction of the outputs: event fields left out, pseudonymized or masked
    /// (`[publish.redact]`, see [`super::redact`]).
    pub redact: RedactConfig,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            format: DecisionFormat::Avro,
            decision_schema_id: 100,
            include_features: true,
            include_aggregates: false,
            drift_schema_id: 101,
            dead_letter_max_bytes: 0,
            on_refused: RefusedPolicy::DeadLetter,
            redact: RedactConfig::default(),
        }
    }
}

/// What to do with an output record the broker refuses for good.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RefusedPolicy {
    /// Send the event to the dead-letter topic (reason `output_refused`); skip if that is refused too.
    DeadLetter,
    /// Count it (`verdict_produce_errors_total{action="skipped"}`), log it, move on.
    Skip,
    /// Stop the pipeline: the process exits non-zero and the offset is not committed.
    Stop,
}
