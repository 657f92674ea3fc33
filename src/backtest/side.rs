//! One side of a backtest (the baseline or a candidate): its model session, bands and rules
//! as the service's own score and decide stages, plus a decoder and fill stage of its own when
//! its model reads its columns differently from the baseline's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::BacktestError;
use crate::config::Config;
use crate::core::decision::Decision;
use crate::core::field::FieldValue;
use crate::core::rows::Rows;
use crate::decode::stage::{Decode, Fill};
use crate::decode::{Decoder, LocalSchemas, Vectorizer};
use crate::envelope::Stamp;
use crate::rules::stage::Decide;
use crate::rules::{LiveRules, RuleSet, ThresholdBands};
use crate::score::stage::Score;
use crate::score::{init_runtime, ModelSpec, OnnxScorer};
use crate::stage::{Abort, Outcome, Stage, StagedBatch};
use crate::telemetry::Metrics;

/// Where a side's model and rules came from (the report's provenance).
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    /// Model directory.
    pub model_dir: PathBuf,
    /// Manifest `name`.
    pub model_name: String,
    /// Manifest `version`.
    pub model_version: String,
    /// sha256 of the ONNX file.
    pub model_sha256: String,
    /// Rules file ("" for bands alone).
    pub rules_file: String,
    /// Content hash of the rules file ("" for bands alone).
    pub rules_version: String,
    /// `decide.review_at`.
    pub review_at: f64,
    /// `decide.decline_at`.
    pub decline_at: f64,
}

/// A side's stages and its last batch's results.
pub struct Side {
    /// Its name in the report ("baseline", or the candidate's).
    pub name: String,
    /// Decoder and fill for its own columns (None: it scores the baseline's rows).
    pub decode: Option<(Decode, Fill)>,
    /// The score stage with its model session.
    pub score: Score,
    /// The decide stage with its bands.
    pub decide: Decide,
    /// Its decision vocabulary (`decide.actions`).
    pub actions: Arc<crate::core::decision::Actions>,
    /// Its rules snapshot, stamped on the batch before it decides.
    pub rules: Arc<LiveRules>,
    /// Per rule slot, its field's index among the decoded fields (None: the same order).
    pub field_map: Option<Vec<usize>>,
    /// Which of the run's other column layouts its rows come from (None: the baseline's).
    pub layout: Option<usize>,
    /// Its model rows for the batch (swapped in and out of the staged batch).
    pub rows: Rows,
    /// Its scores for the batch's decoded events.
    pub scores: Vec<f32>,
    /// Its decisions for the batch's decoded events.
    pub decisions: Vec<Decision>,
    /// Where it came from.
    pub provenance: Provenance,
    /// Its manifest's input columns (to see whether two sides share rows).
    pub columns: String,
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, BacktestError> {
    let bytes = std::fs::read(path).map_err(|e| BacktestError::Input(format!("{}: {e}", path.display())))?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

impl Side {
    /// Loads `cfg.model` and `rules` (a rules file, or None for bands alone) as the side
    /// `name`. `enriched` are the enrich stage's names (the rules and fill read them).
    pub fn load(
        name: &str,
        cfg: &Config,
        rules: Option<&Path>,
        enriched: &[String],
        schemas: &Arc<LocalSchemas>,
        enrich_paths: Vec<crate::core::event::EntityPaths>,
    ) -> Result<Self, BacktestError> {
        let actions = Arc::new(cfg.decide.actions());
        let spec = ModelSpec::from_config(&cfg.model)?;
        let vectorizer = Vectorizer::new(&spec.manifest, enriched).map_err(BacktestError::Columns)?;
        let decoder = Decoder::new(&cfg.decode, schemas.clone(), vectorizer.clone(), enrich_paths);
        let rows = decoder.rows();
        let metrics = Metrics::new();
        let scorer = OnnxScorer::load(&spec, init_runtime(cfg.model.ort_library.as_deref())?)?.0;
        let score = Score::new(scorer, rows.clone(), metrics.clone(), Abort::default());
        let set = match rules {
            Some(p) => RuleSet::load(p, &crate::rules::readable_names(enriched, &spec.manifest.classes), &actions)
                .map_err(|e| BacktestError::Rules(format!("{}: {}", p.display(), e.join("; "))))?,
            None => RuleSet::empty(),
        };
        let lists = set.initial_lists.clone();
        let provenance = Provenance {
            model_dir: spec.dir.clone(),
            model_name: spec.manifest.name.clone(),
            model_version: spec.manifest.version.clone(),
            model_sha256: sha256_file(&spec.manifest.model_path(&spec.dir))?,
            rules_file: rules.map(|p| p.display().to_string()).unwrap_or_default(),
            rules_version: set.version.to_string(),
            review_at: cfg.decide.review_at,
            decline_at: cfg.decide.decline_at,
        };
        let columns = serde_json::to_string(&spec.manifest.inputs).unwrap_or_default();
        Ok(Self {
            name: name.to_string(),
            decode: Some((Decode::new(decoder, metrics.clone()), Fill::new(vectorizer, metrics.clone()))),
            score,
            decide: Decide::new(ThresholdBands::of(actions.clone()), metrics),
            actions,
            rules: Arc::new(LiveRules { set: Arc::new(set), lists }),
            field_map: None,
            layout: None,
            rows,
            scores: Vec::new(),
            decisions: Vec::new(),
            provenance,
            columns,
        })
    }

    /// The event paths its rules read.
    pub fn rule_paths(&self) -> &[String] {
        self.rules.set.event_paths()
    }

    /// Scores and decides the batch with this side's stages (`rows`, its layout's rows, swapped
    /// in; None: the batch's rows, the baseline's). `saved` is scratch space for the decoded
    /// fields while the side's rules read them in their own order.
    pub fn decide(
        &mut self,
        staged: &mut StagedBatch,
        saved: &mut Vec<Vec<FieldValue>>,
        rows: Option<&mut Rows>,
    ) -> Result<(), BacktestError> {
        let mut rows = rows;
        if let Some(r) = rows.as_deref_mut() {
            std::mem::swap(&mut staged.rows, r);
        }
        staged.batch.rules = Some(self.rules.clone() as Stamp);
        self.score.run(staged)?;
        if let Some(map) = &self.field_map {
            saved.clear();
            for o in staged.outcomes.iter_mut() {
                if let Outcome::Decided(d) = o {
                    let orig = std::mem::take(&mut d.fields);
                    d.fields = map.iter().map(|&i| orig[i].clone()).collect();
                    saved.push(orig);
                }
            }
        }
        self.decide.run(staged)?;
        if self.field_map.is_some() {
            let mut back = saved.drain(..);
            for o in staged.outcomes.iter_mut() {
                if let Outcome::Decided(d) = o {
                    d.fields = back.next().expect("fields saved per decided event");
                }
            }
        }
        std::mem::swap(&mut staged.scores, &mut self.scores);
        std::mem::swap(&mut staged.decisions, &mut self.decisions);
        if let Some(r) = rows {
            std::mem::swap(&mut staged.rows, r);
        }
        Ok(())
    }
}
