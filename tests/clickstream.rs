//! The clickstream (personalization) scenario: `verdict generate --scenario clickstream`
//! events through `config/clickstream.toml` and the next-category model
//! (`models/clickstream`, `ops/model/train_clickstream.py`): `verdict vectorize --score`
//! equals `ops/model/features.py` with onnxruntime in Python bit for bit (every input,
//! session values included, and every class score), and a pipeline decides every event with
//! the three best categories in each record and the config's named actions (serve /
//! explore / editorial) in JSON and Avro records, the review topic, metrics and drift.

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

/// A pipeline with `config/clickstream.toml` (its actions serve / explore / editorial) that has
/// decided `n` generated page views with decision records in `format`.
fn decide_clicks(
    n: u64,
    format: DecisionFormat,
) -> (verdict::demo::MockKafka, verdict::config::Config, std::sync::Arc<Metrics>) {
    let (mock, mut cfg) = mock_setup(4);
    let demo = verdict::config::clickstream();
    cfg.decode = demo.decode.clone();
    cfg.enrich = demo.enrich.clone();
    cfg.model.dir = crate_path("models/clickstream");
    cfg.decide = demo.decide.clone();
    cfg.rules.file = crate_path("config/clickstream-rules.toml").display().to_string();
    cfg.publish.format = format;
    cfg.drift.window_events = 5_000;
    cfg.drift.window_s = 3600;
    let mut g = verdict::demo::clickstream::ClickGenerator::new(9, 20_000, 1_764_000_000_000);
    for _ in 0..n {
        let c = g.next_event();
        mock.produce("events", None, c.user_id.as_bytes(), &c.to_json());
    }
    mock.flush();
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    wait_for("every page view decided", Duration::from_secs(60), || handled(&m) >= n);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    (mock, cfg, m)
}

/// The action the clickstream config gives a page view: the editorial rule's, else the
/// best category's band (serve from 0.655, explore below).
fn expected_action(score: f64, reason: &str) -> &'static str {
    match reason {
        "wandering_visit" => "editorial",
        _ if (score as f32) >= 0.655 => "serve",
        _ => "explore",
    }
}

#[test]
fn the_clickstream_pipeline_decides_every_page_view_with_its_top_categories_and_named_actions() {
    let (mock, _cfg, m) = decide_clicks(20_000, DecisionFormat::Json);
    let decisions = mock.read_all("decisions", Duration::from_secs(2));
    assert_eq!(decisions.len(), 20_000);
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for d in &decisions {
        let v: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
        let top = v["top"].as_array().unwrap_or_else(|| panic!("no top: {v}"));
        assert!(!top.is_empty() && top.len() <= 3, "{v}");
        let scores: Vec<f64> = top.iter().map(|t| t["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]) && scores.iter().all(|&s| s >= 0.05), "{v}");
        assert_eq!(scores[0], v["score"].as_f64().unwrap(), "the score is the best category's");
        let (action, reason) = (v["action"].as_str().unwrap(), v["reason"].as_str().unwrap());
        assert_eq!(action, expected_action(scores[0], reason), "{v}");
        match action {
            "editorial" => assert_eq!(v["review_priority"], 10, "the action's fixed priority: {v}"),
            a => assert_eq!(reason, format!("score_band_{a}"), "{v}"),
        }
        *counts.entry(action.to_string()).or_default() += 1;
    }
    for (action, n) in &counts {
        assert!(*n > 100, "{counts:?}");
        assert_eq!(m.counted("decide", action), *n, "verdict_events_total{{stage=decide,outcome={action}}}");
    }
    assert_eq!(counts.len(), 3, "serve, explore and editorial each chosen: {counts:?}");
    for gone in ["approve", "review", "decline"] {
        assert_eq!(m.counted("decide", gone), 0, "no {gone} in this vocabulary");
    }
    let review = mock.read_all("review", Duration::from_secs(2));
    assert_eq!(review.len() as u64, counts["editorial"], "the review topic has every editorial decision");
    for r in &review {
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(v["action"], "editorial", "{v}");
        assert_eq!(r.header("verdict.review.priority"), Some("10"), "the review priority header");
    }
}

/// Named actions in Avro: records decode with the schema generated for the vocabulary (what
/// `verdict decision-schema` prints), the enum index is the action's position, and drift
/// records count decisions by the configured names.
#[test]
fn named_actions_are_the_avro_enum_symbols_and_the_drift_action_counts() {
    let (mock, cfg, m) = decide_clicks(12_000, DecisionFormat::Avro);
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["decision-schema", "--config", "config/clickstream.toml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let generated = verdict::decode::registry::decision_schema(&cfg.decide.actions());
    assert_eq!(printed.trim_end(), generated);
    let schema = apache_avro::Schema::parse_str(&generated).unwrap();
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(&schema).build().unwrap();
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    let decisions = mock.read_all("decisions", Duration::from_secs(2));
    assert_eq!(decisions.len(), 12_000);
    for d in &decisions {
        let mut body = &d.payload[5..];
        let apache_avro::types::Value::Record(fields) = reader.read_value(&mut body).unwrap() else { panic!() };
        assert!(body.is_empty());
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
        let apache_avro::types::Value::Enum(index, action) = get("action") else { panic!("{:?}", get("action")) };
        let apache_avro::types::Value::Double(score) = get("score") else { panic!() };
        let apache_avro::types::Value::String(reason) = get("reason") else { panic!() };
        assert_eq!(action, expected_action(score, &reason));
        assert_eq!(["serve", "explore", "editorial"][index as usize], action, "the enum index is the position");
        *counts.entry(action).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert_eq!(mock.read_all("review", Duration::from_secs(2)).len() as u64, counts["editorial"]);
    let drift = drift_records(&mock);
    assert!(!drift.is_empty());
    let mut counted = std::collections::BTreeMap::<String, i64>::new();
    for r in &drift {
        let keys: Vec<&str> = r.actions.keys().map(String::as_str).collect();
        assert_eq!(keys, ["editorial", "explore", "serve"], "every configured action, by name");
        for (a, n) in &r.actions {
            *counted.entry(a.clone()).or_default() += n;
        }
    }
    let counted: std::collections::BTreeMap<String, u64> = counted.into_iter().map(|(a, n)| (a, n as u64)).collect();
    assert_eq!(counted, counts, "drift counts every decision under its action's name");
    let text = m.render();
    assert!(text.contains("verdict_action_rate{action=\"editorial\",model=\"demo-next-category\"}"), "{text}");
}
