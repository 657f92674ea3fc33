//! The one pass: each batch of events goes through the service's decode, enrich and fill
//! stages once (windows computed once, in file order), then through each side's score and
//! decide stages, and both sides' decisions are counted together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::input::{Input, Progress};
use super::metrics::{Accumulator, Seen};
use super::side::Side;
use super::{BacktestError, Options};
use crate::config::Config;
use crate::core::field::FieldValue;
use crate::decode::LocalSchemas;
use crate::enrich::stage::{Enrich, EnrichParts};
use crate::enrich::{Backend, EnrichSetup, Enricher, FailurePolicy};
use crate::envelope::{Batch, Envelope, Origin, RawMessage, Stamp};
use crate::stage::{Abort, Outcome, Stage, StagedBatch};
use crate::telemetry::Metrics;

/// Events per batch: large enough that per-batch costs (one ORT call per side) vanish.
/// The backtest refuses models whose scores depend on the batch (see `score::OnnxScorer`).
const BATCH: usize = 512;

/// Schema id under which an Avro container file's records are decoded.
const CONTAINER_SCHEMA_ID: u32 = u32::MAX;

/// What a run hands to the report.
pub struct Outcomes {
    /// The counts.
    pub acc: Accumulator,
    /// Baseline and candidate.
    pub sides: [Side; 2],
    /// Seconds the pass took.
    pub seconds: f64,
}

/// Runs the backtest over `opts.events`: `base` and `cand` are the two sides' configs.
pub fn run(opts: &Options, base: &Config, cand: &Config) -> Result<Outcomes, BacktestError> {
    let started = Instant::now();
    let mut input = Input::open(&opts.events)?;
    let (mut base, mut cand) = (base.clone(), cand.clone());
    if input.schema.is_some() {
        base.decode.format = crate::config::PayloadFormat::Avro;
        cand.decode.format = crate::config::PayloadFormat::Avro;
    }
    let mut enrich_cfg = base.enrich.clone();
    if enrich_cfg.backend == Backend::Redis {
        // Windows in process (the same semantics); online features come out missing.
        enrich_cfg.backend = Backend::Memory;
    }
    let enricher = Enricher::new(&enrich_cfg)?;
    let enriched = enricher.names().to_vec();
    let enrich_paths = enricher.paths();
    let mut schemas = LocalSchemas::load(&base.decode.avro_schemas).map_err(BacktestError::Schemas)?;
    if let Some(s) = input.schema.clone() {
        schemas.insert(CONTAINER_SCHEMA_ID, s);
    }
    let schemas = Arc::new(schemas);
    let mut b = Side::load(&base, opts.rules.as_deref(), &enriched, &schemas, enrich_paths.clone())?;
    let mut c = Side::load(&cand, opts.candidate_rules.as_deref(), &enriched, &schemas, enrich_paths)?;
    if c.columns == b.columns {
        // Same columns: the candidate scores the baseline's rows.
        c.decode = None;
    }
    // The fields the decoder extracts: the baseline's rule fields first (its slots), then the
    // candidate's, the value field and the label field.
    let mut union: Vec<String> = b.rule_paths().to_vec();
    let slot = |p: &str, union: &mut Vec<String>| match union.iter().position(|u| u == p) {
        Some(i) => i,
        None => {
            union.push(p.to_string());
            union.len() - 1
        }
    };
    let cand_slots: Vec<usize> = c.rule_paths().to_vec().iter().map(|p| slot(p, &mut union)).collect();
    if cand_slots.iter().enumerate().any(|(i, &s)| i != s) {
        c.field_map = Some(cand_slots);
    }
    let value_slot = slot(&opts.value_field, &mut union);
    let label_slot = opts.labels.is_none().then(|| slot(&opts.label_field, &mut union));
    let labels = opts.labels.as_deref().map(super::input::labels).transpose()?;

    let metrics = Metrics::new();
    let setup = EnrichSetup::new(&enrich_cfg, &base.redis, enricher, &metrics)?;
    let parts = match &setup {
        Some(s) => s.worker_parts()?,
        None => EnrichParts { features: None, owned: None, shared: None, width: 0 },
    };
    let mut enrich = Enrich::new(parts, FailurePolicy::Pause, metrics, Abort::default());
    let mut staged = StagedBatch::new(b.rows.clone());
    let mut acc = Accumulator::new(opts.top_n);
    let mut progress = Progress::new();
    let topic: Arc<str> = Arc::from("backtest");
    let mut payloads = Vec::with_capacity(BATCH);
    let mut saved_fields: Vec<Vec<FieldValue>> = Vec::new();
    let mut dead_pattern: Vec<bool> = Vec::new();
    let mut seq = 0u64;
    let mut events = Vec::with_capacity(BATCH);
    while input.next_batch(BATCH, &mut payloads)? {
        events.clear();
        events.extend(payloads.drain(..).map(|(line, p)| Envelope {
            origin: Origin { topic: topic.clone(), partition: 0, offset: line as i64 },
            received_at: started,
            timestamp_ms: None,
            payload: RawMessage { key: None, payload: Some(p), headers: Vec::new() },
        }));
        staged.start(Batch {
            seq,
            events: std::mem::take(&mut events),
            rules: Some(b.rules.clone() as Stamp),
            model_generation: 0,
            turns: Vec::new(),
        });
        seq += 1;
        staged.set_rule_paths(&union);
        let (decode, fill) = b.decode.as_mut().expect("the baseline decodes");
        decode.run(&mut staged)?;
        enrich.run(&mut staged)?;
        fill.run(&mut staged)?;
        // Each side's rows stay in a buffer of its own layout, swapped in for its stages.
        std::mem::swap(&mut staged.rows, &mut b.rows);
        if let Some((decode, fill)) = c.decode.as_mut() {
            dead_pattern.clear();
            dead_pattern.extend(staged.outcomes.iter().map(|o| matches!(o, Outcome::Dead(_))));
            std::mem::swap(&mut staged.rows, &mut c.rows);
            decode.run(&mut staged)?;
            let differs =
                staged.outcomes.iter().zip(&dead_pattern).position(|(o, &d)| matches!(o, Outcome::Dead(_)) != d);
            if let Some(i) = differs {
                return Err(BacktestError::Mismatch(format!(
                    "record {}: one model's columns reject it and the other's accept it; backtest models whose \
                     columns reject the same events",
                    staged.batch.events[i].origin.offset
                )));
            }
            fill.run(&mut staged)?;
            std::mem::swap(&mut staged.rows, &mut c.rows);
        }
        decide_side(&mut b, &mut staged, &mut saved_fields, None)?;
        let shared = c.decode.is_none().then_some(&mut b.rows);
        decide_side(&mut c, &mut staged, &mut saved_fields, shared)?;
        count(&mut acc, &staged, &b, &c, value_slot, label_slot, labels.as_ref());
        progress.tick(acc.events, input.fraction());
    }
    progress.finish();
    Ok(Outcomes { acc, sides: [b, c], seconds: started.elapsed().as_secs_f64() })
}

/// Scores and decides the batch with one side's stages, its rows (or `shared`, the
/// baseline's) swapped in.
fn decide_side(
    side: &mut Side,
    staged: &mut StagedBatch,
    saved: &mut Vec<Vec<FieldValue>>,
    shared: Option<&mut crate::core::rows::Rows>,
) -> Result<(), BacktestError> {
    let rows = shared.unwrap_or(&mut side.rows);
    std::mem::swap(&mut staged.rows, rows);
    staged.batch.rules = Some(side.rules.clone() as Stamp);
    side.score.run(staged)?;
    if let Some(map) = &side.field_map {
        saved.clear();
        for o in staged.outcomes.iter_mut() {
            if let Outcome::Decided(d) = o {
                let orig = std::mem::take(&mut d.fields);
                d.fields = map.iter().map(|&i| orig[i].clone()).collect();
                saved.push(orig);
            }
        }
    }
    side.decide.run(staged)?;
    if side.field_map.is_some() {
        let mut back = saved.drain(..);
        for o in staged.outcomes.iter_mut() {
            if let Outcome::Decided(d) = o {
                d.fields = back.next().expect("fields saved per decided event");
            }
        }
    }
    std::mem::swap(&mut staged.scores, &mut side.scores);
    std::mem::swap(&mut staged.decisions, &mut side.decisions);
    std::mem::swap(&mut staged.rows, rows);
    Ok(())
}

/// Counts the batch's events.
fn count(
    acc: &mut Accumulator,
    staged: &StagedBatch,
    b: &Side,
    c: &Side,
    value_slot: usize,
    label_slot: Option<usize>,
    labels: Option<&HashMap<String, u8>>,
) {
    let mut k = 0;
    for (ev, o) in staged.batch.events.iter().zip(&staged.outcomes) {
        acc.events += 1;
        let d = match o {
            Outcome::Dead(e) => {
                acc.dead(e.reason.code());
                continue;
            }
            Outcome::Decided(d) => d,
        };
        let value = match d.fields.get(value_slot) {
            Some(FieldValue::Num(x)) => *x,
            _ => 0.0,
        };
        let label = match (labels, label_slot) {
            (Some(l), _) => l.get(&d.event_id).copied(),
            (None, Some(s)) => match d.fields.get(s) {
                Some(FieldValue::Num(x)) => Some(u8::from(*x >= 0.5)),
                Some(FieldValue::Bool(x)) => Some(u8::from(*x)),
                _ => None,
            },
            (None, None) => None,
        };
        let seen = Seen {
            line: ev.origin.offset as u64,
            event_id: &d.event_id,
            event_time_ms: d.event_time_ms,
            label,
            value,
            payload: ev.payload.payload.as_deref().unwrap_or_default(),
        };
        acc.add(&seen, &b.decisions[k], &c.decisions[k]);
        k += 1;
    }
}
