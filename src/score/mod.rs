//! Score stage: ONNX Runtime in-process, one session per worker thread.
//!
//! The runtime library is loaded dynamically ([`init_runtime`]); the path is resolved
//! here (config → `ORT_DYLIB_PATH` → `.cache/onnxruntime/`) so a missing library is a
//! clear start-up error instead of a panic inside `ort`. Each session is checked
//! against the manifest at start-up ([`OnnxScorer::load`]).

pub mod budget;
pub mod live;
pub mod manifest;
pub mod stage;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::SessionInputValue;
use ort::value::{Tensor, TensorElementType, TensorRef, ValueType};

pub use manifest::Manifest;
use manifest::TensorType;

use crate::decode::Rows;

use crate::error::{Policy, StageError};

/// Score-stage failures.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// The ONNX Runtime shared library could not be found or loaded.
    #[error("ONNX Runtime library: {0}")]
    Runtime(String),
    /// `manifest.json` missing or invalid.
    #[error("model manifest: {0}")]
    Manifest(String),
    /// The ONNX graph disagrees with the manifest.
    #[error("model does not match its manifest: {0}")]
    Mismatch(String),
    /// Session creation failed.
    #[error("loading model: {0}")]
    Load(String),
    /// `Session::run` failed on a batch.
    #[error("inference: {0}")]
    Inference(String),
}

impl StageError for ScoreError {
    fn policy(&self) -> Policy {
        match self {
            // A failing run on a loaded, validated model is an engine fault: retrying the
            // same batch is the only way not to lose it.
            ScoreError::Inference(_) => Policy::Retry,
            _ => Policy::Fatal,
        }
    }
}

/// Execution providers verdict can ask ONNX Runtime for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionProviderKind {
    /// Default CPU provider.
    Cpu,
    /// NVIDIA CUDA.
    Cuda,
    /// NVIDIA TensorRT.
    TensorRt,
}

impl ExecutionProviderKind {
    /// Parses `cpu`, `cuda`, `tensorrt`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Some(Self::Cpu),
            "cuda" => Some(Self::Cuda),
            "tensorrt" | "trt" => Some(Self::TensorRt),
            _ => None,
        }
    }

    /// Lowercase label used in logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::TensorRt => "tensorrt",
        }
    }
}

/// The library file name inside the local cache, as fetched by `scripts/fetch-ort.sh`.
pub const ORT_LIB_NAME: &str = "libonnxruntime.so";

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Where the runtime library is looked for, in order.
pub fn library_candidates(configured: Option<&Path>) -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = configured {
        c.push(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        c.push(PathBuf::from(p));
    }
    if let Some(home) = std::env::var_os("VERDICT_HOME") {
        c.push(PathBuf::from(home).join(".cache/onnxruntime").join(ORT_LIB_NAME));
    }
    c.push(PathBuf::from(".cache/onnxruntime").join(ORT_LIB_NAME));
    // Next to the crate, so `cargo test` / `cargo bench` find it from any directory.
    c.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/onnxruntime").join(ORT_LIB_NAME));
    c
}

/// Loads ONNX Runtime once per process. Later calls return the first result.
pub fn init_runtime(configured: Option<&Path>) -> Result<&'static Environment, ScoreError> {
    let result = ENVIRONMENT.get_or_init(|| {
        let candidates = library_candidates(configured);
        let Some(path) = candidates.iter().find(|p| p.is_file()) else {
            return Err(format!(
                "not found; looked in {}. Run scripts/fetch-ort.sh, or set model.ort_library / ORT_DYLIB_PATH",
                candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ));
        };
        let builder = ort::init_from(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let env = builder.with_name("verdict").build().map_err(|e| format!("{}: {e}", path.display()))?;
        tracing::info!(library = %path.display(), "ONNX Runtime loaded");
        Ok(env)
    });
    result.as_ref().map_err(|e| ScoreError::Runtime(e.clone()))
}

/// One ONNX Runtime session, validated against its manifest, scoring [`Rows`].
pub struct OnnxScorer {
    session: Session,
    feeds: Vec<Feed>,
    output_name: String,
    positive_index: usize,
    /// Layout of the rows this model takes (width, int64 and string columns).
    layout: (usize, usize, usize),
    chunk_rows: usize,
    execution_provider: ExecutionProviderKind,
    /// Scoring cost per call and per row measured by the warm-up (µs).
    cost_us: (f64, f64),
}

/// One graph input: the lane indices of its columns, and a buffer for gathering them when
/// they are not the whole lane in order.
struct Feed {
    name: String,
    ty: TensorType,
    cols: Vec<usize>,
    whole_lane: bool,
    floats: Vec<f32>,
    ints: Vec<i64>,
    texts: Vec<String>,
}

impl Feed {
    fn new(m: &Manifest, g: &manifest::GraphInput, lanes: &[manifest::Lane]) -> Self {
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
    fn gather(&mut self, rows: &Rows, r0: usize, n: usize) {
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

    fn value<'a>(&'a self, rows: &'a Rows, r0: usize, n: usize) -> ort::Result<SessionInputValue<'a>> {
        let k = self.cols.len();
        Ok(match (self.ty, self.whole_lane) {
            (TensorType::Float32, true) => {
                let w = rows.width();
                TensorRef::from_array_view(([n, k], &rows.values()[r0 * w..(r0 + n) * w]))?.into()
            }
            (TensorType::Float32, false) => TensorRef::from_array_view(([n, k], &self.floats[..]))?.into(),
            (TensorType::Int64, true) => {
                let w = rows.int_width();
                TensorRef::from_array_view(([n, k], &rows.ints()[r0 * w..(r0 + n) * w]))?.into()
            }
            (TensorType::Int64, false) => TensorRef::from_array_view(([n, k], &self.ints[..]))?.into(),
            (TensorType::String, true) => {
                let w = rows.text_width();
                Tensor::from_string_array(([n, k], &rows.texts()[r0 * w..(r0 + n) * w]))?.into()
            }
            (TensorType::String, false) => Tensor::from_string_array(([n, k], &self.texts[..n * k]))?.into(),
        })
    }
}

/// What is needed to open sessions of one model.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// Model directory.
    pub dir: PathBuf,
    /// Parsed manifest.
    pub manifest: Manifest,
    /// Execution providers in preference order.
    pub providers: Vec<ExecutionProviderKind>,
    /// Intra-op threads per session.
    pub intra_threads: usize,
    /// Rows per `Session::run`.
    pub chunk_rows: usize,
    /// TensorRT engine cache.
    pub tensorrt_cache_dir: PathBuf,
    /// TensorRT FP16 engines.
    pub tensorrt_fp16: bool,
    /// Keep batching even if scores depend on the batch (see [`OnnxScorer::batch_dependence`]).
    pub allow_batch_dependent_scores: bool,
}

impl ModelSpec {
    /// Reads the manifest and resolves the provider preference (config overrides manifest).
    pub fn from_config(cfg: &crate::config::ModelConfig) -> Result<Self, ScoreError> {
        let manifest = Manifest::load(&cfg.dir)?;
        let names = cfg.execution_providers.clone().unwrap_or_else(|| manifest.execution_providers.clone());
        let mut providers = Vec::new();
        for n in &names {
            providers.push(ExecutionProviderKind::parse(n).ok_or_else(|| {
                ScoreError::Manifest(format!("execution provider '{n}' is not cpu, cuda or tensorrt"))
            })?);
        }
        if !providers.contains(&ExecutionProviderKind::Cpu) {
            providers.push(ExecutionProviderKind::Cpu);
        }
        Ok(Self {
            dir: cfg.dir.clone(),
            manifest,
            providers,
            intra_threads: cfg.intra_threads,
            chunk_rows: cfg.chunk_rows,
            tensorrt_cache_dir: cfg.tensorrt_cache_dir.clone(),
            tensorrt_fp16: cfg.tensorrt_fp16,
            allow_batch_dependent_scores: cfg.allow_batch_dependent_scores,
        })
    }
}

/// Builds a session on exactly one provider; `ort` builder errors are not `Send`, so
/// they stay inside this `ort::Result` function.
fn build_session(spec: &ModelSpec, env: &Environment, ep: ExecutionProviderKind) -> ort::Result<Session> {
    let mut builder = Session::builder(env)?.with_intra_threads(spec.intra_threads)?.with_inter_threads(1)?;
    builder = match ep {
        ExecutionProviderKind::Cpu => builder,
        ExecutionProviderKind::Cuda => {
            builder.with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])?
        }
        ExecutionProviderKind::TensorRt => builder.with_execution_providers([ort::ep::TensorRT::default()
            .with_engine_cache(true)
            .with_engine_cache_path(spec.tensorrt_cache_dir.display())
            .with_fp16(spec.tensorrt_fp16)
            .build()
            .error_on_failure()])?,
    };
    builder.commit_from_file(spec.manifest.model_path(&spec.dir))
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
        let mut scorer = Self {
            session,
            feeds: m.feeds().iter().map(|g| Feed::new(m, g, &lanes)).collect(),
            output_name: m.output_name.clone(),
            positive_index: m.positive_index,
            layout: (empty.width(), empty.int_width(), empty.text_width()),
            chunk_rows: spec.chunk_rows.max(1),
            execution_provider: ep,
            cost_us: (0.0, 0.0),
        };
        if spec.chunk_rows == 0 {
            scorer.chunk_rows = scorer.calibrate()?;
        }
        scorer.warm_up(m)?;
        if !spec.allow_batch_dependent_scores && scorer.chunk_rows > 1 {
            if let Some(diff) = scorer.batch_dependence()? {
                tracing::warn!(model = %m.name, version = %m.version, max_abs_diff = diff,
                    "scores depend on the other rows in an ORT call (e.g. dynamic quantization); \
                     scoring one row per call so every decision is reproducible \
                     (model.allow_batch_dependent_scores = true to batch anyway)");
                scorer.chunk_rows = 1;
            }
        }
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
        self.chunk_rows = 1;
        let r = r.and_then(|_| self.score(&rows, &mut alone));
        self.chunk_rows = keep;
        r?;
        let diff = together.iter().zip(&alone).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let same = together.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits());
        Ok((!same).then_some(diff))
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

    /// The provider this session runs on.
    pub fn execution_provider(&self) -> ExecutionProviderKind {
        self.execution_provider
    }

    /// Row width the model expects.
    pub fn width(&self) -> usize {
        self.layout.0
    }

    /// Scores `rows`, appending one probability per row to `out`.
    pub fn score(&mut self, rows: &Rows, out: &mut Vec<f32>) -> Result<(), ScoreError> {
        if (rows.width(), rows.int_width(), rows.text_width()) != self.layout {
            return Err(ScoreError::Mismatch(format!(
                "rows have layout {:?}, the model takes {:?} (float, int64, string columns)",
                (rows.width(), rows.int_width(), rows.text_width()),
                self.layout
            )));
        }
        let mut r0 = 0;
        while r0 < rows.len() {
            let n = self.chunk_rows.min(rows.len() - r0);
            self.run_chunk(rows, r0, n, out).map_err(|e| ScoreError::Inference(e.to_string()))?;
            r0 += n;
        }
        Ok(())
    }

    fn run_chunk(&mut self, rows: &Rows, r0: usize, n: usize, out: &mut Vec<f32>) -> ort::Result<()> {
        let Self { session, feeds, .. } = self;
        for f in feeds.iter_mut() {
            f.gather(rows, r0, n);
        }
        let mut inputs: Vec<(&str, SessionInputValue<'_>)> = Vec::with_capacity(feeds.len());
        for f in feeds.iter() {
            inputs.push((f.name.as_str(), f.value(rows, r0, n)?));
        }
        let outputs = session.run(inputs)?;
        let (shape, data) = outputs[self.output_name.as_str()].try_extract_tensor::<f32>()?;
        if shape.len() == 2 && shape[1] > 1 {
            let cols = shape[1] as usize;
            out.extend((0..n).map(|r| data[r * cols + self.positive_index]));
        } else {
            out.extend_from_slice(&data[..n]);
        }
        Ok(())
    }
}

/// Start-up check: every graph input fed with the right element type and width, and the
/// output's name, type and positive index, against the manifest.
fn check_io(session: &Session, m: &Manifest) -> Result<(), ScoreError> {
    let mismatch = |s: String| Err(ScoreError::Mismatch(s));
    let graph: Vec<_> = session.inputs().iter().map(|i| i.name().to_string()).collect();
    let feeds = m.feeds();
    let mut problems = Vec::new();
    for g in &feeds {
        let Some(input) = session.inputs().iter().find(|i| i.name() == g.name) else {
            problems.push(if m.graph_inputs.is_empty() {
                format!("manifest input_name '{}' is not a graph input; the graph has {graph:?}", g.name)
            } else {
                format!("graph input '{}' is not in the graph; the graph has {graph:?}", g.name)
            });
            continue;
        };
        let want = match g.ty {
            TensorType::Float32 => TensorElementType::Float32,
            TensorType::Int64 => TensorElementType::Int64,
            TensorType::String => TensorElementType::String,
        };
        match input.dtype() {
            ValueType::Tensor { ty, shape, .. } if *ty == want => {
                if shape.len() != 2 {
                    problems.push(format!("input '{}' has rank {}, expected 2 ([rows, columns])", g.name, shape.len()));
                } else if shape[1] >= 0 && shape[1] as usize != g.columns.len() {
                    problems.push(format!(
                        "input '{}' takes {} columns, the manifest feeds it {}",
                        g.name,
                        shape[1],
                        g.columns.len()
                    ));
                }
            }
            other => problems.push(format!("input '{}' is {other:?}, the manifest feeds it {}", g.name, g.ty.label())),
        }
    }
    for name in &graph {
        if !feeds.iter().any(|g| g.name == *name) {
            problems.push(format!("graph input '{name}' is not fed by the manifest"));
        }
    }
    if !problems.is_empty() {
        return mismatch(problems.join("; "));
    }
    let Some(output) = session.outputs().iter().find(|o| o.name() == m.output_name) else {
        let names: Vec<_> = session.outputs().iter().map(|o| o.name().to_string()).collect();
        return mismatch(format!(
            "manifest output_name '{}' is not a graph output; the graph has {names:?}",
            m.output_name
        ));
    };
    match output.dtype() {
        ValueType::Tensor { ty: TensorElementType::Float32, shape, .. } => {
            if shape.len() == 2 && shape[1] > 1 && m.positive_index >= shape[1] as usize {
                return mismatch(format!(
                    "positive_index {} is out of range for output '{}' with {} columns",
                    m.positive_index, m.output_name, shape[1]
                ));
            }
        }
        other => return mismatch(format!("output '{}' is {other:?}, expected a float32 tensor", m.output_name)),
    }
    Ok(())
}
