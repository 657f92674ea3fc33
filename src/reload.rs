//! Model hot reload. A watcher fingerprints the model directory (manifest bytes, model file
//! size and mtime) every `model.reload_interval_ms`, and at once on SIGHUP. A changed model is
//! loaded and validated in full before anything serves it:
//!
//! - one session per worker, checked against the manifest;
//! - the manifest's columns against the enrichment names;
//! - a warm-up batch whose scores must all be finite and in [0, 1].
//!
//! Only then is it offered to the workers, under a new generation number: at once to serve
//! (`model.rollout.mode = "immediate"`), or, guarded, as a trial scored alongside the
//! serving version until [`crate::rollout`] promotes it, refuses it, or after a promotion
//! rolls back to the previous version (each a change under a new generation). The consumer
//! stamps each batch with the generation in force at dispatch; a worker swaps in the new
//! model (session, vectorizer, decoder, the version it writes in decisions) before it decodes
//! a batch stamped with a newer generation. A batch is never scored by two versions as the
//! serving one, and the serving version changes along a partition only at a generation. A model that fails validation is logged,
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
use crate::rollout::{Rollout, Step, Trial};
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

/// A change a worker applies before it decodes a batch stamped with its generation (or a
/// later one).
pub enum Change {
    /// Serve this version (immediate mode); any trial is dropped.
    Serve(Box<ModelBundle>),
    /// Score this version alongside the serving one (guarded rollout), or stop.
    Trial(Option<Box<Trial>>),
    /// The trial serves; the serving version becomes the trial, reporting under `epoch`.
    Promote {
        /// The watch's epoch.
        epoch: u64,
    },
    /// The trial (the previous version) serves again; the serving one is dropped.
    RollBack,
}

/// How often a version on trial is judged at the least (`model.reload_interval_ms` may be
/// longer, or 0: only on SIGHUP).
const JUDGE_EVERY: Duration = Duration::from_secs(1);

/// Per-worker queues of model changes, and the generation of the newest.
pub struct ModelSlots {
    generation: AtomicU64,
    slots: Vec<Mutex<Vec<(u64, Change)>>>,
}

impl crate::envelope::GenerationSource for ModelSlots {
    fn current_generation(&self) -> u64 {
        self.generation()
    }
}

impl ModelSlots {
    /// Empty slots for `workers` workers, generation 0 (the model loaded at start-up).
    pub fn new(workers: usize) -> Self {
        Self { generation: AtomicU64::new(0), slots: (0..workers).map(|_| Mutex::new(Vec::new())).collect() }
    }

    /// The newest generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Worker `i` takes the newest version to serve, if one is waiting for it (the changes
    /// before it are dropped).
    pub fn take(&self, i: usize) -> Option<ModelBundle> {
        let changes = std::mem::take(&mut *self.slots.get(i)?.lock());
        changes.into_iter().filter_map(|(_, c)| if let Change::Serve(b) = c { Some(*b) } else { None }).last()
    }

    /// Worker `i` takes, in order, the changes up to `generation`.
    pub fn take_changes(&self, i: usize, generation: u64) -> Vec<Change> {
        let Some(slot) = self.slots.get(i) else { return Vec::new() };
        let mut q = slot.lock();
        let n = q.iter().take_while(|(g, _)| *g <= generation).count();
        q.drain(..n).map(|(_, c)| c).collect()
    }

    /// Queues one change per worker under a new generation, and returns it.
    fn offer(&self, changes: impl IntoIterator<Item = Change>) -> u64 {
        // Queue every change before the generation moves, so a worker that sees the new
        // generation always finds its change.
        let generation = self.generation() + 1;
        for (slot, c) in self.slots.iter().zip(changes) {
            slot.lock().push((generation, c));
        }
        self.generation.store(generation, Ordering::SeqCst);
        generation
    }
}

/// The guarded rollout's view of the reloader: the state machine and the specs of the
/// versions it holds.
struct Guarded {
    rollout: Arc<Rollout>,
    /// Review and decline thresholds (agreement of band actions).
    bands: Arc<[f32]>,
    /// The serving version, the candidate, the previous version in the watch.
    specs: Mutex<Specs>,
}

/// The specs of the serving version (`.0`), the candidate (`.1`) and the previous version
/// in the watch (`.2`).
struct Specs(Arc<ModelSpec>, Option<Arc<ModelSpec>>, Option<Arc<ModelSpec>>);

/// Watches the model directory and offers validated new versions to the workers.
pub struct ModelReloader {
    cfg: ModelConfig,
    enriched: Vec<String>,
    /// The serving model's classes (a multi-output model's; empty otherwise): a new version
    /// must keep them.
    classes: Vec<String>,
    slots: Arc<ModelSlots>,
    metrics: Arc<Metrics>,
    serving: Mutex<(String, String)>,
    fingerprint: Mutex<Vec<u8>>,
    rejected: Mutex<Option<Vec<u8>>>,
    guarded: Option<Guarded>,
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
    /// A reloader for the model serving now (`name`, `version`); new versions serve as soon
    /// as they validate, unless [`Self::with_rollout`] guards them.
    pub fn new(
        cfg: &ModelConfig,
        enriched: &[String],
        slots: Arc<ModelSlots>,
        metrics: Arc<Metrics>,
        name: &str,
        version: &str,
    ) -> Arc<Self> {
        Arc::new(Self::unguarded(cfg, enriched, slots, metrics, name, version))
    }

    fn unguarded(
        cfg: &ModelConfig,
        enriched: &[String],
        slots: Arc<ModelSlots>,
        metrics: Arc<Metrics>,
        name: &str,
        version: &str,
    ) -> Self {
        for r in ["applied", "rejected"] {
            metrics.model_reloads.with_label_values(&[r]);
        }
        // The serving model was loaded from this directory a moment ago: its classes.
        let classes = ModelSpec::from_config(cfg).map(|s| s.manifest.classes).unwrap_or_default();
        Self {
            cfg: cfg.clone(),
            enriched: enriched.to_vec(),
            classes,
            slots,
            metrics,
            serving: Mutex::new((name.to_string(), version.to_string())),
            fingerprint: Mutex::new(fingerprint(cfg)),
            rejected: Mutex::new(None),
            guarded: None,
            kick: bounded(1),
        }
    }

    /// A reloader whose new versions go through `rollout` (`model.rollout.mode = "guarded"`)
    /// against `serving`, the version serving now; `bands` are the decision vocabulary's band
    /// boundaries (`Actions::thresholds`).
    pub fn guarded(
        cfg: &ModelConfig,
        enriched: &[String],
        slots: Arc<ModelSlots>,
        metrics: Arc<Metrics>,
        serving: Arc<ModelSpec>,
        rollout: Arc<Rollout>,
        bands: Arc<[f32]>,
    ) -> Arc<Self> {
        let (name, version) = (serving.manifest.name.clone(), serving.manifest.version.clone());
        let mut me = Self::unguarded(cfg, enriched, slots, metrics, &name, &version);
        me.metrics.set_rollout(&version, None, None);
        me.guarded = Some(Guarded { rollout, bands, specs: Mutex::new(Specs(serving, None, None)) });
        Arc::new(me)
    }

    /// Asks the watcher to check now (SIGHUP).
    pub fn reload_now(&self) {
        let _ = self.kick.0.try_send(());
    }

    /// Checks the directory; loads and validates a changed model and offers it (to serve,
    /// or, guarded, on trial); then, guarded, judges the trial. Returns the new generation
    /// when one was offered.
    pub fn check(&self) -> Option<u64> {
        let fp = fingerprint(&self.cfg);
        let candidate = self.guarded.as_ref().and_then(|g| g.rollout.candidate_fingerprint());
        let known = *self.fingerprint.lock() == fp
            || self.rejected.lock().as_deref() == Some(&fp[..])
            || candidate.as_deref() == Some(&fp[..]);
        let offered = if known { None } else { self.load_new(fp) };
        self.step().or(offered)
    }

    /// Loads the changed directory (`fp`) and offers it.
    fn load_new(&self, fp: Vec<u8>) -> Option<u64> {
        let (bundles, name, version, ep) = match self.load() {
            Ok(loaded) => loaded,
            Err(e) => {
                let serving = self.serving.lock();
                tracing::error!(error = %e, serving = %serving.1, "new model rejected; the previous one keeps serving");
                self.metrics.model_reloads.with_label_values(&["rejected"]).inc();
                *self.rejected.lock() = Some(fp);
                return None;
            }
        };
        let Some(g) = &self.guarded else {
            let generation = self.slots.offer(bundles.into_iter().map(|b| Change::Serve(Box::new(b))));
            let mut serving = self.serving.lock();
            tracing::info!(model = %name, from = %serving.1, to = %version, generation, execution_provider = %ep,
                "model reloaded");
            *serving = (name.clone(), version.clone());
            *self.fingerprint.lock() = fp;
            *self.rejected.lock() = None;
            self.metrics.model_reloads.with_label_values(&["applied"]).inc();
            self.metrics.set_model(&name, &version, &ep);
            return Some(generation);
        };
        let serving_version = self.serving.lock().1.clone();
        let spec = bundles[0].spec.clone();
        let mut specs = g.specs.lock();
        let same_inputs =
            spec.manifest.inputs == specs.0.manifest.inputs && spec.manifest.lanes() == specs.0.manifest.lanes();
        if !same_inputs {
            let why = "its inputs differ from the serving model's, so it cannot be scored on the same rows \
                       (model.rollout.mode = \"immediate\" swaps it in)";
            g.rollout.refuse(&name, &version, &serving_version, why.to_string());
            self.metrics.model_reloads.with_label_values(&["rejected"]).inc();
            *self.rejected.lock() = Some(fp);
            return None;
        }
        let score_baseline =
            |s: &ModelSpec| crate::drift::Baseline::from_manifest(&s.manifest).ok().flatten().map(|b| b.score);
        let serving_fp = self.fingerprint.lock().clone();
        let serving_spec = specs.0.clone();
        let epoch = g.rollout.candidate(
            &name,
            &version,
            fp,
            score_baseline(&spec),
            (&serving_version, serving_fp, score_baseline(&serving_spec)),
        );
        // A watch in progress ends: its previous version is dropped with the trial it was.
        specs.1 = Some(spec);
        specs.2 = None;
        let share = g.rollout.config().share;
        let trials = bundles.into_iter().map(|b| {
            let (name, version) = (b.spec.manifest.name.clone(), b.spec.manifest.version.clone());
            let observed = g.rollout.observed().clone();
            Change::Trial(Some(Box::new(Trial::new(
                b.scorer,
                name,
                version,
                b.vectorizer,
                epoch,
                share,
                observed,
                g.bands.clone(),
            ))))
        });
        Some(self.slots.offer(trials))
    }

    /// Judges the trial and offers what the judgement changes.
    fn step(&self) -> Option<u64> {
        let g = self.guarded.as_ref()?;
        let step = g.rollout.tick()?;
        let mut specs = g.specs.lock();
        let workers = self.slots.slots.len();
        let (change, to): (fn(u64) -> Change, _) = match &step {
            Step::Refuse { fingerprint } => {
                *self.rejected.lock() = Some(fingerprint.clone());
                self.metrics.model_reloads.with_label_values(&["rejected"]).inc();
                specs.1 = None;
                (|_| Change::Trial(None), None)
            }
            Step::Keep => {
                specs.2 = None;
                (|_| Change::Trial(None), None)
            }
            Step::Promote { fingerprint, .. } => {
                *self.fingerprint.lock() = fingerprint.clone();
                self.metrics.model_reloads.with_label_values(&["applied"]).inc();
                let new = specs.1.take().expect("a candidate's spec while it is on trial");
                specs.2 = Some(std::mem::replace(&mut specs.0, new));
                (|epoch| Change::Promote { epoch }, Some(specs.0.clone()))
            }
            Step::RollBack { refused, serving } => {
                *self.rejected.lock() = Some(refused.clone());
                *self.fingerprint.lock() = serving.clone();
                let previous = specs.2.take().expect("the previous version's spec during the watch");
                specs.0 = previous;
                (|_| Change::RollBack, Some(specs.0.clone()))
            }
        };
        let epoch = if let Step::Promote { epoch, .. } = step { epoch } else { 0 };
        let generation = self.slots.offer((0..workers).map(|_| change(epoch)));
        if let Some(spec) = to {
            let ep = self.metrics.execution_provider_label();
            *self.serving.lock() = (spec.manifest.name.clone(), spec.manifest.version.clone());
            self.metrics.set_model(&spec.manifest.name, &spec.manifest.version, &ep);
        }
        Some(generation)
    }

    #[allow(clippy::type_complexity)]
    fn load(&self) -> Result<(Vec<ModelBundle>, String, String, String), ScoreError> {
        let spec = Arc::new(ModelSpec::from_config(&self.cfg)?);
        if spec.manifest.classes != self.classes {
            return Err(ScoreError::Mismatch(format!(
                "its classes {:?} differ from the serving model's {:?}: rules (scores.<class>) and decision \
                 records name them, so a restart is needed to change them",
                spec.manifest.classes, self.classes
            )));
        }
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
    /// `interval` and whenever [`Self::reload_now`] asks; while a version is on trial, at
    /// least every second, so that it is judged on time.
    pub fn watcher(self: &Arc<Self>, interval: Duration, cancel: CancellationToken) -> impl FnOnce() + Send + 'static {
        let me = self.clone();
        move || loop {
            let on_trial = me.guarded.as_ref().is_some_and(|g| g.rollout.on_trial());
            let wait = if on_trial { interval.min(JUDGE_EVERY) } else { interval };
            if !crate::backoff::wait_for_kick(&me.kick.1, wait, &cancel) {
                return;
            }
            me.check();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(changes: &[Change]) -> Vec<&'static str> {
        changes
            .iter()
            .map(|c| match c {
                Change::Serve(_) => "serve",
                Change::Trial(_) => "trial",
                Change::Promote { .. } => "promote",
                Change::RollBack => "rollback",
            })
            .collect()
    }

    #[test]
    fn a_worker_takes_every_change_up_to_its_batch_generation_in_order() {
        let slots = ModelSlots::new(2);
        assert_eq!(slots.offer((0..2).map(|_| Change::Promote { epoch: 7 })), 1);
        assert_eq!(slots.offer((0..2).map(|_| Change::RollBack)), 2);
        // Worker 0 decides a batch stamped 1: the promotion only; the rollback waits.
        assert_eq!(kinds(&slots.take_changes(0, 1)), ["promote"]);
        assert_eq!(kinds(&slots.take_changes(0, 2)), ["rollback"]);
        // Worker 1 was idle: a batch stamped 2 applies both, in order (a rollback alone would
        // swap in the wrong session).
        assert_eq!(kinds(&slots.take_changes(1, 2)), ["promote", "rollback"]);
        assert!(slots.take_changes(1, 2).is_empty());
        assert_eq!(slots.generation(), 2);
    }
}
