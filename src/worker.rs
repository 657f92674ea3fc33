//! A worker thread: takes whole batches and runs them through the stages
//! (decode → enrich → score → decide → publish → drift, see [`crate::stage`]), then hands
//! the in-flight deliveries to the acker.
//!
//! Each worker owns its stages (one ONNX Runtime session each) and one [`StagedBatch`]
//! whose buffers are reused across batches, so the hot path does not allocate per event
//! beyond the decoded identity strings and the produce records.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::config::Config;
use crate::consume::Control;
use crate::decode::stage::{Decode, Fill};
use crate::decode::{Decoder, SchemaSource, Vectorizer};
use crate::drift::stage::Drift;
use crate::drift::DriftMonitor;
use crate::enrich::stage::{Enrich, EnrichParts};
use crate::enrich::{EnrichSetup, EntityPaths};
use crate::envelope::{Batch, Envelope, Origin, Queued, RawMessage};
use crate::publish::stage::Publish;
use crate::publish::{Completed, Publisher};
use crate::reload::{Change, ModelSlots};
use crate::rules::stage::Decide;
use crate::rules::{LiveRules, RulesHandle, ThresholdBands};
use crate::score::budget::BatchBudget;
use crate::score::stage::{Deadline, Score};
use crate::score::OnnxScorer;
use crate::stage::{Abort, ScoredEvents, Stage, StageFailure, StagedBatch};
use crate::telemetry::Metrics;

pub use crate::publish::stage::Outputs;
pub use crate::score::stage::{admit, Shadow};

/// What every worker of a pipeline is built from; [`WorkerBuilder::build`] makes worker `i`.
pub struct WorkerBuilder<'a> {
    /// The configuration.
    pub cfg: &'a Config,
    /// The producer.
    pub publisher: &'a Publisher,
    /// Pipeline metrics.
    pub metrics: &'a Arc<Metrics>,
    /// Stop/abort signals.
    pub control: &'a Arc<Control>,
    /// The rules in force (one snapshot per batch).
    pub rules: &'a Arc<RulesHandle>,
    /// Avro writer schemas.
    pub schemas: &'a Arc<dyn SchemaSource>,
    /// The serving model's columns.
    pub vectorizer: &'a Vectorizer,
    /// The serving model's name and version.
    pub model: (&'a str, &'a str),
    /// The enrich stage's entity paths and enrichment names.
    pub entities: (&'a [EntityPaths], &'a [String]),
    /// The enrich stage's shared parts (None: enrichment off).
    pub enricher: Option<&'a EnrichSetup>,
    /// Drift statistics (when the model has a baseline and drift is on).
    pub drift: Option<&'a DriftMonitor>,
    /// Where newer model versions wait.
    pub model_slots: &'a Arc<ModelSlots>,
    /// Scored events kept for the delayed-label join.
    pub scored: Option<&'a Arc<crate::drift::labels::ScoredSink>>,
    /// Batches queued for the workers (deadline fallback on).
    pub queued: Option<&'a Arc<Queued>>,
    /// Scoring budget per batch.
    pub budget: Option<&'a Arc<BatchBudget>>,
    /// Where decided batches' payload buffers go back to the consumer.
    pub spent: &'a crate::envelope::Spent,
}

impl WorkerBuilder<'_> {
    /// Worker `index`, with its own model session and shadow session, and its own enrich
    /// parts (from [`EnrichSetup::worker_parts`]; None when enrichment is off).
    pub fn build(
        &self,
        index: usize,
        scorer: OnnxScorer,
        shadow: Option<Shadow>,
        enrich: Option<EnrichParts>,
    ) -> Worker {
        let (cfg, m) = (self.cfg, self.metrics);
        let abort = Abort::new(self.control.abort_token().clone());
        let (entity_paths, enriched) = self.entities;
        let decoder = Decoder::new(&cfg.decode, self.schemas.clone(), self.vectorizer.clone(), entity_paths.to_vec());
        let outputs = Outputs {
            decisions: cfg.kafka.decisions_topic.clone(),
            review: cfg.kafka.review_topic.clone(),
            dead_letter: cfg.kafka.dead_letter_topic.clone(),
            format: cfg.publish.format,
            schema_id: cfg.publish.decision_schema_id,
            model_name: self.model.0.to_string(),
            model_version: self.model.1.to_string(),
            columns: Arc::new(self.vectorizer.names().map(str::to_string).collect()),
            lanes: Arc::new(self.vectorizer.lanes().to_vec()),
            aggregates: Arc::new(enriched.to_vec()),
            include_features: cfg.publish.include_features,
            include_aggregates: cfg.publish.include_aggregates,
        };
        let rows = self.vectorizer.rows();
        let stages = Stages {
            decode: Decode::new(decoder, m.clone()).with_abort(abort.clone()),
            enrich: self.enricher.zip(enrich).map(|(setup, parts)| {
                (
                    Enrich::new(parts, setup.policy, m.clone(), abort.clone()),
                    Fill::new(self.vectorizer.clone(), m.clone()),
                )
            }),
            score: Score::new(scorer, rows.clone(), m.clone(), abort.clone())
                .with_deadline(Some(Deadline { deadline_ms: cfg.decide.deadline_ms, queued: self.queued.cloned() }))
                .with_budget(self.budget.cloned())
                .with_shadow(shadow),
            decide: Decide::new(ThresholdBands::new(&cfg.decide), m.clone())
                .with_scored(self.scored.map(|s| s.clone() as Arc<dyn ScoredEvents>)),
            publish: Publish::new(self.publisher.clone(), outputs, cfg.publish.on_refused, m.clone(), abort),
            drift: self.drift.map(|d| Drift::new(d.recorder(index), m.clone())),
        };
        Worker {
            durable_state: self.enricher.is_some_and(EnrichSetup::durable),
            stages,
            staged: StagedBatch::new(rows).with_spent(self.spent.clone()),
            metrics: m.clone(),
            control: self.control.clone(),
            rules: self.rules.clone(),
            queued: self.queued.cloned(),
            reload: Reload {
                slots: self.model_slots.clone(),
                index,
                decode: cfg.decode.clone(),
                schemas: self.schemas.clone(),
                entity_paths: entity_paths.to_vec(),
                generation: 0,
                serving: (self.model.0.to_string(), self.model.1.to_string(), self.vectorizer.clone()),
            },
        }
    }
}

/// What a worker needs to swap in a new model version.
struct Reload {
    /// The slots the reloader fills.
    slots: Arc<ModelSlots>,
    /// This worker's slot.
    index: usize,
    /// Rebuilding the decoder for the new columns.
    decode: crate::config::DecodeConfig,
    schemas: Arc<dyn SchemaSource>,
    entity_paths: Vec<EntityPaths>,
    /// Generation this worker serves.
    generation: u64,
    /// The serving version's name, version and columns (a promotion makes it the trial).
    serving: (String, String, Vectorizer),
}

/// A worker's stages, in the order a batch goes through them.
struct Stages {
    decode: Decode,
    /// Enrich, and fill the enriched columns (when enrichment is on).
    enrich: Option<(Enrich, Fill)>,
    score: Score,
    decide: Decide,
    publish: Publish,
    drift: Option<Drift>,
}

/// One worker: its stages and the batch in hand.
pub struct Worker {
    stages: Stages,
    staged: StagedBatch,
    metrics: Arc<Metrics>,
    control: Arc<Control>,
    rules: Arc<RulesHandle>,
    /// Batches queued for the workers: this worker takes its batch off it.
    queued: Option<Arc<Queued>>,
    reload: Reload,
    /// Partition-owned state is checkpointed to Redis: offsets are stored only as its
    /// checkpoints say.
    durable_state: bool,
}

impl Worker {
    /// Runs until the batch channel closes; aborting drops remaining batches unprocessed.
    /// A panic while processing a batch is caught: the batch's events that have no output
    /// yet go to the dead-letter topic as `internal_error`, and the worker goes on.
    pub fn run(mut self, rx: Receiver<Batch>, done: Sender<Completed>) {
        let thread = std::thread::current().name().unwrap_or("verdict-worker").to_string();
        while let Ok(batch) = rx.recv() {
            if self.control.aborted() {
                continue;
            }
            // Test-only faults, looked up once per batch (one atomic load when none is armed).
            let fault = crate::fault::check(batch.events.iter().map(|e| e.payload.payload.as_deref()));
            match fault {
                Some(crate::fault::Fault::KillThread) => panic!("injected fault: worker thread killed"),
                Some(crate::fault::Fault::Stall(d)) => std::thread::sleep(d),
                _ => {}
            }
            self.staged.start(batch);
            self.staged.fault = fault;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.process()));
            let result = result.unwrap_or_else(|panic| {
                let why = panic_message(&*panic);
                let (seq, events) = (self.staged.batch.seq, self.staged.batch.events.len());
                self.metrics.guards.panics.with_label_values(&[&thread]).inc();
                tracing::error!(panic = %why, batch = seq, events, "panic while processing a batch; its undecided events go to the dead-letter topic");
                Err(StageFailure::DeadLetterRest { stage: "worker", detail: format!("panic: {why}") })
            });
            // A batch that failed before (or inside) its enrich stage lets its turns go by, and
            // hands on checkpoints sealed before a panic (both no-ops when the stage finished).
            if result.is_err() {
                if let Some((e, _)) = &mut self.stages.enrich {
                    e.recover(&mut self.staged);
                }
            }
            let completed = self.complete(result);
            self.staged.finish();
            let Some(completed) = completed else { continue };
            if done.send(completed).is_err() {
                return;
            }
        }
    }

    /// Runs the staged batch through every stage: its rules snapshot and model are the ones
    /// stamped on it at dispatch.
    fn process(&mut self) -> Result<(), StageFailure> {
        let b = &mut self.staged;
        if b.fault == Some(crate::fault::Fault::Panic) {
            panic!("injected fault: panic while processing batch {}", b.batch.seq);
        }
        if let Some(q) = &self.queued {
            q.take(b.batch.seq);
        }
        self.swap_model();
        let b = &mut self.staged;
        let live = match b.batch.rules_as::<LiveRules>() {
            Some(live) => live,
            None => {
                let live = self.rules.current();
                b.batch.rules = Some(live.clone());
                live
            }
        };
        b.set_rule_paths(live.set.event_paths());
        let s = &mut self.stages;
        let (enrich, fill) = s.enrich.as_mut().map(|(e, f)| (e as &mut dyn Stage, f as &mut dyn Stage)).unzip();
        let stages: [Option<&mut dyn Stage>; 7] = [
            Some(&mut s.decode),
            enrich,
            fill,
            Some(&mut s.score),
            Some(&mut s.decide),
            Some(&mut s.publish),
            s.drift.as_mut().map(|d| d as &mut dyn Stage),
        ];
        for stage in stages.into_iter().flatten() {
            stage.run(b)?;
        }
        Ok(())
    }

    /// What the acker gets for the staged batch, given how its stages ended: every output
    /// queued so far (a batch that failed has its remaining events dead-lettered first).
    /// None if aborted or the pipeline must stop.
    fn complete(&mut self, result: Result<(), StageFailure>) -> Option<Completed> {
        let b = &mut self.staged;
        let failed = |why: String| self.metrics.guards.fail(why);
        // The acker hands both lists back once it has read them (no allocation per batch).
        let events = b.batch.events.len();
        let (mut timestamps, mut received) = match b.spent() {
            Some(s) => (s.timestamps.take(events), s.received.take(events)),
            None => (Vec::new(), Vec::new()),
        };
        received.extend(b.batch.events.iter().map(|e| e.received_at));
        match result {
            Ok(()) => timestamps.extend(b.decided().filter_map(|(ev, _)| ev.timestamp_ms)),
            Err(StageFailure::Aborted) => return None,
            Err(StageFailure::Stop(why)) => {
                failed(why);
                return None;
            }
            Err(StageFailure::DeadLetterRest { stage, detail }) => {
                match self.stages.publish.dead_letter_rest(b, stage, &detail) {
                    Ok(()) => {}
                    Err(StageFailure::Stop(why)) => {
                        failed(why);
                        return None;
                    }
                    Err(_) => return None,
                }
                b.checked = None;
            }
        }
        // The next batch's delivery counter and this one's offset list: kept ones (no
        // allocation per batch). With checkpointed partition state, offsets come from the
        // checkpoints (after_ack).
        let fresh = b.spent().map(|s| s.deliveries.get()).unwrap_or_default();
        let offsets = if self.durable_state && !b.batch.turns.is_empty() {
            Vec::new()
        } else {
            max_offsets(b.spent().map(|s| s.offsets.take(4)).unwrap_or_default(), &b.batch.events)
        };
        Some(Completed {
            seq: b.batch.seq,
            offsets,
            after_ack: b.after_ack.take(),
            deliveries: std::mem::replace(&mut b.pending, fresh),
            received,
            timestamps,
            checked: b.checked,
        })
    }

    /// Before deciding a batch stamped with a newer model generation, applies the model
    /// changes up to it: a version to serve (session, columns, decoder and the name/version
    /// written in decisions), a version on trial, a promotion or a rollback.
    fn swap_model(&mut self) {
        let r = &mut self.reload;
        if self.staged.batch.model_generation <= r.generation {
            return;
        }
        r.generation = self.staged.batch.model_generation;
        for change in r.slots.take_changes(r.index, r.generation) {
            let s = &mut self.stages.score;
            match change {
                Change::Serve(m) => {
                    s.set_trial(None);
                    s.replace_scorer(m.scorer, m.vectorizer.rows());
                    let (name, version) = (m.spec.manifest.name.clone(), m.spec.manifest.version.clone());
                    self.reload.serving = (name, version, m.vectorizer);
                }
                Change::Trial(t) => {
                    s.set_trial(t.map(|t| t as Box<dyn crate::score::stage::Trialled>));
                    continue;
                }
                // The trial's session and the serving one change places.
                Change::Promote { epoch } => {
                    let Some(trial) =
                        s.swap_with_trial().and_then(|t| t.as_any_mut().downcast_mut::<crate::rollout::Trial>())
                    else {
                        continue;
                    };
                    trial.exchange(&mut self.reload.serving, epoch);
                }
                Change::RollBack => {
                    let Some(trial) =
                        s.swap_with_trial().and_then(|t| t.as_any_mut().downcast_mut::<crate::rollout::Trial>())
                    else {
                        continue;
                    };
                    trial.exchange(&mut self.reload.serving, 0);
                    s.set_trial(None);
                }
            }
            self.serve_columns();
        }
    }

    /// Points the decoder, the fill step and the publish stage at the serving version's
    /// columns and name/version.
    fn serve_columns(&mut self) {
        let r = &self.reload;
        let (name, version, vectorizer) = &r.serving;
        let decoder = Decoder::new(&r.decode, r.schemas.clone(), vectorizer.clone(), r.entity_paths.clone());
        let s = &mut self.stages;
        let same_columns = vectorizer.names().eq(s.publish.columns().iter().map(String::as_str));
        if !same_columns && s.drift.take().is_some() {
            tracing::warn!("the new model has other inputs; drift statistics stop until restart");
        }
        s.decode.replace_decoder(decoder);
        if let Some((_, fill)) = &mut s.enrich {
            fill.set_vectorizer(vectorizer.clone());
        }
        let columns = vectorizer.names().map(str::to_string).collect();
        s.publish.set_model(name, version, columns, vectorizer.lanes(), vectorizer.inputs());
        self.staged.rows = vectorizer.rows();
    }
}

/// The text of a caught panic's payload.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".to_string())
}

/// Highest offset per (topic, partition) among `events`, into `out` (emptied first).
pub fn max_offsets(mut out: Vec<Origin>, events: &[Envelope<RawMessage>]) -> Vec<Origin> {
    out.clear();
    for e in events {
        match out.iter_mut().find(|o| o.partition == e.origin.partition && o.topic == e.origin.topic) {
            Some(o) => o.offset = o.offset.max(e.origin.offset),
            None => out.push(e.origin.clone()),
        }
    }
    out
}
