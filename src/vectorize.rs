//! `verdict vectorize`: the rows (and scores) the service would feed the model for a file
//! of events, so a data scientist can diff them against their training code.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::decode::{Decoder, LocalSchemas, Vectorizer};
use crate::enrich::{Backend, Enricher, Request};
use crate::score::{init_runtime, ModelSpec, OnnxScorer};

/// Reads JSON lines from `events`, writes one JSON object per event to `out`:
/// `{"line", "event_id", "row": [..] (null = NaN), "score"?}` or `{"line", "error", "reason"}`.
pub fn run(cfg: &Config, events: &Path, score: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let spec = ModelSpec::from_config(&cfg.model)?;
    let mut enrich_cfg = cfg.enrich.clone();
    if enrich_cfg.backend == Backend::Redis {
        // Offline: the same window semantics, in process; online features come out missing.
        enrich_cfg.backend = Backend::Memory;
    }
    let mut enricher = Enricher::new(&enrich_cfg)?;
    let vectorizer = Vectorizer::new(&spec.manifest, enricher.names()).map_err(anyhow::Error::msg)?;
    let schemas = LocalSchemas::load(&cfg.decode.avro_schemas).map_err(anyhow::Error::msg)?;
    let decoder = Decoder::new(&cfg.decode, Arc::new(schemas), vectorizer.clone(), enricher.paths());
    let mut scorer =
        if score { Some(OnnxScorer::load(&spec, init_runtime(cfg.model.ort_library.as_deref())?)?.0) } else { None };

    let width = decoder.width();
    let file = std::io::BufReader::new(std::fs::File::open(events)?);
    let mut row = vec![0f32; width];
    let mut values = Vec::new();
    let mut scores = Vec::new();
    let mut defaults = Vec::new();
    for (n, line) in file.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let decoded = decoder.batch().decode(Some(line.as_bytes()), &mut row);
        let d = match decoded {
            Ok(d) => d,
            Err(e) => {
                let v = serde_json::json!({"line": n + 1, "error": e.detail, "reason": e.reason.code()});
                writeln!(out, "{v}")?;
                continue;
            }
        };
        let req =
            Request { fence_key: "vectorize/0", offset: n as i64, time_ms: d.event_time_ms, entities: &d.entities };
        enricher.enrich(std::slice::from_ref(&req), &mut values)?;
        defaults.clear();
        vectorizer.fill_enriched(&values, &mut row, &mut defaults);
        let mut obj = serde_json::json!({
            "line": n + 1,
            "event_id": d.event_id,
            "row": row.iter().map(|x| if x.is_nan() { None } else { Some(*x) }).collect::<Vec<_>>(),
        });
        if let Some(s) = scorer.as_mut() {
            scores.clear();
            s.score(&row, &mut scores)?;
            obj["score"] = serde_json::json!(scores[0]);
        }
        writeln!(out, "{obj}")?;
    }
    out.flush()?;
    Ok(())
}
