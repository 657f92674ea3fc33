//! The scoring spine against librdkafka's mock cluster: counts in and out, offsets,
//! dead letters, crash and restart.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use verdict::demo::confluent_frame;
use verdict::pipeline::Pipeline;
use verdict::publish::{DLQ_DETAIL, DLQ_REASON, DLQ_STAGE, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC};
use verdict::telemetry::Metrics;

const IDLE: Duration = Duration::from_secs(2);

#[test]
fn fifty_thousand_events_over_four_partitions_get_exactly_one_decision_each() {
    let (mock, cfg) = mock_setup(4);
    let ids = produce_events(&mock, "events", 0, 50_000, 1);
    let metrics = Metrics::new();
    let p = Pipeline::start(&cfg, metrics.clone()).unwrap();
    wait_for("50k decisions", Duration::from_secs(120), || handled(&metrics) >= 50_000);
    assert!(p.shutdown(Duration::from_secs(30)).clean);

    let decisions = decode_decisions(&mock.read_all("decisions", IDLE));
    assert_eq!(decisions.len(), 50_000, "one record per event");
    let counts = id_counts(&decisions);
    assert_eq!(counts.len(), 50_000);
    assert!(ids.iter().all(|id| counts.get(id) == Some(&1)), "every produced id decided exactly once");

    let review_ids: HashSet<String> =
        decisions.iter().filter(|d| d.action == "review").map(|d| d.event_id.clone()).collect();
    let review = decode_decisions(&mock.read_all("review", IDLE));
    let review_topic_ids: HashSet<String> = review.iter().map(|d| d.event_id.clone()).collect();
    assert_eq!(review.len(), review_ids.len(), "no duplicates on the review topic");
    assert_eq!(review_topic_ids, review_ids, "review topic holds exactly the review decisions");
    assert!(!review_ids.is_empty(), "the demo model sends some events to review");
    assert_eq!(metrics.counted("decide", "review") as usize, review_ids.len());
}

/// The malformed kinds mixed in, with the reason each must get.
fn bad_message(i: u64) -> (Vec<u8>, &'static str) {
    match i % 9 {
        0 => (b"{not json".to_vec(), "malformed"),
        1 => (
            br#"{"event_id":"b","card_id":"c","event_time":1,"amount":NaN,"merchant_risk":0.1}"#.to_vec(),
            "non_finite",
        ),
        2 => (br#"{"card_id":"c","event_time":1,"amount":1.0,"merchant_risk":0.1}"#.to_vec(), "missing_field"),
        3 => (
            br#"{"event_id":"b","card_id":"c","event_time":1,"amount":"12.00","merchant_risk":0.1}"#.to_vec(),
            "wrong_type",
        ),
        4 => (confluent_frame(999, &[2, 0x41]), "unknown_schema_id"),
        5 => (format!(r#"{{"event_id":"b","pad":"{}"}}"#, "x".repeat(5000)).into_bytes(), "oversize"),
        6 => (Vec::new(), "empty_payload"),
        7 => (confluent_frame(1, &[0x08, b't', b'x']), "malformed"),
        _ => (vec![0, 0, 1], "bad_wire_format"),
    }
}

#[test]
fn malformed_messages_go_to_dead_letter_with_reason_and_the_rest_are_decided() {
    let (mock, mut cfg) = mock_setup(4);
    cfg.decode.max_payload_bytes = 4096;
    let mut g = verdict::demo::Generator::new(3, 5_000, 1_764_000_000_000);
    let mut expected = std::collections::HashMap::new();
    let (mut good, mut bad) = (0, 0u64);
    for i in 0..11_000u64 {
        if i % 11 == 5 {
            let (payload, reason) = bad_message(bad);
            let key = format!("bad-{bad}");
            mock.produce("events", None, key.as_bytes(), &payload);
            expected.insert(key, (reason, payload));
            bad += 1;
        } else {
            let tx = g.next_event();
            mock.produce("events", None, tx.card_id.as_bytes(), &tx.to_json());
            good += 1;
        }
    }
    mock.flush();
    assert_eq!((good, bad), (10_000, 1_000));

    let metrics = Metrics::new();
    let p = Pipeline::start(&cfg, metrics.clone()).unwrap();
    wait_for("11k handled", Duration::from_secs(60), || handled(&metrics) >= 11_000);
    assert!(p.shutdown(Duration::from_secs(30)).clean, "process stayed up and shut down cleanly");

    assert_eq!(decode_decisions(&mock.read_all("decisions", IDLE)).len(), 10_000);
    let dlq = mock.read_all("dead-letter", IDLE);
    assert_eq!(dlq.len(), 1_000);
    let mut by_reason = std::collections::HashMap::new();
    for m in &dlq {
        let key = String::from_utf8(m.key.clone().unwrap()).unwrap();
        let (reason, payload) = &expected[&key];
        assert_eq!(m.header(DLQ_REASON), Some(*reason), "{key}");
        assert_eq!(m.header(DLQ_STAGE), Some("decode"));
        assert_eq!(m.header(SOURCE_TOPIC), Some("events"));
        assert!(m.header(SOURCE_PARTITION).unwrap().parse::<i32>().is_ok());
        assert!(m.header(SOURCE_OFFSET).unwrap().parse::<i64>().is_ok());
        assert_eq!(&m.payload, payload, "original bytes preserved");
        *by_reason.entry(*reason).or_insert(0u64) += 1;
    }
    for (reason, n) in by_reason {
        assert_eq!(metrics.dead_letters.with_label_values(&[reason]).get(), n, "metric for {reason}");
    }
}

#[test]
fn pipeline_dropped_mid_stream_then_restarted_loses_no_event() {
    let (mock, cfg) = mock_setup(4);
    let ids = produce_events(&mock, "events", 0, 30_000, 5);
    let m1 = Metrics::new();
    let first = Pipeline::start(&cfg, m1.clone()).unwrap();
    wait_for("some decisions", Duration::from_secs(60), || handled(&m1) >= 8_000);
    drop(first); // no graceful shutdown: in-flight batches are abandoned
    let after_crash = handled(&m1);

    let m2 = Metrics::new();
    let second = Pipeline::start(&cfg, m2.clone()).unwrap();
    wait_for("the rest decided", Duration::from_secs(90), || {
        after_crash + handled(&m2) >= 30_000 && m2.counted("decode", "ok") > 0
    });
    // Let any replayed tail finish.
    std::thread::sleep(Duration::from_millis(500));
    assert!(second.shutdown(Duration::from_secs(30)).clean);

    let counts = id_counts(&decode_decisions(&mock.read_all("decisions", IDLE)));
    let missing: Vec<_> = ids.iter().filter(|id| !counts.contains_key(*id)).take(5).collect();
    assert!(missing.is_empty(), "events without a decision: {missing:?}");
    let duplicates: u32 = counts.values().map(|c| c - 1).sum();
    eprintln!("at-least-once replay after the drop: {duplicates} duplicate decisions of 30000");
}

#[test]
fn graceful_shutdown_commits_every_published_offset() {
    let (mock, cfg) = mock_setup(4);
    produce_events(&mock, "events", 0, 10_000, 9);
    let m1 = Metrics::new();
    let p = Pipeline::start(&cfg, m1.clone()).unwrap();
    wait_for("10k decisions", Duration::from_secs(60), || handled(&m1) >= 10_000);
    assert!(p.shutdown(Duration::from_secs(30)).clean);

    let m2 = Metrics::new();
    let again = Pipeline::start(&cfg, m2.clone()).unwrap();
    wait_for("partitions assigned", Duration::from_secs(15), || m2.partitions_assigned.get() == 4);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(handled(&m2), 0, "restarted consumer re-processed published events");
    assert!(again.shutdown(Duration::from_secs(10)).clean);
    let committed = mock.committed(&cfg.kafka.group_id, "events", 4);
    assert_eq!(committed.iter().sum::<i64>(), 10_000, "committed offsets {committed:?} cover every event");
    assert_eq!(decode_decisions(&mock.read_all("decisions", IDLE)).len(), 10_000);
}

#[test]
fn a_pipeline_model_with_string_and_int64_inputs_decides_and_dead_letters_bad_values_by_column() {
    // models/demo-pipeline: OneHotEncoder on raw strings inside the ONNX graph, hour and
    // day of week as int64, one typed graph input per column.
    let (mock, mut cfg) = mock_setup(2);
    cfg.model.dir = crate_path("models/demo-pipeline");
    cfg.drift.window_s = 1;
    let mut g = verdict::demo::Generator::new(8, 2_000, 1_764_000_000_000);
    let mut good = 0u64;
    let mut expected = std::collections::HashMap::new();
    for i in 0..6_000u64 {
        let mut v: serde_json::Value = serde_json::from_slice(&g.next_event().to_json()).unwrap();
        let key = format!("k{i}");
        match i % 100 {
            7 => {
                v["device"] = serde_json::json!({"id": "d", "type": 5});
                expected.insert(key.clone(), ("wrong_type", "'device_type'"));
            }
            17 => {
                v.as_object_mut().unwrap().remove("amount");
                expected.insert(key.clone(), ("missing_field", "'amount'"));
            }
            n => {
                if n % 5 == 0 {
                    v["merchant_category"] = "crypto".into(); // unknown to the encoder
                }
                good += 1;
            }
        }
        mock.produce("events", None, key.as_bytes(), v.to_string().as_bytes());
    }
    mock.flush();

    let metrics = Metrics::new();
    let p = Pipeline::start(&cfg, metrics.clone()).unwrap();
    wait_for("6k handled", Duration::from_secs(60), || handled(&metrics) >= 6_000);
    std::thread::sleep(Duration::from_millis(1_200)); // one drift window
    assert!(p.shutdown(Duration::from_secs(30)).clean);

    let decisions = decode_decisions(&mock.read_all("decisions", IDLE));
    assert_eq!(decisions.len() as u64, good);
    assert!(decisions.iter().all(|d| d.model_version == "3" && (0.0..=1.0).contains(&d.score)));
    let dlq = mock.read_all("dead-letter", IDLE);
    assert_eq!(dlq.len(), expected.len());
    for m in &dlq {
        let key = String::from_utf8(m.key.clone().unwrap()).unwrap();
        let (reason, column) = expected[&key];
        assert_eq!(m.header(DLQ_REASON), Some(reason), "{key}");
        let detail = m.header(DLQ_DETAIL).unwrap();
        assert!(detail.contains(column), "{key}: '{detail}' names the column {column}");
    }
    // Drift sees string columns by their null rate (the default text counts as null).
    let recs = drift_records(&mock);
    let events: i64 = recs.iter().map(|r| r.events).sum();
    assert_eq!(events as u64, good);
    let dev = recs.iter().flat_map(|r| &r.features).find(|f| f.name == "device_type").unwrap();
    assert!(dev.default_rate > 0.0 && dev.default_rate < 1.0, "{dev:?}");
}

#[test]
fn events_deleted_by_retention_before_they_were_read_show_as_an_offset_reset() {
    // The mock cluster keeps ~5 MiB per partition: 1,000 events decided and committed, then
    // 100,000 more while verdict is down push its committed position out of the log.
    let (mock, cfg) = mock_setup(1);
    produce_events(&mock, "events", 0, 1_000, 11);
    let m1 = Metrics::new();
    let p = Pipeline::start(&cfg, m1.clone()).unwrap();
    wait_for("1k decisions", Duration::from_secs(60), || handled(&m1) >= 1_000);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    assert_eq!(mock.committed(&cfg.kafka.group_id, "events", 1), [1_000]);
    produce_events(&mock, "events", 1_000, 100_000, 12);
    let retained = mock.read_all("events", IDLE);
    let earliest = retained.first().map_or(0, |m| m.offset);
    assert!(earliest > 1_000, "retention deleted the committed position (the log starts at {earliest})");

    let m2 = Metrics::new();
    let p = Pipeline::start(&cfg, m2.clone()).unwrap();
    wait_for("the retained events decided", Duration::from_secs(90), || handled(&m2) >= retained.len() as u64);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    assert_eq!(handled(&m2), retained.len() as u64, "every retained event once, from the log's start");
    let series = "verdict_consumer_offset_resets_total{partition=\"0\",topic=\"events\"}";
    assert_eq!(metric(&m2.render(), series), 1, "{series}: the skipped events are reported");
    assert_eq!(metric(&m1.render(), series), 0);
}
