//! End-to-end benchmark of the scoring spine on librdkafka's mock cluster, plus the
//! raw ONNX Runtime throughput of the same model measured in the same run.
//!
//!     cargo bench --bench spine
//!     BENCH_EVENTS=300000 BENCH_RATE=50000 BENCH_SECONDS=10 cargo bench --bench spine
//!     BENCH_ENRICH=redis://127.0.0.1:6379/ cargo bench --bench spine   # windows in Redis
//!     BENCH_ENRICH=off cargo bench --bench spine                        # no enrichment
//!     BENCH_FEATURES_REDIS=redis://127.0.0.1:6380/ …                    # features from another Redis
//!     BENCH_RULES=ops/rules/fraud.toml cargo bench --bench spine        # with business rules
//!     BENCH_DRIFT=off cargo bench --bench spine                         # no drift statistics
//!     BENCH_SHADOW=models/demo cargo bench --bench spine                # + a shadow model on every event
//!     BENCH_BUDGET_US=200 cargo bench --bench spine                     # latency-budgeted batches
//!     BENCH_MAX_WAIT_MS=1 BENCH_LINGER_MS=0 cargo bench --bench spine   # batch wait, producer linger
//!     BENCH_UNACKED=32 cargo bench --bench spine                        # batch.max_unacked_batches
//!     BENCH_ALLOCATOR=system cargo bench --bench spine                  # glibc malloc, not mimalloc
//!     BENCH_CHUNK_ROWS=0 cargo bench --bench spine                      # rows/call measured at start-up
//!     BENCH_MODEL=models/demo-mlp cargo bench --bench spine             # another model directory
//!     BENCH_RAW=off cargo bench --bench spine                           # skip phase 1 (slow models)
//!     BENCH_DEADLINE_MS=50 BENCH_MODEL=/tmp/heavy cargo bench --bench spine  # deadline fallback
//!                                                         # (ops/model/heavy.py writes a slow model)
//!     BENCH_EP=cuda,cpu cargo bench --bench spine                       # execution providers (GPU)
//!     BENCH_EP=tensorrt,cpu BENCH_TRT_FP16=1 cargo bench --bench spine  # TensorRT FP16 engines
//!
//!     BENCH_WARM=1 cargo bench --bench spine                            # windows full first (issue 17)
//!     BENCH_WARM_EVENTS=4000000 BENCH_WARM_HOURS=26 cargo bench --bench spine  # a denser warm-up
//!     BENCH_STEP_MS=0.05 BENCH_RATE=20000 cargo bench --bench spine     # event time ≈ wall clock
//!     BENCH_DRAIN_SECONDS=60 BENCH_PHASES=throughput cargo bench --bench spine  # 60 s of backlog drain
//!     BENCH_CHECKPOINT_MS=250 cargo bench --bench spine                 # enrich.checkpoint_interval_ms
//!     BENCH_CHECKPOINT_ENTITIES=64 cargo bench --bench spine            # enrich.checkpoint_max_entities
//!     BENCH_PRODUCE_LINGER_MS=20 cargo bench --bench spine              # offered-rate producer's linger
//!     BENCH_COMPRESSION=none cargo bench --bench spine                  # kafka.compression (default lz4)
//!     BENCH_CONSUMER=fetch.queue.backoff.ms=1000 cargo bench --bench spine  # kafka.consumer overrides
//!     BENCH_HEADERS=3 cargo bench --bench spine                         # 3 headers per backlog message
//!     BENCH_ALLOC_SITES=97 cargo bench --bench spine                    # where allocations come from
//!
//! Phases, one pipeline on one mock cluster for all of them (BENCH_PHASES picks
//! `throughput`, `latency` or both; the default):
//! 1. raw ORT: rows/s of the demo model at several rows-per-call, one session, one thread;
//! 2. warm-up (BENCH_WARM=1: 2,000,000 events, or BENCH_WARM_EVENTS=N): events evenly spread
//!    over BENCH_WARM_HOURS (default 25) of event time, more than the longest window (24 h),
//!    ending at the wall clock, drained in backlogs of BENCH_EVENTS, so every busy card's
//!    windows are full and expiring before anything is measured. The measured phases continue
//!    the same event clock, BENCH_STEP_MS apart (default 9.5 ms, the generator's mean step;
//!    1000 / BENCH_RATE makes event time follow the wall clock; events more than
//!    `decode.event_time_max_ahead_ms`, a day, ahead of the wall clock are dead-lettered);
//! 3. throughput: backlogs of BENCH_EVENTS events (default 300,000; a mock partition keeps
//!    ~5 MiB, ~60,000 of these events, and the busiest card's partition gets ~16% of them),
//!    each generated while the pipeline idles, then produced and drained (events/s from the
//!    first produce to the last decision), until BENCH_DRAIN_SECONDS of draining (default 0:
//!    one backlog);
//! 4. latency: events offered at BENCH_RATE events/s for BENCH_SECONDS while the pipeline
//!    runs; poll → every output acknowledged, p50/p99/p99.9 per tenth of the run and overall.
//!
//! After each phase: worker time by stage, the partition-owned state's checkpoints (written,
//! fields per checkpoint, Redis write time), state loads, entities touched per checkpoint
//! interval and, with Redis, Redis's own command times and CPU.

#[path = "spine/alloc_sites.rs"]
mod alloc_sites;
#[path = "spine/feed.rs"]
mod feed;
#[path = "spine/session.rs"]
mod session;
#[path = "spine/stats.rs"]
mod stats;
#[path = "spine/threads.rs"]
mod threads;

/// Rust heap allocations so far (all threads but the bench's own: see [`KIND`]), for
/// allocations per event.
static ALLOCS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Of [`ALLOCS`], those on verdict's worker threads (`verdict-worker-N`: the stages, per
/// event and per batch), apart from the threads that allocate per interval or per report
/// (drift, statistics, the producer's delivery reports).
static WORKER_ALLOCS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A thread's kind, for counting: not known yet, the bench's own, a worker, any other of
/// verdict's.
const UNKNOWN: u8 = 0;
const BENCH: u8 = 2;
const WORKER: u8 = 3;
const OTHER: u8 = 4;

thread_local! {
    /// The calling thread's kind. Set to BENCH on the bench's own threads (the main thread,
    /// which produces the backlogs, and the offered-rate producer): their allocations are
    /// the load generator's, not verdict's. Const-initialized without a destructor, so
    /// reading it never allocates.
    static KIND: std::cell::Cell<u8> = const { std::cell::Cell::new(UNKNOWN) };
}

/// Marks the calling thread as the bench's own: its allocations are not counted.
fn bench_thread() {
    KIND.with(|b| b.set(BENCH));
}

/// The calling thread's kind from its name (`prctl`, which does not allocate).
fn thread_kind() -> u8 {
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes (NUL included) into the buffer.
    let ok = unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) } == 0;
    if ok && name.starts_with(b"verdict-worker") {
        WORKER
    } else {
        OTHER
    }
}

/// Counts an allocation unless the calling thread is the bench's own.
fn count() {
    let kind = match KIND.try_with(std::cell::Cell::get).unwrap_or(OTHER) {
        UNKNOWN => {
            let k = thread_kind();
            let _ = KIND.try_with(|c| c.set(k));
            k
        }
        k => k,
    };
    if kind == BENCH {
        return;
    }
    if kind == WORKER {
        WORKER_ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    alloc_sites::counted(ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
}

/// Which allocator the counting one forwards to: 0 not read yet, 1 mimalloc (the
/// binary's), 2 the system's (`BENCH_ALLOCATOR=system`). Read at the first allocation, from
/// `getenv` (which does not allocate), and never changed after.
static WHICH: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Whether allocations go to the system allocator.
fn system() -> bool {
    let w = WHICH.load(std::sync::atomic::Ordering::Relaxed);
    if w != 0 {
        return w == 2;
    }
    // SAFETY: getenv with a NUL-terminated name; the result is read before any other
    // thread could change the environment (the first allocation happens at start-up).
    let v = unsafe { libc::getenv(c"BENCH_ALLOCATOR".as_ptr()) };
    let sys = !v.is_null() && unsafe { std::ffi::CStr::from_ptr(v) }.to_bytes() == b"system";
    WHICH.store(if sys { 2 } else { 1 }, std::sync::atomic::Ordering::Relaxed);
    sys
}

/// `verdict`'s allocator (mimalloc) or the system's, counting allocations.
struct Counting;

// SAFETY: forwards every call unchanged to one allocator, chosen at the first allocation
// and never changed after, so a block is always freed by the allocator that made it; only
// counts.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's layout, passed on.
        unsafe {
            if system() {
                std::alloc::System.alloc(l)
            } else {
                mimalloc::MiMalloc.alloc(l)
            }
        }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: as allocated above.
        unsafe {
            if system() {
                std::alloc::System.dealloc(p, l)
            } else {
                mimalloc::MiMalloc.dealloc(p, l)
            }
        }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        count();
        // SAFETY: as allocated above, with the caller's new size.
        unsafe {
            if system() {
                std::alloc::System.realloc(p, l, new)
            } else {
                mimalloc::MiMalloc.realloc(p, l, new)
            }
        }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Allocations (and reallocations) so far: all of verdict's, and those on its workers.
fn allocs() -> threads::Allocs {
    threads::Allocs {
        all: ALLOCS.load(std::sync::atomic::Ordering::Relaxed),
        workers: WORKER_ALLOCS.load(std::sync::atomic::Ordering::Relaxed),
    }
}

use std::path::Path;
use std::time::Instant;

use verdict::config::Config;
use verdict::decode::{Decoder, LocalSchemas, Vectorizer};
use verdict::demo::Generator;
use verdict::score::{init_runtime, ModelSpec, OnnxScorer};
use verdict::telemetry::{process_cpu_seconds, CostReading};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn env_f64(name: &str, default: f64) -> f64 {
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
    cfg.batch.max_unacked_batches = env_u64("BENCH_UNACKED", cfg.batch.max_unacked_batches as u64) as usize;
    match std::env::var("BENCH_ENRICH").as_deref() {
        Ok("off") => cfg.enrich.backend = verdict::enrich::Backend::Off,
        Ok(url) if url.starts_with("redis://") => {
            cfg.enrich.backend = verdict::enrich::Backend::Redis;
            cfg.enrich.redis_url = url.to_string();
        }
        _ => {}
    }
    // Online features from a second Redis (`enrich.features_redis_url`).
    if let Ok(url) = std::env::var("BENCH_FEATURES_REDIS") {
        cfg.enrich.features_redis_url = url;
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
    // BENCH_BATCH_DEPENDENT=1: batch a model whose scores depend on the batch (GPU GEMMs).
    cfg.model.allow_batch_dependent_scores = env_u64("BENCH_BATCH_DEPENDENT", 0) == 1;
    cfg.decide.deadline_ms = env_u64("BENCH_DEADLINE_MS", 0);
    if let Ok(rules) = std::env::var("BENCH_RULES") {
        cfg.rules.file = root.join(rules).to_string_lossy().into_owned();
    }
    cfg.enrich.checkpoint_interval_ms = env_u64("BENCH_CHECKPOINT_MS", cfg.enrich.checkpoint_interval_ms);
    cfg.enrich.checkpoint_max_entities = env_u64("BENCH_CHECKPOINT_ENTITIES", cfg.enrich.checkpoint_max_entities);
    if let Ok(compression) = std::env::var("BENCH_COMPRESSION") {
        cfg.kafka.compression = compression;
    }
    // librdkafka consumer properties, `key=value,key=value` (`kafka.consumer` overrides).
    if let Ok(props) = std::env::var("BENCH_CONSUMER") {
        for kv in props.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').expect("BENCH_CONSUMER: key=value,...");
            cfg.kafka.consumer.insert(k.into(), v.into());
        }
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
    let mut g = Generator::new(5, 50_000, wall_ms()); // event times the decoder accepts
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

fn main() {
    bench_thread();
    verdict::heap::tune();
    // `cargo bench` passes --bench; nothing else to parse. Warnings and errors go to stderr
    // (RUST_LOG overrides; the drift publisher's alerts are about the synthetic data).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,verdict::drift::publisher=error".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(std::io::stderr).init();
    let mut cfg = config();
    if std::env::var("BENCH_RAW").as_deref() != Ok("off") {
        raw_ort(&cfg);
    }
    // A key prefix of its own: a checkpoint left in Redis by an earlier run would make this
    // run's fresh cluster (offsets from 0 again) resume from that run's offsets.
    cfg.enrich.key_prefix = format!("{}-bench-{}-{}", cfg.enrich.key_prefix, std::process::id(), wall_ms());
    let phases = std::env::var("BENCH_PHASES").unwrap_or_else(|_| "throughput,latency".into());
    let chunk = env_u64("BENCH_EVENTS", 300_000);
    let partitions = env_u64("BENCH_PARTITIONS", 16) as i32;
    let step = env_f64("BENCH_STEP_MS", 9.5);
    let span_ms = env_f64("BENCH_WARM_HOURS", 25.0) * 3_600_000.0;
    let warm = match (env_u64("BENCH_WARM", 0), env_u64("BENCH_WARM_EVENTS", 0)) {
        (_, n) if n > 0 => n,
        (1, _) => 2_000_000,
        _ => 0,
    };
    let start_ms = if warm > 0 { wall_ms() - span_ms as i64 } else { wall_ms() };
    let warm_step = if warm > 0 { span_ms / warm as f64 } else { step };
    let mut s = session::Session::start(cfg.clone(), partitions, feed::Feed::new(42, start_ms, warm_step));
    println!(
        "\nenrichment: {:?}, {partitions} partitions, {} workers, batch {}, rows/call {}, checkpoint interval {} ms",
        cfg.enrich.backend,
        cfg.model.workers,
        cfg.batch.max_events,
        cfg.model.chunk_rows,
        s.interval_ms()
    );

    if warm > 0 {
        let before = s.snapshot();
        let (first, t) = (s.feed().clock_ms(), Instant::now());
        let (mut done, mut secs) = (0, 0.0);
        while done < warm {
            let d = s.drain(chunk.min(warm - done));
            done += d.events;
            secs += d.secs;
        }
        let last = s.feed().clock_ms() - warm_step as i64;
        s.feed().take_cards();
        println!(
            "\nwarm-up: {warm} events, event time {:.2} h ({} → {} ms, {:.1} ms apart), drained at {:.0} events/s ({:.1} s draining, {:.1} s in all); RSS {:.0} MiB",
            (last - first) as f64 / 3.6e6,
            first,
            last,
            warm_step,
            warm as f64 / secs,
            secs,
            t.elapsed().as_secs_f64(),
            feed::rss_mib()
        );
        let after = s.snapshot();
        s.print_stats(&before, &after, t.elapsed(), warm, None);
    }
    s.feed().set_step(step);

    if phases.contains("throughput") {
        let drain_secs = env_f64("BENCH_DRAIN_SECONDS", 0.0);
        println!("\nthroughput (backlogs of {chunk} JSON events, event times {step} ms apart):");
        println!("  {:>9} {:>8} {:>10} {:>11} {:>8}", "events", "s", "events/s", "produce s", "RSS MiB");
        let before = s.snapshot();
        let (mut events, mut secs, mut touched) = (0u64, 0.0, 0.0);
        let cpu = process_cpu_seconds();
        let (mut usage, mut allocs) = (threads::Usage::default(), threads::Allocs::default());
        let t = Instant::now();
        loop {
            let d = s.drain(chunk);
            let rate = d.events as f64 / d.secs;
            println!(
                "  {:>9} {:>8.2} {:>10.0} {:>11.2} {:>8.0}",
                d.events,
                d.secs,
                rate,
                d.produce_secs,
                feed::rss_mib()
            );
            let group = (rate * s.interval_ms() as f64 / 1000.0) as usize;
            touched += feed::distinct_per_group(&d.cards, group) * d.secs;
            usage.add(&d.usage);
            allocs = allocs + d.allocs;
            events += d.events;
            secs += d.secs;
            if secs >= drain_secs {
                break;
            }
        }
        println!(
            "  backlog drained: {:.0} events/s ({events} events in {secs:.2} s of draining, {:.1} s in all)",
            events as f64 / secs,
            t.elapsed().as_secs_f64()
        );
        print_cost(&cfg, cpu, events);
        usage.print(events, secs, allocs);
        let after = s.snapshot();
        s.print_stats(&before, &after, std::time::Duration::from_secs_f64(secs), events, Some(touched / secs));
    }

    if phases.contains("latency") {
        let rate = env_u64("BENCH_RATE", 50_000);
        let secs = env_u64("BENCH_SECONDS", 10);
        println!(
            "\nlatency at {rate} events/s offered for {secs} s (producer in the same process, linger {} ms; event times {step} ms apart):",
            env_u64("BENCH_PRODUCE_LINGER_MS", 5)
        );
        let fallback = s.fallback();
        let cpu = process_cpu_seconds();
        let (threads_before, allocs_before, t) = (threads::Threads::now(), allocs(), Instant::now());
        let decided = s.offered(rate, secs, env_u64("BENCH_PRODUCE_LINGER_MS", 5));
        print_cost(&cfg, cpu, decided);
        let usage = threads_before.until(&threads::Threads::now());
        usage.print(decided, t.elapsed().as_secs_f64(), allocs() - allocs_before);
        if cfg.decide.deadline_ms > 0 {
            let fallback = s.fallback() - fallback;
            println!(
                "  deadline {} ms: {fallback} of {decided} events decided by rules alone (fallback, {:.1}%)",
                cfg.decide.deadline_ms,
                100.0 * fallback as f64 / decided.max(1) as f64
            );
        }
    }
    s.stop();
}

/// The process's CPU time per decision since `cpu_before` (the pipeline with the in-process
/// mock cluster and the feed's producer), priced at `[cost]` or, by default, at an assumed
/// 2-vCPU instance for $0.0893 an hour (BENCH_USD_PER_HOUR, BENCH_CORES).
fn print_cost(cfg: &Config, cpu_before: f64, decisions: u64) {
    let mut price = cfg.cost.clone();
    price.instance_usd_per_hour = Some(env_f64("BENCH_USD_PER_HOUR", price.instance_usd_per_hour.unwrap_or(0.0893)));
    price.instance_cores = Some(env_f64("BENCH_CORES", price.instance_cores.unwrap_or(2.0)));
    let reading = CostReading::between((cpu_before, 0), (process_cpu_seconds(), decisions), &price);
    println!(
        "  cost: {reading} (process CPU, mock cluster and producer included; ${}/h for {} cores)",
        price.instance_usd_per_hour.unwrap_or_default(),
        price.instance_cores.unwrap_or_default()
    );
}

fn wall_ms() -> i64 {
    verdict::publish::acker::wall_clock_ms()
}
