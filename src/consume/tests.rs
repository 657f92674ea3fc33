//! The consumer's librdkafka properties: verdict's defaults, and `kafka.consumer` winning.

use super::consumer_config;
use crate::core::kafka::KafkaConfig;

#[test]
fn a_consumer_behind_looks_for_more_after_10_ms_not_a_second() {
    let cc = consumer_config(&KafkaConfig::default(), 1000).expect("config");
    assert_eq!(cc.get("fetch.queue.backoff.ms"), Some("10"));
    assert_eq!(cc.get("queued.max.messages.kbytes"), Some("16384"));
    assert_eq!(cc.get("enable.auto.commit"), Some("false"));
}

#[test]
fn kafka_consumer_overrides_verdicts_defaults() {
    let mut kafka = KafkaConfig::default();
    kafka.consumer.insert("fetch.queue.backoff.ms".into(), "1000".into());
    kafka.consumer.insert("queued.max.messages.kbytes".into(), "65536".into());
    let cc = consumer_config(&kafka, 1000).expect("config");
    assert_eq!(cc.get("fetch.queue.backoff.ms"), Some("1000"));
    assert_eq!(cc.get("queued.max.messages.kbytes"), Some("65536"));
}
