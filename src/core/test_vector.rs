//! What a manifest promises about its model file, checked before the model serves: the
//! file's `sha256` and a few `test_vectors` (a row of model inputs and the score the model
//! gave it when the manifest was written).
//!
//! Here are the types and the checks that need no model (a well-formed hash, every column
//! given once with a value its lane can carry); `score::integrity` hashes the file and
//! scores the vectors at every load and reload.

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

    /// Appends this vector's row to `rows` (laid out for `m`); a column it lacks or a value
    /// its lane cannot carry is a problem (see [`problems`]).
    pub fn push_row(&self, m: &Manifest, rows: &mut Rows) -> Result<(), String> {
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

/// Problems of `sha256` and `test_vectors` that need no model file, all at once.
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
        for name in v.inputs.keys() {
            if !m.inputs.iter().any(|c| c.name == *name) {
                p.push(format!("test_vectors[{k}].inputs.{name}: not a column of inputs"));
            }
        }
        let mut rows = Rows::for_manifest(m);
        if let Err(e) = v.push_row(m, &mut rows) {
            p.push(format!("test_vectors[{k}].inputs: {e}"));
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
    fn a_missing_column_a_wrong_type_and_a_bad_hash_are_named() {
        let base = manifest(serde_json::json!([])).unwrap();
        let mut all = inputs(&base);
        let (text_col, _) = base.inputs.iter().zip(base.lanes()).find(|(_, l)| l.ty == TensorType::String).unwrap();
        all.insert(text_col.name.clone(), serde_json::json!(7));
        all.insert("nope".into(), serde_json::json!(1));
        let first = base.inputs[0].name.clone();
        let mut short = inputs(&base);
        short.remove(&first);
        let err = manifest(serde_json::json!([
            { "inputs": all, "score": 1.5 },
            { "inputs": short, "score": 0.5, "tolerance": -1.0 }
        ]))
        .unwrap_err();
        for want in [
            "test_vectors[0].score: 1.5 is not a probability".to_string(),
            format!("test_vectors[0].inputs: column '{}': 7 is not a string value", text_col.name),
            "test_vectors[0].inputs.nope: not a column of inputs".into(),
            "test_vectors[1].tolerance: must be >= 0".into(),
            format!("test_vectors[1].inputs: column '{first}' has no value"),
        ] {
            assert!(err.contains(&want), "missing `{want}` in: {err}");
        }
        let mut m = base;
        m.sha256 = Some("xyz".into());
        assert_eq!(problems(&m), vec!["sha256: 'xyz' is not 64 hexadecimal digits"]);
    }
}
