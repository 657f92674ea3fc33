//! Model hot reload. A watcher fingerprints the model directory (manifest bytes, model file
//! size and mtime) every `model.reload_interval_ms`, and at once on SIGHUP. A changed model is
//! loaded and validated in full before anything serves it:
//!
//! - one session per worker, checked against the manifest;
//! - the manifest's columns against the enrichment names;
//! - a warm-up batch whose scores must all be finite and in [0, 1].
//!
//! Only then is it offered to the workers, under a new generation number. The consumer
//! stamps each batch with the generation in force at dispatch; a worker swaps in the new
//! model (session, vectorizer, decoder, the version it writes in decisions) before it decodes
//! a batch stamped with a newer generation. A batch is never scored by two versions, and
//! versions never go backwards along a partition. A model that fails validation is logged,
//! counted (`verdict_model_reloads_total{result="rejected"}`) and never served.
//!
//! It sits above the stages: a new version is a score-stage session plus the decode stage's
//! column plan for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::decode::Vectorizer;
use crate::score::config::ModelConfig;
use crate::score::{ModelSpec, OnnxScorer, ScoreError};
use crate::telemetry::Metrics;

/// What a worker needs to serve one model version.
pub struct ModelBundle {
    /// Manifest and session options.
    pub spec: Arc<ModelSpec>,
    /// This worker's session.
    pub scorer: OnnxScorer,
    /// The manifest's columns.
    pub vectorizer: Vectorizer,
}

/// Per-worker slots for the newest validated model, and its generation.
pub struct ModelSlots {
    generation: AtomicU64,
    slots: Vec<Mutex<Option<ModelBundle>>>,
}

impl crate::envelope::GenerationSource for ModelSlots {
    fn current_generation(&self) -> u64 {
        self.generation()
    }
}

impl ModelSlots {
    /// Empty slots for `workers` workers, generation 0 (the model loaded at start-up).
    pub fn new(workers: usize) -> Self {
        Self { generation: AtomicU64::new(0), slots: (0..workers).map(|_| Mutex::new(None)).collect() }
    }

    /// The newest generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Worker `i` takes the newest model if one is waiting for it.
    pub fn take(&self, i: usize) -> Option<ModelBundle> {
        self.slots.get(i)?.lock().take()
    }

    fn offer(&self, bundles: Vec<ModelBundle>) -> u64 {
        // Fill every slot before the generation moves, so a worker that sees the new
        // generation always finds its bundle.
        for (slot, b) in self.slots.iter().zip(bundles) {
            *slot.lock() = Some(b);
        }
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// Watches the model directory and offers validated new versions to the workers.
pub struct ModelReloader {
    cfg: ModelConfig,
    enriched: Vec<String>,
    slots: Arc<ModelSlots>,
    metrics: Arc<Metrics>,
    serving: Mutex<(String, String)>,
    fingerprint: Mutex<Vec<u8>>,
    rejected: Mutex<Option<Vec<u8>>>,
    kick: (Sender<()>, Receiver<()>),
}

/// What identifies the model directory's content: the manifest bytes plus the model file's
/// size and modification time.
pub fn fingerprint(cfg: &ModelConfig) -> Vec<u8> {
    let mut out = std::fs::read(cfg.dir.join("manifest.json")).unwrap_or_default();
    if let Ok(m) = serde_json::from_slice::<crate::score::Manifest>(&out) {
        if let Ok(meta) = std::fs::metadata(m.model_path(&cfg.dir)) {
            out.extend_from_slice(&meta.len().to_le_bytes());
            if let Ok(t) = meta.modified() {
                let ns = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
                out.extend_from_slice(&ns.to_le_bytes());
            }
        }
    }
    out
}

impl ModelReloader {
    /// A reloader for the model serving now (`name`, `version`).
    pub fn new(
        cfg: &ModelConfig,
        enriched: &[String],
        slots: Arc<ModelSlots>,
        metrics: Arc<Metrics>,
        name: &str,
        version: &str,
    ) -> Arc<Self> {
        for r in ["applied", "rejected"] {
            metrics.model_reloads.with_label_values(&[r]);
        }
        Arc::new(Self {
            cfg: cfg.clone(),
            enriched: enriched.to_vec(),
            slots,
            metrics,
            serving: Mutex::new((name.to_string(), version.to_string())),
            fingerprint: Mutex::new(fingerprint(cfg)),
            rejected: Mutex::new(None),
            kick: bounded(1),
        })
    }

    /// Asks the watcher to check now (SIGHUP).
    pub fn reload_now(&self) {
        let _ = self.kick.0.try_send(());
    }

    /// Checks the directory; loads, validates and offers a changed model. Returns the new
    /// generation when one was offered.
    pub fn check(&self) -> Option<u64> {
        let fp = fingerprint(&self.cfg);
        if *self.fingerprint.lock() == fp || self.rejected.lock().as_deref() == Some(&fp[..]) {
            return None;
        }
        match self.load() {
            Ok((bundles, name, version, ep)) => {
                let generation = self.slots.offer(bundles);
                let mut serving = self.serving.lock();
                tracing::info!(model = %name, from = %serving.1, to = %version, generation, execution_provider = %ep,
                    "model reloaded");
                *serving = (name.clone(), version.clone());
                *self.fingerprint.lock() = fp;
                *self.rejected.lock() = None;
                self.metrics.model_reloads.with_label_values(&["applied"]).inc();
                self.metrics.set_model(&name, &version, &ep);
                Some(generation)
            }
            Err(e) => {
                let serving = self.serving.lock();
                tracing::error!(error = %e, serving = %serving.1, "new model rejected; the previous one keeps serving");
                self.metrics.model_reloads.with_label_values(&["rejected"]).inc();
                *self.rejected.lock() = Some(fp);
                None
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn load(&self) -> Result<(Vec<ModelBundle>, String, String, String), ScoreError> {
        let spec = Arc::new(ModelSpec::from_config(&self.cfg)?);
        let vectorizer =
            Vectorizer::new(&spec.manifest, &self.enriched).map_err(|e| ScoreError::Mismatch(e.to_string()))?;
        let env = crate::score::init_runtime(self.cfg.ort_library.as_deref())?;
        let mut bundles = Vec::with_capacity(self.cfg.workers);
        let mut ep = String::new();
        for _ in 0..self.cfg.workers {
            let (scorer, _) = OnnxScorer::load(&spec, env)?;
            ep = scorer.execution_provider().label().to_string();
            bundles.push(ModelBundle { spec: spec.clone(), scorer, vectorizer: vectorizer.clone() });
        }
        Ok((bundles, spec.manifest.name.clone(), spec.manifest.version.clone(), ep))
    }

    /// The watcher, to run on its own thread until `cancel` is cancelled: checks every
    /// `interval` and whenever [`Self::reload_now`] asks.
    pub fn watcher(self: &Arc<Self>, interval: Duration, cancel: CancellationToken) -> impl FnOnce() + Send + 'static {
        let me = self.clone();
        move || {
            while crate::backoff::wait_for_kick(&me.kick.1, interval, &cancel) {
                me.check();
            }
        }
    }
}
