//! Fixed-memory drift statistics: counts on the baseline's bins plus running moments, per
//! model input and for the score. Numbers are binned on the training quantiles; lookup and
//! string columns by category (the training's top K, then "other"), so a category whose share
//! changes is seen. No event is stored. Windows merge by adding counts, so records from
//! several instances combine into the statistics of their union.

use serde::{Deserialize, Serialize};

use super::categories::{Categories, CategorySource};
use crate::core::decision::Action;
use crate::core::manifest::{InputColumn, Lane, Manifest};

/// Smoothing for empty buckets in PSI (both sides), so one empty bucket is not infinite.
pub const PSI_EPSILON: f64 = 1e-4;

/// One feature's (or the score's) training distribution.
///
/// Buckets of a number, in order: `[default/null, below range, bin 0 .. bin k-1, above range]`,
/// where bin `i` is `[edges[i], edges[i+1])` and the last bin includes `edges[k]` (numpy's
/// histogram). Of a categorical column: `[default/null, other, category 0 .. category k-1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureBaseline {
    /// Model input name (or "score").
    pub name: String,
    /// Bin edges, ascending (k+1 values for k bins); empty for a categorical column.
    pub edges: Vec<f64>,
    /// The training's most frequent categories, for lookup and string columns.
    pub categories: Option<Categories>,
    /// Expected share of every bucket (k+3, sums to 1).
    pub expected: Vec<f64>,
    /// The value that means "default used" for this input (NaN always does).
    pub default: Option<f64>,
    /// Training mean of non-default values.
    pub mean: f64,
    /// Training standard deviation of non-default values.
    pub std: f64,
}

impl FeatureBaseline {
    pub(super) fn from_json(
        name: &str,
        v: &serde_json::Value,
        default: Option<f64>,
        col: Option<(&InputColumn, Lane)>,
    ) -> Result<Self, BaselineError> {
        if v.get("categories").is_some() {
            return Self::categorical(name, v, default, col);
        }
        let nums = |k: &str| -> Result<Vec<f64>, BaselineError> {
            v.get(k)
                .and_then(|a| a.as_array())
                .ok_or_else(|| BaselineError(format!("baseline {name}: '{k}' missing")))?
                .iter()
                .map(|x| x.as_f64().ok_or_else(|| BaselineError(format!("baseline {name}: '{k}' holds a non-number"))))
                .collect()
        };
        let mut edges = nums("edges")?;
        let mut proportions = nums("proportions")?;
        let default_rate = v.get("default_rate").and_then(|x| x.as_f64()).unwrap_or(0.0);
        if edges.len() == 1 && proportions.is_empty() {
            // A single non-default value in training (e.g. a flag whose other value is the
            // default): one point-mass bin holding the non-default share.
            edges.push(edges[0]);
            proportions.push((1.0 - default_rate).max(0.0));
        }
        let point = edges.len() == 2 && edges[0] == edges[1];
        if edges.len() < 2 || proportions.len() != edges.len() - 1 || (!point && edges.windows(2).any(|w| w[0] >= w[1]))
        {
            return Err(BaselineError(format!(
                "baseline {name}: need k+1 ascending edges for k proportions (got {} edges, {} proportions)",
                edges.len(),
                proportions.len()
            )));
        }
        let mut expected = Vec::with_capacity(proportions.len() + 3);
        expected.push(default_rate);
        expected.push(0.0);
        expected.extend(&proportions);
        expected.push(0.0);
        let total: f64 = expected.iter().sum();
        if total > 0.0 {
            expected.iter_mut().for_each(|e| *e /= total);
        }
        Ok(Self {
            name: name.to_string(),
            edges,
            categories: None,
            expected,
            default,
            mean: v.get("mean").and_then(|x| x.as_f64()).unwrap_or(f64::NAN),
            std: v.get("std").and_then(|x| x.as_f64()).unwrap_or(f64::NAN),
        })
    }

    /// Number of buckets (k+3 for k bins, k+2 for k categories).
    pub fn buckets(&self) -> usize {
        match &self.categories {
            Some(c) => c.names.len() + 2,
            None => self.edges.len() + 2,
        }
    }

    /// Whether values are binned by category.
    pub fn is_categorical(&self) -> bool {
        self.categories.is_some()
    }

    /// The bucket of a value: `v` is the row's `f32` value, `texts` the row's texts (a
    /// string column's category is its text; its `f32` value is NaN when the default was used).
    #[inline]
    pub fn bucket_of(&self, v: f64, texts: &[String]) -> usize {
        let Some(c) = &self.categories else { return self.bucket(v) };
        if v.is_nan() || self.default == Some(v) {
            return 0;
        }
        let found = match &c.source {
            CategorySource::Codes(codes) => codes.iter().position(|&x| x == v),
            CategorySource::Text(i) => texts.get(*i).and_then(|t| c.names.iter().position(|n| n == t)),
        };
        found.map_or(1, |i| i + 2)
    }

    /// The bucket of the number `v` (a numeric baseline).
    #[inline]
    pub fn bucket(&self, v: f64) -> usize {
        if v.is_nan() || self.default == Some(v) {
            return 0;
        }
        let k = self.edges.len() - 1;
        if v < self.edges[0] {
            1
        } else if v > self.edges[k] {
            k + 2
        } else {
            2 + self.edges[1..k].partition_point(|&e| e <= v)
        }
    }
}

/// The model's training baseline: every input, in column order, and the score.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// Per model input, in row order.
    pub features: Vec<FeatureBaseline>,
    /// The score.
    pub score: FeatureBaseline,
    /// A multi-output model's class scores, in class order (empty when the model has one
    /// score, or its baseline has no `classes`).
    pub classes: Vec<FeatureBaseline>,
}

/// The manifest's baseline is malformed (what is missing or wrong, and where).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BaselineError(pub String);

impl Baseline {
    /// From the manifest's `baseline` (None when the manifest has none).
    pub fn from_manifest(m: &Manifest) -> Result<Option<Self>, BaselineError> {
        let Some(b) = &m.baseline else { return Ok(None) };
        let missing = |what: &str| BaselineError(format!("baseline: {what}"));
        let feats = b.get("features").ok_or_else(|| missing("'features' missing"))?;
        let mut features = Vec::with_capacity(m.inputs.len());
        for (c, lane) in m.inputs.iter().zip(m.lanes()) {
            let v = feats.get(&c.name).ok_or_else(|| missing(&format!("no entry for input '{}'", c.name)))?;
            features.push(FeatureBaseline::from_json(&c.name, v, c.default_value(), Some((c, lane)))?);
        }
        let score = b.get("score").ok_or_else(|| missing("'score' missing"))?;
        let score = FeatureBaseline::from_json("score", score, None, None)?;
        // A multi-output model's per-class score distributions, when its baseline has them.
        let classes = match b.get("classes") {
            Some(per_class) if !m.classes.is_empty() => m
                .classes
                .iter()
                .map(|c| {
                    let v = per_class.get(c).ok_or_else(|| missing(&format!("classes: no entry for class '{c}'")))?;
                    FeatureBaseline::from_json(c, v, None, None)
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => Vec::new(),
        };
        Ok(Some(Self { features, score, classes }))
    }
}

/// Counts and moments of one feature over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    /// Per bucket (see [`FeatureBaseline`]).
    pub counts: Vec<u64>,
    /// Sum of non-default values.
    pub sum: f64,
    /// Sum of squares of non-default values.
    pub sum_sq: f64,
}

impl Moments {
    pub(super) fn new(buckets: usize) -> Self {
        Self { counts: vec![0; buckets], sum: 0.0, sum_sq: 0.0 }
    }

    /// Counts `v` (with the row's `texts`); moments only of non-default numbers.
    #[inline]
    pub(super) fn observe(&mut self, b: &FeatureBaseline, v: f64, texts: &[String]) {
        let i = b.bucket_of(v, texts);
        self.counts[i] += 1;
        if i != 0 && !b.is_categorical() {
            self.sum += v;
            self.sum_sq += v * v;
        }
    }

    fn merge(&mut self, o: &Moments) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.sum += o.sum;
        self.sum_sq += o.sum_sq;
    }

    /// Statistics against `b`.
    pub fn stats(&self, b: &FeatureBaseline) -> FeatureStats {
        let n: u64 = self.counts.iter().sum();
        let nf = n.max(1) as f64;
        let actual: Vec<f64> = self.counts.iter().map(|&c| c as f64 / nf).collect();
        let (psi_actual, psi_expected) = match b.is_categorical() {
            true => (actual.clone(), b.expected.clone()),
            false => (open_ended(&actual), open_ended(&b.expected)),
        };
        let psi = psi_actual
            .iter()
            .zip(&psi_expected)
            .map(|(&a, &e)| {
                let (a, e) = (a.max(PSI_EPSILON), e.max(PSI_EPSILON));
                (a - e) * (a / e).ln()
            })
            .sum();
        // KS on the binned distribution of non-default values (buckets 1..). Categories have
        // no order: there it is the total variation distance, the largest difference in share
        // any set of categories can show.
        let (a_tot, e_tot): (f64, f64) = (actual[1..].iter().sum(), b.expected[1..].iter().sum());
        let (mut ca, mut ce, mut ks) = (0.0, 0.0, 0.0f64);
        if a_tot > 0.0 && e_tot > 0.0 {
            for (a, e) in actual[1..].iter().zip(&b.expected[1..]) {
                if b.is_categorical() {
                    ks += 0.5 * (a / a_tot - e / e_tot).abs();
                } else {
                    ca += a / a_tot;
                    ce += e / e_tot;
                    ks = ks.max((ca - ce).abs());
                }
            }
        }
        // Categories have shares, not moments.
        let values = if b.is_categorical() { 0 } else { n - self.counts[0] };
        let mean = if values > 0 { self.sum / values as f64 } else { f64::NAN };
        let var = if values > 0 { (self.sum_sq / values as f64 - mean * mean).max(0.0) } else { f64::NAN };
        // Out of range: below or above the bins; for categories, outside the training's top K.
        let last = if b.is_categorical() { 1 } else { self.counts.len() - 1 };
        let outside = if last == 1 { self.counts[1] } else { self.counts[1] + self.counts[last] };
        FeatureStats {
            name: b.name.clone(),
            count: n,
            psi,
            ks,
            mean,
            std: var.sqrt(),
            default_rate: self.counts[0] as f64 / nf,
            out_of_range_rate: outside as f64 / nf,
        }
    }
}

/// A number's buckets with the outer bins open-ended, as PSI sees them: below the range
/// counts in the first bin, above it in the last. The training range ends where its most
/// extreme rows did, and a busy card's 24 h count a little above its training maximum is
/// not a new kind of value; a smoothed empty bucket would read it as drift (one such card
/// holds 14% of the demo's events). The out-of-range rate still reports them.
fn open_ended(shares: &[f64]) -> Vec<f64> {
    let last = shares.len() - 1;
    let mut out = shares.to_vec();
    out[2] += out[1];
    out[last - 1] += out[last];
    out.truncate(last);
    out.remove(1);
    out
}

/// Statistics of one feature (or the score) over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureStats {
    /// Input name or "score".
    pub name: String,
    /// Values observed.
    pub count: u64,
    /// Population stability index against the baseline.
    pub psi: f64,
    /// Kolmogorov–Smirnov statistic on the baseline's bins.
    pub ks: f64,
    /// Mean of non-default values.
    pub mean: f64,
    /// Standard deviation of non-default values.
    pub std: f64,
    /// Share of null (NaN) or default-filled values.
    pub default_rate: f64,
    /// Share of values outside the training range (of a categorical column: in "other").
    pub out_of_range_rate: f64,
}

/// Everything observed in one window, mergeable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Per model input, in row order.
    pub features: Vec<Moments>,
    /// The score.
    pub score: Moments,
    /// A multi-output model's class scores (as many as the baseline has classes).
    pub classes: Vec<Moments>,
    /// Decisions by action name.
    pub actions: std::collections::BTreeMap<String, u64>,
    /// Dead letters by reason code.
    pub dead_letters: std::collections::BTreeMap<String, u64>,
    /// Decided events.
    pub events: u64,
}

impl Window {
    /// An empty window shaped for `b`.
    pub fn new(b: &Baseline) -> Self {
        Self {
            features: b.features.iter().map(|f| Moments::new(f.buckets())).collect(),
            score: Moments::new(b.score.buckets()),
            classes: b.classes.iter().map(|c| Moments::new(c.buckets())).collect(),
            actions: Default::default(),
            dead_letters: Default::default(),
            events: 0,
        }
    }

    /// Observes one decided event: its model row, score and action (a model without
    /// string columns; see [`Window::observe_texts`]).
    #[inline]
    pub fn observe(&mut self, b: &Baseline, row: &[f32], score: f32, action: Action) {
        self.observe_texts(b, row, &[], score, action);
    }

    /// Observes one decided event: its model row's `f32` values and texts (string columns),
    /// score and action.
    #[inline]
    pub fn observe_texts(&mut self, b: &Baseline, row: &[f32], texts: &[String], score: f32, action: Action) {
        for ((m, fb), &v) in self.features.iter_mut().zip(&b.features).zip(row) {
            m.observe(fb, f64::from(v), texts);
        }
        self.score.observe(&b.score, f64::from(score), &[]);
        match self.actions.get_mut(action.label()) {
            Some(n) => *n += 1,
            None => {
                self.actions.insert(action.label().to_string(), 1);
            }
        }
        self.events += 1;
    }

    /// Observes one decided event's class scores (a multi-output model; NaN scores, of an
    /// event decided without the model, count as absent).
    #[inline]
    pub fn observe_classes(&mut self, b: &Baseline, scores: &[f32]) {
        for ((m, cb), &s) in self.classes.iter_mut().zip(&b.classes).zip(scores) {
            m.observe(cb, f64::from(s), &[]);
        }
    }

    /// Counts a dead letter.
    pub fn dead_letter(&mut self, reason: &str) {
        *self.dead_letters.entry(reason.to_string()).or_default() += 1;
    }

    /// Adds `o`'s counts (another worker, instance or window).
    pub fn merge(&mut self, o: &Window) {
        for (a, b) in self.features.iter_mut().zip(&o.features) {
            a.merge(b);
        }
        self.score.merge(&o.score);
        for (a, b) in self.classes.iter_mut().zip(&o.classes) {
            a.merge(b);
        }
        for (k, v) in &o.actions {
            *self.actions.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.dead_letters {
            *self.dead_letters.entry(k.clone()).or_default() += v;
        }
        self.events += o.events;
    }

    /// Statistics per class score (a multi-output model's).
    pub fn class_stats(&self, b: &Baseline) -> Vec<FeatureStats> {
        self.classes.iter().zip(&b.classes).map(|(m, cb)| m.stats(cb)).collect()
    }

    /// Statistics per feature and for the score.
    pub fn stats(&self, b: &Baseline) -> (Vec<FeatureStats>, FeatureStats) {
        (self.features.iter().zip(&b.features).map(|(m, fb)| m.stats(fb)).collect(), self.score.stats(&b.score))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fb() -> FeatureBaseline {
        FeatureBaseline::from_json(
            "x",
            &serde_json::json!({"edges": [0.0, 1.0, 2.0, 4.0], "proportions": [0.25, 0.25, 0.5], "default_rate": 0.0}),
            Some(-1.0),
            None,
        )
        .unwrap()
    }

    #[test]
    fn buckets_follow_numpy_histogram_edges() {
        let b = fb();
        assert_eq!(b.buckets(), 6);
        for (v, want) in
            [(-1.0, 0), (f64::NAN, 0), (-0.5, 1), (0.0, 2), (0.99, 2), (1.0, 3), (2.0, 4), (4.0, 4), (4.01, 5)]
        {
            assert_eq!(b.bucket(v), want, "{v}");
        }
    }

    #[test]
    fn a_single_training_value_is_a_point_mass_bin() {
        let b = FeatureBaseline::from_json(
            "flag",
            &serde_json::json!({"edges": [1.0], "proportions": [], "default_rate": 0.25}),
            Some(0.0),
            None,
        )
        .unwrap();
        assert_eq!((b.bucket(0.0), b.bucket(1.0), b.bucket(0.5), b.bucket(2.0)), (0, 2, 1, 3));
        assert_eq!(b.expected, vec![0.25, 0.0, 0.75, 0.0]);
    }

    #[test]
    fn psi_is_zero_on_the_baseline_and_grows_with_shift() {
        let b = fb();
        let mut m = Moments::new(b.buckets());
        for v in [0.5, 1.5, 3.0, 3.5] {
            for _ in 0..1000 {
                m.observe(&b, v, &[]);
            }
        }
        let s = m.stats(&b);
        assert!(s.psi < 1e-9 && s.ks < 1e-9, "{s:?}");
        let mut shifted = Moments::new(b.buckets());
        for _ in 0..1000 {
            shifted.observe(&b, 3.0, &[]);
            shifted.observe(&b, 5.0, &[]);
        }
        let s = shifted.stats(&b);
        assert!(s.psi > 1.0, "{s:?}");
        assert!((s.out_of_range_rate - 0.5).abs() < 1e-12);
        assert!((s.ks - 0.5).abs() < 1e-12, "half the mass moved past the last edge: {s:?}");
        assert!((s.mean - 4.0).abs() < 1e-12 && (s.std - 1.0).abs() < 1e-12);
    }

    #[test]
    fn values_just_past_the_training_range_count_in_the_outer_bins_for_psi() {
        let b = fb();
        // The training shares, but every value of the first and last bin a little outside the
        // range: PSI sees the same shares; the out-of-range rate sees the half that left.
        let mut m = Moments::new(b.buckets());
        for v in [-0.01, 1.5, 4.01, 4.01] {
            for _ in 0..1000 {
                m.observe(&b, v, &[]);
            }
        }
        let s = m.stats(&b);
        assert!(s.psi < 1e-9, "{s:?}");
        assert!((s.out_of_range_rate - 0.75).abs() < 1e-12, "{s:?}");
        // Mass that moves between bins still counts.
        let mut moved = Moments::new(b.buckets());
        for v in [-0.01, 4.01, 4.01, 4.01] {
            for _ in 0..1000 {
                moved.observe(&b, v, &[]);
            }
        }
        assert!(moved.stats(&b).psi > 1.0);
    }

    #[test]
    fn a_point_mass_baseline_folds_both_sides_into_its_one_bin() {
        let b = FeatureBaseline::from_json(
            "flag",
            &serde_json::json!({"edges": [1.0], "proportions": [], "default_rate": 0.25}),
            Some(0.0),
            None,
        )
        .unwrap();
        assert_eq!(open_ended(&b.expected), vec![0.25, 0.75]);
    }

    #[test]
    fn merged_windows_equal_one_window_over_the_union() {
        let b = Baseline { features: vec![fb()], score: fb(), classes: Vec::new() };
        let (mut a, mut c, mut all) = (Window::new(&b), Window::new(&b), Window::new(&b));
        for i in 0..500 {
            let v = (i % 9) as f32 * 0.5 - 1.0;
            let w = if i % 2 == 0 { &mut a } else { &mut c };
            let action = [Action::APPROVE, Action::REVIEW, Action::DECLINE][i % 3];
            w.observe(&b, &[v], v / 4.0, action);
            all.observe(&b, &[v], v / 4.0, action);
        }
        a.dead_letter("malformed");
        all.dead_letter("malformed");
        a.merge(&c);
        assert_eq!(a, all);
        assert_eq!(a.stats(&b), all.stats(&b));
    }
}
