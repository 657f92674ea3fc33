//! The consumer's librdkafka properties: verdict's defaults, and `kafka.consumer` winning.

use super::consumer_config;
use crate::core::kafka::KafkaConfig;

#[test]
fn a_consumer_behind_looks_for_more_after_10_ms_not_a_second() {
    let cc = consumer_config(&KafkaConfig::default(), 1000).expect("config");
    assert_eq!(cc.get("fetch.queue.backoff.ms"), Some("10"));
    assert_eq!(cc.get("queued.max.messages.kbytes"), Some("16384"));
    assert_eq!(cc.get("enable.auto.commit"), Some("false"));
    // Offset resets are counted from librdkafka's warnings, whatever the log level.
    assert!(cc.log_level as i32 >= rdkafka::config::RDKafkaLogLevel::Warning as i32);
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

#[test]
fn an_offset_reset_warning_names_its_topic_and_partition() {
    use super::context::offset_reset;
    // librdkafka 2.12's words (rdkafka_offset.c, rd_kafka_offset_reset), as its log callback
    // passes them.
    let warning = "[thrd:main]: card-events [3]: offset reset (at offset 1000 (leader epoch 0), broker 1) \
                   to cached BEGINNING offset offset 42497 (leader epoch -1): fetch failed due to \
                   requested offset not available on the broker: Broker: Offset out of range";
    assert_eq!(offset_reset(warning), Some(("card-events", "3")));
    let queried = "events.v2 [12]: offset reset (at offset 5, broker 2) to offset BEGINNING: x: y";
    assert_eq!(offset_reset(queried), Some(("events.v2", "12")));
    assert_eq!(offset_reset("[thrd:main]: card-events [3]: offset reset by the application"), None);
    assert_eq!(offset_reset("card-events [x]: offset reset (at offset 1) to END"), None);
    assert_eq!(offset_reset("card-events []: offset reset (at offset 1) to END"), None);
}
