//! Model integrity: a model file that is not the one its manifest was written for (its
//! sha256 differs), or that no longer gives the manifest's known answers (test vectors), is
//! refused at start-up with a message saying what differs; placed as a reload under load,
//! it is rejected and the serving version keeps deciding every event.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use verdict::config::DecisionFormat;
use verdict::pipeline::Pipeline;
use verdict::telemetry::Metrics;

fn demo_manifest() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(crate_path("models/demo/manifest.json")).unwrap()).unwrap()
}

/// Writes `manifest` and the model file `bytes` into `dir` as a deployment would: each
/// written aside and renamed into place, the model first.
fn place(dir: &Path, manifest: &serde_json::Value, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join("model.onnx.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join("model.onnx")).unwrap();
    let tmp = dir.join("manifest.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(manifest).unwrap()).unwrap();
    std::fs::rename(tmp, dir.join("manifest.json")).unwrap();
}

/// The demo model with one byte flipped (in its last kilobyte: tree weights).
fn tampered() -> Vec<u8> {
    let mut bytes = std::fs::read(crate_path("models/demo/model.onnx")).unwrap();
    let k = bytes.len() - 700;
    bytes[k] ^= 0x01;
    bytes
}

fn start_error(dir: &Path) -> String {
    let (_mock, mut cfg) = mock_setup(1);
    cfg.model.dir = dir.to_path_buf();
    match Pipeline::start(&cfg, Metrics::new()) {
        Ok(_) => panic!("pipeline started with a model its manifest does not describe"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_demo_manifest_carries_a_hash_and_known_answers_and_starts() {
    let m = demo_manifest();
    assert_eq!(m["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(m["test_vectors"].as_array().map(Vec::len), Some(3));
    let dir = tempfile::tempdir().unwrap();
    place(dir.path(), &m, &std::fs::read(crate_path("models/demo/model.onnx")).unwrap());
    let (_mock, mut cfg) = mock_setup(1);
    cfg.model.dir = dir.path().to_path_buf();
    let p = Pipeline::start(&cfg, Metrics::new()).expect("the untouched demo model starts");
    p.abort();
}

#[test]
fn a_flipped_byte_in_the_model_file_is_refused_at_start_naming_both_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let m = demo_manifest();
    let bytes = tampered();
    place(dir.path(), &m, &bytes);
    let err = start_error(dir.path());
    let want = m["sha256"].as_str().unwrap();
    let got = verdict::score::integrity::file_sha256(&dir.path().join("model.onnx")).unwrap();
    assert_ne!(got, want);
    assert!(err.contains(&format!("has sha256 {got}, the manifest's sha256 is {want}")), "{err}");
}

#[test]
fn another_model_file_under_a_manifest_without_hash_fails_its_known_answers() {
    // The hash is gone (someone edited the manifest), and the file is another model with the
    // same inputs: only the test vectors can tell.
    let dir = tempfile::tempdir().unwrap();
    let mut m = demo_manifest();
    m.as_object_mut().unwrap().remove("sha256");
    place(dir.path(), &m, &std::fs::read(crate_path("models/demo-mlp/model.onnx")).unwrap());
    let err = start_error(dir.path());
    assert!(err.contains("model does not match its manifest: "), "{err}");
    let expected = m["test_vectors"][2]["score"].as_f64().unwrap();
    assert!(err.contains(&format!("test_vectors[2]: expected score {expected} (± 1e-6), got ")), "{err}");
}

#[test]
fn a_wrong_known_answer_is_refused_at_start_naming_the_vector_and_both_scores() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = demo_manifest();
    let real = m["test_vectors"][1]["score"].as_f64().unwrap();
    m["test_vectors"][1]["score"] = 0.5.into();
    place(dir.path(), &m, &std::fs::read(crate_path("models/demo/model.onnx")).unwrap());
    let err = start_error(dir.path());
    let want = "1 of 3 known answers differ: test_vectors[1]: expected score 0.5 (± 1e-6), got ";
    let got: f64 = err
        .split(want)
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    // The recorded answer (Python onnxruntime) and verdict's agree within the tolerance.
    assert!((got - real).abs() <= 1e-6, "{err}");

    // Within a stated tolerance it passes.
    m["test_vectors"][1]["tolerance"] = (0.5 - real + 1e-3).into();
    place(dir.path(), &m, &std::fs::read(crate_path("models/demo/model.onnx")).unwrap());
    let (_mock, mut cfg) = mock_setup(1);
    cfg.model.dir = dir.path().to_path_buf();
    Pipeline::start(&cfg, Metrics::new()).expect("within tolerance").abort();
}

#[test]
fn a_tampered_model_placed_under_load_is_rejected_and_the_serving_version_decides_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("fraud");
    let m = demo_manifest();
    place(&model, &m, &std::fs::read(crate_path("models/demo/model.onnx")).unwrap());
    let (mock, mut cfg) = mock_setup(2);
    cfg.model.dir = model.clone();
    cfg.model.reload_interval_ms = 50;
    cfg.publish.format = DecisionFormat::Json;
    let metrics = Metrics::new();
    let p = Pipeline::start(&cfg, metrics.clone()).unwrap();
    let n = 12_000;
    let stream = Stream::start(mock.bootstrap(), 0, n, 2_000, 31);
    let reloads = |r: &str| metrics.model_reloads.with_label_values(&[r]).get();
    wait_for("a sixth of the stream", Duration::from_secs(60), || handled(&metrics) >= 2_000);
    let mut next = m.clone();
    next["version"] = "4".into();
    place(&model, &next, &tampered());
    wait_for("the tampered version rejected", Duration::from_secs(20), || reloads("rejected") == 1);
    let at_rejection = handled(&metrics);
    stream.finish();
    wait_for("every event", Duration::from_secs(60), || handled(&metrics) >= n);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    assert_eq!(reloads("applied"), 0);
    assert!(at_rejection < n - 2_000, "the stream went on after the rejection ({at_rejection} of {n} then)");
    assert!(metrics
        .render()
        .contains("verdict_model_info{execution_provider=\"cpu\",model=\"demo-fraud-gbdt\",version=\"3\"} 1"));

    let decisions = mock.read_all("decisions", Duration::from_secs(2));
    assert_eq!(decisions.len() as u64, n, "no event lost");
    for d in &decisions {
        let v: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
        assert_eq!(v["model_version"], "3", "{v}");
    }
}

#[test]
fn check_config_reports_a_tampered_model_file() {
    let dir = tempfile::tempdir().unwrap();
    place(&dir.path().join("model"), &demo_manifest(), &tampered());
    let file = dir.path().join("verdict.toml");
    std::fs::write(&file, format!("[model]\ndir = {:?}\n", dir.path().join("model"))).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(crate_path(""))
        .args(["check-config", "--config", "config/demo.toml", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("the manifest's sha256 is") && err.contains("model.dir: "), "{err}");
}
