//! Wires the stages with bounded channels and owns their threads.
//!
//! ```text
//! consume thread ──batches (bounded)──▶ N workers ──completed (bounded)──▶ acker ──(bounded)──▶ offsets
//!   (poll, batch,                       (decode, score,                     (await acks in order,   (checkpoint to Redis,
//!    pause when full)                    decide, produce)                    record latency)         then store offsets)
//! ```
//!
//! Shutdown order: stop fetching → flush the partial batch → workers drain →
//! acker awaits every delivery → the offset thread writes the last checkpoints and stores
//! offsets → watchers end → the drift publisher
//! publishes the last window → synchronous commit → close. Every thread is joined.
//! [`Pipeline::abort`] (and `Drop`) is the crash-like path: nothing more is stored.
//!
//! `start.rs` builds the stages and starts the threads; `threads.rs` owns them (the
//! cancellation tree's children, the sentinel that fails `/healthz`, joining).

mod start;
mod threads;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::consume::{commit_stored, Control, KafkaConsumer};
use crate::drift::{BaselineError, CodecError};
use crate::enrich::EnrichError;
use crate::error::{Policy, StageError};
use crate::publish::{PublishError, Publisher};
use crate::redact::Secrets;
use crate::reload::ModelReloader;
use crate::rules::live::InvalidRules;
use crate::rules::RulesHandle;
use crate::score::ScoreError;
use crate::telemetry::Metrics;

pub use start::load_scorers;
pub use threads::SpawnError;
use threads::Threads;

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Model, manifest or runtime problem.
    #[error(transparent)]
    Score(#[from] ScoreError),
    /// The manifest's drift baseline is malformed.
    #[error("model manifest: {0}")]
    Baseline(#[from] BaselineError),
    /// Avro schemas could not be loaded: every problem.
    #[error("schemas: {0}")]
    Schemas(#[source] crate::decode::SchemaErrors),
    /// The schema registry refused or could not take verdict's record schemas, or its
    /// client could not be built.
    #[error("{0}")]
    Registry(#[source] Scrubbed<crate::decode::registry::RegistryError>),
    /// The Kafka consumer could not be created or subscribed.
    #[error("kafka: {0}")]
    Kafka(#[source] Scrubbed<rdkafka::error::KafkaError>),
    /// The Kafka producer could not be created.
    #[error("kafka: {0}")]
    Publisher(#[source] Scrubbed<PublishError>),
    /// The enrich stage could not start (config, or the state store unreachable).
    #[error("enrich: {0}")]
    Enrich(#[source] Scrubbed<EnrichError>),
    /// The rules file is invalid: every problem.
    #[error("rules: {0}")]
    Rules(#[from] InvalidRules),
    /// The drift record schema does not parse.
    #[error("drift: {0}")]
    Drift(#[from] CodecError),
    /// A pipeline thread could not be started.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// `publish.redact` names a model input the model does not have, or its key is unreadable.
    #[error("{0}")]
    Redact(#[from] crate::publish::redact::RedactError),
}

impl StageError for StartError {
    fn policy(&self) -> Policy {
        Policy::Fatal
    }
}

/// An error shown with the configuration's secrets masked ([`Secrets::scrub`]). The typed
/// error is kept ([`Scrubbed::inner`]); its source chain is the inner error's, so nothing
/// unscrubbed is displayed through it.
pub struct Scrubbed<E> {
    shown: String,
    /// Boxed: start-up errors are rare, and `Result<_, StartError>` stays small.
    inner: Box<E>,
}

impl<E: std::error::Error> Scrubbed<E> {
    /// `inner`, displayed with `secrets` masked.
    pub fn new(inner: E, secrets: &Secrets) -> Self {
        Self { shown: secrets.scrub(&inner.to_string()), inner: Box::new(inner) }
    }

    /// The error itself (its message may name a secret: do not display it).
    pub fn inner(&self) -> &E {
        &self.inner
    }
}

impl<E> std::fmt::Display for Scrubbed<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl<E> std::fmt::Debug for Scrubbed<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Scrubbed").field(&self.shown).finish()
    }
}

impl<E: std::error::Error + 'static> std::error::Error for Scrubbed<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

/// What [`Pipeline::shutdown`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Everything consumed was delivered and committed within the timeout.
    pub clean: bool,
    /// Time taken.
    pub elapsed: Duration,
}

/// The serving model as started.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Manifest name.
    pub name: String,
    /// Manifest version.
    pub version: String,
    /// Execution provider the sessions run on.
    pub execution_provider: String,
}

/// A running pipeline.
pub struct Pipeline {
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    consumer: Option<Arc<KafkaConsumer>>,
    publisher: Publisher,
    threads: Threads,
    model: ModelInfo,
    rules: Arc<RulesHandle>,
    models: Arc<ModelReloader>,
    /// Partition-owned window state (final checkpoints on a graceful stop).
    partitions: Option<Arc<crate::enrich::owned::Partitions>>,
}

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    fn new(
        control: Arc<Control>,
        metrics: Arc<Metrics>,
        consumer: Arc<KafkaConsumer>,
        publisher: Publisher,
        threads: Threads,
        model: ModelInfo,
        rules: Arc<RulesHandle>,
        models: Arc<ModelReloader>,
    ) -> Self {
        Self { control, metrics, consumer: Some(consumer), publisher, threads, model, rules, models, partitions: None }
    }

    /// The model reloader (check now with [`crate::reload::ModelReloader::reload_now`]).
    pub fn models(&self) -> &Arc<ModelReloader> {
        &self.models
    }

    /// The rules in force (reload on SIGHUP with [`RulesHandle::reload_now`]).
    pub fn rules(&self) -> &Arc<RulesHandle> {
        &self.rules
    }

    /// This pipeline's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Why the pipeline cannot go on, once it cannot (a thread ended unexpectedly, a refused
    /// output under `on_refused = "stop"`, a fatal producer error); `/healthz` fails then.
    pub fn failure(&self) -> Option<String> {
        self.metrics.guards.failure()
    }

    /// The serving model.
    pub fn model(&self) -> &ModelInfo {
        &self.model
    }

    /// Graceful stop: drain, deliver, commit. Past `timeout`, aborts what is left
    /// (those events are re-delivered to the group later: at-least-once). Every thread is
    /// joined; one that does not end in time is named in a log line.
    pub fn shutdown(mut self, timeout: Duration) -> ShutdownReport {
        let start = Instant::now();
        let clean = self.threads.drain(start + timeout);
        if !clean {
            self.control.abort();
            tracing::warn!("shutdown timed out; undelivered events will be re-processed by the group");
        }
        if let Some(consumer) = self.consumer.take() {
            // Every batch is acknowledged: a final checkpoint per partition, so a restart
            // replays nothing.
            if let (true, Some(p)) = (clean, &self.partitions) {
                p.release_all(&*consumer);
            }
            commit_stored(&consumer, &self.metrics);
            // Everything stored is committed. The revoke callback that close runs must not
            // commit again: a synchronous commit inside librdkafka's close can block for
            // ever (seen on the mock cluster when a pipeline stops right after it started).
            self.control.abort();
            close(consumer);
        }
        self.publisher.flush(Duration::from_secs(5));
        let report = ShutdownReport { clean, elapsed: start.elapsed() };
        tracing::info!(clean, elapsed_ms = report.elapsed.as_millis() as u64, "pipeline stopped");
        report
    }

    /// Crash-like stop: no more offsets are stored, nothing is flushed or committed
    /// beyond what librdkafka already had. Every thread is joined (up to 10 s).
    pub fn abort(mut self) {
        self.abort_inner();
    }

    fn abort_inner(&mut self) {
        self.threads.abort(Instant::now() + Duration::from_secs(10));
        if let Some(c) = self.consumer.take() {
            close(c);
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if self.threads.any() || self.consumer.is_some() {
            self.abort_inner();
        }
    }
}

/// Drops the last consumer handle: librdkafka's close runs the revoke callback and
/// leaves the group, so the partitions move to the remaining members at once.
/// (An explicit `unsubscribe()` first leaves a cooperative rebalance half-done and the
/// group then waits for this member's session to time out.)
fn close(consumer: Arc<KafkaConsumer>) {
    drop(consumer);
}
