//! Offline tools over a file of events (JSON lines, or an Avro object container file), with
//! the service's own decode, window (in process, file order) and scoring code:
//!
//! - `verdict vectorize`: the rows (and scores) the service would feed the model, so a data
//!   scientist can diff them against their training code;
//! - `verdict check-rules --events`: the decisions a rules file makes and the rules that fire.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::decode::{DecodeError, DecodedEvent, Decoder, LocalSchemas, Rows, Vectorizer};
use crate::enrich::{Backend, Enricher, Request};
use crate::rules::expr::Scope;
use crate::rules::{RuleSet, RulesOutcome, ThresholdBands};
use crate::score::{init_runtime, ModelSpec, OnnxScorer};

/// Decodes, enriches (memory windows) and optionally scores events one at a time.
pub struct Offline {
    enricher: Enricher,
    vectorizer: Vectorizer,
    decoder: Decoder,
    scorer: Option<OnnxScorer>,
    /// The model row of the last event (one row).
    pub row: Rows,
    /// Enrichment values of the last event, in [`Offline::enriched_names`] order.
    pub values: Vec<Option<f64>>,
    scores: Vec<f32>,
    defaults: Vec<u16>,
}

impl Offline {
    /// From config; with `score`, loads ONNX Runtime and the model.
    pub fn new(cfg: &Config, score: bool) -> anyhow::Result<Self> {
        Self::with_schema(cfg, score, None)
    }

    /// As [`Offline::new`], with one more Avro writer schema under `extra.0` (an Avro
    /// container file's own schema).
    pub fn with_schema(cfg: &Config, score: bool, extra: Option<(u32, apache_avro::Schema)>) -> anyhow::Result<Self> {
        let spec = ModelSpec::from_config(&cfg.model)?;
        let mut enrich_cfg = cfg.enrich.clone();
        if enrich_cfg.backend == Backend::Redis {
            // Offline: the same window semantics, in process; online features come out missing.
            enrich_cfg.backend = Backend::Memory;
        }
        let enricher = Enricher::new(&enrich_cfg)?;
        let vectorizer = Vectorizer::new(&spec.manifest, enricher.names()).map_err(anyhow::Error::msg)?;
        let mut schemas = LocalSchemas::load(&cfg.decode.avro_schemas).map_err(anyhow::Error::msg)?;
        if let Some((id, schema)) = extra {
            schemas.insert(id, schema);
        }
        let decoder = Decoder::new(&cfg.decode, Arc::new(schemas), vectorizer.clone(), enricher.paths());
        let scorer = if score {
            Some(OnnxScorer::load(&spec, init_runtime(cfg.model.ort_library.as_deref())?)?.0)
        } else {
            None
        };
        let row = decoder.rows();
        Ok(Self {
            enricher,
            vectorizer,
            decoder,
            scorer,
            row,
            values: Vec::new(),
            scores: Vec::new(),
            defaults: Vec::new(),
        })
    }

    /// Enrichment names (`window:…`, `feature:…`).
    pub fn enriched_names(&self) -> &[String] {
        self.enricher.names()
    }

    /// Event paths to extract for rules.
    pub fn set_rule_paths(&mut self, paths: &[String]) {
        self.decoder.set_rule_paths(paths);
    }

    /// Processes the event on line `n`: its row and values land in `self.row` / `self.values`.
    /// Returns the decoded event and its score (if scoring).
    pub fn next(&mut self, n: usize, line: &[u8]) -> anyhow::Result<Result<(DecodedEvent, Option<f32>), DecodeError>> {
        self.row.clear();
        let d = match self.decoder.batch().decode(Some(line), self.row.push()) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        let req = Request { fence_key: "offline/0", offset: n as i64, time_ms: d.event_time_ms, entities: &d.entities };
        self.enricher.enrich(std::slice::from_ref(&req), &mut self.values)?;
        self.defaults.clear();
        self.vectorizer.fill_enriched(&self.values, self.row.row_mut(0).values, &mut self.defaults);
        let score = match self.scorer.as_mut() {
            Some(s) => {
                self.scores.clear();
                s.score(&self.row, &mut self.scores)?;
                Some(self.scores[0])
            }
            None => None,
        };
        Ok(Ok((d, score)))
    }
}

/// Schema id under which an Avro container file's records are decoded (Confluent frames).
const CONTAINER_SCHEMA_ID: u32 = u32::MAX;

/// The events of a file, as the payload bytes verdict would consume: each non-blank line of
/// a JSON-lines file, or each record of an Avro object container file re-encoded as a
/// Confluent frame of the file's schema (so it takes the service's Avro decode path).
/// Returns (record number from 0, payload) pairs and, for a container, its schema.
#[allow(clippy::type_complexity)]
pub fn payloads(events: &Path) -> anyhow::Result<(Vec<(usize, Vec<u8>)>, Option<apache_avro::Schema>)> {
    let mut file = std::io::BufReader::new(std::fs::File::open(events)?);
    if file.fill_buf()?.starts_with(b"Obj\x01") {
        let reader = apache_avro::Reader::new(file).map_err(|e| anyhow::anyhow!("{}: {e}", events.display()))?;
        let schema = reader.writer_schema().clone();
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema).build()?;
        let mut out = Vec::new();
        for (n, v) in reader.enumerate() {
            let v = v.map_err(|e| anyhow::anyhow!("{}: record {}: {e}", events.display(), n + 1))?;
            out.push((n, crate::demo::confluent_frame(CONTAINER_SCHEMA_ID, &writer.write_value_to_vec(v)?)));
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
fn offline_for(cfg: &Config, score: bool, schema: Option<apache_avro::Schema>) -> anyhow::Result<Offline> {
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
/// object per event to `out`: `{"line", "event_id", "row": [..] (null = NaN), "score"?}` or
/// `{"line", "error", "reason"}` (`line` counts records in a container file).
pub fn run(cfg: &Config, events: &Path, score: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let (payloads, schema) = payloads(events)?;
    let mut off = offline_for(cfg, score, schema)?;
    for (n, payload) in payloads {
        let (d, s) = match off.next(n, &payload)? {
            Ok(x) => x,
            Err(e) => {
                writeln!(out, "{}", serde_json::json!({"line": n + 1, "error": e.detail, "reason": e.reason.code()}))?;
                continue;
            }
        };
        let mut obj = serde_json::json!({
            "line": n + 1,
            "event_id": d.event_id,
            "row": off.row.row_json(off.vectorizer.lanes(), 0),
        });
        if let Some(s) = s {
            obj["score"] = serde_json::json!(s);
        }
        writeln!(out, "{obj}")?;
    }
    out.flush()?;
    Ok(())
}

/// `verdict check-rules`: validates `rules` (every problem listed, Err if any) and, given
/// `events`, prints one JSON object per event with its decision and the rules that fired,
/// then a summary of actions and hits per rule.
pub fn check_rules(cfg: &Config, rules: &Path, events: Option<&Path>, out: &mut dyn Write) -> anyhow::Result<bool> {
    let (payloads, schema) = match events {
        Some(e) => payloads(e)?,
        None => (Vec::new(), None),
    };
    let mut off = offline_for(cfg, events.is_some(), schema)?;
    let set = match RuleSet::load(rules, off.enriched_names()) {
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
    for (i, (name, spec)) in set.list_specs.iter().enumerate() {
        if spec.redis_set.is_some() {
            match crate::rules::live::fetch_list(spec, &cfg.enrich.redis_url) {
                Ok(Some(l)) => lists[i] = Arc::new(l),
                _ => writeln!(out, "note: list '{name}' (Redis set) unreachable; treated as empty")?,
            }
        }
    }
    off.set_rule_paths(set.event_paths());
    let bands = ThresholdBands::new(&cfg.decide);
    let mut outcome = RulesOutcome::default();
    let mut fired = vec![0u64; set.rules.len()];
    let mut actions = std::collections::BTreeMap::<String, u64>::new();
    for (n, payload) in payloads {
        let (d, score) = match off.next(n, &payload)? {
            Ok((d, s)) => (d, s.unwrap_or(0.0)),
            Err(e) => {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"line": n + 1, "dead_letter": e.reason.code(), "error": e.detail})
                )?;
                *actions.entry("dead_letter".into()).or_default() += 1;
                continue;
            }
        };
        let band = bands.decide(score);
        let scope = Scope { score: f64::from(score), fields: &d.fields, enriched: &off.values, lists: &lists };
        set.decide(band.action, &scope, &mut outcome, &mut fired);
        let action = outcome.action_name.as_deref().unwrap_or(outcome.action.label()).to_string();
        *actions.entry(action.clone()).or_default() += 1;
        let mut obj = serde_json::json!({
            "line": n + 1,
            "event_id": d.event_id,
            "score": score,
            "band": band.action.label(),
            "action": action,
            "reason": outcome.reason.as_deref().unwrap_or(&band.reason),
            "rules_fired": outcome.hits,
        });
        if outcome.errors > 0 {
            obj["rule_errors"] = serde_json::json!(outcome.errors);
        }
        if outcome.action == crate::rules::Action::Review {
            obj["review_priority"] = serde_json::json!(set.review_priority(&scope));
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
