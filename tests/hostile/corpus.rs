//! The hostile-input corpus: every kind of bad message a producer (buggy or malicious) can
//! send, each with the dead-letter reason verdict must give it. Shared by the mock-cluster
//! test (tests/hostile.rs) and the real-broker test (tests/broker.rs).
#![allow(dead_code)]

use std::time::Duration;

use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use verdict::demo::{confluent_frame, Generator};

/// One hostile message.
pub struct Hostile {
    /// What it is, for assertion messages.
    pub kind: &'static str,
    /// Message key (unique: the test finds its dead-letter copy by it).
    pub key: Vec<u8>,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Message headers.
    /// Message headers (names as raw bytes: they need not be UTF-8).
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The `verdict.dlq.reason` it must get.
    pub reason: &'static str,
    /// A text the `verdict.dlq.detail` must contain (a field name), if any.
    pub detail: Option<&'static str>,
}

/// A good event as a JSON value (from the demo generator), for mutation.
pub fn good(g: &mut Generator) -> Value {
    serde_json::from_slice(&g.next_event().to_json()).unwrap()
}

fn with(mut v: Value, path: &[&str], x: Value) -> Value {
    let mut cur = &mut v;
    for p in &path[..path.len() - 1] {
        cur = cur.get_mut(*p).unwrap();
    }
    cur[path[path.len() - 1]] = x;
    v
}

fn without(mut v: Value, field: &str) -> Value {
    v.as_object_mut().unwrap().remove(field);
    v
}

/// Replaces `"amount":<number>` in the serialized event by a raw JSON literal (NaN, 1e400…).
fn raw_amount(v: &Value, literal: &str) -> Vec<u8> {
    let mut v = v.clone();
    v["amount"] = json!("__AMOUNT__");
    serde_json::to_string(&v).unwrap().replace("\"__AMOUNT__\"", literal).into_bytes()
}

/// The corpus: 35 kinds. Payload sizes include a 1.5 MB and a 20 MB message, so the
/// dead-letter copies must be cut to fit the producer's default 1 MB limit.
pub fn corpus(seed: u64) -> Vec<Hostile> {
    let mut g = Generator::new(seed, 1_000, 1_764_000_000_000);
    let mut out = Vec::new();
    let mut add = |kind: &'static str, payload: Vec<u8>, reason: &'static str, detail: Option<&'static str>| {
        // 0 to 3 small headers, naming the kind: a dead letter must carry its own message's.
        let headers =
            (0..out.len() % 4).map(|i| (format!("trace-{i}").into_bytes(), format!("{kind}-{i}").into_bytes()));
        out.push(Hostile {
            kind,
            key: format!("hostile-{kind}").into_bytes(),
            payload,
            headers: headers.collect(),
            reason,
            detail,
        });
    };
    let b = |v: Value| serde_json::to_vec(&v).unwrap();
    let pad = |n: usize| {
        let mut v = good(&mut Generator::new(seed + 1, 10, 1_764_000_000_000));
        v["pad"] = json!("x".repeat(n));
        serde_json::to_vec(&v).unwrap()
    };
    add("empty", Vec::new(), "empty_payload", None);
    add("not_json", b"{not json".to_vec(), "malformed", None);
    add("truncated_json", b"{\"event_id\":\"t\",\"amount\":1".to_vec(), "malformed", None);
    add("oversize_1_5mb", pad(1_500_000), "oversize", None);
    add("oversize_20mb", pad(20_000_000), "oversize", None);
    add(
        "event_time_min",
        b(with(good(&mut g), &["event_time"], json!(i64::MIN))),
        "bad_event_time",
        Some("event_time"),
    );
    add(
        "event_time_max",
        b(with(good(&mut g), &["event_time"], json!(i64::MAX))),
        "bad_event_time",
        Some("event_time"),
    );
    add("event_time_negative", b(with(good(&mut g), &["event_time"], json!(-5))), "bad_event_time", Some("event_time"));
    add(
        "event_time_year_2999",
        b(with(good(&mut g), &["event_time"], json!(32_503_680_000_000i64))),
        "bad_event_time",
        Some("event_time"),
    );
    add(
        "event_time_string",
        b(with(good(&mut g), &["event_time"], json!("yesterday"))),
        "wrong_type",
        Some("event_time"),
    );
    add("amount_f32_overflow", b(with(good(&mut g), &["amount"], json!(1e308))), "non_finite", Some("amount"));
    add("amount_f32_underflow", b(with(good(&mut g), &["amount"], json!(-3.5e38))), "non_finite", Some("amount"));
    add("amount_1e400", raw_amount(&good(&mut g), "1e400"), "non_finite", Some("amount"));
    add("amount_minus_1e400", raw_amount(&good(&mut g), "-1e400"), "non_finite", Some("amount"));
    add("amount_nan", raw_amount(&good(&mut g), "NaN"), "non_finite", Some("amount"));
    add("amount_minus_infinity", raw_amount(&good(&mut g), "-Infinity"), "non_finite", Some("amount"));
    add("amount_string", b(with(good(&mut g), &["amount"], json!("12.00"))), "wrong_type", Some("amount"));
    add("amount_object", b(with(good(&mut g), &["amount"], json!({"v": 1}))), "wrong_type", Some("amount"));
    add("amount_array", b(with(good(&mut g), &["amount"], json!([1, 2]))), "wrong_type", Some("amount"));
    add("amount_missing", b(without(good(&mut g), "amount")), "missing_field", Some("amount"));
    add("device_scalar", b(with(good(&mut g), &["device"], json!("oops"))), "wrong_type", Some("device"));
    add("device_array", b(with(good(&mut g), &["device"], json!([{"type": "mobile"}]))), "wrong_type", Some("device"));
    add(
        "device_type_object",
        b(with(good(&mut g), &["device", "type"], json!({"a": 1}))),
        "wrong_type",
        Some("device.type"),
    );
    add("event_id_missing", b(without(good(&mut g), "event_id")), "missing_field", Some("event_id"));
    add("event_id_object", b(with(good(&mut g), &["event_id"], json!({"id": 1}))), "wrong_type", Some("event_id"));
    add("card_id_array", b(with(good(&mut g), &["card_id"], json!(["c1"]))), "wrong_type", Some("card_id"));
    let mut bad_utf8 = b(with(good(&mut g), &["merchant_id"], json!("m-XX")));
    let at = bad_utf8.windows(4).position(|w| w == b"m-XX").unwrap();
    bad_utf8[at + 2] = 0xff;
    bad_utf8[at + 3] = 0xfe;
    add("invalid_utf8_in_string", bad_utf8, "malformed", None);
    add("invalid_utf8_bytes", vec![0xff, 0xfe, 0xfd, b'{'], "malformed", None);
    add("deep_nesting_arrays", ["[".repeat(30_000), "]".repeat(30_000)].concat().into_bytes(), "malformed", None);
    add(
        "deep_nesting_objects",
        {
            let mut s = "{\"a\":".repeat(10_000);
            s.push('1');
            s.push_str(&"}".repeat(10_000));
            s.into_bytes()
        },
        "malformed",
        None,
    );
    add("json_array_top_level", b"[1,2,3]".to_vec(), "wrong_type", None);
    add("avro_truncated", confluent_frame(1, &[0x08, b't', b'x']), "malformed", None);
    add("avro_unknown_schema", confluent_frame(999, &[2, 0x41]), "unknown_schema_id", None);
    add("confluent_header_short", vec![0, 0, 1], "bad_wire_format", None);
    // A header whose name is not UTF-8 (rdkafka's own header iterator panics on it).
    out.push(Hostile {
        kind: "header_name_not_utf8",
        key: b"hostile-header_name_not_utf8".to_vec(),
        payload: b"{not json either".to_vec(),
        headers: vec![(b"h\xff\xfe".to_vec(), b"v".to_vec())],
        reason: "malformed",
        detail: None,
    });
    // Oversize, with a large key and 500 headers of 4 KiB: headers are dropped, the key cut.
    let many = pad(1_200_000);
    out.push(Hostile {
        kind: "oversize_with_big_key_and_headers",
        key: [b"hostile-bigkey-".as_slice(), &vec![b'k'; 200_000]].concat(),
        payload: many,
        headers: (0..500).map(|i| (format!("h{i}").into_bytes(), vec![b'v'; 4096])).collect(),
        reason: "oversize",
        detail: None,
    });
    out
}

/// Sends the corpus with a producer that allows 64 MB messages.
pub fn produce_hostile(bootstrap: &str, topic: &str, corpus: &[Hostile]) {
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("message.max.bytes", "67108864").create().unwrap();
    for h in corpus {
        let headers = OwnedHeaders::new_with_capacity(h.headers.len());
        // Raw names: rdkafka's `Header` takes `&str`, and the corpus has a name that is not UTF-8.
        let native = headers.as_borrowed() as *const rdkafka::message::BorrowedHeaders
            as *mut rdkafka::bindings::rd_kafka_headers_t;
        for (k, v) in &h.headers {
            // SAFETY: `native` is the list `headers` owns; librdkafka copies name and value.
            let err = unsafe {
                rdkafka::bindings::rd_kafka_header_add(
                    native,
                    k.as_ptr().cast(),
                    k.len() as isize,
                    v.as_ptr().cast(),
                    v.len() as isize,
                )
            };
            assert_eq!(err, rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
        }
        let record = BaseRecord::<[u8], [u8]>::to(topic).key(&h.key).payload(&h.payload).headers(headers);
        producer.send(record).map_err(|(e, _)| e).unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}
