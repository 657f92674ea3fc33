//! Training–serving parity: `verdict vectorize` and `ops/model/features.py` build the same
//! rows, as f32 bits (exact integers and strings for int64 and string graph inputs), for
//! events with nulls, unknown categories and nested fields, in JSON and in Avro, and the
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
    let nan_rows = rows.iter().filter(|r| r.iter().any(serde_json::Value::is_null)).count();
    assert!(nan_rows > 500, "null inputs reach the model as NaN ({nan_rows} rows), none dead-lettered");
}

#[test]
fn a_sklearn_pipeline_with_string_and_int64_inputs_runs_and_matches_python() {
    // OneHotEncoder on raw strings inside the graph, hour/day-of-week as int64, NaN floats:
    // one typed graph input per column.
    let rows = parity("models/demo-pipeline");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(crate_path("models/demo-pipeline/manifest.json")).unwrap()).unwrap();
    let col = |name: &str| m["inputs"].as_array().unwrap().iter().position(|c| c["name"] == name).unwrap();
    let (cat, dev, hour) = (col("merchant_category"), col("device_type"), col("hour"));
    let seen = |c: usize, v: &str| rows.iter().filter(|r| r[c] == v).count();
    assert!(seen(cat, "crypto") > 300, "an unknown category reaches the encoder as its text");
    assert!(seen(dev, "smart-tv") > 300 && seen(dev, "none") > 300, "unknown nested text, and the default");
    assert!(rows.iter().all(|r| r[hour].is_u64() && r[hour].as_u64().unwrap() < 24), "hour is an exact int64");
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

#[test]
fn an_fp16_mlp_scores_exactly_as_onnxruntime_python_and_costs_no_auc() {
    parity("models/demo-mlp-fp16");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(crate_path("models/demo-mlp-fp16/manifest.json")).unwrap()).unwrap();
    let q = &m["training"]["quantization"];
    let (fp32, fp16) = (q["validation_auc_fp32"].as_f64().unwrap(), q["validation_auc_fp16"].as_f64().unwrap());
    assert!((fp32 - fp16).abs() < 0.001, "FP16 costs {:.5} AUC", fp32 - fp16);
    assert!(q["max_abs_score_diff"].as_f64().unwrap() < 0.01);
}

/// Runs both sides on the same events; returns verdict's rows (null = NaN).
fn parity(model: &str) -> Vec<Vec<serde_json::Value>> {
    parity_with(model, false)
}

/// One cell of a printed row: floats compare as f32 bits, integers and strings exactly.
fn same_cell(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_i64(), b.as_i64(), a.as_f64(), b.as_f64()) {
        (Some(x), Some(y), _, _) => x == y,
        (_, _, Some(x), Some(y)) => (x as f32).to_bits() == (y as f32).to_bits(),
        _ => a == b,
    }
}

/// `verdict vectorize` over `file`: one JSON object per event.
fn vectorize(model: &str, file: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["vectorize", "--config", "config/demo.toml", "--model", model, "--score", "--events"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Writes the events as an Avro object container file with `schemas/transaction.avsc`.
fn write_avro(events: &[serde_json::Value], file: &std::path::Path) {
    let schema = verdict::decode::parse_schema_file(&crate_path("schemas/transaction.avsc")).unwrap();
    let mut w = apache_avro::Writer::new(&schema, Vec::new()).unwrap();
    for e in events {
        w.append_value(apache_avro::types::Value::try_from(e.clone()).unwrap().resolve(&schema).unwrap()).unwrap();
    }
    std::fs::write(file, w.into_inner().unwrap()).unwrap();
}

fn parity_with(model: &str, per_row: bool) -> Vec<Vec<serde_json::Value>> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let mut g = Generator::new(31, 2_000, 1_764_000_000_000);
    let mut lines = String::new();
    let mut events = Vec::new();
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
        if v.get("distance_km").is_none() {
            v["distance_km"] = serde_json::Value::Null; // Avro has no absent field: null
        }
        events.push(v);
    }
    std::fs::write(&file, lines).unwrap();

    let service = vectorize(model, &file);
    let avro_file = dir.path().join("events.avro");
    write_avro(&events, &avro_file);
    let avro = vectorize(model, &avro_file);

    let py = Command::new("python3")
        .arg(crate_path("ops/model/features.py"))
        .arg(crate_path(model).join("manifest.json"))
        .arg(crate_path("config/demo.toml"))
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
    assert_eq!(avro.len(), 3_000);
    let mut rows = Vec::new();
    for ((s, p), a) in service.iter().zip(&python).zip(&avro) {
        assert!(s.get("error").is_none(), "{s}");
        let row: Vec<serde_json::Value> = serde_json::from_value(s["row"].clone()).unwrap();
        let py_row: Vec<serde_json::Value> = serde_json::from_value(p["row"].clone()).unwrap();
        let same = |a: &[serde_json::Value], b: &[serde_json::Value]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_cell(x, y))
        };
        assert!(same(&row, &py_row), "line {}: verdict {row:?}\n python {py_row:?}", s["line"]);
        let avro_row: Vec<serde_json::Value> = serde_json::from_value(a["row"].clone()).unwrap();
        assert!(same(&row, &avro_row), "line {}: JSON {row:?}\n Avro {avro_row:?}", s["line"]);
        assert_eq!(s["event_id"], a["event_id"]);
        let (ours, theirs) = (s["score"].as_f64().unwrap() as f32, p["score"].as_f64().unwrap() as f32);
        assert_eq!(ours.to_bits(), theirs.to_bits(), "line {}: score {ours} vs onnxruntime-python {theirs}", s["line"]);
        let avro_score = a["score"].as_f64().unwrap() as f32;
        assert_eq!(ours.to_bits(), avro_score.to_bits(), "line {}: Avro score", s["line"]);
        rows.push(row);
    }
    rows
}

/// Session values (events, duration, time since start, distinct merchants of the card's
/// current session) built by `verdict vectorize` equal `ops/model/features.py`'s, as f32
/// bits, with sessions that continue, sessions that end after the gap, and late events.
#[test]
fn session_window_values_equal_the_python_reference_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    // The demo config with a 2-second session window on the card.
    let mut config: toml::Table = std::fs::read_to_string(crate_path("config/demo.toml")).unwrap().parse().unwrap();
    let card = &mut config["enrich"]["entities"].as_array_mut().unwrap()[0];
    card.as_table_mut().unwrap().insert(
        "session".into(),
        toml::toml! { gap_s = 2
        max_distinct = 4 }
        .into(),
    );
    let config_file = dir.path().join("config.toml");
    std::fs::write(&config_file, toml::to_string(&config).unwrap()).unwrap();
    // The demo manifest with the four session values as inputs (vectorized, not scored).
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(crate_path("models/demo/manifest.json")).unwrap()).unwrap();
    for v in ["events", "duration_s", "since_start_s", "distinct"] {
        manifest["inputs"].as_array_mut().unwrap().push(serde_json::json!({
            "name": format!("session_{v}"), "source": format!("session:card.{v}"), "kind": "number", "missing": {"default": -1.0}
        }));
    }
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::write(model.join("manifest.json"), manifest.to_string()).unwrap();
    std::fs::copy(crate_path("models/demo/model.onnx"), model.join("model.onnx")).unwrap();

    // 300 cards over 4,000 events and ~40 s of event time: a busy card's events come well
    // inside the 2 s gap, a rare card's far outside it, so sessions both continue and end.
    // Every 50th event is 1.5 s early (out of order, inside the demo's 60 s lateness), every
    // other 50th 90 s early (late, not applied, unless the card's first event).
    let mut g = Generator::new(5, 300, 1_764_000_000_000);
    let mut lines = String::new();
    for i in 0..4_000 {
        let mut v: serde_json::Value = serde_json::from_slice(&g.next_event().to_json()).unwrap();
        let shift = match i % 50 {
            24 => 1_500,
            49 => 90_000,
            _ => 0,
        };
        v["event_time"] = (v["event_time"].as_i64().unwrap() - shift).into();
        lines.push_str(&v.to_string());
        lines.push('\n');
    }
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, lines).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["vectorize", "--config"])
        .arg(&config_file)
        .arg("--model")
        .arg(&model)
        .arg("--events")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let service: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let py = Command::new("python3")
        .arg(crate_path("ops/model/features.py"))
        .arg(model.join("manifest.json"))
        .arg(&config_file)
        .arg(&file)
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    let python: Vec<Vec<serde_json::Value>> =
        String::from_utf8(py.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(service.len(), 4_000);
    assert_eq!(python.len(), 4_000);
    let width = manifest["inputs"].as_array().unwrap().len();
    let (mut continued, mut opened, mut capped) = (0, 0, 0);
    for (s, p) in service.iter().zip(&python) {
        assert!(s.get("error").is_none(), "{s}");
        let row: Vec<serde_json::Value> = serde_json::from_value(s["row"].clone()).unwrap();
        assert_eq!(row.len(), width);
        assert!(
            row.len() == p.len() && row.iter().zip(p).all(|(x, y)| same_cell(x, y)),
            "line {}: verdict {row:?}\n python {p:?}",
            s["line"]
        );
        let events = row[width - 4].as_f64().unwrap();
        if events > 0.0 {
            continued += 1;
        } else {
            opened += 1;
        }
        capped += usize::from(row[width - 1].as_f64().unwrap() == 4.0);
    }
    eprintln!("{continued} events continued a session, {opened} opened one, {capped} saw the distinct cap");
    assert!(continued > 500 && opened > 500, "{continued} continued, {opened} opened");
    assert!(capped > 0, "some sessions reach max_distinct");
}

/// A multi-output model (`tests/data/multi-output`: a softmax over five classes) scores every
/// class exactly as onnxruntime in Python does, as f32 bits; the event's score is the best.
#[test]
fn a_multi_output_models_class_scores_equal_onnxruntime_python_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let mut g = Generator::new(17, 2_000, 1_764_000_000_000);
    let lines: String = (0..2_000).map(|_| String::from_utf8(g.next_event().to_json()).unwrap() + "\n").collect();
    std::fs::write(&file, lines).unwrap();
    let service = vectorize("tests/data/multi-output", &file);
    let py = Command::new("python3")
        .arg(crate_path("ops/model/features.py"))
        .arg(crate_path("tests/data/multi-output/manifest.json"))
        .arg(crate_path("config/demo.toml"))
        .arg(&file)
        .arg("--score")
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    let python: Vec<serde_json::Value> =
        String::from_utf8(py.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!((service.len(), python.len()), (2_000, 2_000));
    let mut best = [0usize; 5];
    for (s, p) in service.iter().zip(&python) {
        let ours: Vec<f32> = serde_json::from_value(s["classes"].clone()).unwrap();
        let theirs: Vec<f64> = serde_json::from_value(p["classes"].clone()).unwrap();
        assert_eq!(ours.len(), 5, "line {}: {s}", s["line"]);
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(a.to_bits(), (*b as f32).to_bits(), "line {}: class scores {ours:?} vs {theirs:?}", s["line"]);
        }
        let top = ours.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!((s["score"].as_f64().unwrap() as f32).to_bits(), top.to_bits(), "the score is the best class's");
        best[ours.iter().position(|&x| x == top).unwrap()] += 1;
    }
    assert!(best.iter().filter(|&&n| n > 0).count() >= 4, "the classes take turns: {best:?}");
}
