//! The publish stage: takes the decisions (and the dead-letter outcomes of events that did
//! not decode) and hands on, for the acker, one in-flight delivery per output record: the
//! encoded decision on the decisions topic, review decisions also on the review topic, and
//! undecodable events on the dead-letter topic.
//!
//! Transient produce errors are retried with a backoff; a record refused for good follows
//! `publish.on_refused` (dead-letter the event, skip it, or stop the pipeline); a fatal
//! producer error stops the pipeline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Level;

use super::config::{DecisionFormat, RefusedPolicy};
use super::limits::Class;
use super::record::{DefaultsUsed, Inputs, ShadowVerdict, Top};
use super::redact::Records;
use super::{decision_headers_with, DecisionRecord, Deliveries, PublishError, Publisher};
use crate::backoff::Backoff;
use crate::core::clock::wall_clock_ms;
use crate::core::decision::Action;
use crate::core::event::{DecodeError, DecodedEvent};
use crate::core::manifest::{InputColumn, Lane};
use crate::envelope::{Envelope, RawMessage};
use crate::error::DeadLetterReason;
use crate::stage::{Abort, Outcome, Stage, StageFailure, StagedBatch};
use crate::telemetry::Metrics;

/// Topics and formats a worker writes, and the serving model's identity.
#[derive(Clone)]
pub struct Outputs {
    /// Decisions topic.
    pub decisions: String,
    /// Review topic.
    pub review: String,
    /// Dead-letter topic.
    pub dead_letter: String,
    /// Decision record format.
    pub format: DecisionFormat,
    /// Schema id of the Avro decision record.
    pub schema_id: u32,
    /// Serving model name.
    pub model_name: String,
    /// Serving model version.
    pub model_version: String,
    /// The model's input columns.
    pub columns: Arc<Vec<String>>,
    /// Each column's lane (string columns are written as their text).
    pub lanes: Arc<Vec<Lane>>,
    /// Enrichment names.
    pub aggregates: Arc<Vec<String>>,
    /// Whether decisions carry the model inputs (`publish.include_features`).
    pub include_features: bool,
    /// Whether decisions carry the window aggregates and online features
    /// (`publish.include_aggregates`).
    pub include_aggregates: bool,
}

/// How an attempt to queue an output ended.
enum Sent {
    /// Queued, counted in the batch's deliveries; the acker awaits them.
    Queued,
    /// Refused for good (too large, invalid, refused by a topic policy).
    Refused(PublishError),
}

/// Encodes and sends a decided batch.
pub struct Publish {
    publisher: Publisher,
    outputs: Outputs,
    /// What to do with outputs refused for good (`publish.on_refused`).
    on_refused: RefusedPolicy,
    metrics: Arc<Metrics>,
    abort: Abort,
    log: crate::lograte::LogRate,
    buf: Vec<u8>,
    /// `[publish.redact]`: None when nothing is redacted (the records are then written as
    /// the events say, with no copy).
    redact: Option<Records>,
}

impl Publish {
    /// From the producer and where to write.
    pub fn new(
        publisher: Publisher,
        outputs: Outputs,
        on_refused: RefusedPolicy,
        metrics: Arc<Metrics>,
        abort: Abort,
    ) -> Self {
        let log = crate::lograte::LogRate::new("worker", crate::lograte::WINDOW, Some(&metrics));
        let redact = publisher.redactor().map(|r| Records::new(r.clone(), &outputs.columns));
        Self { publisher, outputs, on_refused, metrics, abort, log, buf: Vec::new(), redact }
    }

    /// The serving model's input columns.
    pub fn columns(&self) -> &[String] {
        &self.outputs.columns
    }

    /// Another model now serves (model hot-reload): its name, version and columns go in
    /// the decisions.
    /// `inputs` (the manifest's) say where each column reads from, for `publish.redact`.
    pub fn set_model(
        &mut self,
        name: &str,
        version: &str,
        columns: Vec<String>,
        lanes: &[Lane],
        inputs: &[InputColumn],
    ) {
        self.outputs.model_name = name.to_string();
        self.outputs.model_version = version.to_string();
        self.outputs.columns = Arc::new(columns);
        self.outputs.lanes = Arc::new(lanes.to_vec());
        if let Some(r) = &mut self.redact {
            r.set_model(&self.outputs.columns, inputs);
        }
    }

    /// Sends the batch's events that have no output queued yet to the dead-letter topic as
    /// `internal_error` (`stage` failed with `detail`).
    pub fn dead_letter_rest(&mut self, b: &mut StagedBatch, stage: &str, detail: &str) -> Result<(), StageFailure> {
        let reason = DeadLetterReason::InternalError;
        for ev in &b.batch.events[b.produced.min(b.batch.events.len())..] {
            self.metrics.dead_letters.with_label_values(&[reason.code()]).inc();
            self.metrics.count(stage, "dead_letter", 1);
            match self.retry(|| {
                self.publisher.dead_letter(&self.outputs.dead_letter, ev, stage, reason, detail, &b.pending)
            })? {
                Sent::Queued => {}
                Sent::Refused(e) => self.refused_dead_letter(&e)?,
            }
        }
        Ok(())
    }

    /// Encodes the decision record of event `i`, decoded event `k`, into `self.buf` (the
    /// review-topic copy sends the same bytes, so it carries the same flags).
    fn encode(&mut self, b: &StagedBatch, i: usize, k: usize, d: &DecodedEvent, decided_at: i64) {
        let ev = &b.batch.events[i];
        let o = &self.outputs;
        let row = b.rows.values_row(k);
        let defaults_used = DefaultsUsed { names: &o.columns, columns: b.defaults.get(k).map_or(&[], Vec::as_slice) };
        let enriched = b.enriched_row(k);
        let features = match o.include_features {
            true => Inputs { names: &o.columns, values: row, lanes: &o.lanes, texts: b.rows.texts_row(k) },
            false => Inputs::default(),
        };
        let (event_id, entity_key, features) = match &mut self.redact {
            None => (d.event_id.as_str(), d.entity_key.as_str(), features),
            Some(r) => r.event(&d.event_id, &d.entity_key, features, o.include_features),
        };
        let aggregates: (&[String], &[Option<f64>]) =
            if o.include_aggregates { (&o.aggregates, enriched) } else { (&[], &[]) };
        let shadow = match (&b.shadow_model, b.shadow_scores.get(k).copied().flatten(), b.shadow_actions.get(k)) {
            (Some((model, version)), Some(score), Some(Some(action))) => {
                Some(ShadowVerdict { model, version, score, action: *action })
            }
            _ => None,
        };
        let record = DecisionRecord {
            event_id,
            entity_key,
            decision: &b.decisions[k],
            model_name: &o.model_name,
            model_version: &o.model_version,
            event_time: d.event_time_ms,
            decided_at,
            latency_us: ev.received_at.elapsed().as_micros() as i64,
            degraded: b.degraded,
            source_topic: &ev.origin.topic,
            source_partition: ev.origin.partition,
            source_offset: ev.origin.offset,
            defaults_used,
            features,
            aggregates,
            shadow,
            redelivery: b.is_redelivered(i),
            top: Top { names: &b.classes.names, picks: &b.decisions[k].top },
        };
        self.buf.clear();
        match o.format {
            DecisionFormat::Avro => record.write_avro(o.schema_id, &mut self.buf),
            DecisionFormat::Json => record.write_json(&mut self.buf),
        }
    }

    /// Sends decoded event `k`'s decision (and review) record, encoded in `self.buf`.
    fn send_decision(
        &mut self,
        pending: &Deliveries,
        ev: &Envelope<RawMessage>,
        d: &DecodedEvent,
        action: Action,
        priority: Option<i64>,
    ) -> Result<(), StageFailure> {
        let (key, event_id) = match &self.redact {
            None => (Some(d.entity_key.as_bytes()), d.event_id.as_str()),
            Some(r) => (r.ids().record_key(), r.ids().event_id()),
        };
        let headers = || decision_headers_with(event_id, &self.outputs.model_version, None);
        let sent =
            self.retry(|| self.publisher.send(&self.outputs.decisions, key, &self.buf, Some(headers()), pending))?;
        match sent {
            Sent::Queued => {}
            Sent::Refused(e) => return self.refused_output(pending, ev, &e),
        }
        if action.is_review() {
            let headers = || decision_headers_with(event_id, &self.outputs.model_version, priority);
            match self.retry(|| self.publisher.send(&self.outputs.review, key, &self.buf, Some(headers()), pending))? {
                Sent::Queued => {}
                Sent::Refused(e) => self.refused_output(pending, ev, &e)?,
            }
        }
        Ok(())
    }

    fn send_dead_letter(
        &mut self,
        pending: &Deliveries,
        ev: &Envelope<RawMessage>,
        e: &DecodeError,
    ) -> Result<(), StageFailure> {
        self.metrics.dead_letters.with_label_values(&[e.reason.code()]).inc();
        let topic = &self.outputs.dead_letter;
        match self.retry(|| self.publisher.dead_letter(topic, ev, "decode", e.reason, &e.detail, pending))? {
            Sent::Queued => {}
            Sent::Refused(e) => self.refused_dead_letter(&e)?,
        }
        Ok(())
    }

    /// Retries transient errors with a bounded backoff (counted, logged at most every 10 s);
    /// hands back refusals; stops on abort or a fatal producer error.
    fn retry(&self, mut f: impl FnMut() -> Result<(), PublishError>) -> Result<Sent, StageFailure> {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            let e = match f() {
                Ok(()) => return Ok(Sent::Queued),
                Err(e) => e,
            };
            let errors = &self.metrics.guards.produce_errors;
            match e.class() {
                Class::Refused => return Ok(Sent::Refused(e)),
                Class::Fatal => {
                    errors.with_label_values(&[&e.label(), "stopped"]).inc();
                    return Err(StageFailure::Stop(format!("producer failed for good: {e}")));
                }
                Class::Retryable => {
                    if self.abort.is_set() {
                        return Err(StageFailure::Aborted);
                    }
                    errors.with_label_values(&[&e.label(), "retried"]).inc();
                    if self.log.admit(Level::WARN, "produce refused; retrying") {
                        tracing::warn!(error = %e, "produce refused; retrying");
                    }
                    if !self.abort.sleep(backoff.next_delay()) {
                        return Err(StageFailure::Aborted);
                    }
                }
            }
        }
    }

    /// A decision or review record for `ev` was refused for good: `publish.on_refused`
    /// decides.
    fn refused_output(
        &self,
        pending: &Deliveries,
        ev: &Envelope<RawMessage>,
        e: &PublishError,
    ) -> Result<(), StageFailure> {
        let label = e.label();
        let errors = &self.metrics.guards.produce_errors;
        match self.on_refused {
            RefusedPolicy::Stop => {
                errors.with_label_values(&[&label, "stopped"]).inc();
                Err(StageFailure::Stop(format!("{e} (publish.on_refused = \"stop\")")))
            }
            RefusedPolicy::Skip => {
                errors.with_label_values(&[&label, "skipped"]).inc();
                if self.log.admit(Level::ERROR, "output refused for good; skipped") {
                    tracing::error!(error = %e, "output refused for good; skipped");
                }
                Ok(())
            }
            RefusedPolicy::DeadLetter => {
                errors.with_label_values(&[&label, "dead_lettered"]).inc();
                let reason = DeadLetterReason::OutputRefused;
                self.metrics.dead_letters.with_label_values(&[reason.code()]).inc();
                if self.log.admit(Level::WARN, "output refused for good; event sent to the dead-letter topic") {
                    tracing::warn!(error = %e, "output refused for good; event sent to the dead-letter topic");
                }
                let detail = e.to_string();
                let topic = &self.outputs.dead_letter;
                match self.retry(|| self.publisher.dead_letter(topic, ev, "publish", reason, &detail, pending))? {
                    Sent::Queued => {}
                    Sent::Refused(e) => self.refused_dead_letter(&e)?,
                }
                Ok(())
            }
        }
    }

    /// A dead-letter record was refused for good (the topic is missing or not writable):
    /// skipped and counted, unless `on_refused = "stop"`.
    fn refused_dead_letter(&self, e: &PublishError) -> Result<(), StageFailure> {
        let errors = &self.metrics.guards.produce_errors;
        if self.on_refused == RefusedPolicy::Stop {
            errors.with_label_values(&[&e.label(), "stopped"]).inc();
            return Err(StageFailure::Stop(format!("dead-letter record refused: {e} (publish.on_refused = \"stop\")")));
        }
        errors.with_label_values(&[&e.label(), "skipped"]).inc();
        if self.log.admit(Level::ERROR, "dead-letter record refused for good; skipped") {
            tracing::error!(error = %e, "dead-letter record refused for good; skipped");
        }
        Ok(())
    }
}

impl Stage for Publish {
    fn name(&self) -> &'static str {
        "publish"
    }

    fn run(&mut self, b: &mut StagedBatch) -> Result<(), StageFailure> {
        let t = Instant::now();
        let n = b.batch.events.len();
        let pending = b.pending.clone();
        let decided_at = wall_clock_ms();
        let (mut k, mut dead) = (0usize, 0u64);
        let mut result = Ok(());
        for i in 0..n {
            let ev = &b.batch.events[i];
            result = match &b.outcomes[i] {
                Outcome::Decided(d) => {
                    self.encode(b, i, k, d, decided_at);
                    let decision = &b.decisions[k];
                    k += 1;
                    self.send_decision(&pending, ev, d, decision.action, decision.review_priority)
                }
                Outcome::Dead(e) => {
                    dead += 1;
                    self.send_dead_letter(&pending, ev, e)
                }
            };
            if result.is_err() {
                break;
            }
            b.produced += 1;
        }
        result?;
        let m = &self.metrics;
        m.stage_seconds.with_label_values(&["publish"]).observe(t.elapsed().as_secs_f64());
        m.count("decode", "ok", (n as u64) - dead);
        m.count("decode", "dead_letter", dead);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decision::Decision;
    use crate::core::rows::Rows;
    use crate::envelope::{Batch, Origin};

    fn event(offset: i64) -> Envelope<RawMessage> {
        let origin = Origin { topic: Arc::from("events"), partition: 0, offset };
        Envelope { origin, received_at: Instant::now(), timestamp_ms: None, payload: RawMessage::default() }
    }

    fn decided(id: &str) -> Outcome {
        Outcome::Decided(DecodedEvent {
            event_id: id.into(),
            entity_key: "card-1".into(),
            event_time_ms: 0,
            entities: Default::default(),
            fields: Vec::new(),
        })
    }

    fn review() -> Decision {
        Decision {
            action: Action::REVIEW,
            action_name: None,
            reason: "r".into(),
            score: 0.5,
            rule_hits: Vec::new(),
            rule_errors: 0,
            rules_version: "".into(),
            review_priority: Some(50),
            fallback: false,
            top: Vec::new(),
        }
    }

    #[test]
    fn redelivered_events_are_flagged_on_decision_and_review_records_only() {
        let mock = crate::demo::MockKafka::start(1);
        let mut cfg = crate::config::Config::default();
        crate::demo::use_mock(&mut cfg, &mock);
        crate::demo::create_topics(&mock, &cfg, 1);
        let metrics = Metrics::new();
        let publisher = Publisher::new(&cfg.kafka, &cfg.publish, metrics.clone()).unwrap();
        let outputs = Outputs {
            decisions: cfg.kafka.decisions_topic.clone(),
            review: cfg.kafka.review_topic.clone(),
            dead_letter: cfg.kafka.dead_letter_topic.clone(),
            format: DecisionFormat::Json,
            schema_id: 1,
            model_name: "m".into(),
            model_version: "1".into(),
            columns: Arc::new(Vec::new()),
            lanes: Arc::new(Vec::new()),
            aggregates: Arc::new(Vec::new()),
            include_features: false,
            include_aggregates: false,
        };
        let mut publish = Publish::new(publisher.clone(), outputs, RefusedPolicy::Stop, metrics, Abort::default());

        let mut b = StagedBatch::new(Rows::with_layout(0, 0, 0));
        b.start(Batch {
            seq: 1,
            events: vec![event(7), event(8)],
            rules: None,
            model_generation: 0,
            turns: Vec::new(),
        });
        assert_eq!(b.redelivered, [false, false], "start resets the flags, one per event");
        b.redelivered[0] = true;
        b.outcomes.extend([decided("tx-7"), decided("tx-8")]);
        b.rows.push();
        b.rows.push();
        b.decisions.extend([review(), review()]);
        publish.run(&mut b).unwrap();
        publisher.flush(Duration::from_secs(10));

        let idle = Duration::from_millis(500);
        for topic in [&cfg.kafka.decisions_topic, &cfg.kafka.review_topic] {
            let msgs = mock.read_all(topic, idle);
            assert_eq!(msgs.len(), 2, "{topic}");
            for m in msgs {
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                let again = v["event_id"] == "tx-7";
                assert_eq!(v.get("redelivery"), again.then_some(&serde_json::Value::Bool(true)), "{topic}: {v}");
                assert!(m.headers.iter().all(|(k, _)| !k.contains("redeliver")), "{topic}: no header");
            }
        }
        b.finish();
        assert!(b.redelivered.is_empty());
    }
}
