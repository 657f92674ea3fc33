//! Score stage: ONNX Runtime in-process, one session per worker thread.
//!
//! The runtime library is loaded dynamically ([`init_runtime`]); the path is resolved
//! here (config → `ORT_DYLIB_PATH` → `.cache/onnxruntime/`) so a missing library is a
//! clear start-up error instead of a panic inside `ort`. Each session is checked
//! against the manifest at start-up ([`OnnxScorer::load`]), and the model file against the
//! manifest's hash and known answers ([`integrity`]).

pub mod budget;
pub mod config;
pub mod integrity;
pub mod rollout_config;
pub use crate::core::manifest;
pub mod stage;

mod feed;
mod raw;
mod runtime;
mod scorer;
mod session;

pub use manifest::Manifest;
pub use runtime::{init_runtime, library_candidates, ORT_LIB_NAME};
pub use scorer::OnnxScorer;
pub use session::{ExecutionProviderKind, ModelSpec};

use crate::error::{Policy, StageError};

/// Score-stage failures.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// The ONNX Runtime shared library could not be found or loaded.
    #[error("ONNX Runtime library: {0}")]
    Runtime(String),
    /// `manifest.json` missing or invalid.
    #[error("model manifest: {0}")]
    Manifest(String),
    /// The ONNX graph disagrees with the manifest.
    #[error("model does not match its manifest: {0}")]
    Mismatch(String),
    /// Session creation failed.
    #[error("loading model: {0}")]
    Load(String),
    /// `Session::run` failed on a batch.
    #[error("inference: {0}")]
    Inference(String),
}

impl From<manifest::ManifestError> for ScoreError {
    fn from(e: manifest::ManifestError) -> Self {
        ScoreError::Manifest(e.0)
    }
}

impl StageError for ScoreError {
    fn policy(&self) -> Policy {
        match self {
            // A failing run on a loaded, validated model is an engine fault: retrying the
            // same batch is the only way not to lose it.
            ScoreError::Inference(_) => Policy::Retry,
            _ => Policy::Fatal,
        }
    }
}
