//! Configuration of the score stage: which model, where ONNX Runtime is, how many worker sessions.
//!
//! `config` composes this into the one tree ([`crate::config::Config`]) and re-exports it;
//! serde names, defaults and `deny_unknown_fields` are the file format, so change them there.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// How a new version in `dir` comes to serve (`[model.rollout]`).
    pub rollout: super::rollout_config::RolloutConfig,
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
            rollout: super::rollout_config::RolloutConfig::default(),
        }
    }
}
