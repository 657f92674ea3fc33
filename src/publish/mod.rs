//! Publish stage: decisions, review copies and dead-letter records to Kafka.
//!
//! An idempotent producer (`acks=all`) sends every output of a batch; the
//! [`acker`] waits for the broker's acknowledgements in batch order and only then
//! stores the source offsets, so a committed offset never covers an undelivered output.

pub mod acker;
pub mod record;

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::config::KafkaConfig;
use crate::envelope::{Envelope, RawMessage};
use crate::error::{DeadLetterReason, Policy, StageError};

pub use acker::{Acker, Completed, OffsetStore};
pub use record::DecisionRecord;

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

impl StageError for PublishError {
    fn policy(&self) -> Policy {
        match self {
            PublishError::Create(_) => Policy::Fatal,
            PublishError::Send { .. } => Policy::Retry,
        }
    }
}

/// The idempotent producer shared by all workers.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
}

impl Publisher {
    /// Creates the producer: idempotent, `acks=all`, configured compression, user overrides last.
    pub fn new(cfg: &KafkaConfig) -> Result<Self, PublishError> {
        let producer: FutureProducer = producer_config(cfg).create().map_err(PublishError::Create)?;
        Ok(Self { producer })
    }

    /// Enqueues one record; waits (never drops) while librdkafka's queue is full.
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<DeliveryFuture, PublishError> {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send_result(record) {
                Ok(f) => return Ok(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => return Err(PublishError::Send { topic: topic.to_string(), error }),
            }
        }
    }

    /// Sends the original message to the dead-letter topic with reason headers.
    pub fn dead_letter(
        &self,
        topic: &str,
        event: &Envelope<RawMessage>,
        stage: &str,
        reason: DeadLetterReason,
        detail: &str,
    ) -> Result<DeliveryFuture, PublishError> {
        let o = &event.origin;
        let mut h = OwnedHeaders::new_with_capacity(6 + event.payload.headers.len());
        for (k, v) in &event.payload.headers {
            h = h.insert(Header { key: k, value: Some(v) });
        }
        let (partition, offset) = (o.partition.to_string(), o.offset.to_string());
        h = h
            .insert(Header { key: DLQ_STAGE, value: Some(stage) })
            .insert(Header { key: DLQ_REASON, value: Some(reason.code()) })
            .insert(Header { key: DLQ_DETAIL, value: Some(detail) })
            .insert(Header { key: SOURCE_TOPIC, value: Some(&*o.topic) })
            .insert(Header { key: SOURCE_PARTITION, value: Some(&partition) })
            .insert(Header { key: SOURCE_OFFSET, value: Some(&offset) });
        let payload = event.payload.payload.as_deref().unwrap_or(&[]);
        self.send(topic, event.payload.key.as_deref(), payload, Some(h))
    }

    /// Waits up to `timeout` for every queued message to be delivered.
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer;
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "producer flush incomplete");
        }
    }

    /// Re-sends a message whose delivery failed (same topic, key, payload, headers).
    pub fn resend(&self, msg: &rdkafka::message::OwnedMessage) -> Result<DeliveryFuture, PublishError> {
        use rdkafka::Message;
        let headers = msg.headers().cloned();
        self.send(msg.topic(), msg.key(), msg.payload().unwrap_or(&[]), headers)
    }
}

/// The producer's librdkafka properties: idempotent, `acks=all`, the configured compression,
/// then `kafka.producer` overrides. `check-config` validates them with `create_native_config`
/// (no connection).
pub fn producer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &cfg.compression)
        .set("linger.ms", "1")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("message.timeout.ms", "120000");
    for (k, v) in &cfg.producer {
        cc.set(k, v);
    }
    cc
}

/// Headers of a decision record.
pub fn decision_headers(event_id: &str, model_version: &str) -> OwnedHeaders {
    decision_headers_with(event_id, model_version, None)
}

/// Headers of a decision record; review copies also carry `verdict.review.priority`.
pub fn decision_headers_with(event_id: &str, model_version: &str, review_priority: Option<i64>) -> OwnedHeaders {
    let h = base_headers(event_id, model_version);
    match review_priority {
        Some(p) => h.insert(Header { key: REVIEW_PRIORITY, value: Some(&p.to_string()) }),
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
