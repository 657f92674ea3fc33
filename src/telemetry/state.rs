//! Partition-owned window state's metrics: checkpoints, loads, evictions, redeliveries.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::names::*;

/// Metrics of the partition-owned state (see `enrich::owned`).
pub struct StateMetrics {
    /// `verdict_checkpoints_total{result}`: written, fenced, failed.
    pub checkpoints: IntCounterVec,
    /// `verdict_checkpoint_fields_total`: hash fields written or deleted by checkpoints.
    pub checkpoint_fields: IntCounter,
    /// `verdict_checkpoint_seconds`: one checkpoint write (all partitions of a batch).
    pub checkpoint_seconds: Histogram,
    /// `verdict_state_loads_total{result}`: entity states read from Redis on first touch
    /// (found) or new (absent).
    pub loads: IntCounterVec,
    /// `verdict_window_evictions_total{reason}`: entities dropped from memory (bound, expired).
    pub evictions: IntCounterVec,
    /// `verdict_state_entities`: partition-owned entities held in memory.
    pub entities: IntGauge,
    /// `verdict_redelivered_events_total`: events decided again after a crash or
    /// rebalance (their decision carries `redelivery: true`).
    pub redelivered: IntCounter,
    /// `verdict_partition_resume_seconds`: from a partition's assignment to its first
    /// decided batch.
    pub resume_seconds: Histogram,
}

impl StateMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let cv = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap();
            registry.register(Box::new(c.clone())).unwrap();
            c
        };
        let c = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).unwrap();
            registry.register(Box::new(c.clone())).unwrap();
            c
        };
        let h = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).unwrap();
            registry.register(Box::new(h.clone())).unwrap();
            h
        };
        let entities = IntGauge::new(STATE_ENTITIES, "Partition-owned entities held in memory").unwrap();
        registry.register(Box::new(entities.clone())).unwrap();
        Self {
            checkpoints: cv(CHECKPOINTS, "Partition state checkpoint writes by result", &["result"]),
            checkpoint_fields: c(CHECKPOINT_FIELDS, "Hash fields written or deleted by checkpoints"),
            checkpoint_seconds: h(
                CHECKPOINT_SECONDS,
                "Time of one checkpoint write",
                vec![0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0],
            ),
            loads: cv(STATE_LOADS, "Entity states read on first touch, by result", &["result"]),
            evictions: cv(WINDOW_EVICTIONS, "Entities dropped from memory, by reason", &["reason"]),
            entities,
            redelivered: c(REDELIVERED, "Events decided again after a crash or rebalance"),
            resume_seconds: h(
                RESUME_SECONDS,
                "From a partition's assignment to its first decided batch",
                vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            ),
        }
    }
}
