//! The one pass: each batch of events goes through the service's decode, enrich and fill
//! stages once (windows computed once, in file order; decode and fill once more per other
//! column layout among the candidates), then through each side's score and decide stages,
//! and every side's decisions are counted together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::flips::Seen;
use super::input::{Input, Progress};
use super::metrics::Accumulator;
use super::side::Side;
use super::{BacktestError, Candidate, Labels, Options};
use crate::config::Config;
use crate::core::field::FieldValue;
use crate::core::rows::Rows;
use crate::decode::stage::{Decode, Fill};
use crate::decode::LocalSchemas;
use crate::enrich::stage::{Enrich, EnrichParts};
use crate::enrich::{Backend, EnrichSetup, Enricher, FailurePolicy};
use crate::envelope::{Batch, Envelope, Origin, RawMessage};
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
    /// The baseline, then each candidate in order.
    pub sides: Vec<Side>,
    /// Seconds the pass took.
    pub seconds: f64,
    /// A topic range's partitions: (partition, first offset, end offset).
    pub bounds: Option<Vec<(i32, i64, i64)>>,
}

/// Runs the backtest over `opts.events`: `base` is the baseline's config, `cands` the
/// candidates.
pub fn run(opts: &Options, base: &Config, cands: &[Candidate]) -> Result<Outcomes, BacktestError> {
    let started = Instant::now();
    let input = Input::open(&opts.events, &base.kafka)?;
    let bounds = input.bounds().map(<[_]>::to_vec);
    let warm = opts.warm.as_ref().map(|w| Input::open(w, &base.kafka)).transpose()?;
    if let Some(w) = &warm {
        if w.schema != input.schema {
            return Err(BacktestError::Input(format!(
                "the warm-up events ({}) and the events ({}) must be in the same format (JSON lines, or Avro \
                 containers of one schema)",
                opts.warm.as_ref().expect("warm is set"),
                opts.events
            )));
        }
    }
    let mut configs: Vec<(&str, Config, Option<&std::path::Path>)> =
        vec![("baseline", base.clone(), opts.rules.as_deref())];
    configs.extend(cands.iter().map(|c| (c.name.as_str(), c.config.clone(), c.rules.as_deref())));
    if input.schema.is_some() {
        for (_, cfg, _) in &mut configs {
            cfg.decode.format = crate::config::PayloadFormat::Avro;
        }
    }
    let base = &configs[0].1;
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
    let mut sides = configs
        .iter()
        .map(|(name, cfg, rules)| Side::load(name, cfg, *rules, &enriched, &schemas, enrich_paths.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    // Flips pair actions by position: every side decides with the baseline's vocabulary.
    for s in &sides[1..] {
        if s.actions.names() != sides[0].actions.names() {
            return Err(BacktestError::Mismatch(format!(
                "candidate '{}' decides with the actions ({}), the baseline with ({}): decide.actions must name the \
                 same actions in the same order on every side",
                s.name,
                s.actions.names().join(", "),
                sides[0].actions.names().join(", ")
            )));
        }
    }
    // The fields the decoder extracts: the baseline's rule fields first (its slots), then each
    // candidate's, the value field and the label field.
    let mut union: Vec<String> = sides[0].rule_paths().to_vec();
    let slot = |p: &str, union: &mut Vec<String>| match union.iter().position(|u| u == p) {
        Some(i) => i,
        None => {
            union.push(p.to_string());
            union.len() - 1
        }
    };
    for side in &mut sides[1..] {
        let slots: Vec<usize> = side.rule_paths().to_vec().iter().map(|p| slot(p, &mut union)).collect();
        if slots.iter().enumerate().any(|(i, &s)| i != s) {
            side.field_map = Some(slots);
        }
    }
    let value_slot = slot(&opts.value_field, &mut union);
    let label_slot = opts.labels.is_none().then(|| slot(&opts.label_field, &mut union));
    let labels = match &opts.labels {
        None => None,
        Some(Labels::File(path)) => Some(super::input::labels(path)?),
        Some(Labels::Topic(topic)) => {
            let (labels, unreadable) = super::kafka::labels(&base.kafka, topic)?;
            if unreadable > 0 {
                tracing::warn!(topic, unreadable, "labels topic: messages without an event_id and a 0/1 label skipped");
            }
            Some(labels)
        }
    };

    let metrics = Metrics::new();
    let setup = EnrichSetup::new(&enrich_cfg, &base.redis, enricher, &metrics)?;
    let parts = match &setup {
        Some(s) => s.worker_parts()?,
        None => EnrichParts { features: None, owned: None, shared: None, width: 0 },
    };
    let enrich = Enrich::new(parts, FailurePolicy::Pause, metrics, Abort::default());
    let decoders =
        Decoders { base: sides[0].decode.take().expect("a side loads with its decoder"), extra: Vec::new(), enrich };
    let decoders = layouts(decoders, &mut sides);
    let mut acc = Accumulator::new(sides.len() - 1, opts.top_n, sides[0].actions.len());
    let mut progress = Progress::new();
    let mut saved_fields: Vec<Vec<FieldValue>> = Vec::new();
    // Two threads: one reads, decodes and enriches the next batch while the other scores and
    // decides this one (each side's ONNX session stays on the deciding thread).
    let (full_tx, full_rx) = crossbeam_channel::bounded::<Work>(WORK_ITEMS);
    let (empty_tx, empty_rx) = crossbeam_channel::bounded::<Work>(WORK_ITEMS);
    for _ in 0..WORK_ITEMS {
        // One rows buffer per other layout, shaped by the first side that reads it.
        let extra_rows = (0..decoders.extra.len())
            .map(|l| sides.iter().find(|s| s.layout == Some(l)).expect("a layout has a side").rows.clone())
            .collect();
        let _ = empty_tx.send(Work { staged: StagedBatch::new(sides[0].rows.clone()), extra_rows, fraction: 0.0 });
    }
    let union = &union;
    let produced = std::thread::scope(|scope| {
        let producer = scope.spawn(move || produce(decoders, warm, input, union, started, empty_rx, full_tx));
        // Owned here, so that an early return (a failed batch) closes both channels and the
        // decoding thread ends before the scope joins it.
        let (full_rx, empty_tx) = (full_rx, empty_tx);
        for mut w in full_rx.iter() {
            for side in &mut sides {
                let rows = side.layout.map(|l| &mut w.extra_rows[l]);
                side.decide(&mut w.staged, &mut saved_fields, rows)?;
            }
            count(&mut acc, &w.staged, &sides, value_slot, label_slot, labels.as_ref());
            progress.tick(acc.events, w.fraction);
            // The decoding thread may have ended (input done): the batches still queued count.
            let _ = empty_tx.send(w);
        }
        drop(empty_tx);
        producer.join().expect("the decode thread does not panic")
    });
    produced?;
    progress.finish();
    Ok(Outcomes { acc, sides, seconds: started.elapsed().as_secs_f64(), bounds })
}

/// Gives each candidate whose model reads other columns than the baseline's a layout: its own
/// decode and fill stages, shared by the candidates with the same columns (decoded once per
/// batch). The others score the baseline's rows.
fn layouts(mut d: Decoders, sides: &mut [Side]) -> Decoders {
    let (base, cands) = sides.split_first_mut().expect("a baseline");
    let mut columns: Vec<String> = Vec::new();
    for side in cands {
        let own = side.decode.take().expect("a side loads with its decoder");
        if side.columns == base.columns {
            continue;
        }
        side.layout = Some(match columns.iter().position(|c| *c == side.columns) {
            Some(l) => l,
            None => {
                columns.push(side.columns.clone());
                d.extra.push(own);
                columns.len() - 1
            }
        });
    }
    d
}

/// Batches in flight between the two threads.
const WORK_ITEMS: usize = 3;

/// A batch handed from the decoding thread to the deciding one.
struct Work {
    /// Decoded, enriched, the baseline's rows filled.
    staged: StagedBatch,
    /// Per other column layout, its rows for this batch.
    extra_rows: Vec<Rows>,
    /// Share of the input read.
    fraction: f64,
}

/// The stages that run once per event: decode and fill (the baseline's, then once per other
/// column layout), enrich.
struct Decoders {
    base: (Decode, Fill),
    extra: Vec<(Decode, Fill)>,
    enrich: Enrich,
}

/// The decoding thread: runs `warm` through the windows, then fills batches from `input`
/// until it ends.
fn produce(
    mut d: Decoders,
    warm: Option<Input>,
    mut input: Input,
    union: &[String],
    started: Instant,
    empty: crossbeam_channel::Receiver<Work>,
    full: crossbeam_channel::Sender<Work>,
) -> Result<(), BacktestError> {
    let topic: Arc<str> = Arc::from("backtest");
    let mut payloads = Vec::with_capacity(BATCH);
    let mut dead_pattern: Vec<bool> = Vec::new();
    let mut events = Vec::with_capacity(BATCH);
    let mut seq = 0u64;
    // Decodes and enriches (windows updated) the next batch of `from` into `staged`.
    let mut next = |from: &mut Input, staged: &mut StagedBatch, d: &mut Decoders| -> Result<bool, BacktestError> {
        if !from.next_batch(BATCH, &mut payloads)? {
            return Ok(false);
        }
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
            rules: None,
            model_generation: 0,
            turns: Vec::new(),
        });
        seq += 1;
        staged.set_rule_paths(union);
        d.base.0.run(staged)?;
        d.enrich.run(staged)?;
        Ok(true)
    };
    let mut first = None;
    if let Some(mut warm) = warm {
        // Windows only: decoded and enriched, neither scored nor counted.
        let Ok(mut w) = empty.recv() else { return Ok(()) };
        while next(&mut warm, &mut w.staged, &mut d)? {}
        first = Some(w);
    }
    for mut w in first.into_iter().chain(empty.iter()) {
        if !next(&mut input, &mut w.staged, &mut d)? {
            break;
        }
        let staged = &mut w.staged;
        d.base.1.run(staged)?;
        if !d.extra.is_empty() {
            dead_pattern.clear();
            dead_pattern.extend(staged.outcomes.iter().map(|o| matches!(o, Outcome::Dead(_))));
        }
        for ((decode, fill), rows) in d.extra.iter_mut().zip(&mut w.extra_rows) {
            // A layout's rows in their own buffer, decoded from the same events.
            std::mem::swap(&mut staged.rows, rows);
            decode.run(staged)?;
            let differs =
                staged.outcomes.iter().zip(&dead_pattern).position(|(o, &d)| matches!(o, Outcome::Dead(_)) != d);
            if let Some(i) = differs {
                return Err(BacktestError::Mismatch(format!(
                    "record {}: one model's columns reject it and the other's accept it; backtest models whose \
                     columns reject the same events",
                    staged.batch.events[i].origin.offset
                )));
            }
            fill.run(staged)?;
            std::mem::swap(&mut staged.rows, rows);
        }
        w.fraction = input.fraction();
        if full.send(w).is_err() {
            break;
        }
    }
    Ok(())
}

/// Counts the batch's events.
fn count(
    acc: &mut Accumulator,
    staged: &StagedBatch,
    sides: &[Side],
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
            (Some(l), _) => l.get(d.event_id.as_str()).copied(),
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
        acc.add(&seen, &sides[0].decisions[k], sides[1..].iter().map(|s| &s.decisions[k]));
        k += 1;
    }
}
