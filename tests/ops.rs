//! The deployment files against the code they deploy: every metric the dashboard and the
//! alert rules read is one verdict exports (`src/telemetry/names.rs`), every exported metric
//! is on the dashboard or in an alert, the latency objective's bound is a real bucket, the
//! compose and Kubernetes configs load as `verdict run` loads them, and the Kubernetes
//! grace period and KEDA's replica bound agree with the config and the topics.
//!
//! The tools' own checks (promtool, kubernetes-validate, docker-compose config) run in
//! `scripts/test.sh`; these are the checks no tool can make.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use verdict::config::{load_layers, Config, DEFAULTS_TOML, DEMO_TOML};
use verdict::core::output::DecisionFormat;
use verdict::enrich::Backend;
use verdict::telemetry::Metrics;

const DASHBOARD: &str = "ops/grafana/dashboards/verdict.json";
const ALERTS: &str = "ops/prometheus/alerts.yml";
const ALERT_TESTS: &str = "ops/prometheus/alerts_test.yml";
const KUBERNETES: &str = "ops/deploy/kubernetes.yaml";
const KEDA: &str = "ops/deploy/keda.yaml";
const COMPOSE: &str = "docker-compose.yml";
const COMPOSE_CONFIG: &str = "ops/compose/verdict.toml";

fn path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The metric names `src/telemetry/names.rs` declares, one `pub const` each.
fn declared() -> BTreeSet<String> {
    let names: BTreeSet<String> = read("src/telemetry/names.rs")
        .lines()
        .filter(|l| l.starts_with("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .map(str::to_string)
        .collect();
    assert!(names.len() > 40, "names.rs parsed to only {} names", names.len());
    names
}

/// Every `verdict_…` metric name in `text`. Recording rules (`verdict:…`) are not metrics.
fn metric_names(text: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("verdict_") {
        if text[..i].chars().next_back().is_some_and(|c| word(c) || c == ':') {
            continue;
        }
        let end = text[i..].find(|c: char| !word(c)).map_or(text.len(), |n| i + n);
        out.insert(text[i..end].to_string());
    }
    out
}

/// A histogram's series (`_bucket`, `_sum`, `_count`) stand for the histogram.
fn base_name<'a>(name: &'a str, declared: &BTreeSet<String>) -> &'a str {
    if declared.contains(name) {
        return name;
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

/// The PromQL expressions of the dashboard's panels, with their panel titles.
fn dashboard_exprs() -> Vec<(String, String)> {
    let d: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard JSON");
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            out.push((title, t["expr"].as_str().expect("expr").to_string()));
        }
    }
    out
}

fn watched() -> BTreeSet<String> {
    let declared = declared();
    let mut text: String = dashboard_exprs().into_iter().map(|(_, e)| e + "\n").collect();
    text.push_str(&read(ALERTS));
    metric_names(&text).iter().map(|n| base_name(n, &declared).to_string()).collect()
}

#[test]
fn dashboard_and_alerts_read_only_metrics_verdict_exports() {
    let declared = declared();
    let mut unknown = Vec::new();
    for file in [DASHBOARD, ALERTS, ALERT_TESTS] {
        for name in metric_names(&read(file)) {
            if !declared.contains(base_name(&name, &declared)) {
                unknown.push(format!("{file}: {name}"));
            }
        }
    }
    assert!(unknown.is_empty(), "not declared in src/telemetry/names.rs: {unknown:#?}");
}

#[test]
fn every_exported_metric_is_on_the_dashboard_or_in_an_alert() {
    let watched = watched();
    let unwatched: Vec<_> = declared().into_iter().filter(|n| !watched.contains(n)).collect();
    assert!(unwatched.is_empty(), "on no dashboard panel and in no alert: {unwatched:#?}");
}

#[test]
fn latency_objective_bound_is_a_bucket_of_the_histogram() {
    let m = Metrics::new();
    m.record_event_latencies(&[1_000], 1_100);
    let exported = m.render();
    let mut text: String = dashboard_exprs().into_iter().map(|(_, e)| e + "\n").collect();
    text.push_str(&read(ALERTS));
    text.push_str(&read(ALERT_TESTS));
    let mut bounds = 0;
    for (i, _) in text.match_indices("_bucket{le=\"") {
        let start = text[..i].rfind("verdict_").expect("a metric before _bucket");
        // Up to the bound's closing quote: the alert tests add labels after it.
        let value = i + "_bucket{le=\"".len();
        let end = value + text[value..].find('"').expect("closing quote") + 1;
        let series = &text[start..end];
        assert!(exported.contains(series), "{series} is not a series verdict exports");
        bounds += 1;
    }
    assert!(bounds >= 4, "expected the objective's bound in the rules and on the dashboard, found {bounds}");
}

#[test]
fn dashboard_panels_have_unique_ids_a_description_and_the_provisioned_datasource() {
    let d: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard JSON");
    let provisioned = read("ops/grafana/provisioning/datasources/prometheus.yml");
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().expect("panels") {
        let title = p["title"].as_str().expect("title");
        assert!(ids.insert(p["id"].as_u64().expect("id")), "{title}: duplicate id");
        if p["type"] == "row" {
            continue;
        }
        assert!(p["description"].as_str().is_some_and(|s| !s.is_empty()), "{title}: no description");
        let uid = p["datasource"]["uid"].as_str().expect("datasource uid");
        assert!(provisioned.contains(&format!("uid: {uid}")), "{title}: datasource {uid} is not provisioned");
        assert!(!p["targets"].as_array().expect("targets").is_empty(), "{title}: no query");
    }
}

/// The lines of a YAML block scalar `key: |` (the first one in `yaml`), unindented.
fn block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |")).skip(1);
    let first = lines.next().expect("block scalar has lines");
    let indent = first.len() - first.trim_start().len();
    std::iter::once(first)
        .chain(lines.take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent))
        .map(|l| l.get(indent..).unwrap_or("").to_string() + "\n")
        .collect()
}

/// The value of the first `key: value` line after the line `after` (both trimmed).
fn value(yaml: &str, after: &str, key: &str) -> String {
    let prefix = format!("{key}:");
    yaml.lines()
        .skip_while(|l| l.trim() != after)
        .find_map(|l| l.trim().trim_start_matches("- ").strip_prefix(&prefix).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no {key} after {after}"))
}

/// The kafka-init service's `for t in topic:partitions ...` line.
fn kafka_init(compose: &str) -> &str {
    compose.lines().find(|l| l.contains("for t in")).expect("kafka-init creates the topics")
}

/// Loads TOML texts over the defaults and the demo config, as `verdict run --config
/// config/demo.toml --config …` does, without the environment's `VERDICT__` variables.
fn load(texts: &[&str]) -> Config {
    let dir = tempfile::tempdir().expect("temp dir");
    let files: Vec<PathBuf> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let f = dir.path().join(format!("layer{i}.toml"));
            std::fs::write(&f, t).expect("write layer");
            f
        })
        .collect();
    let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let loaded = load_layers(&[DEFAULTS_TOML, DEMO_TOML], &files, HashMap::new());
    assert!(loaded.problems.is_empty(), "config problems: {:#?}", loaded.problems);
    loaded.config.expect("config")
}

#[test]
fn compose_runs_verdict_on_redis_with_json_decisions_and_creates_every_topic() {
    let compose = read(COMPOSE);
    assert!(compose.contains("./ops/compose/verdict.toml:/etc/verdict/verdict.toml"), "compose mounts its config");
    let cfg = load(&[&read(COMPOSE_CONFIG)]);
    assert_eq!(cfg.enrich.backend, Backend::Redis);
    assert_eq!(cfg.enrich.redis_url, "redis://redis:6379/");
    assert_eq!(cfg.publish.format, DecisionFormat::Json, "no Schema Registry in compose");
    let init = kafka_init(&compose);
    for topic in cfg.kafka.input_topics.iter().chain([
        &cfg.kafka.decisions_topic,
        &cfg.kafka.review_topic,
        &cfg.kafka.dead_letter_topic,
        &cfg.drift.topic,
    ]) {
        assert!(init.contains(&format!(" {topic}:")), "kafka-init does not create {topic}: {init}");
    }
    assert!(compose.contains("KAFKA_AUTO_CREATE_TOPICS_ENABLE: \"false\""), "topics come from kafka-init only");
    let grace: u64 = value(&compose, "verdict:", "stop_grace_period").trim_end_matches('s').parse().unwrap();
    assert!(grace > cfg.shutdown.timeout_s, "stop_grace_period {grace}s must exceed shutdown.timeout_s");
}

#[test]
fn kubernetes_config_loads_and_the_grace_period_covers_the_drain() {
    let k8s = read(KUBERNETES);
    let cfg = load(&[&block(&k8s, "verdict.toml"), &block(&k8s, "secrets.toml")]);
    assert_eq!(cfg.enrich.backend, Backend::Redis, "windows must survive rebalances");
    assert!(cfg.enrich.redis_url.contains("CHANGE-ME"), "the Redis URL comes from the Secret");
    assert_eq!(cfg.publish.format, DecisionFormat::Json);
    let grace: u64 = value(&k8s, "spec:", "terminationGracePeriodSeconds").parse().unwrap();
    let pre_stop: u64 = value(&k8s, "preStop:", "sleep").trim_matches(|c: char| !c.is_ascii_digit()).parse().unwrap();
    assert!(
        grace > cfg.shutdown.timeout_s + pre_stop,
        "terminationGracePeriodSeconds {grace} must exceed shutdown.timeout_s {} + preStop {pre_stop}",
        cfg.shutdown.timeout_s
    );
    let image = value(&k8s, "containers:", "image");
    assert!(!image.ends_with(":latest") && image.contains(':'), "image tag must be pinned: {image}");
    assert_eq!(value(&k8s, "livenessProbe:", "httpGet"), "{path: /healthz, port: metrics}");
    assert_eq!(value(&k8s, "readinessProbe:", "httpGet"), "{path: /readyz, port: metrics}");
    assert_eq!(value(&k8s, "securityContext:", "runAsNonRoot"), "true");
    assert_eq!(value(&k8s, "securityContext:", "readOnlyRootFilesystem"), "true");
}

#[test]
fn keda_scales_the_deployment_on_its_group_up_to_the_input_partitions() {
    let (k8s, keda, compose) = (read(KUBERNETES), read(KEDA), read(COMPOSE));
    let cfg = load(&[&block(&k8s, "verdict.toml")]);
    assert_eq!(value(&keda, "scaleTargetRef:", "name"), value(&k8s, "kind: Deployment", "name"));
    assert_eq!(value(&keda, "- type: kafka", "consumerGroup"), cfg.kafka.group_id);
    let topic = value(&keda, "- type: kafka", "topic");
    assert_eq!(cfg.kafka.input_topics, vec![topic.clone()]);
    assert_eq!(value(&keda, "- type: kafka", "bootstrapServers"), cfg.kafka.brokers);
    let init = kafka_init(&compose);
    let partitions: u32 = init
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{topic}:")))
        .and_then(|n| n.parse().ok())
        .expect("kafka-init names the input topic's partitions");
    let max: u32 = value(&keda, "spec:", "maxReplicaCount").parse().unwrap();
    assert_eq!(max, partitions, "a pod beyond the partition count would own no partition");
    let min: u32 = value(&keda, "spec:", "minReplicaCount").parse().unwrap();
    assert!(min >= 1 && min <= max);
}
