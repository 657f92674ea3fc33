//! Offline tools over a file of events (JSON lines, or an Avro object container file). They
//! run the service's own stage objects (decode, enrich with in-process windows in file
//! order, score, decide; see [`crate::stage`]) with the file as the source of batches and a
//! sink that prints JSON lines instead of the publish stage:
//!
//! - `verdict vectorize`: the rows (and scores) the service would feed the model, so a data
//!   scientist can diff them against their training code;
//! - `verdict check-rules --events`: the decisions a rules file makes and the rules that fire.
//!
//! Each event is a batch of its own: the model scores one row per call, as the parity
//! references do (a dynamically quantized model's scores depend on the batch).

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::decode::stage::{Decode, Fill};
use crate::decode::{DecodeError, DecodedEvent, Decoder, LocalSchemas, Rows, Vectorizer};
use crate::enrich::stage::Enrich;
use crate::enrich::stage::EnrichParts;
use crate::enrich::{Backend, EnrichError, EnrichSetup, Enricher, FailurePolicy};
use crate::envelope::{Batch, Envelope, Origin, RawMessage};
use crate::rules::stage::Decide;
use crate::rules::{LiveRules, RuleSet, ThresholdBands};
use crate::score::stage::Score;
use crate::score::{init_runtime, ModelSpec, OnnxScorer, ScoreError};
use crate::stage::{Abort, Outcome, Stage, StageFailure, StagedBatch};
use crate::telemetry::Metrics;

/// Why an offline tool could not run.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// Reading the events or writing the output failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Model, manifest or runtime problem.
    #[error(transparent)]
    Score(#[from] ScoreError),
    /// The enrich stage could not start.
    #[error(transparent)]
    Enrich(#[from] EnrichError),
    /// The model's columns do not match the configuration.
    #[error("{0}")]
    Columns(#[from] crate::decode::ColumnErrors),
    /// The configured Avro schemas could not be loaded.
    #[error("{0}")]
    Schemas(#[from] crate::decode::SchemaErrors),
    /// The Avro container file could not be read or re-encoded.
    #[error("{0}")]
    Events(String),
    /// A stage failed on an event.
    #[error("{0}")]
    Stage(#[from] StageFailure),
}

/// The service's stages (decode, enrich in memory, optionally score and decide) over
/// events fed one at a time.
pub struct Offline {
    decode: Decode,
    enrich: Enrich,
    fill: Fill,
    score: Option<Score>,
    decide: Option<Decide>,
    vectorizer: Vectorizer,
    enriched_names: Vec<String>,
    /// What rules can read besides event fields (enrichment names, then class scores).
    rule_names: Vec<String>,
    staged: StagedBatch,
    rules: Arc<LiveRules>,
    topic: Arc<str>,
    /// Sequence number of the next batch (the enrich turnstile takes them in order).
    seq: u64,
    /// The model row of the last event (one row).
    pub row: Rows,
    /// Enrichment values of the last event, in [`Offline::enriched_names`] order.
    pub values: Vec<Option<f64>>,
}

impl Offline {
    /// From config; with `score`, loads ONNX Runtime and the model.
    pub fn new(cfg: &Config, score: bool) -> Result<Self, OfflineError> {
        Self::with_schema(cfg, score, None)
    }

    /// As [`Offline::new`], with one more Avro writer schema under `extra.0` (an Avro
    /// container file's own schema).
    pub fn with_schema(
        cfg: &Config,
        score: bool,
        extra: Option<(u32, apache_avro::Schema)>,
    ) -> Result<Self, OfflineError> {
        let spec = ModelSpec::from_config(&cfg.model)?;
        let mut enrich_cfg = cfg.enrich.clone();
        if enrich_cfg.backend == Backend::Redis {
            // Offline: the same window semantics, in process; online features come out missing.
            enrich_cfg.backend = Backend::Memory;
        }
        let enricher = Enricher::new(&enrich_cfg)?;
        let enriched_names = enricher.names().to_vec();
        let rule_names = crate::rules::readable_names(&enriched_names, &spec.manifest.classes);
        let vectorizer = Vectorizer::new(&spec.manifest, enricher.names()).map_err(OfflineError::Columns)?;
        let mut schemas = LocalSchemas::load(&cfg.decode.avro_schemas).map_err(OfflineError::Schemas)?;
        if let Some((id, schema)) = extra {
            schemas.insert(id, schema);
        }
        let decoder = Decoder::new(&cfg.decode, Arc::new(schemas), vectorizer.clone(), enricher.paths());
        let metrics = Metrics::new();
        let abort = Abort::default();
        let rows = decoder.rows();
        let score = match score {
            true => {
                let scorer = OnnxScorer::load(&spec, init_runtime(cfg.model.ort_library.as_deref())?)?.0;
                Some(Score::new(scorer, rows.clone(), metrics.clone(), abort.clone()))
            }
            false => None,
        };
        let setup = EnrichSetup::new(&enrich_cfg, &cfg.redis, enricher, &metrics)?;
        let parts = match &setup {
            Some(s) => s.worker_parts()?,
            None => EnrichParts { features: None, owned: None, shared: None, width: 0 },
        };
        let empty = RuleSet::empty();
        Ok(Self {
            decode: Decode::new(decoder, metrics.clone()),
            enrich: Enrich::new(parts, FailurePolicy::Pause, metrics.clone(), abort),
            fill: Fill::new(vectorizer.clone(), metrics.clone()),
            score,
            decide: None,
            vectorizer,
            enriched_names,
            rule_names,
            staged: StagedBatch::new(rows.clone()),
            rules: Arc::new(LiveRules { lists: empty.initial_lists.clone(), set: Arc::new(empty) }),
            topic: Arc::from("offline"),
            seq: 0,
            row: rows,
            values: Vec::new(),
        })
    }

    /// Enrichment names (`window:…`, `feature:…`).
    pub fn enriched_names(&self) -> &[String] {
        &self.enriched_names
    }

    /// Decides every event with `rules` (after scoring it) and the score bands of `cfg`.
    fn decide_with(&mut self, cfg: &Config, rules: LiveRules) {
        self.rules = Arc::new(rules);
        self.decide = Some(Decide::new(ThresholdBands::new(&cfg.decide), Metrics::new()));
    }

    /// Runs the event on line `n` through decode and enrich only: it joins its entities'
    /// windows, and nothing is scored (a warm-up, so later events see full windows).
    pub fn warm(&mut self, n: usize, line: &[u8]) -> Result<(), OfflineError> {
        Ok(self.feed_through(n, line.to_vec(), false)?)
    }

    /// Runs the event on line `n` through the stages; what they made is in `self.staged`.
    fn feed(&mut self, n: usize, payload: Vec<u8>) -> Result<(), StageFailure> {
        self.feed_through(n, payload, true)
    }

    /// As [`Offline::feed`]; without `all`, decode and enrich only.
    fn feed_through(&mut self, n: usize, payload: Vec<u8>, all: bool) -> Result<(), StageFailure> {
        let mut events = std::mem::take(&mut self.staged.batch.events);
        events.clear();
        events.push(Envelope {
            origin: Origin { topic: self.topic.clone(), partition: 0, offset: n as i64 },
            received_at: Instant::now(),
            timestamp_ms: None,
            payload: RawMessage { key: None, payload: Some(payload), headers: Vec::new() },
        });
        let seq = self.seq;
        self.seq += 1;
        self.staged.start(Batch {
            seq,
            events,
            rules: Some(self.rules.clone()),
            model_generation: 0,
            turns: Vec::new(),
        });
        self.staged.set_rule_paths(self.rules.set.event_paths());
        let stages: [Option<&mut dyn Stage>; 5] = [
            Some(&mut self.decode),
            Some(&mut self.enrich),
            all.then_some(&mut self.fill as &mut dyn Stage),
            self.score.as_mut().filter(|_| all).map(|s| s as &mut dyn Stage),
            self.decide.as_mut().filter(|_| all).map(|d| d as &mut dyn Stage),
        ];
        for stage in stages.into_iter().flatten() {
            stage.run(&mut self.staged)?;
        }
        Ok(())
    }

    /// Processes the event on line `n`: its row and values land in `self.row` / `self.values`.
    /// Returns the decoded event and its score (if scoring).
    pub fn next(
        &mut self,
        n: usize,
        line: &[u8],
    ) -> Result<Result<(DecodedEvent, Option<f32>), DecodeError>, OfflineError> {
        self.feed(n, line.to_vec())?;
        let b = &mut self.staged;
        let score = b.scores.first().copied();
        std::mem::swap(&mut self.row, &mut b.rows);
        std::mem::swap(&mut self.values, &mut b.enriched);
        match b.outcomes.pop().expect("one outcome per event") {
            Outcome::Decided(d) => Ok(Ok((d, score))),
            Outcome::Dead(e) => Ok(Err(e)),
        }
    }
}

/// Schema id under which an Avro container file's records are decoded (Confluent frames).
const CONTAINER_SCHEMA_ID: u32 = u32::MAX;

/// The events of a file, as the payload bytes verdict would consume: each non-blank line of
/// a JSON-lines file, or each record of an Avro object container file re-encoded as a
/// Confluent frame of the file's schema (so it takes the service's Avro decode path).
/// Returns (record number from 0, payload) pairs and, for a container, its schema.
#[allow(clippy::type_complexity)]
pub fn payloads(events: &Path) -> Result<(Vec<(usize, Vec<u8>)>, Option<apache_avro::Schema>), OfflineError> {
    let mut file = std::io::BufReader::new(std::fs::File::open(events)?);
    if file.fill_buf()?.starts_with(b"Obj\x01") {
        let bad = |e: &dyn std::fmt::Display| OfflineError::Events(format!("{}: {e}", events.display()));
        let reader = apache_avro::Reader::new(file).map_err(|e| bad(&e))?;
        let schema = reader.writer_schema().clone();
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema).build().map_err(|e| bad(&e))?;
        let mut out = Vec::new();
        for (n, v) in reader.enumerate() {
            let v = v.map_err(|e| OfflineError::Events(format!("{}: record {}: {e}", events.display(), n + 1)))?;
            let datum = writer.write_value_to_vec(v).map_err(|e| bad(&e))?;
            out.push((n, crate::demo::confluent_frame(CONTAINER_SCHEMA_ID, &datum)));
        }
        return Ok((out, Some(schema)));
    }
    let mut out = Vec::new();
    for (n, line) in file.lines().enumerate() {
        let line = line?;
        if !line.trim().is_empty() {
            out.push((n, line.into_bytes()));
        }
    }
    Ok((out, None))
}

/// An [`Offline`] for `events`' payloads (Avro container: its schema registered, Avro decoding).
fn offline_for(cfg: &Config, score: bool, schema: Option<apache_avro::Schema>) -> Result<Offline, OfflineError> {
    match schema {
        Some(s) => {
            let mut cfg = cfg.clone();
            cfg.decode.format = crate::config::PayloadFormat::Avro;
            Offline::with_schema(&cfg, score, Some((CONTAINER_SCHEMA_ID, s)))
        }
        None => Offline::new(cfg, score),
    }
}

/// Reads the events in `events` (JSON lines or an Avro container file), writes one JSON
/// object per event to `out`: `{"line", "event_id", "row": [..] (null = NaN), "score"?,
/// "classes"?}` (a multi-output model's class scores, in its class order) or
/// `{"line", "error", "reason"}` (`line` counts records in a container file).
pub fn run(cfg: &Config, events: &Path, score: bool, out: &mut dyn Write) -> Result<(), OfflineError> {
    let (payloads, schema) = payloads(events)?;
    let mut off = offline_for(cfg, score, schema)?;
    for (n, payload) in payloads {
        off.feed(n, payload)?;
        let b = &off.staged;
        let obj = match &b.outcomes[0] {
            Outcome::Dead(e) => serde_json::json!({"line": n + 1, "error": e.detail, "reason": e.reason.code()}),
            Outcome::Decided(d) => {
                let mut obj = serde_json::json!({
                    "line": n + 1,
                    "event_id": d.event_id,
                    "row": b.rows.row_json(off.vectorizer.lanes(), 0),
                });
                if let Some(&s) = b.scores.first() {
                    obj["score"] = serde_json::json!(s);
                }
                if !b.classes.is_empty() {
                    obj["classes"] = serde_json::json!(b.class_row(0));
                }
                obj
            }
        };
        writeln!(out, "{obj}")?;
    }
    out.flush()?;
    Ok(())
}

/// `verdict check-rules`: validates `rules` (every problem listed, Err if any) and, given
/// `events`, prints one JSON object per event with its decision and the rules that fired,
/// then a summary of actions and hits per rule.
pub fn check_rules(
    cfg: &Config,
    rules: &Path,
    events: Option<&Path>,
    out: &mut dyn Write,
) -> Result<bool, OfflineError> {
    let (payloads, schema) = match events {
        Some(e) => payloads(e)?,
        None => (Vec::new(), None),
    };
    let mut off = offline_for(cfg, events.is_some(), schema)?;
    let set = match RuleSet::load(rules, &off.rule_names, &cfg.decide.actions()) {
        Ok(s) => s,
        Err(errors) => {
            writeln!(out, "{} problem(s) in {}:", errors.len(), rules.display())?;
            for e in errors {
                writeln!(out, "  - {e}")?;
            }
            return Ok(false);
        }
    };
    writeln!(
        out,
        "rules OK: version {}, {} rule(s), lists {:?}, event fields read {:?}",
        set.version,
        set.rules.len(),
        set.names.lists,
        set.event_paths()
    )?;
    if events.is_none() {
        return Ok(true);
    }
    let mut lists = set.initial_lists.clone();
    // The same Redis the service reads lists from: `rules.redis_url`, else `enrich.redis_url`.
    let url = if cfg.rules.redis_url.is_empty() { &cfg.enrich.redis_url } else { &cfg.rules.redis_url };
    for (i, (name, spec)) in set.list_specs.iter().enumerate() {
        if spec.redis_set.is_some() {
            match crate::rules::live::fetch_list_on(spec, url, &cfg.redis, cfg.enrich.redis_cluster) {
                Ok(Some(l)) => lists[i] = Arc::new(l),
                _ => writeln!(out, "note: list '{name}' (Redis set) unreachable; treated as empty")?,
            }
        }
    }
    let set = Arc::new(set);
    off.decide_with(cfg, LiveRules { set: set.clone(), lists });
    let bands = ThresholdBands::new(&cfg.decide);
    let mut fired = vec![0u64; set.rules.len()];
    let mut actions = std::collections::BTreeMap::<String, u64>::new();
    for (n, payload) in payloads {
        off.feed(n, payload)?;
        let b = &off.staged;
        let d = match &b.outcomes[0] {
            Outcome::Decided(d) => d,
            Outcome::Dead(e) => {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"line": n + 1, "dead_letter": e.reason.code(), "error": e.detail})
                )?;
                *actions.entry("dead_letter".into()).or_default() += 1;
                continue;
            }
        };
        let score = b.scores.first().copied().unwrap_or(0.0);
        let decision = &b.decisions[0];
        for (f, n) in fired.iter_mut().zip(off.decide.as_ref().map_or(&[][..], Decide::fired)) {
            *f += n;
        }
        let action = decision.action_name.as_deref().unwrap_or(decision.action.label()).to_string();
        *actions.entry(action.clone()).or_default() += 1;
        let mut obj = serde_json::json!({
            "line": n + 1,
            "event_id": d.event_id,
            "score": score,
            "band": bands.decide(score).action.label(),
            "action": action,
            "reason": &*decision.reason,
            "rules_fired": decision.rule_hits,
        });
        if decision.rule_errors > 0 {
            obj["rule_errors"] = serde_json::json!(decision.rule_errors);
        }
        if let Some(p) = decision.review_priority {
            obj["review_priority"] = serde_json::json!(p);
        }
        writeln!(out, "{obj}")?;
    }
    writeln!(out, "summary: actions {actions:?}")?;
    for (r, n) in set.rules.iter().zip(&fired) {
        writeln!(out, "summary: rule {} ({:?}) fired {n} time(s)", r.id, r.mode)?;
    }
    out.flush()?;
    Ok(true)
}
