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

mod tracked;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use tracked::is_secret_key;

/// The embedded defaults, also shipped as the documented reference config.
pub const DEFAULTS_TOML: &str = include_str!("../config/defaults.toml");

/// The demo's configuration (`config/demo.toml`): the synthetic transactions' fields,
/// schema, `card` entity and the bundled model. Layered over [`DEFAULTS_TOML`] by
/// `verdict demo`, [`load_demo`] and [`demo`].
pub const DEMO_TOML: &str = include_str!("../config/demo.toml");

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
    pub enrich: crate::enrich::EnrichConfig,
    /// Which model scores events and how many worker threads run it.
    pub model: ModelConfig,
    /// Threshold bands that turn a score into an action.
    pub decide: DecideConfig,
    /// Business rules over the event, features, windows and score; reloaded live.
    pub rules: RulesConfig,
    /// Drift statistics against the model's training baseline.
    pub drift: DriftConfig,
    /// How decision records are written.
    pub publish: PublishConfig,
    /// Metrics/health HTTP endpoint and logging.
    pub telemetry: TelemetryConfig,
    /// Graceful shutdown limits.
    pub shutdown: ShutdownConfig,
}

impl Default for Config {
    /// The embedded defaults: no entities (the enrich stage's own default is the demo's
    /// `card` entity, which must not leak into a deployment), neutral field names, no model.
    fn default() -> Self {
        Self {
            kafka: KafkaConfig::default(),
            batch: BatchConfig::default(),
            decode: DecodeConfig::default(),
            enrich: crate::enrich::EnrichConfig { entities: Vec::new(), ..Default::default() },
            model: ModelConfig::default(),
            decide: DecideConfig::default(),
            rules: RulesConfig::default(),
            drift: DriftConfig::default(),
            publish: PublishConfig::default(),
            telemetry: TelemetryConfig::default(),
            shutdown: ShutdownConfig::default(),
        }
    }
}

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

/// Model location and scoring threads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Directory with `manifest.json` and the `.onnx` file it names (required; no default).
    pub dir: PathBuf,
    /// Worker threads; each owns one ONNX Runtime session and decodes, scores and publishes whole batches.
    pub workers: usize,
    /// Intra-op threads per session (1 keeps results bit-identical to a single-threaded reference).
    pub intra_threads: usize,
    /// Rows per ORT call; a batch is scored in chunks of this size (0: measured at start-up).
    pub chunk_rows: usize,
    /// Path to `libonnxruntime.so`; else `ORT_DYLIB_PATH`; else `.cache/onnxruntime/`.
    pub ort_library: Option<PathBuf>,
    /// Overrides the manifest's execution-provider preference (e.g. `["cuda","cpu"]`).
    pub execution_providers: Option<Vec<String>>,
    /// TensorRT engine cache directory.
    pub tensorrt_cache_dir: PathBuf,
    /// Let TensorRT build FP16 engines from an fp32 model (check the accuracy first).
    pub tensorrt_fp16: bool,
    /// How often the model directory is checked for a new version, ms (0: only on SIGHUP).
    pub reload_interval_ms: u64,
    /// Shadow (challenger) model directory: scored on the same rows, recorded, never acting.
    pub shadow_dir: Option<PathBuf>,
    /// Fraction of events the shadow model scores (by event-id hash, so replays agree).
    pub shadow_sample: f64,
    /// Batch rows into ORT calls even when a row's score depends on its batch neighbours
    /// (dynamic quantization); by default such models are scored one row per call.
    pub allow_batch_dependent_scores: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            workers: 2,
            intra_threads: 1,
            chunk_rows: 64,
            ort_library: None,
            execution_providers: None,
            tensorrt_cache_dir: PathBuf::from(".cache/trt"),
            tensorrt_fp16: false,
            reload_interval_ms: 5000,
            shadow_dir: None,
            shadow_sample: 1.0,
            allow_batch_dependent_scores: false,
        }
    }
}

/// Threshold bands: `score < review_at` → approve, `< decline_at` → review, else decline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecideConfig {
    /// Lowest score that is sent to review.
    pub review_at: f64,
    /// Lowest score that is declined.
    pub decline_at: f64,
    /// End-to-end budget, ms from the message's Kafka timestamp: an event already older when
    /// its batch reaches scoring is decided without the model (`fallback=true`). 0: off.
    pub deadline_ms: u64,
    /// The action of a deadline fallback before rules (approve, review or decline).
    pub fallback_action: String,
}

/// Drift statistics: windows, destination, alert thresholds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Compute and publish drift statistics (needs a `baseline` in the model manifest).
    pub enabled: bool,
    /// Topic drift records are published to.
    pub topic: String,
    /// A window ends after this many seconds...
    pub window_s: u64,
    /// ...or this many decided events, whichever comes first.
    pub window_events: u64,
    /// PSI above this: warn.
    pub psi_warn: f64,
    /// PSI above this: alert.
    pub psi_alert: f64,
    /// Instance id in drift records; empty: $HOSTNAME, else the process id.
    pub instance: String,
    /// Topic of delayed labels (`{"event_id": .., "label": 0|1}`); empty: no label join.
    pub labels_topic: String,
    /// How long scored events are kept (Redis TTL) for their labels, seconds.
    pub labels_horizon_s: u64,
    /// Scored events waiting to be written to Redis; beyond this they are not kept (counted).
    pub labels_queue: usize,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            topic: "drift".into(),
            window_s: 60,
            window_events: 50_000,
            psi_warn: 0.1,
            psi_alert: 0.25,
            instance: String::new(),
            labels_topic: String::new(),
            labels_horizon_s: 7 * 86_400,
            labels_queue: 100_000,
        }
    }
}

/// The rules file and how it is kept current.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Rules file (TOML); empty: threshold bands only.
    pub file: String,
    /// How often the file (and its list files) is checked for changes, ms. SIGHUP checks at once.
    pub reload_interval_ms: u64,
    /// How often named lists are re-read (files, Redis sets), s.
    pub list_refresh_s: u64,
    /// Redis for `redis_set` lists; empty: `enrich.redis_url`.
    pub redis_url: String,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self { file: String::new(), reload_interval_ms: 1000, list_refresh_s: 60, redis_url: String::new() }
    }
}

impl Default for DecideConfig {
    fn default() -> Self {
        Self { review_at: 0.5, decline_at: 0.9, deadline_ms: 0, fallback_action: "review".into() }
    }
}

/// Encodings of decision records.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DecisionFormat {
    /// Confluent wire format with `schemas/decision.avsc`.
    Avro,
    /// One JSON object per record.
    Json,
}

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

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            format: DecisionFormat::Avro,
            decision_schema_id: 100,
            include_features: true,
            drift_schema_id: 101,
            dead_letter_max_bytes: 0,
            on_refused: RefusedPolicy::DeadLetter,
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

/// Loads defaults → `file` → environment (`VERDICT__…`), then validates.
pub fn load(file: Option<&Path>) -> Result<Config, ConfigErrors> {
    load_with_env(file, std::env::vars().collect())
}

/// Like [`load`], with an explicit environment (tests use this).
pub fn load_with_env(file: Option<&Path>, env: HashMap<String, String>) -> Result<Config, ConfigErrors> {
    checked(load_layers(&[DEFAULTS_TOML], file.as_slice(), env))
}

/// Loads defaults → each of `files` in order (`--config a.toml --config b.toml`: b wins) →
/// environment, then validates.
pub fn load_files(files: &[&Path]) -> Result<Config, ConfigErrors> {
    checked(load_layers(&[DEFAULTS_TOML], files, std::env::vars().collect()))
}

/// Loads defaults → the demo's configuration ([`DEMO_TOML`]) → `files` → environment, then
/// validates: what `verdict demo` runs with.
pub fn load_demo(files: &[&Path]) -> Result<Config, ConfigErrors> {
    checked(load_layers(&[DEFAULTS_TOML, DEMO_TOML], files, std::env::vars().collect()))
}

/// The demo's configuration (defaults → [`DEMO_TOML`]), unvalidated, without the
/// environment: its paths (`models/demo`, `schemas/transaction.avsc`) are relative to the
/// repository. Tests and benches start from it.
pub fn demo() -> Config {
    match load_layers(&[DEFAULTS_TOML, DEMO_TOML], &[], HashMap::new()) {
        Loaded { config: Some(cfg), problems } if problems.is_empty() => cfg,
        Loaded { problems, .. } => panic!("config/demo.toml is invalid: {}", problems.join("; ")),
    }
}

/// A configuration as loaded, before [`Config::validate`] is acted on.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration, when every layer parsed and the merged tree deserialized (an
    /// invalid value is dropped, reported, and takes its default).
    pub config: Option<Config>,
    /// Every problem: parse errors, unknown keys, type errors, [`Config::validate`].
    pub problems: Vec<String>,
}

/// The configuration if it has no problem, else every problem.
pub fn checked(loaded: Loaded) -> Result<Config, ConfigErrors> {
    match loaded {
        Loaded { config: Some(cfg), problems } if problems.is_empty() => Ok(cfg),
        Loaded { problems, .. } => Err(ConfigErrors(problems)),
    }
}

/// Merges the embedded `layers`, then `files` (in order), then `env`, deserializes the result and
/// validates it, collecting every problem with its path. `verdict check-config` uses the
/// configuration even when it has problems, to check what it can of the rest.
pub fn load_layers(layers: &[&str], files: &[&Path], env: HashMap<String, String>) -> Loaded {
    use config::{Environment, File, FileFormat};
    let fail = |problems| Loaded { config: None, problems };
    let mut builder = config::Config::builder();
    for layer in layers {
        builder = builder.add_source(File::from_str(layer, FileFormat::Toml));
    }
    for &path in files {
        if !path.exists() {
            return fail(vec![format!("{}: file not found", path.display())]);
        }
        builder = builder.add_source(File::from(path).format(FileFormat::Toml));
    }
    builder = builder.add_source(
        Environment::with_prefix("VERDICT")
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("kafka.input_topics")
            .with_list_parse_key("model.execution_providers")
            .try_parsing(true)
            .source(Some(env)),
    );
    let merged = match builder.build() {
        Ok(m) => m,
        Err(e) => return fail(vec![e.to_string()]),
    };
    let mut tree: serde_json::Value = match merged.try_deserialize() {
        Ok(t) => t,
        Err(e) => return fail(vec![e.to_string()]),
    };

    let mut problems = Vec::new();
    let known = serde_json::to_value(Config::default()).expect("defaults serialize");
    strip_unknown(&mut tree, &known, "", &mut problems);
    entity_defaults(&mut tree, &mut problems);
    let (config, errors) = tracked::from_tree::<Config>(tree);
    problems.extend(errors);
    if let Some(cfg) = &config {
        // A value already reported (and replaced by its default) is not reported again.
        let path = |p: &String| p.split(':').next().unwrap_or_default().to_string();
        let reported: std::collections::HashSet<String> = problems.iter().map(path).collect();
        problems.extend(cfg.validate().into_iter().filter(|p| !reported.contains(&path(p))));
    }
    Loaded { config, problems }
}

/// Neutral values of the optional keys of an `[[enrich.entities]]` entry. `name` and `key`
/// have none: an entry without them is an error naming `enrich.entities[i].name` / `.key`.
/// (The enrich stage's own struct default is the demo's `card` entity; filling the tree
/// here keeps it from ever applying to a configuration file.)
const ENTITY_DEFAULTS: &[(&str, &str)] = &[
    ("bucket_s", "60"),
    ("windows", "[]"),
    ("value_field", "null"),
    ("distinct_field", "null"),
    ("features", "[]"),
    ("max_feature_age_s", "604800"),
];

/// Fills each entity entry's missing optional keys with [`ENTITY_DEFAULTS`] and reports a
/// missing `name` or `key`.
fn entity_defaults(tree: &mut serde_json::Value, problems: &mut Vec<String>) {
    let Some(entities) = tree.pointer_mut("/enrich/entities").and_then(|e| e.as_array_mut()) else {
        return;
    };
    for (i, entity) in entities.iter_mut().enumerate() {
        let Some(map) = entity.as_object_mut() else { continue };
        for required in ["name", "key"] {
            if !map.contains_key(required) {
                problems.push(format!("enrich.entities[{i}].{required}: required (no default)"));
                map.insert(required.into(), serde_json::Value::String(String::new()));
            }
        }
        for (k, v) in ENTITY_DEFAULTS {
            if !map.contains_key(*k) {
                map.insert((*k).into(), serde_json::from_str(v).expect("entity default"));
            }
        }
    }
}

/// Free-form maps whose keys are not checked (librdkafka properties, schema ids).
const FREE_MAPS: &[&str] = &["kafka.consumer", "kafka.producer", "decode.avro_schemas"];

/// Removes keys not present in the default tree, recording each as an error.
fn strip_unknown(value: &mut serde_json::Value, known: &serde_json::Value, path: &str, errors: &mut Vec<String>) {
    let (Some(map), Some(known_map)) = (value.as_object_mut(), known.as_object()) else {
        return;
    };
    if FREE_MAPS.contains(&path) {
        return;
    }
    let unknown: Vec<String> = map.keys().filter(|k| !known_map.contains_key(*k)).cloned().collect();
    for key in unknown {
        let full = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        errors.push(format!("{full}: unknown key"));
        map.remove(&key);
    }
    for (key, child) in map.iter_mut() {
        let full = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        if let Some(known_child) = known_map.get(key) {
            strip_unknown(child, known_child, &full, errors);
        }
    }
}

impl Config {
    /// Every semantic problem, each as `path: what is wrong`.
    pub fn validate(&self) -> Vec<String> {
        let mut e = Vec::new();
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            e.push("kafka.brokers: must not be empty".into());
        }
        if k.group_id.trim().is_empty() {
            e.push("kafka.group_id: must not be empty".into());
        }
        if k.input_topics.is_empty() {
            e.push("kafka.input_topics: at least one topic is required".into());
        }
        for (i, t) in k.input_topics.iter().enumerate() {
            if t.trim().is_empty() {
                e.push(format!("kafka.input_topics[{i}]: must not be empty"));
            }
            if [&k.decisions_topic, &k.review_topic, &k.dead_letter_topic].contains(&t) {
                e.push(format!("kafka.input_topics[{i}]: '{t}' is also an output topic"));
            }
        }
        for (name, v) in [
            ("decisions_topic", &k.decisions_topic),
            ("review_topic", &k.review_topic),
            ("dead_letter_topic", &k.dead_letter_topic),
        ] {
            if v.trim().is_empty() {
                e.push(format!("kafka.{name}: must not be empty"));
            }
        }
        if k.commit_interval_ms == 0 {
            e.push("kafka.commit_interval_ms: must be > 0".into());
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&k.compression.as_str()) {
            e.push(format!("kafka.compression: '{}' is not one of none, gzip, snappy, lz4, zstd", k.compression));
        }
        let b = &self.batch;
        if b.max_events == 0 || b.max_events > 100_000 {
            e.push(format!("batch.max_events: must be in 1..=100000, got {}", b.max_events));
        }
        if b.queue_batches == 0 {
            e.push("batch.queue_batches: must be > 0".into());
        }
        if b.max_unacked_batches == 0 {
            e.push("batch.max_unacked_batches: must be > 0".into());
        }
        if self.decode.max_payload_bytes == 0 {
            e.push("decode.max_payload_bytes: must be > 0".into());
        }
        if self.decode.event_time_max_ahead_ms < 0 {
            e.push(format!(
                "decode.event_time_max_ahead_ms: must be >= 0, got {}",
                self.decode.event_time_max_ahead_ms
            ));
        }
        let p = &self.publish;
        if p.dead_letter_max_bytes != 0 && p.dead_letter_max_bytes < 4096 {
            e.push(format!(
                "publish.dead_letter_max_bytes: must be 0 (the producer's limit) or at least 4096, got {}",
                p.dead_letter_max_bytes
            ));
        }
        for (id, path) in &self.decode.avro_schemas {
            if id.parse::<u32>().is_err() {
                e.push(format!("decode.avro_schemas.{id}: schema id must be an unsigned integer"));
            }
            if !path.exists() {
                e.push(format!("decode.avro_schemas.{id}: file {} not found", path.display()));
            }
        }
        for (name, v) in [
            ("event_id", &self.decode.fields.event_id),
            ("entity_key", &self.decode.fields.entity_key),
            ("event_time", &self.decode.fields.event_time),
        ] {
            if v.trim().is_empty() {
                e.push(format!("decode.fields.{name}: must not be empty"));
            }
        }
        e.extend(self.enrich.validate());
        let m = &self.model;
        if m.dir.as_os_str().is_empty() {
            e.push("model.dir: required: the directory holding manifest.json and the model it names".into());
        } else if !m.dir.join("manifest.json").exists() {
            e.push(format!("model.dir: {} has no manifest.json", m.dir.display()));
        }
        if m.workers == 0 || m.workers > 64 {
            e.push(format!("model.workers: must be in 1..=64, got {}", m.workers));
        }
        if m.intra_threads == 0 {
            e.push("model.intra_threads: must be > 0".into());
        }
        if let Some(eps) = &m.execution_providers {
            for (i, ep) in eps.iter().enumerate() {
                if crate::score::ExecutionProviderKind::parse(ep).is_none() {
                    e.push(format!("model.execution_providers[{i}]: '{ep}' is not one of cpu, cuda, tensorrt"));
                }
            }
        }
        let d = &self.decide;
        for (name, v) in [("review_at", d.review_at), ("decline_at", d.decline_at)] {
            if !(0.0..=1.0).contains(&v) {
                e.push(format!("decide.{name}: must be within [0, 1], got {v}"));
            }
        }
        let in_range = |v: f64| (0.0..=1.0).contains(&v);
        if !["approve", "review", "decline"].contains(&self.decide.fallback_action.as_str()) {
            e.push(format!(
                "decide.fallback_action: expected approve, review or decline, got '{}'",
                self.decide.fallback_action
            ));
        }
        if !(0.0..=1.0).contains(&self.model.shadow_sample) {
            e.push(format!("model.shadow_sample: must be within [0, 1], got {}", self.model.shadow_sample));
        }
        let dr = &self.drift;
        if dr.window_s == 0 {
            e.push("drift.window_s: must be at least 1".into());
        }
        if dr.window_events == 0 {
            e.push("drift.window_events: must be at least 1".into());
        }
        if !(dr.psi_warn > 0.0 && dr.psi_warn < dr.psi_alert) {
            e.push(format!(
                "drift.psi_warn: must be above 0 and below psi_alert, got {} / {}",
                dr.psi_warn, dr.psi_alert
            ));
        }
        if dr.enabled && dr.topic.trim().is_empty() {
            e.push("drift.topic: must not be empty".into());
        }
        if in_range(d.review_at) && in_range(d.decline_at) && d.review_at > d.decline_at {
            e.push(format!("decide.review_at: {} is above decide.decline_at {}", d.review_at, d.decline_at));
        }
        let t = &self.telemetry;
        if !t.listen.is_empty() && t.listen.parse::<std::net::SocketAddr>().is_err() {
            e.push(format!("telemetry.listen: '{}' is not an address like 0.0.0.0:9464", t.listen));
        }
        if !["pretty", "json"].contains(&t.log_format.as_str()) {
            e.push(format!("telemetry.log_format: '{}' is not one of pretty, json", t.log_format));
        }
        if self.shutdown.timeout_s == 0 {
            e.push("shutdown.timeout_s: must be > 0".into());
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn embedded_defaults_equal_struct_defaults() {
        let from_toml: Config = toml_from(DEFAULTS_TOML);
        assert_eq!(from_toml, Config::default());
    }

    fn toml_from(s: &str) -> Config {
        config::Config::builder()
            .add_source(config::File::from_str(s, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap()
    }

    #[test]
    fn environment_overrides_file_and_lists_split_on_commas() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("v.toml");
        std::fs::write(&file, "[kafka]\ngroup_id = \"from-file\"\nbrokers = \"a:1\"\n[model]\ndir = \"models/demo\"\n")
            .unwrap();
        let cfg = load_with_env(
            Some(&file),
            env(&[("VERDICT__KAFKA__BROKERS", "b:2"), ("VERDICT__KAFKA__INPUT_TOPICS", "x,y")]),
        );
        let cfg = match cfg {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(cfg.kafka.group_id, "from-file");
        assert_eq!(cfg.kafka.brokers, "b:2");
        assert_eq!(cfg.kafka.input_topics, vec!["x", "y"]);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(
            &file,
            "[batch]\nmax_events = 0\nbogus = 1\n[decide]\nreview_at = 0.95\ndecline_at = 0.9\n[kafka]\ncompression = \"brotli\"\n[model]\ndir = \"models/demo\"\n",
        )
        .unwrap();
        let errs = load_with_env(Some(&file), HashMap::new()).unwrap_err().0;
        let joined = errs.join("\n");
        assert!(joined.contains("batch.bogus: unknown key"), "{joined}");
        assert!(joined.contains("batch.max_events"), "{joined}");
        assert!(joined.contains("decide.review_at"), "{joined}");
        assert!(joined.contains("kafka.compression"), "{joined}");
        assert_eq!(errs.len(), 4, "{joined}");
    }

    fn load_str(toml: &str) -> Result<Config, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("v.toml");
        std::fs::write(&file, toml).unwrap();
        load_with_env(Some(&file), HashMap::new()).map_err(|e| e.0)
    }

    #[test]
    fn type_errors_name_their_key_and_all_are_reported() {
        let errs =
            load_str("[batch]\nmax_events = \"two\"\n[enrich]\nbackend = \"mongo\"\n[model]\ndir = \"models/demo\"\n")
                .unwrap_err();
        let joined = errs.join("\n");
        assert!(joined.contains("batch.max_events: invalid type: string \"two\", expected usize"), "{joined}");
        assert!(joined.contains("enrich.backend: unknown variant `mongo`"), "{joined}");
        assert_eq!(errs.len(), 2, "{joined}");
    }

    #[test]
    fn a_secret_value_is_not_echoed_in_an_error() {
        let errs = load_str("[kafka.producer]\n\"sasl.password\" = [\"hunter2\"]\n[model]\ndir = \"models/demo\"\n")
            .unwrap_err()
            .join("\n");
        assert!(errs.contains("kafka.producer.\"sasl.password\": invalid type"), "{errs}");
        assert!(!errs.contains("hunter2"), "{errs}");
    }

    #[test]
    fn defaults_name_no_demo_schema_entity_or_model() {
        let cfg = Config::default();
        assert!(cfg.decode.avro_schemas.is_empty());
        assert!(cfg.enrich.entities.is_empty());
        assert_eq!(cfg.decode.fields.entity_key, "entity_id");
        assert_eq!(cfg.model.dir, PathBuf::new());
        for demo_word in ["card", "merchant", "transaction", "models/demo", "chargeback"] {
            let active: String = DEFAULTS_TOML.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
            assert!(!active.contains(demo_word), "defaults.toml sets a demo value: {demo_word}");
        }
        let errs = load_str("").unwrap_err();
        assert_eq!(errs, vec!["model.dir: required: the directory holding manifest.json and the model it names"]);
    }

    #[test]
    fn an_entity_entry_takes_neutral_defaults_and_needs_name_and_key() {
        let cfg =
            load_str("[model]\ndir = \"models/demo\"\n[[enrich.entities]]\nname = \"device\"\nkey = \"device_id\"\n")
                .unwrap();
        let e = &cfg.enrich.entities[..];
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].name.as_str(), e[0].key.as_str()), ("device", "device_id"));
        assert!(e[0].windows.is_empty() && e[0].features.is_empty(), "{e:?}");
        assert_eq!((e[0].value_field.as_deref(), e[0].distinct_field.as_deref()), (None, None));
        assert_eq!(e[0].bucket_s, 60);

        let errs = load_str("[model]\ndir = \"models/demo\"\n[[enrich.entities]]\nname = \"device\"\n").unwrap_err();
        assert_eq!(errs, vec!["enrich.entities[0].key: required (no default)"]);
    }

    #[test]
    fn the_demo_layer_has_its_entity_and_a_file_replaces_it() {
        let demo = demo();
        assert_eq!(demo.model.dir, PathBuf::from("models/demo"));
        assert_eq!(demo.enrich.entities.len(), 1);
        assert_eq!(demo.enrich.entities[0].distinct_field.as_deref(), Some("merchant_id"));
        assert!(demo.validate().is_empty(), "{:?}", demo.validate());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("v.toml");
        std::fs::write(&file, "[[enrich.entities]]\nname = \"device\"\nkey = \"device_id\"\n").unwrap();
        let cfg = checked(load_layers(&[DEFAULTS_TOML, DEMO_TOML], &[&file], HashMap::new())).unwrap();
        assert_eq!(cfg.enrich.entities.len(), 1, "{:?}", cfg.enrich.entities);
        assert_eq!(cfg.enrich.entities[0].name, "device");
        assert_eq!(cfg.enrich.entities[0].distinct_field, None);
    }

    #[test]
    fn several_files_layer_in_order_the_last_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
        std::fs::write(&a, "[kafka]\ngroup_id = \"a\"\nbrokers = \"a:1\"\n").unwrap();
        std::fs::write(&b, "[kafka]\ngroup_id = \"b\"\n").unwrap();
        let demo = Path::new("config/demo.toml");
        let cfg = checked(load_layers(&[DEFAULTS_TOML], &[demo, &a, &b], HashMap::new())).unwrap();
        assert_eq!((cfg.kafka.group_id.as_str(), cfg.kafka.brokers.as_str()), ("b", "a:1"));
        assert_eq!(cfg.model.dir, PathBuf::from("models/demo"));
    }
}
