//! The Schema Registry client through the real pipeline (librdkafka mock cluster) against a
//! test registry that speaks the documented subset of the Confluent API
//! (`tests/common/registry.rs`): writer schemas by id on first sight and cached, unknown ids
//! dead-lettered, outages waited out, verdict's record schemas registered at start-up, basic
//! auth sent and its password never logged. Logs are captured into one buffer, so the tests
//! take turns.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use common::*;
use registry_server::TestRegistry;
use verdict::demo::{confluent_frame, Generator, MockKafka};
use verdict::pipeline::Pipeline;
use verdict::publish::{DLQ_DETAIL, DLQ_REASON};
use verdict::telemetry::Metrics;

// Not in `common`: only this test binary needs it.
#[path = "common/registry.rs"]
mod registry_server;

const IDLE: Duration = Duration::from_secs(2);
const PASSWORD: &str = "reg-pw-7f3a91c2";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The capturing subscriber (info and above), and the buffer to the calling test, emptied.
fn capture() -> (MutexGuard<'static, ()>, Captured) {
    static TURN: Mutex<()> = Mutex::new(());
    static LOGS: OnceLock<Captured> = OnceLock::new();
    let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let logs = LOGS
        .get_or_init(|| {
            let c = Captured::default();
            let w = c.clone();
            tracing_subscriber::fmt().with_writer(move || w.clone()).with_ansi(false).init();
            c
        })
        .clone();
    logs.0.lock().unwrap().clear();
    (turn, logs)
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A mock cluster and a config whose only writer schemas come from `reg` (basic auth with
/// the password in a file), retrying quickly.
fn setup(reg: &TestRegistry, pw_dir: &tempfile::TempDir) -> (MockKafka, verdict::config::Config) {
    let (mock, mut cfg) = mock_setup(2);
    cfg.decode.avro_schemas.clear();
    let pw = pw_dir.path().join("registry-password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let r = &mut cfg.decode.schema_registry;
    r.url = reg.url();
    r.username = "verdict".into();
    r.password_file = pw.display().to_string();
    r.timeout_ms = 1_000;
    r.retries = 1;
    r.retry_backoff_ms = 50;
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    (mock, cfg)
}

fn transaction_schema() -> String {
    std::fs::read_to_string(crate_path("schemas/transaction.avsc")).unwrap()
}

/// Produces `n` generated events as Confluent-framed Avro with schema id `id`; their ids.
fn produce_avro(mock: &MockKafka, id: u32, first: u64, n: u64) -> Vec<String> {
    let schema = verdict::decode::parse_schema_file(&crate_path("schemas/transaction.avsc")).unwrap();
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema).build().unwrap();
    let mut g = Generator::new(first, 20_000, 1_764_000_000_000).with_first_id(first);
    let mut ids = Vec::new();
    for _ in 0..n {
        let tx = g.next_event();
        let frame = confluent_frame(id, &writer.write_value_to_vec(tx.to_avro_value()).unwrap());
        mock.produce("events", None, tx.card_id.as_bytes(), &frame);
        ids.push(tx.event_id);
    }
    mock.flush();
    ids
}

#[test]
fn registry_ids_decode_unknown_ids_dead_letter_and_decisions_carry_the_registered_id() {
    let (_turn, logs) = capture();
    let reg = TestRegistry::start();
    reg.require_auth("verdict", PASSWORD);
    reg.put(7, &transaction_schema());
    let dir = tempfile::tempdir().unwrap();
    let (mock, cfg) = setup(&reg, &dir);
    let good = produce_avro(&mock, 7, 0, 300);
    produce_avro(&mock, 9, 10_000, 3);

    let metrics = Metrics::new();
    let p = Pipeline::start(&cfg, metrics.clone()).unwrap();
    wait_for("303 handled", Duration::from_secs(60), || handled(&metrics) >= 303);
    assert!(p.shutdown(Duration::from_secs(30)).clean);

    // Decisions: one per good event, framed with the id the registry gave decision.avsc
    // under the topic-name subject, and decodable with the schema registered under it.
    let decision_ids = reg.ids("decisions-value");
    assert_eq!(decision_ids.len(), 1, "decision schema registered once under decisions-value");
    let registered = reg.schema(decision_ids[0]).unwrap();
    assert_eq!(registered, verdict::decode::registry::DECISION_SCHEMA);
    assert_eq!(reg.ids("review-value"), decision_ids, "review copies: same schema, same id");
    assert!(!reg.ids("drift-value").is_empty(), "drift schema registered");
    let decisions = mock.read_all("decisions", IDLE);
    assert_eq!(decisions.len(), 300);
    let schema = apache_avro::Schema::parse_str(&registered).unwrap();
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(&schema).build().unwrap();
    let mut seen = std::collections::HashSet::new();
    for m in &decisions {
        assert_eq!(m.payload[0], 0);
        assert_eq!(u32::from_be_bytes(m.payload[1..5].try_into().unwrap()), decision_ids[0]);
        let mut body = &m.payload[5..];
        let apache_avro::types::Value::Record(fields) = reader.read_value(&mut body).unwrap() else { panic!() };
        let Some((_, apache_avro::types::Value::String(id))) = fields.iter().find(|(k, _)| k == "event_id") else {
            panic!("no event_id")
        };
        seen.insert(id.clone());
    }
    assert_eq!(seen, good.into_iter().collect());

    // The unknown id: dead letters naming it; asked about again only after a while.
    let dlq = mock.read_all("dead-letter", IDLE);
    assert_eq!(dlq.len(), 3);
    for m in &dlq {
        assert_eq!(m.header(DLQ_REASON), Some("unknown_schema_id"));
        assert!(m.header(DLQ_DETAIL).unwrap().contains("schema id 9"), "{:?}", m.header(DLQ_DETAIL));
    }
    // Cached: each id fetched once, whatever the number of events and workers.
    assert_eq!(reg.count("GET /schemas/ids/7"), 1);
    assert_eq!(reg.count("GET /schemas/ids/9"), 1);

    // Basic auth on every request; the password never in the logs.
    let state = reg.state.lock().unwrap();
    assert!(!state.auth_seen.is_empty());
    assert!(state.auth_seen.iter().all(|a| a.starts_with("Basic ")));
    let text = logs.text();
    assert!(text.contains("record schemas registered"), "logs captured: {text}");
    assert!(!text.contains(PASSWORD), "password in the logs");
}

#[test]
fn incompatible_or_unauthorized_registration_fails_start_up_with_the_registry_message() {
    let (_turn, logs) = capture();
    let reg = TestRegistry::start();
    reg.require_auth("verdict", PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let (_mock, mut cfg) = setup(&reg, &dir);
    reg.state.lock().unwrap().incompatible.insert("decisions-value".into());
    let e = Pipeline::start(&cfg, Metrics::new()).err().expect("start-up fails").to_string();
    assert!(e.contains("HTTP 409") && e.contains("incompatible with an earlier schema"), "{e}");
    assert!(e.contains("decisions-value"), "{e}");

    // A wrong password: the registry's 401, the password shown nowhere.
    reg.state.lock().unwrap().incompatible.clear();
    cfg.decode.schema_registry.password_file.clear();
    cfg.decode.schema_registry.password = "wrong-pw-5be21".into();
    let e = Pipeline::start(&cfg, Metrics::new()).err().expect("start-up fails").to_string();
    assert!(e.contains("HTTP 401") && e.contains("Unauthorized"), "{e}");
    assert!(!e.contains("wrong-pw-5be21") && !logs.text().contains("wrong-pw-5be21"));

    // The registry down with Avro decisions: start-up cannot register, and says so.
    reg.set_down(true);
    cfg.decode.schema_registry.password = PASSWORD.into();
    let e = Pipeline::start(&cfg, Metrics::new()).err().expect("start-up fails").to_string();
    assert!(e.contains("unavailable after 2 attempts"), "{e}");
}

#[test]
fn a_registry_outage_holds_uncached_ids_until_it_ends_and_cached_ids_keep_flowing() {
    let (_turn, logs) = capture();
    let reg = TestRegistry::start();
    reg.put(7, &transaction_schema());
    let dir = tempfile::tempdir().unwrap();
    let (mock, mut cfg) = setup(&reg, &dir);
    cfg.decode.schema_registry.username.clear();
    cfg.decode.schema_registry.password_file.clear();
    // JSON decisions: nothing to register, so verdict starts while the registry is down.
    cfg.publish.format = verdict::config::DecisionFormat::Json;
    reg.set_down(true);
    let first = produce_avro(&mock, 7, 0, 200);

    let metrics = Metrics::new();
    let p = Pipeline::start(&cfg, metrics.clone()).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(handled(&metrics), 0, "an uncached id waits while the registry is down");
    assert_eq!(metrics.dead_letters.with_label_values(&["unknown_schema_id"]).get(), 0);
    reg.set_down(false);
    wait_for("200 decided after the outage", Duration::from_secs(60), || handled(&metrics) >= 200);

    // Down again mid-stream: id 7 is cached, decisions keep flowing.
    reg.set_down(true);
    let second = produce_avro(&mock, 7, 5_000, 200);
    wait_for("400 decided during the outage", Duration::from_secs(60), || handled(&metrics) >= 400);
    assert!(p.shutdown(Duration::from_secs(30)).clean);

    let rows = json_decision_rows(&mock.read_all("decisions", IDLE));
    let counts = id_counts(&rows);
    assert_eq!(counts.len(), 400);
    assert!(first.iter().chain(&second).all(|id| counts.get(id) == Some(&1)), "each event decided once");
    assert!(mock.read_all("dead-letter", IDLE).is_empty(), "nothing dead-lettered for the outage");
    assert_eq!(reg.count("GET /schemas/ids/7"), 1);
    let text = logs.text();
    assert!(text.contains("schema registry unavailable; the batch waits"), "{text}");
    assert!(text.contains("schema registry reachable again"), "{text}");
}

#[test]
fn check_config_names_every_registry_problem_and_online_reaches_the_registry() {
    let (_turn, _logs) = capture();
    let dir = tempfile::tempdir().unwrap();
    let check = |toml: &str, online: bool| {
        let file = dir.path().join("registry.toml");
        std::fs::write(&file, toml).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_verdict"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["check-config", "--config", "config/demo.toml", "--config"])
            .arg(&file)
            .env_remove("RUST_LOG");
        if online {
            cmd.arg("--online");
        }
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (code, text) = check(
        "[decode.schema_registry]\nurl = \"registry:8081\"\nusername = \"verdict\"\npassword = \"inline-pw-41d0\"\n\
         password_file = \"/no/such/pw\"\nca_file = \"/no/such/ca.pem\"\n",
        false,
    );
    assert_eq!(code, Some(2), "{text}");
    for expected in [
        "decode.schema_registry.url: 'registry:8081' is not an http:// or https:// URL",
        "decode.schema_registry.password: set password or password_file, not both",
        "decode.schema_registry.password_file: /no/such/pw",
        "decode.schema_registry.ca_file: /no/such/ca.pem",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    assert!(!text.contains("inline-pw-41d0"), "{text}");

    let reg = TestRegistry::start();
    reg.require_auth("verdict", PASSWORD);
    let pw = dir.path().join("pw");
    std::fs::write(&pw, PASSWORD).unwrap();
    let good = format!(
        "[decode.schema_registry]\nurl = \"{}\"\nusername = \"verdict\"\npassword_file = {:?}\nretries = 0\n",
        reg.url(),
        pw.display().to_string()
    );
    let (code, text) = check(&good, false);
    assert_eq!((code, reg.count("GET /subjects")), (Some(0), 0), "offline: the registry is not called\n{text}");
    let (code, text) = check(&good, true);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("reachable, 0 subjects") && reg.count("GET /subjects") == 1, "{text}");
    reg.set_down(true);
    let (code, text) = check(&good, true);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("decode.schema_registry.url: schema registry http://127.0.0.1:"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}
