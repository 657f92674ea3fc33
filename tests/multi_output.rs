//! A multi-output model through the whole pipeline (mock cluster): `tests/data/multi-output`
//! scores five content categories (`ops/model/multi_output.py`); each decision record carries
//! the `top_k` best classes at or above `min_score`, which must equal a direct computation
//! from the class scores `verdict vectorize --score` gives for the same events; a rule reads
//! a class score (`scores.music`); review decisions reach the review topic.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::*;
use verdict::config::DecisionFormat;
use verdict::pipeline::Pipeline;
use verdict::telemetry::Metrics;

const IDLE: Duration = Duration::from_secs(2);

#[test]
fn top_k_decision_records_equal_a_direct_computation_from_the_class_scores() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        r#"
[[rules]]
id = "music-fan"
condition = "scores.music > 0.6"
action = "review"
reason = "music_heavy"
priority = 10
"#,
    )
    .unwrap();
    let (mock, mut cfg) = mock_setup(4);
    cfg.model.dir = crate_path("tests/data/multi-output");
    cfg.rules.file = rules.to_str().unwrap().to_string();
    cfg.publish.format = DecisionFormat::Json;
    let events = produce_transactions(&mock, "events", 4_000, 61, None);
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    wait_for("every event decided", Duration::from_secs(60), || handled(&m) >= 4_000);
    assert!(p.shutdown(Duration::from_secs(30)).clean);

    // The class scores of the same events, offline: the service's stages, one event at a time.
    let file = dir.path().join("events.jsonl");
    let lines: String = events.iter().map(|e| String::from_utf8(e.to_json()).unwrap() + "\n").collect();
    std::fs::write(&file, lines).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["vectorize", "--config", "config/demo.toml", "--model", "tests/data/multi-output"])
        .args(["--score", "--events"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let offline: HashMap<String, Vec<f32>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["event_id"].as_str().unwrap().to_string(), serde_json::from_value(v["classes"].clone()).unwrap())
        })
        .collect();
    assert_eq!(offline.len(), 4_000);

    let names = ["sports", "news", "music", "travel", "games"];
    let decisions = mock.read_all("decisions", IDLE);
    assert_eq!(decisions.len(), 4_000);
    let (mut picks, mut music, mut reviews) = ([0usize; 3], 0, 0);
    for d in &decisions {
        let v: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
        let scores = &offline[v["event_id"].as_str().unwrap()];
        // Direct computation: the best two at or above 0.2, best first, ties in class order.
        let mut want: Vec<(usize, f32)> = scores.iter().copied().enumerate().filter(|(_, s)| *s >= 0.2).collect();
        want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        want.truncate(2);
        let got: Vec<(String, f32)> = v["top"]
            .as_array()
            .map(|t| {
                t.iter()
                    .map(|x| (x["class"].as_str().unwrap().to_string(), x["score"].as_f64().unwrap() as f32))
                    .collect()
            })
            .unwrap_or_default();
        let want_named: Vec<(String, f32)> = want.iter().map(|&(c, s)| (names[c].to_string(), s)).collect();
        assert_eq!(got.len(), want_named.len(), "{v}\nclass scores {scores:?}");
        for ((gc, gs), (wc, ws)) in got.iter().zip(&want_named) {
            assert_eq!((gc, gs.to_bits()), (wc, ws.to_bits()), "{v}\nclass scores {scores:?}");
        }
        picks[got.len()] += 1;
        let best = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!((v["score"].as_f64().unwrap() as f32).to_bits(), best.to_bits(), "the score is the best class's");
        let fired = v["rule_hits"].as_array().unwrap().iter().any(|h| h["id"] == "music-fan");
        assert_eq!(fired, scores[2] > 0.6, "scores.music is the music class's score: {v}");
        music += usize::from(fired);
        reviews += usize::from(v["action"] == "review");
    }
    eprintln!("top classes carried (0, 1, 2): {picks:?}; music-fan fired {music} times; {reviews} reviews");
    assert!(picks[1] > 100 && picks[2] > 100, "one and two classes both occur: {picks:?}");
    assert!(music > 100, "the class-score rule fired {music} times");
    let review_topic = mock.read_all("review", IDLE);
    assert_eq!(review_topic.len(), reviews, "every review decision is on the review topic");
    assert_eq!(
        m.counted("decide", "review") as usize,
        reviews,
        "verdict_events_total{{stage=\"decide\",outcome=\"review\"}}"
    );
}

/// A new version of a multi-output model with other classes is refused (rules and records
/// name the classes); one with the same classes is applied.
#[test]
fn a_new_version_with_other_classes_is_refused_and_one_with_the_same_classes_serves() {
    use std::sync::Arc;
    use verdict::reload::{ModelReloader, ModelSlots};
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::copy(crate_path("tests/data/multi-output/model.onnx"), model.join("model.onnx")).unwrap();
    let manifest = std::fs::read_to_string(crate_path("tests/data/multi-output/manifest.json")).unwrap();
    std::fs::write(model.join("manifest.json"), &manifest).unwrap();
    let mut cfg = verdict::config::demo();
    cfg.model.dir = model.clone();
    cfg.model.workers = 1;
    let m = Metrics::new();
    let slots = Arc::new(ModelSlots::new(1));
    let enriched = verdict::enrich::Enricher::new(&cfg.enrich).unwrap().names().to_vec();
    let reloader = ModelReloader::new(&cfg.model, &enriched, slots, m.clone(), "demo-next-category", "1");
    std::fs::write(model.join("manifest.json"), manifest.replace("\"games\"", "\"gaming\"").replace("\"1\"", "\"2\""))
        .unwrap();
    assert!(reloader.check().is_none(), "a version with other classes is not offered");
    assert_eq!(m.model_reloads.with_label_values(&["rejected"]).get(), 1);
    std::fs::write(model.join("manifest.json"), manifest.replace("\"version\": \"1\"", "\"version\": \"3\"")).unwrap();
    assert!(reloader.check().is_some(), "the same classes: applied");
    assert_eq!(m.model_reloads.with_label_values(&["applied"]).get(), 1);
}

/// The README's personalization example, as written: the configuration loads (every problem
/// but the model directory and rules file, which live in the user's deployment), the
/// manifest is valid and the configured entity provides every enriched input it names, and
/// the rules compile against the session values and class scores.
#[test]
fn the_readme_personalization_example_is_consistent() {
    let readme = std::fs::read_to_string(crate_path("README.md")).unwrap();
    let section = &readme[readme.find("### Personalization").expect("the section")..];
    let block = |lang: &str, nth: usize| -> String {
        let fence = format!("```{lang}\n");
        let start = section.match_indices(&fence).nth(nth).expect("the code block").0 + fence.len();
        section[start..start + section[start..].find("```").unwrap()].to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("personalization.toml");
    std::fs::write(&file, block("toml", 0)).unwrap();
    let cfg = match verdict::config::load_files(&[file.as_path()]) {
        Ok(cfg) => cfg,
        Err(e) => {
            let other: Vec<&String> =
                e.0.iter().filter(|p| !p.contains("model") && !p.contains("rules.file")).collect();
            assert!(other.is_empty(), "the README config has problems: {other:?}");
            let text = std::fs::read_to_string(&file).unwrap().replace("models/next-category", "models/demo");
            std::fs::write(&file, text.replace("rules/personalization.toml", "")).unwrap();
            verdict::config::load_files(&[file.as_path()]).unwrap()
        }
    };
    assert_eq!(cfg.enrich.entities[0].session.as_ref().map(|s| s.gap_s), Some(1800));
    let enricher = verdict::enrich::Enricher::new(&cfg.enrich).unwrap();
    let manifest: verdict::score::Manifest = serde_json::from_str(&block("json", 0)).unwrap();
    assert!(manifest.problems().is_empty(), "{:?}", manifest.problems());
    verdict::decode::Vectorizer::new(&manifest, enricher.names()).expect("the entity provides every enriched input");
    let names = verdict::rules::readable_names(enricher.names(), &manifest.classes);
    verdict::rules::RuleSet::parse(block("toml", 1).as_bytes(), dir.path(), &names, &cfg.decide.actions())
        .expect("the rules compile");
}

/// Events past their deadline are decided without the model: a multi-output model's
/// decisions then carry no classes (their class scores are NaN), the fallback action, and
/// `fallback: true`.
#[test]
fn a_multi_output_models_deadline_fallbacks_carry_no_classes() {
    let (mock, mut cfg) = mock_setup(2);
    cfg.model.dir = crate_path("tests/data/multi-output");
    cfg.publish.format = DecisionFormat::Json;
    // Produced before the pipeline starts: every event is older than 1 ms when scored.
    cfg.decide.deadline_ms = 1;
    produce_transactions(&mock, "events", 500, 62, None);
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    wait_for("every event decided", Duration::from_secs(60), || handled(&m) >= 500);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    let decisions = mock.read_all("decisions", IDLE);
    assert_eq!(decisions.len(), 500);
    for d in &decisions {
        let v: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
        assert_eq!(v["fallback"], true, "{v}");
        assert!(v.get("top").is_none(), "a decision without the model has no classes: {v}");
        assert_eq!(v["action"], cfg.decide.fallback_action.as_str(), "{v}");
    }
    assert_eq!(m.fallback_decisions.get(), 500);
}
