//! Drift statistics against the demo model's training baseline (written by
//! `ops/model/train.py` from a warmed-up stream): no alarm on any input, window aggregates
//! included, over a stream as warm as production's; a one-standard-deviation shift flags
//! exactly the shifted feature; a category whose share changes flags its column; records
//! merge, and the pipeline publishes records on the drift topic at the configured interval.
//!
//! `cargo test --release --test drift -- --nocapture` prints the PSI tables.

mod common;

use std::time::Duration;

use common::*;
use verdict::config::{Config, DriftConfig};
use verdict::drift::{Baseline, DriftRecord, Identity, Window};
use verdict::vectorize::Offline;

const WINDOW: usize = 50_000;
const START_MS: i64 = 1_764_000_000_000;

fn demo_config() -> Config {
    let mut cfg = verdict::config::demo();
    cfg.model.dir = crate_path("models/demo");
    cfg.decode.avro_schemas.insert("1".into(), crate_path("schemas/transaction.avsc"));
    cfg
}

fn baseline(cfg: &Config) -> Baseline {
    let m = verdict::score::Manifest::load(&cfg.model.dir).unwrap();
    Baseline::from_manifest(&m).unwrap().expect("the demo manifest has a baseline")
}

/// Event time after which every window is full: the longest window plus its bucket width (a
/// window covers whole buckets), as `train.py` skips before its training rows. Production is
/// this warm after its first day; the demo after `--warm-hours 25`.
fn warm_up_ms(cfg: &Config) -> i64 {
    let spans =
        cfg.enrich.entities.iter().flat_map(|e| e.windows.iter().map(|w| w.size_s + w.bucket_s.unwrap_or(e.bucket_s)));
    spans.max().unwrap_or(0) as i64 * 1_000
}

/// The generator of `seed` and an [`Offline`] whose windows have seen it for
/// [`warm_up_ms`] of event time (with `warm`; else both fresh), and the next line number.
fn stream(cfg: &Config, seed: u64, warm: bool) -> (Offline, verdict::demo::Generator, usize) {
    let mut off = Offline::new(cfg, true).unwrap();
    let mut g = verdict::demo::Generator::new(seed, 50_000, START_MS);
    let end = START_MS + warm_up_ms(cfg);
    let mut n = 0;
    let mut time = START_MS;
    while warm && time < end {
        let tx = g.next_event();
        off.warm(n, &tx.to_json()).unwrap();
        (n, time) = (n + 1, tx.event_time);
    }
    (off, g, n)
}

/// Runs `n` generated events (seed) through decode, windows and the model, after a warm-up
/// when `warm`; one drift window per `WINDOW` events. `edit` may change each event's JSON first.
fn windows(
    cfg: &Config,
    b: &Baseline,
    seed: u64,
    n: usize,
    warm: bool,
    edit: impl Fn(&mut serde_json::Value),
) -> Vec<Window> {
    let (mut off, mut g, first) = stream(cfg, seed, warm);
    let mut out = vec![Window::new(b)];
    for i in 0..n {
        let mut v: serde_json::Value = serde_json::from_slice(&g.next_event().to_json()).unwrap();
        edit(&mut v);
        let (_, score) = off.next(first + i, &serde_json::to_vec(&v).unwrap()).unwrap().unwrap();
        let w = out.last_mut().unwrap();
        w.observe_texts(b, off.row.values(), off.row.texts(), score.unwrap(), verdict::rules::Action::APPROVE);
        if w.events as usize == WINDOW && i + 1 < n {
            out.push(Window::new(b));
        }
    }
    out
}

fn psi_table(b: &Baseline, ws: &[Window]) -> Vec<(String, Vec<f64>)> {
    let stats: Vec<_> = ws.iter().map(|w| w.stats(b)).collect();
    let mut rows: Vec<(String, Vec<f64>)> = b
        .features
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.clone(), stats.iter().map(|s| s.0[i].psi).collect()))
        .collect();
    rows.push(("score".into(), stats.iter().map(|s| s.1.psi).collect()));
    for (name, psis) in &rows {
        eprintln!("  {name:<28} {}", psis.iter().map(|p| format!("{p:.4}")).collect::<Vec<_>>().join("  "));
    }
    rows
}

#[test]
fn the_training_distribution_raises_no_alarm_on_any_input_over_six_warm_50k_event_windows() {
    let cfg = demo_config();
    let b = baseline(&cfg);
    // Training used seed 1 after its warm-up; these are fresh draws from the same generator,
    // as warm: every window (up to 24 h) full, as in production after its first day.
    let started = std::time::Instant::now();
    let ws = windows(&cfg, &b, 11, 6 * WINDOW, true, |_| {});
    eprintln!("PSI per 50k-event window, training distribution (seed 11, warm; {:.1?}):", started.elapsed());
    let table = psi_table(&b, &ws);
    assert_eq!(ws.len(), 6);
    let cells = table.iter().map(|(_, p)| p.len()).sum::<usize>();
    let alarms: Vec<(String, usize, f64)> = table
        .iter()
        .flat_map(|(n, ps)| ps.iter().enumerate().filter(|(_, p)| **p >= 0.1).map(move |(i, p)| (n.clone(), i, *p)))
        .collect();
    eprintln!("false alarms (PSI >= 0.1), window aggregates included: {} of {cells} feature-windows", alarms.len());
    assert!(alarms.is_empty(), "false alarms: {alarms:?}");
    let worst = table.iter().flat_map(|(_, p)| p.iter().copied()).fold(0.0, f64::max);
    eprintln!("largest PSI: {worst:.4}");
}

#[test]
fn a_one_std_shift_of_one_feature_flags_exactly_that_feature_within_one_window() {
    let cfg = demo_config();
    let b = baseline(&cfg);
    let i = b.features.iter().position(|f| f.name == "merchant_risk").unwrap();
    let std = b.features[i].std;
    // Cold streams (no 25 h warm-up each): the comparison is shifted against unshifted, so
    // the windows' own distance from the baseline cancels out, and the test stays fast.
    let plain = windows(&cfg, &b, 12, WINDOW, false, |_| {});
    let shifted = windows(&cfg, &b, 12, WINDOW, false, |v| {
        let r = v["merchant_risk"].as_f64().unwrap();
        v["merchant_risk"] = serde_json::json!(r + std);
    });
    let drift = DriftConfig::default();
    let id = Identity { model: "demo".into(), model_version: "1".into(), instance: "test".into() };
    let before = DriftRecord::build(&id, &b, &plain[0], 0, 1, &drift);
    let after = DriftRecord::build(&id, &b, &shifted[0], 0, 1, &drift);
    eprintln!("merchant_risk +1 std ({std:.4}): PSI {:.3} -> {:.3}", before.features[i].psi, after.features[i].psi);
    eprintln!("alerts {:?}, warnings {:?}", after.alerts, after.warnings);
    assert!(after.features[i].psi > drift.psi_alert, "{:?}", after.features[i]);
    assert!(after.alerts.contains(&"merchant_risk".to_string()));
    // Every other input is exactly as without the shift: only merchant_risk moved.
    let changed: Vec<&str> = after
        .features
        .iter()
        .zip(&before.features)
        .filter(|(a, b)| a.counts != b.counts)
        .map(|(a, _)| a.name.as_str())
        .collect();
    assert_eq!(changed, ["merchant_risk"]);
    let other_alerts: Vec<&String> = after
        .alerts
        .iter()
        .chain(&after.warnings)
        .filter(|n| {
            *n != "merchant_risk" && !before.alerts.contains(n) && !before.warnings.contains(n) && *n != "score"
        })
        .collect();
    assert!(other_alerts.is_empty(), "{other_alerts:?}");
}

/// One 50k-event window of `model`, plain and with `edit`, as drift records (the categorical
/// columns do not depend on the windows, so the stream starts cold).
fn categorical_records(model: &str, edit: impl Fn(&mut serde_json::Value)) -> (Baseline, DriftRecord, DriftRecord) {
    let mut cfg = demo_config();
    cfg.model.dir = crate_path(model);
    let b = baseline(&cfg);
    let drift = DriftConfig::default();
    let id = Identity { model: model.into(), model_version: "3".into(), instance: "test".into() };
    let plain = windows(&cfg, &b, 14, WINDOW, false, |_| {});
    let edited = windows(&cfg, &b, 14, WINDOW, false, edit);
    let (p, e) =
        (DriftRecord::build(&id, &b, &plain[0], 0, 1, &drift), DriftRecord::build(&id, &b, &edited[0], 0, 1, &drift));
    (b, p, e)
}

#[test]
fn a_lookup_category_whose_share_grows_flags_its_column() {
    // Every grocery purchase becomes an electronics one: about a tenth of the mass moves
    // between two categories; the mean code would barely notice, the shares do.
    let (b, plain, moved) = categorical_records("models/demo", |v| {
        if v["merchant_category"] == "grocery" {
            v["merchant_category"] = "electronics".into();
        }
    });
    let i = b.features.iter().position(|f| f.name == "merchant_category").unwrap();
    assert!(b.features[i].is_categorical(), "train.py writes category frequencies for lookup columns");
    let (p, m) = (&plain.features[i], &moved.features[i]);
    eprintln!("merchant_category: PSI {:.3} -> {:.3}, categorical KS {:.3} -> {:.3}", p.psi, m.psi, p.ks, m.ks);
    assert!(p.psi < 0.1, "{p:?}");
    assert!(m.psi > DriftConfig::default().psi_alert, "{m:?}");
    assert!(moved.alerts.contains(&"merchant_category".to_string()), "{:?}", moved.alerts);
    assert!((0.05..0.2).contains(&m.ks), "the share that moved: {m:?}");
}

#[test]
fn a_string_category_never_seen_in_training_counts_as_other_and_flags_its_column() {
    // The pipeline model takes channel as text: ATM withdrawals arrive as a channel
    // training never saw.
    let (b, plain, renamed) = categorical_records("models/demo-pipeline", |v| {
        if v["channel"] == "atm" {
            v["channel"] = "kiosk".into();
        }
    });
    let i = b.features.iter().position(|f| f.name == "channel").unwrap();
    assert!(b.features[i].is_categorical(), "train.py writes category frequencies for string columns");
    let (p, r) = (&plain.features[i], &renamed.features[i]);
    eprintln!(
        "channel: PSI {:.3} -> {:.3}, other {:.3} -> {:.3}",
        p.psi, r.psi, p.out_of_range_rate, r.out_of_range_rate
    );
    assert!(p.psi < 0.1 && p.out_of_range_rate == 0.0, "{p:?}");
    assert!(r.psi > DriftConfig::default().psi_alert, "{r:?}");
    assert!((0.02..0.1).contains(&r.out_of_range_rate), "the ATM share is 'other' now: {r:?}");
    assert!(renamed.alerts.contains(&"channel".to_string()), "{:?}", renamed.alerts);
    let others: Vec<&String> =
        renamed.alerts.iter().filter(|n| !plain.alerts.contains(n) && *n != "channel" && *n != "score").collect();
    assert!(others.is_empty(), "only channel moved: {others:?}");
}

#[test]
fn records_of_two_instances_merge_into_the_statistics_of_their_union() {
    let cfg = demo_config();
    let b = baseline(&cfg);
    let schema = apache_avro::Schema::parse_str(verdict::drift::SCHEMA).unwrap();
    let all = windows(&cfg, &b, 13, 20_000, false, |_| {}).remove(0);
    // Split the same events between two instances, as partitions would.
    let mut off = Offline::new(&cfg, true).unwrap();
    let mut g = verdict::demo::Generator::new(13, 50_000, START_MS);
    let (mut a, mut c) = (Window::new(&b), Window::new(&b));
    for i in 0..20_000 {
        let tx = g.next_event();
        let (_, score) = off.next(i, &tx.to_json()).unwrap().unwrap();
        let w = if tx.card_id.as_bytes()[tx.card_id.len() - 1].is_multiple_of(2) { &mut a } else { &mut c };
        w.observe(&b, off.row.values(), score.unwrap(), verdict::rules::Action::APPROVE);
    }
    let drift = DriftConfig::default();
    let rec = |w: &Window, inst: &str| {
        let id = Identity { model: "demo".into(), model_version: "1".into(), instance: inst.into() };
        let bytes = DriftRecord::build(&id, &b, w, 0, 1, &drift).to_avro(&schema, 101).unwrap();
        DriftRecord::from_avro(&schema, &bytes).unwrap()
    };
    let merged = DriftRecord::merge(&[rec(&a, "a"), rec(&c, "b")], &b, &drift).unwrap();
    let union = rec(&all, "a+b");
    assert_eq!(merged.events, 20_000);
    for (m, u) in merged.features.iter().chain([&merged.score]).zip(union.features.iter().chain([&union.score])) {
        assert_eq!(m.counts, u.counts, "{}", m.name);
        assert!((m.psi - u.psi).abs() < 1e-12 && (m.ks - u.ks).abs() < 1e-12, "{}", m.name);
        assert!((m.sum - u.sum).abs() <= 1e-9 * u.sum.abs().max(1.0), "{}", m.name);
    }
    assert_eq!(merged.instance, "a+b");
}

#[test]
fn the_pipeline_publishes_decodable_records_at_the_configured_interval() {
    let (mock, mut cfg) = mock_setup(4);
    cfg.drift.window_s = 1;
    cfg.drift.instance = "it-1".into();
    let m = verdict::telemetry::Metrics::new();
    let p = verdict::pipeline::Pipeline::start(&cfg, m.clone()).unwrap();
    let started = std::time::Instant::now();
    // About 4 s of traffic, in bursts.
    for i in 0..8 {
        produce_events(&mock, "events", i * 2_000, 2_000, 70 + i);
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_for("all decided", Duration::from_secs(60), || handled(&m) >= 16_000);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    let elapsed = started.elapsed();
    let recs = drift_records(&mock);
    assert_eq!(recs.iter().map(|r| r.events).sum::<i64>(), 16_000, "every decided event in exactly one window");
    let n = recs.len() as u64;
    let expect = elapsed.as_secs();
    assert!(n + 1 >= expect && n <= expect + 2, "{n} records over {elapsed:?} with window_s = 1");
    for r in &recs[..recs.len() - 1] {
        let span = r.window_end - r.window_start;
        assert!((900..=1_400).contains(&span), "window of {span} ms");
        assert_eq!(r.instance, "it-1");
        assert_eq!(r.features.len(), 16);
    }
    let text = m.render();
    for series in [
        "verdict_feature_psi{feature=\"amount\"",
        "verdict_feature_psi{feature=\"score\"",
        "verdict_action_rate{action=\"approve\"",
    ] {
        assert!(text.contains(series), "{series} missing");
    }
    assert_eq!(m.drift_windows.get(), n);
}

#[test]
fn delayed_labels_join_to_exact_precision_recall_and_brier_and_unknown_or_expired_ids_are_counted() {
    let redis = RedisServer::start();
    let (mock, mut cfg) = mock_setup(4);
    mock.create_topic("labels", 2);
    cfg.enrich.redis_url = redis.url();
    cfg.drift.window_s = 1;
    cfg.drift.labels_topic = "labels".into();
    cfg.drift.labels_horizon_s = 4;
    let m = verdict::telemetry::Metrics::new();
    let p = verdict::pipeline::Pipeline::start(&cfg, m.clone()).unwrap();
    produce_events(&mock, "events", 0, 3_000, 91);
    wait_for("decided", Duration::from_secs(60), || handled(&m) >= 3_000);
    wait_for("scored events kept", Duration::from_secs(10), || m.labels.with_label_values(&["kept"]).get() == 3_000);
    let decisions = decode_decisions(&mock.read_all("decisions", Duration::from_secs(1)));
    assert_eq!(decisions.len(), 3_000);

    // 1,000 labels (every third event is a positive), 50 for events never scored, 10 repeats
    // (already joined, so unknown) and 5 unreadable messages.
    let label = |i: usize| i.is_multiple_of(3);
    let labels = |rows: &[DecisionRow], first: usize| {
        for (i, d) in rows.iter().enumerate() {
            let msg = serde_json::json!({"event_id": d.event_id, "label": u8::from(label(first + i))});
            mock.produce("labels", None, d.event_id.as_bytes(), msg.to_string().as_bytes());
        }
    };
    labels(&decisions[..1_000], 0);
    mock.flush();
    wait_for("1,000 joined", Duration::from_secs(30), || m.labels.with_label_values(&["joined"]).get() == 1_000);
    for i in 0..50 {
        mock.produce("labels", None, b"x", format!(r#"{{"event_id":"never-{i}","label":1}}"#).as_bytes());
    }
    labels(&decisions[..10], 0);
    for bad in [&b"{"[..], br#"{"label":1}"#, br#"{"event_id":"a","label":7}"#, br#"{"event_id":"a"}"#, b"[]"] {
        mock.produce("labels", None, b"x", bad);
    }
    mock.flush();
    wait_for("unknown and invalid counted", Duration::from_secs(30), || {
        m.labels.with_label_values(&["unknown"]).get() == 60 && m.labels.with_label_values(&["invalid"]).get() == 5
    });
    // Past the horizon the kept scores expire: their labels count as unknown.
    std::thread::sleep(Duration::from_secs(5));
    labels(&decisions[2_000..2_100], 2_000);
    mock.flush();
    wait_for("expired counted", Duration::from_secs(30), || m.labels.with_label_values(&["unknown"]).get() == 160);
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(p.shutdown(Duration::from_secs(30)).clean);

    let recs = drift_records(&mock);
    let mut total = verdict::drift::labels::LabelStats::new(&[cfg.decide.review_at, cfg.decide.decline_at]);
    for r in &recs {
        total.merge(r.labels.as_ref().expect("labels in every record when the join is on"));
    }
    assert_eq!((total.joined, total.unknown, total.invalid), (1_000, 160, 5));
    // The same figures by hand from the decision records.
    let mut brier = 0.0;
    for (t, c) in [(0.5, &total.thresholds[0]), (0.9, &total.thresholds[1])] {
        let (mut tp, mut fp, mut fn_) = (0, 0, 0);
        for (i, d) in decisions[..1_000].iter().enumerate() {
            match (d.score >= t, label(i)) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fn_ += 1,
                _ => {}
            }
        }
        assert_eq!((c.tp, c.fp, c.r#fn), (tp, fp, fn_), "threshold {t}");
        assert_eq!(c.precision, (tp + fp > 0).then(|| tp as f64 / (tp + fp) as f64));
        assert_eq!(c.recall, Some(tp as f64 / (tp + fn_) as f64));
    }
    for (i, d) in decisions[..1_000].iter().enumerate() {
        let y = if label(i) { 1.0 } else { 0.0 };
        brier += (d.score - y) * (d.score - y);
    }
    assert!((total.brier.unwrap() - brier / 1_000.0).abs() < 1e-12, "{:?} vs {}", total.brier, brier / 1_000.0);
    assert_eq!(total.reliability.iter().map(|b| b.count).sum::<i64>(), 1_000);
    let text = m.render();
    assert!(text.contains("verdict_label_brier{model=\"demo-fraud-gbdt\"}"), "gauges exported");
}
