//! `verdict demo`: the whole pipeline with no servers — the mock cluster in-process,
//! synthetic transactions, the bundled model — with live progress and a summary.
//! The end-to-end benchmark drives the same code.

pub mod clickstream;
pub mod generator;
pub mod log;
pub mod mock;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use generator::{confluent_frame, Generator, Transaction};
pub use log::DemoLog;
pub use mock::{KafkaClient, MockKafka, ReadMessage};

use crate::config::Config;
use crate::pipeline::{Pipeline, StartError};
use crate::telemetry::{process_cpu_seconds, CostReading, Metrics};

/// What the demo (or benchmark) runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Events to generate.
    pub events: u64,
    /// Offered load, events/s; 0 = as fast as the producer goes.
    pub rate: u64,
    /// Produce every event before starting the pipeline (throughput of a backlog).
    pub preload: bool,
    /// Input partitions.
    pub partitions: i32,
    /// Fraction of malformed events mixed in (they go to the dead-letter topic).
    pub bad_fraction: f64,
    /// Encode events as Avro (Confluent wire format, schema id 1) instead of JSON.
    pub avro: bool,
    /// Print progress every second.
    pub progress: bool,
    /// Generator seed.
    pub seed: u64,
    /// Cards (entities) the generator draws from.
    pub cards: u64,
    /// Events produced and decided as fast as possible before the timed run, so that it
    /// starts with full windows (the generator's event time advances 9.5 ms per event on
    /// average: a day is ~9.1M events).
    pub warm_events: u64,
    /// Card transactions (fraud) or page views (clickstream personalization).
    pub scenario: Scenario,
}

/// What the demo's events are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scenario {
    /// Card transactions (`Generator`), `config/demo.toml`, the fraud model.
    #[default]
    Fraud,
    /// Page views and clicks in user sessions (`clickstream::ClickGenerator`, JSON only),
    /// `config/clickstream.toml`, the next-category model.
    Clickstream,
}

impl Scenario {
    /// The mean event-time step between two generated events (ms).
    pub fn mean_step_ms(self) -> f64 {
        match self {
            Scenario::Fraud => MEAN_STEP_MS,
            Scenario::Clickstream => clickstream::MEAN_STEP_MS,
        }
    }
}

/// The demo's event source.
pub enum Source {
    /// Card transactions.
    Fraud(Generator),
    /// A clickstream.
    Clicks(clickstream::ClickGenerator),
}

impl Source {
    /// `entities` cards or users from `start_ms`.
    pub fn new(scenario: Scenario, seed: u64, entities: u64, start_ms: i64) -> Self {
        match scenario {
            Scenario::Fraud => Source::Fraud(Generator::new(seed, entities, start_ms)),
            Scenario::Clickstream => Source::Clicks(clickstream::ClickGenerator::new(seed, entities, start_ms)),
        }
    }

    /// The next event's record key and payload (Avro only for transactions).
    pub fn next(&mut self, avro: Option<&apache_avro::writer::datum::GenericDatumWriter<'_>>) -> (Vec<u8>, Vec<u8>) {
        match self {
            Source::Fraud(g) => {
                let tx = g.next_event();
                let payload = encode(&tx, avro);
                (tx.card_id.into_bytes(), payload)
            }
            Source::Clicks(g) => {
                let c = g.next_event();
                let payload = c.to_json();
                (c.user_id.into_bytes(), payload)
            }
        }
    }
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            events: 100_000,
            rate: 0,
            preload: false,
            partitions: 4,
            bad_fraction: 0.001,
            avro: false,
            progress: true,
            seed: 42,
            cards: 50_000,
            warm_events: 0,
            scenario: Scenario::Fraud,
        }
    }
}

/// Summary of a demo run.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Events produced.
    pub produced: u64,
    /// Decisions made.
    pub decided: u64,
    /// Dead-lettered.
    pub dead_lettered: u64,
    /// Decisions per action of the configured vocabulary, least severe first.
    pub actions: Vec<(&'static str, u64)>,
    /// From pipeline start (or first produce) to the last decision.
    pub elapsed: Duration,
    /// Poll → acknowledged latency quantiles (µs): p50, p99, p99.9.
    pub latency_us: [u64; 3],
    /// Kafka timestamp (produce) → acknowledged latency quantiles (ms): p50, p99, p99.9.
    /// Unlike `latency_us` it includes the time an event waited in Kafka.
    pub event_latency_ms: [u64; 3],
    /// With an offered rate: `latency_us` and `event_latency_ms` without the first
    /// [`WARM_UP`] of the run (group join, the first fetch's backlog, cold caches); None when
    /// the run was shorter or had no rate.
    pub steady: Option<SteadyLatency>,
    /// Events decided by rules alone because their deadline had passed.
    pub fallback: u64,
    /// Of `decided` and `dead_lettered`, the warm-up's (decided before `elapsed` began).
    pub warm: u64,
    /// Execution provider used.
    pub execution_provider: String,
    /// Per stage: (name, total seconds, batches).
    pub stages: Vec<(&'static str, f64, u64)>,
    /// CPU-seconds (and dollars, with `[cost]` prices) per decision over the timed run: the
    /// whole process, so the in-process mock broker and producer are charged too.
    pub cost: CostReading,
    /// Partition-owned entities let go from memory: with all windows expired, and past
    /// `enrich.max_entities`.
    pub state: [u64; 2],
}

/// Latency quantiles of a run at an offered rate, after its warm-up.
#[derive(Debug, Clone, Copy)]
pub struct SteadyLatency {
    /// Poll → acknowledged (µs): p50, p99, p99.9.
    pub latency_us: [u64; 3],
    /// Produce → acknowledged (ms): p50, p99, p99.9.
    pub event_latency_ms: [u64; 3],
    /// Events the quantiles cover.
    pub events: u64,
}

/// How much of a run at an offered rate [`DemoReport::steady`] leaves out.
pub const WARM_UP: Duration = Duration::from_secs(1);

impl DemoReport {
    /// Decided + dead-lettered per second.
    pub fn events_per_sec(&self) -> f64 {
        (self.decided + self.dead_lettered).saturating_sub(self.warm) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Topics the demo creates: input, decisions, review, dead letters, drift.
pub fn create_topics(mock: &MockKafka, cfg: &Config, partitions: i32) {
    for t in &cfg.kafka.input_topics {
        mock.create_topic(t, partitions);
    }
    mock.create_topic(&cfg.kafka.decisions_topic, partitions);
    mock.create_topic(&cfg.kafka.review_topic, 1);
    mock.create_topic(&cfg.kafka.dead_letter_topic, 1);
    mock.create_topic(&cfg.drift.topic, 1);
}

/// Points `cfg` at the mock cluster.
///
/// The mock broker answers an empty fetch only when `fetch.wait.max.ms` runs out (a real
/// broker answers as soon as data arrives), so it is shortened here; otherwise the
/// demo would show up to 500 ms of broker-side wait that production does not have.
pub fn use_mock(cfg: &mut Config, mock: &MockKafka) {
    cfg.kafka.brokers = mock.bootstrap().to_string();
    cfg.kafka.consumer.entry("fetch.wait.max.ms".into()).or_insert_with(|| "5".into());
    for c in [&mut cfg.kafka.consumer, &mut cfg.kafka.producer] {
        c.entry("socket.nagle.disable".into()).or_insert_with(|| "true".into());
    }
}

/// A malformed message of one of several kinds, chosen by `i`.
pub fn malformed(i: u64) -> Vec<u8> {
    match i % 5 {
        0 => b"{not json".to_vec(),
        1 => br#"{"event_id":"bad-x","card_id":"c","event_time":1,"amount":NaN}"#.to_vec(),
        2 => br#"{"card_id":"c","event_time":1,"amount":1.0}"#.to_vec(),
        3 => br#"{"event_id":"bad-y","card_id":"c","event_time":1,"amount":"12.00"}"#.to_vec(),
        _ => confluent_frame(999, &[2, 0]),
    }
}

/// Encodes one generated event as the demo sends it.
pub fn encode(tx: &Transaction, avro: Option<&apache_avro::writer::datum::GenericDatumWriter<'_>>) -> Vec<u8> {
    match avro {
        None => tx.to_json(),
        Some(w) => confluent_frame(1, &w.write_value_to_vec(tx.to_avro_value()).expect("avro encode")),
    }
}

/// Event time of the first of `events` generated events: now, unless their event times
/// (9.5 ms apart on average) would run past now + 23 h; then early enough that the last one
/// stays below that, inside `decode.event_time_max_ahead_ms` (a day). A long demo (a soak)
/// dead-lettered every event past the first ~9M as `bad_event_time` otherwise.
pub fn first_event_time(events: u64, now_ms: i64) -> i64 {
    first_event_time_at(events, now_ms, MEAN_STEP_MS)
}

/// [`first_event_time`] for events `mean_step_ms` apart on average.
pub fn first_event_time_at(events: u64, now_ms: i64, mean_step_ms: f64) -> i64 {
    const HORIZON_MS: i64 = 23 * 3_600_000;
    let span = (events as f64 * mean_step_ms) as i64;
    now_ms - (span - HORIZON_MS).max(0)
}

/// The mean event-time step of [`Generator::next_event`] (0..20 ms): events per hour of
/// event time are 3,600,000 / this.
pub const MEAN_STEP_MS: f64 = 9.5;

/// How far unpaced production (a warm-up, or a run at `--rate 0`) may run ahead of the
/// decided events, per input partition: the mock cluster keeps only the last ~5 MiB of each
/// partition (~15,000 JSON transactions), so a larger backlog would lose events.
const AHEAD_PER_PARTITION: u64 = 5_000;

/// Events decided or dead-lettered so far.
fn decided(m: &Metrics) -> u64 {
    m.counted("decode", "ok") + m.counted("decode", "dead_letter")
}

/// Produces `count` events from `gen` (at `rate` events/s if not 0) into `topic`; with
/// `decided`, never more than [`AHEAD_PER_PARTITION`] per partition ahead of what it counts.
pub fn produce(
    mock: &MockKafka,
    topic: &str,
    opts: &DemoOptions,
    stop: &AtomicBool,
    gen: &mut Source,
    (count, rate): (u64, u64),
    decided: Option<&dyn Fn() -> u64>,
) -> u64 {
    let schema = crate::decode::parse_schema_file(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/transaction.avsc"
    )))
    .expect("transaction schema");
    let writer =
        opts.avro.then(|| apache_avro::writer::datum::GenericDatumWriter::builder(&schema).build().expect("writer"));
    let bad_every = if opts.bad_fraction > 0.0 { (1.0 / opts.bad_fraction).round() as u64 } else { 0 };
    let start = Instant::now();
    let mut sent = 0;
    while sent < count && !stop.load(Ordering::Relaxed) {
        if decided.is_some_and(|d| sent > d() + AHEAD_PER_PARTITION * opts.partitions.max(1) as u64) {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        if rate > 0 {
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            if sent >= due {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
        }
        let (key, payload) = gen.next(writer.as_ref());
        if bad_every > 0 && sent % bad_every == bad_every - 1 {
            mock.produce(topic, None, &key, &malformed(sent / bad_every));
        } else {
            mock.produce(topic, None, &key, &payload);
        }
        sent += 1;
    }
    mock.flush();
    sent
}

/// Runs the demo to completion and returns its summary.
pub fn run(mut cfg: Config, opts: &DemoOptions) -> Result<DemoReport, StartError> {
    let mock = Arc::new(MockKafka::start(1));
    use_mock(&mut cfg, &mock);
    create_topics(&mock, &cfg, opts.partitions);
    let topic = cfg.kafka.input_topics[0].clone();
    let stop = Arc::new(AtomicBool::new(false));

    let all_events = opts.warm_events + opts.events;
    let now = crate::publish::acker::wall_clock_ms();
    let first = first_event_time_at(all_events, now, opts.scenario.mean_step_ms());
    let mut gen = Source::new(opts.scenario, opts.seed, opts.cards, first);
    // A warm-up is produced as fast as the pipeline decides it (never preloaded).
    let warm_events = if opts.preload { 0 } else { opts.warm_events };
    if opts.preload {
        produce(&mock, &topic, opts, &stop, &mut gen, (opts.events, 0), None);
    }
    let metrics = Metrics::new();
    let vocabulary = cfg.decide.vocabulary().unwrap_or_default().all().to_vec();
    let mut start = Instant::now();
    let cost_at = |m: &Metrics| (process_cpu_seconds(), m.counted("decode", "ok"));
    let mut cost_start = cost_at(&metrics);
    let pipeline = Pipeline::start(&cfg, metrics.clone())?;
    let done = decided;
    // At a rate, production starts once the consumer owns its partitions, so produce →
    // decision latency measures the pipeline, not the group join.
    let mut producer = None;
    if !opts.preload {
        let joined = Instant::now();
        while metrics.partitions_assigned.get() < i64::from(opts.partitions)
            && joined.elapsed() < Duration::from_secs(15)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (m, o, s, t, counts) = (mock.clone(), opts.clone(), stop.clone(), topic.clone(), metrics.clone());
        let spawned = std::thread::Builder::new().name("demo-producer".into()).spawn(move || {
            let so_far = || decided(&counts);
            let warm = produce(&m, &t, &o, &s, &mut gen, (warm_events, 0), Some(&so_far));
            // The timed run's pacing starts once the warm-up is decided.
            while so_far() < warm && !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
            // As fast as the pipeline goes: no further ahead than the mock cluster keeps.
            let bound: Option<&dyn Fn() -> u64> = if o.rate == 0 { Some(&so_far) } else { None };
            warm + produce(&m, &t, &o, &s, &mut gen, (o.events, o.rate), bound)
        });
        let thread = "demo-producer".to_string();
        producer = Some(spawned.map_err(|source| crate::pipeline::SpawnError { thread, source })?);
        if warm_events > 0 {
            let (began, mut said, mut moved) = (Instant::now(), Instant::now(), (Instant::now(), 0));
            while done(&metrics) < warm_events {
                std::thread::sleep(Duration::from_millis(50));
                let n = done(&metrics);
                if n != moved.1 {
                    moved = (Instant::now(), n);
                }
                if moved.0.elapsed() > Duration::from_secs(30) {
                    tracing::error!(decided = n, expected = warm_events, "demo warm-up stalled");
                    break;
                }
                if opts.progress && said.elapsed() >= Duration::from_secs(5) {
                    eprintln!("warm-up: {n} of {warm_events} decided");
                    said = Instant::now();
                }
            }
            metrics.reset_latencies();
            metrics.reset_event_latencies();
            if opts.progress {
                eprintln!("warm-up: {warm_events} events decided in {:.1} s", began.elapsed().as_secs_f64());
            }
        }
        start = Instant::now();
        cost_start = cost_at(&metrics);
    }
    let ep = pipeline.model().execution_provider.clone();
    let mut last = (Instant::now(), done(&metrics));
    let mut last_progress = Instant::now();
    let mut idle_since = Instant::now();
    let finished_at;
    let mut all = empty_hist();
    let (mut all_ev, mut steady, mut steady_ev) = (empty_ms_hist(), empty_hist(), empty_ms_hist());
    let mut warmed = false;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if opts.rate > 0 && !warmed && start.elapsed() >= WARM_UP {
            // Everything recorded so far belongs to the warm-up.
            all.add(metrics.reset_latencies()).expect("same histogram bounds");
            all_ev.add(metrics.reset_event_latencies()).expect("same histogram bounds");
            warmed = true;
        }
        let n = done(&metrics);
        if n != last.1 {
            idle_since = Instant::now();
        }
        if opts.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            let h = metrics.reset_latencies();
            let rate = (n - last.1) as f64 / last.0.elapsed().as_secs_f64();
            let counts: Vec<String> =
                vocabulary.iter().map(|a| format!("{} {}", a.label(), metrics.counted("decide", a.label()))).collect();
            eprintln!(
                "{:>6.1}s  decided {:>9}  {:>9.0} ev/s  p50 {:>7.2} ms  p99 {:>7.2} ms  {}  dead-letter {}",
                start.elapsed().as_secs_f64(),
                n,
                rate,
                h.value_at_quantile(0.5) as f64 / 1e3,
                h.value_at_quantile(0.99) as f64 / 1e3,
                counts.join(" "),
                metrics.counted("decode", "dead_letter"),
            );
            all.add(&h).expect("same histogram bounds");
            if warmed {
                steady.add(&h).expect("same histogram bounds");
            }
            last = (Instant::now(), n);
            last_progress = Instant::now();
        }
        if n >= all_events {
            finished_at = start.elapsed();
            break;
        }
        if idle_since.elapsed() > Duration::from_secs(30) {
            tracing::error!(decided = n, expected = opts.events, "demo stalled");
            finished_at = start.elapsed();
            break;
        }
    }
    let cost = CostReading::between(cost_start, cost_at(&metrics), &cfg.cost);
    stop.store(true, Ordering::SeqCst);
    let produced = producer.map(|p| p.join().unwrap_or(0)).unwrap_or(all_events);
    pipeline.shutdown(Duration::from_secs(30));
    if std::env::var_os("VERDICT_DEMO_METRICS").is_some() {
        eprintln!("{}", metrics.render());
    }
    let (rest, rest_ev) = (metrics.reset_latencies(), metrics.reset_event_latencies());
    all.add(&rest).expect("same histogram bounds");
    all_ev.add(&rest_ev).expect("same histogram bounds");
    if warmed {
        steady.add(&rest).expect("same histogram bounds");
        steady_ev.add(&rest_ev).expect("same histogram bounds");
    }
    let qs = [0.5, 0.99, 0.999];
    Ok(DemoReport {
        produced,
        decided: metrics.counted("decode", "ok"),
        dead_lettered: metrics.counted("decode", "dead_letter"),
        actions: vocabulary.iter().map(|a| (a.label(), metrics.counted("decide", a.label()))).collect(),
        elapsed: finished_at,
        latency_us: qs.map(|x| all.value_at_quantile(x)),
        event_latency_ms: qs.map(|x| all_ev.value_at_quantile(x)),
        steady: (!steady.is_empty()).then(|| SteadyLatency {
            latency_us: qs.map(|x| steady.value_at_quantile(x)),
            event_latency_ms: qs.map(|x| steady_ev.value_at_quantile(x)),
            events: steady.len(),
        }),
        fallback: metrics.fallback_decisions.get(),
        warm: warm_events,
        execution_provider: ep,
        stages: ["decode", "enrich", "score", "shadow", "publish", "drift"]
            .into_iter()
            .map(|st| {
                let h = metrics.stage_seconds.with_label_values(&[st]);
                (st, h.get_sample_sum(), h.get_sample_count())
            })
            .collect(),
        cost,
        state: ["expired", "bound"].map(|r| metrics.state.evictions.with_label_values(&[r]).get()),
    })
}

fn empty_hist() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn empty_ms_hist() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000, 3).expect("histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_demo_starts_in_the_past_so_its_last_events_are_not_a_day_ahead() {
        let now = 1_764_000_000_000;
        assert_eq!(first_event_time(100_000, now), now, "a short demo starts now");
        // 10M events span ~26.4 h: they start ~3.4 h ago and end ~23 h ahead.
        let first = first_event_time(10_000_000, now);
        assert_eq!(now - first, 95_000_000 - 23 * 3_600_000);
        // The mean step the estimate assumes is the generator's.
        let mut g = Generator::new(7, 50_000, first);
        let n = 200_000;
        let last = (0..n).map(|_| g.next_event().event_time).last().unwrap();
        let mean = (last - first) as f64 / n as f64;
        assert!((9.3..9.7).contains(&mean), "mean step {mean} ms");
    }
}
