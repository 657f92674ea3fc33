//! Loading the ONNX Runtime shared library, once per process: where it is looked for, and a
//! clear start-up error when it is not found.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use super::ScoreError;

/// The library file name inside the local cache, as fetched by `scripts/fetch-ort.sh`.
pub const ORT_LIB_NAME: &str = "libonnxruntime.so";

/// The first load's outcome; a failure is kept as its message, which every later call
/// returns as [`ScoreError::Runtime`] (the `ort` error itself is not `Clone`).
static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Where the runtime library is looked for, in order.
pub fn library_candidates(configured: Option<&Path>) -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = configured {
        c.push(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        c.push(PathBuf::from(p));
    }
    if let Some(home) = std::env::var_os("VERDICT_HOME") {
        c.push(PathBuf::from(home).join(".cache/onnxruntime").join(ORT_LIB_NAME));
    }
    c.push(PathBuf::from(".cache/onnxruntime").join(ORT_LIB_NAME));
    // Next to the crate, so `cargo test` / `cargo bench` find it from any directory.
    c.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/onnxruntime").join(ORT_LIB_NAME));
    c
}

/// Loads ONNX Runtime once per process. Later calls return the first result.
pub fn init_runtime(configured: Option<&Path>) -> Result<&'static Environment, ScoreError> {
    let result = ENVIRONMENT.get_or_init(|| {
        let candidates = library_candidates(configured);
        let Some(path) = candidates.iter().find(|p| p.is_file()) else {
            return Err(format!(
                "not found; looked in {}. Run scripts/fetch-ort.sh, or set model.ort_library / ORT_DYLIB_PATH",
                candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ));
        };
        let builder = ort::init_from(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let env = builder.with_name("verdict").build().map_err(|e| format!("{}: {e}", path.display()))?;
        tracing::info!(library = %path.display(), "ONNX Runtime loaded");
        Ok(env)
    });
    result.as_ref().map_err(|e| ScoreError::Runtime(e.clone()))
}
