//! A worker thread: takes whole batches and runs decode → score → decide → publish
//! on them, then hands the in-flight deliveries to the acker.
//!
//! Each worker owns one ONNX Runtime session and its buffers (rows, scores, encode
//! buffer), reused across batches, so the hot path does not allocate per event
//! beyond the decoded identity strings and the produce records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::config::RefusedPolicy;
use crate::config::{Config, DecisionFormat};
use crate::consume::Control;
use crate::decode::{DecodeError, DecodedEvent, Decoder, Rows, Vectorizer};
use crate::enrich::{Enricher, FailurePolicy, Request, Turnstile};
use crate::envelope::{Batch, Envelope, Origin, RawMessage};
use crate::error::DeadLetterReason;
use crate::error::{Policy, StageError};
use crate::publish::limits::Class;
use crate::publish::record::ShadowVerdict;
use crate::publish::{acker::wall_clock_ms, decision_headers_with, Completed, DecisionRecord, PublishError, Publisher};
use crate::rules::expr::Scope;
use crate::rules::{Action, RuleMode, RuleSet, RulesHandle, RulesOutcome, ThresholdBands};
use crate::score::budget::ScoringCost;
use crate::score::OnnxScorer;
use crate::telemetry::Metrics;
use tracing::Level;

/// Topics and formats a worker writes.
#[derive(Clone)]
pub struct Outputs {
    decisions: String,
    review: String,
    dead_letter: String,
    format: DecisionFormat,
    schema_id: u32,
    model_name: String,
    model_version: String,
    columns: Arc<Vec<String>>,
    aggregates: Arc<Vec<String>>,
    include_features: bool,
}

impl Outputs {
    /// From config, the serving model's identity and the enrichment names.
    pub fn new(
        cfg: &Config,
        model_name: &str,
        model_version: &str,
        vectorizer: &Vectorizer,
        enriched: &[String],
    ) -> Self {
        Self {
            decisions: cfg.kafka.decisions_topic.clone(),
            review: cfg.kafka.review_topic.clone(),
            dead_letter: cfg.kafka.dead_letter_topic.clone(),
            format: cfg.publish.format,
            schema_id: cfg.publish.decision_schema_id,
            model_name: model_name.to_string(),
            model_version: model_version.to_string(),
            columns: Arc::new(vectorizer.names().map(str::to_string).collect()),
            aggregates: Arc::new(enriched.to_vec()),
            include_features: cfg.publish.include_features,
        }
    }
}

/// A shadow (challenger) model on a worker.
pub struct Shadow {
    /// Its session (same inputs as the serving model).
    pub scorer: OnnxScorer,
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// Events whose id hash is below this are shadowed (`u64::MAX` = all).
    pub threshold: u64,
}

impl Shadow {
    /// Whether `event_id` is in the shadowed sample (stable across replays and instances).
    pub fn sampled(&self, event_id: &str) -> bool {
        if self.threshold == u64::MAX {
            return true;
        }
        // FNV-1a: stable, cheap, no per-process seed.
        let mut h =
            event_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x1_0000_01b3));
        // fmix64 (MurmurHash3's finalizer): FNV's high bits barely move between similar ids.
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        h < self.threshold
    }
}

/// What a worker needs to swap in a new model version.
pub struct ModelReload {
    /// The slots the reloader fills.
    pub slots: Arc<crate::score::live::ModelSlots>,
    /// This worker's slot.
    pub index: usize,
    /// Rebuilding the decoder for the new columns.
    pub decode: crate::config::DecodeConfig,
    /// Avro schemas.
    pub schemas: Arc<dyn crate::decode::SchemaSource>,
    /// Entity paths of the enrich stage.
    pub entity_paths: Vec<crate::enrich::EntityPaths>,
    /// Generation this worker serves.
    pub generation: u64,
}

/// One worker's state.
pub struct Worker {
    /// Decoder for this worker.
    pub decoder: Decoder,
    /// This worker's session.
    pub scorer: OnnxScorer,
    /// Threshold bands.
    pub bands: ThresholdBands,
    /// Producer handle.
    pub publisher: Publisher,
    /// Destination topics and formats.
    pub outputs: Outputs,
    /// Pipeline metrics.
    pub metrics: Arc<Metrics>,
    /// Stop/abort signals.
    pub control: Arc<Control>,
    /// Shared enricher, taken in batch order.
    pub enricher: Option<(Arc<Turnstile<Enricher>>, FailurePolicy)>,
    /// The manifest's columns (fills enriched ones).
    pub vectorizer: Vectorizer,
    /// The rules in force (one snapshot per batch).
    pub rules: Arc<RulesHandle>,
    rules_seen: Option<Arc<RuleSet>>,
    /// Drift statistics recorder (when the model has a baseline and drift is on).
    pub drift: Option<crate::drift::DriftRecorder>,
    /// Where newer model versions wait, this worker's slot, and the generation it serves.
    reload: Option<ModelReload>,
    /// `decide.deadline_ms` (0: off).
    pub deadline_ms: u64,
    /// Scoring budget per batch: this worker reports its scoring time to it.
    pub budget: Option<Arc<crate::score::budget::BatchBudget>>,
    late: Vec<bool>,
    /// Batches queued behind this one (deadline fallback on): scoring leaves them time.
    pub queued: Option<Arc<crate::envelope::Queued>>,
    /// Scoring cost (per call and per row, fitted to recent batches), for the deadline check.
    cost: ScoringCost,
    live_rows: Rows,
    live_scores: Vec<f32>,
    /// Shadow model, if configured.
    pub shadow: Option<Shadow>,
    shadow_rows: Rows,
    shadow_scores: Vec<f32>,
    shadow_of: Vec<Option<usize>>,
    /// Scored events kept for the delayed-label join.
    pub scored: Option<Arc<crate::drift::labels::ScoredSink>>,
    actions: Vec<Action>,
    rules_out: RulesOutcome,
    fired: Vec<u64>,
    enriched: Vec<Option<f64>>,
    rows: Rows,
    scores: Vec<f32>,
    buf: Vec<u8>,
    /// The batch's outputs queued so far; kept here so a caught panic does not lose them.
    pending: Vec<rdkafka::producer::DeliveryFuture>,
    /// How many of the batch's events have every output queued.
    produced: usize,
    /// What to do with outputs refused for good (`publish.on_refused`).
    pub on_refused: RefusedPolicy,
    log: crate::lograte::LogRate,
    /// The test-only fault armed for the batch in hand (see `crate::fault`).
    fault: Option<crate::fault::Fault>,
}

/// Tries at scoring one batch before its events are dead-lettered as `internal_error`
/// (backoff 0.1, 0.2, 0.4, 0.8 s between them).
const SCORE_ATTEMPTS: u32 = 5;

/// How an attempt to queue an output ended.
enum Sent {
    /// Queued; the acker awaits it.
    Queued(rdkafka::producer::DeliveryFuture),
    /// Refused for good (too large, invalid, refused by a topic policy).
    Refused(PublishError),
    /// Aborted, or the producer failed for good: the batch stops here.
    Stopped,
}

enum Outcome {
    Decided(DecodedEvent),
    Dead(DecodeError),
}

impl Worker {
    /// Assembles a worker.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        decoder: Decoder,
        scorer: OnnxScorer,
        bands: ThresholdBands,
        publisher: Publisher,
        outputs: Outputs,
        metrics: Arc<Metrics>,
        control: Arc<Control>,
        enricher: Option<(Arc<Turnstile<Enricher>>, FailurePolicy)>,
        vectorizer: Vectorizer,
        rules: Arc<RulesHandle>,
    ) -> Self {
        let rows = vectorizer.rows();
        let cost = scorer.scoring_cost();
        let log = crate::lograte::LogRate::new("worker", crate::lograte::WINDOW, Some(&metrics));
        Self {
            decoder,
            scorer,
            bands,
            publisher,
            outputs,
            metrics,
            control,
            enricher,
            vectorizer,
            rules,
            rules_seen: None,
            drift: None,
            reload: None,
            deadline_ms: 0,
            budget: None,
            late: Vec::new(),
            cost,
            queued: None,
            live_rows: rows.clone(),
            live_scores: Vec::new(),
            shadow: None,
            shadow_rows: rows.clone(),
            shadow_scores: Vec::new(),
            shadow_of: Vec::new(),
            scored: None,
            actions: Vec::new(),
            rules_out: RulesOutcome::default(),
            fired: Vec::new(),
            enriched: Vec::new(),
            rows,
            scores: Vec::new(),
            buf: Vec::new(),
            pending: Vec::new(),
            produced: 0,
            on_refused: RefusedPolicy::DeadLetter,
            log,
            fault: None,
        }
    }

    /// Scores the sampled rows with the shadow model; `shadow_of[k]` indexes row k's score.
    /// A shadow failure is logged and costs the batch nothing but its shadow scores.
    fn score_shadow(&mut self, outcomes: &[Outcome]) {
        self.shadow_of.clear();
        let Some(sh) = self.shadow.as_mut() else { return };
        let t = Instant::now();
        self.shadow_rows.clear();
        let mut k = 0;
        for o in outcomes {
            if let Outcome::Decided(d) = o {
                if !self.late.get(k).copied().unwrap_or(false) && sh.sampled(&d.event_id) {
                    self.shadow_of.push(Some(self.shadow_rows.len()));
                    self.shadow_rows.push_copy(&self.rows, k);
                } else {
                    self.shadow_of.push(None);
                }
                k += 1;
            }
        }
        self.shadow_scores.clear();
        if !self.shadow_rows.is_empty() {
            if let Err(e) = sh.scorer.score(&self.shadow_rows, &mut self.shadow_scores) {
                tracing::warn!(error = %e, "shadow scoring failed; batch recorded without shadow scores");
                self.shadow_of.iter_mut().for_each(|s| *s = None);
            }
        }
        self.metrics.stage_seconds.with_label_values(&["shadow"]).observe(t.elapsed().as_secs_f64());
    }

    /// Lets this worker swap in newer model versions offered through `reload.slots`.
    pub fn with_model_reload(mut self, reload: ModelReload) -> Self {
        self.reload = Some(reload);
        self
    }

    /// Before deciding a batch stamped with a newer model generation, swaps in that model:
    /// session, columns, decoder and the name/version written in decisions.
    fn swap_model(&mut self, stamped: u64) {
        let Some(r) = self.reload.as_mut() else { return };
        if stamped <= r.generation {
            return;
        }
        r.generation = stamped;
        let Some(b) = r.slots.take(r.index) else { return };
        let mut decoder = Decoder::new(&r.decode, r.schemas.clone(), b.vectorizer.clone(), r.entity_paths.clone());
        if let Some(set) = &self.rules_seen {
            decoder.set_rule_paths(set.event_paths());
        }
        let same_columns = b.vectorizer.names().eq(self.vectorizer.names());
        if !same_columns && self.drift.take().is_some() {
            tracing::warn!("the new model has other inputs; drift statistics stop until restart");
        }
        self.decoder = decoder;
        self.scorer = b.scorer;
        self.cost = self.scorer.scoring_cost();
        self.vectorizer = b.vectorizer;
        self.rows = self.vectorizer.rows();
        self.live_rows = self.vectorizer.rows();
        self.shadow_rows = self.vectorizer.rows();
        self.outputs.model_name = b.spec.manifest.name.clone();
        self.outputs.model_version = b.spec.manifest.version.clone();
        self.outputs.columns = Arc::new(self.vectorizer.names().map(str::to_string).collect());
    }

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
            self.fault = crate::fault::check(batch.events.iter().map(|e| e.payload.payload.as_deref()));
            match self.fault {
                Some(crate::fault::Fault::KillThread) => panic!("injected fault: worker thread killed"),
                Some(crate::fault::Fault::Stall(d)) => std::thread::sleep(d),
                _ => {}
            }
            self.pending.clear();
            self.produced = 0;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.process(&batch)));
            let completed = match result {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(panic) => {
                    let why = panic_message(&*panic);
                    self.metrics.guards.panics.with_label_values(&[&thread]).inc();
                    tracing::error!(panic = %why, batch = batch.seq, events = batch.events.len(), "panic while processing a batch; its undecided events go to the dead-letter topic");
                    if let Some((turnstile, _)) = &self.enricher {
                        turnstile.pass(batch.seq, self.control.abort_token());
                    }
                    match self.dead_letter_rest(&batch, "worker", &format!("panic: {why}")) {
                        Some(c) => c,
                        None => continue,
                    }
                }
            };
            if done.send(completed).is_err() {
                return;
            }
        }
    }

    /// Sends the batch's events that have no output queued yet to the dead-letter topic as
    /// `internal_error`, and completes the batch with every output queued so far.
    fn dead_letter_rest(&mut self, batch: &Batch, stage: &str, detail: &str) -> Option<Completed> {
        let reason = DeadLetterReason::InternalError;
        for ev in &batch.events[self.produced.min(batch.events.len())..] {
            self.metrics.dead_letters.with_label_values(&[reason.code()]).inc();
            self.metrics.count(stage, "dead_letter", 1);
            match self.retry(|| self.publisher.dead_letter(&self.outputs.dead_letter, ev, stage, reason, detail)) {
                Sent::Queued(f) => self.pending.push(f),
                Sent::Refused(e) => self.refused_dead_letter(&e)?,
                Sent::Stopped => return None,
            }
        }
        Some(Completed {
            seq: batch.seq,
            offsets: max_offsets(&batch.events),
            deliveries: std::mem::take(&mut self.pending),
            received: batch.events.iter().map(|e| e.received_at).collect(),
            timestamps: Vec::new(),
            checked: None,
        })
    }

    /// Decodes, scores, decides and sends one batch. None only if aborted mid-way or the
    /// pipeline must stop (a refused output under `on_refused = "stop"`, a fatal producer error).
    pub fn process(&mut self, batch: &Batch) -> Option<Completed> {
        if self.fault == Some(crate::fault::Fault::Panic) {
            panic!("injected fault: panic while processing batch {}", batch.seq);
        }
        if let Some(q) = &self.queued {
            q.take(batch.seq);
        }
        self.swap_model(batch.model_generation);
        let m = self.metrics.clone();
        // One rules version for the whole batch.
        let live = batch.rules_as::<crate::rules::LiveRules>().unwrap_or_else(|| self.rules.current());
        if !self.rules_seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &live.set)) {
            self.decoder.set_rule_paths(live.set.event_paths());
            self.rules_seen = Some(live.set.clone());
        }
        self.fired.clear();
        self.fired.resize(live.set.rules.len(), 0);

        let t = Instant::now();
        let mut outcomes = Vec::with_capacity(batch.events.len());
        self.rows.clear();
        {
            let mut dec = self.decoder.batch();
            for ev in &batch.events {
                let start = self.rows.len();
                match dec.decode(ev.payload.payload.as_deref(), self.rows.push()) {
                    Ok(d) => outcomes.push(Outcome::Decided(d)),
                    Err(e) => {
                        self.rows.truncate(start);
                        outcomes.push(Outcome::Dead(e));
                    }
                }
            }
        }
        m.stage_seconds.with_label_values(&["decode"]).observe(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let (degraded, defaults) = self.enrich(batch, &outcomes)?;
        if self.enricher.is_some() {
            m.stage_seconds.with_label_values(&["enrich"]).observe(t.elapsed().as_secs_f64());
        }

        // Deadline: only events that can be scored and still be acknowledged within their
        // budget are scored; the rest are decided without the model.
        self.late.clear();
        let mut checked = None;
        if self.deadline_ms > 0 {
            let now = wall_clock_ms();
            let ages =
                batch.events.iter().zip(&outcomes).filter(|(_, o)| matches!(o, Outcome::Decided(_))).map(|(ev, _)| {
                    ev.timestamp_ms.map_or_else(|| ev.received_at.elapsed().as_millis() as i64, |ts| now - ts)
                });
            let (deadline, reserve) = (self.deadline_ms as f64, m.deadline_reserve.get() * 1e3);
            let slack: Vec<f64> = ages.map(|age| deadline - age as f64 - reserve).collect();
            // The oldest event queued behind this batch waits for its scoring too.
            let behind =
                self.queued.as_ref().and_then(|q| q.oldest_ms()).map(|t| deadline - (now - t) as f64 - reserve);
            self.late = admit(&slack, behind, |k| self.cost.predict_us(k) / 1e3);
            let admitted = self.late.iter().filter(|&&l| !l).count();
            checked = Some((Instant::now(), Duration::from_secs_f64(self.cost.predict_us(admitted) / 1e6)));
        }
        let any_late = self.late.iter().any(|&l| l);

        let t = Instant::now();
        self.scores.clear();
        let scored_rows = if any_late { self.late.iter().filter(|&&l| !l).count() } else { self.rows.len() };
        let mut backoff = Duration::from_millis(100);
        if any_late {
            self.live_rows.clear();
            for (k, late) in self.late.iter().enumerate() {
                if !late {
                    self.live_rows.push_copy(&self.rows, k);
                }
            }
        }
        let mut attempts = 0;
        let injected_score_error = self.fault == Some(crate::fault::Fault::ScoreError);
        loop {
            let (rows, out) =
                if any_late { (&self.live_rows, &mut self.live_scores) } else { (&self.rows, &mut self.scores) };
            out.clear();
            let result = if injected_score_error {
                Err(crate::score::ScoreError::Inference("injected fault: scoring failed".into()))
            } else {
                self.scorer.score(rows, out)
            };
            let Err(e) = result else { break };
            if self.control.aborted() {
                return None;
            }
            // An inference error may be transient (a device busy or out of memory for a
            // moment); one that persists through the retries is this batch's: dead-lettered,
            // so it cannot hold up every batch behind it.
            attempts += 1;
            if e.policy() != Policy::Retry || attempts >= SCORE_ATTEMPTS {
                tracing::error!(error = %e, attempts, events = batch.events.len(), "scoring failed; the batch goes to the dead-letter topic");
                return self.dead_letter_rest(batch, "score", &format!("scoring failed: {e}"));
            }
            tracing::error!(error = %e, attempts, "scoring failed; retrying batch");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        if any_late {
            let mut live = self.live_scores.iter();
            self.scores.clear();
            self.scores.extend(self.late.iter().map(|&l| {
                if l {
                    f32::NAN
                } else {
                    *live.next().expect("a score per live row")
                }
            }));
        }
        m.stage_seconds.with_label_values(&["score"]).observe(t.elapsed().as_secs_f64());
        self.cost.observe(scored_rows, t.elapsed().as_secs_f64() * 1e6);
        if let Some(b) = &self.budget {
            b.observe(self.scores.len(), t.elapsed());
            m.batch_limit.set(b.limit() as i64);
        }
        self.score_shadow(&outcomes);

        let t = Instant::now();
        self.pending.reserve(batch.events.len() + batch.events.len() / 8);
        let mut received = Vec::with_capacity(batch.events.len());
        let mut timestamps = Vec::with_capacity(batch.events.len());
        let mut counts = [0u64; 3];
        let mut dead = 0u64;
        let mut next_score = 0usize;
        let mut row_index = 0usize;
        let decided_at = wall_clock_ms();
        let n_decided = outcomes.iter().filter(|o| matches!(o, Outcome::Decided(_))).count();
        let n_enriched = self.enriched.len().checked_div(n_decided).unwrap_or(0);
        let mut rule_errors = 0u64;
        self.actions.clear();
        for (ev, outcome) in batch.events.iter().zip(&outcomes) {
            received.push(ev.received_at);
            match outcome {
                Outcome::Decided(d) => {
                    let score = self.scores[next_score];
                    next_score += 1;
                    let k = row_index;
                    row_index += 1;
                    let row = self.rows.values_row(k);
                    let defaults_used: Vec<&str> = defaults
                        .get(k)
                        .map(|d| d.iter().map(|&c| self.outputs.columns[c as usize].as_str()).collect())
                        .unwrap_or_default();
                    let features: (&[String], &[f32]) =
                        if self.outputs.include_features { (&self.outputs.columns, row) } else { (&[], &[]) };
                    let late = self.late.get(k).copied().unwrap_or(false);
                    let mut decision = if late { self.bands.fallback() } else { self.bands.decide(score) };
                    if late {
                        m.fallback_decisions.inc();
                    }
                    let enriched = self.enriched.get(k * n_enriched..(k + 1) * n_enriched).unwrap_or(&[]);
                    let scope = Scope { score: f64::from(score), fields: &d.fields, enriched, lists: &live.lists };
                    if !live.set.rules.is_empty() {
                        let out = &mut self.rules_out;
                        live.set.decide(decision.action, &scope, out, &mut self.fired);
                        decision.action = out.action;
                        if let Some(r) = out.reason.take() {
                            decision.reason = r;
                        }
                        decision.action_name = out.action_name.take();
                        decision.rule_hits = std::mem::take(&mut out.hits);
                        decision.rule_errors = out.errors;
                        rule_errors += u64::from(out.errors);
                    }
                    decision.rules_version = live.set.version.clone();
                    if decision.action == Action::Review {
                        decision.review_priority = Some(live.set.review_priority(&scope));
                    }
                    let shadow = match (&self.shadow, self.shadow_of.get(k).copied().flatten()) {
                        (Some(sh), Some(j)) if j < self.shadow_scores.len() => {
                            let s = self.shadow_scores[j];
                            let band = self.bands.decide(s).action;
                            let action = if live.set.rules.is_empty() {
                                band
                            } else {
                                // The decision took its hits already: the buffer is free to reuse.
                                let scope = Scope { score: f64::from(s), ..scope };
                                live.set.decide(band, &scope, &mut self.rules_out, &mut []);
                                self.rules_out.action
                            };
                            let agree = if action == decision.action { "true" } else { "false" };
                            m.shadow_decisions.with_label_values(&[agree]).inc();
                            Some(ShadowVerdict { model: &sh.name, version: &sh.version, score: s, action })
                        }
                        _ => None,
                    };
                    counts[decision.action as usize] += 1;
                    self.actions.push(decision.action);
                    if let (Some(s), false) = (&self.scored, decision.fallback) {
                        s.keep(&d.event_id, score, decision.action);
                    }
                    self.buf.clear();
                    let aggregates: (&[String], &[Option<f64>]) =
                        if self.outputs.include_features { (&self.outputs.aggregates, enriched) } else { (&[], &[]) };
                    let record = DecisionRecord {
                        event_id: &d.event_id,
                        entity_key: &d.entity_key,
                        decision: &decision,
                        model_name: &self.outputs.model_name,
                        model_version: &self.outputs.model_version,
                        event_time: d.event_time_ms,
                        decided_at,
                        latency_us: ev.received_at.elapsed().as_micros() as i64,
                        degraded,
                        source_topic: &ev.origin.topic,
                        source_partition: ev.origin.partition,
                        source_offset: ev.origin.offset,
                        defaults_used,
                        features,
                        aggregates,
                        shadow,
                    };
                    match self.outputs.format {
                        DecisionFormat::Avro => record.write_avro(self.outputs.schema_id, &mut self.buf),
                        DecisionFormat::Json => record.write_json(&mut self.buf),
                    }
                    let key = d.entity_key.as_bytes();
                    let headers = || decision_headers_with(&d.event_id, &self.outputs.model_version, None);
                    let mut refused = false;
                    match self.send(&self.outputs.decisions, key, headers) {
                        Sent::Queued(f) => self.pending.push(f),
                        Sent::Refused(e) => {
                            self.refused_output(ev, &e)?;
                            refused = true;
                        }
                        Sent::Stopped => return None,
                    }
                    if decision.action == Action::Review && !refused {
                        let headers = || {
                            decision_headers_with(&d.event_id, &self.outputs.model_version, decision.review_priority)
                        };
                        match self.send(&self.outputs.review, key, headers) {
                            Sent::Queued(f) => self.pending.push(f),
                            Sent::Refused(e) => self.refused_output(ev, &e)?,
                            Sent::Stopped => return None,
                        }
                    }
                    if let Some(ts) = ev.timestamp_ms {
                        timestamps.push(ts);
                    }
                }
                Outcome::Dead(e) => {
                    dead += 1;
                    m.dead_letters.with_label_values(&[e.reason.code()]).inc();
                    match self.send_dead_letter(ev, e) {
                        Sent::Queued(f) => self.pending.push(f),
                        Sent::Refused(e) => self.refused_dead_letter(&e)?,
                        Sent::Stopped => return None,
                    }
                }
            }
            self.produced += 1;
        }
        m.stage_seconds.with_label_values(&["publish"]).observe(t.elapsed().as_secs_f64());
        m.count("decode", "ok", (outcomes.len() as u64) - dead);
        m.count("decode", "dead_letter", dead);
        for a in [Action::Approve, Action::Review, Action::Decline] {
            m.count("decide", a.label(), counts[a as usize]);
        }
        for (r, &n) in live.set.rules.iter().zip(&self.fired) {
            if n > 0 {
                let mode = if r.mode == RuleMode::Enforce { "enforce" } else { "monitor" };
                m.rule_hits.with_label_values(&[&*r.id, mode]).inc_by(n);
            }
        }
        m.rule_errors.inc_by(rule_errors);
        if let Some(d) = &self.drift {
            let t = Instant::now();
            let dead: Vec<&str> = outcomes
                .iter()
                .filter_map(|o| match o {
                    Outcome::Dead(e) => Some(e.reason.code()),
                    Outcome::Decided(_) => None,
                })
                .collect();
            d.observe(self.rows.values(), self.rows.width(), &self.scores, &self.actions, &dead);
            m.stage_seconds.with_label_values(&["drift"]).observe(t.elapsed().as_secs_f64());
        }
        Some(Completed {
            seq: batch.seq,
            offsets: max_offsets(&batch.events),
            deliveries: std::mem::take(&mut self.pending),
            received,
            timestamps,
            checked,
        })
    }

    /// Runs the enrich stage for the decoded events (in batch order across workers) and
    /// fills their enriched columns. Returns whether the batch is degraded and, per
    /// decoded row, the columns that took defaults. None if aborted.
    fn enrich(&mut self, batch: &Batch, outcomes: &[Outcome]) -> Option<(bool, Vec<Vec<u16>>)> {
        let Some((turnstile, policy)) = self.enricher.clone() else { return Some((false, Vec::new())) };
        let mut fence_keys: Vec<(&Origin, String)> = Vec::new();
        for ev in &batch.events {
            if !fence_keys.iter().any(|(o, _)| o.partition == ev.origin.partition && o.topic == ev.origin.topic) {
                fence_keys.push((&ev.origin, format!("{}/{}", ev.origin.topic, ev.origin.partition)));
            }
        }
        let reqs: Vec<Request<'_>> = batch
            .events
            .iter()
            .zip(outcomes)
            .filter_map(|(ev, o)| match o {
                Outcome::Decided(d) => Some(Request {
                    fence_key: &fence_keys
                        .iter()
                        .find(|(o, _)| o.partition == ev.origin.partition && o.topic == ev.origin.topic)
                        .expect("fence key for every partition")
                        .1,
                    offset: ev.origin.offset,
                    time_ms: d.event_time_ms,
                    entities: &d.entities,
                }),
                Outcome::Dead(_) => None,
            })
            .collect();
        let m = self.metrics.clone();
        let abort = self.control.abort_token();
        let out = &mut self.enriched;
        let degraded = turnstile.run(batch.seq, abort, |enricher| {
            let mut backoff = Duration::from_millis(100);
            loop {
                match enricher.enrich(&reqs, out) {
                    Ok(stats) => {
                        if m.state_store_up.get() == 0 {
                            tracing::info!("state store reachable again");
                        }
                        m.state_store_up.set(1);
                        m.enrich_round_trips.inc_by(stats.round_trips);
                        m.enrich_commands.inc_by(stats.commands);
                        for (result, n) in [("hit", stats.cache_hits), ("miss", stats.cache_misses)] {
                            if n > 0 {
                                m.feature_cache.with_label_values(&[result]).inc_by(n);
                            }
                        }
                        for (result, n) in [
                            ("written", stats.state_written),
                            ("conflict", stats.state_conflicts),
                            ("miss", stats.state_misses),
                        ] {
                            if n > 0 {
                                m.window_state_cache.with_label_values(&[result]).inc_by(n);
                            }
                        }
                        for (result, n) in
                            [("applied", stats.applied), ("replayed", stats.replayed), ("late", stats.late)]
                        {
                            if n > 0 {
                                m.window_updates.with_label_values(&[result]).inc_by(n);
                            }
                        }
                        return Some(false);
                    }
                    Err(e) => {
                        m.enrich_failures.inc();
                        if m.state_store_up.get() == 1 {
                            tracing::warn!(error = %e, ?policy, "state store unavailable");
                        }
                        m.state_store_up.set(0);
                        match policy {
                            FailurePolicy::Degraded => {
                                out.clear();
                                out.resize(reqs.len() * enricher.names().len(), None);
                                m.degraded_events.inc_by(reqs.len() as u64);
                                return Some(true);
                            }
                            FailurePolicy::Pause => {
                                if abort.is_cancelled() {
                                    return None;
                                }
                                std::thread::sleep(backoff);
                                backoff = (backoff * 2).min(Duration::from_secs(2));
                            }
                        }
                    }
                }
            }
        })??;
        let names = self.enriched.len() / reqs.len().max(1);
        let mut defaults = vec![Vec::new(); reqs.len()];
        for (k, d) in defaults.iter_mut().enumerate() {
            let values = &self.enriched[k * names..(k + 1) * names];
            self.vectorizer.fill_enriched(values, self.rows.row_mut(k).values, d);
            m.feature_defaults.inc_by(d.len() as u64);
        }
        Some((degraded, defaults))
    }

    /// Queues the encoded record in `self.buf`, retrying transient refusals.
    fn send(&self, topic: &str, key: &[u8], headers: impl Fn() -> rdkafka::message::OwnedHeaders) -> Sent {
        self.retry(|| self.publisher.send(topic, Some(key), &self.buf, Some(headers())))
    }

    fn send_dead_letter(&self, ev: &Envelope<RawMessage>, e: &DecodeError) -> Sent {
        self.retry(|| self.publisher.dead_letter(&self.outputs.dead_letter, ev, "decode", e.reason, &e.detail))
    }

    /// Retries transient errors with a bounded backoff (counted, logged at most every 10 s);
    /// hands back refusals; stops on abort or a fatal producer error.
    fn retry(&self, mut f: impl FnMut() -> Result<rdkafka::producer::DeliveryFuture, PublishError>) -> Sent {
        let mut backoff = Duration::from_millis(50);
        loop {
            let e = match f() {
                Ok(v) => return Sent::Queued(v),
                Err(e) => e,
            };
            let errors = &self.metrics.guards.produce_errors;
            match e.class() {
                Class::Refused => return Sent::Refused(e),
                Class::Fatal => {
                    errors.with_label_values(&[&e.label(), "stopped"]).inc();
                    self.metrics.guards.fail(format!("producer failed for good: {e}"));
                    return Sent::Stopped;
                }
                Class::Retryable => {
                    if self.control.aborted() {
                        return Sent::Stopped;
                    }
                    errors.with_label_values(&[&e.label(), "retried"]).inc();
                    if self.log.admit(Level::WARN, "produce refused; retrying") {
                        tracing::warn!(error = %e, "produce refused; retrying");
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// A decision or review record for `ev` was refused for good: `publish.on_refused`
    /// decides. None if the pipeline must stop.
    fn refused_output(&mut self, ev: &Envelope<RawMessage>, e: &PublishError) -> Option<()> {
        let label = e.label();
        let errors = &self.metrics.guards.produce_errors;
        match self.on_refused {
            RefusedPolicy::Stop => {
                errors.with_label_values(&[&label, "stopped"]).inc();
                self.metrics.guards.fail(format!("{e} (publish.on_refused = \"stop\")"));
                None
            }
            RefusedPolicy::Skip => {
                errors.with_label_values(&[&label, "skipped"]).inc();
                if self.log.admit(Level::ERROR, "output refused for good; skipped") {
                    tracing::error!(error = %e, "output refused for good; skipped");
                }
                Some(())
            }
            RefusedPolicy::DeadLetter => {
                errors.with_label_values(&[&label, "dead_lettered"]).inc();
                let reason = DeadLetterReason::OutputRefused;
                self.metrics.dead_letters.with_label_values(&[reason.code()]).inc();
                if self.log.admit(Level::WARN, "output refused for good; event sent to the dead-letter topic") {
                    tracing::warn!(error = %e, "output refused for good; event sent to the dead-letter topic");
                }
                let detail = e.to_string();
                match self
                    .retry(|| self.publisher.dead_letter(&self.outputs.dead_letter, ev, "publish", reason, &detail))
                {
                    Sent::Queued(f) => {
                        self.pending.push(f);
                        Some(())
                    }
                    Sent::Refused(e) => self.refused_dead_letter(&e),
                    Sent::Stopped => None,
                }
            }
        }
    }

    /// A dead-letter record was refused for good (the topic is missing or not writable):
    /// skipped and counted, unless `on_refused = "stop"`. None if the pipeline must stop.
    fn refused_dead_letter(&self, e: &PublishError) -> Option<()> {
        let errors = &self.metrics.guards.produce_errors;
        if self.on_refused == RefusedPolicy::Stop {
            errors.with_label_values(&[&e.label(), "stopped"]).inc();
            self.metrics.guards.fail(format!("dead-letter record refused: {e} (publish.on_refused = \"stop\")"));
            return None;
        }
        errors.with_label_values(&[&e.label(), "skipped"]).inc();
        if self.log.admit(Level::ERROR, "dead-letter record refused for good; skipped") {
            tracing::error!(error = %e, "dead-letter record refused for good; skipped");
        }
        Some(())
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

/// Which events to decide without the model (`true`), given each one's slack (ms left of
/// its deadline after the reserve for publishing) and the time (ms) scoring k rows takes:
/// the most events, freshest first, such that scoring all of them together still ends within
/// the slack of every event of the batch that can still make its deadline (a batch is
/// published as a whole, so its unscored events wait for the scored ones too), and within
/// `behind`, the slack of the oldest event queued behind the batch, if it can still make it.
pub fn admit(slack: &[f64], behind: Option<f64>, scoring_ms: impl Fn(usize) -> f64) -> Vec<bool> {
    let mut order: Vec<usize> = (0..slack.len()).collect();
    order.sort_by(|&a, &b| slack[b].total_cmp(&slack[a]));
    let tightest = slack.iter().copied().chain(behind).filter(|&s| s >= 0.0).fold(f64::INFINITY, f64::min);
    let admitted = order
        .iter()
        .enumerate()
        .take_while(|&(i, &k)| {
            let scoring = scoring_ms(i + 1);
            slack[k] >= scoring && tightest >= scoring
        })
        .count();
    let mut late = vec![true; slack.len()];
    for &k in &order[..admitted] {
        late[k] = false;
    }
    late
}

/// Highest offset per (topic, partition) among `events`.
pub fn max_offsets(events: &[Envelope<RawMessage>]) -> Vec<Origin> {
    let mut out: Vec<Origin> = Vec::new();
    for e in events {
        match out.iter_mut().find(|o| o.partition == e.origin.partition && o.topic == e.origin.topic) {
            Some(o) => o.offset = o.offset.max(e.origin.offset),
            None => out.push(e.origin.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::admit;

    #[test]
    fn the_deadline_admits_the_most_events_whose_slack_covers_scoring_them_all() {
        let per_row = |k: usize| k as f64; // 1 ms per row
                                           // Slacks (ms): 10, -5 (already past), 2.5, 3, 4.
        let late = admit(&[10.0, -5.0, 2.5, 3.0, 4.0], None, per_row);
        // Freshest first: 10 ≥ 1, 4 ≥ 2, but the batch's tightest in-time event (2.5 ms)
        // cannot wait for 3 rows: two rows are scored. The event already past does not count.
        assert_eq!(late, [false, true, true, true, false]);
        // An event about to expire keeps the whole batch from waiting for the model.
        assert_eq!(admit(&[10.0, 9.0, 0.5], None, per_row), [true, true, true]);
        // Free scoring admits everything that is not past its deadline.
        assert_eq!(admit(&[10.0, -5.0, 2.5, 3.0, 4.0], None, |_| 0.0), [false, true, false, false, false]);
        assert_eq!(admit(&[], None, per_row), Vec::<bool>::new());
        // A cost per call: 6 ms for the call plus 0.5 ms per row. One row needs 6.5 ms.
        let per_call = |k: usize| 6.0 + 0.5 * k as f64;
        assert_eq!(admit(&[9.0, 8.0, 7.0, 20.0], None, per_call), [false, true, true, false]);
        assert_eq!(admit(&[6.0, 20.0], None, per_call), [true, true]);
        // A queued event with 6.8 ms left: this batch's scoring leaves it time.
        assert_eq!(admit(&[30.0, 20.0], Some(6.8), per_call), [false, true]);
        assert_eq!(admit(&[30.0, 20.0], Some(-1.0), per_call), [false, false]);
    }
}
