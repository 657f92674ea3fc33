//! The scorer: one validated ONNX Runtime session scoring [`Rows`] in chunks, with its
//! start-up calibration, warm-up and batch-invariance check.

use ort::environment::Environment;
use ort::session::{Session, SessionInputValue};

use super::feed::Feed;
use super::manifest::{self, Manifest, TensorType};
use super::session::{build_session, check_io, ExecutionProviderKind, ModelSpec};
use super::{budget, ScoreError};
use crate::core::rows::Rows;

/// One ONNX Runtime session, validated against its manifest, scoring [`Rows`].
pub struct OnnxScorer {
    session: Session,
    feeds: Vec<Feed>,
    output_name: String,
    positive_index: usize,
    /// Multi-output models: the classes (empty: one positive-class score).
    classes: std::sync::Arc<crate::core::decision::Classes>,
    /// Multi-output models: every class score of the last [`OnnxScorer::score`] call, one
    /// row of `classes.len()` per scored row.
    class_out: Vec<f32>,
    /// Layout of the rows this model takes (width, int64 and string columns).
    layout: (usize, usize, usize),
    chunk_rows: usize,
    execution_provider: ExecutionProviderKind,
    /// Scoring cost per call and per row measured by the warm-up (µs).
    cost_us: (f64, f64),
    /// Every call is padded to `chunk_rows` rows (see [`OnnxScorer::padded_invariance`]).
    pad_calls: bool,
    /// The padded call's rows.
    padded: Rows,
    /// Calls through the C API (no Rust allocation per call); None when an input is a
    /// string tensor, which goes through the `ort` crate.
    raw: Option<super::raw::RawRun>,
}

impl OnnxScorer {
    /// Opens a session on the first provider that works, then checks it against the manifest.
    /// Returns the scorer and the providers that were tried and failed.
    pub fn load(
        spec: &ModelSpec,
        env: &Environment,
    ) -> Result<(Self, Vec<(ExecutionProviderKind, String)>), ScoreError> {
        let path = spec.manifest.model_path(&spec.dir);
        if !path.is_file() {
            return Err(ScoreError::Load(format!("{} not found", path.display())));
        }
        super::integrity::check_file(&spec.manifest, &path)?;
        let mut failures = Vec::new();
        let mut opened = None;
        for &ep in &spec.providers {
            match build_session(spec, env, ep) {
                Ok(s) => {
                    opened = Some((s, ep));
                    break;
                }
                Err(e) => failures.push((ep, e.to_string())),
            }
        }
        let Some((session, ep)) = opened else {
            let all = failures.iter().map(|(ep, e)| format!("{}: {e}", ep.label())).collect::<Vec<_>>().join("; ");
            return Err(ScoreError::Load(all));
        };
        let m = &spec.manifest;
        check_io(&session, m)?;
        let lanes = m.lanes();
        let empty = Rows::for_manifest(m);
        let feeds: Vec<Feed> = m.feeds().iter().map(|g| Feed::new(m, g, &lanes)).collect();
        let raw = match feeds.iter().any(Feed::is_text) {
            true => None,
            false => Some(
                super::raw::RawRun::new(feeds.iter().map(|f| f.name.as_str()), &m.output_name)
                    .map_err(|e| ScoreError::Load(e.to_string()))?,
            ),
        };
        let mut scorer = Self {
            session,
            feeds,
            output_name: m.output_name.clone(),
            positive_index: m.positive_index,
            classes: std::sync::Arc::new(crate::core::decision::Classes {
                names: m.classes.clone(),
                top_k: m.top_k,
                min_score: m.min_score,
            }),
            class_out: Vec::new(),
            layout: (empty.width(), empty.int_width(), empty.text_width()),
            chunk_rows: spec.chunk_rows.max(1),
            execution_provider: ep,
            cost_us: (0.0, 0.0),
            pad_calls: false,
            padded: empty,
            raw,
        };
        if spec.chunk_rows == 0 {
            scorer.chunk_rows = scorer.calibrate()?;
        }
        scorer.warm_up(m)?;
        if !spec.allow_batch_dependent_scores && scorer.chunk_rows > 1 {
            if let Some(diff) = scorer.batch_dependence()? {
                if scorer.padded_invariance()? {
                    tracing::info!(model = %m.name, version = %m.version, max_abs_diff = diff,
                        chunk_rows = scorer.chunk_rows,
                        "scores depend on an ORT call's row count (GPU kernels chosen by shape), not \
                         on its other rows: every call is padded to chunk_rows rows so every \
                         decision is reproducible");
                    scorer.pad_calls = true;
                } else {
                    tracing::warn!(model = %m.name, version = %m.version, max_abs_diff = diff,
                        "scores depend on the other rows in an ORT call (e.g. dynamic quantization); \
                         scoring one row per call so every decision is reproducible \
                         (model.allow_batch_dependent_scores = true to batch anyway)");
                    scorer.chunk_rows = 1;
                }
            }
        }
        super::integrity::check_vectors(&mut scorer, m)?;
        Ok((scorer, failures))
    }

    /// Scores a warm-up batch before the model serves: zeros, ones, a ramp and, when the
    /// manifest has a training baseline, every float column at its training minimum and at
    /// its maximum (where reduced-precision models overflow). Every score must be finite and
    /// in [0, 1].
    pub fn warm_up(&mut self, m: &Manifest) -> Result<(), ScoreError> {
        let mut rows = self.synthetic_rows(16, 37, 100, 1.0, 0.0);
        rows.row_mut(0).values.fill(0.0);
        rows.row_mut(1).values.fill(1.0);
        let mut what = vec!["zeros".to_string(), "ones".into()];
        what.extend((2..16).map(|i| format!("synthetic row {i}")));
        let lanes = m.lanes();
        let edge = |c: &manifest::InputColumn, last: bool| {
            let edges = m.baseline.as_ref()?.get("features")?.get(&c.name)?.get("edges")?.as_array()?;
            (if last { edges.last() } else { edges.first() })?.as_f64()
        };
        for (last, label) in [(false, "training minima"), (true, "training maxima")] {
            let found: Vec<(usize, f64)> = m
                .inputs
                .iter()
                .zip(&lanes)
                .enumerate()
                .filter(|(_, (_, l))| l.ty == TensorType::Float32)
                .filter_map(|(i, (c, _))| edge(c, last).map(|v| (i, v)))
                .collect();
            if found.is_empty() {
                continue;
            }
            let row = rows.push();
            for (i, v) in found {
                row.values[i] = v as f32;
            }
            what.push(format!("every float column at its {label}"));
        }
        let mut out = Vec::with_capacity(rows.len());
        self.score(&rows, &mut out)?;
        let k = self.classes.len().max(1);
        if let Some(i) = self.class_out.iter().position(|s| !s.is_finite() || *s < 0.0 || *s > 1.0) {
            return Err(ScoreError::Mismatch(format!(
                "warm-up score {} of class '{}' for {} is not a probability in [0, 1]",
                self.class_out[i],
                self.classes.names[i % k],
                what[i / k]
            )));
        }
        // Once more, and with one row, for the costs per call and per row (the first run
        // pays one-time set-up).
        let t = std::time::Instant::now();
        self.score(&rows, &mut Vec::with_capacity(rows.len()))?;
        let all_us = t.elapsed().as_secs_f64() * 1e6;
        let mut one = self.empty_rows();
        one.push_copy(&rows, 2);
        let t = std::time::Instant::now();
        self.score(&one, &mut Vec::with_capacity(1))?;
        let one_us = t.elapsed().as_secs_f64() * 1e6;
        let (n, calls) = (rows.len() as f64, rows.len().div_ceil(self.chunk_rows) as f64);
        let row_us = if n > calls { ((all_us - calls * one_us) / (n - calls)).max(0.0) } else { all_us / n };
        self.cost_us = ((one_us - row_us).max(0.0), row_us);
        match out.iter().position(|s| !s.is_finite() || *s < 0.0 || *s > 1.0) {
            Some(k) => Err(ScoreError::Mismatch(format!(
                "warm-up score {} for {} is not a probability in [0, 1]",
                out[k], what[k]
            ))),
            None if out.len() != rows.len() => {
                Err(ScoreError::Mismatch(format!("warm-up: {} scores for {} rows", out.len(), rows.len())))
            }
            None => Ok(()),
        }
    }

    /// Rows per ORT call that score fastest on this machine (`model.chunk_rows = 0`): each
    /// candidate size is timed for a few milliseconds on synthetic rows. Tree ensembles and
    /// MLPs peak at very different sizes; this measures instead of assuming.
    pub fn calibrate(&mut self) -> Result<usize, ScoreError> {
        const SIZES: [usize; 9] = [1, 8, 16, 32, 64, 128, 256, 512, 1024];
        let all = self.synthetic_rows(1024, 37, 101, 10.0, 0.0);
        let mut rows = self.empty_rows();
        let mut out = Vec::with_capacity(1024);
        let mut best = (0.0f64, 64usize);
        let mut table = Vec::new();
        for &n in &SIZES {
            self.chunk_rows = n;
            rows.clear();
            (0..n).for_each(|k| rows.push_copy(&all, k));
            let start = std::time::Instant::now();
            let mut done = 0usize;
            while start.elapsed() < std::time::Duration::from_millis(4) || done < 3 * n {
                out.clear();
                self.score(&rows, &mut out)?;
                done += n;
            }
            let rate = done as f64 / start.elapsed().as_secs_f64();
            table.push(format!("{n}:{rate:.0}"));
            if rate > best.0 {
                best = (rate, n);
            }
        }
        tracing::debug!(rows_per_s = %table.join(" "), chosen = best.1, "chunk_rows calibrated");
        Ok(best.1)
    }

    /// Whether a row's score depends on the other rows of its ORT call: 32 synthetic rows
    /// scored together and one by one. Returns the largest difference, None if bit-identical.
    /// Tree ensembles and fp32 MLPs are batch-invariant; dynamically quantized models are not
    /// (their activation scale is computed over the whole input).
    pub fn batch_dependence(&mut self) -> Result<Option<f32>, ScoreError> {
        let n = 32;
        let rows = self.synthetic_rows(n, 53, 89, 3.0, 5.0);
        let keep = self.chunk_rows;
        let (mut together, mut alone) = (Vec::with_capacity(n), Vec::with_capacity(n));
        self.chunk_rows = n;
        let r = self.score(&rows, &mut together);
        // Multi-output models: every class score is compared, not only each row's best.
        let together_classes = std::mem::take(&mut self.class_out);
        self.chunk_rows = 1;
        let r = r.and_then(|_| self.score(&rows, &mut alone));
        self.chunk_rows = keep;
        r?;
        together.extend_from_slice(&together_classes);
        alone.extend_from_slice(&self.class_out);
        let diff = together.iter().zip(&alone).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let same = together.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits());
        Ok((!same).then_some(diff))
    }

    /// Whether calls of exactly `chunk_rows` rows make scores independent of the other rows:
    /// 32 synthetic rows scored together (in padded calls) and each alone in its own padded
    /// call, bit for bit. Models whose rows interact (dynamic quantization) fail this too; a
    /// GPU GEMM whose kernel depends only on the call's shape passes.
    pub fn padded_invariance(&mut self) -> Result<bool, ScoreError> {
        let n = 32;
        let rows = self.synthetic_rows(n, 53, 89, 3.0, 5.0);
        let keep = self.pad_calls;
        self.pad_calls = true;
        let (mut together, mut alone) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut one = self.empty_rows();
        let mut r = self.score(&rows, &mut together);
        let mut together_classes = std::mem::take(&mut self.class_out);
        let mut alone_classes: Vec<Vec<f32>> = Vec::with_capacity(n);
        for k in (0..n).rev() {
            // Last row first: a row's place in the call differs from its place together.
            one.clear();
            one.push_copy(&rows, k);
            r = r.and_then(|_| self.score(&one, &mut alone));
            alone_classes.push(self.class_out.clone());
        }
        self.pad_calls = keep;
        r?;
        alone.reverse();
        alone.extend(alone_classes.into_iter().rev().flatten());
        together.append(&mut together_classes);
        Ok(together.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()))
    }

    /// Empty rows with this model's layout.
    pub fn empty_rows(&self) -> Rows {
        let (w, i, t) = self.layout;
        Rows::with_layout(w, i, t)
    }

    /// `n` deterministic rows of varied values (calibration, batch-invariance check, warm-up).
    pub fn synthetic_rows(&self, n: usize, mul: usize, modulo: usize, div: f32, sub: f32) -> Rows {
        const WORDS: [&str; 5] = ["a", "b", "unseen", "", "zz"];
        let mut rows = self.empty_rows();
        for r in 0..n {
            let row = rows.push();
            let w = row.values.len();
            for (c, v) in row.values.iter_mut().enumerate() {
                *v = (((r * w + c) * mul) % modulo) as f32 / div - sub;
            }
            for (c, v) in row.ints.iter_mut().enumerate() {
                *v = (((r + c) * mul) % 7) as i64;
            }
            for (c, t) in row.texts.iter_mut().enumerate() {
                t.push_str(WORDS[(r + c) % WORDS.len()]);
            }
        }
        rows
    }

    /// The scoring cost measured at load (per ORT call and per row): where the deadline
    /// check starts before it has measured real batches.
    pub fn scoring_cost(&self) -> budget::ScoringCost {
        budget::ScoringCost::new(self.chunk_rows, self.cost_us.0, self.cost_us.1)
    }

    /// Rows per ORT call in use.
    pub fn chunk_rows(&self) -> usize {
        self.chunk_rows
    }

    /// Whether every call is padded to [`Self::chunk_rows`] rows (a model whose scores
    /// depend on the call's shape, not on its other rows).
    pub fn pads_calls(&self) -> bool {
        self.pad_calls
    }

    /// The provider this session runs on.
    pub fn execution_provider(&self) -> ExecutionProviderKind {
        self.execution_provider
    }

    /// Row width the model expects.
    pub fn width(&self) -> usize {
        self.layout.0
    }

    /// A multi-output model's classes (empty for a one-score model).
    pub fn classes(&self) -> &std::sync::Arc<crate::core::decision::Classes> {
        &self.classes
    }

    /// A multi-output model's class scores from the last [`OnnxScorer::score`] call:
    /// `classes().len()` per scored row (empty for a one-score model).
    pub fn class_scores(&self) -> &[f32] {
        &self.class_out
    }

    /// Scores `rows`, appending one probability per row to `out` (a multi-output model's
    /// best class score; every class score in [`OnnxScorer::class_scores`]).
    pub fn score(&mut self, rows: &Rows, out: &mut Vec<f32>) -> Result<(), ScoreError> {
        if (rows.width(), rows.int_width(), rows.text_width()) != self.layout {
            return Err(ScoreError::Mismatch(format!(
                "rows have layout {:?}, the model takes {:?} (float, int64, string columns)",
                (rows.width(), rows.int_width(), rows.text_width()),
                self.layout
            )));
        }
        self.class_out.clear();
        let mut r0 = 0;
        while r0 < rows.len() {
            let n = self.chunk_rows.min(rows.len() - r0);
            let run = if self.pad_calls && n < self.chunk_rows {
                // The call's rows, then copies of its first row up to the fixed call size.
                let mut padded = std::mem::replace(&mut self.padded, Rows::with_layout(0, 0, 0));
                padded.clear();
                (r0..r0 + n).for_each(|k| padded.push_copy(rows, k));
                (n..self.chunk_rows).for_each(|_| padded.push_copy(rows, r0));
                let (before, classes_before) = (out.len(), self.class_out.len());
                let run = self.run_chunk(&padded, 0, self.chunk_rows, out);
                out.truncate(before + n);
                self.class_out.truncate(classes_before + n * self.classes.len());
                self.padded = padded;
                run
            } else {
                self.run_chunk(rows, r0, n, out)
            };
            run.map_err(|e| ScoreError::Inference(e.to_string()))?;
            r0 += n;
        }
        Ok(())
    }

    fn run_chunk(&mut self, rows: &Rows, r0: usize, n: usize, out: &mut Vec<f32>) -> ort::Result<()> {
        let Self { session, feeds, raw, output_name, positive_index, class_out, classes, .. } = self;
        for f in feeds.iter_mut() {
            f.gather(rows, r0, n);
        }
        let k = classes.len();
        let mut read = |shape: &[i64], data: &[f32]| -> ort::Result<()> {
            if k > 0 {
                // Every class score kept; the row's score is its best (the first, on a tie).
                let rows = data.get(..n * k).ok_or_else(|| {
                    ort::Error::new(format!("output '{output_name}' has shape {shape:?}, expected [{n}, {k}]"))
                })?;
                class_out.extend_from_slice(rows);
                out.extend(rows.chunks_exact(k).map(|r| r.iter().copied().fold(f32::NEG_INFINITY, f32::max)));
            } else if shape.len() == 2 && shape[1] > 1 {
                let cols = shape[1] as usize;
                if *positive_index >= cols || data.len() < n * cols {
                    return Err(ort::Error::new(format!(
                        "output '{output_name}' has shape {shape:?}, expected [{n}, > {positive_index}]"
                    )));
                }
                out.extend((0..n).map(|r| data[r * cols + *positive_index]));
            } else {
                let scores = data.get(..n).ok_or_else(|| {
                    ort::Error::new(format!("output '{output_name}' has shape {shape:?}, expected {n} rows"))
                })?;
                out.extend_from_slice(scores);
            }
            Ok(())
        };
        if let Some(raw) = raw {
            let inputs: smallvec::SmallVec<[_; 4]> = feeds.iter().filter_map(|f| f.raw(rows, r0, n)).collect();
            return raw.run(session, &inputs, read);
        }
        let mut inputs: Vec<(&str, SessionInputValue<'_>)> = Vec::with_capacity(feeds.len());
        for f in feeds.iter() {
            inputs.push((f.name.as_str(), f.value(rows, r0, n)?));
        }
        let outputs = session.run(inputs)?;
        let (shape, data) = outputs[output_name.as_str()].try_extract_tensor::<f32>()?;
        read(&shape[..], data)
    }
}
