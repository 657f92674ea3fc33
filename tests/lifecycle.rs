//! The pipeline owns every thread it starts: after `shutdown` (and after `abort`) no
//! `verdict-*` thread is left, with every kind of thread running (consume, workers, acker,
//! watchdog, rules watcher, model watcher, drift publisher, label joiner, scored-event
//! writer).

mod common;

use std::time::Duration;

use common::*;
use verdict::pipeline::Pipeline;
use verdict::telemetry::Metrics;

/// The two tests count this process's threads: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Names of this process's threads that the pipeline started (`comm` is cut at 15 bytes,
/// so `verdict-worker-0` reads `verdict-worker-`).
fn verdict_threads() -> Vec<String> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Ok(name) = std::fs::read_to_string(task.path().join("comm")) {
            let name = name.trim().to_string();
            if name.starts_with("verdict-") {
                out.push(name);
            }
        }
    }
    out.sort();
    out
}

/// A pipeline with every kind of thread, fed 2,000 events and waited for.
fn started(redis: &RedisServer) -> (verdict::demo::MockKafka, Pipeline, Vec<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rules]]\nid = \"large\"\ncondition = \"event.amount > 5000.0\"\naction = \"review\"\nreason = \"large\"\n",
    )
    .unwrap();
    let (mock, mut cfg) = mock_setup(2);
    mock.create_topic("labels", 1);
    with_redis(&mut cfg, redis);
    cfg.rules.file = rules.to_str().unwrap().to_string();
    // Long intervals: a watcher that only looks at a flag between checks would outlive
    // the pipeline by up to a minute.
    cfg.rules.reload_interval_ms = 60_000;
    cfg.model.reload_interval_ms = 60_000;
    cfg.drift.enabled = true;
    cfg.drift.window_s = 1;
    cfg.drift.labels_topic = "labels".into();
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    produce_events(&mock, "events", 0, 2_000, 5);
    wait_for("events handled", Duration::from_secs(60), || handled(&m) >= 2_000);
    let running = verdict_threads();
    for kind in [
        "verdict-consume",
        "verdict-acker",
        "verdict-offsets",
        "verdict-watchdo",
        "verdict-rules",
        "verdict-model",
        "verdict-drift",
        "verdict-labels",
        "verdict-scored",
        "verdict-worker-",
    ] {
        assert!(running.iter().any(|t| t == kind), "{kind} not running: {running:?}");
    }
    (mock, p, running, dir)
}

#[test]
fn shutdown_joins_every_pipeline_thread() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let redis = RedisServer::start();
    let (_mock, p, _, _dir) = started(&redis);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    assert_eq!(verdict_threads(), Vec::<String>::new(), "threads left after shutdown");
}

#[test]
fn abort_joins_every_pipeline_thread() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let redis = RedisServer::start();
    let (_mock, p, _, _dir) = started(&redis);
    p.abort();
    assert_eq!(verdict_threads(), Vec::<String>::new(), "threads left after abort");
}
