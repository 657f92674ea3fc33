//! The pipeline's metrics registry: every metric created and registered once per
//! pipeline, the counting helpers the stages call, and the exact latency distributions
//! the demo and benchmarks summarise.
//!
//! A little over 400 lines, kept whole: most of it is the struct's field list and
//! `Metrics::new`, one create-and-register line per metric, which read best side by side.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use super::cost::CostMetrics;
use super::guards::Guards;
use super::names::*;
use super::state::StateMetrics;
use crate::error::DeadLetterReason;

/// All metrics of one pipeline, plus the state `/readyz` reports.
pub struct Metrics {
    registry: Registry,
    /// See [`EVENTS_TOTAL`].
    pub events: IntCounterVec,
    /// See [`DEAD_LETTERS_TOTAL`].
    pub dead_letters: IntCounterVec,
    /// See [`STAGE_SECONDS`].
    pub stage_seconds: HistogramVec,
    /// See [`ENRICH_PART_SECONDS`].
    pub enrich_part_seconds: HistogramVec,
    /// See [`BATCH_EVENTS`].
    pub batch_events: Histogram,
    /// See [`QUEUE_DEPTH`].
    pub queue_depth: IntGaugeVec,
    /// See [`CONSUMER_LAG`].
    pub consumer_lag: IntGaugeVec,
    /// See [`OFFSET_RESETS`].
    pub offset_resets: IntCounterVec,
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
    /// See [`MODEL_TRANSITIONS`].
    pub model_transitions: IntCounterVec,
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
    /// Set once a model is loaded (readiness).
    pub(super) model_loaded: AtomicBool,
    /// The execution provider in use (readiness).
    pub(super) execution_provider: Mutex<String>,
    /// Serving, candidate and watched versions (`/readyz`).
    pub(super) rollout: Mutex<super::health::RolloutView>,
    /// Produce errors, panics, stalls and health.
    pub guards: Guards,
    /// Partition-owned window state: checkpoints, loads, evictions.
    pub state: StateMetrics,
    /// CPU-seconds and dollars per decision.
    pub cost: CostMetrics,
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
        let enrich_part_seconds = HistogramVec::new(
            HistogramOpts::new(ENRICH_PART_SECONDS, "Wall time per batch in each part of the enrich stage")
                .buckets(latency_buckets()),
            &["part"],
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
        let offset_resets = IntCounterVec::new(
            Opts::new(OFFSET_RESETS, "Positions outside the log moved to the earliest offset"),
            &["topic", "partition"],
        )
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
        let model_transitions =
            IntCounterVec::new(Opts::new(MODEL_TRANSITIONS, "Guarded-rollout transitions of model versions"), &["to"])
                .unwrap();
        registry.register(Box::new(model_transitions.clone())).unwrap();
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

        for c in [&events, &dead_letters, &ep_fallbacks, &commits, &offset_resets] {
            registry.register(Box::new(c.clone())).unwrap();
        }
        for g in [&queue_depth, &consumer_lag, &model_info] {
            registry.register(Box::new(g.clone())).unwrap();
        }
        registry.register(Box::new(stage_seconds.clone())).unwrap();
        registry.register(Box::new(enrich_part_seconds.clone())).unwrap();
        for h in [&batch_events, &pipeline_latency, &event_latency] {
            registry.register(Box::new(h.clone())).unwrap();
        }
        registry.register(Box::new(partitions_assigned.clone())).unwrap();
        registry.register(Box::new(delivery_retries.clone())).unwrap();
        registry.register(Box::new(paused.clone())).unwrap();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())).ok();
        let guards = Guards::new(&registry);
        let state = StateMetrics::new(&registry);
        let cost = CostMetrics::new(&registry);
        for reason in DeadLetterReason::ALL {
            dead_letters.with_label_values(&[reason.code()]);
        }
        Arc::new(Self {
            registry,
            events,
            dead_letters,
            stage_seconds,
            enrich_part_seconds,
            batch_events,
            queue_depth,
            consumer_lag,
            offset_resets,
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
            model_transitions,
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
            rollout: Mutex::new(Default::default()),
            guards,
            state,
            cost,
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
}
