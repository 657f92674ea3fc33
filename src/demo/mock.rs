//! librdkafka's in-process mock cluster, for the demo, the tests and the benchmarks.
//!
//! The cluster lives as long as the [`MockKafka`] that owns it. Its first consumer
//! group join is made immediate (the mock otherwise waits 3 s).

use std::ffi::{CStr, CString};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;

/// A producer plus read-back helpers for any cluster (the mock one, or a real broker in
/// the end-to-end tests): what the demo, tests and benchmarks use to feed and inspect topics.
pub struct KafkaClient {
    producer: BaseProducer,
    bootstrap: String,
}

/// An in-process Kafka cluster plus a [`KafkaClient`] attached to it (through `Deref`).
pub struct MockKafka {
    client: KafkaClient,
    cluster: *mut rd::rd_kafka_mock_cluster_t,
}

// The raw cluster handle is only used through librdkafka's thread-safe mock API.
unsafe impl Send for MockKafka {}
unsafe impl Sync for MockKafka {}

impl std::ops::Deref for MockKafka {
    type Target = KafkaClient;
    fn deref(&self) -> &KafkaClient {
        &self.client
    }
}

/// A message read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadMessage {
    /// Partition it was read from.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Payload.
    pub payload: Vec<u8>,
    /// Headers as (key, value-as-text).
    pub headers: Vec<(String, String)>,
}

impl ReadMessage {
    /// The first header named `key`, as text.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

impl MockKafka {
    /// Starts a cluster of `brokers` brokers.
    pub fn start(brokers: u32) -> Self {
        let producer: BaseProducer = producer_config()
            .set("test.mock.num.brokers", brokers.to_string())
            .create()
            .expect("mock cluster producer");
        let cluster = unsafe { rd::rd_kafka_handle_mock_cluster(producer.client().native_ptr()) };
        assert!(!cluster.is_null(), "librdkafka built without mock cluster support");
        unsafe { rd::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0) };
        let bootstrap =
            unsafe { CStr::from_ptr(rd::rd_kafka_mock_cluster_bootstraps(cluster)) }.to_string_lossy().into_owned();
        Self { client: KafkaClient { producer, bootstrap }, cluster }
    }

    /// Creates a topic.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let c = CString::new(name).expect("topic name");
        let err = unsafe { rd::rd_kafka_mock_topic_create(self.cluster, c.as_ptr(), partitions, 1) };
        assert_eq!(err, rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR, "create topic {name}");
    }
}

fn producer_config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("linger.ms", "5")
        // Each mock partition keeps only ~5 MiB: compressed batches stretch that.
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .set("batch.num.messages", "10000");
    c
}

impl KafkaClient {
    /// A client of the cluster at `bootstrap` (a real broker).
    pub fn connect(bootstrap: &str) -> Self {
        let producer = producer_config()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .create()
            .expect("producer");
        Self { producer, bootstrap: bootstrap.to_string() }
    }

    /// `bootstrap.servers` for clients of this cluster.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Creates topics through the admin API (a real broker), `(name, partitions)`.
    pub fn create_topics(&self, topics: &[(&str, i32)]) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().expect("admin client");
        let new: Vec<NewTopic> = topics.iter().map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1))).collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = futures::executor::block_on(admin.create_topics(&new, &opts)).expect("create topics");
        for r in results {
            if let Err((name, e)) = r {
                assert_eq!(e, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists, "create topic {name}: {e}");
            }
        }
    }

    /// Produces one message (key, payload) to `partition` (or by key hash when None).
    pub fn produce(&self, topic: &str, partition: Option<i32>, key: &[u8], payload: &[u8]) {
        self.produce_with_headers(topic, partition, key, payload, None);
    }

    /// Produces one message with an explicit Kafka timestamp (ms since epoch).
    pub fn produce_at(&self, topic: &str, key: &[u8], payload: &[u8], timestamp_ms: i64) {
        self.send(BaseRecord::to(topic).key(key).payload(payload).timestamp(timestamp_ms));
    }

    /// Sends a record, retrying while the local queue is full. Every send also serves the
    /// delivery reports that are ready: a BaseProducer frees a delivered message only when its
    /// report is polled, so without this the demo's producer held every message until the
    /// queue's 1,000,000-message limit (408 MiB of the demo process's heap at 30k events/s).
    fn send(&self, mut record: BaseRecord<'_, [u8], [u8]>) {
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.producer.poll(Duration::ZERO);
                    return;
                }
                Err((_, r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(1));
                }
            }
        }
    }

    /// Produces one message with headers.
    pub fn produce_with_headers(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: &[u8],
        headers: Option<&[(&str, &str)]>,
    ) {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(key).payload(payload);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(hs) = headers {
            let mut h = OwnedHeaders::new_with_capacity(hs.len());
            for (k, v) in hs {
                h = h.insert(Header { key: k, value: Some(*v) });
            }
            record = record.headers(h);
        }
        self.send(record);
    }

    /// Waits until every produced message is in the cluster.
    pub fn flush(&self) {
        self.producer.flush(Duration::from_secs(60)).expect("flush");
    }

    /// Reads every message of `topic` from the beginning until `idle` passes with nothing new.
    pub fn read_all(&self, topic: &str, idle: Duration) -> Vec<ReadMessage> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", format!("reader-{topic}-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("reader consumer");
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
        let partitions = md.topics().first().map(|t| t.partitions().len()).unwrap_or(0) as i32;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning).expect("tpl");
        }
        consumer.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let mut last = std::time::Instant::now();
        while last.elapsed() < idle {
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    use rdkafka::message::Headers;
                    let headers = m
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| {
                                    (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or(&[])).into_owned())
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    out.push(ReadMessage {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().unwrap_or(&[]).to_vec(),
                        headers,
                    });
                    last = std::time::Instant::now();
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        out
    }

    /// Committed offsets of `group` on `topic` partitions `0..partitions` (-1001 = none).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("offset reader");
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let offsets = {
            let c = consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
            c.elements().iter().map(|e| e.offset().to_raw().unwrap_or(-1001)).collect()
        };
        offsets
    }
}
