//! Business rules through the whole pipeline (mock cluster): decisions carry the rules that
//! fired and the rules version; the rules file is reloaded under load with a clean switch,
//! and an invalid file leaves the old version serving. Plus the rule author's CLI.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::*;
use verdict::config::DecisionFormat;
use verdict::pipeline::Pipeline;
use verdict::telemetry::Metrics;

const IDLE: Duration = Duration::from_secs(2);

fn rules_v(threshold: f64, action: &str, reason: &str) -> String {
    format!(
        r#"
[review]
priority = "score * 100.0 + event.amount"

[lists.deny]
values = ["card-000003"]

[[rules]]
id = "large"
condition = "event.amount > {threshold}"
action = "{action}"
reason = "{reason}"
priority = 10

[[rules]]
id = "deny"
condition = "event.card_id in lists.deny"
action = "decline"
reason = "deny_listed"
priority = 100

[[rules]]
id = "watch-velocity"
condition = "windows.card['10m'].count >= 3.0"
action = "decline"
reason = "velocity_watch"
mode = "monitor"
"#
    )
}

#[test]
fn reload_under_load_switches_cleanly_and_an_invalid_file_keeps_the_old_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, rules_v(150.0, "review", "large_v1")).unwrap();
    let (mock, mut cfg) = mock_setup(4);
    cfg.rules.file = path.to_str().unwrap().to_string();
    cfg.rules.reload_interval_ms = 50;
    cfg.publish.format = DecisionFormat::Json;
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    let v1 = p.rules().current().set.version.clone();

    // A steady stream; the file changes twice while it flows.
    let producer = produce_steadily(mock.bootstrap(), 7, 30_000);
    wait_for("a third of the stream", Duration::from_secs(60), || handled(&m) >= 10_000);
    std::fs::write(&path, rules_v(150.0, "decline", "large_v2")).unwrap();
    wait_for("v2 in force", Duration::from_secs(10), || p.rules().current().set.version != v1);
    let v2 = p.rules().current().set.version.clone();
    wait_for("two thirds", Duration::from_secs(60), || handled(&m) >= 20_000);
    std::fs::write(
        &path,
        "[[rules]]\nid = \"broken\"\ncondition = \"features.card.nope > 1\"\naction = \"decline\"\nreason = \"x\"\n",
    )
    .unwrap();
    wait_for("the invalid file rejected", Duration::from_secs(10), || {
        m.rules_reloads.with_label_values(&["rejected"]).get() == 1
    });
    let events = producer.join().unwrap();
    wait_for("every event", Duration::from_secs(60), || handled(&m) >= 30_000);
    assert_eq!(p.rules().current().set.version, v2, "the invalid file left v2 serving");
    assert!(p.shutdown(Duration::from_secs(30)).clean);

    let amount: HashMap<&str, (f64, &str)> =
        events.iter().map(|e| (e.event_id.as_str(), (e.amount, e.card_id.as_str()))).collect();
    let decisions = mock.read_all("decisions", IDLE);
    assert_eq!(decisions.len(), 30_000);
    let mut by_partition: HashMap<i64, Vec<(i64, String)>> = HashMap::new();
    let (mut n1, mut n2) = (0, 0);
    for d in &decisions {
        let v: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
        let version = v["rules_version"].as_str().unwrap().to_string();
        let (amt, card) = amount[v["event_id"].as_str().unwrap()];
        let hits: Vec<&str> = v["rule_hits"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap()).collect();
        // Every decision is made by exactly one version, and by that version's rules.
        if version == *v1 {
            n1 += 1;
            if card != "card-000003" && amt > 150.0 && v["score"].as_f64().unwrap() < 0.9 {
                assert_eq!((v["action"].as_str(), v["reason"].as_str()), (Some("review"), Some("large_v1")), "{v}");
            }
        } else {
            assert_eq!(version, *v2, "a version that never passed validation decided {v}");
            n2 += 1;
            if card != "card-000003" && amt > 150.0 {
                assert_eq!((v["action"].as_str(), v["reason"].as_str()), (Some("decline"), Some("large_v2")), "{v}");
            }
        }
        if card == "card-000003" {
            assert_eq!(v["reason"], "deny_listed");
            assert!(hits.contains(&"deny"));
        }
        if v["action"] == "review" {
            let p = v["review_priority"].as_i64().unwrap();
            let want = (v["score"].as_f64().unwrap() * 100.0 + amt).round() as i64;
            assert!((p - want).abs() <= 1, "review priority {p} vs {want}");
        }
        by_partition
            .entry(v["source_partition"].as_i64().unwrap())
            .or_default()
            .push((v["source_offset"].as_i64().unwrap(), version));
    }
    assert!(n1 > 5_000 && n2 > 5_000, "both versions decided part of the stream: {n1} / {n2}");
    // A clean switch: along each partition, v1 then v2, never back.
    for (p, mut rows) in by_partition {
        rows.sort();
        let switches = rows.windows(2).filter(|w| w[0].1 != w[1].1).count();
        assert!(switches <= 1, "partition {p} switched versions {switches} times");
        assert!(rows.first().unwrap().1 == *v1 || switches == 0);
    }
    // Monitor hits are recorded but never act; metrics count them.
    let watched = decisions
        .iter()
        .map(|d| serde_json::from_slice::<serde_json::Value>(&d.payload).unwrap())
        .filter(|v| v["rule_hits"].as_array().unwrap().iter().any(|h| h["id"] == "watch-velocity"))
        .collect::<Vec<_>>();
    assert!(!watched.is_empty());
    assert!(watched.iter().any(|v| v["action"] != "decline"), "monitor decline did not act");
    assert!(watched.iter().all(|v| v["reason"] != "velocity_watch"));
    let text = m.render();
    assert!(text.contains("verdict_rules_reloads_total{result=\"applied\"} 1"), "{text}");
    assert!(text.contains(&format!("verdict_rules_info{{rules=\"3\",version=\"{v2}\"}} 1")));
    let monitor_hits = m.rule_hits.with_label_values(&["watch-velocity", "monitor"]).get();
    assert_eq!(monitor_hits, watched.len() as u64);
    // Review copies carry their priority as a header for the queue.
    let review = mock.read_all("review", IDLE);
    assert!(!review.is_empty());
    assert!(review.iter().all(|r| r.header("verdict.review.priority").is_some()));
}

#[test]
fn check_rules_lists_every_problem_and_prints_decisions_for_sample_events() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[[rules]]
id = "a"
condition = "features.card.not_a_feature > 1"
action = "decline"
reason = "x"

[[rules]]
id = "b"
condition = "event.card_id in lists.missing_list"
action = "review"
reason = "y"
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["check-rules", "--config", "config/demo.toml", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("2 problem(s)"), "{text}");
    assert!(text.contains("unknown feature 'card.not_a_feature'"), "{text}");
    assert!(text.contains("unknown list 'missing_list'"), "{text}");

    let sample = dir.path().join("sample.jsonl");
    let gen = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args(["generate", "--count", "500", "--seed", "5"])
        .output()
        .unwrap();
    std::fs::write(&sample, gen.stdout).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "check-rules",
            "--config",
            "config/demo.toml",
            "ops/rules/fraud.toml",
            "--events",
            sample.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("rules OK: version "), "{text}");
    let decisions: Vec<serde_json::Value> =
        text.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(decisions.len(), 500);
    // card-000077 is on the example deny list.
    for d in
        decisions.iter().filter(|d| d["rules_fired"].as_array().unwrap().iter().any(|h| h["id"] == "deny-listed-card"))
    {
        assert_eq!(d["action"], "decline");
        assert_eq!(d["reason"], "card_deny_listed");
    }
    assert!(text.contains("summary: rule deny-listed-card"), "{text}");
}

#[test]
fn redis_lists_refresh_and_keep_their_entries_when_redis_is_down() {
    let mut redis = RedisServer::start();
    let mut conn = redis.conn();
    let _: () = redis::cmd("SADD").arg("verdict:list:vip").arg("card-1").arg("card-2").query(&mut conn).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    std::fs::write(
        &path,
        "[lists.vip]\nredis_set = \"verdict:list:vip\"\n[[rules]]\nid = \"vip\"\ncondition = \"event.card_id in lists.vip\"\naction = \"approve\"\nreason = \"vip\"\npriority = 100\n",
    )
    .unwrap();
    let cfg = verdict::config::RulesConfig { file: path.to_str().unwrap().into(), ..Default::default() };
    let m = Metrics::new();
    let h = verdict::rules::RulesHandle::load(
        &cfg,
        (&[], Default::default()),
        &redis.url(),
        &Default::default(),
        m.clone(),
    )
    .unwrap();
    let entries = |h: &verdict::rules::RulesHandle| {
        let mut v: Vec<String> = h.current().lists[0].iter().cloned().collect();
        v.sort();
        v
    };
    assert_eq!(entries(&h), ["card-1", "card-2"], "loaded at start");
    let _: () = redis::cmd("SADD").arg("verdict:list:vip").arg("card-3").query(&mut conn).unwrap();
    let _: () = redis::cmd("SREM").arg("verdict:list:vip").arg("card-1").query(&mut conn).unwrap();
    h.refresh_lists();
    assert_eq!(entries(&h), ["card-2", "card-3"], "refreshed");
    redis.stop();
    h.refresh_lists();
    assert_eq!(entries(&h), ["card-2", "card-3"], "kept while Redis is down");
    assert_eq!(m.rules_list_refreshes.with_label_values(&["error"]).get(), 1);
    assert!(m.render().contains("verdict_rules_list_entries{list=\"vip\"} 2"));
}

#[test]
fn check_rules_reads_redis_lists_from_rules_redis_url() {
    // rules.redis_url names the lists' Redis; enrich.redis_url (the demo's, nothing listens
    // there in tests) must not be where check-rules looks.
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let sample = dir.path().join("sample.jsonl");
    let gen = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args(["generate", "--count", "200", "--seed", "6"])
        .output()
        .unwrap();
    std::fs::write(&sample, &gen.stdout).unwrap();
    let first: serde_json::Value = serde_json::from_slice(gen.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    let card = first["card_id"].as_str().unwrap().to_string();
    let _: () = redis::cmd("SADD").arg("verdict:list:vip").arg(&card).query(&mut redis.conn()).unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[lists.vip]\nredis_set = \"verdict:list:vip\"\n[[rules]]\nid = \"vip\"\ncondition = \"event.card_id in lists.vip\"\naction = \"approve\"\nreason = \"vip\"\npriority = 100\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["check-rules", "--config", "config/demo.toml", rules.to_str().unwrap(), "--events"])
        .arg(&sample)
        .env("VERDICT__ENRICH__REDIS_URL", "redis://127.0.0.1:1/")
        .env("VERDICT__RULES__REDIS_URL", redis.url())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("unreachable"), "{text}");
    let vip = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|d| d["rules_fired"].as_array().unwrap().iter().any(|h| h["id"] == "vip"))
        .count();
    assert!(vip >= 1, "the card in the Redis set fired the rule: {text}");
}
