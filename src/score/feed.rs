//! Feeding a graph input: which row lanes and columns it takes, gathered into a buffer when
//! they are not one whole lane in order, and handed to ONNX Runtime without copying when
//! they are.

use ort::session::SessionInputValue;
use ort::value::{Tensor, TensorRef};

use super::manifest::{self, Manifest, TensorType};
use super::raw::Input;
use crate::core::rows::Rows;

/// One graph input: the lane indices of its columns, and a buffer for gathering them when
/// they are not the whole lane in order.
pub(super) struct Feed {
    /// Graph input name.
    pub(super) name: String,
    ty: TensorType,
    cols: Vec<usize>,
    whole_lane: bool,
    floats: Vec<f32>,
    ints: Vec<i64>,
    texts: Vec<String>,
}

impl Feed {
    pub(super) fn new(m: &Manifest, g: &manifest::GraphInput, lanes: &[manifest::Lane]) -> Self {
        let cols: Vec<usize> = g
            .columns
            .iter()
            .filter_map(|c| m.inputs.iter().position(|i| i.name == *c))
            .map(|i| lanes[i].index)
            .collect();
        let lane_width = lanes.iter().filter(|l| l.ty == g.ty).count();
        let whole_lane = cols.iter().copied().eq(0..lane_width);
        Self {
            name: g.name.clone(),
            ty: g.ty,
            cols,
            whole_lane,
            floats: Vec::new(),
            ints: Vec::new(),
            texts: Vec::new(),
        }
    }

    /// Gathers this feed's columns of rows `r0..r0 + n` into its buffer (unless it is the
    /// whole lane, which is fed in place).
    pub(super) fn gather(&mut self, rows: &Rows, r0: usize, n: usize) {
        if self.whole_lane {
            return;
        }
        match self.ty {
            TensorType::Float32 => {
                self.floats.clear();
                for r in r0..r0 + n {
                    let row = rows.values_row(r);
                    self.floats.extend(self.cols.iter().map(|&c| row[c]));
                }
            }
            TensorType::Int64 => {
                self.ints.clear();
                let w = rows.int_width();
                for r in r0..r0 + n {
                    let row = &rows.ints()[r * w..(r + 1) * w];
                    self.ints.extend(self.cols.iter().map(|&c| row[c]));
                }
            }
            TensorType::String => {
                let k = self.cols.len();
                self.texts.resize(n * k, String::new());
                for (i, r) in (r0..r0 + n).enumerate() {
                    let row = rows.texts_row(r);
                    for (j, &c) in self.cols.iter().enumerate() {
                        let t = &mut self.texts[i * k + j];
                        t.clear();
                        t.push_str(&row[c]);
                    }
                }
            }
        }
    }

    /// This feed's data for rows `r0..r0 + n` and its shape, for a call through the C API
    /// ([`super::raw`]); None for a string input.
    pub(super) fn raw<'a>(&'a self, rows: &'a Rows, r0: usize, n: usize) -> Option<(Input<'a>, [i64; 2])> {
        let shape = [n as i64, self.cols.len() as i64];
        Some(match (self.ty, self.whole_lane) {
            (TensorType::Float32, true) => {
                let w = rows.width();
                (Input::F32(&rows.values()[r0 * w..(r0 + n) * w]), shape)
            }
            (TensorType::Float32, false) => (Input::F32(&self.floats[..]), shape),
            (TensorType::Int64, true) => {
                let w = rows.int_width();
                (Input::I64(&rows.ints()[r0 * w..(r0 + n) * w]), shape)
            }
            (TensorType::Int64, false) => (Input::I64(&self.ints[..]), shape),
            (TensorType::String, _) => return None,
        })
    }

    /// Whether this feed is a string input (fed through the `ort` crate's path).
    pub(super) fn is_text(&self) -> bool {
        self.ty == TensorType::String
    }

    /// This feed's tensor for rows `r0..r0 + n` through the `ort` crate (string inputs take it).
    pub(super) fn value<'a>(&'a self, rows: &'a Rows, r0: usize, n: usize) -> ort::Result<SessionInputValue<'a>> {
        Ok(match self.raw(rows, r0, n) {
            Some((Input::F32(data), [n, k])) => TensorRef::from_array_view(([n as usize, k as usize], data))?.into(),
            Some((Input::I64(data), [n, k])) => TensorRef::from_array_view(([n as usize, k as usize], data))?.into(),
            None => {
                let k = self.cols.len();
                if self.whole_lane {
                    let w = rows.text_width();
                    Tensor::from_string_array(([n, k], &rows.texts()[r0 * w..(r0 + n) * w]))?.into()
                } else {
                    Tensor::from_string_array(([n, k], &self.texts[..n * k]))?.into()
                }
            }
        })
    }
}
