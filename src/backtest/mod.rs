//! `verdict backtest`: replays a file of events through the service's own stages for a
//! baseline (model, rules, bands) and one or more candidates in one pass (events decoded and
//! windows updated once for all), and reports, per candidate, what would change:
//! decision flips with counts and amounts, score distributions, precision / recall / review
//! rate and cost at each side's thresholds (with labels), curves, calibration, rule hits, the
//! most changed flipped events and the run's provenance; as JSON and as a self-contained HTML
//! page.
//!
//! - [`candidate`]: a candidate (name, config, rules) and the `--candidate` argument;
//! - [`input`]: the events file in batches, the labels file, the progress line;
//! - [`kafka`]: a topic range as the events (and a labels topic);
//! - [`side`]: one side's score and decide stages (and decoder, if its columns differ);
//! - [`run`]: the one pass (decode → enrich → fill once per column layout, then each side's
//!   score → decide);
//! - [`metrics`]: what is kept while events stream past (histograms, counters per side);
//! - [`flips`]: one candidate against the baseline (flip matrix, rules on flips, a top-N heap);
//! - [`report_json`]: the numbers; [`report_html`] and [`svg`]: the page.

pub mod candidate;
pub mod flips;
pub mod input;
pub mod kafka;
pub mod metrics;
pub mod report_html;
pub mod report_json;
pub mod run;
pub mod side;
pub mod svg;

use std::path::PathBuf;

pub use candidate::{Candidate, CandidateSpec};

use crate::config::Config;

/// Why a backtest could not run.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The events or labels could not be read.
    #[error("{0}")]
    Input(String),
    /// Model, manifest or runtime problem.
    #[error(transparent)]
    Score(#[from] crate::score::ScoreError),
    /// The enrich stage could not start.
    #[error(transparent)]
    Enrich(#[from] crate::enrich::EnrichError),
    /// A model's columns do not match the configuration.
    #[error("{0}")]
    Columns(crate::decode::ColumnErrors),
    /// The configured Avro schemas could not be loaded.
    #[error("{0}")]
    Schemas(crate::decode::SchemaErrors),
    /// A rules file is invalid.
    #[error("rules: {0}")]
    Rules(String),
    /// The two sides cannot be compared on an event.
    #[error("{0}")]
    Mismatch(String),
    /// A stage failed on a batch.
    #[error("{0}")]
    Stage(#[from] crate::stage::StageFailure),
}

/// Unit costs of the cost table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Costs {
    /// A fraud let through costs its value times this.
    pub missed_fraud_factor: f64,
    /// A legitimate event declined costs this.
    pub false_decline: f64,
    /// A case sent to review costs this.
    pub review: f64,
    /// Review capacity as a share of events (the threshold search stays within it).
    pub review_capacity_share: Option<f64>,
    /// Review capacity in cases per hour of event time (converted with the run's event span).
    pub review_capacity_per_hour: Option<f64>,
}

/// Where the events come from.
#[derive(Debug, Clone)]
pub enum Events {
    /// JSON lines or an Avro object container file.
    File(PathBuf),
    /// A topic range, every partition from `from` to `to` (exclusive), with the baseline
    /// config's `[kafka]` brokers and security.
    Topic {
        /// The topic.
        name: String,
        /// Start in every partition.
        from: kafka::Position,
        /// End (exclusive) in every partition.
        to: kafka::Position,
    },
}

impl std::fmt::Display for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Events::File(p) => write!(f, "{}", p.display()),
            Events::Topic { name, from, to } => write!(f, "kafka topic {name} from {from:?} to {to:?}"),
        }
    }
}

/// Where the labels come from.
#[derive(Debug, Clone)]
pub enum Labels {
    /// JSON lines of `{"event_id", "label"}`.
    File(PathBuf),
    /// A topic of the same JSON messages, read whole up to its end at start.
    Topic(String),
}

impl std::fmt::Display for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Labels::File(p) => write!(f, "{}", p.display()),
            Labels::Topic(t) => write!(f, "kafka topic {t}"),
        }
    }
}

/// What to backtest and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Events: a file or a topic range.
    pub events: Events,
    /// Events replayed first through the windows only (not scored, not reported): the
    /// history before `events`, so that their windows start full, as the service's are.
    pub warm: Option<Events>,
    /// Labels (`{event_id, label}`: a file of JSON lines or a topic); None: the events'
    /// `label_field`.
    pub labels: Option<Labels>,
    /// Event field holding the label when no labels file is given.
    pub label_field: String,
    /// Event field whose value the flip matrix and costs sum (e.g. the amount).
    pub value_field: String,
    /// Baseline rules file (None: bands alone).
    pub rules: Option<PathBuf>,
    /// Flipped events listed in the report.
    pub top_n: usize,
    /// Unit costs.
    pub costs: Costs,
}

/// Runs the backtest: `base` is the baseline's config (its model and decide bands; decode and
/// enrich for every side), `cands` the candidates, each compared with the baseline. Returns the
/// report as JSON.
pub fn backtest(opts: &Options, base: &Config, cands: &[Candidate]) -> Result<serde_json::Value, BacktestError> {
    if cands.is_empty() {
        return Err(BacktestError::Input("no candidate to compare with the baseline".into()));
    }
    let out = run::run(opts, base, cands)?;
    Ok(report_json::build(&out, opts))
}
