//! Model hot reload: a new version in the model directory is validated and swapped in under
//! load with a clean switch; an invalid one is rejected and the old model keeps serving;
//! memory returns to its level over 50 reloads.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use verdict::config::DecisionFormat;
use verdict::pipeline::Pipeline;
use verdict::reload::{ModelReloader, ModelSlots};
use verdict::telemetry::Metrics;

const IDLE: Duration = Duration::from_secs(2);

/// One test at a time: the memory test reads the process's RSS, which the others move.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A copy of the demo model whose manifest says `version` (and optionally a bad input name).
fn write_model(dir: &Path, version: &str, input_name: Option<&str>) {
    std::fs::create_dir_all(dir).unwrap();
    let src = crate_path("models/demo");
    if !dir.join("model.onnx").exists() {
        std::fs::copy(src.join("model.onnx"), dir.join("model.onnx")).unwrap();
    }
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(src.join("manifest.json")).unwrap()).unwrap();
    m["version"] = version.into();
    if let Some(n) = input_name {
        m["input_name"] = n.into();
    }
    // Written then renamed, as a deployment would, so the watcher never reads half a file.
    let tmp = dir.join("manifest.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    std::fs::rename(tmp, dir.join("manifest.json")).unwrap();
}

#[test]
fn a_new_version_swaps_in_cleanly_under_load_and_an_invalid_one_is_rejected() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("fraud");
    write_model(&model, "1", None);
    let (mock, mut cfg) = mock_setup(4);
    cfg.model.dir = model.clone();
    cfg.model.reload_interval_ms = 50;
    cfg.model.rollout.mode = verdict::rollout::RolloutMode::Immediate;
    cfg.publish.format = DecisionFormat::Json;
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    let producer = produce_steadily(mock.bootstrap(), 8, 30_000);
    let reloads = |r: &str| m.model_reloads.with_label_values(&[r]).get();
    wait_for("a third of the stream", Duration::from_secs(60), || handled(&m) >= 10_000);
    write_model(&model, "2", None);
    wait_for("version 2 applied", Duration::from_secs(20), || reloads("applied") == 1);
    wait_for("two thirds", Duration::from_secs(60), || handled(&m) >= 20_000);
    write_model(&model, "3", Some("not_an_input"));
    wait_for("version 3 rejected", Duration::from_secs(20), || reloads("rejected") == 1);
    producer.join().unwrap();
    wait_for("every event", Duration::from_secs(60), || handled(&m) >= 30_000);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    assert_eq!(reloads("applied"), 1, "the invalid version was never applied");
    assert!(m
        .render()
        .contains("verdict_model_info{execution_provider=\"cpu\",model=\"demo-fraud-gbdt\",version=\"2\"} 1"));

    let decisions = mock.read_all("decisions", IDLE);
    assert_eq!(decisions.len(), 30_000, "no event dropped across the reloads");
    let mut by_partition: HashMap<i64, Vec<(i64, String)>> = HashMap::new();
    let mut versions: HashMap<String, u32> = HashMap::new();
    for d in &decisions {
        let v: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
        let version = v["model_version"].as_str().unwrap().to_string();
        *versions.entry(version.clone()).or_default() += 1;
        by_partition
            .entry(v["source_partition"].as_i64().unwrap())
            .or_default()
            .push((v["source_offset"].as_i64().unwrap(), version));
    }
    assert_eq!(versions.keys().len(), 2, "{versions:?}");
    assert!(versions["1"] > 5_000 && versions["2"] > 5_000, "{versions:?}");
    for (p, mut rows) in by_partition {
        rows.sort();
        let switches = rows.windows(2).filter(|w| w[0].1 != w[1].1).count();
        assert!(switches <= 1 && (switches == 0 || rows[0].1 == "1"), "partition {p}: {switches} switches");
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn memory_returns_to_its_level_over_50_reloads() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("fraud");
    write_model(&model, "0", None);
    let mut cfg = verdict::config::demo();
    cfg.model.dir = model.clone();
    cfg.model.workers = 2;
    let m = Metrics::new();
    let slots = Arc::new(ModelSlots::new(2));
    let enriched = verdict::enrich::Enricher::new(&cfg.enrich).unwrap().names().to_vec();
    let reloader = ModelReloader::new(&cfg.model, &enriched, slots.clone(), m.clone(), "demo-fraud-gbdt", "0");
    let mut serving = Vec::new();
    let mut reload = |v: usize| {
        write_model(&model, &v.to_string(), None);
        assert!(reloader.check().is_some(), "version {v} applied");
        // The workers take their new sessions; the old ones are dropped.
        serving = (0..2).map(|i| slots.take(i).unwrap()).collect::<Vec<_>>();
    };
    for v in 1..=10 {
        reload(v);
    }
    let before = rss_kib();
    for v in 11..=60 {
        reload(v);
    }
    let after = rss_kib();
    eprintln!(
        "RSS after 10 reloads {before} KiB, after 60: {after} KiB ({:+} KiB over 50 reloads)",
        after as i64 - before as i64
    );
    assert!(after < before + 8 * 1024, "RSS grew from {before} to {after} KiB over 50 reloads");
    assert_eq!(m.model_reloads.with_label_values(&["applied"]).get(), 60);
}

#[test]
fn a_shadow_model_scores_a_stable_sample_recorded_but_never_acting() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let challenger = dir.path().join("challenger");
    write_model(&challenger, "challenger-7", None);
    let (mock, mut cfg) = mock_setup(4);
    cfg.model.shadow_dir = Some(challenger);
    cfg.model.shadow_sample = 0.5;
    cfg.publish.format = DecisionFormat::Json;
    produce_events(&mock, "events", 0, 4_000, 93);
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    wait_for("decided", Duration::from_secs(60), || handled(&m) >= 4_000);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    let decisions: Vec<serde_json::Value> =
        mock.read_all("decisions", IDLE).iter().map(|d| serde_json::from_slice(&d.payload).unwrap()).collect();
    assert_eq!(decisions.len(), 4_000);
    let shadowed: Vec<&serde_json::Value> = decisions.iter().filter(|d| !d["shadow"].is_null()).collect();
    // About half, chosen by event id: the same ids whatever the batch or instance.
    assert!((1_700..=2_300).contains(&shadowed.len()), "{} shadowed", shadowed.len());
    for d in &shadowed {
        let s = &d["shadow"];
        assert_eq!(s["version"], "challenger-7");
        // Same model file: its score equals the serving score, so its would-be action does too.
        assert_eq!(s["score"], d["score"], "{d}");
        assert_eq!(s["action"], d["action"]);
        assert_eq!(d["model_version"], "3", "the shadow never decides");
    }
    let agree = m.shadow_decisions.with_label_values(&["true"]).get();
    assert_eq!(agree, shadowed.len() as u64);
    // The sample is a pure function of the event id.
    let sh = verdict::worker::Shadow {
        scorer: {
            let spec = verdict::score::ModelSpec::from_config(&cfg.model).unwrap();
            verdict::score::OnnxScorer::load(&spec, verdict::score::init_runtime(None).unwrap()).unwrap().0
        },
        name: String::new(),
        version: String::new(),
        threshold: (0.5 * u64::MAX as f64) as u64,
    };
    for d in &decisions {
        assert_eq!(sh.sampled(d["event_id"].as_str().unwrap()), !d["shadow"].is_null());
    }
}

#[test]
fn a_shadow_model_with_other_inputs_fails_start_up_naming_it() {
    let _serial = serial();
    let (_mock, mut cfg) = mock_setup(1);
    cfg.model.shadow_dir = Some(crate_path("models/demo-nan"));
    let err = Pipeline::start(&cfg, Metrics::new()).err().expect("start-up refused").to_string();
    assert!(err.contains("shadow model") && err.contains("other inputs"), "{err}");
}

#[test]
fn events_past_their_deadline_are_decided_by_rules_alone_and_marked_fallback() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[lists.deny]\nvalues = [\"card-000002\"]\n[[rules]]\nid = \"deny\"\ncondition = \"event.card_id in lists.deny\"\naction = \"decline\"\nreason = \"deny_listed\"\npriority = 100\n[[rules]]\nid = \"high-score\"\ncondition = \"score > 0.99\"\naction = \"decline\"\nreason = \"very_high_score\"\npriority = 50\n",
    )
    .unwrap();
    let (mock, mut cfg) = mock_setup(2);
    cfg.decide.deadline_ms = 2_000;
    cfg.decide.fallback_action = "review".into();
    cfg.rules.file = rules.to_str().unwrap().into();
    cfg.publish.format = DecisionFormat::Json;
    let now = verdict::publish::acker::wall_clock_ms();
    let mut g = verdict::demo::Generator::new(5, 2_000, 1_764_000_000_000);
    let mut stale = std::collections::HashSet::new();
    for i in 0..4_000 {
        let tx = g.next_event();
        // Every fourth event has waited 10 s in the topic (a backlog): past its 2 s budget.
        let ts = if i % 4 == 0 { now - 10_000 } else { now };
        if i % 4 == 0 {
            stale.insert(tx.event_id.clone());
        }
        mock.produce_at("events", tx.card_id.as_bytes(), &tx.to_json(), ts);
    }
    mock.flush();
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    wait_for("decided", Duration::from_secs(60), || handled(&m) >= 4_000);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    let decisions: Vec<serde_json::Value> =
        mock.read_all("decisions", IDLE).iter().map(|d| serde_json::from_slice(&d.payload).unwrap()).collect();
    assert_eq!(decisions.len(), 4_000);
    let mut fallbacks = 0;
    for d in &decisions {
        let id = d["event_id"].as_str().unwrap();
        if stale.contains(id) {
            fallbacks += 1;
            assert_eq!(d["fallback"], true, "{d}");
            assert!(d["score"].is_null(), "no model score: {d}");
            if d["entity_key"] == "card-000002" {
                assert_eq!((d["action"].as_str(), d["reason"].as_str()), (Some("decline"), Some("deny_listed")));
            } else {
                assert_eq!(
                    (d["action"].as_str(), d["reason"].as_str()),
                    (Some("review"), Some("deadline_fallback")),
                    "{d}"
                );
            }
            assert!(d["rule_hits"].as_array().unwrap().iter().all(|h| h["id"] != "high-score"));
        } else {
            assert_eq!(d["fallback"], false);
            assert!(d["score"].as_f64().is_some());
        }
    }
    assert_eq!(fallbacks, 1_000);
    assert_eq!(m.fallback_decisions.get(), 1_000);
}

#[test]
fn a_scoring_budget_caps_batches_under_load() {
    let _serial = serial();
    let (mock, mut cfg) = mock_setup(4);
    cfg.batch.score_budget_us = 100;
    cfg.batch.max_events = 512;
    produce_events(&mock, "events", 0, 30_000, 95); // a backlog: without a budget, batches of 512
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    wait_for("decided", Duration::from_secs(60), || handled(&m) >= 30_000);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    let limit = m.batch_limit.get();
    let h = m.batch_events.get_sample_count();
    let mean = m.batch_events.get_sample_sum() / h as f64;
    eprintln!("budget 100 µs: cap {limit} events, {h} batches, mean {mean:.1} events");
    assert!((8..200).contains(&limit), "cap {limit}");
    // Only the batches dispatched before the first measurement may exceed the cap.
    let text = m.render();
    let at_most_256: u64 = text
        .lines()
        .find(|l| l.starts_with("verdict_batch_events_bucket{le=\"256\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("a 256 bucket");
    assert!(h - at_most_256 <= 8, "{} of {h} batches above 256 events", h - at_most_256);
    assert!(mean < 150.0, "mean batch {mean}");
}

#[test]
fn chunk_rows_zero_measures_the_fastest_size_and_scores_the_same() {
    let _serial = serial();
    let mut cfg = verdict::config::demo();
    cfg.model.dir = crate_path("models/demo");
    let env = verdict::score::init_runtime(None).unwrap();
    cfg.model.chunk_rows = 0;
    let spec = verdict::score::ModelSpec::from_config(&cfg.model).unwrap();
    let (mut auto, _) = verdict::score::OnnxScorer::load(&spec, env).unwrap();
    eprintln!("calibrated chunk_rows: {}", auto.chunk_rows());
    assert!([1, 8, 16, 32, 64, 128, 256, 512, 1024].contains(&auto.chunk_rows()));
    cfg.model.chunk_rows = 64;
    let spec = verdict::score::ModelSpec::from_config(&cfg.model).unwrap();
    let (mut fixed, _) = verdict::score::OnnxScorer::load(&spec, env).unwrap();
    let rows = auto.synthetic_rows(2_000, 13, 97, 1.0, 0.0);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    auto.score(&rows, &mut a).unwrap();
    fixed.score(&rows, &mut b).unwrap();
    assert_eq!(a, b, "row scores do not depend on the chunk size");
}

#[test]
fn models_whose_scores_depend_on_the_batch_are_scored_one_row_per_call() {
    let _serial = serial();
    let env = verdict::score::init_runtime(None).unwrap();
    let load = |dir: &str, allow: bool| {
        let mut cfg = verdict::config::demo();
        cfg.model.dir = crate_path(dir);
        cfg.model.chunk_rows = 64;
        cfg.model.allow_batch_dependent_scores = allow;
        let spec = verdict::score::ModelSpec::from_config(&cfg.model).unwrap();
        verdict::score::OnnxScorer::load(&spec, env).unwrap().0
    };
    for dir in ["models/demo", "models/demo-mlp"] {
        let mut s = load(dir, false);
        assert_eq!(s.batch_dependence().unwrap(), None, "{dir} is batch-invariant");
        assert_eq!(s.chunk_rows(), 64, "{dir} keeps its batching");
    }
    // Dynamic INT8: activation scales come from the whole call, so neighbours move a score.
    let mut q = load("models/demo-mlp-int8", false);
    let diff = q.batch_dependence().unwrap().expect("dynamic INT8 depends on the batch");
    eprintln!("demo-mlp-int8: max |score(batch of 32) - score(alone)| = {diff}");
    assert_eq!(q.chunk_rows(), 1, "scored one row per call");
    assert!(!q.pads_calls(), "padding cannot make neighbours' scales go away");
    assert_eq!(load("models/demo-mlp-int8", true).chunk_rows(), 64, "unless allowed");
}

#[test]
fn models_whose_scores_depend_only_on_the_call_size_are_scored_in_padded_calls() {
    // tests/data/shape-dependent (ops/model/shape_dependent.py) adds 0.001 × the call's row
    // count to its logit: as a GPU GEMM chosen by shape, not by the other rows' values.
    let _serial = serial();
    let env = verdict::score::init_runtime(None).unwrap();
    let mut cfg = verdict::config::demo();
    cfg.model.dir = crate_path("tests/data/shape-dependent");
    cfg.model.chunk_rows = 64;
    let spec = verdict::score::ModelSpec::from_config(&cfg.model).unwrap();
    let mut s = verdict::score::OnnxScorer::load(&spec, env).unwrap().0;
    let diff = s.batch_dependence().unwrap().expect("unpadded, a row's score depends on the call's size");
    assert!(diff > 1e-5, "{diff}");
    assert!(s.pads_calls(), "every call padded to the fixed size");
    assert_eq!(s.chunk_rows(), 64, "and batched");
    let rows = s.synthetic_rows(1_000, 13, 97, 1.0, 0.0);
    let mut whole = Vec::new();
    s.score(&rows, &mut whole).unwrap();
    assert_eq!(whole.len(), 1_000);
    // The same rows in batches of other sizes (the last call of each is short, and padded).
    for batch in [1, 7, 64, 100, 333] {
        let mut parts = Vec::new();
        for start in (0..rows.len()).step_by(batch) {
            let mut b = s.empty_rows();
            (start..(start + batch).min(rows.len())).for_each(|k| b.push_copy(&rows, k));
            s.score(&b, &mut parts).unwrap();
        }
        let same = whole.iter().zip(&parts).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same && parts.len() == whole.len(), "batches of {batch}: a score moved");
    }
    // The padded rows are the model's own call size: 64 rows score as 1 / (1 + e^-(x·w + 0.064)).
    let mut one = s.empty_rows();
    one.push_copy(&rows, 0);
    let x = rows.values_row(0);
    let dot: f32 = x.iter().enumerate().map(|(i, v)| v * ((i % 5) as f32 - 2.0) / 1000.0).sum();
    let expected = 1.0 / (1.0 + (-(dot + 0.064f32)).exp());
    assert!((whole[0] - expected).abs() < 1e-5, "{} vs {expected}", whole[0]);
}
