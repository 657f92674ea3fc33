//! Drift and model-quality statistics: every decided event's model row, score and action
//! are counted on the training baseline's bins (in fixed memory, per worker); at the end of
//! each window (`drift.window_s` or `drift.window_events`, whichever first) the windows are
//! merged, compared with the baseline (PSI, KS, mean, std, default and out-of-range rates)
//! and published as a [`DriftRecord`] to the drift topic and as Prometheus gauges.
//! A feature crossing a PSI threshold is logged once per state change.

mod categories;
pub mod config;
pub mod labels;
mod publisher;
pub mod stage;
pub mod stats;

use std::collections::BTreeMap;
use std::sync::Arc;

use apache_avro::types::Value;
use apache_avro::Schema;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub use categories::{Categories, CategorySource};
pub use publisher::DriftPublisher;
pub use stats::{Baseline, BaselineError, FeatureBaseline, FeatureStats, Moments, Window};

use crate::core::decision::{Action, Actions};
use crate::core::rows::Rows;
use config::DriftConfig;

/// The drift record schema, embedded (also `schemas/drift.avsc`).
pub const SCHEMA: &str = include_str!("../../schemas/drift.avsc");

/// One feature (or the score) in a drift record: counts (mergeable) and statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    /// Input name or "score".
    pub name: String,
    /// Per bucket (see [`FeatureBaseline`]).
    pub counts: Vec<i64>,
    /// Sum of non-default values.
    pub sum: f64,
    /// Sum of squares of non-default values.
    pub sum_sq: f64,
    /// PSI against the baseline.
    pub psi: f64,
    /// KS statistic on the baseline's bins.
    pub ks: f64,
    /// Mean of non-default values (None without any).
    pub mean: Option<f64>,
    /// Standard deviation of non-default values.
    pub std: Option<f64>,
    /// Share of null or default-filled values.
    pub default_rate: f64,
    /// Share of values outside the training range.
    pub out_of_range_rate: f64,
}

impl FeatureDrift {
    fn new(m: &Moments, s: &FeatureStats) -> Self {
        let opt = |x: f64| x.is_finite().then_some(x);
        Self {
            name: s.name.clone(),
            counts: m.counts.iter().map(|&c| c as i64).collect(),
            sum: m.sum,
            sum_sq: m.sum_sq,
            psi: s.psi,
            ks: s.ks,
            mean: opt(s.mean),
            std: opt(s.std),
            default_rate: s.default_rate,
            out_of_range_rate: s.out_of_range_rate,
        }
    }

    fn moments(&self) -> Moments {
        Moments { counts: self.counts.iter().map(|&c| c.max(0) as u64).collect(), sum: self.sum, sum_sq: self.sum_sq }
    }
}

/// Drift statistics of one instance over one window (`schemas/drift.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftRecord {
    /// Model name.
    pub model: String,
    /// Model version.
    pub model_version: String,
    /// Instance that observed it.
    pub instance: String,
    /// Window start, ms since epoch.
    pub window_start: i64,
    /// Window end, ms since epoch.
    pub window_end: i64,
    /// Decided events.
    pub events: i64,
    /// Per model input.
    pub features: Vec<FeatureDrift>,
    /// The score.
    pub score: FeatureDrift,
    /// A multi-output model's class scores, named by class (empty otherwise); in warnings
    /// and alerts as `class:<name>`.
    #[serde(default)]
    pub classes: Vec<FeatureDrift>,
    /// Decisions by action.
    pub actions: BTreeMap<String, i64>,
    /// Dead letters by reason.
    pub dead_letters: BTreeMap<String, i64>,
    /// Names with PSI in (psi_warn, psi_alert].
    pub warnings: Vec<String>,
    /// Names with PSI above psi_alert.
    pub alerts: Vec<String>,
    /// Delayed labels joined in the window (None when the label join is off).
    pub labels: Option<labels::LabelStats>,
}

/// A drift record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Avro encoding, schema resolution or decoding failed.
    #[error(transparent)]
    Avro(#[from] apache_avro::Error),
    /// JSON encoding failed.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The bytes do not start with the Confluent frame (magic byte 0 and a schema id).
    #[error("not Confluent-framed")]
    NotFramed,
}

/// Identity of what is being watched.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Model name.
    pub model: String,
    /// Model version.
    pub model_version: String,
    /// Instance id.
    pub instance: String,
}

impl DriftRecord {
    /// Builds the record of `w` against `b`.
    pub fn build(id: &Identity, b: &Baseline, w: &Window, start_ms: i64, end_ms: i64, cfg: &DriftConfig) -> Self {
        let (fs, ss) = w.stats(b);
        let features: Vec<FeatureDrift> = w.features.iter().zip(&fs).map(|(m, s)| FeatureDrift::new(m, s)).collect();
        let score = FeatureDrift::new(&w.score, &ss);
        let classes: Vec<FeatureDrift> =
            w.classes.iter().zip(&w.class_stats(b)).map(|(m, s)| FeatureDrift::new(m, s)).collect();
        let level = |psi: f64| {
            if psi > cfg.psi_alert {
                2
            } else if psi > cfg.psi_warn {
                1
            } else {
                0
            }
        };
        let all = || features.iter().chain(std::iter::once(&score));
        let named = |l: u8| -> Vec<String> {
            let inputs = all().filter(|f| level(f.psi) == l).map(|f| f.name.clone());
            inputs.chain(classes.iter().filter(|f| level(f.psi) == l).map(|f| format!("class:{}", f.name))).collect()
        };
        let actions = w.actions.iter().map(|(a, n)| (a.clone(), *n as i64)).collect();
        Self {
            model: id.model.clone(),
            model_version: id.model_version.clone(),
            instance: id.instance.clone(),
            window_start: start_ms,
            window_end: end_ms,
            events: w.events as i64,
            warnings: named(1),
            alerts: named(2),
            features,
            score,
            classes,
            actions,
            dead_letters: w.dead_letters.iter().map(|(k, v)| (k.clone(), *v as i64)).collect(),
            labels: None,
        }
    }

    /// The window this record counts (to merge records of several instances).
    pub fn window(&self) -> Window {
        Window {
            features: self.features.iter().map(FeatureDrift::moments).collect(),
            score: self.score.moments(),
            classes: self.classes.iter().map(FeatureDrift::moments).collect(),
            actions: self.actions.iter().map(|(a, n)| (a.clone(), (*n).max(0) as u64)).collect(),
            dead_letters: self.dead_letters.iter().map(|(k, v)| (k.clone(), (*v).max(0) as u64)).collect(),
            events: self.events.max(0) as u64,
        }
    }

    /// Merges records (instances, or consecutive windows) into one, statistics recomputed.
    pub fn merge(records: &[DriftRecord], b: &Baseline, cfg: &DriftConfig) -> Option<DriftRecord> {
        let first = records.first()?;
        let mut w = first.window();
        for r in &records[1..] {
            w.merge(&r.window());
        }
        let id = Identity {
            model: first.model.clone(),
            model_version: first.model_version.clone(),
            instance: records.iter().map(|r| r.instance.as_str()).collect::<Vec<_>>().join("+"),
        };
        let start = records.iter().map(|r| r.window_start).min().unwrap_or(0);
        let end = records.iter().map(|r| r.window_end).max().unwrap_or(0);
        let mut merged = Self::build(&id, b, &w, start, end, cfg);
        for l in records.iter().filter_map(|r| r.labels.as_ref()) {
            match &mut merged.labels {
                Some(m) => m.merge(l),
                None => merged.labels = Some(l.clone()),
            }
        }
        Some(merged)
    }

    /// Confluent-framed Avro (`schemas/drift.avsc`) with `schema_id`.
    pub fn to_avro(&self, schema: &Schema, schema_id: u32) -> Result<Vec<u8>, CodecError> {
        let value = apache_avro::to_value(self)?.resolve(schema)?;
        let mut out = vec![0];
        out.extend_from_slice(&schema_id.to_be_bytes());
        let w = apache_avro::writer::datum::GenericDatumWriter::builder(schema).build()?;
        w.write_value(&mut out, value)?;
        Ok(out)
    }

    /// Decodes a Confluent-framed Avro drift record.
    pub fn from_avro(schema: &Schema, bytes: &[u8]) -> Result<Self, CodecError> {
        if bytes.len() < 5 || bytes[0] != 0 {
            return Err(CodecError::NotFramed);
        }
        let r = apache_avro::reader::datum::GenericDatumReader::builder(schema).build()?;
        let v: Value = r.read_value(&mut &bytes[5..])?;
        Ok(apache_avro::from_value(&v)?)
    }
}

/// Per-worker windows plus the baseline; the publisher merges them at each window end.
pub struct DriftMonitor {
    baseline: Arc<Baseline>,
    windows: Vec<Arc<Mutex<Window>>>,
    /// The vocabulary's action names: every window's record counts each (0 when none).
    actions: Vec<&'static str>,
    /// Label statistics of the current window, when labels are joined.
    pub labels: Option<(Arc<Mutex<labels::LabelStats>>, Vec<f64>)>,
}

impl DriftMonitor {
    /// One window per worker; records count decisions by the actions of `actions`.
    pub fn new(baseline: Baseline, workers: usize, actions: &Actions) -> Self {
        let windows = (0..workers).map(|_| Arc::new(Mutex::new(Window::new(&baseline)))).collect();
        Self { baseline: Arc::new(baseline), windows, actions: actions.names(), labels: None }
    }

    /// Worker `i`'s recorder.
    pub fn recorder(&self, i: usize) -> DriftRecorder {
        DriftRecorder { baseline: self.baseline.clone(), window: self.windows[i].clone() }
    }

    fn events(&self) -> u64 {
        self.windows.iter().map(|w| w.lock().events).sum()
    }

    fn take(&self) -> Window {
        let mut all = Window::new(&self.baseline);
        all.actions.extend(self.actions.iter().map(|a| (a.to_string(), 0)));
        for w in &self.windows {
            let taken = std::mem::replace(&mut *w.lock(), Window::new(&self.baseline));
            all.merge(&taken);
        }
        all
    }
}

/// A worker's handle: observes one batch at a time under one uncontended lock.
#[derive(Clone)]
pub struct DriftRecorder {
    baseline: Arc<Baseline>,
    window: Arc<Mutex<Window>>,
}

impl DriftRecorder {
    /// Observes a batch: its model rows (values and texts), their scores and actions, a
    /// multi-output model's class scores (`classes` per row; empty otherwise), and dead
    /// letters.
    pub fn observe(&self, rows: &Rows, scores: &[f32], classes: (&[f32], usize), actions: &[Action], dead: &[&str]) {
        let mut w = self.window.lock();
        for ((k, &s), &a) in (0..rows.len()).zip(scores).zip(actions) {
            w.observe_texts(&self.baseline, rows.values_row(k), rows.texts_row(k), s, a);
            if let Some(row) = classes.0.get(k * classes.1..(k + 1) * classes.1).filter(|r| !r.is_empty()) {
                w.observe_classes(&self.baseline, row);
            }
        }
        for r in dead {
            w.dead_letter(r);
        }
    }
}

/// The instance id: configured, else $HOSTNAME, else the process id.
pub fn instance_id(cfg: &DriftConfig) -> String {
    if !cfg.instance.is_empty() {
        return cfg.instance.clone();
    }
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| format!("pid-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_file_parses_and_records_round_trip_through_it() {
        let schema = Schema::parse_str(SCHEMA).unwrap();
        let b = Baseline {
            features: vec![FeatureBaseline {
                name: "x".into(),
                edges: vec![0.0, 1.0, 2.0],
                categories: None,
                expected: vec![0.1, 0.0, 0.45, 0.45, 0.0],
                default: Some(-1.0),
                mean: 1.0,
                std: 0.5,
            }],
            score: FeatureBaseline {
                name: "score".into(),
                edges: vec![0.0, 0.5, 1.0],
                categories: None,
                expected: vec![0.0, 0.0, 0.9, 0.1, 0.0],
                default: None,
                mean: f64::NAN,
                std: f64::NAN,
            },
            classes: Vec::new(),
        };
        let mut w = Window::new(&b);
        w.observe(&b, &[0.5], 0.1, Action::APPROVE);
        w.observe(&b, &[-1.0], 0.7, Action::REVIEW);
        w.dead_letter("malformed");
        let id = Identity { model: "m".into(), model_version: "1".into(), instance: "i-1".into() };
        let rec = DriftRecord::build(&id, &b, &w, 1, 2, &DriftConfig::default());
        let bytes = rec.to_avro(&schema, 7).unwrap();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 7]);
        let back = DriftRecord::from_avro(&schema, &bytes).unwrap();
        assert_eq!(back, rec);
        assert_eq!(back.window(), w);
        let file = crate::decode::parse_schema_file(std::path::Path::new("schemas/drift.avsc")).unwrap();
        assert_eq!(file, schema);
    }

    /// A multi-output model's class scores drift per class: counted on each class's
    /// baseline, named in alerts as `class:<name>`, carried through Avro and merged across
    /// instances; a record without classes (an older writer) reads as none.
    #[test]
    fn class_scores_drift_per_class_and_round_trip() {
        let schema = Schema::parse_str(SCHEMA).unwrap();
        let class = |name: &str, expected: Vec<f64>| FeatureBaseline {
            name: name.into(),
            edges: vec![0.0, 0.5, 1.0],
            categories: None,
            expected,
            default: None,
            mean: f64::NAN,
            std: f64::NAN,
        };
        let b = Baseline {
            features: Vec::new(),
            score: class("score", vec![0.0, 0.0, 0.5, 0.5, 0.0]),
            classes: vec![class("sports", vec![0.0, 0.0, 0.9, 0.1, 0.0]), class("news", vec![0.0, 0.0, 0.5, 0.5, 0.0])],
        };
        let (mut w1, mut w2) = (Window::new(&b), Window::new(&b));
        for i in 0..100 {
            // Sports moves from mostly low to mostly high; news keeps its split.
            let sports = if i % 10 == 0 { 0.2 } else { 0.8 };
            let news = if i % 2 == 0 { 0.25 } else { 0.75 };
            let w = if i < 50 { &mut w1 } else { &mut w2 };
            w.observe(&b, &[], 0.8, Action::APPROVE);
            w.observe_classes(&b, &[sports, news]);
        }
        w2.observe_classes(&b, &[f32::NAN, f32::NAN]);
        let id = Identity { model: "m".into(), model_version: "1".into(), instance: "i-1".into() };
        let cfg = DriftConfig::default();
        let rec = DriftRecord::build(&id, &b, &w1, 1, 2, &cfg);
        assert_eq!(rec.classes.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["sports", "news"]);
        assert!(rec.alerts.contains(&"class:sports".to_string()), "{:?} / {:?}", rec.alerts, rec.classes);
        assert!(!rec.alerts.iter().chain(&rec.warnings).any(|n| n == "class:news"), "{:?}", rec.classes[1]);
        assert_eq!(rec.classes[0].counts.iter().sum::<i64>(), 50);
        let bytes = rec.to_avro(&schema, 7).unwrap();
        assert_eq!(DriftRecord::from_avro(&schema, &bytes).unwrap(), rec);
        let other = DriftRecord::build(&Identity { instance: "i-2".into(), ..id }, &b, &w2, 1, 2, &cfg);
        let merged = DriftRecord::merge(&[rec.clone(), other], &b, &cfg).unwrap();
        assert_eq!(merged.classes[0].counts.iter().sum::<i64>(), 101);
        assert_eq!(merged.classes[0].counts[0], 1, "NaN (decided without the model) counts as absent");
        // A reader of this schema reads records written before `classes` as having none.
        let mut before: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
        before["fields"].as_array_mut().unwrap().retain(|f| f["name"] != "classes");
        let old = Schema::parse_str(&before.to_string()).unwrap();
        let plain = DriftRecord { classes: Vec::new(), ..rec };
        let old_bytes = plain.to_avro(&old, 7).unwrap();
        let r = apache_avro::reader::datum::GenericDatumReader::builder(&old).reader_schema(&schema).build().unwrap();
        let v = r.read_value(&mut &old_bytes[5..]).unwrap();
        let back: DriftRecord = apache_avro::from_value(&v).unwrap();
        assert!(back.classes.is_empty());
    }
}
