//! `verdict run` processes on the mock cluster (it lives in the test process; the children
//! reach it over TCP) sharing one redis-server: SIGKILLed five times mid-stream, and one
//! SIGSTOPped until its partitions move (a zombie), then resumed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::common::*;
use verdict::demo::MockKafka;

/// One process test at a time: each runs up to three verdict processes on two CI cores.
static SERIAL: Mutex<()> = Mutex::new(());
static NEXT: AtomicU32 = AtomicU32::new(0);
const CHECKPOINT_INTERVAL_MS: u64 = 1_000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The mock cluster, redis-server, topics and the config file every instance shares.
struct Setup {
    tail: DecisionTail,
    mock: MockKafka,
    redis: RedisServer,
    config: PathBuf,
    group: String,
    partitions: i32,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn start(partitions: i32) -> Self {
        verdict::telemetry::init_logging("pretty", &std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into()));
        let mock = MockKafka::start(1);
        verdict::demo::create_topics(&mock, &verdict::config::demo(), partitions);
        let redis = RedisServer::start();
        let group = format!("verdict-owned-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("verdict.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[kafka]
brokers = "{}"
group_id = "{group}"
commit_interval_ms = 500
[kafka.consumer]
# The mock coordinator holds a re-join for up to twice the session timeout: keep it short.
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
# The mock broker answers an empty fetch only when this runs out (see demo::use_mock).
"fetch.wait.max.ms" = "5"
"socket.nagle.disable" = "true"
[kafka.producer]
"socket.nagle.disable" = "true"
# A mock partition keeps only ~5 MiB: compressed records without the model inputs keep
# every decision of the stream readable.
"compression.type" = "lz4"
[enrich]
backend = "redis"
redis_url = "{}"
checkpoint_interval_ms = {CHECKPOINT_INTERVAL_MS}
[publish]
format = "json"
include_aggregates = true
include_features = false
[model]
workers = 1
[telemetry]
log_format = "json"
stats_interval_ms = 1000
"#,
                mock.bootstrap(),
                redis.url()
            ),
        )
        .unwrap();
        let tail = DecisionTail::start(mock.bootstrap(), "decisions");
        Self { tail, mock, redis, config, group, partitions, _dir: dir }
    }

    fn spawn(&self, name: &str) -> Instance {
        Instance::spawn(name, &self.config)
    }

    fn committed_total(&self) -> i64 {
        self.mock.committed(&self.group, "events", self.partitions).iter().map(|o| (*o).max(0)).sum()
    }

    /// Waits until every event has a decision; on timeout, says which partitions lack
    /// decisions (offset ranges) and where each instance and Redis stand.
    fn wait_all_decided(&self, events: &[verdict::demo::Transaction], timeout: Duration, instances: &[&Instance]) {
        if wait_or_fail_later("every event decided", timeout, || self.tail.all_decided(events)).is_ok() {
            return;
        }
        let ids = id_counts(&self.tail.rows());
        let mut ranges: std::collections::BTreeMap<i32, Vec<(i64, i64)>> = Default::default();
        for e in read_inputs(&self.mock, "events").iter().filter(|e| !ids.contains_key(&e.event_id)) {
            let r = ranges.entry(e.partition).or_default();
            match r.last_mut() {
                Some(last) if last.1 + 1 == e.offset => last.1 = e.offset,
                _ => r.push((e.offset, e.offset)),
            }
        }
        let mut conn = self.redis.conn();
        let state: Vec<String> = instances
            .iter()
            .map(|i| {
                format!(
                    "{}: handled {}, partitions {}, checkpoints written {} fenced {}",
                    i.name,
                    i.handled(),
                    i.partitions(),
                    i.checkpoints("written"),
                    i.checkpoints("fenced")
                )
            })
            .collect();
        panic!(
            "not every event decided after {timeout:?}: undecided offset ranges {ranges:?}; checkpoint offsets {:?}, \
             acked {:?}, committed {:?}; {state:?}",
            checkpoint_offsets(&mut conn, "events", self.partitions),
            acked_offsets(&mut conn, "events", self.partitions),
            self.mock.committed(&self.group, "events", self.partitions)
        );
    }
}

/// One `verdict run` process with its own metrics port; killed on drop.
struct Instance {
    name: String,
    child: Child,
    port: u16,
}

impl Instance {
    fn spawn(name: &str, config: &Path) -> Self {
        let port = free_port();
        let path = std::env::temp_dir().join(format!("verdict-owned-{name}-{port}.log"));
        eprintln!("{name}: log {}", path.display());
        let child = Command::new(env!("CARGO_BIN_EXE_verdict"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["run", "--config", "config/demo.toml", "--config", config.to_str().unwrap()])
            .env("VERDICT__TELEMETRY__LISTEN", format!("127.0.0.1:{port}"))
            .env("VERDICT__TELEMETRY__LOG_LEVEL", std::env::var("TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(path).unwrap())
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

    fn checkpoints(&self, result: &str) -> u64 {
        metric(&self.metrics(), &format!("verdict_checkpoints_total{{result=\"{result}\"}}"))
    }

    fn wait_ready(&self) {
        wait_for(&format!("{} /readyz", self.name), Duration::from_secs(60), || {
            http_get(self.port, "/readyz").is_some_and(|(c, _)| c == 200)
        });
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

#[test]
fn sigkill_x5_of_verdict_run_on_the_mock_cluster_redecides_identically_and_windows_stay_exact() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const PARTITIONS: i32 = 8;
    // A mock partition keeps ~5 MiB: 90,000 events stay readable from offset 0.
    const RATE: u64 = 1_000;
    const EVENTS: u64 = 90_000;
    let s = Setup::start(PARTITIONS);
    let mut instances = vec![Some(s.spawn("a0")), Some(s.spawn("b0"))];
    for i in instances.iter().flatten() {
        i.wait_ready();
    }
    let stream = Stream::start(s.mock.bootstrap(), 0, EVENTS, RATE, 71);
    let kills = 5;
    let mut checked = Vec::new();
    for k in 0..kills {
        let victim = k % 2;
        wait_for("the group settled and the victim deciding", Duration::from_secs(60), || {
            instances.iter().flatten().all(|i| i.partitions() > 0)
                && instances[victim].as_ref().unwrap().handled() > 1_000
        });
        assert!(stream.produced() < EVENTS * 9 / 10, "the stream ended before kill {k}");
        instances[victim].take().unwrap().kill();
        checked.push(assert_checkpoints_match_inputs(
            &mut s.redis.conn(),
            || read_inputs(&s.mock, "events"),
            PARTITIONS,
        ));
        instances[victim] = Some(s.spawn(&format!("{}{}", ["a", "b"][victim], k + 1)));
        wait_for("all partitions owned by live instances", Duration::from_secs(60), || {
            instances.iter().flatten().map(Instance::partitions).sum::<u64>() == PARTITIONS as u64
        });
    }
    let events = stream.finish();
    s.wait_all_decided(&events, Duration::from_secs(120), &instances.iter().flatten().collect::<Vec<_>>());
    // Checked last (see the idle test in tests/owned.rs): the other checks run either way.
    let committed = wait_or_fail_later("everything committed", Duration::from_secs(30), || {
        s.committed_total() == events.len() as i64
    });
    let (mut redelivered, mut resume) = (0, Vec::new());
    for i in instances.into_iter().flatten() {
        let m = i.metrics();
        redelivered += metric(&m, "verdict_redelivered_events_total");
        resume.push((i.name.clone(), histogram(&m, "verdict_partition_resume_seconds")));
        i.terminate();
    }
    let r = check_redecisions(&events, &s.tail.settled_rows());
    eprintln!(
        "SIGKILL ×{kills} (verdict run, mock cluster) at {RATE} events/s: {} events; {} decided again ({} extra \
         decisions), all equal to the first in score, action and aggregates; {} flagged redelivery; the last two \
         instances counted {redelivered} redelivered; checkpoints after each kill (partitions \
         checkpointed, not yet, cards compared): {checked:?}; resume seconds (sum, count): {resume:?}",
        events.len(),
        r.events,
        r.copies,
        r.flagged
    );
    assert!(r.copies > 0, "five kills mid-stream left events to decide again");
    let allowed = kills as u64 * RATE * CHECKPOINT_INTERVAL_MS / 1000;
    assert!(
        r.copies as u64 <= allowed,
        "{} re-decisions, more than the checkpoint interval allows ({allowed})",
        r.copies
    );
    assert!(checked.iter().all(|(checkpointed, _, _)| *checkpointed > 0), "a kill found no checkpoint: {checked:?}");
    assert_windows_exact(&s.redis, &events);
    committed.unwrap();
}

#[test]
fn a_paused_instance_whose_partitions_moved_is_fenced_and_nothing_is_double_counted() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const PARTITIONS: i32 = 4;
    let s = Setup::start(PARTITIONS);
    let (a, b) = (s.spawn("zombie"), s.spawn("survivor"));
    a.wait_ready();
    b.wait_ready();
    let stream = Stream::start(s.mock.bootstrap(), 0, 60_000, 1_500, 72);
    wait_for("both deciding", Duration::from_secs(60), || {
        a.partitions() > 0 && b.partitions() > 0 && a.handled() > 1_000 && a.checkpoints("written") > 0
    });
    let a_partitions = a.partitions();
    a.signal("-STOP");
    let stopped_at = Instant::now();
    wait_for("the survivor owning every partition", Duration::from_secs(60), || b.partitions() == PARTITIONS as u64);
    let moved_after = stopped_at.elapsed();
    // The survivor claims the moved partitions and checkpoints them.
    let written = b.checkpoints("written");
    wait_for("the survivor checkpointing", Duration::from_secs(30), || b.checkpoints("written") >= written + 2);
    a.signal("-CONT");
    wait_for("the zombie's checkpoint writes refused", Duration::from_secs(30), || a.checkpoints("fenced") > 0);
    // Then the survivor leaves, so every partition goes to the zombie, the ones it was fenced
    // on (and paused) included. librdkafka keeps an application pause across revocation and
    // re-assignment: unless the consume loop resumes what it is given, those partitions would
    // be owned and never fetched, and their events below never decided.
    let survivor_fenced = b.checkpoints("fenced");
    b.terminate();
    wait_for("the zombie owning every partition", Duration::from_secs(60), || a.partitions() == PARTITIONS as u64);
    let events = stream.finish();
    s.wait_all_decided(&events, Duration::from_secs(120), &[&a]);
    let committed = wait_or_fail_later("everything committed", Duration::from_secs(30), || {
        s.committed_total() == events.len() as i64
    });
    let (fenced, zombie_written) = (a.checkpoints("fenced"), a.checkpoints("written"));
    a.terminate();
    let r = check_redecisions(&events, &s.tail.settled_rows());
    eprintln!(
        "zombie: owned {a_partitions} of {PARTITIONS} partitions when stopped; they moved {moved_after:?} later; \
         after SIGCONT {fenced} checkpoint writes fenced ({zombie_written} written in all), survivor fenced \
         {survivor_fenced}, then left, and the zombie decided every partition; {} events, {} decided again ({} extra decisions, {} flagged), all equal to the first",
        events.len(),
        r.events,
        r.copies,
        r.flagged
    );
    assert!(fenced > 0);
    assert_windows_exact(&s.redis, &events);
    committed.unwrap();
}
