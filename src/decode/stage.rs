//! The decode stage: takes the batch's raw messages and hands on, per event, its decoded
//! identity (or the reason it goes to the dead-letter topic) and the decoded events' model
//! rows. The rules snapshot stamped on the batch says which event fields to extract for the
//! rules; a rules version that reads other fields rebuilds the extraction paths once.
//!
//! Also the fill stage: takes the enrich stage's values and writes them into the model
//! rows' enriched columns (the column layout is the decoder's), defaults where missing,
//! noting per row which columns took their default.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Decoder, Vectorizer};
use crate::backoff::Backoff;
use crate::stage::{Abort, Outcome, Stage, StageFailure, StagedBatch};
use crate::telemetry::Metrics;

/// Decodes every message of a batch.
pub struct Decode {
    decoder: Decoder,
    /// The rule paths the decoder extracts.
    rule_paths: Vec<String>,
    metrics: Arc<Metrics>,
    /// Set: the stage waits out a schema registry outage (None: such events are dead-lettered).
    abort: Option<Abort>,
}

impl Decode {
    /// From a decoder for the serving model's columns.
    pub fn new(decoder: Decoder, metrics: Arc<Metrics>) -> Self {
        Self { decoder, rule_paths: Vec::new(), metrics, abort: None }
    }

    /// While the schema registry cannot say what an id of the batch is, the batch waits
    /// (backoff up to 5 s) until it can or `abort` fires: like a Redis outage under
    /// `enrich.on_failure = "pause"`, nothing is dead-lettered for an outage and nothing is lost.
    pub fn with_abort(mut self, abort: Abort) -> Self {
        self.abort = Some(abort);
        self
    }

    /// Resolves the batch's Avro schema ids, waiting out a registry outage.
    fn wait_for_schemas(&self, b: &StagedBatch, abort: &Abort) -> Result<(), StageFailure> {
        let mut ids: Vec<u32> = Vec::new();
        for ev in &b.batch.events {
            if let Some(id) = ev.payload.payload.as_deref().and_then(|p| self.decoder.avro_schema_id(p)) {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        for id in ids {
            let mut down = false;
            loop {
                match self.decoder.resolve_schema(id) {
                    Ok(()) => break,
                    Err(e) => {
                        if !down {
                            tracing::warn!(schema_id = id, error = %e, "schema registry unavailable; the batch waits");
                            down = true;
                        }
                        if !abort.sleep(backoff.next_delay()) {
                            return Err(StageFailure::Aborted);
                        }
                    }
                }
            }
            if down {
                tracing::info!(schema_id = id, "schema registry reachable again");
                backoff.reset();
            }
        }
        Ok(())
    }

    /// Swaps in a decoder for another model's columns, extracting the same rule fields.
    pub fn replace_decoder(&mut self, mut decoder: Decoder) {
        decoder.set_rule_paths(&self.rule_paths);
        self.decoder = decoder;
    }
}

impl Stage for Decode {
    fn name(&self) -> &'static str {
        "decode"
    }

    fn run(&mut self, b: &mut StagedBatch) -> Result<(), StageFailure> {
        let t = Instant::now();
        if self.rule_paths != b.rule_paths() {
            self.rule_paths = b.rule_paths().to_vec();
            self.decoder.set_rule_paths(&self.rule_paths);
        }
        if let Some(abort) = &self.abort {
            self.wait_for_schemas(b, abort)?;
        }
        b.outcomes.clear();
        b.rows.clear();
        let mut dec = self.decoder.batch();
        for ev in &b.batch.events {
            let start = b.rows.len();
            match dec.decode(ev.payload.payload.as_deref(), b.rows.push()) {
                Ok(d) => b.outcomes.push(Outcome::Decided(d)),
                Err(e) => {
                    b.rows.truncate(start);
                    b.outcomes.push(Outcome::Dead(e));
                }
            }
        }
        self.metrics.stage_seconds.with_label_values(&["decode"]).observe(t.elapsed().as_secs_f64());
        Ok(())
    }
}

/// Writes the enrichment values into the model rows' enriched columns.
pub struct Fill {
    vectorizer: Vectorizer,
    metrics: Arc<Metrics>,
}

impl Fill {
    /// For the serving model's columns.
    pub fn new(vectorizer: Vectorizer, metrics: Arc<Metrics>) -> Self {
        Self { vectorizer, metrics }
    }

    /// Another model's columns (model hot-reload).
    pub fn set_vectorizer(&mut self, vectorizer: Vectorizer) {
        self.vectorizer = vectorizer;
    }
}

impl Stage for Fill {
    fn name(&self) -> &'static str {
        "fill"
    }

    fn run(&mut self, b: &mut StagedBatch) -> Result<(), StageFailure> {
        let (n, w) = (b.decided_count(), b.enriched_width);
        if b.defaults.len() < n {
            b.defaults.resize_with(n, Vec::new);
        }
        for (k, d) in b.defaults[..n].iter_mut().enumerate() {
            d.clear();
            self.vectorizer.fill_enriched(&b.enriched[k * w..(k + 1) * w], b.rows.row_mut(k).values, d);
            self.metrics.feature_defaults.inc_by(d.len() as u64);
        }
        // Rows past `n` keep their (cleared) buffers for the next, larger batch.
        Ok(())
    }
}
