//! The never-wedge guards' metrics and the pipeline's failure state (what `/healthz`
//! reports): produce errors, panics, stalls, suppressed logs.

use parking_lot::Mutex;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::names::*;

/// Metrics and state of the never-wedge guards: produce errors, panics, stalls, health.
pub struct Guards {
    /// `verdict_produce_errors_total{error,action}`.
    pub produce_errors: IntCounterVec,
    /// `verdict_dead_letters_truncated_total`.
    pub dead_letters_truncated: IntCounter,
    /// `verdict_panics_total{thread}`.
    pub panics: IntCounterVec,
    /// `verdict_pipeline_failed`.
    pub pipeline_failed: IntGauge,
    /// `verdict_stalled`.
    pub stalled: IntGauge,
    /// `verdict_last_progress_timestamp_seconds`.
    pub last_progress: prometheus::Gauge,
    /// `verdict_log_suppressed_total{source}`.
    pub log_suppressed: IntCounterVec,
    /// `verdict_feature_hash_missing_total{entity}`.
    pub feature_hash_missing: IntCounterVec,
    /// Why the pipeline failed, once it has (what `/healthz` says).
    failure: Mutex<Option<String>>,
}

impl Guards {
    pub(super) fn new(registry: &Registry) -> Self {
        let cv = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap();
            registry.register(Box::new(c.clone())).unwrap();
            c
        };
        let produce_errors =
            cv(PRODUCE_ERRORS, "Produce errors by error code and the action taken", &["error", "action"]);
        let panics = cv(PANICS, "Panics caught while processing a batch", &["thread"]);
        let log_suppressed = cv(LOG_SUPPRESSED, "Repeated log lines dropped by the rate limit", &["source"]);
        let feature_hash_missing =
            cv(FEATURE_HASH_MISSING, "Online-feature reads that found no hash for the entity", &["entity"]);
        let dead_letters_truncated =
            IntCounter::new(DEAD_LETTERS_TRUNCATED, "Dead-letter copies truncated to fit the producer's limit")
                .unwrap();
        registry.register(Box::new(dead_letters_truncated.clone())).unwrap();
        let pipeline_failed = IntGauge::new(PIPELINE_FAILED, "1 once a pipeline thread ended unexpectedly").unwrap();
        registry.register(Box::new(pipeline_failed.clone())).unwrap();
        let stalled =
            IntGauge::new(STALLED, "1 while batches are in flight but none was acknowledged for stall_timeout_s")
                .unwrap();
        registry.register(Box::new(stalled.clone())).unwrap();
        let last_progress =
            prometheus::Gauge::new(LAST_PROGRESS, "Wall-clock time a batch was last acknowledged (s)").unwrap();
        registry.register(Box::new(last_progress.clone())).unwrap();
        Self {
            produce_errors,
            dead_letters_truncated,
            panics,
            pipeline_failed,
            stalled,
            last_progress,
            log_suppressed,
            feature_hash_missing,
            failure: Mutex::new(None),
        }
    }

    /// Records that the pipeline cannot go on (a thread ended, a refused output under
    /// `on_refused = "stop"`): `/healthz` fails from now on, with `why`. The first reason wins.
    pub fn fail(&self, why: impl Into<String>) {
        let mut f = self.failure.lock();
        if f.is_none() {
            let why = why.into();
            tracing::error!(reason = %why, "pipeline failed; /healthz now fails");
            *f = Some(why);
        }
        self.pipeline_failed.set(1);
    }

    /// Why the pipeline failed, if it has.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }
}
