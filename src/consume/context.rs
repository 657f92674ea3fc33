//! librdkafka callbacks: rebalances (drain, commit, readiness), commit results,
//! statistics (consumer lag per partition), and librdkafka's own logs and errors, rate
//! limited (a broker that is down reports the same error many times a second).

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::envelope::PartitionResume;
use crate::lograte::KafkaLogs;
use crate::telemetry::Metrics;

/// How long a revoke waits for in-flight batches to be acknowledged before committing.
const REVOKE_DRAIN: Duration = Duration::from_secs(10);

/// Consumer context shared with librdkafka's callbacks.
pub struct VerdictContext {
    metrics: Arc<Metrics>,
    in_flight: Arc<AtomicUsize>,
    abort: Mutex<Option<CancellationToken>>,
    revoked: Mutex<Vec<(String, i32)>>,
    newly_assigned: Mutex<Vec<(String, i32)>>,
    assigned: AtomicI64,
    logs: KafkaLogs,
    resume: Mutex<Option<Arc<dyn PartitionResume>>>,
    /// verdict's fetch queue, which newly assigned partitions are forwarded to.
    fetch: std::sync::OnceLock<Arc<super::fetch::Fetch>>,
}

impl VerdictContext {
    /// A context reporting into `metrics`; `in_flight` counts unacknowledged batches.
    pub fn new(metrics: Arc<Metrics>, in_flight: Arc<AtomicUsize>) -> Self {
        Self {
            logs: KafkaLogs::new("kafka_consumer", Some(&metrics)),
            metrics,
            in_flight,
            abort: Mutex::new(None),
            revoked: Mutex::new(Vec::new()),
            newly_assigned: Mutex::new(Vec::new()),
            assigned: AtomicI64::new(0),
            resume: Mutex::new(None),
            fetch: std::sync::OnceLock::new(),
        }
    }

    /// The consumer's fetch queue (set once, when the consumer is created).
    pub fn set_fetch(&self, fetch: Arc<super::fetch::Fetch>) {
        let _ = self.fetch.set(fetch);
    }

    /// The consumer's fetch queue.
    pub fn fetch(&self) -> Option<&Arc<super::fetch::Fetch>> {
        self.fetch.get()
    }

    /// Partition-owned state to claim on assignment (and resume from its checkpoint) and
    /// to checkpoint and release on revocation. Set after creation, before the first poll.
    pub fn set_resume(&self, resume: Arc<dyn PartitionResume>) {
        *self.resume.lock() = Some(resume);
    }

    fn resume(&self) -> Option<Arc<dyn PartitionResume>> {
        self.resume.lock().clone()
    }

    fn abort_token(&self) -> CancellationToken {
        self.abort.lock().clone().unwrap_or_default()
    }

    /// Once `abort` is cancelled, a revoke does not wait for in-flight batches (crash-like
    /// teardown). Set after creation: the consumer is created before the pipeline's tree.
    pub fn set_abort_token(&self, abort: CancellationToken) {
        *self.abort.lock() = Some(abort);
    }

    /// Partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        let mut r = self.revoked.lock();
        if r.is_empty() {
            Vec::new()
        } else {
            std::mem::take(&mut *r)
        }
    }

    /// Partitions assigned since the last call.
    pub fn take_assigned(&self) -> Vec<(String, i32)> {
        let mut r = self.newly_assigned.lock();
        if r.is_empty() {
            Vec::new()
        } else {
            std::mem::take(&mut *r)
        }
    }

    /// Logs an error the consumer's `poll` returned, rate limited together with the
    /// client's errors (a global error reaches [`ClientContext::error`] and then `poll`: one
    /// line for both). The consume loop calls this instead of logging each error itself.
    pub fn poll_error(&self, error: &KafkaError) {
        self.logs.poll_error(error);
    }

    fn aborted(&self) -> bool {
        self.abort.lock().as_ref().is_some_and(CancellationToken::is_cancelled)
    }
}

impl ClientContext for VerdictContext {
    // OAUTHBEARER tokens (an OAuth token endpoint, or the unsecured test token).
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        crate::core::kafka_security::oauth::token(config)
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if let (RDKafkaLogLevel::Warning, "OFFSET", Some((topic, partition))) = (level, fac, offset_reset(log_message))
        {
            self.metrics.offset_resets.with_label_values(&[topic, partition]).inc();
        }
        self.logs.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.logs.error(&error, reason);
    }

    fn stats(&self, stats: Statistics) {
        // The statistics interval is the context's only tick: summaries of ended windows go
        // out here when no further error comes to trigger them.
        self.logs.flush();
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &partition.to_string()])
                        .set(p.consumer_lag);
                }
            }
        }
    }
}

fn list(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

impl ConsumerContext for VerdictContext {
    /// rdkafka's own rebalance handling, with one step added: newly assigned partitions
    /// with a state checkpoint start from its offset (set in the assignment itself; a seek
    /// right after an assignment is refused while the partition is not yet fetching).
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            // Forwarded before they are assigned: none of their messages reaches the
            // consumer's own queue first (see `fetch`).
            if let Some(fetch) = self.fetch() {
                for e in tpl.elements() {
                    fetch.route(e.topic(), e.partition());
                }
            }
            if let Some(resume) = self.resume() {
                let abort = self.abort_token();
                for (topic, partition) in list(tpl) {
                    if let Some(offset) = resume.assigned(&topic, partition, &abort) {
                        if let Err(e) = tpl.set_partition_offset(&topic, partition, Offset::Offset(offset)) {
                            tracing::warn!(%topic, partition, offset, error = %e, "checkpoint offset not applied");
                        }
                    }
                }
            }
        }
        default_rebalance(self, consumer, err, tpl);
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = list(tpl);
            // Let batches already handed to workers finish, so their offsets are committed
            // by us rather than re-processed by the next owner.
            let start = Instant::now();
            while self.in_flight.load(Ordering::SeqCst) > 0 && start.elapsed() < REVOKE_DRAIN && !self.aborted() {
                std::thread::sleep(Duration::from_millis(2));
            }
            // Partition-owned state: a final checkpoint (only when every batch of the partition
            // was acknowledged) and its offset stored, then the state is let go.
            if let Some(resume) = self.resume() {
                let drained = self.in_flight.load(Ordering::SeqCst) == 0 && !self.aborted();
                for (topic, partition) in &parts {
                    resume.revoked(topic, *partition, drained, consumer);
                }
            }
            if !self.aborted() {
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) => self.metrics.commits.with_label_values(&["ok"]).inc(),
                    Err(e) => tracing::debug!(error = %e, "commit on revoke"),
                }
            }
            for (topic, partition) in &parts {
                let _ = self.metrics.consumer_lag.remove_label_values(&[topic, &partition.to_string()]);
            }
            tracing::info!(partitions = ?parts, waited_ms = start.elapsed().as_millis() as u64, "partitions revoked");
            self.revoked.lock().extend(parts);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Counted from the callbacks, not asked of librdkafka: `assignment()` from inside the
        // rebalance callback of a closing consumer waits forever on the group queue being torn
        // down (seen as a hung shutdown). Cooperative callbacks carry the partitions added or
        // revoked; eager ones revoke everything before assigning the full set: the same sums.
        let delta = match rebalance {
            Rebalance::Assign(tpl) => tpl.count() as i64,
            Rebalance::Revoke(tpl) => -(tpl.count() as i64),
            Rebalance::Error(_) => 0,
        };
        let assigned = (self.assigned.fetch_add(delta, Ordering::SeqCst) + delta).max(0);
        self.metrics.partitions_assigned.set(assigned);
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.newly_assigned.lock().extend(list(tpl));
                tracing::info!(added = ?list(tpl), assigned, "partitions assigned")
            }
            Rebalance::Revoke(_) => tracing::info!(assigned, "revoke complete"),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) => self.metrics.commits.with_label_values(&["ok"]).inc(),
            Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            // Refused mid-rebalance: the next interval (or the revoke) commits it.
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::RebalanceInProgress
                | rdkafka::types::RDKafkaErrorCode::IllegalGeneration,
            )) => {
                self.metrics.commits.with_label_values(&["rebalancing"]).inc();
                tracing::debug!("offset commit refused during a rebalance; retried at the next interval");
            }
            Err(e) => {
                self.metrics.commits.with_label_values(&["error"]).inc();
                // Every interval while the broker is down: rate limited.
                if self.logs.admit(tracing::Level::WARN, "offset commit failed") {
                    tracing::warn!(error = %e, "offset commit failed");
                }
            }
        }
    }
}

/// rdkafka's default `ConsumerContext::rebalance` (pre-rebalance, the assignment, then
/// post-rebalance), which an override cannot call.
fn default_rebalance(
    ctx: &VerdictContext,
    consumer: &BaseConsumer<VerdictContext>,
    err: RDKafkaRespErr,
    tpl: &mut TopicPartitionList,
) {
    use rdkafka::consumer::RebalanceProtocol;
    let rebalance = match err {
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(tpl),
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
        _ => Rebalance::Error(KafkaError::Rebalance(err.into())),
    };
    ctx.pre_rebalance(consumer, &rebalance);
    let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
    let result = match (err, cooperative) {
        (RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, true) => consumer.incremental_assign(tpl),
        (RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, false) => consumer.assign(tpl),
        (_, true) => consumer.incremental_unassign(tpl),
        (_, false) => consumer.unassign(),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "applying the rebalance");
    }
    ctx.post_rebalance(consumer, &rebalance);
}

/// The topic and partition of librdkafka's warning that a position outside the log was
/// reset (`auto.offset.reset`): `"[thrd:main]: <topic> [<partition>]: offset reset (at offset
/// 12 …) to …"`. It is the only report of events skipped that way: librdkafka raises no error
/// for it. (A topic name has no spaces or brackets.)
pub(crate) fn offset_reset(message: &str) -> Option<(&str, &str)> {
    let (head, _) = message.split_once("]: offset reset (at ")?;
    let (before, partition) = head.rsplit_once(" [")?;
    let topic = before.rsplit(' ').next()?;
    let digits = !partition.is_empty() && partition.bytes().all(|b| b.is_ascii_digit());
    (digits && !topic.is_empty()).then_some((topic, partition))
}
