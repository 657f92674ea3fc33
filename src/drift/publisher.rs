//! The drift publisher thread: at the end of every window (`drift.window_s` or
//! `drift.window_events`, whichever first) it merges the workers' windows and the label
//! statistics, publishes one [`DriftRecord`] to the drift topic and sets the gauges. It takes
//! the [`DriftMonitor`] the workers record into and hands records to a [`RecordSink`] (the
//! publish stage's producer).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::Schema;
use tokio_util::sync::CancellationToken;

use super::config::DriftConfig;
use super::{labels, CodecError, DriftMonitor, DriftRecord, Identity, SCHEMA};
use crate::backoff::sleep_unless;
use crate::core::clock::wall_clock_ms;
use crate::core::output::{DecisionFormat, RecordSink};
use crate::telemetry::Metrics;

/// How often the publisher looks whether a window has ended.
const TICK: Duration = Duration::from_millis(50);

/// Publishes a record at the end of every window.
pub struct DriftPublisher {
    cfg: DriftConfig,
    format: DecisionFormat,
    schema_id: u32,
    schema: Schema,
    monitor: Arc<DriftMonitor>,
    id: Identity,
    publisher: Arc<dyn RecordSink>,
    metrics: Arc<Metrics>,
}

impl DriftPublisher {
    /// A publisher of `monitor`'s windows as `format` records (Avro with `schema_id`).
    pub fn new(
        cfg: DriftConfig,
        format: DecisionFormat,
        schema_id: u32,
        monitor: Arc<DriftMonitor>,
        id: Identity,
        publisher: Arc<dyn RecordSink>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, CodecError> {
        let schema = Schema::parse_str(SCHEMA)?;
        Ok(Self { cfg, format, schema_id, schema, monitor, id, publisher, metrics })
    }

    /// Runs until `cancel` is cancelled; then publishes the last (partial) window and flushes.
    /// Cancel it only once every worker has ended, so that window has all their events.
    pub fn run(self, cancel: &CancellationToken) {
        let mut started = Instant::now();
        let mut start_ms = wall_clock_ms();
        let mut states: BTreeMap<String, u8> = BTreeMap::new();
        loop {
            let stopping = cancel.is_cancelled();
            let due = started.elapsed() >= Duration::from_secs(self.cfg.window_s)
                || self.monitor.events() >= self.cfg.window_events;
            if due || stopping {
                let end_ms = wall_clock_ms();
                self.publish_window(start_ms, end_ms, &mut states);
                started = Instant::now();
                start_ms = end_ms;
            }
            if stopping {
                self.publisher.flush_records(Duration::from_secs(5));
                return;
            }
            sleep_unless(TICK, cancel);
        }
    }

    /// Takes the window that ended and publishes it, unless nothing happened in it.
    fn publish_window(&self, start_ms: i64, end_ms: i64, states: &mut BTreeMap<String, u8>) {
        let w = self.monitor.take();
        let labels = self.monitor.labels.as_ref().map(|(l, t)| {
            let mut taken = std::mem::replace(&mut *l.lock(), labels::LabelStats::new(t));
            taken.derive();
            taken
        });
        let any_labels = labels.as_ref().is_some_and(|l| l.joined + l.unknown + l.invalid > 0);
        if w.events == 0 && w.dead_letters.values().sum::<u64>() == 0 && !any_labels {
            return;
        }
        let mut rec = DriftRecord::build(&self.id, &self.monitor.baseline, &w, start_ms, end_ms, &self.cfg);
        rec.labels = labels;
        report(&rec, &self.cfg, &self.metrics, states);
        let payload = match self.format {
            DecisionFormat::Avro => rec.to_avro(&self.schema, self.schema_id),
            DecisionFormat::Json => serde_json::to_vec(&rec).map_err(CodecError::from),
        };
        match payload {
            Ok(p) => {
                if let Err(e) = self.publisher.send_record(&self.cfg.topic, Some(self.id.instance.as_bytes()), &p) {
                    tracing::warn!(error = %e, "drift record not sent");
                }
            }
            Err(e) => tracing::error!(error = %e, "drift record not encoded"),
        }
    }
}

/// Gauges, and a log line per feature whose state (ok / warn / alert) changed.
fn report(rec: &DriftRecord, cfg: &DriftConfig, m: &Metrics, states: &mut BTreeMap<String, u8>) {
    let model = rec.model.as_str();
    m.drift_windows.inc();
    for f in rec.features.iter().chain(std::iter::once(&rec.score)) {
        let l = [model, f.name.as_str()];
        m.feature_psi.with_label_values(&l).set(f.psi);
        m.feature_ks.with_label_values(&l).set(f.ks);
        m.feature_default_rate.with_label_values(&l).set(f.default_rate);
        m.feature_out_of_range_rate.with_label_values(&l).set(f.out_of_range_rate);
        if let Some(mean) = f.mean {
            m.feature_mean.with_label_values(&l).set(mean);
        }
        let state = if f.psi > cfg.psi_alert {
            2
        } else if f.psi > cfg.psi_warn {
            1
        } else {
            0
        };
        m.feature_drift_state.with_label_values(&l).set(state as i64);
        let before = states.insert(f.name.clone(), state).unwrap_or(0);
        if before != state {
            let word = ["ok", "warn", "alert"][state as usize];
            if state == 0 {
                tracing::info!(model, feature = %f.name, psi = f.psi, "drift back to {word}");
            } else {
                tracing::warn!(model, feature = %f.name, psi = f.psi, ks = f.ks, "drift {word}");
            }
        }
    }
    let n = rec.events.max(1) as f64;
    for (a, c) in &rec.actions {
        m.action_rate.with_label_values(&[model, a]).set(*c as f64 / n);
    }
    if let Some(l) = rec.labels.as_ref().filter(|l| l.joined > 0) {
        for c in &l.thresholds {
            let t = format!("{}", c.threshold);
            if let Some(p) = c.precision {
                m.label_precision.with_label_values(&[model, &t]).set(p);
            }
            if let Some(r) = c.recall {
                m.label_recall.with_label_values(&[model, &t]).set(r);
            }
        }
        if let Some(b) = l.brier {
            m.label_brier.with_label_values(&[model]).set(b);
        }
    }
    let total = (rec.events + rec.dead_letters.values().sum::<i64>()).max(1) as f64;
    for (r, c) in &rec.dead_letters {
        m.dead_letter_rate.with_label_values(&[model, r]).set(*c as f64 / total);
    }
}
