//! One pipeline on one mock cluster for the whole bench run: the warm-up, the backlog
//! drain and the offered-rate phase all go through it in turn, so the measured phases find
//! the windows (and, with Redis, the checkpoints) that the warm-up built.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use verdict::config::Config;
use verdict::demo::{self, MockKafka};
use verdict::pipeline::Pipeline;
use verdict::telemetry::Metrics;

use super::feed::{self, Feed};
use super::stats::{self, Snapshot, Span};

/// The pipeline, its cluster and the event source.
pub struct Session {
    mock: Arc<MockKafka>,
    pipeline: Option<Pipeline>,
    metrics: Arc<Metrics>,
    topic: String,
    feed: Option<Feed>,
    /// Events produced so far (every one must be decided).
    produced: u64,
    partitions: i32,
    interval_ms: u64,
    redis: Option<redis::Connection>,
}

/// A backlog drained: events, seconds from the first produce to the last decision, and
/// seconds the producing itself took (overlapping the drain).
pub struct Drained {
    pub events: u64,
    pub secs: f64,
    pub produce_secs: f64,
    pub cards: Vec<u32>,
    /// CPU and context switches per thread group while draining.
    pub usage: super::threads::Usage,
    /// Rust heap allocations while draining.
    pub allocs: super::threads::Allocs,
}

impl Session {
    /// Starts the cluster and the pipeline and waits until it owns every partition.
    pub fn start(mut cfg: Config, partitions: i32, feed: Feed) -> Self {
        let mock = Arc::new(MockKafka::start(1));
        demo::use_mock(&mut cfg, &mock);
        demo::create_topics(&mock, &cfg, partitions);
        let redis = (cfg.enrich.backend == verdict::enrich::Backend::Redis).then(|| {
            redis::Client::open(cfg.enrich.redis_url.as_str()).and_then(|c| c.get_connection()).expect("Redis for INFO")
        });
        // The mock's producer client has found its broker (the topics are made): its threads,
        // the mock's and this one are the bench's, not the pipeline's.
        std::thread::sleep(Duration::from_millis(200));
        super::threads::mark_bench_threads();
        let metrics = Metrics::new();
        let pipeline = Pipeline::start(&cfg, metrics.clone()).expect("pipeline");
        let joined = Instant::now();
        while metrics.partitions_assigned.get() < i64::from(partitions) && joined.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            mock,
            pipeline: Some(pipeline),
            metrics,
            topic: cfg.kafka.input_topics[0].clone(),
            feed: Some(feed),
            produced: 0,
            partitions,
            interval_ms: cfg.enrich.checkpoint_interval_ms,
            redis,
        }
    }

    fn done(&self) -> u64 {
        self.metrics.counted("decode", "ok") + self.metrics.counted("decode", "dead_letter")
    }

    /// Counters now (with Redis's).
    pub fn snapshot(&mut self) -> Snapshot {
        Snapshot::take(&self.metrics, self.redis.as_mut())
    }

    /// The event source (between phases).
    pub fn feed(&mut self) -> &mut Feed {
        self.feed.as_mut().expect("feed is back between phases")
    }

    /// Waits until every produced event is decided; false after 30 s without progress.
    fn wait_decided(&self) -> bool {
        let (mut last, mut since) = (self.done(), Instant::now());
        while self.done() < self.produced {
            std::thread::sleep(Duration::from_millis(2));
            let n = self.done();
            if n != last {
                (last, since) = (n, Instant::now());
            } else if since.elapsed() > Duration::from_secs(30) {
                eprintln!("STALL: {} of {} produced events decided, nothing for 30 s", n, self.produced);
                return false;
            }
        }
        true
    }

    /// Generates `n` events (the pipeline idles meanwhile), produces them as fast as the
    /// client goes and waits for their decisions.
    pub fn drain(&mut self, n: u64) -> Drained {
        let feed = self.feed.as_mut().expect("feed");
        let events: Vec<(Vec<u8>, Vec<u8>)> = (0..n).map(|_| feed.next()).collect();
        let cards = feed.take_cards();
        let (threads, allocs) = (super::threads::Threads::now(), super::allocs());
        // BENCH_HEADERS=N: each message carries N headers (a trace id, a source...), which the
        // consumer copies so that a dead letter can carry them on.
        let header_count = super::env_u64("BENCH_HEADERS", 0) as usize;
        let values: Vec<(String, String)> = (0..header_count)
            .map(|i| (format!("header-{i}"), format!("{i:02}-4bf92f3577b34da6a3ce929d0e0e4736")))
            .collect();
        let headers: Vec<(&str, &str)> = values.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let start = Instant::now();
        super::alloc_sites::start();
        for (key, payload) in &events {
            let headers = (header_count > 0).then_some(headers.as_slice());
            self.mock.produce_with_headers(&self.topic, None, key, payload, headers);
        }
        self.mock.flush();
        let produce_secs = start.elapsed().as_secs_f64();
        self.produced += n;
        let ok = self.wait_decided();
        let secs = start.elapsed().as_secs_f64();
        let (usage, allocs) = (threads.until(&super::threads::Threads::now()), super::allocs() - allocs);
        super::alloc_sites::stop_and_print();
        assert!(ok, "backlog not drained (the mock keeps ~5 MiB per partition: use a smaller BENCH_EVENTS)");
        Drained { events: n, secs, produce_secs, cards, usage, allocs }
    }

    /// Offers `rate` events/s for `secs` seconds; prints a row per tenth of the run and the
    /// totals, then the checkpoint figures. Returns the events decided.
    pub fn offered(&mut self, rate: u64, secs: u64, linger_ms: u64) -> u64 {
        let events = rate * secs;
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let before = self.snapshot();
        let done0 = self.done();
        self.metrics.reset_latencies();
        self.metrics.reset_event_latencies();
        let producer = {
            let (mock, topic, feed) = (self.mock.clone(), self.topic.clone(), self.feed.take().expect("feed"));
            let (sent, stop) = (sent.clone(), stop.clone());
            std::thread::Builder::new()
                .name("bench-producer".into())
                .spawn(move || {
                    super::bench_thread();
                    let offer = feed::Offer { events, rate, linger_ms };
                    feed::produce_at_rate(&mock, &topic, feed, offer, &sent, &stop)
                })
                .expect("producer thread")
        };
        let start = Instant::now();
        let tenth = Duration::from_secs_f64(secs as f64 / 10.0);
        println!(
            "  {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12} {:>9} {:>8}",
            "until", "decided", "ev/s", "p50 ms", "p99 ms", "p99.9 ms", "prod→dec p99", "lag", "RSS MiB"
        );
        let (mut all, mut all_ev) = (hist_us(), hist_ms());
        let (mut last, mut tick) = (done0, start);
        for i in 1..=10u32 {
            let until = tenth * i;
            if let Some(wait) = until.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            let (h, he) = (self.metrics.reset_latencies(), self.metrics.reset_event_latencies());
            let n = self.done();
            row(
                &format!("{:.1}s", until.as_secs_f64()),
                n - last,
                tenth,
                &h,
                &he,
                (sent.load(Ordering::Relaxed) + done0).saturating_sub(n),
            );
            all.add(&h).expect("same bounds");
            all_ev.add(&he).expect("same bounds");
            (last, tick) = (n, start + until);
        }
        let feed = producer.join().expect("producer");
        self.feed = Some(feed);
        let offered = sent.load(Ordering::Relaxed);
        self.produced += offered;
        let ok = self.wait_decided();
        let (h, he) = (self.metrics.reset_latencies(), self.metrics.reset_event_latencies());
        let n = self.done();
        if n > last {
            row("tail", n - last, tick.elapsed(), &h, &he, self.produced - n);
        }
        all.add(&h).expect("same bounds");
        all_ev.add(&he).expect("same bounds");
        let elapsed = start.elapsed();
        let decided = n - done0;
        println!(
            "  total: {decided} of {offered} offered decided{} in {:.2} s ({:.0} events/s; offered {rate}/s); poll → ack p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.1} ms; produce → decision p50 {} ms  p99 {} ms  p99.9 {} ms",
            if ok { "" } else { " (STALLED)" },
            elapsed.as_secs_f64(),
            decided as f64 / elapsed.as_secs_f64(),
            all.value_at_quantile(0.5) as f64 / 1e3,
            all.value_at_quantile(0.99) as f64 / 1e3,
            all.value_at_quantile(0.999) as f64 / 1e3,
            all.max() as f64 / 1e3,
            all_ev.value_at_quantile(0.5),
            all_ev.value_at_quantile(0.99),
            all_ev.value_at_quantile(0.999),
        );
        let cards = self.feed().take_cards();
        // Events per checkpoint interval at the rate decided (below the offered one when behind).
        let group = (decided as f64 / elapsed.as_secs_f64() * self.interval_ms as f64 / 1000.0) as usize;
        let after = self.snapshot();
        let touched = Some(feed::distinct_per_group(&cards, group));
        self.print_stats(&before, &after, elapsed, decided, touched);
        decided
    }

    /// Prints the checkpoint figures of a phase.
    pub fn print_stats(&self, a: &Snapshot, b: &Snapshot, elapsed: Duration, events: u64, touched: Option<f64>) {
        let span = Span { elapsed, events, interval_ms: self.interval_ms, touched, partitions: self.partitions };
        stats::print(a, b, &span);
    }

    /// Events decided by rules alone because their deadline had passed.
    pub fn fallback(&self) -> u64 {
        self.metrics.fallback_decisions.get()
    }

    /// Checkpoint interval (ms).
    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    /// Graceful stop.
    pub fn stop(mut self) {
        if let Some(p) = self.pipeline.take() {
            let r = p.shutdown(Duration::from_secs(30));
            if !r.clean {
                eprintln!("shutdown was not clean ({:.1} s)", r.elapsed.as_secs_f64());
            }
        }
        if std::env::var_os("VERDICT_DEMO_METRICS").is_some() {
            eprintln!("{}", self.metrics.render());
        }
    }
}

fn row(label: &str, n: u64, over: Duration, h: &Histogram<u64>, he: &Histogram<u64>, lag: u64) {
    let q = |x: f64| h.value_at_quantile(x) as f64 / 1e3;
    println!(
        "  {label:>6} {n:>9} {:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>12} {lag:>9} {:>8.0}",
        n as f64 / over.as_secs_f64().max(1e-9),
        q(0.5),
        q(0.99),
        q(0.999),
        he.value_at_quantile(0.99),
        feed::rss_mib()
    );
}

fn hist_us() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn hist_ms() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000, 3).expect("histogram bounds")
}
