//! Opening a model's session: the execution providers, what a session is built from
//! ([`ModelSpec`]), building it on one provider, and checking its inputs and output against
//! the manifest at start-up.

use std::path::PathBuf;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{TensorElementType, ValueType};

use super::manifest::{Manifest, TensorType};
use super::ScoreError;

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
    pub fn from_config(cfg: &super::config::ModelConfig) -> Result<Self, ScoreError> {
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
pub(super) fn build_session(spec: &ModelSpec, env: &Environment, ep: ExecutionProviderKind) -> ort::Result<Session> {
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

/// Start-up check: every graph input fed with the right element type and width, and the
/// output's name, type and positive index, against the manifest.
pub(super) fn check_io(session: &Session, m: &Manifest) -> Result<(), ScoreError> {
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
        ValueType::Tensor { ty: TensorElementType::Float32, shape, .. } if !m.classes.is_empty() => {
            let k = m.classes.len();
            if shape.len() != 2 || (shape[1] >= 0 && shape[1] as usize != k) {
                return mismatch(format!(
                    "output '{}' has shape {shape:?}; the manifest names {k} classes, so it must be [rows, {k}]",
                    m.output_name
                ));
            }
        }
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
