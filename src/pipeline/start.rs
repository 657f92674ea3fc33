//! Building a pipeline: load the model, build the stages, start the side threads (drift,
//! labels, watchers), the acker and the workers, and last the consumer, which joins the group
//! only once everything that can fail has been built.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use rdkafka::consumer::Consumer;

use super::threads::{Ends, Threads};
use super::{ModelInfo, Pipeline, Scrubbed, StartError};
use crate::config::Config;
use crate::consume::{create_consumer, ConsumeLoop, Control, KafkaConsumer};
use crate::core::output::RecordSink;
use crate::decode::{registry, SchemaSource, Vectorizer};
use crate::drift::labels::{LabelJoiner, LabelStats, LabelStore, ScoredSink};
use crate::drift::{DriftMonitor, DriftPublisher};
use crate::enrich::{EnrichSetup, Enricher, EntityPaths};
use crate::envelope::{Batch, Queued};
use crate::publish::acker::{Completed, Refusals};
use crate::publish::offsets::{self, Offsets};
use crate::publish::{Acker, Publisher};
use crate::redact::Secrets;
use crate::reload::{ModelReloader, ModelSlots};
use crate::rollout::{Rollout, RolloutMode};
use crate::rules::RulesHandle;
use crate::score::budget::BatchBudget;
use crate::score::{init_runtime, ModelSpec, OnnxScorer, ScoreError};
use crate::telemetry::Metrics;
use crate::worker::{Shadow, Worker, WorkerBuilder};

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
fn load_shadows(cfg: &Config, main: &ModelSpec, workers: usize) -> Result<Vec<Shadow>, StartError> {
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
        out.push(Shadow {
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

/// What every worker shares: the stages built once from the config.
pub(super) struct Parts {
    pub(super) spec: ModelSpec,
    pub(super) schemas: Arc<dyn SchemaSource>,
    pub(super) publisher: Publisher,
    pub(super) vectorizer: Vectorizer,
    pub(super) entity_paths: Vec<EntityPaths>,
    pub(super) enriched_names: Vec<String>,
    pub(super) enricher: Option<EnrichSetup>,
    pub(super) rules: Arc<RulesHandle>,
    pub(super) model_slots: Arc<ModelSlots>,
    /// The guarded rollout of new model versions (the label joiner reports to it).
    pub(super) rollout: Arc<Rollout>,
    pub(super) budget: Option<Arc<BatchBudget>>,
    pub(super) queued: Option<Arc<Queued>>,
    /// Payload buffers the workers hand back to the consumer.
    pub(super) spent: crate::envelope::Spent,
}

impl Parts {
    /// The partition-owned window state, if any.
    pub(super) fn partitions(&self) -> Option<Arc<crate::enrich::owned::Partitions>> {
        self.enricher.as_ref().and_then(|e| e.partitions.clone())
    }

    /// Builds the stages from `cfg` around the loaded model.
    fn build(cfg: &Config, metrics: &Arc<Metrics>, spec: ModelSpec, workers: usize) -> Result<Self, StartError> {
        let secrets = Secrets::of(cfg);
        let schemas =
            registry::schema_source(&cfg.decode.avro_schemas, &cfg.decode.schema_registry).map_err(|e| match e {
                registry::SourceError::Local(e) => StartError::Schemas(e),
                registry::SourceError::Registry(e) => StartError::Registry(Scrubbed::new(e, &secrets)),
            })?;
        let ids = crate::publish::redact::IdPaths {
            event_id: &cfg.decode.fields.event_id,
            entity_key: &cfg.decode.fields.entity_key,
        };
        let redactor = crate::publish::redact::Redactor::new(
            &cfg.publish.redact,
            ids,
            &cfg.enrich.record_key,
            &spec.manifest.inputs,
        )?
        .map(Arc::new);
        let publisher = Publisher::new(&cfg.kafka, &cfg.publish, metrics.clone())
            .map_err(|e| StartError::Publisher(Scrubbed::new(e, &secrets)))?
            .with_redactor(redactor.clone());
        let enricher = Enricher::connect(&cfg.enrich, &cfg.redis)
            .map(|e| e.with_metrics(metrics))
            // A redacted entity id is not logged either (it is part of a Redis key in a warning).
            .map(|e| e.hide_ids(|path| redactor.as_ref().is_some_and(|r| r.redacts_path(path))))
            .map_err(|e| StartError::Enrich(Scrubbed::new(e, &secrets)))?;
        let vectorizer =
            Vectorizer::new(&spec.manifest, enricher.names()).map_err(|e| ScoreError::Mismatch(e.to_string()))?;
        let entity_paths = enricher.paths();
        let enriched_names = enricher.names().to_vec();
        let rules = RulesHandle::load_on(
            &cfg.rules,
            (&crate::rules::readable_names(&enriched_names, &spec.manifest.classes), Arc::new(cfg.decide.actions())),
            (&cfg.enrich.redis_url, cfg.enrich.redis_cluster),
            &cfg.redis,
            metrics.clone(),
        )?;
        // Windows are maintained whenever entities are configured, used by the model or not:
        // rules (and later rule versions) read them, and they must be exact when they do.
        let enricher = EnrichSetup::new(&cfg.enrich, &cfg.redis, enricher, metrics)
            .map_err(|e| StartError::Enrich(Scrubbed::new(e, &secrets)))?;
        let budget = (cfg.batch.score_budget_us > 0)
            .then(|| Arc::new(BatchBudget::new(cfg.batch.score_budget_us, cfg.batch.max_events)));
        let queued = (cfg.decide.deadline_ms > 0).then(|| Arc::new(Queued::default()));
        let transitions = crate::rollout::Transitions {
            sink: cfg
                .drift
                .enabled
                .then(|| (cfg.drift.topic.clone(), Arc::new(publisher.clone()) as Arc<dyn RecordSink>)),
            instance: crate::drift::instance_id(&cfg.drift),
            metrics: metrics.clone(),
        };
        let observed = Arc::new(crate::rollout::Observed::new(cfg.decide.actions().thresholds()));
        let rollout = Arc::new(Rollout::new(cfg.model.rollout.clone(), cfg.drift.psi_alert, observed, transitions));
        Ok(Self {
            spec,
            schemas,
            publisher,
            vectorizer,
            entity_paths,
            enriched_names,
            enricher,
            rules,
            model_slots: Arc::new(ModelSlots::new(workers)),
            rollout,
            budget,
            queued,
            spent: crate::envelope::Spent::default(),
        })
    }
}

/// The drift monitor and the workers' scored-event sink, when drift statistics are on.
struct Drift {
    monitor: Option<Arc<DriftMonitor>>,
    scored: Option<Arc<ScoredSink>>,
}

/// Starts the label threads (scored-event writer, label joiner) when a labels topic is set,
/// and returns the monitor the workers record into.
fn start_drift(cfg: &Config, parts: &Parts, workers: usize, threads: &mut Threads) -> Result<Drift, StartError> {
    let metrics = &threads.metrics().clone();
    let baseline = crate::drift::Baseline::from_manifest(&parts.spec.manifest)?;
    let none = Drift { monitor: None, scored: None };
    let baseline = match baseline {
        Some(b) if cfg.drift.enabled => b,
        None if cfg.drift.enabled => {
            tracing::info!(model = %parts.spec.manifest.name, "no baseline in the manifest; drift statistics off");
            return Ok(none);
        }
        _ => return Ok(none),
    };
    let mut monitor = DriftMonitor::new(baseline, workers, &cfg.decide.actions());
    let mut scored = None;
    if !cfg.drift.labels_topic.is_empty() {
        let thresholds = cfg.decide.actions().thresholds();
        let stats = Arc::new(parking_lot::Mutex::new(LabelStats::new(&thresholds)));
        let store = LabelStore {
            redis_url: cfg.enrich.redis_url.clone(),
            redis: cfg.redis.clone(),
            cluster: cfg.enrich.redis_cluster,
            prefix: cfg.enrich.key_prefix.clone(),
            horizon_s: cfg.drift.labels_horizon_s,
        };
        let (sink, writer) =
            crate::drift::labels::scored_channel(store.clone(), cfg.drift.labels_queue, metrics.clone());
        threads.side("verdict-scored", Ends::OnAbort, move |cancel| writer.run(&cancel))?;
        scored = Some(sink);
        let joiner = LabelJoiner {
            brokers: cfg.kafka.brokers.clone(),
            group: format!("{}-labels", cfg.kafka.group_id),
            topic: cfg.drift.labels_topic.clone(),
            security: cfg.kafka.security.clone(),
            extra: cfg.kafka.consumer.clone(),
            store,
            stats: stats.clone(),
            metrics: metrics.clone(),
            paired: Some(parts.rollout.observed().clone()),
        };
        threads.side("verdict-labels", Ends::AfterWorkers, move |cancel| joiner.run(&cancel))?;
        monitor.labels = Some((stats, thresholds));
    }
    Ok(Drift { monitor: Some(Arc::new(monitor)), scored })
}

/// Starts the drift publisher over `monitor`.
fn start_drift_publisher(
    cfg: &Config,
    parts: &Parts,
    monitor: Arc<DriftMonitor>,
    threads: &mut Threads,
) -> Result<(), StartError> {
    let publisher = DriftPublisher::new(
        cfg.drift.clone(),
        cfg.publish.format,
        cfg.publish.drift_schema_id,
        monitor,
        crate::drift::Identity {
            model: parts.spec.manifest.name.clone(),
            model_version: parts.spec.manifest.version.clone(),
            instance: crate::drift::instance_id(&cfg.drift),
        },
        Arc::new(parts.publisher.clone()),
        threads.metrics().clone(),
    )?;
    threads.side("verdict-drift", Ends::AfterWorkers, move |cancel| publisher.run(&cancel))?;
    Ok(())
}

/// With a schema registry and Avro records: registers the decision and drift schemas and
/// returns the configuration with the registry's ids in place of the fixed ones.
fn register_schemas(cfg: &Config) -> Result<Option<Config>, StartError> {
    let reg = &cfg.decode.schema_registry;
    if reg.url.is_empty() || cfg.publish.format != crate::core::output::DecisionFormat::Avro {
        return Ok(None);
    }
    let topics = registry::OutputTopics {
        decisions: &cfg.kafka.decisions_topic,
        review: &cfg.kafka.review_topic,
        drift: cfg.drift.enabled.then_some(cfg.drift.topic.as_str()),
    };
    let (decision, drift) = registry::register_outputs(
        reg,
        topics,
        (&registry::decision_schema(&cfg.decide.actions()), crate::drift::SCHEMA),
    )
    .map_err(|e| StartError::Registry(Scrubbed::new(e, &Secrets::of(cfg))))?;
    let mut cfg = cfg.clone();
    cfg.publish.decision_schema_id = decision;
    cfg.publish.drift_schema_id = drift.unwrap_or(cfg.publish.drift_schema_id);
    Ok(Some(cfg))
}

/// Starts one worker per scoring session.
#[allow(clippy::too_many_arguments)]
fn spawn_workers(
    cfg: &Config,
    parts: &Parts,
    control: &Arc<Control>,
    scorers: Vec<OnnxScorer>,
    mut shadows: Vec<Shadow>,
    drift: &Drift,
    (batch_rx, done_tx): (Receiver<Batch>, Sender<Completed>),
    threads: &mut Threads,
) -> Result<(), StartError> {
    let builder = WorkerBuilder {
        cfg,
        publisher: &parts.publisher,
        metrics: threads.metrics(),
        control,
        rules: &parts.rules,
        schemas: &parts.schemas,
        vectorizer: &parts.vectorizer,
        model: (&parts.spec.manifest.name, &parts.spec.manifest.version),
        entities: (&parts.entity_paths, &parts.enriched_names),
        enricher: parts.enricher.as_ref(),
        drift: drift.monitor.as_deref(),
        model_slots: &parts.model_slots,
        scored: drift.scored.as_ref(),
        queued: parts.queued.as_ref(),
        budget: parts.budget.as_ref(),
        spent: &parts.spent,
    };
    let mut workers: Vec<Worker> = Vec::with_capacity(scorers.len());
    for (i, scorer) in scorers.into_iter().enumerate() {
        let enrich = parts
            .enricher
            .as_ref()
            .map(EnrichSetup::worker_parts)
            .transpose()
            .map_err(|e| StartError::Enrich(Scrubbed::new(e, &Secrets::of(cfg))))?;
        workers.push(builder.build(i, scorer, shadows.pop(), enrich));
    }
    for (i, worker) in workers.into_iter().enumerate() {
        let (rx, tx) = (batch_rx.clone(), done_tx.clone());
        threads.worker(format!("verdict-worker-{i}"), move || worker.run(rx, tx))?;
    }
    Ok(())
}

/// Starts the stall watchdog and the rules and model watchers.
fn start_watchers(
    cfg: &Config,
    parts: &Parts,
    in_flight: &Arc<AtomicUsize>,
    threads: &mut Threads,
) -> Result<Arc<ModelReloader>, StartError> {
    let metrics = threads.metrics().clone();
    let dog = crate::watchdog::Watchdog::new(
        Duration::from_secs(cfg.telemetry.stall_timeout_s),
        metrics.clone(),
        in_flight.clone(),
    );
    threads.side("verdict-watchdog", Ends::OnStop, move |cancel| dog.run(&cancel))?;
    threads
        .side("verdict-heap", Ends::OnStop, |cancel| crate::heap::trim_every(crate::heap::TRIM_INTERVAL, &cancel))?;
    let meter = crate::telemetry::CostMeter::new(&cfg.cost, metrics.clone());
    threads.side("verdict-cost", Ends::OnStop, move |cancel| meter.run(&cancel))?;
    if !cfg.rules.file.is_empty() {
        let rules = parts.rules.clone();
        let cfg = cfg.rules.clone();
        threads.side("verdict-rules", Ends::OnStop, move |cancel| rules.watcher(&cfg, cancel)())?;
    }
    let (name, version) = (&parts.spec.manifest.name, &parts.spec.manifest.version);
    let (slots, enriched) = (parts.model_slots.clone(), &parts.enriched_names);
    let models = match cfg.model.rollout.mode {
        RolloutMode::Immediate => ModelReloader::new(&cfg.model, enriched, slots, metrics, name, version),
        RolloutMode::Guarded => {
            let bands = cfg.decide.actions().thresholds().iter().map(|&t| t as f32).collect();
            let serving = Arc::new(parts.spec.clone());
            ModelReloader::guarded(&cfg.model, enriched, slots, metrics, serving, parts.rollout.clone(), bands)
        }
    };
    let interval = match cfg.model.reload_interval_ms {
        0 => Duration::from_secs(3600),
        ms => Duration::from_millis(ms),
    };
    let m = models.clone();
    threads.side("verdict-model", Ends::OnStop, move |cancel| m.watcher(interval, cancel)())?;
    Ok(models)
}

/// Starts the acker, which waits for each batch's outputs to be acknowledged, and the
/// offset thread behind it, which stores the batch's offsets into `consumer` once any
/// checkpoint covering them is durable.
fn start_acker(
    cfg: &Config,
    parts: &Parts,
    consumer: &Arc<KafkaConsumer>,
    done_rx: Receiver<Completed>,
    in_flight: &Arc<AtomicUsize>,
    threads: &mut Threads,
) -> Result<(), StartError> {
    let store = Arc::new(crate::consume::ConsumerOffsets::new(consumer.clone()));
    let offsets =
        Offsets::new(store, threads.metrics().clone(), in_flight.clone()).with_spent(parts.spent.offsets.clone());
    let (store_tx, store_rx) = crossbeam_channel::bounded(offsets::QUEUE);
    let abort = threads.control().abort_token().clone();
    let acker = Acker::new(
        done_rx,
        offsets.clone(),
        store_tx,
        parts.publisher.clone(),
        threads.metrics().clone(),
        abort.clone(),
        Refusals { policy: cfg.publish.on_refused, dead_letter_topic: cfg.kafka.dead_letter_topic.clone() },
    )
    .with_spent(parts.spent.clone());
    threads.acker("verdict-acker", move || acker.run())?;
    threads.acker("verdict-offsets", move || offsets.run(store_rx, abort))?;
    Ok(())
}

/// Starts the consume loop, which hands batches to the workers through `batch_tx`.
fn start_consume(
    cfg: &Config,
    parts: &Parts,
    consumer: &Arc<KafkaConsumer>,
    in_flight: &Arc<AtomicUsize>,
    batch_tx: Sender<Batch>,
    threads: &mut Threads,
) -> Result<(), StartError> {
    let mut consume_loop = ConsumeLoop::new(
        consumer.clone(),
        cfg.batch.clone(),
        Duration::from_millis(cfg.kafka.commit_interval_ms),
        batch_tx,
        threads.metrics().clone(),
        in_flight.clone(),
        threads.control().clone(),
    )
    .with_rules(parts.rules.clone())
    .with_models(parts.model_slots.clone())
    .with_budget(parts.budget.clone())
    .with_turns(parts.partitions().map(|p| p as Arc<dyn crate::envelope::PartitionTurns>));
    consume_loop.queued = parts.queued.clone();
    consume_loop.payloads = crate::envelope::Payloads::new(parts.spent.clone());
    threads.consume(move || consume_loop.run())?;
    Ok(())
}

impl Pipeline {
    /// Loads the model, connects to Kafka and starts every thread. On an error, whatever
    /// was started is stopped and joined again.
    pub fn start(cfg: &Config, metrics: Arc<Metrics>) -> Result<Self, StartError> {
        let registered = register_schemas(cfg)?;
        let cfg = registered.as_ref().unwrap_or(cfg);
        let (spec, scorers) = load_scorers(cfg, &metrics)?;
        let ep = scorers[0].execution_provider().label().to_string();
        let parts = Parts::build(cfg, &metrics, spec, scorers.len())?;
        let control = Arc::new(Control::default());
        let mut threads = Threads::new(control.clone(), metrics.clone());
        let drift = start_drift(cfg, &parts, scorers.len(), &mut threads)?;
        let shadows = load_shadows(cfg, &parts.spec, scorers.len())?;
        // The consumer joins the group last, once everything that can fail has been built:
        // dropping a subscribed consumer whose first assignment is in progress trips an
        // assertion inside librdkafka that aborts the process.
        let in_flight = Arc::new(AtomicUsize::new(0));
        let consumer = create_consumer(&cfg.kafka, cfg.telemetry.stats_interval_ms, metrics.clone(), in_flight.clone())
            .map_err(|e| StartError::Kafka(Scrubbed::new(e, &Secrets::of(cfg))))?;
        consumer.context().set_abort_token(control.abort_token().clone());
        if let Some(p) = parts.partitions() {
            consumer.context().set_resume(p);
        }
        let (batch_tx, batch_rx) = crossbeam_channel::bounded(cfg.batch.queue_batches);
        let (done_tx, done_rx) = crossbeam_channel::bounded(cfg.batch.max_unacked_batches);
        start_acker(cfg, &parts, &consumer, done_rx, &in_flight, &mut threads)?;
        spawn_workers(cfg, &parts, &control, scorers, shadows, &drift, (batch_rx, done_tx), &mut threads)?;
        if cfg.decide.deadline_ms > 0 && metrics.deadline_reserve.get() == 0.0 {
            // Until acknowledgements have measured it, keep a tenth of the budget back.
            metrics.deadline_reserve.set(cfg.decide.deadline_ms as f64 / 1e4);
        }
        start_consume(cfg, &parts, &consumer, &in_flight, batch_tx, &mut threads)?;
        metrics.set_model(&parts.spec.manifest.name, &parts.spec.manifest.version, &ep);
        let models = start_watchers(cfg, &parts, &in_flight, &mut threads)?;
        if let Some(monitor) = drift.monitor {
            start_drift_publisher(cfg, &parts, monitor, &mut threads)?;
        }
        let model = ModelInfo {
            name: parts.spec.manifest.name.clone(),
            version: parts.spec.manifest.version.clone(),
            execution_provider: ep,
        };
        let partitions = parts.partitions();
        let mut pipeline =
            Pipeline::new(control, metrics, consumer, parts.publisher, threads, model, parts.rules, models);
        pipeline.partitions = partitions;
        Ok(pipeline)
    }
}
