//! Training–serving parity: `verdict vectorize` and `ops/model/features.py` build the same
//! rows, as f32 bits, for events with nulls, unknown categories and nested fields, and the
//! scores equal onnxruntime-in-Python's, as f32 bits.

mod common;

use std::process::Command;

use common::crate_path;
use verdict::demo::Generator;

#[test]
fn vectorize_rows_and_scores_equal_the_python_reference_bit_for_bit() {
    parity("models/demo");
}

#[test]
fn a_model_trained_with_missing_values_scores_nulls_as_nan_and_matches_python() {
    let rows = parity("models/demo-nan");
    let nan_rows = rows.iter().filter(|r| r.iter().any(Option::is_none)).count();
    assert!(nan_rows > 500, "null inputs reach the model as NaN ({nan_rows} rows), none dead-lettered");
}

#[test]
fn an_mlp_and_its_int8_quantization_score_exactly_as_onnxruntime_python() {
    parity("models/demo-mlp");
    // Dynamic INT8 scores depend on the batch: verdict scores it one row per call, and so
    // does the reference here.
    parity_with("models/demo-mlp-int8", true);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(crate_path("models/demo-mlp-int8/manifest.json")).unwrap()).unwrap();
    let q = &m["training"]["quantization"];
    let (fp32, int8) = (q["validation_auc_fp32"].as_f64().unwrap(), q["validation_auc_int8"].as_f64().unwrap());
    assert!((fp32 - int8).abs() < 0.01, "INT8 costs {:.4} AUC", fp32 - int8);
}

/// Runs both sides on the same events; returns verdict's rows (None = NaN).
fn parity(model: &str) -> Vec<Vec<Option<f64>>> {
    parity_with(model, false)
}

fn parity_with(model: &str, per_row: bool) -> Vec<Vec<Option<f64>>> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let mut g = Generator::new(31, 2_000, 1_764_000_000_000);
    let mut lines = String::new();
    for i in 0..3_000 {
        let mut v: serde_json::Value = serde_json::from_slice(&g.next_event().to_json()).unwrap();
        match i % 7 {
            0 => v["merchant_category"] = "crypto".into(), // unknown category
            1 => v["device"] = serde_json::Value::Null,    // nested object null
            2 => v["card_age_days"] = serde_json::Value::Null,
            3 => {
                v.as_object_mut().unwrap().remove("distance_km");
            }
            4 => v["device"] = serde_json::json!({"id": "d", "type": "smart-tv"}), // unknown nested value
            _ => {}
        }
        lines.push_str(&v.to_string());
        lines.push('\n');
    }
    std::fs::write(&file, lines).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["vectorize", "--model", model, "--score", "--events"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let service: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();

    let py = Command::new("python3")
        .arg(crate_path("ops/model/features.py"))
        .arg(crate_path(model).join("manifest.json"))
        .arg(crate_path("config/defaults.toml"))
        .arg(&file)
        .arg("--score")
        .args(per_row.then_some("--per-row"))
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    let python: Vec<serde_json::Value> =
        String::from_utf8(py.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();

    assert_eq!(service.len(), 3_000, "every event vectorized, none rejected");
    assert_eq!(python.len(), 3_000);
    let mut rows = Vec::new();
    for (s, p) in service.iter().zip(&python) {
        assert!(s.get("error").is_none(), "{s}");
        let row: Vec<Option<f64>> = serde_json::from_value(s["row"].clone()).unwrap();
        let py_row: Vec<Option<f64>> = serde_json::from_value(p["row"].clone()).unwrap();
        let bits = |r: &[Option<f64>]| r.iter().map(|v| v.map(|x| (x as f32).to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(&row), bits(&py_row), "line {}", s["line"]);
        let (ours, theirs) = (s["score"].as_f64().unwrap() as f32, p["score"].as_f64().unwrap() as f32);
        assert_eq!(ours.to_bits(), theirs.to_bits(), "line {}: score {ours} vs onnxruntime-python {theirs}", s["line"]);
        rows.push(row);
    }
    rows
}
