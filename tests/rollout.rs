//! Guarded rollout under load, with delayed labels flowing: a version with inverted scores
//! (the manifest names the model's negative class as the positive one, so every score is
//! 1 − p) is refused as a candidate and never decides; on criteria loose enough to promote
//! it, its labels roll it back within the watch; a good version (the same model under a new
//! version string) is promoted and kept. No event is lost, every decision names the version
//! that made it, and every transition is on the drift topic and in the metric.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use verdict::config::{Config, DecisionFormat};
use verdict::demo::{Generator, MockKafka};
use verdict::pipeline::Pipeline;
use verdict::telemetry::Metrics;

const IDLE: Duration = Duration::from_secs(2);

/// Events per test, produced at `RATE` a second.
const EVENTS: u64 = 24_000;
const RATE: u64 = 2_000;
/// A label follows its event this many events later (~1 s: delayed labels).
const LABEL_LAG: u64 = 2_000;

/// A copy of the demo model whose manifest says `version`; `inverted`: its positive class
/// is the model's negative one, so it scores 1 − p.
fn write_model(dir: &Path, version: &str, inverted: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let src = crate_path("models/demo");
    if !dir.join("model.onnx").exists() {
        std::fs::copy(src.join("model.onnx"), dir.join("model.onnx")).unwrap();
    }
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(src.join("manifest.json")).unwrap()).unwrap();
    m["version"] = version.into();
    if inverted {
        // A version that is sound by its own manifest (its test vectors say what it
        // answers: 1 - p), only bad for the business.
        m["positive_index"] = 0.into();
        for v in m["test_vectors"].as_array_mut().into_iter().flatten() {
            v["score"] = (1.0 - v["score"].as_f64().unwrap()).into();
        }
    }
    let tmp = dir.join("manifest.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    std::fs::rename(tmp, dir.join("manifest.json")).unwrap();
}

/// Produces `EVENTS` generated events at `RATE` a second, each one's true label
/// `LABEL_LAG` events later.
fn stream_with_labels(bootstrap: &str) -> std::thread::JoinHandle<()> {
    let bootstrap = bootstrap.to_string();
    std::thread::spawn(move || {
        let client = verdict::demo::KafkaClient::connect(&bootstrap);
        let mut g = Generator::new(17, 20_000, 1_764_000_000_000).with_labels();
        let mut pending = std::collections::VecDeque::new();
        let start = Instant::now();
        let label = |client: &verdict::demo::KafkaClient, (id, y): (String, u8)| {
            let msg = serde_json::json!({"event_id": id, "label": y});
            client.produce("labels", None, id.as_bytes(), msg.to_string().as_bytes());
        };
        for i in 0..EVENTS {
            let due = start + Duration::from_secs_f64(i as f64 / RATE as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let tx = g.next_event();
            client.produce("events", None, tx.card_id.as_bytes(), &tx.to_json());
            pending.push_back((tx.event_id.clone(), tx.label.unwrap()));
            if pending.len() as u64 > LABEL_LAG {
                label(&client, pending.pop_front().unwrap());
            }
        }
        client.flush();
        std::thread::sleep(Duration::from_secs(1));
        for l in pending {
            label(&client, l);
        }
        client.flush();
    })
}

/// A pipeline on a model directory holding version "1", labels joined, JSON records.
fn setup(redis: &RedisServer, model: &Path) -> (MockKafka, Config) {
    write_model(model, "1", false);
    let (mock, mut cfg) = mock_setup(4);
    mock.create_topic("labels", 2);
    with_redis(&mut cfg, redis);
    cfg.model.dir = model.to_path_buf();
    cfg.model.reload_interval_ms = 50;
    cfg.publish.format = DecisionFormat::Json;
    cfg.drift.window_s = 1;
    cfg.drift.labels_topic = "labels".into();
    let r = &mut cfg.model.rollout;
    r.mode = verdict::rollout::RolloutMode::Guarded;
    r.min_events = 2_000;
    r.min_seconds = 2;
    r.watch_seconds = 3;
    r.watch_events = 3_000;
    r.min_labels = 300;
    // The test stream starts cold (windows empty), so every version's scores sit far from
    // its warm training baseline (score PSI ~0.6): that criterion would refuse even a good
    // version here, and the score drift alarm would roll it back (`drift.psi_alert`).
    // Agreement, errors, latency and the labels still judge the versions.
    r.max_score_psi = 5.0;
    cfg.drift.psi_alert = 5.0;
    (mock, cfg)
}

/// What a run left: decisions (event id, version, partition, offset) and transitions.
struct Run {
    decisions: Vec<(String, String, i64, i64)>,
    transitions: Vec<serde_json::Value>,
}

/// Runs the stream through `cfg`'s pipeline, placing `next` (version, inverted) in the
/// model directory once a sixth of it is decided; `during` runs right after.
fn run(mock: &MockKafka, cfg: &Config, m: &std::sync::Arc<Metrics>, next: (&str, bool), during: impl FnOnce()) -> Run {
    let p = Pipeline::start(cfg, m.clone()).unwrap();
    let stream = stream_with_labels(mock.bootstrap());
    wait_for("a sixth of the stream", Duration::from_secs(60), || handled(m) >= EVENTS / 6);
    write_model(&cfg.model.dir, next.0, next.1);
    during();
    stream.join().unwrap();
    wait_for("every event", Duration::from_secs(90), || handled(m) >= EVENTS);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    let decisions = mock
        .read_all("decisions", IDLE)
        .iter()
        .map(|d| {
            let v: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            (
                s("event_id"),
                s("model_version"),
                v["source_partition"].as_i64().unwrap(),
                v["source_offset"].as_i64().unwrap(),
            )
        })
        .collect();
    let transitions = mock
        .read_all("drift", IDLE)
        .iter()
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.payload).ok())
        .filter(|v| v["kind"] == "model_transition")
        .collect();
    Run { decisions, transitions }
}

/// Every event decided exactly once, each decision naming a known version, and along each
/// partition the versions in the order `order` (each run of one version contiguous).
fn check_decisions(run: &Run, order: &[&str]) -> HashMap<String, u64> {
    assert_eq!(run.decisions.len() as u64, EVENTS, "one decision per event");
    let ids: std::collections::HashSet<&str> = run.decisions.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(ids.len() as u64, EVENTS, "no event lost or decided twice");
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut by_partition: HashMap<i64, Vec<(i64, &str)>> = HashMap::new();
    for (_, v, p, o) in &run.decisions {
        *versions.entry(v.clone()).or_default() += 1;
        by_partition.entry(*p).or_default().push((*o, v));
    }
    for (p, mut rows) in by_partition {
        rows.sort();
        let mut runs: Vec<&str> = Vec::new();
        for (_, v) in rows {
            if runs.last() != Some(&v) {
                runs.push(v);
            }
        }
        assert!(order.starts_with(&runs), "partition {p}: versions {runs:?}, expected a prefix of {order:?}");
    }
    versions
}

fn transitions(m: &Metrics, to: &str) -> u64 {
    m.model_transitions.with_label_values(&[to]).get()
}

/// The transitions on the drift topic, as (to, version, serving_version).
fn published(run: &Run) -> Vec<(String, String, String)> {
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap().to_string();
    run.transitions.iter().map(|v| (s(v, "to"), s(v, "version"), s(v, "serving_version"))).collect()
}

#[test]
fn an_inverted_version_placed_under_load_is_refused_and_never_decides() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (mock, cfg) = setup(&redis, &dir.path().join("fraud"));
    let m = Metrics::new();
    let r = run(&mock, &cfg, &m, ("2-inverted", true), || {
        wait_for("refused", Duration::from_secs(30), || transitions(&m, "refused") == 1);
    });
    let versions = check_decisions(&r, &["1"]);
    assert_eq!(versions.len(), 1, "only version 1 decided: {versions:?}");
    assert_eq!((transitions(&m, "candidate"), transitions(&m, "promoted")), (1, 0));
    let t = published(&r);
    assert_eq!(
        t,
        [("candidate".into(), "2-inverted".into(), "1".into()), ("refused".into(), "2-inverted".into(), "1".into())]
    );
    let refused = &r.transitions[1];
    let why = refused["reason"].as_str().unwrap();
    assert!(why.starts_with("agreement"), "{why}");
    let e = &refused["evidence"];
    assert!(e["events"].as_u64().unwrap() >= 2_000 && e["agreement"].as_f64().unwrap() < 0.5, "{e}");
    let view = m.readiness();
    assert_eq!(view["model"]["serving_version"], "1");
    assert!(view["model"]["candidate_version"].is_null(), "{view}");
}

#[test]
fn a_good_version_is_promoted_then_kept_and_every_transition_is_published() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (mock, cfg) = setup(&redis, &dir.path().join("fraud"));
    let m = Metrics::new();
    let r = run(&mock, &cfg, &m, ("2", false), || {
        wait_for("the candidate on /readyz", Duration::from_secs(10), || {
            m.readiness()["model"]["candidate_version"] == "2"
        });
        wait_for("promoted", Duration::from_secs(30), || transitions(&m, "promoted") == 1);
        let view = m.readiness();
        assert_eq!((&view["model"]["serving_version"], &view["model"]["previous_version"]), (&"2".into(), &"1".into()));
        wait_for("kept", Duration::from_secs(30), || transitions(&m, "kept") == 1);
    });
    let versions = check_decisions(&r, &["1", "2"]);
    assert!(versions["1"] >= EVENTS / 6 && versions["2"] > 1_000, "{versions:?}");
    assert_eq!((transitions(&m, "refused"), transitions(&m, "rolled_back")), (0, 0));
    assert_eq!(
        published(&r),
        [
            ("candidate".into(), "2".into(), "1".into()),
            ("promoted".into(), "2".into(), "2".into()),
            ("kept".into(), "2".into(), "2".into())
        ]
    );
    let promoted = &r.transitions[1]["evidence"];
    assert_eq!(promoted["agreement"].as_f64(), Some(1.0), "the same model agrees on every event: {promoted}");
    assert!(promoted["score_psi"].as_f64().is_some() && promoted["seconds"].as_f64().unwrap() >= 2.0, "{promoted}");
    assert_eq!(m.readiness()["model"]["serving_version"], "2");
    assert!(m.render().contains("verdict_model_transitions_total{to=\"promoted\"} 1"));
}

#[test]
fn an_inverted_version_promoted_on_loose_criteria_is_rolled_back_by_its_labels() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (mock, mut cfg) = setup(&redis, &dir.path().join("fraud"));
    let r = &mut cfg.model.rollout;
    (r.min_agreement, r.max_score_psi, r.max_latency_ratio) = (0.0, 1e9, 1e9);
    (r.watch_seconds, r.watch_events) = (600, 1_000_000);
    // Only the labels may roll it back here (not the score drift alarm).
    cfg.drift.psi_alert = 1e9;
    let m = Metrics::new();
    let r = run(&mock, &cfg, &m, ("2-inverted", true), || {
        wait_for("promoted", Duration::from_secs(30), || transitions(&m, "promoted") == 1);
        wait_for("rolled back", Duration::from_secs(40), || transitions(&m, "rolled_back") == 1);
    });
    let versions = check_decisions(&r, &["1", "2-inverted", "1"]);
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_eq!(
        published(&r).iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        ["candidate", "promoted", "rolled_back"]
    );
    let back = &r.transitions[2];
    assert_eq!((&back["version"], &back["serving_version"]), (&"2-inverted".into(), &"1".into()));
    let why = back["reason"].as_str().unwrap();
    assert!(why.contains("previous version"), "{why}");
    let (new, old) = (&back["labels"], &back["other_labels"]);
    assert!(new["joined"].as_i64().unwrap() >= 300 && new["joined"] == old["joined"], "same labelled events");
    assert!(new["brier"].as_f64().unwrap() > old["brier"].as_f64().unwrap() + 0.05, "{new} vs {old}");
    // Refused until the directory changes again: not promoted twice.
    assert_eq!(transitions(&m, "promoted"), 1);
    assert_eq!(m.readiness()["model"]["serving_version"], "1");
}
