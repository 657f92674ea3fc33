//! The model manifest: what the model is, how to build its input row from an event,
//! and which output is the positive-class probability.
//!
//! `ops/model/train.py` writes it next to the `.onnx`; `ops/model/features.py`
//! builds rows from it the same way `decode::Vectorizer` does.
//!
//! In `core` because it is the contract between two stages: the decode stage builds rows
//! by it and the score stage checks its session against it (`score::manifest` re-exports it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A manifest that cannot be read or is inconsistent (the text names the file and field).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

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
    /// Graph input receiving the `[rows, columns]` float matrix of every column (the
    /// single-input form); models with several or typed inputs use `graph_inputs` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_name: Option<String>,
    /// Named graph inputs, each fed the listed columns as one `[rows, columns]` tensor of its
    /// type (e.g. a float matrix plus a string column for an in-graph OneHotEncoder).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub graph_inputs: Vec<GraphInput>,
    /// Graph output holding probabilities.
    pub output_name: String,
    /// Column of `output_name` that is the positive-class probability (ignored for 1-D outputs
    /// and for multi-output models).
    #[serde(default = "one")]
    pub positive_index: usize,
    /// A multi-output model: the names of `output_name`'s columns, in order (content
    /// categories, items, offers), one score each. The decision's score is then the highest
    /// of them, the record carries the `top_k` best at or above `min_score`, and rules read
    /// each as `scores.<name>`. Empty: one positive-class probability.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// Multi-output models: how many of the best classes a decision carries (1: argmax).
    #[serde(default = "one")]
    pub top_k: usize,
    /// Multi-output models: a class is carried only with at least this score.
    #[serde(default)]
    pub min_score: f32,
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
    /// SHA-256 of the model file (hex): a file that does not hash to it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Known answers the model must give before it serves (see [`super::test_vector`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_vectors: Vec<super::test_vector::TestVector>,
}

fn one() -> usize {
    1
}

fn cpu_only() -> Vec<String> {
    vec!["cpu".into()]
}

/// Element type of a graph input.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TensorType {
    /// `tensor(float)`.
    Float32,
    /// `tensor(int64)`: integral values only, fed exactly.
    Int64,
    /// `tensor(string)`: `string` columns, fed as the event's text.
    String,
}

impl TensorType {
    /// Lowercase name, as written in the manifest.
    pub fn label(self) -> &'static str {
        match self {
            Self::Float32 => "float32",
            Self::Int64 => "int64",
            Self::String => "string",
        }
    }
}

/// One named graph input and the columns it receives, in order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GraphInput {
    /// Graph input name.
    pub name: String,
    /// Element type.
    #[serde(rename = "type")]
    pub ty: TensorType,
    /// Names of the `inputs` columns it takes, in tensor column order.
    pub columns: Vec<String>,
}

/// How a column turns an event field into a model input value.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// Integer or float → f64 → f32 (round to nearest); exact integer for int64 inputs.
    Number,
    /// String → code from `table`; strings not in it get `unknown`.
    Lookup,
    /// Boolean → 0 / 1.
    Bool,
    /// Epoch milliseconds → a calendar part (`part`) in `timezone`.
    Timestamp,
    /// String passed through as text, for `string` graph inputs (in-graph encoders).
    String,
}

/// Calendar part of a `timestamp` column.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TimePart {
    /// Hour of day, 0–23.
    Hour,
    /// Day of week, Monday = 0 … Sunday = 6 (Python's `weekday()`).
    Dow,
    /// Day of month, 1–31.
    Day,
    /// Month, 1–12.
    Month,
    /// Minute of hour, 0–59.
    Minute,
}

/// A default fed for a missing value: a number, or a text for `string` columns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum DefaultValue {
    /// For numeric columns.
    Number(f32),
    /// For `string` columns.
    Text(String),
}

/// What to do when a column's field is absent or null.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum MissingPolicy {
    /// Feed NaN (for models trained with missing values).
    Nan,
    /// Feed this value.
    Default(DefaultValue),
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
    /// For `timestamp`: which calendar part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<TimePart>,
    /// For `timestamp`: IANA zone the part is taken in (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

fn reject() -> MissingPolicy {
    MissingPolicy::Reject
}

impl InputColumn {
    /// The number fed when the field is missing, if the policy is a numeric `default`.
    pub fn default_value(&self) -> Option<f64> {
        match self.missing {
            MissingPolicy::Default(DefaultValue::Number(v)) => Some(f64::from(v)),
            _ => None,
        }
    }
}

/// Where one column's value travels to the model: its graph input's type and its index
/// among the columns of that type (see [`crate::core::rows::Rows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane {
    /// Element type of the graph input the column feeds.
    pub ty: TensorType,
    /// Index among the columns of that type, in manifest order; for float32 it is the
    /// column index (the float row holds every column).
    pub index: usize,
}

impl Manifest {
    /// Reads and checks `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|e| ManifestError(format!("{}: {e}", path.display())))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| ManifestError(format!("{}: {e}", path.display())))?;
        let problems = m.problems();
        if !problems.is_empty() {
            return Err(ManifestError(format!("{}: {}", path.display(), problems.join("; "))));
        }
        Ok(m)
    }

    /// The graph inputs: `graph_inputs`, or the single float input of every column.
    pub fn feeds(&self) -> Vec<GraphInput> {
        if !self.graph_inputs.is_empty() {
            return self.graph_inputs.clone();
        }
        vec![GraphInput {
            name: self.input_name.clone().unwrap_or_default(),
            ty: TensorType::Float32,
            columns: self.inputs.iter().map(|c| c.name.clone()).collect(),
        }]
    }

    /// Each column's lane, in column order. A column listed by no graph input is float32.
    pub fn lanes(&self) -> Vec<Lane> {
        let feeds = self.feeds();
        let mut counts = std::collections::HashMap::new();
        self.inputs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let ty = feeds.iter().find(|f| f.columns.contains(&c.name)).map_or(TensorType::Float32, |f| f.ty);
                let n = counts.entry(ty).or_insert(0usize);
                *n += 1;
                Lane { ty, index: if ty == TensorType::Float32 { i } else { *n - 1 } }
            })
            .collect()
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
        match (&self.input_name, self.graph_inputs.is_empty()) {
            (None, true) => p.push("input_name or graph_inputs is required".into()),
            (Some(_), false) => p.push("use input_name (one float input) or graph_inputs, not both".into()),
            _ => {}
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.inputs.iter().enumerate() {
            if !seen.insert(c.name.as_str()) {
                p.push(format!("inputs[{i}] ({}): duplicate column name", c.name));
            }
            if c.source.is_empty() {
                p.push(format!("inputs[{i}] ({}): source must not be empty", c.name));
            }
            if c.kind == ColumnKind::Lookup && c.table.is_none() {
                p.push(format!("inputs[{i}] ({}): lookup column needs a table", c.name));
            }
            if c.kind != ColumnKind::Lookup && (c.table.is_some() || c.unknown.is_some()) {
                p.push(format!("inputs[{i}] ({}): only lookup columns take a table and unknown", c.name));
            }
            if c.kind == ColumnKind::Timestamp {
                if c.part.is_none() {
                    p.push(format!(
                        "inputs[{i}] ({}): timestamp column needs a part (hour, dow, day, month, minute)",
                        c.name
                    ));
                }
                if let Some(tz) = &c.timezone {
                    if jiff::tz::TimeZone::get(tz).is_err() {
                        p.push(format!("inputs[{i}] ({}): unknown timezone '{tz}'", c.name));
                    }
                }
            } else if c.part.is_some() || c.timezone.is_some() {
                p.push(format!("inputs[{i}] ({}): only timestamp columns take a part and timezone", c.name));
            }
            match (&c.missing, c.kind == ColumnKind::String) {
                (MissingPolicy::Default(DefaultValue::Text(_)), false) => {
                    p.push(format!("inputs[{i}] ({}): a text default needs a string column", c.name))
                }
                (MissingPolicy::Default(DefaultValue::Number(_)), true) => {
                    p.push(format!("inputs[{i}] ({}): a string column's default must be a text", c.name))
                }
                _ => {}
            }
            if c.kind == ColumnKind::String && c.missing == MissingPolicy::Nan {
                p.push(format!(
                    "inputs[{i}] ({}): a string column cannot be NaN; use a default text or reject",
                    c.name
                ));
            }
        }
        if !self.graph_inputs.is_empty() {
            p.extend(self.graph_input_problems());
        }
        if self.execution_providers.is_empty() {
            p.push("execution_providers: at least one is required".into());
        }
        p.extend(self.class_problems());
        p.extend(super::test_vector::problems(self));
        p
    }

    /// A multi-output model's classes: unique names usable in rules (`scores.<name>`), and a
    /// `top_k` / `min_score` that can be met.
    fn class_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.classes.iter().enumerate() {
            if c.is_empty() || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-') {
                p.push(format!("classes[{i}] ('{c}'): use letters, digits, '_' and '-' only"));
            }
            if !seen.insert(c.as_str()) {
                p.push(format!("classes[{i}] ('{c}'): named twice"));
            }
        }
        if self.classes.len() > usize::from(u16::MAX) {
            p.push(format!("classes: {} are more than {}", self.classes.len(), u16::MAX));
        }
        if !self.classes.is_empty() && (self.top_k == 0 || self.top_k > self.classes.len()) {
            p.push(format!("top_k: {} must be between 1 and the {} classes", self.top_k, self.classes.len()));
        }
        if !self.min_score.is_finite() {
            p.push("min_score: must be a finite number".into());
        }
        p
    }

    /// Every column fed by exactly one graph input whose type can carry it.
    fn graph_input_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let mut fed = std::collections::HashMap::new();
        let mut names = std::collections::HashSet::new();
        for g in &self.graph_inputs {
            if !names.insert(g.name.as_str()) {
                p.push(format!("graph_inputs: '{}' is listed twice", g.name));
            }
            if g.columns.is_empty() {
                p.push(format!("graph_inputs.{}: no columns", g.name));
            }
            for col in &g.columns {
                let Some(c) = self.inputs.iter().find(|c| c.name == *col) else {
                    p.push(format!("graph_inputs.{}: column '{col}' is not in inputs", g.name));
                    continue;
                };
                if let Some(other) = fed.insert(col.as_str(), g.name.as_str()) {
                    p.push(format!("column '{col}' is fed to both '{other}' and '{}'", g.name));
                }
                match (g.ty, c.kind) {
                    (TensorType::String, ColumnKind::String) => {}
                    (TensorType::String, k) => p.push(format!(
                        "graph_inputs.{} is a string input; column '{col}' is {k:?}, only string columns can feed it",
                        g.name
                    )),
                    (_, ColumnKind::String) => p.push(format!(
                        "column '{col}' is a string column; graph input '{}' is {}, not string",
                        g.name,
                        g.ty.label()
                    )),
                    (TensorType::Int64, _) => {
                        let integral = |v: f32| v.fract() == 0.0;
                        if c.missing == MissingPolicy::Nan {
                            p.push(format!("column '{col}' feeds int64 input '{}' and cannot be NaN", g.name));
                        }
                        if c.default_value().is_some_and(|v| !integral(v as f32))
                            || c.unknown.is_some_and(|v| !integral(v))
                            || c.table.as_ref().is_some_and(|t| t.values().any(|&v| !integral(v)))
                        {
                            p.push(format!(
                                "column '{col}' feeds int64 input '{}': its codes and default must be integers",
                                g.name
                            ));
                        }
                    }
                    (TensorType::Float32, _) => {}
                }
            }
        }
        for c in &self.inputs {
            if !fed.contains_key(c.name.as_str()) {
                p.push(format!("column '{}' is not fed to any graph input", c.name));
            }
        }
        p
    }
}
