//! Wires the stages with bounded channels and owns their threads.
//!
//! ```text
//! consume thread ──batches (bounded)──▶ N workers ──completed (bounded)──▶ acker
//!   (poll, batch,                       (decode, score,                     (await acks in order,
//!    pause when full)                    decide, produce)                    store offsets)
//! ```
//!
//! Shutdown order: stop fetching → flush the partial batch → workers drain →
//! acker awaits every delivery and stores offsets → synchronous commit → close.
//! [`Pipeline::abort`] (and `Drop`) is the crash-like path: nothing more is stored.

use std::sync::atomic::{AtomicUsize, Ordering};

use rdkafka::consumer::Consumer;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::consume::{commit_stored, create_consumer, ConsumeLoop, Control, Exit, KafkaConsumer};
use crate::decode::{LocalSchemas, SchemaSource, Vectorizer};
use crate::enrich::{Enricher, Turnstile};
use crate::error::{Policy, StageError};
use crate::publish::{Acker, Publisher};
use crate::rules::RulesHandle;
use crate::score::{init_runtime, ModelSpec, OnnxScorer, ScoreError};
use crate::telemetry::Metrics;

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Model, manifest or runtime problem.
    #[error(transparent)]
    Score(#[from] ScoreError),
    /// Avro schemas could not be loaded.
    #[error("schemas: {0}")]
    Schemas(String),
    /// Kafka client creation or subscription failed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// The enrich stage could not start (config, or the state store unreachable).
    #[error("enrich: {0}")]
    Enrich(String),
    /// The rules file is invalid: every problem.
    #[error("rules: {}", .0.join("; "))]
    Rules(Vec<String>),
    /// A pipeline thread could not be started.
    #[error("starting thread {0}: {1}")]
    Spawn(String, std::io::Error),
}

impl StageError for StartError {
    fn policy(&self) -> Policy {
        Policy::Fatal
    }
}

/// What [`Pipeline::shutdown`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Everything consumed was delivered and committed within the timeout.
    pub clean: bool,
    /// Time taken.
    pub elapsed: Duration,
}

/// The serving model as started.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Manifest name.
    pub name: String,
    /// Manifest version.
    pub version: String,
    /// Execution provider the sessions run on.
    pub execution_provider: String,
}

/// A running pipeline.
pub struct Pipeline {
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    consumer: Option<Arc<KafkaConsumer>>,
    publisher: Publisher,
    consume: Option<JoinHandle<Exit>>,
    workers: Vec<JoinHandle<()>>,
    acker: Option<JoinHandle<()>>,
    watchdog: Option<JoinHandle<()>>,
    model: ModelInfo,
    rules: Arc<RulesHandle>,
    models: Arc<crate::score::live::ModelReloader>,
    drift: Option<(JoinHandle<()>, Arc<std::sync::atomic::AtomicBool>)>,
}

/// Loads ORT, the manifest and one validated session per worker.
pub fn load_scorers(cfg: &Config, metrics: &Metrics) -> Result<(ModelSpec, Vec<OnnxScorer>), ScoreError> {
    let env = init_runtime(cfg.model.ort_library.as_deref())?;
    let spec = ModelSpec::from_config(&cfg.model)?;
    let mut scorers = Vec::with_capacity(cfg.model.workers);
    for _ in 0..cfg.model.workers {
        let (scorer, failures) = OnnxScorer::load(&spec, env)?;
        if scorers.is_empty() {
            let used = scorer.execution_provider().label();
            for (ep, why) in &failures {
                tracing::warn!(requested = ep.label(), used, reason = %why, "execution provider unavailable; falling back");
                metrics.ep_fallbacks.with_label_values(&[ep.label(), used]).inc();
            }
            tracing::info!(model = %spec.manifest.name, version = %spec.manifest.version, execution_provider = used,
                workers = cfg.model.workers, "model loaded");
        }
        scorers.push(scorer);
    }
    Ok((spec, scorers))
}

/// One shadow session per worker, when `model.shadow_dir` is set; its inputs must be the
/// serving model's (it scores the same rows).
fn load_shadows(cfg: &Config, main: &ModelSpec, workers: usize) -> Result<Vec<crate::worker::Shadow>, StartError> {
    let Some(dir) = &cfg.model.shadow_dir else { return Ok(Vec::new()) };
    let shadow_cfg = crate::config::ModelConfig { dir: dir.clone(), ..cfg.model.clone() };
    let spec = ModelSpec::from_config(&shadow_cfg)?;
    if spec.manifest.inputs != main.manifest.inputs || spec.manifest.lanes() != main.manifest.lanes() {
        let names = |s: &ModelSpec| s.manifest.inputs.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        return Err(StartError::Score(ScoreError::Mismatch(format!(
            "shadow model {} takes other inputs than the serving model (it must score the same rows): {:?} vs {:?}",
            dir.display(),
            names(&spec),
            names(main)
        ))));
    }
    let env = init_runtime(cfg.model.ort_library.as_deref())?;
    let threshold = if cfg.model.shadow_sample >= 1.0 {
        u64::MAX
    } else {
        (cfg.model.shadow_sample.max(0.0) * u64::MAX as f64) as u64
    };
    let mut out = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (scorer, _) = OnnxScorer::load(&spec, env)?;
        out.push(crate::worker::Shadow {
            scorer,
            name: spec.manifest.name.clone(),
            version: spec.manifest.version.clone(),
            threshold,
        });
    }
    tracing::info!(model = %spec.manifest.name, version = %spec.manifest.version, sample = cfg.model.shadow_sample,
        "shadow model loaded");
    Ok(out)
}

impl Pipeline {
    /// Loads the model, connects to Kafka and starts every thread.
    pub fn start(cfg: &Config, metrics: Arc<Metrics>) -> Result<Self, StartError> {
        let (spec, scorers) = load_scorers(cfg, &metrics)?;
        let ep = scorers[0].execution_provider().label().to_string();
        let schemas: Arc<dyn SchemaSource> =
            Arc::new(LocalSchemas::load(&cfg.decode.avro_schemas).map_err(StartError::Schemas)?);
        let secrets = crate::redact::Secrets::of(cfg);
        let publisher = Publisher::new(&cfg.kafka, &cfg.publish, metrics.clone())
            .map_err(|e| StartError::Kafka(secrets.scrub(&e.to_string())))?;
        let enricher = Enricher::new(&cfg.enrich)
            .map(|e| e.with_metrics(&metrics))
            .map_err(|e| StartError::Enrich(secrets.scrub(&e.to_string())))?;
        let vectorizer = Vectorizer::new(&spec.manifest, enricher.names())
            .map_err(|e| StartError::Score(ScoreError::Mismatch(e)))?;
        let entity_paths = enricher.paths();
        let enriched_names = enricher.names().to_vec();
        let rules = RulesHandle::load(&cfg.rules, &enriched_names, &cfg.enrich.redis_url, metrics.clone())
            .map_err(StartError::Rules)?;
        // Windows are maintained whenever entities are configured, used by the model or not:
        // rules (and later rule versions) read them, and they must be exact when they do.
        let enricher = enricher.is_enabled().then(|| (Arc::new(Turnstile::new(enricher)), cfg.enrich.on_failure));
        let baseline = crate::drift::Baseline::from_manifest(&spec.manifest)
            .map_err(|e| StartError::Score(ScoreError::Manifest(e)))?;
        let drift_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut scored = None;
        let drift = match baseline {
            Some(b) if cfg.drift.enabled => {
                let mut monitor = crate::drift::DriftMonitor::new(b, scorers.len());
                if !cfg.drift.labels_topic.is_empty() {
                    let thresholds = vec![cfg.decide.review_at, cfg.decide.decline_at];
                    let stats = Arc::new(parking_lot::Mutex::new(crate::drift::labels::LabelStats::new(&thresholds)));
                    let store = crate::drift::labels::LabelStore {
                        redis_url: cfg.enrich.redis_url.clone(),
                        prefix: cfg.enrich.key_prefix.clone(),
                        horizon_s: cfg.drift.labels_horizon_s,
                    };
                    let (sink, _writer) =
                        crate::drift::labels::spawn_writer(store.clone(), cfg.drift.labels_queue, metrics.clone())
                            .map_err(|e| StartError::Spawn("scored-event writer".into(), e))?;
                    scored = Some(sink);
                    crate::drift::labels::spawn_joiner(
                        cfg.kafka.brokers.clone(),
                        format!("{}-labels", cfg.kafka.group_id),
                        cfg.drift.labels_topic.clone(),
                        cfg.kafka.consumer.clone(),
                        store,
                        stats.clone(),
                        metrics.clone(),
                        drift_stop.clone(),
                    )
                    .map_err(|e| StartError::Spawn("label joiner".into(), e))?;
                    monitor.labels = Some((stats, thresholds));
                }
                Some(Arc::new(monitor))
            }
            None if cfg.drift.enabled => {
                tracing::info!(model = %spec.manifest.name, "no baseline in the manifest; drift statistics off");
                None
            }
            _ => None,
        };
        let model_slots = Arc::new(crate::score::live::ModelSlots::new(scorers.len()));
        let budget = (cfg.batch.score_budget_us > 0)
            .then(|| Arc::new(crate::score::budget::BatchBudget::new(cfg.batch.score_budget_us, cfg.batch.max_events)));
        let mut shadows = load_shadows(cfg, &spec, scorers.len())?;
        let queued = (cfg.decide.deadline_ms > 0).then(|| Arc::new(crate::envelope::Queued::default()));
        // The consumer joins the group last, once everything that can fail has been built:
        // dropping a subscribed consumer whose first assignment is in progress trips an
        // assertion inside librdkafka that aborts the process.
        let in_flight = Arc::new(AtomicUsize::new(0));
        let in_flight_seen = in_flight.clone();
        let control = Arc::new(Control::default());
        let consumer = create_consumer(&cfg.kafka, cfg.telemetry.stats_interval_ms, metrics.clone(), in_flight.clone())
            .map_err(|e| StartError::Kafka(secrets.scrub(&e.to_string())))?;
        consumer.context().set_abort_flag(control.abort.clone());

        let (batch_tx, batch_rx) = crossbeam_channel::bounded(cfg.batch.queue_batches);
        let (done_tx, done_rx) = crossbeam_channel::bounded(cfg.batch.max_unacked_batches);

        let acker = Acker::new(
            done_rx,
            consumer.clone(),
            publisher.clone(),
            metrics.clone(),
            control.abort.clone(),
            in_flight.clone(),
            crate::publish::acker::Refusals {
                policy: cfg.publish.on_refused,
                dead_letter_topic: cfg.kafka.dead_letter_topic.clone(),
            },
        );
        let acker = spawn("verdict-acker", &control, &metrics, move || acker.run())?;

        let builder = crate::worker::WorkerBuilder {
            cfg,
            publisher: &publisher,
            metrics: &metrics,
            control: &control,
            rules: &rules,
            schemas: &schemas,
            vectorizer: &vectorizer,
            model: (&spec.manifest.name, &spec.manifest.version),
            entities: (&entity_paths, &enriched_names),
            enricher: enricher.as_ref(),
            drift: drift.as_deref(),
            model_slots: &model_slots,
            scored: scored.as_ref(),
            queued: queued.as_ref(),
            budget: budget.as_ref(),
        };
        let mut workers = Vec::new();
        for (i, scorer) in scorers.into_iter().enumerate() {
            let worker = builder.build(i, scorer, shadows.pop());
            let (rx, tx) = (batch_rx.clone(), done_tx.clone());
            workers.push(spawn(&format!("verdict-worker-{i}"), &control, &metrics, move || worker.run(rx, tx))?);
        }
        drop((batch_rx, done_tx, scored));
        if cfg.decide.deadline_ms > 0 && metrics.deadline_reserve.get() == 0.0 {
            // Until acknowledgements have measured it, keep a tenth of the budget back.
            metrics.deadline_reserve.set(cfg.decide.deadline_ms as f64 / 1e4);
        }

        let mut consume_loop = ConsumeLoop::new(
            consumer.clone(),
            cfg.batch.clone(),
            Duration::from_millis(cfg.kafka.commit_interval_ms),
            batch_tx,
            metrics.clone(),
            in_flight,
            control.clone(),
        )
        .with_rules(rules.clone())
        .with_models(model_slots.clone())
        .with_budget(budget);
        consume_loop.queued = queued;
        let consume = spawn("verdict-consume", &control, &metrics, move || consume_loop.run())?;
        let watchdog = {
            let dog = crate::watchdog::Watchdog::new(
                Duration::from_secs(cfg.telemetry.stall_timeout_s),
                metrics.clone(),
                in_flight_seen.clone(),
            );
            let c = control.clone();
            spawn("verdict-watchdog", &control, &metrics, move || {
                dog.run(|| c.stop.load(Ordering::SeqCst) || c.abort.load(Ordering::SeqCst))
            })?
        };
        if !cfg.rules.file.is_empty() {
            let c = control.clone();
            rules
                .spawn_watcher(&cfg.rules, move || c.stop.load(Ordering::SeqCst) || c.abort.load(Ordering::SeqCst))
                .map_err(|e| StartError::Spawn("rules watcher".into(), e))?;
        }

        let drift_thread = match drift {
            Some(monitor) => Some(
                crate::drift::spawn_publisher(
                    cfg.drift.clone(),
                    cfg.publish.format,
                    cfg.publish.drift_schema_id,
                    monitor,
                    crate::drift::Identity {
                        model: spec.manifest.name.clone(),
                        model_version: spec.manifest.version.clone(),
                        instance: crate::drift::instance_id(&cfg.drift),
                    },
                    publisher.clone(),
                    metrics.clone(),
                    drift_stop.clone(),
                )
                .map_err(|e| StartError::Spawn("drift publisher".into(), e))?,
            ),
            None => None,
        };
        metrics.set_model(&spec.manifest.name, &spec.manifest.version, &ep);
        let models = crate::score::live::ModelReloader::new(
            &cfg.model,
            &enriched_names,
            model_slots,
            metrics.clone(),
            &spec.manifest.name,
            &spec.manifest.version,
        );
        {
            let c = control.clone();
            let interval = match cfg.model.reload_interval_ms {
                0 => Duration::from_secs(3600),
                ms => Duration::from_millis(ms),
            };
            models
                .spawn(interval, move || c.stop.load(Ordering::SeqCst) || c.abort.load(Ordering::SeqCst))
                .map_err(|e| StartError::Spawn("model watcher".into(), e))?;
        }
        let model = ModelInfo {
            name: spec.manifest.name.clone(),
            version: spec.manifest.version.clone(),
            execution_provider: ep,
        };
        Ok(Self {
            control,
            metrics,
            consumer: Some(consumer),
            publisher,
            consume: Some(consume),
            workers,
            acker: Some(acker),
            watchdog: Some(watchdog),
            model,
            rules,
            models,
            drift: drift_thread.map(|t| (t, drift_stop)),
        })
    }

    /// The model reloader (check now with [`crate::score::live::ModelReloader::reload_now`]).
    pub fn models(&self) -> &Arc<crate::score::live::ModelReloader> {
        &self.models
    }

    /// The rules in force (reload on SIGHUP with [`RulesHandle::reload_now`]).
    pub fn rules(&self) -> &Arc<RulesHandle> {
        &self.rules
    }

    /// This pipeline's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Why the pipeline cannot go on, once it cannot (a thread ended unexpectedly, a refused
    /// output under `on_refused = "stop"`, a fatal producer error); `/healthz` fails then.
    pub fn failure(&self) -> Option<String> {
        self.metrics.guards.failure()
    }

    /// The serving model.
    pub fn model(&self) -> &ModelInfo {
        &self.model
    }

    /// Graceful stop: drain, deliver, commit. Past `timeout`, aborts what is left
    /// (those events are re-delivered to the group later: at-least-once).
    pub fn shutdown(mut self, timeout: Duration) -> ShutdownReport {
        let start = Instant::now();
        let deadline = start + timeout;
        self.control.stop.store(true, Ordering::SeqCst);
        let mut clean = join_until(self.consume.take(), deadline) == Some(Exit::Drain);
        for w in std::mem::take(&mut self.workers) {
            clean &= join_until(Some(w), deadline).is_some();
        }
        clean &= join_until(self.acker.take(), deadline).is_some();
        join_until(self.watchdog.take(), deadline);
        // The last (partial) drift window, after every worker has observed its batches.
        if let Some((t, stop)) = self.drift.take() {
            stop.store(true, Ordering::SeqCst);
            join_until(Some(t), deadline);
        }
        if !clean {
            self.control.abort.store(true, Ordering::SeqCst);
            tracing::warn!("shutdown timed out; undelivered events will be re-processed by the group");
        }
        if let Some(consumer) = self.consumer.take() {
            commit_stored(&consumer, &self.metrics);
            // Everything stored is committed. The revoke callback that close runs must not
            // commit again: a synchronous commit inside librdkafka's close can block for
            // ever (seen on the mock cluster when a pipeline stops right after it started).
            self.control.abort.store(true, Ordering::SeqCst);
            close(consumer);
        }
        self.publisher.flush(Duration::from_secs(5));
        let report = ShutdownReport { clean, elapsed: start.elapsed() };
        tracing::info!(clean, elapsed_ms = report.elapsed.as_millis() as u64, "pipeline stopped");
        report
    }

    /// Crash-like stop: no more offsets are stored, nothing is flushed or committed
    /// beyond what librdkafka already had.
    pub fn abort(mut self) {
        self.abort_inner();
    }

    fn abort_inner(&mut self) {
        self.control.abort.store(true, Ordering::SeqCst);
        self.control.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        join_until(self.consume.take(), deadline);
        for w in std::mem::take(&mut self.workers) {
            join_until(Some(w), deadline);
        }
        join_until(self.acker.take(), deadline);
        join_until(self.watchdog.take(), deadline);
        if let Some((_, stop)) = self.drift.take() {
            stop.store(true, Ordering::SeqCst);
        }
        if let Some(c) = self.consumer.take() {
            close(c);
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if self.consume.is_some() || self.consumer.is_some() {
            self.abort_inner();
        }
    }
}

/// Drops the last consumer handle: librdkafka's close runs the revoke callback and
/// leaves the group, so the partitions move to the remaining members at once.
/// (An explicit `unsubscribe()` first leaves a cooperative rebalance half-done and the
/// group then waits for this member's session to time out.)
fn close(consumer: Arc<KafkaConsumer>) {
    drop(consumer);
}

/// Starts a named pipeline thread. If it ends while the pipeline is neither stopping nor
/// aborting (it panicked, or returned early), the pipeline is marked failed: `/healthz`
/// answers 503 and `verdict run` exits non-zero.
fn spawn<T: Send + 'static>(
    name: &str,
    control: &Arc<Control>,
    metrics: &Arc<Metrics>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, StartError> {
    struct Sentinel(String, Arc<Control>, Arc<Metrics>);
    impl Drop for Sentinel {
        fn drop(&mut self) {
            if !self.1.stop.load(Ordering::SeqCst) && !self.1.abort.load(Ordering::SeqCst) {
                let how = if std::thread::panicking() { "panicked" } else { "ended" };
                self.2.guards.fail(format!("thread {} {how} while the pipeline was running", self.0));
            }
        }
    }
    let sentinel = Sentinel(name.to_string(), control.clone(), metrics.clone());
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let _sentinel = sentinel;
            f()
        })
        .map_err(|e| StartError::Spawn(name.to_string(), e))
}

fn join_until<T>(handle: Option<JoinHandle<T>>, deadline: Instant) -> Option<T> {
    let handle = handle?;
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.join().ok()
}
