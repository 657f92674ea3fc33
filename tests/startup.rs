//! Start-up checks and the command line: a broken model or config refuses to start
//! with a message naming the problem.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use verdict::pipeline::{load_scorers, Pipeline};
use verdict::telemetry::Metrics;

/// Copies the demo model to a temp dir and edits its manifest.
fn model_with(edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    copy_model_with("models/demo", edit)
}

/// Copies `model` to a temp dir and edits its manifest.
fn copy_model_with(model: &str, edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = crate_path(model);
    std::fs::copy(src.join("model.onnx"), dir.path().join("model.onnx")).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("manifest.json")).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(dir.path().join("manifest.json"), serde_json::to_string_pretty(&m).unwrap()).unwrap();
    dir
}

fn start_error(model_dir: &Path) -> String {
    let (_mock, mut cfg) = mock_setup(1);
    cfg.model.dir = model_dir.to_path_buf();
    match Pipeline::start(&cfg, Metrics::new()) {
        Ok(_) => panic!("pipeline started with a mismatched manifest"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn wrong_input_name_fails_startup_naming_it() {
    let dir = model_with(|m| m["input_name"] = "features".into());
    let err = start_error(dir.path());
    assert!(err.contains("input_name 'features' is not a graph input"), "{err}");
    assert!(err.contains("\"input\""), "lists the real inputs: {err}");
}

#[test]
fn wrong_feature_count_fails_startup_naming_both_counts() {
    let mut n = 0;
    let dir = model_with(|m| {
        let inputs = m["inputs"].as_array_mut().unwrap();
        n = inputs.len();
        inputs.remove(0);
    });
    let err = start_error(dir.path());
    assert!(err.contains(&format!("input 'input' takes {n} columns, the manifest feeds it {}", n - 1)), "{err}");
}

#[test]
fn typed_graph_inputs_are_checked_against_the_graph_at_startup() {
    // The pipeline model takes one typed input per column; a manifest that feeds an int64
    // input as float32, leaves a graph input unfed and names one the graph lacks is refused,
    // with every problem listed.
    let dir = copy_model_with("models/demo-pipeline", |m| {
        let g = m["graph_inputs"].as_array_mut().unwrap();
        let hour = g.iter_mut().find(|g| g["name"] == "hour").unwrap();
        hour["type"] = "float32".into();
        let amount = g.iter_mut().find(|g| g["name"] == "amount").unwrap();
        amount["name"] = "amount_usd".into();
    });
    let err = start_error(dir.path());
    assert!(err.contains("input 'hour' is") && err.contains("Int64") && err.contains("feeds it float32"), "{err}");
    assert!(err.contains("graph input 'amount_usd' is not in the graph"), "{err}");
    assert!(err.contains("graph input 'amount' is not fed by the manifest"), "{err}");
}

#[test]
fn a_string_column_into_a_float_input_is_a_manifest_error() {
    let dir = copy_model_with("models/demo-pipeline", |m| {
        let g = m["graph_inputs"].as_array_mut().unwrap();
        g.iter_mut().find(|g| g["name"] == "channel").unwrap()["type"] = "float32".into();
    });
    let err = start_error(dir.path());
    assert!(err.contains("column 'channel' is a string column; graph input 'channel' is float32"), "{err}");
}

#[test]
fn wrong_output_name_fails_startup_naming_it() {
    let dir = model_with(|m| m["output_name"] = "proba".into());
    let err = start_error(dir.path());
    assert!(err.contains("output_name 'proba'"), "{err}");
}

#[test]
fn a_column_naming_an_unknown_window_is_rejected_at_start_naming_it() {
    let dir = model_with(|m| m["inputs"][9]["source"] = "window:card.7d.count".into());
    let err = start_error(dir.path());
    assert!(err.contains("source 'window:card.7d.count' is not produced by the enrich config"), "{err}");
}

#[test]
fn cuda_preference_without_a_gpu_starts_on_cpu_and_says_so() {
    let (_mock, mut cfg) = mock_setup(1);
    cfg.model.execution_providers = Some(vec!["cuda".into(), "cpu".into()]);
    cfg.model.workers = 1;
    let metrics = Metrics::new();
    let (_spec, scorers) = load_scorers(&cfg, &metrics).unwrap();
    assert_eq!(scorers[0].execution_provider().label(), "cpu");
    assert_eq!(metrics.ep_fallbacks.with_label_values(&["cuda", "cpu"]).get(), 1);
}

fn verdict() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_verdict"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

#[test]
fn check_config_prints_every_problem_and_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[kafka]\ncompression = \"brotli\"\n[batch]\nmax_events = 0\n[decide]\nreview_at = 1.5\n")
        .unwrap();
    let out = verdict().args(["check-config", "--config"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    // model.dir has no default: a config must name its model.
    assert!(err.contains("4 problem(s)"), "{err}");
    for path in ["kafka.compression", "batch.max_events", "decide.review_at", "model.dir: required"] {
        assert!(err.contains(path), "missing {path} in: {err}");
    }
    let ok = verdict().args(["check-config", "--config", "config/demo.toml"]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

/// Copies the demo model's manifest with a model file of `bytes`.
fn model_file_of(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(crate_path("models/demo/manifest.json"), dir.path().join("manifest.json")).unwrap();
    std::fs::write(dir.path().join("model.onnx"), bytes).unwrap();
    dir
}

/// The demo's entity table, as a deployment's file would state it.
fn card_entity() -> String {
    let demo = std::fs::read_to_string(crate_path("config/demo.toml")).unwrap();
    let start = demo.find("[[enrich.entities]]").unwrap();
    let end = start + demo[start..].find("\n]\n").unwrap() + 3;
    demo[start..end].to_string()
}

/// `verdict check-config --config <file with toml>`, run in `cwd`: (exit code, stdout, stderr).
fn check_config_in(cwd: &Path, toml: &str) -> (Option<i32>, String, String) {
    let file = cwd.join("verdict.toml");
    std::fs::write(&file, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(cwd)
        .args(["check-config", "--config"])
        .arg(&file)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn check_config_reports_every_problem_run_would_meet_at_once() {
    // Each of these passed check-config before and made `run` fail at start-up.
    let truncated = std::fs::read(crate_path("models/demo/model.onnx")).unwrap();
    let truncated = model_file_of(&truncated[..truncated.len() / 3]);
    let empty = model_file_of(b"");
    let cwd = tempfile::tempdir().unwrap();
    let toml = format!(
        "[model]\ndir = {:?}\nshadow_dir = {:?}\n[kafka.consumer]\n\"foo.bar\" = \"1\"\n[kafka.producer]\n\"linger.mss\" = \"5\"\n\
         [batch]\nmax_events = \"two\"\n[decode.fields]\nentity_key = \"card_id\"\n{}",
        truncated.path(),
        empty.path(),
        card_entity()
    );
    let (code, _, err) = check_config_in(cwd.path(), &toml);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("5 problem(s)"), "{err}");
    for expected in [
        "kafka.consumer.\"foo.bar\": No such configuration property",
        "kafka.producer.\"linger.mss\": No such configuration property",
        "batch.max_events: invalid type: string \"two\", expected usize",
        &format!("model.dir: {}: loading model", truncated.path().display()),
        &format!("model.shadow_dir: {}: loading model", empty.path().display()),
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }

    // An empty model file as the serving model, an unknown enrich backend, a rules file
    // with a syntax error.
    let rules = cwd.path().join("rules.toml");
    std::fs::write(&rules, "[[rules]\n").unwrap();
    let toml = format!("[model]\ndir = {:?}\n[enrich]\nbackend = \"mongo\"\n[rules]\nfile = {rules:?}\n", empty.path());
    let (code, _, err) = check_config_in(cwd.path(), &toml);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("model.dir: {}: loading model", empty.path().display())), "{err}");
    assert!(err.contains("enrich.backend: unknown variant `mongo`"), "{err}");
    assert!(err.contains("rules.file: rules file: TOML parse error"), "{err}");
}

#[test]
fn check_config_passes_a_minimal_json_config_outside_the_repository() {
    // No schemas, no demo files nearby: the defaults must not need any.
    let cwd = tempfile::tempdir().unwrap();
    let toml = format!(
        "[decode]\nformat = \"json\"\n[decode.fields]\nentity_key = \"card_id\"\n[model]\ndir = {:?}\n{}",
        crate_path("models/demo"),
        card_entity()
    );
    let (code, out, err) = check_config_in(cwd.path(), &toml);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.starts_with("config OK"), "{out}");
    assert!(err.is_empty(), "nothing logged: {err}");

    // Without the entity the model's window and feature inputs have no source: named.
    let toml = format!("[decode]\nformat = \"json\"\n[model]\ndir = {:?}\n", crate_path("models/demo"));
    let (code, _, err) = check_config_in(cwd.path(), &toml);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("enrich.entities: ") && err.contains("window:card.10m.count"), "{err}");
}

#[test]
fn run_refuses_a_bad_config_the_same_way() {
    let out = verdict()
        .args(["run"])
        .env("VERDICT__BATCH__MAX_EVENTS", "0")
        .env("VERDICT__KAFKA__BOGUS", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("batch.max_events") && err.contains("kafka.bogus: unknown key"), "{err}");
}

/// A line of the log (`2026-01-01T00:00:00.000Z  WARN verdict::drift: ...`), not of the screen.
fn is_log_line(line: &str) -> bool {
    ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].iter().any(|l| line.contains(&format!(" {l} ")))
        || line.contains("\"level\":")
}

#[test]
fn demo_with_an_event_count_finishes_and_reports_throughput_and_p99() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.log");
    let out = verdict().args(["demo", "--events", "20000", "--rate", "0", "--log-file"]).arg(&log).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The screen: progress and summary only; the log (the cold stream's drift warnings
    // among it) is in the file the first line names, counted in the last.
    for line in stdout.lines().chain(stderr.lines()) {
        assert!(!is_log_line(line), "a log line on the screen: {line}");
    }
    assert!(stderr.lines().next().unwrap().ends_with(&format!("(log: {})", log.display())), "{stderr}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("model loaded"), "{logged}");
    let warnings = logged.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).count();
    let last = stdout.lines().last().unwrap();
    let expected = match warnings {
        0 => format!("log                 no warnings, see {}", log.display()),
        n => format!("log                 {n} warnings logged, see {}", log.display()),
    };
    assert_eq!(last, expected);
    assert!(stdout.contains("throughput"), "{stdout}");
    assert!(stdout.contains("latency p99 "), "{stdout}");
    let decided: u64 = stdout
        .lines()
        .find(|l| l.starts_with("decisions"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    let dead: u64 = stdout
        .lines()
        .find(|l| l.starts_with("dead-lettered"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(decided + dead, 20_000, "{stdout}");
    assert_eq!(dead, 20, "one malformed event per thousand");
}

#[test]
fn demo_at_full_speed_decides_every_event_even_past_the_mocks_retention() {
    // One partition keeps ~5 MiB (~20,000 page views): 300,000 produced as fast as possible
    // must not run that far ahead of the pipeline.
    let out = verdict()
        .args(["demo", "--scenario", "clickstream", "--events", "300000", "--rate", "0", "--partitions", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let count = |label: &str| -> u64 {
        let line = stdout.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("{label}: {stdout}"));
        line.split_whitespace().nth(if label == "events produced" { 2 } else { 1 }).unwrap().parse().unwrap()
    };
    assert_eq!(count("events produced"), 300_000);
    assert_eq!(count("decisions") + count("dead-lettered"), 300_000, "{stdout}");
    assert!(!stdout.contains("not decided"), "{stdout}");
}

#[test]
fn demo_at_a_rate_reports_latency_without_its_first_second_too() {
    // 6,000 events at 3,000/s: about the second half is decided after the warm-up.
    let out = verdict().args(["demo", "--events", "6000", "--rate", "3000"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find(|l| l.starts_with("after 1 s warm-up")).unwrap_or_else(|| panic!("{stdout}"));
    let events: u64 = line.rsplit('(').next().and_then(|t| t.split_whitespace().next()).unwrap().parse().unwrap();
    assert!((1_000..6_000).contains(&events), "{line}");
}

#[test]
fn a_model_that_overflows_at_the_training_maxima_is_refused_at_startup() {
    // A naive FP16 conversion: float32 inputs are cast to FP16 before the Scaler, so a
    // training-range value above 65504 (a 1 h amount sum) becomes inf and the score NaN.
    // Small synthetic rows score fine; the warm-up row at the baseline's maxima does not.
    let err = start_error(&crate_path("tests/data/fp16-overflow"));
    assert!(err.contains("warm-up score NaN for every float column at its training maxima"), "{err}");
    // The converted model train.py writes (round trips removed) starts.
    let (_mock, mut cfg) = mock_setup(1);
    cfg.model.dir = crate_path("models/demo-mlp-fp16");
    let p = Pipeline::start(&cfg, Metrics::new()).unwrap();
    assert!(p.shutdown(std::time::Duration::from_secs(10)).clean);
}
