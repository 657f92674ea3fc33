//! The released binary as users run it: `verdict run` as a separate process against the
//! mock cluster's TCP listener, scraped over HTTP, stopped with SIGTERM.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn run_serves_metrics_and_readiness_and_sigterm_commits_everything() {
    let (mock, cfg) = mock_setup(4);
    produce_events(&mock, "events", 0, 5_000, 41);
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_dir.path().join("rules.toml");
    let rule = |t: u32| {
        format!(
            "[[rules]]\nid = \"big\"\ncondition = \"event.amount > {t}.0\"\naction = \"review\"\nreason = \"big\"\n"
        )
    };
    std::fs::write(&rules, rule(1000)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "--config", "config/demo.toml"])
        .env_remove("RUST_LOG")
        .env_remove("MIMALLOC_ALLOW_THP")
        .env("VERDICT__KAFKA__BROKERS", mock.bootstrap())
        .env("VERDICT__KAFKA__GROUP_ID", &cfg.kafka.group_id)
        .env("VERDICT__KAFKA__COMMIT_INTERVAL_MS", "200")
        .env("VERDICT__TELEMETRY__LISTEN", format!("127.0.0.1:{port}"))
        .env("VERDICT__TELEMETRY__LOG_FORMAT", "json")
        .env("VERDICT__RULES__FILE", &rules)
        // Only SIGHUP reloads within this test.
        .env("VERDICT__RULES__RELOAD_INTERVAL_MS", "600000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    wait_for("/healthz", Duration::from_secs(30), || http_get(port, "/healthz").is_some_and(|(c, _)| c == 200));
    wait_for("/readyz 200", Duration::from_secs(60), || http_get(port, "/readyz").is_some_and(|(c, _)| c == 200));
    let (_, ready) = http_get(port, "/readyz").unwrap();
    assert!(ready.contains("\"execution_provider\":\"cpu\""), "{ready}");
    // Transparent huge pages are off for the process: mimalloc asks for them on its arenas,
    // ~40 MiB more resident with 50,000 cards' windows (BENCHMARKS.md, issue 24).
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }
    wait_for("5000 decisions in /metrics", Duration::from_secs(60), || {
        http_get(port, "/metrics")
            .is_some_and(|(_, b)| metric(&b, "verdict_events_total{outcome=\"ok\",stage=\"decode\"}") >= 5_000)
    });
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    for name in [
        "verdict_pipeline_latency_seconds_bucket",
        "verdict_stage_seconds_bucket",
        "verdict_partitions_assigned 4",
        "verdict_model_info",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }

    // SIGHUP: the changed rules file is validated and swapped in at once.
    let reloads = |b: &str| metric(b, "verdict_rules_reloads_total{result=\"applied\"}");
    assert_eq!(reloads(&metrics), 0);
    std::fs::write(&rules, rule(2000)).unwrap();
    assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
    wait_for("the rules reloaded on SIGHUP", Duration::from_secs(10), || {
        http_get(port, "/metrics").is_some_and(|(_, b)| reloads(&b) == 1)
    });

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut waited = 0;
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(waited < 300, "verdict did not exit within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
    };
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(exit.success(), "exit {exit:?}\n{log}");
    assert!(log.contains("pipeline stopped"), "{log}");
    // A quiet start: ONNX Runtime's own INFO log (about 90 lines per start, and ort's note
    // that it was built for ONNX Runtime 1.31) stays out unless asked for.
    let records: Vec<serde_json::Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(records.len(), log.lines().count(), "every line is a JSON record:\n{log}");
    let ort_info: Vec<_> = records
        .iter()
        .filter(|r| r["target"].as_str().is_some_and(|t| t == "ort" || t.starts_with("ort::")))
        .filter(|r| !matches!(r["level"].as_str(), Some("WARN" | "ERROR")))
        .collect();
    assert!(ort_info.is_empty(), "ort INFO lines: {ort_info:?}");
    assert!(records.len() < 40, "{} log lines for a short run:\n{log}", records.len());
    let committed = mock.committed(&cfg.kafka.group_id, "events", 4);
    assert_eq!(committed.iter().sum::<i64>(), 5_000, "committed {committed:?}");
}

#[test]
fn output_cut_short_by_its_reader_ends_quietly() {
    // `verdict generate | head -1`: the reader closes the pipe; verdict stops writing and
    // exits 0 without a panic or an error message.
    let mut child = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args(["generate", "--count", "2000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    out.read_exact(&mut first).unwrap();
    assert_eq!(first[0], b'{');
    drop(out);
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "exit {status:?}, stderr: {err}");
    assert!(err.is_empty(), "stderr: {err}");
}
