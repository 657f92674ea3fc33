//! The group consumer: its creation (verdict's librdkafka properties, the fetch queue and the
//! callback that wakes its reader), offsets stored for the acker, and commits.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{CommitMode, Consumer};

use super::config::KafkaConfig;
use super::{fetch, KafkaConsumer, VerdictContext};
use crate::envelope::OffsetStore;
use crate::telemetry::Metrics;

/// Creates the group consumer and subscribes to the input topics.
pub fn create_consumer(
    cfg: &KafkaConfig,
    stats_interval_ms: u64,
    metrics: Arc<Metrics>,
    in_flight: Arc<AtomicUsize>,
) -> Result<Arc<KafkaConsumer>, rdkafka::error::KafkaError> {
    let cc = consumer_config(cfg, stats_interval_ms)
        .map_err(|e| rdkafka::error::KafkaError::ClientCreation(e.to_string()))?;
    let mut consumer: KafkaConsumer = cc.create_with_context(VerdictContext::new(metrics, in_flight))?;
    let fetch = Arc::new(fetch::Fetch::new(consumer.client().native_ptr()));
    let waker = fetch.clone();
    consumer.set_nonempty_callback(move || waker.wake());
    consumer.context().set_fetch(fetch);
    let topics: Vec<&str> = cfg.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(Arc::new(consumer))
}

/// The consumer's librdkafka properties: verdict's own, `[kafka.security]` (its secret files
/// read now), then `kafka.consumer` overrides. `check-config` validates them (no connection).
pub fn consumer_config(
    cfg: &KafkaConfig,
    stats_interval_ms: u64,
) -> Result<ClientConfig, crate::core::kafka_security::SecurityError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.brokers)
        .set("group.id", &cfg.group_id)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // librdkafka stops fetching a partition while its prefetch queue is over
        // `queued.max.messages.kbytes` and looks again only `fetch.queue.backoff.ms` later
        // (1,000 ms by default). A consumer catching up on a backlog (after a restart, a
        // rebalance, an outage) fills the queue faster than it decides, then drains it and
        // idles for the rest of that second: the spine bench's backlog drain spent 44% of its
        // time waiting so (119k events/s, 230k with these two). A 16 MiB queue is still
        // ~60,000 events of prefetch; look again after 10 ms.
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.queue.backoff.ms", "10")
        .set("statistics.interval.ms", stats_interval_ms.to_string());
    for (k, v) in cfg.security.properties()? {
        cc.set(k, v);
    }
    for (k, v) in &cfg.consumer {
        cc.set(k, v);
    }
    // librdkafka's warnings are emitted whatever verdict's log level: an offset reset is
    // counted from its warning (`verdict_consumer_offset_resets_total`).
    if (cc.log_level as i32) < RDKafkaLogLevel::Warning as i32 {
        cc.set_log_level(RDKafkaLogLevel::Warning);
    }
    Ok(cc)
}

impl OffsetStore for KafkaConsumer {
    fn store(&self, topic: &str, partition: i32, offset: i64) {
        // Fails only when the partition was revoked meanwhile: its new owner re-reads it.
        if let Err(e) = self.store_offset(topic, partition, offset) {
            tracing::debug!(topic, partition, offset, error = %e, "offset not stored (partition revoked?)");
        }
    }
}

/// The group consumer's offset store through one librdkafka topic handle per topic, kept for
/// the consumer's life: rust-rdkafka's `store_offset` makes a C string and a topic handle on
/// every call (per partition per batch; issue 23's allocations per batch).
pub struct ConsumerOffsets {
    consumer: Arc<KafkaConsumer>,
    topics: parking_lot::Mutex<Vec<(Box<str>, TopicHandle)>>,
}

/// A librdkafka topic handle of the consumer (`rd_kafka_topic_new`), destroyed on drop.
struct TopicHandle(*mut rdkafka::bindings::rd_kafka_topic_t);

// SAFETY: librdkafka's topic handles are thread-safe; this one is only read after creation.
unsafe impl Send for TopicHandle {}

impl ConsumerOffsets {
    /// Stores offsets into `consumer`'s offset store (committed by its interval commits).
    pub fn new(consumer: Arc<KafkaConsumer>) -> Self {
        Self { consumer, topics: parking_lot::Mutex::new(Vec::new()) }
    }
}

impl OffsetStore for ConsumerOffsets {
    fn store(&self, topic: &str, partition: i32, offset: i64) {
        use rdkafka::bindings as rd;
        let mut topics = self.topics.lock();
        let rkt = match topics.iter().find(|(t, _)| &**t == topic) {
            Some((_, h)) => h.0,
            None => {
                let Ok(name) = std::ffi::CString::new(topic) else { return };
                // SAFETY: the consumer's handle is live (held by `self`); the name is a
                // NUL-terminated copy; no topic configuration is passed.
                let rkt = unsafe {
                    rd::rd_kafka_topic_new(self.consumer.client().native_ptr(), name.as_ptr(), std::ptr::null_mut())
                };
                if rkt.is_null() {
                    tracing::debug!(topic, partition, offset, "offset not stored (no topic handle)");
                    return;
                }
                topics.push((topic.into(), TopicHandle(rkt)));
                rkt
            }
        };
        // SAFETY: `rkt` is a live topic handle of this consumer (destroyed only on drop).
        let err = unsafe { rd::rd_kafka_offset_store(rkt, partition, offset) };
        // Fails only when the partition was revoked meanwhile: its new owner re-reads it.
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            tracing::debug!(topic, partition, offset, error = ?err, "offset not stored (partition revoked?)");
        }
    }
}

impl Drop for ConsumerOffsets {
    fn drop(&mut self) {
        for (_, h) in self.topics.get_mut().drain(..) {
            // SAFETY: created by `rd_kafka_topic_new` on the consumer `self` still holds,
            // destroyed once.
            unsafe { rdkafka::bindings::rd_kafka_topic_destroy(h.0) };
        }
    }
}

/// Commits the stored offsets without waiting; the result comes back on the consumer's own
/// queue, where `poll` hands it to `VerdictContext::commit_callback` (counted in
/// `verdict_commits_total`). `commit_consumer_state(CommitMode::Async)` calls
/// `rd_kafka_commit` without a reply queue, and librdkafka then reports a manual commit
/// only to an `offset_commit_cb`, which rust-rdkafka does not set: no interval commit was
/// ever counted.
pub(super) fn commit_async(consumer: &KafkaConsumer) {
    use rdkafka::bindings as rd;
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is the live consumer's handle. The queue handle is a new reference to
    // the consumer queue (owned by `rk`), released right after the commit is queued: the
    // commit's reply keeps its own reference to the queue.
    let err = unsafe {
        let queue = rd::rd_kafka_queue_get_consumer(rk);
        if queue.is_null() {
            return;
        }
        let err = rd::rd_kafka_commit_queue(rk, std::ptr::null(), queue, None, std::ptr::null_mut());
        rd::rd_kafka_queue_destroy(queue);
        err
    };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        tracing::debug!(error = ?err, "interval commit not sent");
    }
}

/// Commits stored offsets synchronously (shutdown).
pub fn commit_stored(consumer: &KafkaConsumer, metrics: &Metrics) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => metrics.commits.with_label_values(&["ok"]).inc(),
        // Nothing stored since the last commit is not a failure.
        Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => {
            metrics.commits.with_label_values(&["error"]).inc();
            tracing::warn!(error = %e, "final commit failed");
        }
    }
}
