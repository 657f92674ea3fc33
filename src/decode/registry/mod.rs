//! A Confluent Schema Registry client (`decode.schema_registry`): Avro writer schemas by id
//! on first sight, cached for good ([`RegistrySchemas`], behind the same [`SchemaSource`]
//! as the local files), and the start-up registration of verdict's own record schemas
//! ([`register_outputs`]).
//!
//! HTTP is blocking (`ureq`, rustls): a schema is fetched by the decode stage on a worker
//! thread, never on the async runtime. The REST calls used are those of the Confluent API
//! reference (docs.confluent.io/platform/current/schema-registry/develop/api.html):
//! `GET /schemas/ids/{id}`, `POST /subjects/{subject}/versions` and `GET /subjects`.
//!
//! Files: [`config`] (`decode.schema_registry.*` and its checks), [`client`] (requests,
//! retries, errors), `source.rs` (the schema source).

pub mod client;
pub mod config;
mod source;

pub use client::{RegistryClient, RegistryError};
pub use config::{SchemaRegistryConfig, SubjectStrategy};
pub use source::RegistrySchemas;

use std::sync::Arc;

use super::{LocalSchemas, SchemaErrors, SchemaSource};

/// The decision record schema (`schemas/decision.avsc`), registered at start-up.
pub const DECISION_SCHEMA: &str = include_str!("../../../schemas/decision.avsc");

/// The decision record schema for a vocabulary: `schemas/decision.avsc` as written for
/// approve / review / decline, else with its `Action` enum's symbols replaced by the
/// configured actions in order (so a record's action index is the action's position).
pub fn decision_schema(actions: &crate::core::decision::Actions) -> String {
    if actions.is_fraud() {
        return DECISION_SCHEMA.to_string();
    }
    let mut schema: serde_json::Value = serde_json::from_str(DECISION_SCHEMA).expect("decision.avsc is JSON");
    let fields = schema["fields"].as_array_mut().expect("decision.avsc has fields");
    let action = fields.iter_mut().find(|f| f["name"] == "action").expect("decision.avsc has an action field");
    action["type"]["symbols"] = serde_json::json!(actions.names());
    action["doc"] = serde_json::json!("The decision: one of decide.actions, least severe first.");
    serde_json::to_string_pretty(&schema).expect("a JSON value serializes")
}

/// Why the schema source could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A `decode.avro_schemas` entry is bad.
    #[error("{0}")]
    Local(#[from] SchemaErrors),
    /// The registry client could not be built (its files).
    #[error("{0}")]
    Registry(#[from] RegistryError),
}

/// Where the decoder finds writer schemas: the local files, then the registry when
/// `decode.schema_registry.url` is set.
pub fn schema_source(
    local: &std::collections::BTreeMap<String, std::path::PathBuf>,
    registry: &SchemaRegistryConfig,
) -> Result<Arc<dyn SchemaSource>, SourceError> {
    let local = LocalSchemas::load(local)?;
    if registry.url.is_empty() {
        return Ok(Arc::new(local));
    }
    let client = RegistryClient::new(registry)?;
    Ok(Arc::new(RegistrySchemas::new(client, local)))
}

/// The subject a record schema is registered under for `topic` (the Confluent subject
/// name strategies: `TopicNameStrategy`, `RecordNameStrategy`, `TopicRecordNameStrategy`).
pub fn subject(strategy: SubjectStrategy, topic: &str, record: &str) -> String {
    match strategy {
        SubjectStrategy::Topic => format!("{topic}-value"),
        SubjectStrategy::Record => record.to_string(),
        SubjectStrategy::TopicRecord => format!("{topic}-{record}"),
    }
}

/// The output topics whose record schemas are registered.
#[derive(Debug, Clone, Copy)]
pub struct OutputTopics<'a> {
    /// Decision records.
    pub decisions: &'a str,
    /// Review copies of decision records (same schema; empty: none).
    pub review: &'a str,
    /// Drift records (None: drift statistics off).
    pub drift: Option<&'a str>,
}

/// Registers the decision schema ([`decision_schema`] of the configured actions, under the
/// decisions and review topics' subjects) and the drift schema; returns the registry's ids (decision, drift). Registering a schema already
/// registered returns its id; an incompatible one fails with the registry's message.
pub fn register_outputs(
    cfg: &SchemaRegistryConfig,
    topics: OutputTopics<'_>,
    (decision_schema, drift_schema): (&str, &str),
) -> Result<(u32, Option<u32>), RegistryError> {
    let client = RegistryClient::new(cfg)?;
    let s = cfg.subject_strategy;
    let decision = client.register(&subject(s, topics.decisions, "verdict.Decision"), decision_schema)?;
    if !topics.review.is_empty() && topics.review != topics.decisions {
        // The review copy carries the decision's bytes and id; the subject is registered so
        // that its compatibility is checked like the decisions topic's.
        client.register(&subject(s, topics.review, "verdict.Decision"), decision_schema)?;
    }
    let drift = match topics.drift {
        Some(t) => Some(client.register(&subject(s, t, "verdict.DriftRecord"), drift_schema)?),
        None => None,
    };
    tracing::info!(decision_schema_id = decision, drift_schema_id = ?drift, "record schemas registered");
    Ok((decision, drift))
}
