//! What an operator reads in the logs: never a password, and not a flood of identical
//! errors while something is down. Logs are captured from every thread into one buffer, so
//! the tests here take turns.

mod common;

use std::io::Write;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::Consumer;
use verdict::telemetry::Metrics;

/// Every log line written so far (cleared by each test).
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

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Installs the capturing subscriber (info and above, librdkafka's `log` lines included)
/// once, and gives the calling test the buffer to itself, emptied.
fn capture() -> (MutexGuard<'static, ()>, Captured) {
    static TURN: Mutex<()> = Mutex::new(());
    static LOGS: OnceLock<Captured> = OnceLock::new();
    let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let logs = LOGS
        .get_or_init(|| {
            let c = Captured::default();
            let w = c.clone();
            tracing_subscriber::fmt()
                .with_writer(move || w.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .init();
            c
        })
        .clone();
    logs.0.lock().unwrap().clear();
    (turn, logs)
}

/// A redis-server that requires a password, on a free port, killed on drop.
struct PasswordRedis {
    child: std::process::Child,
    port: u16,
}

impl PasswordRedis {
    fn start(password: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--requirepass", password])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server");
        let url = format!("redis://:{password}@127.0.0.1:{port}/");
        wait_for("redis-server to accept connections", Duration::from_secs(10), || {
            redis::Client::open(url.as_str()).and_then(|c| c.get_connection()).is_ok()
        });
        Self { child, port }
    }
}

impl Drop for PasswordRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_wrong_redis_password_is_reported_as_such_and_never_shown() {
    let (_turn, logs) = capture();
    let redis = PasswordRedis::start("the-right-one");
    let wrong = "wr0ng-pa55word-81f3";
    let url = format!("redis://default:{wrong}@127.0.0.1:{}/0", redis.port);

    // Start-up: the enrich stage cannot authenticate (`run` exits with this error).
    let mut cfg = verdict::enrich::EnrichConfig {
        backend: verdict::enrich::Backend::Redis,
        redis_url: url.clone(),
        timeout_ms: 500,
        ..Default::default()
    };
    let err = match verdict::enrich::Enricher::new(&cfg) {
        Ok(_) => panic!("the enricher started with a wrong Redis password"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("authentication failed"), "the error says what is wrong: {err}");
    assert!(err.contains(&format!("redis://default:***@127.0.0.1:{}/0", redis.port)), "and where: {err}");
    assert!(!err.contains(wrong), "the start-up error shows the password: {err}");
    // A URL that is not one shows no password either.
    cfg.redis_url = format!("http://default:{wrong}@127.0.0.1/");
    let err = verdict::enrich::Enricher::new(&cfg).err().expect("not a redis URL").to_string();
    assert!(err.contains("enrich.redis_url") && !err.contains(wrong), "{err}");

    // A rules list kept in a Redis set, read with the same URL.
    let spec = verdict::rules::set::ListSpec { file: None, values: None, redis_set: Some("blocked".into()) };
    let err = verdict::rules::live::fetch_list(&spec, &url, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains(wrong), "the list refresh error shows the password: {err}");

    // Scored events kept for label joins: the writer logs its failure.
    let m = Metrics::new();
    let store = verdict::drift::labels::LabelStore {
        redis_url: url.clone(),
        redis: Default::default(),
        cluster: false,
        prefix: "verdict".into(),
        horizon_s: 60,
    };
    let (sink, _writer) = verdict::drift::labels::spawn_writer(store, 16, m.clone()).unwrap();
    for i in 0..3 {
        sink.keep(&format!("tx-{i}"), 0.5, verdict::rules::Action::APPROVE);
        std::thread::sleep(Duration::from_millis(150));
    }
    wait_for("the writer to give up on the events", Duration::from_secs(10), || {
        m.labels.with_label_values(&["not_kept"]).get() >= 3
    });

    let text = logs.text();
    assert!(text.contains("authentication failed"), "the logs say what is wrong:\n{text}");
    assert!(!text.contains(wrong), "the logs show the password:\n{text}");
}

#[test]
fn a_consumer_facing_a_closed_port_logs_a_few_lines_not_a_flood() {
    let (_turn, logs) = capture();
    let kafka = verdict::config::KafkaConfig {
        brokers: "127.0.0.1:1".into(),
        group_id: "verdict-closed-port".into(),
        ..Default::default()
    };
    let m = Metrics::new();
    let consumer = verdict::consume::create_consumer(&kafka, 1000, m.clone(), Arc::new(AtomicUsize::new(0))).unwrap();
    // What the consume loop does with what `poll` returns while the broker is down.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
            consumer.context().poll_error(&e);
        }
    }
    drop(consumer);
    let text = logs.text();
    let lines = text.lines().count();
    let suppressed = m.guards.log_suppressed.with_label_values(&["kafka_consumer"]).get();
    // Before: ~40 lines a second (a client error and a consumer error every 50 ms).
    assert!(lines < 20, "{lines} lines in 10 s:\n{text}");
    assert!(text.contains("AllBrokersDown") || text.contains("Connection refused"), "the error is still told:\n{text}");
    assert!(suppressed > 0, "repeats are counted in verdict_log_suppressed_total");
}
