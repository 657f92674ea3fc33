//! The model manifest: what the model is, how to build its input row from an event,
//! and which output is the positive-class probability.
//!
//! `ops/model/train.py` writes it next to the `.onnx`; `ops/model/features.py`
//! builds rows from it the same way [`crate::decode::Vectorizer`] does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ScoreError;

/// `manifest.json` in a model directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Model name, reported in decisions and metrics.
    pub name: String,
    /// Model version, reported in decisions and headers.
    pub version: String,
    /// File name of the ONNX graph, relative to the manifest.
    pub model_file: String,
    /// Graph input receiving the `[rows, columns]` float matrix.
    pub input_name: String,
    /// Graph output holding probabilities.
    pub output_name: String,
    /// Column of `output_name` that is the positive-class probability (ignored for 1-D outputs).
    #[serde(default = "one")]
    pub positive_index: usize,
    /// Execution providers in order of preference, e.g. `["tensorrt","cuda","cpu"]`.
    #[serde(default = "cpu_only")]
    pub execution_providers: Vec<String>,
    /// One entry per input column, in the order the model expects them.
    pub inputs: Vec<InputColumn>,
    /// Training-data baseline (per-feature bins, score histogram) for drift statistics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<serde_json::Value>,
    /// Free-form training facts (data size, metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<serde_json::Value>,
}

fn one() -> usize {
    1
}

fn cpu_only() -> Vec<String> {
    vec!["cpu".into()]
}

/// How a column turns an event field into one `f32`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// Integer or float → f64 → f32 (round to nearest).
    Number,
    /// String → code from `table`; strings not in it get `unknown`.
    Lookup,
    /// Boolean → 0.0 / 1.0.
    Bool,
}

/// What to do when a column's field is absent or null.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum MissingPolicy {
    /// Feed NaN (for models trained with missing values).
    Nan,
    /// Feed this value.
    Default(f32),
    /// Dead-letter the event, naming the column.
    Reject,
}

/// One model input column.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputColumn {
    /// Column name (feature name in training).
    pub name: String,
    /// Dotted path into the event.
    pub source: String,
    /// Conversion.
    pub kind: ColumnKind,
    /// Absent/null handling.
    #[serde(default = "reject")]
    pub missing: MissingPolicy,
    /// For `lookup`: string → code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<BTreeMap<String, f32>>,
    /// For `lookup`: code of strings not in `table`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<f32>,
}

fn reject() -> MissingPolicy {
    MissingPolicy::Reject
}

impl InputColumn {
    /// The value fed when the field is missing, if the policy is `default`.
    pub fn default_value(&self) -> Option<f64> {
        match self.missing {
            MissingPolicy::Default(v) => Some(f64::from(v)),
            _ => None,
        }
    }
}

impl Manifest {
    /// Reads and checks `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Self, ScoreError> {
        let path = dir.join("manifest.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| ScoreError::Manifest(format!("{}: {e}", path.display())))?;
        let m: Manifest =
            serde_json::from_str(&text).map_err(|e| ScoreError::Manifest(format!("{}: {e}", path.display())))?;
        let problems = m.problems();
        if !problems.is_empty() {
            return Err(ScoreError::Manifest(format!("{}: {}", path.display(), problems.join("; "))));
        }
        Ok(m)
    }

    /// Path of the ONNX file.
    pub fn model_path(&self, dir: &Path) -> PathBuf {
        dir.join(&self.model_file)
    }

    /// Internal-consistency problems (each column sane), all at once.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.inputs.is_empty() {
            p.push("inputs: at least one column is required".into());
        }
        for (i, c) in self.inputs.iter().enumerate() {
            if c.source.is_empty() {
                p.push(format!("inputs[{i}] ({}): source must not be empty", c.name));
            }
            match c.kind {
                ColumnKind::Lookup if c.table.is_none() => {
                    p.push(format!("inputs[{i}] ({}): lookup column needs a table", c.name))
                }
                ColumnKind::Number | ColumnKind::Bool if c.table.is_some() => {
                    p.push(format!("inputs[{i}] ({}): only lookup columns take a table", c.name))
                }
                _ => {}
            }
        }
        if self.execution_providers.is_empty() {
            p.push("execution_providers: at least one is required".into());
        }
        p
    }
}
