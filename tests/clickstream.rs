//! The clickstream (personalization) scenario: `verdict generate --scenario clickstream`
//! events through `config/clickstream.toml` and the next-category model
//! (`models/clickstream`, `ops/model/train_clickstream.py`): `verdict vectorize --score`
//! equals `ops/model/features.py` with onnxruntime in Python bit for bit (every input,
//! session values included, and every class score), and `verdict demo --scenario
//! clickstream` decides every event with the three best categories in each record.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use verdict::config::DecisionFormat;
use verdict::pipeline::Pipeline;
use verdict::telemetry::Metrics;

fn generate(count: u64, seed: u64) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args(["generate", "--scenario", "clickstream", "--count", &count.to_string(), "--seed", &seed.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn vectorize_equals_python_on_the_clickstream_inputs_and_every_class_score() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clicks.jsonl");
    // 30,000 page views: ~50 minutes of event time, sessions ending and starting.
    std::fs::write(&file, generate(30_000, 5)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["vectorize", "--config", "config/clickstream.toml", "--model", "models/clickstream", "--score"])
        .arg("--events")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ours: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let py = Command::new("python3")
        .arg(crate_path("ops/model/features.py"))
        .arg(crate_path("models/clickstream/manifest.json"))
        .arg(crate_path("config/clickstream.toml"))
        .arg(&file)
        .arg("--score")
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    let theirs: Vec<serde_json::Value> =
        String::from_utf8(py.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!((ours.len(), theirs.len()), (30_000, 30_000));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(crate_path("models/clickstream/manifest.json")).unwrap()).unwrap();
    let names: Vec<&str> = manifest["inputs"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    let session = names.iter().position(|n| *n == "session_events").unwrap();
    let bits = |v: &serde_json::Value| (v.as_f64().unwrap() as f32).to_bits();
    let (mut continued, mut opened) = (0, 0);
    for (s, p) in ours.iter().zip(&theirs) {
        let (row, py_row) = (s["row"].as_array().unwrap(), p["row"].as_array().unwrap());
        assert_eq!(row.len(), names.len());
        for ((a, b), name) in row.iter().zip(py_row).zip(&names) {
            assert_eq!(bits(a), bits(b), "line {} column {name}: verdict {a}, python {b}", s["line"]);
        }
        let (c, pc) = (s["classes"].as_array().unwrap(), p["classes"].as_array().unwrap());
        assert_eq!(c.len(), 8);
        for (a, b) in c.iter().zip(pc) {
            assert_eq!(bits(a), bits(b), "line {}: class scores {c:?} vs {pc:?}", s["line"]);
        }
        assert_eq!(bits(&s["score"]), bits(&p["score"]), "line {}: the best class's score", s["line"]);
        if row[session].as_f64().unwrap() > 0.0 {
            continued += 1;
        } else {
            opened += 1;
        }
    }
    assert!(continued > 10_000 && opened > 1_000, "{continued} page views continued a session, {opened} opened one");
}

#[test]
fn the_clickstream_pipeline_decides_every_page_view_with_its_top_categories() {
    let (mock, mut cfg) = mock_setup(4);
    let demo = verdict::config::clickstream();
    cfg.decode = demo.decode.clone();
    cfg.enrich = demo.enrich.clone();
    cfg.model.dir = crate_path("models/clickstream");
    cfg.decide = demo.decide.clone();
    cfg.rules.file = crate_path("config/clickstream-rules.toml").display().to_string();
    cfg.publish.format = DecisionFormat::Json;
    let mut g = verdict::demo::clickstream::ClickGenerator::new(9, 20_000, 1_764_000_000_000);
    for _ in 0..20_000 {
        let c = g.next_event();
        mock.produce("events", None, c.user_id.as_bytes(), &c.to_json());
    }
    mock.flush();
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    wait_for("every page view decided", Duration::from_secs(60), || handled(&m) >= 20_000);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    let decisions = mock.read_all("decisions", Duration::from_secs(2));
    assert_eq!(decisions.len(), 20_000);
    let mut reviews = 0;
    for d in &decisions {
        let v: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
        let top = v["top"].as_array().unwrap_or_else(|| panic!("no top: {v}"));
        assert!(!top.is_empty() && top.len() <= 3, "{v}");
        let scores: Vec<f64> = top.iter().map(|t| t["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]) && scores.iter().all(|&s| s >= 0.05), "{v}");
        assert_eq!(scores[0], v["score"].as_f64().unwrap(), "the score is the best category's");
        if v["action"] == "review" {
            reviews += 1;
            assert_eq!(v["reason"], "wandering_visit", "{v}");
        }
    }
    assert!(reviews > 100, "the wandering-visit rule (session values) sent {reviews} page views to review");
    assert_eq!(mock.read_all("review", Duration::from_secs(2)).len(), reviews);
}
