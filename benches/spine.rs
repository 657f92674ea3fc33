//! End-to-end benchmark of the scoring spine on librdkafka's mock cluster, plus the
//! raw ONNX Runtime throughput of the same model measured in the same run.
//!
//!     cargo bench --bench spine
//!     BENCH_EVENTS=300000 BENCH_RATE=50000 BENCH_SECONDS=10 cargo bench --bench spine
//!     BENCH_ENRICH=redis://127.0.0.1:6379/ cargo bench --bench spine   # windows in Redis
//!     BENCH_ENRICH=off cargo bench --bench spine                        # no enrichment
//!     BENCH_RULES=ops/rules/fraud.toml cargo bench --bench spine        # with business rules
//!     BENCH_DRIFT=off cargo bench --bench spine                         # no drift statistics
//!     BENCH_SHADOW=models/demo cargo bench --bench spine                # + a shadow model on every event
//!     BENCH_BUDGET_US=200 cargo bench --bench spine                     # latency-budgeted batches
//!     BENCH_MAX_WAIT_MS=1 BENCH_LINGER_MS=0 cargo bench --bench spine   # batch wait, producer linger
//!     BENCH_CHUNK_ROWS=0 cargo bench --bench spine                      # rows/call measured at start-up
//!     BENCH_MODEL=models/demo-mlp cargo bench --bench spine             # another model directory
//!     BENCH_RAW=off cargo bench --bench spine                           # skip phase 1 (slow models)
//!     BENCH_DEADLINE_MS=50 BENCH_MODEL=/tmp/heavy cargo bench --bench spine  # deadline fallback
//!                                                         # (ops/model/heavy.py writes a slow model)
//!     BENCH_EP=cuda,cpu cargo bench --bench spine                       # execution providers (GPU)
//!     BENCH_EP=tensorrt,cpu BENCH_TRT_FP16=1 cargo bench --bench spine  # TensorRT FP16 engines
//!
//! Phases:
//! 1. raw ORT: rows/s of the demo model at several rows-per-call, one session, one thread;
//! 2. throughput: a backlog of BENCH_EVENTS events is preloaded, then drained by the
//!    pipeline (events/s from pipeline start to the last decision);
//! 3. latency: events offered at BENCH_RATE events/s for BENCH_SECONDS while the pipeline
//!    runs; poll → every output acknowledged, p50/p99/p99.9, over the whole run and without
//!    its first second (steady state).

use std::path::Path;
use std::time::Instant;

use verdict::config::Config;
use verdict::decode::{Decoder, LocalSchemas, Vectorizer};
use verdict::demo::{self, DemoOptions, Generator};
use verdict::score::{init_runtime, ModelSpec, OnnxScorer};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config() -> Config {
    let mut cfg = verdict::config::demo();
    // BENCH_ROOT: the checkout when the built binary runs elsewhere (ops/gpu/check.sh).
    let root = std::env::var_os("BENCH_ROOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf());
    let root = root.as_path();
    cfg.model.dir = root.join(std::env::var("BENCH_MODEL").unwrap_or_else(|_| "models/demo".into()));
    cfg.decode.avro_schemas.insert("1".into(), root.join("schemas/transaction.avsc"));
    cfg.model.workers = env_u64("BENCH_WORKERS", 2) as usize;
    cfg.model.chunk_rows = env_u64("BENCH_CHUNK_ROWS", cfg.model.chunk_rows as u64) as usize;
    cfg.batch.max_events = env_u64("BENCH_BATCH", cfg.batch.max_events as u64) as usize;
    cfg.batch.queue_batches = env_u64("BENCH_QUEUE", cfg.batch.queue_batches as u64) as usize;
    cfg.batch.max_wait_ms = env_u64("BENCH_MAX_WAIT_MS", cfg.batch.max_wait_ms);
    match std::env::var("BENCH_ENRICH").as_deref() {
        Ok("off") => cfg.enrich.backend = verdict::enrich::Backend::Off,
        Ok(url) if url.starts_with("redis://") => {
            cfg.enrich.backend = verdict::enrich::Backend::Redis;
            cfg.enrich.redis_url = url.to_string();
        }
        _ => {}
    }
    cfg.batch.score_budget_us = env_u64("BENCH_BUDGET_US", 0);
    if let Ok(dir) = std::env::var("BENCH_SHADOW") {
        cfg.model.shadow_dir = Some(root.join(dir));
    }
    if std::env::var("BENCH_DRIFT").as_deref() == Ok("off") {
        cfg.drift.enabled = false;
    }
    if let Ok(eps) = std::env::var("BENCH_EP") {
        cfg.model.execution_providers = Some(eps.split(',').map(str::to_string).collect());
    }
    cfg.model.tensorrt_fp16 = env_u64("BENCH_TRT_FP16", 0) == 1;
    cfg.decide.deadline_ms = env_u64("BENCH_DEADLINE_MS", 0);
    if let Ok(rules) = std::env::var("BENCH_RULES") {
        cfg.rules.file = root.join(rules).to_string_lossy().into_owned();
    }
    if let Ok(linger) = std::env::var("BENCH_LINGER_MS") {
        cfg.kafka.producer.insert("linger.ms".into(), linger);
    }
    cfg
}

fn raw_ort(cfg: &Config) {
    let env = init_runtime(None).expect("ONNX Runtime (run scripts/fetch-ort.sh)");
    let spec = ModelSpec::from_config(&cfg.model).unwrap();
    let decoder = Decoder::new(
        &cfg.decode,
        std::sync::Arc::new(LocalSchemas::load(&cfg.decode.avro_schemas).unwrap()),
        Vectorizer::new(&spec.manifest, verdict::enrich::Enricher::new(&cfg.enrich).unwrap().names()).unwrap(),
        Vec::new(),
    );
    let w = decoder.width();
    let n = 100_000;
    let mut rows = decoder.rows();
    let mut g = Generator::new(5, 50_000, 0);
    let mut d = decoder.batch();
    for _ in 0..n {
        let row = rows.push();
        d.decode(Some(&g.next_event().to_json()), row).unwrap();
    }
    // Enriched columns are NaN placeholders here; give them plausible values.
    for k in 0..n {
        for x in rows.row_mut(k).values.iter_mut().filter(|x| x.is_nan()) {
            *x = 1.0;
        }
    }
    let head = |m: usize| {
        let mut r = decoder.rows();
        (0..m).for_each(|k| r.push_copy(&rows, k));
        r
    };
    let (warm, used_1, used_n) = (head(1024), head(20_000), rows.clone());
    let ep = OnnxScorer::load(&spec, env).map(|(s, _)| s.execution_provider().label()).unwrap_or("?");
    println!("raw ORT, {} ({} inputs), 1 session, 1 intra-op thread, execution provider {ep}:", spec.manifest.name, w);
    for chunk in [1usize, 8, 16, 64, 256, 1024, 4096] {
        let mut s = spec.clone();
        s.chunk_rows = chunk;
        s.allow_batch_dependent_scores = true; // raw ORT speed, whatever the model
        let (mut scorer, _) = OnnxScorer::load(&s, env).unwrap();
        let mut out = Vec::with_capacity(n);
        let rows_used = if chunk == 1 { 20_000 } else { n };
        scorer.score(&warm, &mut out).unwrap(); // warm-up
        out.clear();
        let t = Instant::now();
        scorer.score(if chunk == 1 { &used_1 } else { &used_n }, &mut out).unwrap();
        let secs = t.elapsed().as_secs_f64();
        println!("  rows/call {chunk:>5}: {:>10.0} rows/s", rows_used as f64 / secs);
    }
}

/// Worker time per event by stage (µs), from `verdict_stage_seconds`.
fn stage_split(r: &demo::DemoReport) -> String {
    let events = (r.decided + r.dead_lettered).max(1) as f64;
    let parts: Vec<String> = r
        .stages
        .iter()
        .filter(|(_, _, n)| *n > 0)
        .map(|(name, secs, _)| format!("{name} {:.2} µs/event", secs * 1e6 / events))
        .collect();
    format!("worker time by stage: {}", parts.join(", "))
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let cfg = config();
    if std::env::var("BENCH_RAW").as_deref() != Ok("off") {
        raw_ort(&cfg);
    }

    let events = env_u64("BENCH_EVENTS", 300_000);
    let partitions = env_u64("BENCH_PARTITIONS", 16) as i32;
    let opts =
        DemoOptions { events, preload: true, partitions, bad_fraction: 0.0, progress: false, ..DemoOptions::default() };
    let r = demo::run(cfg.clone(), &opts).expect("pipeline");
    assert_eq!(r.decided, events, "every event decided");
    println!("\nenrichment: {:?}", cfg.enrich.backend);
    println!("{}", stage_split(&r));
    println!(
        "\nthroughput (preloaded backlog of {events} JSON events, {partitions} partitions, {} workers, batch {}, rows/call {}):\n  {:.0} events/s  ({:.2} s)  [backlog latency p50 {:.1} ms, p99 {:.1} ms]",
        cfg.model.workers,
        cfg.batch.max_events,
        cfg.model.chunk_rows,
        r.events_per_sec(),
        r.elapsed.as_secs_f64(),
        r.latency_us[0] as f64 / 1e3,
        r.latency_us[1] as f64 / 1e3
    );

    let rate = env_u64("BENCH_RATE", 50_000);
    let secs = env_u64("BENCH_SECONDS", 10);
    let opts = DemoOptions {
        events: rate * secs,
        rate,
        preload: false,
        partitions,
        bad_fraction: 0.0,
        progress: false,
        ..DemoOptions::default()
    };
    // A fresh broker numbers offsets from 0 again: with the throughput phase's Redis state,
    // its events would be fenced as replays. Its own keys, as a new deployment would have.
    let mut cfg = cfg.clone();
    cfg.enrich.key_prefix = format!("{}-latency", cfg.enrich.key_prefix);
    let r = demo::run(cfg.clone(), &opts).expect("pipeline");
    println!(
        "\nlatency at {rate} events/s offered for {secs} s ({} events, producer in the same process):\n  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  ({:.0} events/s achieved)",
        r.decided,
        r.latency_us[0] as f64 / 1e3,
        r.latency_us[1] as f64 / 1e3,
        r.latency_us[2] as f64 / 1e3,
        r.events_per_sec()
    );
    println!(
        "  produce → decision (includes time waiting in Kafka): p50 {} ms  p99 {} ms  p99.9 {} ms",
        r.event_latency_ms[0], r.event_latency_ms[1], r.event_latency_ms[2]
    );
    match r.steady {
        Some(s) => println!(
            "  steady state (without the first {} s: group join, first fetch, cold caches; {} events):\n    p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms;  produce → decision p50 {} ms  p99 {} ms  p99.9 {} ms",
            verdict::demo::WARM_UP.as_secs(),
            s.events,
            s.latency_us[0] as f64 / 1e3,
            s.latency_us[1] as f64 / 1e3,
            s.latency_us[2] as f64 / 1e3,
            s.event_latency_ms[0],
            s.event_latency_ms[1],
            s.event_latency_ms[2]
        ),
        None => println!("  steady state: run shorter than the {} s warm-up", verdict::demo::WARM_UP.as_secs()),
    }
    if cfg.decide.deadline_ms > 0 {
        println!(
            "  deadline {} ms: {} of {} events decided by rules alone (fallback, {:.1}%)",
            cfg.decide.deadline_ms,
            r.fallback,
            r.decided,
            100.0 * r.fallback as f64 / r.decided.max(1) as f64
        );
    }
}
