//! verdict's own memory and CPU, against a broker in another process.
//!
//! `verdict demo` embeds librdkafka's mock cluster and the demo's producer, so its RSS is not
//! verdict's alone (each mock partition keeps ~5 MiB of log; the producer its queue). This
//! bench hosts the mock cluster and the demo's generator, and runs the release binary,
//! `verdict run -c config/demo.toml -c <the cluster's address>`, as a child process:
//!
//! 1. a warm-up of `RSS_WARM_HOURS` of event time, produced as fast as the child decides it
//!    (paced by the decisions and dead-letter topics' high watermarks), so the windows are full;
//! 2. `RSS_SECONDS` at `RSS_RATE` events/s, the child's `VmRSS`, CPU and decided rate read
//!    every `RSS_SAMPLE_S` seconds (from `/proc/<child>/status` and `/proc/<child>/stat`).
//!
//! ```sh
//! cargo bench --bench rss                 # 50,000 cards, 24 h warm, 120 s at 30k events/s
//! RSS_CARDS=1000000 RSS_CONFIG=mine.toml cargo bench --bench rss
//! ```
//!
//! Knobs: RSS_CARDS (50000), RSS_WARM_HOURS (24), RSS_RATE (30000), RSS_SECONDS (120),
//! RSS_PARTITIONS (4), RSS_SAMPLE_S (10), RSS_CONFIG (a config layer over the demo's),
//! RSS_BIN (the verdict binary; default: this build's). The child's log goes to
//! `target/rss-verdict.log`; at the end its entity gauges and eviction counts are read from
//! its `/metrics`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use verdict::config::Config;
use verdict::demo::{self, DemoOptions, MockKafka, Source};

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

/// Sum of the high watermarks of `topic`'s partitions `0..partitions`.
fn produced_to(reader: &BaseConsumer, topic: &str, partitions: i32) -> u64 {
    (0..partitions)
        .map(|p| {
            reader.fetch_watermarks(topic, p, Duration::from_secs(5)).map(|(_, high)| high.max(0) as u64).unwrap_or(0)
        })
        .sum()
}

/// The child's resident set (`VmRSS`) and peak (`VmHWM`), KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The child's user + system CPU seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based), 12 and 13 here.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// The layer that points the child at the mock cluster (as `demo::use_mock` does in process).
fn cluster_layer(bootstrap: &str, port: u16, dir: &Path) -> PathBuf {
    let path = dir.join("rss-cluster.toml");
    let mut f = std::fs::File::create(&path).expect("cluster layer");
    writeln!(
        f,
        "[kafka]\nbrokers = \"{bootstrap}\"\n[kafka.consumer]\n\"fetch.wait.max.ms\" = \"5\"\n\
         \"socket.nagle.disable\" = \"true\"\n[kafka.producer]\n\"socket.nagle.disable\" = \"true\"\n\
         [telemetry]\nlisten = \"127.0.0.1:{port}\""
    )
    .expect("cluster layer");
    path
}

struct Verdict(Child);

impl Drop for Verdict {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cards: u64 = knob("RSS_CARDS", 50_000);
    let warm_hours: f64 = knob("RSS_WARM_HOURS", 24.0);
    let rate: u64 = knob("RSS_RATE", 30_000);
    let seconds: u64 = knob("RSS_SECONDS", 120);
    let partitions: i32 = knob("RSS_PARTITIONS", 4);
    let sample = Duration::from_secs(knob("RSS_SAMPLE_S", 10));
    let bin = std::env::var("RSS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_verdict").to_string());

    let mut layers = vec![root.join("config/demo.toml")];
    if let Ok(extra) = std::env::var("RSS_CONFIG") {
        layers.push(PathBuf::from(extra));
    }
    let refs: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
    let cfg: Config = verdict::config::load_files(&refs).unwrap_or_else(|e| panic!("config: {e}"));

    let mock = Arc::new(MockKafka::start(1));
    demo::create_topics(&mock, &cfg, partitions);
    let target = root.join("target");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    layers.push(cluster_layer(mock.bootstrap(), port, &target));
    let log = std::fs::File::create(target.join("rss-verdict.log")).expect("child log");
    let mut cmd = Command::new(&bin);
    cmd.current_dir(root).arg("run").stdout(Stdio::null()).stderr(log);
    for l in &layers {
        cmd.arg("-c").arg(l);
    }
    let child = Verdict(cmd.spawn().unwrap_or_else(|e| panic!("{bin}: {e}")));
    let pid = child.0.id();

    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap())
        .set("group.id", "rss-bench-watermarks")
        .create()
        .expect("watermark reader");
    let decided = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = {
        let (decided, stop, cfg) = (decided.clone(), stop.clone(), cfg.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = produced_to(&reader, &cfg.kafka.decisions_topic, partitions)
                    + produced_to(&reader, &cfg.kafka.dead_letter_topic, 1);
                decided.store(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let warm_events = (warm_hours.max(0.0) * 3_600_000.0 / demo::MEAN_STEP_MS) as u64;
    let timed = rate * seconds;
    let opts = DemoOptions { rate, partitions, cards, warm_events, ..DemoOptions::default() };
    let now = verdict::core::clock::wall_clock_ms();
    let mut gen = Source::new(opts.scenario, opts.seed, cards, demo::first_event_time(warm_events + timed, now));
    let topic = cfg.kafka.input_topics[0].clone();
    println!("verdict run (pid {pid}) against the mock cluster at {}; {cards} cards", mock.bootstrap());

    let began = Instant::now();
    let so_far = || decided.load(Ordering::Relaxed);
    let producer = {
        let (mock, stop, opts, topic, decided) =
            (mock.clone(), stop.clone(), opts.clone(), topic.clone(), decided.clone());
        std::thread::spawn(move || {
            let so_far = || decided.load(Ordering::Relaxed);
            let warm = demo::produce(&mock, &topic, &opts, &stop, &mut gen, (warm_events, 0), Some(&so_far));
            while so_far() < warm && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
            warm + demo::produce(&mock, &topic, &opts, &stop, &mut gen, (timed, rate), None)
        })
    };
    let mut said = Instant::now();
    while so_far() < warm_events {
        std::thread::sleep(Duration::from_millis(50));
        if said.elapsed() >= Duration::from_secs(10) {
            let (rss, _) = rss_kib(pid);
            println!("warm-up: {} of {warm_events} decided, RSS {:.1} MiB", so_far(), rss as f64 / 1024.0);
            said = Instant::now();
        }
        if began.elapsed() > Duration::from_secs(3600) {
            panic!("warm-up not decided within an hour: {} of {warm_events}", so_far());
        }
    }
    println!("warm-up: {warm_events} events decided in {:.1} s", began.elapsed().as_secs_f64());

    println!(
        "{:>6} {:>11} {:>10} {:>10} {:>10} {:>12}",
        "s", "decided/s", "RSS MiB", "peak MiB", "CPU cores", "µs CPU/event"
    );
    let start = Instant::now();
    let (mut last_t, mut last_n, mut last_cpu) = (start, so_far(), cpu_seconds(pid));
    let end = warm_events + timed;
    let mut samples = Vec::new();
    while so_far() < end && start.elapsed() < Duration::from_secs(seconds + 60) {
        std::thread::sleep(sample.min(Duration::from_secs(seconds + 60).saturating_sub(start.elapsed())));
        let (t, n, cpu) = (Instant::now(), so_far(), cpu_seconds(pid));
        let (rss, hwm) = rss_kib(pid);
        let dt = t.duration_since(last_t).as_secs_f64();
        let events = n.saturating_sub(last_n);
        let per_event = if events > 0 { (cpu - last_cpu) / events as f64 * 1e6 } else { f64::NAN };
        println!(
            "{:>6.0} {:>11.0} {:>10.1} {:>10.1} {:>10.2} {:>12.2}",
            start.elapsed().as_secs_f64(),
            events as f64 / dt,
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0,
            (cpu - last_cpu) / dt,
            per_event
        );
        samples.push(rss);
        (last_t, last_n, last_cpu) = (t, n, cpu);
    }
    stop.store(true, Ordering::SeqCst);
    let produced = producer.join().expect("producer");
    counter.join().expect("watermark reader");
    let decided_all = so_far();
    let (rss, hwm) = rss_kib(pid);
    let half = &samples[samples.len() / 2..];
    let (lo, hi) = (half.iter().min().copied().unwrap_or(0), half.iter().max().copied().unwrap_or(0));
    println!(
        "produced {produced}, decided or dead-lettered {decided_all}; RSS at the end {:.1} MiB (peak {:.1}); \
         second half of the run {:.1}–{:.1} MiB",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        lo as f64 / 1024.0,
        hi as f64 / 1024.0
    );
    // What the child's /metrics says of its entities (held, let go) and outcomes.
    for line in scrape(port).lines() {
        let shown = ["verdict_state_entities", "verdict_window_evictions_total", "verdict_state_loads_total"];
        if shown.iter().any(|m| line.starts_with(m)) || line.starts_with("verdict_events_total{outcome=\"dead_letter\"")
        {
            println!("  {line}");
        }
    }
    drop(child);
}

/// The child's `/metrics` text (empty if it does not answer).
fn scrape(port: u16) -> String {
    use std::io::Read;
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut body = String::new();
    let _ = conn.read_to_string(&mut body);
    body
}
