//! The never-wedge guards against the mock cluster: a panic in a batch is contained, a
//! stall is reported by `/readyz`, a dead thread fails `/healthz` and stops `verdict run`
//! with a non-zero exit, and outputs the broker refuses for good are handled by policy
//! instead of being retried for ever. Faults come from the test-only hooks in
//! `verdict::fault`, armed by a marker in one event's payload.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use verdict::config::RefusedPolicy;
use verdict::fault::{self, Fault};
use verdict::pipeline::Pipeline;
use verdict::publish::{DLQ_DETAIL, DLQ_REASON};
use verdict::telemetry::Metrics;

/// Produces `n` good events with one marked event (its merchant id carries `marker`) in the
/// middle; returns the marked event's id and all ids.
fn produce_with_marker(mock: &verdict::demo::MockKafka, n: u64, marker: &str, seed: u64) -> (String, Vec<String>) {
    let mut ids = produce_events(mock, "events", 0, n / 2, seed);
    let mut g = verdict::demo::Generator::new(seed + 100, 1_000, 1_764_000_000_000).with_first_id(900_000 + seed);
    let mut tx = g.next_event();
    tx.merchant_id = marker.to_string();
    mock.produce("events", None, tx.card_id.as_bytes(), &tx.to_json());
    ids.push(tx.event_id.clone());
    ids.extend(produce_events(mock, "events", n / 2 + 1, n / 2, seed + 1));
    (tx.event_id, ids)
}

/// The event ids in dead-lettered JSON events.
fn event_ids(dlq: &[verdict::demo::ReadMessage]) -> Vec<String> {
    let id = |m: &verdict::demo::ReadMessage| {
        serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()["event_id"].as_str().unwrap().to_string()
    };
    dlq.iter().map(id).collect()
}

#[test]
fn a_panic_in_a_batch_dead_letters_that_batch_as_internal_error_and_the_worker_goes_on() {
    let (mock, cfg) = mock_setup(4);
    fault::arm(b"PANIC-MARKER-1", Fault::Panic);
    let (marked, ids) = produce_with_marker(&mock, 4_000, "PANIC-MARKER-1", 21);
    let metrics = Metrics::new();
    let p = Pipeline::start(&cfg, metrics.clone()).unwrap();
    wait_for("every event handled", Duration::from_secs(60), || handled(&metrics) >= ids.len() as u64);
    assert_eq!(p.failure(), None, "a caught panic does not fail the pipeline");
    assert!(p.shutdown(Duration::from_secs(30)).clean);

    let dlq = mock.read_all("dead-letter", Duration::from_secs(2));
    assert!(!dlq.is_empty());
    assert!(dlq.iter().all(|m| m.header(DLQ_REASON) == Some("internal_error")), "only the panicked batch");
    assert!(dlq.iter().all(|m| m.header(DLQ_DETAIL).is_some_and(|d| d.contains("panic: injected fault"))));
    let panicked = event_ids(&dlq);
    assert!(panicked.contains(&marked), "the marked event's batch is dead-lettered");
    let decisions = decode_decisions(&mock.read_all("decisions", Duration::from_secs(2)));
    let counts = id_counts(&decisions);
    for id in &ids {
        let n = counts.get(id).copied().unwrap_or(0) + u32::from(panicked.contains(id));
        assert_eq!(n, 1, "{id}: exactly one decision or one dead letter");
    }
    let panics: u64 =
        (0..2).map(|i| metrics.guards.panics.with_label_values(&[&format!("verdict-worker-{i}")]).get()).sum();
    assert_eq!(panics, 1);
    assert_eq!(metrics.dead_letters.with_label_values(&["internal_error"]).get(), dlq.len() as u64);
    let committed = mock.committed(&cfg.kafka.group_id, "events", 4);
    assert_eq!(committed.iter().sum::<i64>(), ids.len() as i64, "everything committed");
}

#[test]
fn a_scoring_error_that_persists_dead_letters_its_batch_and_the_rest_are_decided() {
    let (mock, cfg) = mock_setup(4);
    fault::arm(b"SCORE-MARKER-4", Fault::ScoreError);
    let (marked, ids) = produce_with_marker(&mock, 4_000, "SCORE-MARKER-4", 61);
    let metrics = Metrics::new();
    let p = Pipeline::start(&cfg, metrics.clone()).unwrap();
    wait_for("every event handled", Duration::from_secs(60), || handled(&metrics) >= ids.len() as u64);
    assert_eq!(p.failure(), None);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    let dlq = mock.read_all("dead-letter", Duration::from_secs(2));
    assert!(dlq.iter().all(|m| m.header(DLQ_REASON) == Some("internal_error")));
    assert!(
        dlq.iter().all(|m| m.header(DLQ_DETAIL).is_some_and(|d| d.contains("scoring failed: inference"))),
        "{:?}",
        dlq[0].headers
    );
    let failed = event_ids(&dlq);
    assert!(failed.contains(&marked));
    let counts = id_counts(&decode_decisions(&mock.read_all("decisions", Duration::from_secs(2))));
    for id in &ids {
        assert_eq!(counts.get(id).copied().unwrap_or(0) + u32::from(failed.contains(id)), 1, "{id}");
    }
    assert_eq!(mock.committed(&cfg.kafka.group_id, "events", 4).iter().sum::<i64>(), ids.len() as i64);
}

#[test]
fn a_stall_makes_readyz_fail_until_progress_resumes() {
    let (mock, mut cfg) = mock_setup(2);
    cfg.telemetry.stall_timeout_s = 1;
    fault::arm(b"STALL-MARKER-2", Fault::Stall(Duration::from_secs(5)));
    let (_, ids) = produce_with_marker(&mock, 2_000, "STALL-MARKER-2", 31);
    let metrics = Metrics::new();
    let p = Pipeline::start(&cfg, metrics.clone()).unwrap();
    wait_for("the stall reported", Duration::from_secs(30), || metrics.guards.stalled.get() == 1);
    assert!(!metrics.ready(), "/readyz fails while stalled");
    assert_eq!(metrics.readiness()["stalled"], true);
    assert!(metrics.healthy(), "a stall is not a failure: the process is not restarted for it");
    wait_for("every event handled", Duration::from_secs(60), || handled(&metrics) >= ids.len() as u64);
    wait_for("the stall cleared", Duration::from_secs(10), || metrics.guards.stalled.get() == 0);
    assert!(metrics.ready());
    assert!(p.shutdown(Duration::from_secs(30)).clean);
}

#[test]
fn a_worker_thread_that_dies_fails_health_and_verdict_run_exits_non_zero() {
    let (mock, cfg) = mock_setup(2);
    let (_, _ids) = produce_with_marker(&mock, 2_000, "KILL-MARKER-3", 41);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "--config", "config/demo.toml"])
        .env("VERDICT_FAULTS", "kill:KILL-MARKER-3")
        .env("VERDICT__KAFKA__BROKERS", mock.bootstrap())
        .env("VERDICT__KAFKA__GROUP_ID", &cfg.kafka.group_id)
        .env("VERDICT__TELEMETRY__LISTEN", format!("127.0.0.1:{port}"))
        .env("VERDICT__SHUTDOWN__TIMEOUT_S", "5")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut saw_unhealthy = false;
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if http_get(port, "/healthz").is_some_and(|(code, body)| code == 503 && body.contains("verdict-worker")) {
            saw_unhealthy = true;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "verdict did not exit after its worker died");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(!exit.success(), "non-zero exit: {exit:?}\n{log}");
    assert!(log.contains("pipeline failed"), "{log}");
    assert!(log.contains("verdict-worker") && log.contains("panicked"), "{log}");
    assert!(saw_unhealthy, "/healthz answered 503 naming the thread before the exit\n{log}");
}

/// Decision records over the producer's `message.max.bytes`: refused at enqueue for good.
fn refusing(policy: RefusedPolicy) -> (verdict::demo::MockKafka, verdict::config::Config, Vec<String>) {
    let (mock, mut cfg) = mock_setup(2);
    cfg.kafka.producer.insert("message.max.bytes".into(), "1000".into());
    cfg.publish.format = verdict::config::DecisionFormat::Json;
    // With the aggregates every JSON decision record is over 1,000 bytes (~1.35 KB).
    cfg.publish.include_aggregates = true;
    cfg.publish.on_refused = policy;
    cfg.drift.enabled = false;
    let ids = produce_events(&mock, "events", 0, 500, 51);
    (mock, cfg, ids)
}

#[test]
fn outputs_refused_for_good_are_dead_lettered_not_retried_for_ever() {
    let (mock, cfg, ids) = refusing(RefusedPolicy::DeadLetter);
    let metrics = Metrics::new();
    let p = Pipeline::start(&cfg, metrics.clone()).unwrap();
    wait_for("every event handled", Duration::from_secs(60), || handled(&metrics) >= ids.len() as u64);
    wait_for("all committed", Duration::from_secs(30), || {
        mock.committed(&cfg.kafka.group_id, "events", 2).iter().sum::<i64>() == ids.len() as i64
    });
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    let dlq = mock.read_all("dead-letter", Duration::from_secs(2));
    assert_eq!(dlq.len(), ids.len(), "every event's decision was refused, so every event is dead-lettered once");
    assert!(dlq.iter().all(|m| m.header(DLQ_REASON) == Some("output_refused")));
    assert!(dlq.iter().all(|m| m.header(DLQ_DETAIL).is_some_and(|d| d.contains("decisions"))), "{:?}", dlq[0].headers);
    assert!(mock.read_all("decisions", Duration::from_secs(1)).is_empty());
    let refused = metrics.guards.produce_errors.with_label_values(&["MessageSizeTooLarge", "dead_lettered"]).get();
    assert_eq!(refused, ids.len() as u64);
}

#[test]
fn under_on_refused_stop_the_pipeline_fails_and_commits_nothing_past_the_refusal() {
    let (mock, cfg, _ids) = refusing(RefusedPolicy::Stop);
    let metrics = Metrics::new();
    let p = Pipeline::start(&cfg, metrics.clone()).unwrap();
    wait_for("the pipeline failed", Duration::from_secs(60), || p.failure().is_some());
    assert!(p.failure().unwrap().contains("on_refused"), "{:?}", p.failure());
    assert!(!metrics.healthy() && !metrics.ready());
    p.shutdown(Duration::from_secs(5));
    let committed = mock.committed(&cfg.kafka.group_id, "events", 2);
    assert!(committed.iter().all(|&o| o <= 0), "nothing committed past the refused event: {committed:?}");
}
