//! Configuration of the decode stage: payload format, size and event-time limits, and which fields carry the id, key and time.
//!
//! `config` composes this into the one tree ([`crate::config::Config`]) and re-exports it;
//! serde names, defaults and `deny_unknown_fields` are the file format, so change them there.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Payload encodings verdict can decode.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// Confluent wire format (magic byte 0) is Avro, anything else is JSON.
    Auto,
    /// UTF-8 JSON object.
    Json,
    /// Confluent wire format: 0x00, 4-byte big-endian schema id, Avro binary datum.
    Avro,
}

/// Decoding of raw messages.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// `auto`, `json` or `avro`.
    pub format: PayloadFormat,
    /// Messages larger than this (bytes) go to the dead-letter topic as `oversize`.
    pub max_payload_bytes: usize,
    /// Avro writer schemas by Confluent schema id (`"1" = "schemas/transaction.avsc"`); none by default.
    pub avro_schemas: BTreeMap<String, PathBuf>,
    /// A Confluent Schema Registry for the ids not in `avro_schemas` (off by default).
    pub schema_registry: super::registry::SchemaRegistryConfig,
    /// Which event fields carry identity and time (dotted paths).
    pub fields: FieldMapping,
    /// Event times before this (epoch ms) go to the dead-letter topic as `bad_event_time`.
    pub event_time_min_ms: i64,
    /// Event times more than this far ahead of the wall clock (ms) are `bad_event_time`
    /// (0: no upper bound).
    pub event_time_max_ahead_ms: i64,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            format: PayloadFormat::Auto,
            max_payload_bytes: 64 * 1024,
            avro_schemas: BTreeMap::new(),
            schema_registry: Default::default(),
            fields: FieldMapping::default(),
            event_time_min_ms: 946_684_800_000,
            event_time_max_ahead_ms: 86_400_000,
        }
    }
}

/// Which event fields carry identity and time. Model inputs are named in the model manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FieldMapping {
    /// Dotted path of the unique event id (string or integer).
    pub event_id: String,
    /// Dotted path of the entity key; decisions are keyed by it.
    pub entity_key: String,
    /// Dotted path of the event time, epoch milliseconds.
    pub event_time: String,
}

impl Default for FieldMapping {
    fn default() -> Self {
        Self { event_id: "event_id".into(), entity_key: "entity_id".into(), event_time: "event_time".into() }
    }
}
