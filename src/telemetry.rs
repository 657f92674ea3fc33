//! Metrics, health and logs: the only place metric names live.
//!
//! Each pipeline owns one [`Metrics`] (its own Prometheus registry, so several
//! pipelines in one test process do not mix their counts). The HTTP server
//! serves `/metrics`, `/healthz` and `/readyz` from it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::error::DeadLetterReason;

/// `verdict_events_total{stage,outcome}`: events leaving each stage, by outcome.
pub const EVENTS_TOTAL: &str = "verdict_events_total";
/// `verdict_dead_letters_total{reason}`: events routed to the dead-letter topic.
pub const DEAD_LETTERS_TOTAL: &str = "verdict_dead_letters_total";
/// `verdict_stage_seconds{stage}`: wall time per batch in each stage.
pub const STAGE_SECONDS: &str = "verdict_stage_seconds";
/// `verdict_batch_events`: events per dispatched batch.
pub const BATCH_EVENTS: &str = "verdict_batch_events";
/// `verdict_queue_depth{queue}`: batches waiting in each bounded queue.
pub const QUEUE_DEPTH: &str = "verdict_queue_depth";
/// `verdict_consumer_lag{topic,partition}`: messages behind the high watermark.
pub const CONSUMER_LAG: &str = "verdict_consumer_lag";
/// `verdict_partitions_assigned`: partitions this instance owns.
pub const PARTITIONS_ASSIGNED: &str = "verdict_partitions_assigned";
/// `verdict_model_info{model,version,execution_provider}`: 1 for the serving model.
pub const MODEL_INFO: &str = "verdict_model_info";
/// `verdict_execution_provider_fallbacks_total{requested,used}`.
pub const EP_FALLBACKS: &str = "verdict_execution_provider_fallbacks_total";
/// `verdict_pipeline_latency_seconds`: poll → every output acknowledged, per event.
pub const PIPELINE_LATENCY: &str = "verdict_pipeline_latency_seconds";
/// `verdict_event_latency_seconds`: Kafka message timestamp → decision acknowledged (ms resolution).
pub const EVENT_LATENCY: &str = "verdict_event_latency_seconds";
/// `verdict_commits_total{result}`: offset commits.
pub const COMMITS_TOTAL: &str = "verdict_commits_total";
/// `verdict_delivery_retries_total`: produce deliveries that failed and were re-sent.
pub const DELIVERY_RETRIES: &str = "verdict_delivery_retries_total";
/// `verdict_consumer_paused`: 1 while partitions are paused for backpressure.
pub const CONSUMER_PAUSED: &str = "verdict_consumer_paused";
/// `verdict_enrich_round_trips_total`: round trips to the state store (one per batch).
pub const ENRICH_ROUND_TRIPS: &str = "verdict_enrich_round_trips_total";
/// `verdict_enrich_commands_total`: script calls sent (one per entity per batch).
pub const ENRICH_COMMANDS: &str = "verdict_enrich_commands_total";
/// `verdict_window_updates_total{result}`: applied, replayed (fenced) or late.
pub const WINDOW_UPDATES: &str = "verdict_window_updates_total";
/// `verdict_enrich_failures_total`: batches whose state-store call failed.
pub const ENRICH_FAILURES: &str = "verdict_enrich_failures_total";
/// `verdict_degraded_events_total`: events decided with default features (store down).
pub const DEGRADED_EVENTS: &str = "verdict_degraded_events_total";
/// `verdict_state_store_up`: 1 when the last state-store call succeeded.
pub const STATE_STORE_UP: &str = "verdict_state_store_up";
/// `verdict_feature_cache_total{result}`: online-feature cache hits and misses.
pub const FEATURE_CACHE: &str = "verdict_feature_cache_total";
/// `verdict_window_state_cache_total{result}`: entity window groups stored in Redis by a
/// compare-and-set of verdict's copy of the state (`written`), whose copy had changed in
/// Redis meanwhile (`conflict`: applied by the script instead), or applied by the script
/// because there was no copy or it did not know a distinct value (`miss`).
pub const WINDOW_STATE_CACHE: &str = "verdict_window_state_cache_total";
/// `verdict_rule_hits_total{rule,mode}`: rules that fired, enforce or monitor.
pub const RULE_HITS: &str = "verdict_rule_hits_total";
/// `verdict_rule_errors_total`: rule conditions that could not be evaluated (absent value, type).
pub const RULE_ERRORS: &str = "verdict_rule_errors_total";
/// `verdict_rules_reloads_total{result}`: rules files applied or rejected.
pub const RULES_RELOADS: &str = "verdict_rules_reloads_total";
/// `verdict_rules_info{version,rules}`: 1 for the rules version in force.
pub const RULES_INFO: &str = "verdict_rules_info";
/// `verdict_rules_list_refreshes_total{result}`: named-list refreshes.
pub const RULES_LIST_REFRESHES: &str = "verdict_rules_list_refreshes_total";
/// `verdict_rules_list_entries{list}`: entries in each named list.
pub const RULES_LIST_SIZE: &str = "verdict_rules_list_entries";
/// `verdict_feature_psi{model,feature}`: PSI of the last drift window ("score" for the score).
pub const FEATURE_PSI: &str = "verdict_feature_psi";
/// `verdict_feature_ks{model,feature}`: KS statistic of the last drift window.
pub const FEATURE_KS: &str = "verdict_feature_ks";
/// `verdict_feature_mean{model,feature}`: mean of non-default values in the last window.
pub const FEATURE_MEAN: &str = "verdict_feature_mean";
/// `verdict_feature_default_rate{model,feature}`: share null or default-filled in the last window.
pub const FEATURE_DEFAULT_RATE: &str = "verdict_feature_default_rate";
/// `verdict_feature_out_of_range_rate{model,feature}`: share outside the training range.
pub const FEATURE_OUT_OF_RANGE_RATE: &str = "verdict_feature_out_of_range_rate";
/// `verdict_feature_drift_state{model,feature}`: 0 ok, 1 warn, 2 alert (PSI thresholds).
pub const FEATURE_DRIFT_STATE: &str = "verdict_feature_drift_state";
/// `verdict_action_rate{model,action}`: share of decisions per action in the last window.
pub const ACTION_RATE: &str = "verdict_action_rate";
/// `verdict_dead_letter_rate{model,reason}`: share of events dead-lettered in the last window.
pub const DEAD_LETTER_RATE: &str = "verdict_dead_letter_rate";
/// `verdict_labels_total{result}`: scored events kept / not_kept; labels joined, unknown, invalid.
pub const LABELS_TOTAL: &str = "verdict_labels_total";
/// `verdict_label_precision{model,threshold}`: precision of joined labels, last drift window.
pub const LABEL_PRECISION: &str = "verdict_label_precision";
/// `verdict_label_recall{model,threshold}`: recall of joined labels, last drift window.
pub const LABEL_RECALL: &str = "verdict_label_recall";
/// `verdict_label_brier{model}`: Brier score of joined labels, last drift window.
pub const LABEL_BRIER: &str = "verdict_label_brier";
/// `verdict_model_reloads_total{result}`: new model versions applied or rejected.
pub const MODEL_RELOADS: &str = "verdict_model_reloads_total";
/// `verdict_shadow_decisions_total{agree}`: shadow verdicts, agreeing with the decision or not.
pub const SHADOW_DECISIONS: &str = "verdict_shadow_decisions_total";
/// `verdict_fallback_decisions_total`: events decided without the model (deadline passed).
pub const FALLBACK_DECISIONS: &str = "verdict_fallback_decisions_total";
/// `verdict_deadline_reserve_seconds`: time the deadline check keeps back beyond its predicted
/// scoring time (a decaying maximum of how far check → acknowledgement exceeded it).
pub const DEADLINE_RESERVE: &str = "verdict_deadline_reserve_seconds";
/// `verdict_batch_limit`: the current batch-size cap (`batch.score_budget_us`).
pub const BATCH_LIMIT: &str = "verdict_batch_limit";
/// `verdict_drift_windows_total`: drift windows closed and published.
pub const DRIFT_WINDOWS: &str = "verdict_drift_windows_total";
/// `verdict_feature_defaults_total`: model inputs filled with their default.
pub const FEATURE_DEFAULTS: &str = "verdict_feature_defaults_total";

/// `verdict_produce_errors_total{error,action}`: produce errors by librdkafka error code and
/// what verdict did (`retried`, `dead_lettered`, `skipped`, `stopped`).
pub const PRODUCE_ERRORS: &str = "verdict_produce_errors_total";
/// `verdict_dead_letters_truncated_total`: dead-letter copies cut to fit the producer's limit.
pub const DEAD_LETTERS_TRUNCATED: &str = "verdict_dead_letters_truncated_total";
/// `verdict_panics_total{thread}`: panics caught while processing a batch (the batch's events
/// are dead-lettered as `internal_error`, the thread goes on).
pub const PANICS: &str = "verdict_panics_total";
/// `verdict_pipeline_failed`: 1 once a pipeline thread ended unexpectedly (`/healthz` fails
/// and the process exits).
pub const PIPELINE_FAILED: &str = "verdict_pipeline_failed";
/// `verdict_stalled`: 1 while batches are in flight but none was acknowledged for
/// `telemetry.stall_timeout_s` (`/readyz` fails).
pub const STALLED: &str = "verdict_stalled";
/// `verdict_last_progress_timestamp_seconds`: wall-clock time a batch was last acknowledged.
pub const LAST_PROGRESS: &str = "verdict_last_progress_timestamp_seconds";
/// `verdict_log_suppressed_total{source}`: repeated log lines dropped by the rate limit.
pub const LOG_SUPPRESSED: &str = "verdict_log_suppressed_total";
/// `verdict_feature_hash_missing_total{entity}`: online-feature reads that found no hash.
pub const FEATURE_HASH_MISSING: &str = "verdict_feature_hash_missing_total";

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
    fn new(registry: &Registry) -> Self {
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

/// All metrics of one pipeline, plus the state `/readyz` reports.
pub struct Metrics {
    registry: Registry,
    /// See [`EVENTS_TOTAL`].
    pub events: IntCounterVec,
    /// See [`DEAD_LETTERS_TOTAL`].
    pub dead_letters: IntCounterVec,
    /// See [`STAGE_SECONDS`].
    pub stage_seconds: HistogramVec,
    /// See [`BATCH_EVENTS`].
    pub batch_events: Histogram,
    /// See [`QUEUE_DEPTH`].
    pub queue_depth: IntGaugeVec,
    /// See [`CONSUMER_LAG`].
    pub consumer_lag: IntGaugeVec,
    /// See [`PARTITIONS_ASSIGNED`].
    pub partitions_assigned: IntGauge,
    /// See [`MODEL_INFO`].
    pub model_info: IntGaugeVec,
    /// See [`EP_FALLBACKS`].
    pub ep_fallbacks: IntCounterVec,
    /// See [`PIPELINE_LATENCY`].
    pub pipeline_latency: Histogram,
    /// See [`EVENT_LATENCY`].
    pub event_latency: Histogram,
    /// See [`COMMITS_TOTAL`].
    pub commits: IntCounterVec,
    /// See [`DELIVERY_RETRIES`].
    pub delivery_retries: IntCounter,
    /// See [`CONSUMER_PAUSED`].
    pub paused: IntGauge,
    /// See [`ENRICH_ROUND_TRIPS`].
    pub enrich_round_trips: IntCounter,
    /// See [`ENRICH_COMMANDS`].
    pub enrich_commands: IntCounter,
    /// See [`WINDOW_UPDATES`].
    pub window_updates: IntCounterVec,
    /// See [`ENRICH_FAILURES`].
    pub enrich_failures: IntCounter,
    /// See [`DEGRADED_EVENTS`].
    pub degraded_events: IntCounter,
    /// See [`STATE_STORE_UP`].
    pub state_store_up: IntGauge,
    /// See [`FEATURE_CACHE`].
    pub feature_cache: IntCounterVec,
    /// See [`WINDOW_STATE_CACHE`].
    pub window_state_cache: IntCounterVec,
    /// See [`FEATURE_DEFAULTS`].
    pub feature_defaults: IntCounter,
    /// See [`RULE_HITS`].
    pub rule_hits: IntCounterVec,
    /// See [`RULE_ERRORS`].
    pub rule_errors: IntCounter,
    /// See [`RULES_RELOADS`].
    pub rules_reloads: IntCounterVec,
    /// See [`RULES_INFO`].
    pub rules_info: IntGaugeVec,
    /// See [`RULES_LIST_REFRESHES`].
    pub rules_list_refreshes: IntCounterVec,
    /// See [`RULES_LIST_SIZE`].
    pub rules_list_size: IntGaugeVec,
    /// See [`FEATURE_PSI`].
    pub feature_psi: GaugeVec,
    /// See [`FEATURE_KS`].
    pub feature_ks: GaugeVec,
    /// See [`FEATURE_MEAN`].
    pub feature_mean: GaugeVec,
    /// See [`FEATURE_DEFAULT_RATE`].
    pub feature_default_rate: GaugeVec,
    /// See [`FEATURE_OUT_OF_RANGE_RATE`].
    pub feature_out_of_range_rate: GaugeVec,
    /// See [`FEATURE_DRIFT_STATE`].
    pub feature_drift_state: IntGaugeVec,
    /// See [`ACTION_RATE`].
    pub action_rate: GaugeVec,
    /// See [`DEAD_LETTER_RATE`].
    pub dead_letter_rate: GaugeVec,
    /// See [`DRIFT_WINDOWS`].
    pub drift_windows: IntCounter,
    /// See [`MODEL_RELOADS`].
    pub model_reloads: IntCounterVec,
    /// See [`SHADOW_DECISIONS`].
    pub shadow_decisions: IntCounterVec,
    /// See [`FALLBACK_DECISIONS`].
    pub fallback_decisions: IntCounter,
    /// See [`BATCH_LIMIT`].
    pub batch_limit: IntGauge,
    /// `verdict_deadline_reserve_seconds` (also the value the deadline check uses).
    pub deadline_reserve: prometheus::Gauge,
    /// See [`LABELS_TOTAL`].
    pub labels: IntCounterVec,
    /// See [`LABEL_PRECISION`].
    pub label_precision: GaugeVec,
    /// See [`LABEL_RECALL`].
    pub label_recall: GaugeVec,
    /// See [`LABEL_BRIER`].
    pub label_brier: GaugeVec,
    /// Exact pipeline-latency distribution in µs, for the demo and benchmark summaries.
    latency_us: Mutex<hdrhistogram::Histogram<u64>>,
    /// Exact event-latency distribution (Kafka timestamp → acknowledged) in ms.
    event_latency_ms: Mutex<hdrhistogram::Histogram<u64>>,
    model_loaded: AtomicBool,
    execution_provider: Mutex<String>,
    /// Produce errors, panics, stalls and health.
    pub guards: Guards,
}

fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.000_1, 2.0, 18).expect("valid buckets")
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let events =
            IntCounterVec::new(Opts::new(EVENTS_TOTAL, "Events leaving each stage, by outcome"), &["stage", "outcome"])
                .unwrap();
        let dead_letters = IntCounterVec::new(
            Opts::new(DEAD_LETTERS_TOTAL, "Events sent to the dead-letter topic, by reason"),
            &["reason"],
        )
        .unwrap();
        let stage_seconds = HistogramVec::new(
            HistogramOpts::new(STAGE_SECONDS, "Wall time per batch in each stage").buckets(latency_buckets()),
            &["stage"],
        )
        .unwrap();
        let batch_events = Histogram::with_opts(
            HistogramOpts::new(BATCH_EVENTS, "Events per batch")
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 15).unwrap()),
        )
        .unwrap();
        let queue_depth =
            IntGaugeVec::new(Opts::new(QUEUE_DEPTH, "Batches waiting in each bounded queue"), &["queue"]).unwrap();
        let consumer_lag =
            IntGaugeVec::new(Opts::new(CONSUMER_LAG, "Messages behind the high watermark"), &["topic", "partition"])
                .unwrap();
        let partitions_assigned = IntGauge::new(PARTITIONS_ASSIGNED, "Partitions assigned to this instance").unwrap();
        let model_info =
            IntGaugeVec::new(Opts::new(MODEL_INFO, "The serving model"), &["model", "version", "execution_provider"])
                .unwrap();
        let ep_fallbacks = IntCounterVec::new(
            Opts::new(EP_FALLBACKS, "Sessions that fell back from a preferred execution provider"),
            &["requested", "used"],
        )
        .unwrap();
        let pipeline_latency = Histogram::with_opts(
            HistogramOpts::new(PIPELINE_LATENCY, "Poll to every output acknowledged, per event")
                .buckets(latency_buckets()),
        )
        .unwrap();
        let event_latency = Histogram::with_opts(
            HistogramOpts::new(EVENT_LATENCY, "Message timestamp to decision acknowledged, per event")
                .buckets(latency_buckets()),
        )
        .unwrap();
        let commits = IntCounterVec::new(Opts::new(COMMITS_TOTAL, "Offset commits by result"), &["result"]).unwrap();
        let delivery_retries = IntCounter::new(DELIVERY_RETRIES, "Failed deliveries that were re-sent").unwrap();
        let paused = IntGauge::new(CONSUMER_PAUSED, "1 while partitions are paused for backpressure").unwrap();
        let enrich_round_trips = IntCounter::new(ENRICH_ROUND_TRIPS, "Round trips to the state store").unwrap();
        let enrich_commands = IntCounter::new(ENRICH_COMMANDS, "Script calls sent to the state store").unwrap();
        let window_updates =
            IntCounterVec::new(Opts::new(WINDOW_UPDATES, "Window updates by result"), &["result"]).unwrap();
        let enrich_failures = IntCounter::new(ENRICH_FAILURES, "Batches whose state-store call failed").unwrap();
        let degraded_events = IntCounter::new(DEGRADED_EVENTS, "Events decided with default features").unwrap();
        let state_store_up = IntGauge::new(STATE_STORE_UP, "1 when the last state-store call succeeded").unwrap();
        let feature_cache =
            IntCounterVec::new(Opts::new(FEATURE_CACHE, "Online-feature cache lookups"), &["result"]).unwrap();
        let window_state_cache =
            IntCounterVec::new(Opts::new(WINDOW_STATE_CACHE, "Window state cache use by result"), &["result"]).unwrap();
        registry.register(Box::new(window_state_cache.clone())).unwrap();
        let feature_defaults = IntCounter::new(FEATURE_DEFAULTS, "Model inputs filled with their default").unwrap();
        let rule_hits =
            IntCounterVec::new(Opts::new(RULE_HITS, "Rules that fired, by rule and mode"), &["rule", "mode"]).unwrap();
        let rule_errors = IntCounter::new(RULE_ERRORS, "Rule conditions that could not be evaluated").unwrap();
        let rules_reloads =
            IntCounterVec::new(Opts::new(RULES_RELOADS, "Rules files applied or rejected"), &["result"]).unwrap();
        let rules_info =
            IntGaugeVec::new(Opts::new(RULES_INFO, "The rules version in force"), &["version", "rules"]).unwrap();
        let rules_list_refreshes =
            IntCounterVec::new(Opts::new(RULES_LIST_REFRESHES, "Named-list refreshes"), &["result"]).unwrap();
        let rules_list_size =
            IntGaugeVec::new(Opts::new(RULES_LIST_SIZE, "Entries per named list"), &["list"]).unwrap();
        registry.register(Box::new(rule_errors.clone())).unwrap();
        for c in [&rule_hits, &rules_reloads, &rules_list_refreshes] {
            registry.register(Box::new(c.clone())).unwrap();
        }
        for g in [&rules_info, &rules_list_size] {
            registry.register(Box::new(g.clone())).unwrap();
        }
        for r in ["applied", "rejected"] {
            rules_reloads.with_label_values(&[r]);
        }
        let fl = &["model", "feature"];
        let gv = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).unwrap();
            registry.register(Box::new(g.clone())).unwrap();
            g
        };
        let feature_psi = gv(FEATURE_PSI, "PSI against the training baseline, last drift window", fl);
        let feature_ks = gv(FEATURE_KS, "KS statistic against the training baseline, last drift window", fl);
        let feature_mean = gv(FEATURE_MEAN, "Mean of non-default values, last drift window", fl);
        let feature_default_rate = gv(FEATURE_DEFAULT_RATE, "Share null or default-filled, last drift window", fl);
        let feature_out_of_range_rate =
            gv(FEATURE_OUT_OF_RANGE_RATE, "Share outside the training range, last drift window", fl);
        let action_rate = gv(ACTION_RATE, "Share of decisions per action, last drift window", &["model", "action"]);
        let dead_letter_rate =
            gv(DEAD_LETTER_RATE, "Share of events dead-lettered, last drift window", &["model", "reason"]);
        let feature_drift_state =
            IntGaugeVec::new(Opts::new(FEATURE_DRIFT_STATE, "Drift state: 0 ok, 1 warn, 2 alert"), fl).unwrap();
        registry.register(Box::new(feature_drift_state.clone())).unwrap();
        let label_precision =
            gv(LABEL_PRECISION, "Precision of joined labels, last drift window", &["model", "threshold"]);
        let label_recall = gv(LABEL_RECALL, "Recall of joined labels, last drift window", &["model", "threshold"]);
        let label_brier = gv(LABEL_BRIER, "Brier score of joined labels, last drift window", &["model"]);
        let labels =
            IntCounterVec::new(Opts::new(LABELS_TOTAL, "Scored events kept and labels joined"), &["result"]).unwrap();
        registry.register(Box::new(labels.clone())).unwrap();
        let model_reloads =
            IntCounterVec::new(Opts::new(MODEL_RELOADS, "New model versions applied or rejected"), &["result"])
                .unwrap();
        registry.register(Box::new(model_reloads.clone())).unwrap();
        let shadow_decisions = IntCounterVec::new(
            Opts::new(SHADOW_DECISIONS, "Shadow-model verdicts, agreeing with the decision or not"),
            &["agree"],
        )
        .unwrap();
        registry.register(Box::new(shadow_decisions.clone())).unwrap();
        let fallback_decisions =
            IntCounter::new(FALLBACK_DECISIONS, "Events decided without the model (deadline passed)").unwrap();
        registry.register(Box::new(fallback_decisions.clone())).unwrap();
        let batch_limit = IntGauge::new(BATCH_LIMIT, "Current batch-size cap from the scoring budget").unwrap();
        registry.register(Box::new(batch_limit.clone())).unwrap();
        let deadline_reserve = prometheus::Gauge::new(
            DEADLINE_RESERVE,
            "Recent worst time from the deadline check to the acknowledgement of a batch's outputs (decaying maximum)",
        )
        .unwrap();
        registry.register(Box::new(deadline_reserve.clone())).unwrap();
        let drift_windows = IntCounter::new(DRIFT_WINDOWS, "Drift windows closed and published").unwrap();
        registry.register(Box::new(drift_windows.clone())).unwrap();
        state_store_up.set(1);
        for c in [&enrich_round_trips, &enrich_commands, &enrich_failures, &degraded_events, &feature_defaults] {
            registry.register(Box::new(c.clone())).unwrap();
        }
        registry.register(Box::new(window_updates.clone())).unwrap();
        registry.register(Box::new(feature_cache.clone())).unwrap();
        registry.register(Box::new(state_store_up.clone())).unwrap();

        for c in [&events, &dead_letters, &ep_fallbacks, &commits] {
            registry.register(Box::new(c.clone())).unwrap();
        }
        for g in [&queue_depth, &consumer_lag, &model_info] {
            registry.register(Box::new(g.clone())).unwrap();
        }
        registry.register(Box::new(stage_seconds.clone())).unwrap();
        for h in [&batch_events, &pipeline_latency, &event_latency] {
            registry.register(Box::new(h.clone())).unwrap();
        }
        registry.register(Box::new(partitions_assigned.clone())).unwrap();
        registry.register(Box::new(delivery_retries.clone())).unwrap();
        registry.register(Box::new(paused.clone())).unwrap();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())).ok();
        let guards = Guards::new(&registry);
        for reason in DeadLetterReason::ALL {
            dead_letters.with_label_values(&[reason.code()]);
        }
        Arc::new(Self {
            registry,
            events,
            dead_letters,
            stage_seconds,
            batch_events,
            queue_depth,
            consumer_lag,
            partitions_assigned,
            model_info,
            ep_fallbacks,
            pipeline_latency,
            event_latency,
            commits,
            delivery_retries,
            paused,
            enrich_round_trips,
            enrich_commands,
            window_updates,
            enrich_failures,
            degraded_events,
            state_store_up,
            feature_cache,
            window_state_cache,
            feature_defaults,
            rule_hits,
            rule_errors,
            rules_reloads,
            rules_info,
            rules_list_refreshes,
            rules_list_size,
            feature_psi,
            feature_ks,
            feature_mean,
            feature_default_rate,
            feature_out_of_range_rate,
            feature_drift_state,
            action_rate,
            dead_letter_rate,
            drift_windows,
            model_reloads,
            shadow_decisions,
            fallback_decisions,
            batch_limit,
            deadline_reserve,
            labels,
            label_precision,
            label_recall,
            label_brier,
            latency_us: Mutex::new(hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()),
            event_latency_ms: Mutex::new(hdrhistogram::Histogram::new_with_bounds(1, 3_600_000, 3).unwrap()),
            model_loaded: AtomicBool::new(false),
            execution_provider: Mutex::new(String::new()),
            guards,
        })
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding");
        String::from_utf8(buf).expect("utf-8 exposition")
    }

    /// Adds `n` to `verdict_events_total{stage,outcome}`.
    pub fn count(&self, stage: &str, outcome: &str, n: u64) {
        if n > 0 {
            self.events.with_label_values(&[stage, outcome]).inc_by(n);
        }
    }

    /// Current value of `verdict_events_total{stage,outcome}`.
    pub fn counted(&self, stage: &str, outcome: &str) -> u64 {
        self.events.with_label_values(&[stage, outcome]).get()
    }

    /// Records a batch's pipeline latencies (µs) in the histogram and the exact distribution.
    pub fn record_latencies(&self, micros: &[u64]) {
        let mut h = self.latency_us.lock();
        for &us in micros {
            self.pipeline_latency.observe(us as f64 / 1e6);
            h.saturating_record(us.max(1));
        }
    }

    /// Records decided events' Kafka timestamps (ms) against `now_ms`: the histogram and
    /// the exact distribution.
    pub fn record_event_latencies(&self, timestamps: &[i64], now_ms: i64) {
        let mut h = self.event_latency_ms.lock();
        for &ts in timestamps {
            let ms = (now_ms - ts).max(0);
            self.event_latency.observe(ms as f64 / 1e3);
            h.saturating_record(ms.max(1) as u64);
        }
    }

    /// Exact pipeline-latency quantile in µs (0 when nothing was recorded).
    pub fn latency_quantile_us(&self, q: f64) -> u64 {
        self.latency_us.lock().value_at_quantile(q)
    }

    /// Clears the exact latency distribution (the demo reports per interval).
    pub fn reset_latencies(&self) -> hdrhistogram::Histogram<u64> {
        let mut h = self.latency_us.lock();
        let copy = h.clone();
        h.reset();
        copy
    }

    /// Clears the exact event-latency (produce → decision) distribution and returns it.
    pub fn reset_event_latencies(&self) -> hdrhistogram::Histogram<u64> {
        let mut h = self.event_latency_ms.lock();
        let copy = h.clone();
        h.reset();
        copy
    }

    /// Marks the model as loaded with the execution provider in use.
    pub fn set_model(&self, name: &str, version: &str, ep: &str) {
        self.model_info.reset();
        self.model_info.with_label_values(&[name, version, ep]).set(1);
        *self.execution_provider.lock() = ep.to_string();
        self.model_loaded.store(true, Ordering::SeqCst);
    }

    /// Ready = partitions assigned, model loaded, the state store reachable, not stalled
    /// and not failed.
    pub fn ready(&self) -> bool {
        self.model_loaded.load(Ordering::SeqCst)
            && self.partitions_assigned.get() > 0
            && self.state_store_up.get() == 1
            && self.guards.stalled.get() == 0
            && self.healthy()
    }

    /// Healthy = no pipeline thread ended unexpectedly and no stop policy fired.
    pub fn healthy(&self) -> bool {
        self.guards.pipeline_failed.get() == 0
    }

    /// JSON body for `/readyz`.
    pub fn readiness(&self) -> serde_json::Value {
        serde_json::json!({
            "ready": self.ready(),
            "model_loaded": self.model_loaded.load(Ordering::SeqCst),
            "partitions_assigned": self.partitions_assigned.get(),
            "state_store_up": self.state_store_up.get() == 1,
            "stalled": self.guards.stalled.get() == 1,
            "failed": self.guards.failure(),
            "execution_provider": self.execution_provider.lock().clone(),
        })
    }
}

/// Serves `/metrics`, `/healthz`, `/readyz` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::{http::StatusCode, routing::get, Json, Router};
    let m1 = metrics.clone();
    let m3 = metrics.clone();
    let m2 = metrics;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m1.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let m = m3.clone();
                async move {
                    match m.guards.failure() {
                        None => (StatusCode::OK, "ok".to_string()),
                        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("failed: {why}")),
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let m = m2.clone();
                async move {
                    let code = if m.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                    (code, Json(m.readiness()))
                }
            }),
        );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// Installs the global `tracing` subscriber (pretty or JSON lines).
pub fn init_logging(format: &str, level: &str) {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_dead_letter_reason_even_before_any_occurs() {
        let m = Metrics::new();
        let text = m.render();
        for r in DeadLetterReason::ALL {
            assert!(text.contains(&format!("{DEAD_LETTERS_TOTAL}{{reason=\"{}\"}} 0", r.code())), "{}", r.code());
        }
    }

    #[test]
    fn ready_only_with_model_and_partitions() {
        let m = Metrics::new();
        assert!(!m.ready());
        m.set_model("m", "1", "cpu");
        assert!(!m.ready());
        m.partitions_assigned.set(2);
        assert!(m.ready());
        assert_eq!(m.readiness()["execution_provider"], "cpu");
    }
}
