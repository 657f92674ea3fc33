//! What a manifest promises about its model file, checked before the model serves: the
//! file's `sha256` and a few `test_vectors` (a row of model inputs and the score the model
//! gave it when the manifest was written).
//!
//! Here are the types, the checks of the manifest's own fields (a well-formed hash, scores
//! and tolerances in range) and the building of a vector's row; `score::integrity` hashes the
//! file and scores the vectors at every load and reload. Whether a vector fits the columns
//! is checked there, after the session is checked against the columns: a manifest whose
//! columns disagree with the graph is told so first.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::manifest::{Manifest, TensorType};
use super::rows::Rows;

/// One known answer of the model: these inputs score `score` (within `tolerance`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TestVector {
    /// Every model input column by name: a number (lookup columns: their code), a text for
    /// string columns, or null for NaN (float inputs only).
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// The positive-class probability expected.
    pub score: f64,
    /// Largest accepted absolute difference (default 1e-6: an ONNX Runtime of another
    /// version or on another execution provider may differ in the last bits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
}

/// The tolerance of a vector that states none.
pub const DEFAULT_TOLERANCE: f64 = 1e-6;

impl TestVector {
    /// The accepted absolute difference.
    pub fn tolerance(&self) -> f64 {
        self.tolerance.unwrap_or(DEFAULT_TOLERANCE)
    }

    /// Appends this vector's row to `rows` (laid out for `m`). A column it lacks, a value its
    /// lane cannot carry or a name that is no column is an error.
    pub fn push_row(&self, m: &Manifest, rows: &mut Rows) -> Result<(), String> {
        if let Some(name) = self.inputs.keys().find(|k| !m.inputs.iter().any(|c| c.name == **k)) {
            return Err(format!("'{name}' is not a column of inputs"));
        }
        let lanes = m.lanes();
        let row = rows.push();
        for (i, (c, lane)) in m.inputs.iter().zip(&lanes).enumerate() {
            let v = self.inputs.get(&c.name).ok_or_else(|| format!("column '{}' has no value", c.name))?;
            let wrong = || format!("column '{}': {v} is not a {} value", c.name, lane.ty.label());
            match lane.ty {
                TensorType::Float32 => {
                    row.values[i] = match v {
                        serde_json::Value::Null => f32::NAN,
                        v => v.as_f64().ok_or_else(wrong)? as f32,
                    }
                }
                TensorType::Int64 => {
                    let n = v.as_i64().ok_or_else(wrong)?;
                    row.ints[lane.index] = n;
                    row.values[i] = n as f32;
                }
                TensorType::String => {
                    let t = v.as_str().ok_or_else(wrong)?;
                    row.texts[lane.index].clear();
                    row.texts[lane.index].push_str(t);
                }
            }
        }
        Ok(())
    }
}

/// Problems of `sha256` and of the vectors' scores and tolerances, all at once.
pub fn problems(m: &Manifest) -> Vec<String> {
    let mut p = Vec::new();
    if let Some(h) = &m.sha256 {
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            p.push(format!("sha256: '{h}' is not 64 hexadecimal digits"));
        }
    }
    for (k, v) in m.test_vectors.iter().enumerate() {
        if !(v.score.is_finite() && (0.0..=1.0).contains(&v.score)) {
            p.push(format!("test_vectors[{k}].score: {} is not a probability in [0, 1]", v.score));
        }
        if !(v.tolerance().is_finite() && v.tolerance() >= 0.0) {
            p.push(format!("test_vectors[{k}].tolerance: must be >= 0, got {}", v.tolerance()));
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(vectors: serde_json::Value) -> Result<Manifest, String> {
        let mut m: serde_json::Value =
            serde_json::from_str(include_str!("../../models/demo-pipeline/manifest.json")).unwrap();
        m["test_vectors"] = vectors;
        m["sha256"] = "00".repeat(32).into();
        let m: Manifest = serde_json::from_value(m).map_err(|e| e.to_string())?;
        let p = problems(&m);
        if p.is_empty() {
            Ok(m)
        } else {
            Err(p.join("; "))
        }
    }

    fn inputs(m: &Manifest) -> serde_json::Map<String, serde_json::Value> {
        m.inputs
            .iter()
            .zip(m.lanes())
            .map(|(c, l)| {
                let v = match l.ty {
                    TensorType::Float32 => serde_json::json!(1.5),
                    TensorType::Int64 => serde_json::json!(3),
                    TensorType::String => serde_json::json!("fuel"),
                };
                (c.name.clone(), v)
            })
            .collect()
    }

    fn row_error(m: &Manifest, inputs: serde_json::Map<String, serde_json::Value>) -> String {
        let v = TestVector { inputs: inputs.into_iter().collect(), score: 0.5, tolerance: None };
        v.push_row(m, &mut Rows::for_manifest(m)).unwrap_err()
    }

    #[test]
    fn a_vector_fills_each_lane_with_its_value() {
        let base = manifest(serde_json::json!([])).unwrap();
        let all = inputs(&base);
        let m = manifest(serde_json::json!([{ "inputs": all, "score": 0.25 }])).unwrap();
        let mut rows = Rows::for_manifest(&m);
        m.test_vectors[0].push_row(&m, &mut rows).unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows.ints().iter().all(|&v| v == 3), "{:?}", rows.ints());
        assert!(rows.texts_row(0).iter().all(|t| t == "fuel"));
        assert_eq!(m.test_vectors[0].tolerance(), DEFAULT_TOLERANCE);
    }

    #[test]
    fn a_missing_column_a_wrong_type_an_unknown_name_and_a_bad_hash_are_named() {
        let m = manifest(serde_json::json!([])).unwrap();
        let (text_col, _) = m.inputs.iter().zip(m.lanes()).find(|(_, l)| l.ty == TensorType::String).unwrap();
        let mut wrong = inputs(&m);
        wrong.insert(text_col.name.clone(), serde_json::json!(7));
        assert_eq!(row_error(&m, wrong), format!("column '{}': 7 is not a string value", text_col.name));
        let mut extra = inputs(&m);
        extra.insert("nope".into(), serde_json::json!(1));
        assert_eq!(row_error(&m, extra), "'nope' is not a column of inputs");
        let mut short = inputs(&m);
        short.remove(&m.inputs[0].name);
        assert_eq!(row_error(&m, short), format!("column '{}' has no value", m.inputs[0].name));

        let err = manifest(serde_json::json!([
            { "inputs": {}, "score": 1.5 },
            { "inputs": {}, "score": 0.5, "tolerance": -1.0 }
        ]))
        .unwrap_err();
        assert_eq!(
            err,
            "test_vectors[0].score: 1.5 is not a probability in [0, 1]; test_vectors[1].tolerance: must be >= 0, got -1"
        );
        let mut m = m;
        m.sha256 = Some("xyz".into());
        assert_eq!(problems(&m), vec!["sha256: 'xyz' is not 64 hexadecimal digits"]);
    }
}
