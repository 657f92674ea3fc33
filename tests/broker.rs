//! End to end against a real Kafka-protocol broker (Tansu, started by `scripts/broker.sh`):
//! the released binary as separate `verdict run` processes sharing one consumer group and
//! one redis-server, scaled out and in, SIGKILLed mid-batch, SIGTERMed and restarted, on an
//! 8-partition topic. Every test accounts for every produced event: at least one decision
//! each, re-decisions only after a SIGKILL (counted, bounded by the checkpoint interval,
//! equal to the first decision in score, action and aggregates, and printed), none after
//! graceful shutdowns, window aggregates in Redis exact against the produced stream.
//!
//! `cargo test --release --test broker -- --nocapture` prints the measured rebalance stalls.

mod common;
#[path = "hostile/corpus.rs"]
mod corpus;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message};
use verdict::demo::{Generator, KafkaClient, ReadMessage, Transaction};

const PARTITIONS: i32 = 8;
const GROUP: &str = "verdict-e2e";
/// Offsets are committed this often (only up to the partition's checkpoint).
const COMMIT_INTERVAL_MS: u64 = 500;
/// Partition-owned state is checkpointed this often; bounds what a SIGKILL can replay.
const CHECKPOINT_INTERVAL_MS: u64 = 1_000;

/// One test at a time: each runs a broker, redis-server and up to three verdict processes,
/// which is what two CI cores can carry without turning timeouts into flakes.
static SERIAL: Mutex<()> = Mutex::new(());

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Tansu broker process, stopped (by PID, through the script) on drop.
struct Broker {
    dir: tempfile::TempDir,
    bootstrap: String,
}

impl Broker {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let status = Command::new(crate_path("scripts/broker.sh"))
            .args(["start", &port.to_string(), dir.path().to_str().unwrap()])
            .status()
            .expect("scripts/broker.sh");
        assert!(status.success(), "broker did not start");
        Self { dir, bootstrap: format!("127.0.0.1:{port}") }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ =
            Command::new(crate_path("scripts/broker.sh")).args(["stop", self.dir.path().to_str().unwrap()]).status();
    }
}

/// Broker, redis-server, topics and the config file every instance shares.
struct Cluster {
    broker: Broker,
    redis: RedisServer,
    client: KafkaClient,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Self {
        let broker = Broker::start();
        let redis = RedisServer::start();
        let client = KafkaClient::connect(&broker.bootstrap);
        client.create_topics(&[
            ("events", PARTITIONS),
            ("decisions", PARTITIONS),
            ("review", 1),
            ("dead-letter", 1),
            ("drift", 1),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("verdict.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[kafka]
brokers = "{}"
group_id = "{GROUP}"
commit_interval_ms = {COMMIT_INTERVAL_MS}
[kafka.consumer]
# Tansu completes a join in about half the session timeout.
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
{}
[enrich]
backend = "redis"
redis_url = "{}"
checkpoint_interval_ms = {CHECKPOINT_INTERVAL_MS}
[publish]
# Re-decisions are compared with the first decision, aggregates included.
include_aggregates = true
[model]
workers = 1
[telemetry]
log_format = "json"
stats_interval_ms = 1000
"#,
                broker.bootstrap,
                std::env::var("TEST_RDKAFKA_DEBUG").map(|d| format!("debug = \"{d}\"")).unwrap_or_default(),
                redis.url()
            ),
        )
        .unwrap();
        Self { broker, redis, client, config, _dir: dir }
    }

    fn spawn(&self, name: &str) -> Instance {
        Instance::spawn(name, &self.config)
    }
}

/// One `verdict run` process with its own metrics port; killed on drop.
struct Instance {
    name: String,
    child: Child,
    port: u16,
}

impl Instance {
    fn spawn(name: &str, config: &std::path::Path) -> Self {
        let port = free_port();
        let log = std::fs::File::create(std::env::temp_dir().join(format!("verdict-e2e-{name}-{port}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_verdict"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["run", "--config", "config/demo.toml", "--config", config.to_str().unwrap()])
            .env("VERDICT__TELEMETRY__LISTEN", format!("127.0.0.1:{port}"))
            .env("VERDICT__TELEMETRY__LOG_LEVEL", std::env::var("TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self { name: name.to_string(), child, port }
    }

    fn metrics(&self) -> String {
        http_get(self.port, "/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    /// Events this instance decided or dead-lettered.
    fn handled(&self) -> u64 {
        let m = self.metrics();
        metric(&m, "verdict_events_total{outcome=\"ok\",stage=\"decode\"}")
            + metric(&m, "verdict_events_total{outcome=\"dead_letter\",stage=\"decode\"}")
    }

    fn partitions(&self) -> u64 {
        metric(&self.metrics(), "verdict_partitions_assigned")
    }

    fn signal(&self, sig: &str) {
        assert!(Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success());
    }

    /// SIGTERM, then waits for a clean exit.
    fn terminate(mut self) {
        self.signal("-TERM");
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < Duration::from_secs(40), "{} did not exit within 40 s of SIGTERM", self.name);
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{} exited with {status:?}", self.name);
    }

    /// SIGKILL: whatever it had in flight is abandoned.
    fn kill(mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A decision read from the decisions topic, with when the tail saw it.
#[derive(Clone)]
struct Seen {
    row: DecisionRow,
    at: Instant,
}

/// Reads the decisions topic from the beginning, continuously, on a thread.
struct Tail {
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Tail {
    fn start(bootstrap: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "e2e-tail")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "50")
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset("decisions", p, rdkafka::Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let handle = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => {
                        let msg = ReadMessage {
                            partition: m.partition(),
                            offset: m.offset(),
                            key: None,
                            payload: m.payload().unwrap_or(&[]).to_vec(),
                            headers: vec![],
                        };
                        let row = decode_decisions(&[msg]).pop().unwrap();
                        s.lock().unwrap().push(Seen { row, at: Instant::now() });
                    }
                    Some(Err(e)) => panic!("tailing decisions: {e}"),
                    None => {}
                }
            }
        });
        Self { seen, stop, handle: Some(handle) }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn rows(&self) -> Vec<DecisionRow> {
        self.seen.lock().unwrap().iter().map(|s| s.row.clone()).collect()
    }

    /// Waits until every event of `ids` has a decision.
    fn wait_all(&self, events: &[Transaction], timeout: Duration) {
        let start = Instant::now();
        loop {
            let counts = id_counts(&self.rows());
            let missing = events.iter().filter(|e| !counts.contains_key(&e.event_id)).count();
            if missing == 0 {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "{missing} of {} events without a decision after {timeout:?}",
                events.len()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The longest gap, over partitions, between consecutive decisions seen in `from..to`
    /// (counting from `from`): how long a rebalance left a partition without decisions.
    fn stall(&self, from: Instant, to: Instant) -> Duration {
        let seen = self.seen.lock().unwrap();
        (0..PARTITIONS)
            .map(|p| {
                let mut last = from;
                let mut gap = Duration::ZERO;
                for s in seen.iter().filter(|s| s.row.source_partition == p && s.at >= from && s.at <= to) {
                    gap = gap.max(s.at - last);
                    last = s.at;
                }
                gap.max(to - last)
            })
            .max()
            .unwrap_or_default()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// What the decisions topic says about a stream (see `check_redecisions`: every event
/// decided, every re-decision of the same input record and equal to the first in score,
/// action and aggregates), with the re-decided offset ranges per partition printed.
fn account(events: &[Transaction], rows: &[DecisionRow]) -> Redecisions {
    let r = check_redecisions(events, rows);
    let mut by_id: HashMap<&str, Vec<&DecisionRow>> = HashMap::new();
    for row in rows {
        by_id.entry(&row.event_id).or_default().push(row);
    }
    let mut ranges: std::collections::BTreeMap<i32, (i64, i64, u64)> = Default::default();
    for rs in by_id.values().filter(|rs| rs.len() > 1) {
        let e = ranges.entry(rs[0].source_partition).or_insert((i64::MAX, 0, 0));
        e.0 = e.0.min(rs[0].source_offset);
        e.1 = e.1.max(rs[0].source_offset);
        e.2 += 1;
    }
    eprintln!("re-decided events by partition (first offset, last offset, count): {ranges:?}");
    r
}

fn wait_ready(i: &Instance) -> Duration {
    let start = Instant::now();
    wait_for(&format!("{} /readyz", i.name), Duration::from_secs(60), || {
        http_get(i.port, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    start.elapsed()
}

fn committed_total(c: &Cluster) -> i64 {
    c.client.committed(GROUP, "events", PARTITIONS).iter().map(|o| (*o).max(0)).sum()
}

#[test]
fn scale_out_to_three_and_back_to_one_loses_and_duplicates_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::start();
    let tail = Tail::start(&c.broker.bootstrap);
    let a = c.spawn("a");
    wait_ready(&a);
    let stream = Stream::start(&c.broker.bootstrap, 0, 36_000, 2_000, 61);
    wait_for("a deciding", Duration::from_secs(30), || a.handled() > 2_000);

    // Scale out: two instances join while the stream runs.
    let joined_at = Instant::now();
    let (b, cc) = (c.spawn("b"), c.spawn("c"));
    wait_for("b and c deciding", Duration::from_secs(60), || b.handled() > 0 && cc.handled() > 0);
    let first_decision_after_join = joined_at.elapsed();
    wait_for("8 partitions over 3 instances", Duration::from_secs(30), || {
        a.partitions() + b.partitions() + cc.partitions() == 8 && a.partitions() < 8
    });
    std::thread::sleep(Duration::from_secs(3));
    let join_stall = tail.stall(joined_at, Instant::now());

    // Scale in: both leave gracefully while the stream runs.
    let left_at = Instant::now();
    let (hb, hc) = (b.handled(), cc.handled());
    // One after the other: Tansu 0.6 can elect a member that left mid-rebalance as the
    // group leader and then waits for it forever (a broker bug, not a client one).
    b.terminate();
    wait_for("a and c owning all 8 partitions", Duration::from_secs(60), || a.partitions() + cc.partitions() == 8);
    cc.terminate();
    wait_for("a owning all 8 partitions", Duration::from_secs(60), || a.partitions() == 8);
    std::thread::sleep(Duration::from_secs(3));
    let leave_stall = tail.stall(left_at, Instant::now());

    let events = stream.finish();
    tail.wait_all(&events, Duration::from_secs(120));
    // Asserted last, so that the other checks run either way.
    let committed = wait_or_fail_later("a committing everything", Duration::from_secs(30), || {
        committed_total(&c) == events.len() as i64
    });
    a.terminate();
    std::thread::sleep(Duration::from_secs(1));
    let duplicates = account(&events, &tail.rows()).copies;
    eprintln!(
        "scale 1→3→1: {} events; b decided {hb}, c {hc}; first decision of a joining instance {:?} after spawn; \
         longest partition stall: join {join_stall:?}, graceful leave {leave_stall:?}; duplicates {duplicates}",
        events.len(),
        first_decision_after_join
    );
    assert!(hb > 0 && hc > 0, "the joining instances took a share of the stream");
    assert_eq!(duplicates, 0, "graceful rebalances must not decide any event twice");
    assert_eq!(tail.count(), events.len());
    assert_windows_exact(&c.redis, &events);
    committed.unwrap();
}

#[test]
fn sigkill_x5_mid_stream_redecides_identically_and_windows_stay_exact() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::start();
    let tail = Tail::start(&c.broker.bootstrap);
    let mut instances = vec![Some(c.spawn("a0")), Some(c.spawn("b0"))];
    for i in instances.iter().flatten() {
        wait_ready(i);
    }
    const RATE: u64 = 1_500;
    const EVENTS: u64 = 150_000;
    let stream = Stream::start(&c.broker.bootstrap, 0, EVENTS, RATE, 62);
    let (mut stalls, mut checked) = (Vec::new(), Vec::new());
    let kills = 5;
    for k in 0..kills {
        // Alternate victims; each has been deciding a while, and the stream is running.
        let victim = k % 2;
        wait_for("the group settled and the victim deciding", Duration::from_secs(60), || {
            instances.iter().flatten().all(|i| i.partitions() > 0)
                && instances[victim].as_ref().unwrap().handled() > 1_000
        });
        assert!(stream.produced() < EVENTS * 9 / 10, "the stream ended before kill {k}");
        let killed_at = Instant::now();
        instances[victim].take().unwrap().kill();
        // Each partition's checkpoint holds exactly its events below the checkpoint offset
        // (read in one atomic step, so the survivor checkpointing meanwhile cannot tear it).
        checked.push(assert_checkpoints_match_inputs(
            &mut c.redis.conn(),
            || read_inputs(&c.client, "events"),
            PARTITIONS,
        ));
        // Restarted, as a supervisor would; the broker notices the dead member only when its
        // session times out.
        instances[victim] = Some(c.spawn(&format!("{}{}", ["a", "b"][victim], k + 1)));
        wait_for("all 8 partitions owned by live instances", Duration::from_secs(60), || {
            instances.iter().flatten().map(Instance::partitions).sum::<u64>() == 8
        });
        std::thread::sleep(Duration::from_secs(2));
        stalls.push(tail.stall(killed_at, Instant::now()));
    }
    let events = stream.finish();
    tail.wait_all(&events, Duration::from_secs(120));
    // Asserted last, so that the other checks run either way.
    let committed = wait_or_fail_later("everything committed", Duration::from_secs(30), || {
        committed_total(&c) == events.len() as i64
    });
    let mut redelivered = 0;
    let mut resume = Vec::new();
    for i in instances.into_iter().flatten() {
        let m = i.metrics();
        redelivered += metric(&m, "verdict_redelivered_events_total");
        resume.push((i.name.clone(), histogram(&m, "verdict_partition_resume_seconds")));
        i.terminate();
    }
    std::thread::sleep(Duration::from_secs(1));
    let r = account(&events, &tail.rows());
    eprintln!(
        "SIGKILL ×{kills} at {RATE} events/s: {} events; {} decided again ({} extra decisions, {:.2}%), all equal to \
         the first in score, action and aggregates; {} flagged redelivery; the last two instances counted {redelivered} \
         redelivered; checkpoints checked after each kill (partitions checkpointed, not yet, cards compared): {checked:?}; \
         resume seconds (sum, count): {resume:?}; longest partition stall after each kill: {stalls:?}",
        events.len(),
        r.events,
        r.copies,
        100.0 * r.copies as f64 / events.len() as f64,
        r.flagged
    );
    // A killed instance's events since its partitions' last checkpoint are decided again:
    // one checkpoint interval of its share (about half the partitions) plus what it had in
    // flight, so a whole interval of the full rate per kill leaves a 2x margin.
    let allowed = kills as u64 * RATE * CHECKPOINT_INTERVAL_MS / 1000;
    assert!(
        r.copies as u64 <= allowed,
        "{} re-decisions, more than the checkpoint interval allows ({allowed})",
        r.copies
    );
    assert!(checked.iter().all(|(checkpointed, _, _)| *checkpointed > 0), "a kill found no checkpoint: {checked:?}");
    assert_eq!(layout(&mut c.redis.conn(), "card").as_deref(), Some("partition-v2"));
    assert_windows_exact(&c.redis, &events);
    committed.unwrap();
}

#[test]
fn whole_group_restart_resumes_from_committed_offsets() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::start();
    let tail = Tail::start(&c.broker.bootstrap);
    let first = [c.spawn("a"), c.spawn("b")];
    let before = Stream::start(&c.broker.bootstrap, 0, 10_000, 5_000, 63).finish();
    tail.wait_all(&before, Duration::from_secs(60));
    // Stopped one after the other (see the scale test on Tansu's leader election).
    let [a, b] = first;
    a.terminate();
    wait_for("b owning all 8 partitions", Duration::from_secs(60), || b.partitions() == 8);
    b.terminate();
    assert_eq!(committed_total(&c), before.len() as i64, "a graceful stop commits everything it decided");

    // Events produced while no instance runs wait in the topic.
    let during = Stream::start(&c.broker.bootstrap, 10_000, 10_000, 20_000, 64).finish();
    let restarted_at = Instant::now();
    let second = [c.spawn("a2"), c.spawn("b2")];
    tail.wait_all(&during, Duration::from_secs(90));
    let resumed = restarted_at.elapsed();
    // Asserted last, so that the other checks run either way.
    let committed =
        wait_or_fail_later("everything committed", Duration::from_secs(30), || committed_total(&c) == 20_000);
    for i in second {
        i.terminate();
    }
    std::thread::sleep(Duration::from_secs(1));
    let events: Vec<Transaction> = before.into_iter().chain(during).collect();
    let duplicates = account(&events, &tail.rows()).copies;
    eprintln!("group restart: 10000 events backlog decided {resumed:?} after two fresh instances started");
    assert_eq!(duplicates, 0, "a restart after graceful shutdowns re-decides nothing");
    assert_windows_exact(&c.redis, &events);
    committed.unwrap();
}

#[test]
fn hostile_input_through_a_real_broker_is_dead_lettered_and_nothing_stalls() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::start();
    let corpus = corpus::corpus(9);
    let mut g = Generator::new(77, 500, 1_764_000_000_000);
    let mut good = Vec::new();
    for i in 0..4_000u64 {
        if i == 2_000 {
            corpus::produce_hostile(&c.broker.bootstrap, "events", &corpus);
        }
        let tx = g.next_event();
        c.client.produce("events", None, tx.card_id.as_bytes(), &tx.to_json());
        good.push(tx.event_id);
    }
    c.client.flush();
    let total = (good.len() + corpus.len()) as u64;
    let a = c.spawn("hostile");
    wait_ready(&a);
    let start = Instant::now();
    while a.handled() < total {
        assert!(start.elapsed() < Duration::from_secs(120), "handled {} of {total}", a.handled());
        std::thread::sleep(Duration::from_millis(100));
    }
    let health = http_get(a.port, "/healthz").unwrap();
    assert_eq!(health.0, 200, "{health:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", a.child.id())).unwrap();
    let rss_kib: u64 =
        status.lines().find(|l| l.starts_with("VmHWM:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    println!("verdict peak RSS with the hostile corpus: {} MiB", rss_kib / 1024);
    assert!(rss_kib < 1024 * 1024, "peak RSS {} MiB", rss_kib / 1024);
    a.terminate();

    let rows = decode_decisions(&c.client.read_all("decisions", Duration::from_secs(3)));
    let counts = id_counts(&rows);
    assert!(good.iter().all(|id| counts.get(id) == Some(&1)), "every good event decided exactly once");
    assert_eq!(rows.len(), good.len());
    let dlq = c.client.read_all("dead-letter", Duration::from_secs(3));
    let mut wrong = Vec::new();
    for h in &corpus {
        let found: Vec<&ReadMessage> =
            dlq.iter().filter(|m| m.key.as_deref().is_some_and(|k| h.key.starts_with(k) && !k.is_empty())).collect();
        match found.as_slice() {
            [m] if m.header("verdict.dlq.reason") == Some(h.reason) => {}
            other => wrong.push(format!(
                "{}: {:?}",
                h.kind,
                other.iter().map(|m| m.header("verdict.dlq.reason")).collect::<Vec<_>>()
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(dlq.len(), corpus.len());
}
