//! PII redaction (`[publish.redact]`) through the librdkafka mock cluster: for each mode, good
//! events (a low review threshold, so review copies exist) and bad ones (dead letters: a JSON
//! event of the wrong type, a bad event time, a payload that is not JSON) go through the
//! pipeline; then every output topic (decisions, review, dead letters, drift) and the captured
//! log are read, and no raw value of a redacted field is anywhere. Pseudonyms equal the HMAC
//! the test computes itself and are the same after a restart; a mask keeps exactly the last N.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use verdict::config::{Config, DecisionFormat};
use verdict::demo::{Generator, MockKafka, ReadMessage, Transaction};
use verdict::pipeline::Pipeline;
use verdict::publish::redact::DLQ_REDACTED;
use verdict::publish::{DLQ_REASON, EVENT_ID};
use verdict::telemetry::Metrics;

/// Every log line of this test binary (all its tests redact the card ids).
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (before `mock_setup`, whose own install then gives way).
fn logs() -> Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn,verdict=debug"))
            .with_ansi(false)
            .with_writer(move || Capture(b.clone()))
            .init();
        buf
    })
    .clone()
}

const KEY: &[u8] = b"redaction-test-key-0123456789abcdef";

fn hmac_hex(v: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
    m.update(v.as_bytes());
    m.finalize().into_bytes()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn masked(v: &str, keep: usize) -> String {
    let n = v.chars().count();
    "*".repeat(n - keep) + &v[v.len() - keep..]
}

/// Whether `text` holds `prefix` followed by `digits` decimal digits: a raw card
/// (`card-000123`), merchant (`m-0042`) or event id (`tx-0000000042`) of the generator.
fn has_raw(text: &[u8], prefix: &str, digits: usize) -> bool {
    let p = prefix.as_bytes();
    text.windows(p.len() + digits).any(|w| w.starts_with(p) && w[p.len()..].iter().all(u8::is_ascii_digit))
}

/// The messages of `msgs` whose key, payload or a header value holds a raw value.
fn raw_in(msgs: &[ReadMessage], prefix: &str, digits: usize) -> Vec<String> {
    msgs.iter()
        .filter(|m| {
            has_raw(m.key.as_deref().unwrap_or(&[]), prefix, digits)
                || has_raw(&m.payload, prefix, digits)
                || m.headers.iter().any(|(_, v)| has_raw(v.as_bytes(), prefix, digits))
        })
        .map(|m| format!("{m:?}"))
        .collect()
}

/// What one run wrote.
struct Outputs {
    decisions: Vec<ReadMessage>,
    review: Vec<ReadMessage>,
    dead: Vec<ReadMessage>,
    drift: Vec<ReadMessage>,
}

impl Outputs {
    fn all(&self) -> impl Iterator<Item = (&'static str, &[ReadMessage])> {
        [
            ("decisions", &self.decisions[..]),
            ("review", &self.review),
            ("dead letters", &self.dead),
            ("drift", &self.drift),
        ]
        .into_iter()
    }

    /// Asserts no output holds a raw value like `prefix` + `digits` digits.
    fn assert_no_raw(&self, prefix: &str, digits: usize) {
        for (name, msgs) in self.all() {
            let raw = raw_in(msgs, prefix, digits);
            assert!(raw.is_empty(), "{name}: {} records with a raw {prefix}…, e.g. {}", raw.len(), raw[0]);
        }
    }

    fn dead_letter(&self, reason: &str) -> &ReadMessage {
        self.dead.iter().find(|m| m.header(DLQ_REASON) == Some(reason)).unwrap_or_else(|| panic!("no {reason}"))
    }
}

/// A bad message: the reason it is dead-lettered with, its transaction, its payload.
type Bad = (&'static str, Transaction, Vec<u8>);

/// The bad messages of a run.
fn bad_events(g: &mut Generator) -> Vec<Bad> {
    let (a, b, c) = (g.next_event(), g.next_event(), g.next_event());
    let mut wrong = serde_json::to_value(&a).unwrap();
    wrong["amount"] = json!("lots");
    let mut early = serde_json::to_value(&b).unwrap();
    early["event_time"] = json!(5);
    let garbage = format!("not JSON: {} paid {} at {}", c.card_id, c.amount, c.merchant_id).into_bytes();
    vec![
        ("wrong_type", a, serde_json::to_vec(&wrong).unwrap()),
        ("bad_event_time", b, serde_json::to_vec(&early).unwrap()),
        ("malformed", c, garbage),
    ]
}

/// Produces `n` good events (ids from `first`, 300 cards: they repeat across runs) and three
/// bad ones, runs a pipeline until all are handled and a drift record is out, and stops it.
fn run(mock: &MockKafka, cfg: &Config, first: u64, n: u64) -> (Vec<Transaction>, Vec<Bad>) {
    let mut g = Generator::new(first, 300, 1_764_000_000_000).with_first_id(first);
    let good: Vec<Transaction> = (0..n).map(|_| g.next_event()).collect();
    let bad = bad_events(&mut g);
    for tx in &good {
        mock.produce("events", Some(0), tx.card_id.as_bytes(), &tx.to_json());
    }
    for (_, tx, payload) in &bad {
        mock.produce("events", Some(0), tx.card_id.as_bytes(), payload);
    }
    mock.flush();
    let metrics = Metrics::new();
    let drift_before = mock.read_all(&cfg.drift.topic, Duration::from_millis(300)).len();
    let p = Pipeline::start(cfg, metrics.clone()).unwrap();
    wait_for("every event handled", Duration::from_secs(90), || handled(&metrics) >= n + 3);
    wait_for("a drift record", Duration::from_secs(30), || {
        mock.read_all(&cfg.drift.topic, Duration::from_millis(300)).len() > drift_before
    });
    assert_eq!(p.failure(), None);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    (good, bad)
}

fn read(mock: &MockKafka, cfg: &Config) -> Outputs {
    let idle = Duration::from_secs(1);
    Outputs {
        decisions: mock.read_all(&cfg.kafka.decisions_topic, idle),
        review: mock.read_all(&cfg.kafka.review_topic, idle),
        dead: mock.read_all(&cfg.kafka.dead_letter_topic, idle),
        drift: mock.read_all(&cfg.drift.topic, idle),
    }
}

/// A pipeline on one partition, most decisions `review`, a drift record every 100 events.
fn setup(format: DecisionFormat, fields: Value) -> (MockKafka, Config) {
    logs();
    let (mock, mut cfg) = mock_setup(1);
    cfg.publish.format = format;
    cfg.decide.review_at = 0.0;
    cfg.decide.decline_at = 0.999;
    cfg.drift.window_events = 100;
    cfg.publish.redact.fields = serde_json::from_value(fields).unwrap();
    (mock, cfg)
}

fn assert_log_has_no_raw_card() {
    let text = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(!has_raw(text.as_bytes(), "card-", 6), "a raw card id in the log:\n{text}");
}

#[test]
fn hashed_ids_are_the_keyed_hmac_everywhere_and_the_same_after_a_restart() {
    let (mock, mut cfg) = setup(
        DecisionFormat::Json,
        json!({"entity_key": "hash", "event_id": "hash", "features.distance_km": "drop", "event": {"merchant_id": "hash"}}),
    );
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("pseudonym.key");
    std::fs::write(&key_file, [KEY, b"\n"].concat()).unwrap();
    cfg.publish.redact.hash_key_file = key_file.display().to_string();
    // Redis: its online features are missing, so the enrich stage warns naming the Redis key.
    let redis = RedisServer::start();
    with_redis(&mut cfg, &redis);

    let (good, bad) = run(&mock, &cfg, 0, 400);
    let (good2, _) = run(&mock, &cfg, 100_000, 400);
    let out = read(&mock, &cfg);
    let all: Vec<&Transaction> = good.iter().chain(&good2).collect();
    let by_pseudonym: HashMap<String, &Transaction> = all.iter().map(|tx| (hmac_hex(&tx.event_id), *tx)).collect();

    assert_eq!(out.decisions.len(), 800, "one decision per good event");
    assert!(out.review.len() >= 400, "review copies: {}", out.review.len());
    let mut seen: HashMap<String, (String, bool)> = HashMap::new();
    for m in out.decisions.iter().chain(&out.review) {
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        let id = v["event_id"].as_str().unwrap();
        let tx = by_pseudonym.get(id).unwrap_or_else(|| panic!("event_id {id} is no event's pseudonym"));
        let card = hmac_hex(&tx.card_id);
        assert_eq!(v["entity_key"], card.as_str());
        assert_eq!(m.key.as_deref(), Some(card.as_bytes()), "the record key is the pseudonym");
        assert_eq!(m.header(EVENT_ID), Some(id));
        assert!(v["features"].get("amount").is_some() && v["features"].get("distance_km").is_none(), "{v}");
        // The same card, in either run, has one pseudonym.
        let second_run = good2.iter().any(|t| t.event_id == tx.event_id);
        let e = seen.entry(tx.card_id.clone()).or_insert((card.clone(), second_run));
        assert_eq!(e.0, card);
        e.1 |= second_run;
    }
    let both_runs = good.iter().filter(|t| seen.get(&t.card_id).is_some_and(|s| s.1)).count();
    assert!(both_runs > 100, "cards decided before and after the restart: {both_runs}");

    assert_eq!(out.dead.len(), 6, "three bad events a run");
    let wrong = out.dead_letter("wrong_type");
    let v: Value = serde_json::from_slice(&wrong.payload).unwrap();
    let tx = &bad[0].1;
    assert_eq!(v["card_id"], hmac_hex(&tx.card_id).as_str());
    assert_eq!(v["event_id"], hmac_hex(&tx.event_id).as_str());
    assert_eq!(v["merchant_id"], hmac_hex(&tx.merchant_id).as_str());
    assert_eq!(v["amount"], "lots", "fields not named are kept");
    assert_eq!(wrong.key.as_deref(), Some(hmac_hex(&tx.card_id).as_bytes()));
    assert_eq!(wrong.header(DLQ_REDACTED), Some("fields"));
    let garbage = out.dead_letter("malformed");
    let want: String = Sha256::digest(&bad[2].2).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(garbage.payload, want.as_bytes(), "publish.redact.unparsed = sha256 (the default)");
    assert_eq!(garbage.header(DLQ_REDACTED), Some("sha256"));

    assert!(!out.drift.is_empty());
    out.assert_no_raw("card-", 6);
    out.assert_no_raw("tx-", 10);
    out.assert_no_raw("m-", 4);
    let log = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(log.contains("no online-feature hash at verdict:f:card:{<redacted>}"), "the warning is logged:\n{log}");
    assert_log_has_no_raw_card();
}

/// Avro decision records as name → value.
fn avro_records(msgs: &[ReadMessage]) -> Vec<HashMap<String, apache_avro::types::Value>> {
    let schema = verdict::decode::parse_schema_file(&crate_path("schemas/decision.avsc")).unwrap();
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(&schema).build().unwrap();
    msgs.iter()
        .map(|m| {
            let apache_avro::types::Value::Record(f) = reader.read_value(&mut &m.payload[5..]).unwrap() else {
                panic!("not a record")
            };
            f.into_iter().collect()
        })
        .collect()
}

fn avro_str(r: &HashMap<String, apache_avro::types::Value>, k: &str) -> String {
    match &r[k] {
        apache_avro::types::Value::String(s) => s.clone(),
        v => panic!("{k}: {v:?}"),
    }
}

#[test]
fn masked_ids_keep_exactly_their_last_characters_in_avro_records_and_dead_letters() {
    let (mock, mut cfg) = setup(
        DecisionFormat::Avro,
        json!({"entity_key": {"mode": "mask", "keep_last": 4}, "event_id": {"mode": "mask", "keep_last": 5}}),
    );
    cfg.publish.redact.unparsed = verdict::publish::redact::Unparsed::Drop;
    let (good, bad) = run(&mock, &cfg, 0, 400);
    let out = read(&mock, &cfg);

    assert_eq!(out.decisions.len(), 400);
    assert!(out.review.len() >= 200, "review copies: {}", out.review.len());
    for (m, r) in out
        .decisions
        .iter()
        .chain(&out.review)
        .zip(avro_records(&out.decisions).iter().chain(&avro_records(&out.review)))
    {
        let offset = match r["source_offset"] {
            apache_avro::types::Value::Long(o) => o as usize,
            _ => panic!(),
        };
        let tx = &good[offset];
        let key = avro_str(r, "entity_key");
        assert_eq!(key, masked(&tx.card_id, 4));
        assert_eq!(key.chars().filter(|c| *c != '*').count(), 4, "exactly the last 4 kept: {key}");
        assert_eq!(avro_str(r, "event_id"), masked(&tx.event_id, 5));
        assert_eq!(m.key.as_deref(), Some(key.as_bytes()));
        assert_eq!(m.header(EVENT_ID), Some(masked(&tx.event_id, 5).as_str()));
    }

    let wrong = out.dead_letter("wrong_type");
    let v: Value = serde_json::from_slice(&wrong.payload).unwrap();
    assert_eq!(v["card_id"], masked(&bad[0].1.card_id, 4).as_str());
    assert_eq!(v["event_id"], masked(&bad[0].1.event_id, 5).as_str());
    assert_eq!(wrong.key.as_deref(), Some(masked(&bad[0].1.card_id, 4).as_bytes()));
    let garbage = out.dead_letter("malformed");
    assert!(garbage.payload.is_empty(), "publish.redact.unparsed = drop");
    assert_eq!(garbage.header(DLQ_REDACTED), Some("dropped"));

    out.assert_no_raw("card-", 6);
    out.assert_no_raw("tx-", 10);
    assert_log_has_no_raw_card();
}

#[test]
fn dropped_fields_are_in_no_output_and_the_records_have_no_key() {
    let (mock, cfg) = setup(
        DecisionFormat::Json,
        json!({"entity_key": "drop", "features": {"amount": "drop"}, "event.merchant_id": "drop"}),
    );
    let (good, bad) = run(&mock, &cfg, 0, 400);
    let out = read(&mock, &cfg);

    assert_eq!(out.decisions.len(), 400);
    assert!(!out.review.is_empty());
    let ids: std::collections::HashSet<&str> = good.iter().map(|t| t.event_id.as_str()).collect();
    for m in out.decisions.iter().chain(&out.review) {
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        assert!(ids.contains(v["event_id"].as_str().unwrap()), "event ids are not redacted here: {v}");
        assert_eq!(v["entity_key"], "", "a dropped string is empty, as Avro's default");
        assert_eq!(m.key, None);
        assert!(v["features"].get("amount").is_none() && v["features"].get("merchant_category").is_some(), "{v}");
    }
    let wrong = out.dead_letter("wrong_type");
    let v: Value = serde_json::from_slice(&wrong.payload).unwrap();
    for gone in ["card_id", "merchant_id", "amount"] {
        assert!(v.get(gone).is_none(), "{gone} in {v}");
    }
    assert_eq!(v["event_id"], bad[0].1.event_id.as_str());
    assert_eq!(wrong.key, None);

    out.assert_no_raw("card-", 6);
    out.assert_no_raw("m-", 4);
    assert_log_has_no_raw_card();
}

#[test]
fn bad_redaction_settings_are_all_reported_naming_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("verdict.toml");
    std::fs::write(
        &file,
        r#"
[model]
dir = "models/demo"
[publish.redact]
hash_key_file = "/nonexistent/pseudonym.key"
[publish.redact.fields]
entity_key = "hash"
event_id = "drop"
features.amount = "scramble"
score = "drop"
"#,
    )
    .unwrap();
    let e = verdict::config::load_files(&[&file]).unwrap_err().0;
    for want in [
        "publish.redact.hash_key_file: /nonexistent/pseudonym.key:",
        "publish.redact.fields.event_id: the event id cannot be dropped",
        "publish.redact.fields.features.amount: unknown mode 'scramble'",
        "publish.redact.fields.score: names nothing the records carry",
    ] {
        assert!(e.iter().any(|p| p.starts_with(want)), "{want} not in {e:#?}");
    }
}

#[test]
fn fields_come_from_the_environment_and_check_config_names_an_unknown_model_input() {
    let env: HashMap<String, String> = [
        ("VERDICT__MODEL__DIR", "models/demo"),
        ("VERDICT__PUBLISH__REDACT__FIELDS__ENTITY_KEY", "drop"),
        ("VERDICT__PUBLISH__REDACT__FIELDS__EVENT__EMAIL", "hash"),
        ("VERDICT__PUBLISH__REDACT__HASH_KEY_ENV", "VERDICT_TEST_UNSET_PSEUDONYM_KEY"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let e = verdict::config::load_layers(&[verdict::config::DEFAULTS_TOML], &[], env).problems;
    assert_eq!(
        e,
        ["publish.redact.hash_key_env: environment variable VERDICT_TEST_UNSET_PSEUDONYM_KEY is not set"],
        "entity_key and event.email were read from the environment, the hash needs its key"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("verdict.toml");
    let model = crate_path("models/demo");
    let toml = format!("[model]\ndir = \"{}\"\n[publish.redact.fields]\nfeatures.nope = \"drop\"\n", model.display());
    std::fs::write(&file, toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("publish.redact.fields.features.nope: the model has no input 'nope' (its inputs: amount,"),
        "{text}"
    );
}
