//! The two label threads: the scored-event writer (takes the workers' scored events from a
//! bounded queue, keeps them in Redis with a TTL) and the label joiner (consumes the labels
//! topic, joins each label to its kept event with `GETDEL`, hands the result to the window's
//! [`LabelStats`]).

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message};
use tokio_util::sync::CancellationToken;
use tracing::Level;

use super::{parse_label, LabelStats};
use crate::backoff::Backoff;
use crate::core::decision::Action;
use crate::core::redis::{Client, Connection, RedisConfig};
use crate::lograte::{LimitedContext, LogRate, WINDOW};
use crate::telemetry::Metrics;

/// A scored event: id, score, action, and the trial version's score with its rollout epoch.
type Scored = (String, f32, Action, Option<(f32, u64)>);

/// Scored events on their way to Redis.
pub struct ScoredSink {
    tx: Sender<Scored>,
    metrics: Arc<Metrics>,
}

impl ScoredSink {
    /// Keeps one scored event (never blocks; counted and skipped when the queue is full).
    pub fn keep(&self, event_id: &str, score: f32, action: Action) {
        self.keep_paired(event_id, score, action, None);
    }

    /// Keeps one scored event with the score of the version on trial and its rollout epoch.
    pub fn keep_paired(&self, event_id: &str, score: f32, action: Action, trial: Option<(f32, u64)>) {
        match self.tx.try_send((event_id.to_string(), score, action, trial)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.labels.with_label_values(&["not_kept"]).inc();
            }
        }
    }
}

/// Where scored events are kept and how long.
#[derive(Debug, Clone)]
pub struct LabelStore {
    /// Redis URL.
    pub redis_url: String,
    /// TLS and credentials for it (`[redis]`).
    pub redis: RedisConfig,
    /// `enrich.redis_cluster`: `redis_url` lists seed nodes of a Redis Cluster.
    pub cluster: bool,
    /// Key prefix (`{prefix}:s:{event_id}`).
    pub prefix: String,
    /// TTL of a scored event, seconds.
    pub horizon_s: u64,
}

impl LabelStore {
    fn key(&self, event_id: &str) -> String {
        format!("{}:s:{event_id}", self.prefix)
    }
}

/// The writer's end of the scored-event queue; run it on its own thread.
pub struct ScoredWriter {
    store: LabelStore,
    rx: Receiver<Scored>,
    metrics: Arc<Metrics>,
}

/// The workers' sink and the writer that drains it (a queue of `capacity` events).
pub fn scored_channel(store: LabelStore, capacity: usize, metrics: Arc<Metrics>) -> (Arc<ScoredSink>, ScoredWriter) {
    let (tx, rx) = bounded::<Scored>(capacity.max(1));
    (Arc::new(ScoredSink { tx, metrics: metrics.clone() }), ScoredWriter { store, rx, metrics })
}

/// Starts the writer on its own thread; returns the workers' sink. The thread ends when
/// every sink is dropped.
pub fn spawn_writer(
    store: LabelStore,
    capacity: usize,
    metrics: Arc<Metrics>,
) -> std::io::Result<(Arc<ScoredSink>, std::thread::JoinHandle<()>)> {
    let (sink, writer) = scored_channel(store, capacity, metrics);
    let handle = std::thread::Builder::new()
        .name("verdict-scored".into())
        .spawn(move || writer.run(&CancellationToken::new()))?;
    Ok((sink, handle))
}

impl ScoredWriter {
    /// Keeps scored events until every sink is dropped (what is queued then is still written)
    /// or `cancel` is cancelled (what is queued is dropped: the crash-like stop).
    pub fn run(self, cancel: &CancellationToken) {
        let ScoredWriter { store, rx, metrics } = self;
        let mut conn: Option<Connection> = None;
        let failures = LogRate::new("labels_writer", WINDOW, Some(&metrics));
        let mut chunk = Vec::with_capacity(1024);
        while !cancel.is_cancelled() {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(x) => chunk.push(x),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while chunk.len() < 1024 {
                match rx.try_recv() {
                    Ok(x) => chunk.push(x),
                    Err(_) => break,
                }
            }
            let mut pipe = redis::pipe();
            for (id, score, action, trial) in &chunk {
                // `score,action[,trial score,epoch]`: readers take the first field.
                let value = match trial {
                    Some((t, epoch)) => {
                        format!("{:?},{},{:?},{epoch}", f64::from(*score), action.label(), f64::from(*t))
                    }
                    None => format!("{:?},{}", f64::from(*score), action.label()),
                };
                pipe.cmd("SET").arg(store.key(id)).arg(value).arg("EX").arg(store.horizon_s.max(1)).ignore();
            }
            match query::<()>(&mut conn, &store, &pipe) {
                Ok(()) => {
                    metrics.labels.with_label_values(&["kept"]).inc_by(chunk.len() as u64);
                }
                Err(e) => {
                    metrics.labels.with_label_values(&["not_kept"]).inc_by(chunk.len() as u64);
                    let error = crate::redact::redis_error(&e);
                    if failures.admit(Level::WARN, "scored events not kept for label joins") {
                        tracing::warn!(%error, events = chunk.len(), "scored events not kept for label joins");
                    }
                }
            }
            chunk.clear();
        }
    }
}

/// The trial version's score and rollout epoch in a kept value (`score,action,trial,epoch`).
fn trial_of(value: &str) -> Option<(f64, u64)> {
    let mut f = value.split(',').skip(2);
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// Runs `pipe` on the kept connection, connecting first if there is none; the connection is
/// kept only while it works.
fn query<T: redis::FromRedisValue>(
    conn: &mut Option<Connection>,
    store: &LabelStore,
    pipe: &redis::Pipeline,
) -> redis::RedisResult<T> {
    let mut c = match conn.take() {
        Some(c) => c,
        None => Client::new("enrich.redis_url", &store.redis_url, &store.redis, store.cluster)
            .map_err(|e| redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "redis", e.to_string())))?
            .connect(Duration::from_secs(1))?,
    };
    let v = c.query_pipe(pipe)?;
    *conn = Some(c);
    Ok(v)
}

/// Consumes the labels topic, joining labels into `stats`; run it on its own thread.
pub struct LabelJoiner {
    /// `kafka.brokers`.
    pub brokers: String,
    /// The joiner's own consumer group.
    pub group: String,
    /// `drift.labels_topic`.
    pub topic: String,
    /// `[kafka.security]`, applied before the overrides.
    pub security: crate::core::kafka_security::KafkaSecurity,
    /// `kafka.consumer` overrides.
    pub extra: std::collections::BTreeMap<String, String>,
    /// Where the scored events are kept.
    pub store: LabelStore,
    /// The current window's label statistics.
    pub stats: Arc<Mutex<LabelStats>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Labels of events a trial version scored too (guarded rollout).
    pub paired: Option<Arc<dyn super::PairedLabels>>,
}

impl LabelJoiner {
    /// Joins labels until `cancel` is cancelled. When the labels consumer cannot be created
    /// or subscribed, says so and waits for `cancel`: labels are not joined, and the pipeline
    /// goes on.
    pub fn run(self, cancel: &CancellationToken) {
        let Some(consumer) = self.consumer() else {
            return futures::executor::block_on(cancel.cancelled());
        };
        let (store, stats, metrics) = (&self.store, &self.stats, &self.metrics);
        let join_failures = LogRate::new("labels_joiner", WINDOW, Some(metrics));
        // A failed join is retried with the same labels; the consumer keeps its position.
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        let mut conn: Option<Connection> = None;
        let mut pending: Vec<(String, bool)> = Vec::new();
        while !cancel.is_cancelled() {
            // Wait for a label, drain what is already fetched, then join them in one round trip.
            let mut timeout = Duration::from_millis(100);
            while pending.len() < 1000 {
                match consumer.poll(std::mem::take(&mut timeout)) {
                    Some(Ok(m)) => match m.payload().and_then(parse_label) {
                        Some(l) => pending.push(l),
                        None => {
                            stats.lock().invalid += 1;
                            metrics.labels.with_label_values(&["invalid"]).inc();
                        }
                    },
                    Some(Err(e)) => {
                        consumer.context().logs().poll_error(&e);
                        break;
                    }
                    None => break,
                }
            }
            if pending.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for (id, _) in &pending {
                pipe.cmd("GETDEL").arg(store.key(id));
            }
            match query::<Vec<Option<String>>>(&mut conn, store, &pipe) {
                Ok(values) => {
                    backoff.reset();
                    let mut s = stats.lock();
                    for ((_, positive), v) in pending.drain(..).zip(values) {
                        match v.as_deref().and_then(|v| v.split(',').next()).and_then(|x| x.parse::<f64>().ok()) {
                            Some(score) => {
                                s.add(score, positive);
                                if let (Some(p), Some((trial, epoch))) = (&self.paired, v.as_deref().and_then(trial_of))
                                {
                                    p.joined(epoch, score, trial, positive);
                                }
                                metrics.labels.with_label_values(&["joined"]).inc();
                            }
                            None => {
                                s.unknown += 1;
                                metrics.labels.with_label_values(&["unknown"]).inc();
                            }
                        }
                    }
                }
                Err(e) => {
                    let error = crate::redact::redis_error(&e);
                    if join_failures.admit(Level::WARN, "label join failed; retrying") {
                        tracing::warn!(%error, labels = pending.len(), "label join failed; retrying");
                    }
                    backoff.wait(cancel);
                }
            }
        }
    }

    /// The labels consumer, subscribed; None (logged, secrets scrubbed) when it cannot be.
    fn consumer(&self) -> Option<BaseConsumer<LimitedContext>> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .set("enable.auto.commit", "true")
            .set("auto.offset.reset", "earliest");
        let security = match self.security.properties() {
            Ok(properties) => properties,
            Err(error) => {
                tracing::error!(%error, "labels consumer not created; labels are not joined");
                return None;
            }
        };
        for (k, v) in security {
            cc.set(k, v);
        }
        for (k, v) in &self.extra {
            cc.set(k, v);
        }
        let context = LimitedContext::new("labels_consumer", Some(&self.metrics));
        let consumer: BaseConsumer<LimitedContext> = match cc.create_with_context(context) {
            Ok(c) => c,
            Err(e) => {
                let error = crate::redact::Secrets::from_values(
                    self.extra
                        .iter()
                        .filter(|(k, _)| crate::redact::is_secret_property(k))
                        .map(|(_, v)| v.clone())
                        .chain(self.security.secret_values())
                        .collect(),
                )
                .scrub(&e.to_string());
                tracing::error!(%error, "labels consumer not created; labels are not joined");
                return None;
            }
        };
        if let Err(e) = consumer.subscribe(&[&self.topic]) {
            tracing::error!(error = %e, topic = %self.topic, "labels topic not subscribed");
            return None;
        }
        Some(consumer)
    }
}
