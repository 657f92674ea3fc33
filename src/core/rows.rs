//! The model input rows of a batch ([`Rows`]): one `f32` matrix every column writes,
//! plus exact int64 and string lanes for the columns that feed such graph inputs.
//!
//! In `core` because the decode stage fills them, the enrich stage completes them, the
//! score stage feeds them to the model and drift reads them: no stage owns them.

use super::manifest::{Lane, Manifest, TensorType};

/// The model input rows of a batch.
///
/// Every column has an `f32` value (`values`, row-major, one per manifest column): what a
/// float32 graph input receives, and what drift statistics see. Columns feeding an int64
/// graph input also have their exact value in `ints`, and string columns their text in
/// `texts` (their `f32` value is 0, or NaN when the default was used).
#[derive(Debug, Clone, Default)]
pub struct Rows {
    width: usize,
    int_width: usize,
    text_width: usize,
    n: usize,
    values: Vec<f32>,
    ints: Vec<i64>,
    /// Longer than `n * text_width` when rows were removed: the strings keep their buffers.
    texts: Vec<String>,
}

/// One row of [`Rows`], being filled.
#[derive(Debug)]
pub struct RowMut<'a> {
    /// Every column as `f32`.
    pub values: &'a mut [f32],
    /// Exact values of the int64-lane columns.
    pub ints: &'a mut [i64],
    /// Texts of the string-lane columns.
    pub texts: &'a mut [String],
}

impl Rows {
    /// Empty rows for the manifest's columns.
    pub fn for_manifest(m: &Manifest) -> Self {
        let lanes = m.lanes();
        let count = |t| lanes.iter().filter(|l| l.ty == t).count();
        Self::with_layout(m.inputs.len(), count(TensorType::Int64), count(TensorType::String))
    }

    /// Empty rows of `width` columns, `ints` of them int64 and `texts` strings.
    pub fn with_layout(width: usize, ints: usize, texts: usize) -> Self {
        Self { width, int_width: ints, text_width: texts, ..Self::default() }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Columns per row (every manifest column).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Int64-lane columns per row.
    pub fn int_width(&self) -> usize {
        self.int_width
    }

    /// String-lane columns per row.
    pub fn text_width(&self) -> usize {
        self.text_width
    }

    /// Removes every row (string buffers are kept for reuse).
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Keeps the first `n` rows.
    pub fn truncate(&mut self, n: usize) {
        if n < self.n {
            self.n = n;
            self.values.truncate(n * self.width);
            self.ints.truncate(n * self.int_width);
        }
    }

    /// Appends a zeroed row and returns it.
    pub fn push(&mut self) -> RowMut<'_> {
        self.n += 1;
        self.values.resize(self.n * self.width, 0.0);
        self.ints.resize(self.n * self.int_width, 0);
        if self.texts.len() < self.n * self.text_width {
            self.texts.resize(self.n * self.text_width, String::new());
        }
        self.row_mut(self.n - 1)
    }

    /// Row `k`, for filling.
    pub fn row_mut(&mut self, k: usize) -> RowMut<'_> {
        let (w, iw, tw) = (self.width, self.int_width, self.text_width);
        RowMut {
            values: &mut self.values[k * w..(k + 1) * w],
            ints: &mut self.ints[k * iw..(k + 1) * iw],
            texts: &mut self.texts[k * tw..(k + 1) * tw],
        }
    }

    /// Appends a copy of `other`'s row `k` (same layout).
    pub fn push_copy(&mut self, other: &Rows, k: usize) {
        let row = self.push();
        row.values.copy_from_slice(other.values_row(k));
        row.ints.copy_from_slice(&other.ints[k * other.int_width..(k + 1) * other.int_width]);
        for (t, s) in row.texts.iter_mut().zip(other.texts_row(k)) {
            t.clear();
            t.push_str(s);
        }
    }

    /// Every row's `f32` values, row-major.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Row `k`'s `f32` values.
    pub fn values_row(&self, k: usize) -> &[f32] {
        &self.values[k * self.width..(k + 1) * self.width]
    }

    /// Every row's int64-lane values, row-major.
    pub fn ints(&self) -> &[i64] {
        &self.ints
    }

    /// Row `k`'s texts.
    pub fn texts_row(&self, k: usize) -> &[String] {
        &self.texts[k * self.text_width..(k + 1) * self.text_width]
    }

    /// Every row's texts, row-major.
    pub fn texts(&self) -> &[String] {
        &self.texts[..self.n * self.text_width]
    }

    /// Row `k` as JSON, one value per column: floats as `f32` (null for NaN), int64-lane
    /// columns as integers, string columns as text. `verdict vectorize` prints this.
    pub fn row_json(&self, lanes: &[Lane], k: usize) -> Vec<serde_json::Value> {
        lanes
            .iter()
            .zip(self.values_row(k))
            .map(|(lane, &v)| match lane.ty {
                TensorType::Float32 if v.is_nan() => serde_json::Value::Null,
                TensorType::Float32 => serde_json::json!(v),
                TensorType::Int64 => serde_json::json!(self.ints[k * self.int_width + lane.index]),
                TensorType::String => serde_json::json!(self.texts_row(k)[lane.index]),
            })
            .collect()
    }
}
