//! Publish stage: decisions, review copies and dead-letter records to Kafka.
//!
//! An idempotent producer (`acks=all`) sends every output of a batch; the
//! [`acker`] waits for the broker's acknowledgements in batch order and only then
//! stores the source offsets, so a committed offset never covers an undelivered output.

pub mod acker;
pub mod config;
pub mod delivery;
mod enqueue;
pub mod limits;
pub mod offsets;
pub mod record;
pub mod redact;
pub mod stage;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::ThreadedProducer;
use rdkafka::util::IntoOpaque;

use crate::core::kafka::KafkaConfig;
use crate::envelope::{Envelope, RawMessage};
use crate::error::{DeadLetterReason, Policy, StageError};
use config::PublishConfig;

pub use acker::{Acker, Completed, OffsetStore};
pub use delivery::Deliveries;
pub use record::{DecisionRecord, DefaultsUsed, Top};

/// Header naming the stage that rejected a dead-lettered message.
pub const DLQ_STAGE: &str = "verdict.dlq.stage";
/// Header with the dead-letter reason code (see [`DeadLetterReason::code`]).
pub const DLQ_REASON: &str = "verdict.dlq.reason";
/// Header with the human-readable detail.
pub const DLQ_DETAIL: &str = "verdict.dlq.detail";
/// Header: source topic of a dead-lettered message.
pub const SOURCE_TOPIC: &str = "verdict.source.topic";
/// Header: source partition (decimal text).
pub const SOURCE_PARTITION: &str = "verdict.source.partition";
/// Header: source offset (decimal text).
pub const SOURCE_OFFSET: &str = "verdict.source.offset";
/// Header on decision records: the event id.
pub const EVENT_ID: &str = "verdict.event_id";
/// Header on decision records: the model version that scored it.
pub const MODEL_VERSION: &str = "verdict.model_version";

/// Producing failed in a way the pipeline must react to.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The producer could not be created (bad properties).
    #[error("creating producer: {0}")]
    Create(KafkaError),
    /// The send was refused for a reason other than a full queue.
    #[error("producing to {topic}: {error}")]
    Send {
        /// Destination topic.
        topic: String,
        /// librdkafka's error.
        error: KafkaError,
    },
}

impl PublishError {
    /// Whether retrying can help ([`limits::Class`]).
    pub fn class(&self) -> limits::Class {
        match self {
            PublishError::Create(_) => limits::Class::Fatal,
            PublishError::Send { error, .. } => limits::classify(error),
        }
    }

    /// The librdkafka error code, as a metric label.
    pub fn label(&self) -> String {
        match self {
            PublishError::Create(e) | PublishError::Send { error: e, .. } => limits::error_label(e),
        }
    }
}

impl StageError for PublishError {
    fn policy(&self) -> Policy {
        match self.class() {
            limits::Class::Retryable => Policy::Retry,
            limits::Class::Refused => Policy::DeadLetter,
            limits::Class::Fatal => Policy::Fatal,
        }
    }
}

/// The idempotent producer shared by all workers.
#[derive(Clone)]
pub struct Publisher {
    producer: Arc<ThreadedProducer<delivery::DeliveryContext>>,
    /// The largest dead-letter record (bytes, all told).
    dead_letter_limit: usize,
    metrics: Arc<crate::telemetry::Metrics>,
    /// `[publish.redact]`, when it redacts anything: applied to every dead-lettered event
    /// here and to every decision by the publish stage.
    redactor: Option<std::sync::Arc<redact::Redactor>>,
}

impl Publisher {
    /// Creates the producer: idempotent, `acks=all`, configured compression, user overrides
    /// last; dead-letter copies are cut to `publish.dead_letter_max_bytes` / the producer's limit.
    pub fn new(
        cfg: &KafkaConfig,
        publish: &PublishConfig,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Result<Self, PublishError> {
        // librdkafka's own logs and errors (a broker down) go through a rate limit.
        let context = crate::lograte::LimitedContext::new("kafka_producer", Some(&metrics));
        let producer: ThreadedProducer<delivery::DeliveryContext> = producer_config(cfg)
            .map_err(|e| PublishError::Create(rdkafka::error::KafkaError::ClientCreation(e.to_string())))?
            .create_with_context(delivery::DeliveryContext::new(context))
            .map_err(PublishError::Create)?;
        let producer = Arc::new(producer);
        let dead_letter_limit = limits::dead_letter_limit(
            publish.dead_letter_max_bytes,
            cfg.producer.get("message.max.bytes").map(String::as_str),
        );
        Ok(Self { producer, dead_letter_limit, metrics, redactor: None })
    }

    /// Redacts the outputs as `redactor` says (built from `publish.redact` with the model).
    pub fn with_redactor(mut self, redactor: Option<std::sync::Arc<redact::Redactor>>) -> Self {
        self.redactor = redactor;
        self
    }

    /// The redaction of the outputs, if any.
    pub fn redactor(&self) -> Option<&std::sync::Arc<redact::Redactor>> {
        self.redactor.as_ref()
    }

    /// Enqueues one record, counted in `to` until its delivery report; waits (never drops)
    /// while librdkafka's queue is full.
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        to: &Deliveries,
    ) -> Result<(), PublishError> {
        self.send_opaque(topic, key, payload, headers, to.add())
    }

    fn send_opaque(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        opaque: delivery::Opaque,
    ) -> Result<(), PublishError> {
        let opaque = opaque.into_ptr();
        loop {
            let code = enqueue::topic_cstr(topic, |name| {
                enqueue::enqueue(&self.producer, name, key, payload, headers.as_ref(), opaque)
            });
            let error = match code {
                Ok(RDKafkaErrorCode::NoError) => {
                    // librdkafka owns the headers now, and frees them with the message.
                    std::mem::forget(headers);
                    return Ok(());
                }
                Ok(RDKafkaErrorCode::QueueFull) => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Ok(code) => KafkaError::MessageProduction(code),
                Err(nul) => KafkaError::from(nul),
            };
            // SAFETY: librdkafka did not take the record, so `opaque` is still this call's.
            unsafe { delivery::Opaque::from_ptr(opaque) }.unsent();
            return Err(PublishError::Send { topic: topic.to_string(), error });
        }
    }

    /// Sends the original message to the dead-letter topic with reason headers, cut to fit
    /// the dead-letter limit when it is larger (see [`limits::fit`]).
    pub fn dead_letter(
        &self,
        topic: &str,
        event: &Envelope<RawMessage>,
        stage: &str,
        reason: DeadLetterReason,
        detail: &str,
        to: &Deliveries,
    ) -> Result<(), PublishError> {
        let o = &event.origin;
        let (partition, offset) = (o.partition.to_string(), o.offset.to_string());
        let payload = event.payload.payload.as_deref().unwrap_or(&[]);
        let detail = limits::short_detail(detail);
        let own = [
            (DLQ_STAGE, stage),
            (DLQ_REASON, reason.code()),
            (DLQ_DETAIL, &detail),
            (SOURCE_TOPIC, &o.topic[..]),
            (SOURCE_PARTITION, &partition),
            (SOURCE_OFFSET, &offset),
        ];
        let key = event.payload.key.as_deref();
        let Some(r) = &self.redactor else {
            return self.dead_letter_raw(topic, key, payload, &event.payload.headers, &own, to);
        };
        let redacted = r.dead_letter(key, payload);
        let mut own = own.to_vec();
        own.push((redact::DLQ_REDACTED, redacted.how));
        self.dead_letter_raw(topic, redacted.key.as_deref(), &redacted.payload, &event.payload.headers, &own, to)
    }

    /// Sends `payload` to the dead-letter topic with the original `headers` and verdict's
    /// `own` headers, cut to fit the dead-letter limit.
    pub fn dead_letter_raw(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(String, Vec<u8>)],
        own: &[(&str, &str)],
        to: &Deliveries,
    ) -> Result<(), PublishError> {
        let own_size: usize = own.iter().map(|(k, v)| k.len() + v.len() + 16).sum();
        let fitted = limits::fit(self.dead_letter_limit, key, payload, headers, own_size);
        let mut h = OwnedHeaders::new_with_capacity(own.len() + 4 + fitted.headers_kept);
        for (k, v) in &headers[..fitted.headers_kept] {
            h = h.insert(Header { key: k, value: Some(v) });
        }
        for (k, v) in own {
            h = h.insert(Header { key: k, value: Some(*v) });
        }
        if let Some((size, sha)) = &fitted.truncated {
            self.metrics.guards.dead_letters_truncated.inc();
            let dropped = (headers.len() - fitted.headers_kept).to_string();
            h = h
                .insert(Header { key: limits::DLQ_TRUNCATED, value: Some("true") })
                .insert(Header { key: limits::DLQ_ORIGINAL_SIZE, value: Some(&size.to_string()) })
                .insert(Header { key: limits::DLQ_ORIGINAL_SHA256, value: Some(sha) });
            if fitted.headers_kept < headers.len() {
                h = h.insert(Header { key: limits::DLQ_HEADERS_DROPPED, value: Some(&dropped) });
            }
        }
        self.send(topic, fitted.key, fitted.payload, Some(h), to)
    }

    /// Waits up to `timeout` for every queued message to be delivered.
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer;
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "producer flush incomplete");
        }
    }

    /// Re-sends a message whose delivery failed (same topic, key, payload, headers).
    pub fn resend(&self, msg: &rdkafka::message::OwnedMessage, to: &Deliveries) -> Result<(), PublishError> {
        use rdkafka::Message;
        let headers = msg.headers().cloned();
        self.send(msg.topic(), msg.key(), msg.payload().unwrap_or(&[]), headers, to)
    }

    /// Sends an output record the broker refused for good to the dead-letter topic (reason
    /// `output_refused`): its own bytes and headers, cut to fit, with where it was going and why.
    pub fn dead_letter_refused(
        &self,
        dead_letter_topic: &str,
        msg: &rdkafka::message::OwnedMessage,
        error: &KafkaError,
        to: &Deliveries,
    ) -> Result<(), PublishError> {
        use rdkafka::message::Headers;
        use rdkafka::Message;
        let headers: Vec<(String, Vec<u8>)> = msg
            .headers()
            .map(|hs| hs.iter().map(|h| (h.key.to_string(), h.value.unwrap_or(&[]).to_vec())).collect())
            .unwrap_or_default();
        let detail = format!("topic '{}' refused the record: {error}", msg.topic());
        self.dead_letter_raw(
            dead_letter_topic,
            msg.key(),
            msg.payload().unwrap_or(&[]),
            &headers,
            &[(DLQ_STAGE, "publish"), (DLQ_REASON, DeadLetterReason::OutputRefused.code()), (DLQ_DETAIL, &detail)],
            to,
        )
    }
}

/// The producer's librdkafka properties: idempotent, `acks=all`, the configured compression,
/// `[kafka.security]` (its secret files read now), then `kafka.producer` overrides.
/// `check-config` validates them (no connection).
pub fn producer_config(cfg: &KafkaConfig) -> Result<ClientConfig, crate::core::kafka_security::SecurityError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &cfg.compression)
        .set("linger.ms", "1")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("message.timeout.ms", "120000");
    for (k, v) in cfg.security.properties()? {
        cc.set(k, v);
    }
    for (k, v) in &cfg.producer {
        cc.set(k, v);
    }
    Ok(cc)
}

/// Headers of a decision record.
pub fn decision_headers(event_id: &str, model_version: &str) -> OwnedHeaders {
    decision_headers_with(event_id, model_version, None)
}

/// Headers of a decision record; review copies also carry `verdict.review.priority`.
pub fn decision_headers_with(event_id: &str, model_version: &str, review_priority: Option<i64>) -> OwnedHeaders {
    let h = base_headers(event_id, model_version);
    match review_priority {
        Some(p) => {
            // Formatted on the stack: no String per review record. An i64 is at most 20 bytes.
            let mut digits = [0u8; 20];
            let mut rest = &mut digits[..];
            write!(rest, "{p}").expect("an i64 fits in 20 bytes");
            let n = 20 - rest.len();
            h.insert(Header { key: REVIEW_PRIORITY, value: Some(&digits[..n]) })
        }
        None => h,
    }
}

/// Header on review-topic copies: the review-queue priority (higher first).
pub const REVIEW_PRIORITY: &str = "verdict.review.priority";

fn base_headers(event_id: &str, model_version: &str) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(3)
        .insert(Header { key: EVENT_ID, value: Some(event_id) })
        .insert(Header { key: MODEL_VERSION, value: Some(model_version) })
}

impl crate::core::output::RecordSink for Publisher {
    fn send_record(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(), crate::core::output::SinkError> {
        // The record is queued; its delivery is librdkafka's (the drift records are not acked).
        self.send_opaque(topic, key, payload, None, delivery::Opaque::none()).map_err(Into::into)
    }

    fn flush_records(&self, timeout: Duration) {
        self.flush(timeout);
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;

    #[test]
    fn review_priority_header_is_the_decimal_priority() {
        for p in [40, -7, 0, i64::MIN, i64::MAX] {
            let h = decision_headers_with("tx-1", "3", Some(p));
            let got = h.iter().find(|h| h.key == REVIEW_PRIORITY).and_then(|h| h.value);
            assert_eq!(got, Some(p.to_string().as_bytes()), "{p}");
        }
        assert!(decision_headers("tx-1", "3").iter().all(|h| h.key != REVIEW_PRIORITY));
    }

    #[test]
    fn records_arrive_with_their_key_payload_and_headers_and_a_refused_topic_is_not_counted() {
        let mock = crate::demo::mock::MockKafka::start(1);
        mock.create_topic("decisions", 2);
        mock.create_topic("review", 1);
        let cfg = KafkaConfig { brokers: mock.bootstrap().to_string(), ..KafkaConfig::default() };
        let publisher = Publisher::new(&cfg, &PublishConfig::default(), crate::telemetry::Metrics::new()).unwrap();
        let to = Deliveries::default();
        // From two threads, to two topics each: the topic names are kept per thread.
        std::thread::scope(|s| {
            for t in 0..2 {
                let (publisher, to) = (&publisher, &to);
                s.spawn(move || {
                    for i in 0..50 {
                        let (id, payload) = (format!("tx-{t}-{i}"), format!("{{\"n\":{i}}}"));
                        let topic = if i % 5 == 0 { "review" } else { "decisions" };
                        let headers = decision_headers_with(&id, "7", (i % 5 == 0).then_some(i));
                        publisher.send(topic, Some(id.as_bytes()), payload.as_bytes(), Some(headers), to).unwrap();
                    }
                });
            }
        });
        // A name librdkafka cannot take: refused at once, and the batch does not wait for it.
        let refused = publisher.send("bad\0topic", None, b"x", None, &to).unwrap_err();
        assert!(matches!(refused, PublishError::Send { ref topic, .. } if topic == "bad\0topic"), "{refused}");
        assert!(matches!(to.wait(Duration::from_secs(10)), crate::core::delivery::Waited::Done));
        assert!(to.take_failed().is_empty());

        let idle = Duration::from_millis(500);
        let (decisions, review) = (mock.read_all("decisions", idle), mock.read_all("review", idle));
        assert_eq!((decisions.len(), review.len()), (80, 20));
        for m in decisions.iter().chain(&review) {
            let id = m.header(EVENT_ID).expect("event id header").to_string();
            assert_eq!(m.key.as_deref(), Some(id.as_bytes()));
            let i: i64 = id.rsplit('-').next().unwrap().parse().unwrap();
            assert_eq!(m.payload, format!("{{\"n\":{i}}}").into_bytes());
            assert_eq!(m.header(MODEL_VERSION), Some("7"));
            let priority = i.to_string();
            assert_eq!(m.header(REVIEW_PRIORITY), (i % 5 == 0).then_some(priority.as_str()), "{id}");
        }
    }
}
