//! One tree of configuration for the whole service.
//!
//! Layers, later wins: the embedded defaults (`config/defaults.toml`, which is also
//! the annotated reference a user reads) → the TOML file given with `--config` →
//! environment variables `VERDICT__SECTION__KEY` (lists comma-separated). `verdict demo`
//! adds `config/demo.toml` (embedded too) between the defaults and the file.
//!
//! The defaults are neutral: they name no event field, schema, entity or model of any
//! particular data set (the demo's live in `config/demo.toml`), so a deployment states
//! what its events look like instead of inheriting the demo's. `model.dir` has no default.
//!
//! [`load`] returns *every* problem at once: unknown keys, type errors, and each
//! semantic check of [`Config::validate`], each with its dotted path.
//!
//! Each stage's section type lives in the stage's folder (`decode::config`, …) and is
//! re-exported here; this module composes them into [`Config`], loads the layers
//! (`config/load.rs`) and validates the whole ([`Config::validate`]).

mod load;
mod secrets;
mod tracked;
mod validate;
mod verbatim;

use serde::{Deserialize, Serialize};

pub use load::{
    checked, clickstream, demo, load, load_clickstream_demo, load_demo, load_files, load_layers, load_with_env, Loaded,
};
pub use tracked::is_secret_key;

pub use crate::consume::config::{BatchConfig, KafkaConfig};
pub use crate::core::kafka_security::KafkaSecurity;
pub use crate::core::redis::RedisConfig;
pub use crate::decode::config::{DecodeConfig, FieldMapping, PayloadFormat};
pub use crate::drift::config::DriftConfig;
pub use crate::enrich::EnrichConfig;
pub use crate::publish::config::{DecisionFormat, PublishConfig, RefusedPolicy};
pub use crate::rules::config::{DecideConfig, RulesConfig};
pub use crate::score::config::ModelConfig;
pub use crate::telemetry::CostConfig;

/// The embedded defaults, also shipped as the documented reference config.
pub const DEFAULTS_TOML: &str = include_str!("../../config/defaults.toml");

/// The demo's configuration (`config/demo.toml`): the synthetic transactions' fields,
/// schema, `card` entity and the bundled model. Layered over [`DEFAULTS_TOML`] by
/// `verdict demo`, [`load_demo`] and [`demo`].
pub const DEMO_TOML: &str = include_str!("../../config/demo.toml");

/// The clickstream demo's configuration (`config/clickstream.toml`): page views keyed by
/// user, the user's session and sliding windows, the next-category model. Layered over
/// [`DEFAULTS_TOML`] by `verdict demo --scenario clickstream` and [`load_clickstream_demo`].
pub const CLICKSTREAM_TOML: &str = include_str!("../../config/clickstream.toml");

/// Root of the configuration tree.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Kafka connection, topics and client overrides.
    pub kafka: KafkaConfig,
    /// How events are grouped into batches and how much work may be in flight.
    pub batch: BatchConfig,
    /// How raw messages are decoded and which fields carry id, key and time.
    pub decode: DecodeConfig,
    /// Per-entity windows and online features (memory or Redis).
    pub enrich: EnrichConfig,
    /// Which model scores events and how many worker threads run it.
    pub model: ModelConfig,
    /// Threshold bands that turn a score into an action.
    pub decide: DecideConfig,
    /// Business rules over the event, features, windows and score; reloaded live.
    pub rules: RulesConfig,
    /// TLS and ACL credentials for every Redis URL (`enrich.redis_url`, `enrich.features_redis_url`,
    /// `rules.redis_url`).
    pub redis: RedisConfig,
    /// Drift statistics against the model's training baseline.
    pub drift: DriftConfig,
    /// How decision records are written.
    pub publish: PublishConfig,
    /// Metrics/health HTTP endpoint and logging.
    pub telemetry: TelemetryConfig,
    /// Graceful shutdown limits.
    pub shutdown: ShutdownConfig,
    /// What a decision costs: the instance price for dollars per decision.
    pub cost: CostConfig,
}

impl Default for Config {
    /// The embedded defaults: no entities (the enrich stage's own default is the demo's
    /// `card` entity, which must not leak into a deployment), neutral field names, no model.
    fn default() -> Self {
        Self {
            kafka: KafkaConfig::default(),
            batch: BatchConfig::default(),
            decode: DecodeConfig::default(),
            enrich: EnrichConfig { entities: Vec::new(), ..Default::default() },
            model: ModelConfig::default(),
            decide: DecideConfig::default(),
            rules: RulesConfig::default(),
            redis: RedisConfig::default(),
            drift: DriftConfig::default(),
            publish: PublishConfig::default(),
            telemetry: TelemetryConfig::default(),
            shutdown: ShutdownConfig::default(),
            cost: CostConfig::default(),
        }
    }
}

/// Metrics endpoint and logs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Address of the HTTP server for `/metrics`, `/healthz`, `/readyz`; empty disables it.
    pub listen: String,
    /// `pretty` or `json`.
    pub log_format: String,
    /// `tracing` filter, e.g. `info` or `verdict=debug,rdkafka=warn`.
    pub log_level: String,
    /// How often librdkafka statistics (consumer lag) are refreshed (ms).
    pub stats_interval_ms: u64,
    /// Stall watchdog: with batches in flight but none acknowledged for this long (s),
    /// `/readyz` answers 503 and `verdict_stalled` is 1. 0: off.
    pub stall_timeout_s: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9464".into(),
            log_format: "pretty".into(),
            log_level: "info".into(),
            stats_interval_ms: 5000,
            stall_timeout_s: 60,
        }
    }
}

/// Graceful shutdown limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Seconds allowed to drain, deliver and commit after the first signal.
    pub timeout_s: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { timeout_s: 30 }
    }
}

/// Every problem found while loading configuration, one line each with its path.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigErrors(pub Vec<String>);

#[cfg(test)]
mod tests;
