//! The decoder against hostile input: each case is dead-lettered with its reason and a
//! detail naming the field (these details are the user-visible text of dead letters).

use std::path::Path;

use super::*;
use crate::config::DecodeConfig;
use crate::demo::confluent_frame;

/// 2025-11-24T16:00:00Z, the wall clock of these tests.
const NOW: i64 = 1_764_000_000_000;

fn decoder_with(cfg: &DecodeConfig, entities: Vec<EntityPaths>) -> Decoder {
    let manifest = crate::score::Manifest::load(Path::new("models/demo")).unwrap();
    let enricher = crate::enrich::Enricher::new(&crate::config::demo().enrich).unwrap();
    let mut schemas = LocalSchemas::load(&cfg.avro_schemas).unwrap();
    schemas.insert(5, Schema::parse_str(UNION_SCHEMA).unwrap());
    Decoder::new(cfg, Arc::new(schemas), Vectorizer::new(&manifest, enricher.names()).unwrap(), entities)
}

fn decoder() -> Decoder {
    let cfg = crate::config::demo().decode;
    let enricher = crate::enrich::Enricher::new(&crate::config::demo().enrich).unwrap();
    decoder_with(&cfg, enricher.paths())
}

fn decode(d: &Decoder, payload: &[u8]) -> Result<DecodedEvent, DecodeError> {
    let mut rows = d.rows();
    d.batch_at(NOW).decode(Some(payload), rows.push())
}

/// A valid event with `event_time` = `t` and `extra` fields appended.
fn event(t: i64, extra: &str) -> Vec<u8> {
    format!(r#"{{"event_id":"e1","card_id":"c1","event_time":{t},"amount":12.5,"merchant_risk":0.1{extra}}}"#)
        .into_bytes()
}

fn failure(d: &Decoder, payload: &[u8]) -> (DeadLetterReason, String) {
    let e = decode(d, payload).unwrap_err();
    (e.reason, e.detail)
}

#[test]
fn an_event_time_before_the_minimum_is_a_bad_event_time_naming_field_value_and_bound() {
    let d = decoder();
    assert_eq!(
        failure(&d, &event(1, "")),
        (
            DeadLetterReason::BadEventTime,
            "field 'event_time' is 1 (1970-01-01T00:00:00.001Z), before decode.event_time_min_ms 946684800000 \
             (2000-01-01T00:00:00Z)"
                .to_string()
        )
    );
    assert_eq!(failure(&d, &event(i64::MIN, "")).0, DeadLetterReason::BadEventTime);
    assert!(decode(&d, &event(946_684_800_000, "")).is_ok(), "the minimum itself is allowed");
}

#[test]
fn an_event_time_too_far_ahead_of_the_batch_clock_is_a_bad_event_time() {
    let d = decoder();
    let limit = NOW + 86_400_000;
    assert!(decode(&d, &event(limit, "")).is_ok(), "exactly the allowed lead is fine");
    assert_eq!(
        failure(&d, &event(limit + 1, "")),
        (
            DeadLetterReason::BadEventTime,
            "field 'event_time' is 1764086400001 (2025-11-25T16:00:00.001Z), after the wall clock plus \
             decode.event_time_max_ahead_ms (86400000 ms): 1764086400000 (2025-11-25T16:00:00Z)"
                .to_string()
        )
    );
    let (reason, detail) = failure(&d, &event(i64::MAX, ""));
    assert_eq!(reason, DeadLetterReason::BadEventTime);
    assert!(detail.starts_with("field 'event_time' is 9223372036854775807, after"), "{detail}");
    // The real clock: an event from a year ahead is refused today.
    let mut rows = d.rows();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let year_ahead = event(now + 365 * 86_400_000, "");
    assert_eq!(d.batch().decode(Some(&year_ahead), rows.push()).unwrap_err().reason, DeadLetterReason::BadEventTime);
}

#[test]
fn no_upper_bound_when_max_ahead_is_zero_and_old_files_decode_with_a_lower_minimum() {
    let cfg = DecodeConfig { event_time_max_ahead_ms: 0, event_time_min_ms: i64::MIN, ..crate::config::demo().decode };
    let enricher = crate::enrich::Enricher::new(&crate::config::demo().enrich).unwrap();
    let d = decoder_with(&cfg, enricher.paths());
    for t in [i64::MIN, -1, 1, i64::MAX] {
        assert_eq!(decode(&d, &event(t, "")).unwrap().event_time_ms, t);
    }
}

#[test]
fn an_event_bad_for_another_reason_keeps_that_reason_whatever_its_time() {
    let d = decoder();
    let cases: [(&[u8], DeadLetterReason); 4] = [
        (br#"{"event_id":"x","card_id":"c","event_time":1,"amount":"12"}"#, DeadLetterReason::WrongType),
        (br#"{"event_id":"x","card_id":"c","event_time":1,"merchant_risk":0.1}"#, DeadLetterReason::MissingField),
        (br#"{"card_id":"c","event_time":1,"amount":1.0}"#, DeadLetterReason::MissingField),
        (
            br#"{"event_id":"x","card_id":"c","event_time":1,"amount":1e308,"merchant_risk":0.1}"#,
            DeadLetterReason::NonFinite,
        ),
    ];
    for (payload, reason) in cases {
        assert_eq!(failure(&d, payload).0, reason, "{}", String::from_utf8_lossy(payload));
    }
}

#[test]
fn a_number_beyond_float32_on_a_model_column_is_non_finite_naming_it() {
    let d = decoder();
    for (extra, detail) in [
        (r#","card_age_days":1e308"#, "column 'card_age_days' (card_age_days) is 1e308, outside the float32 range"),
        (r#","distance_km":-3.5e38"#, "column 'distance_km' (distance_km) is -3.5e38, outside the float32 range"),
    ] {
        assert_eq!(failure(&d, &event(NOW, extra)), (DeadLetterReason::NonFinite, detail.to_string()));
    }
}

#[test]
fn every_non_finite_literal_names_its_field_path() {
    let d = decoder();
    for lit in ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"] {
        for (payload, path) in [
            (format!(r#"{{"event_id":"x","card_id":"c","event_time":{NOW},"amount":{lit}}}"#), "amount"),
            (format!(r#"{{"event_id":"x","device":{{"type": {lit}}}}}"#), "device.type"),
        ] {
            let (reason, detail) = failure(&d, payload.as_bytes());
            assert_eq!(reason, DeadLetterReason::NonFinite, "{payload}");
            assert!(detail.starts_with(&format!("non-finite number in field '{path}' (not valid JSON): ")), "{detail}");
        }
    }
    assert_eq!(
        failure(&d, br#"{"event_id":"x","amount":-Infinity}"#).1,
        "non-finite number in field 'amount' (not valid JSON): invalid number at line 1 column 27"
    );
    assert_eq!(
        failure(&d, br#"{"event_id":"x","amount":1e400}"#).1,
        "non-finite number in field 'amount' (not valid JSON): number out of range at line 1 column 30"
    );
}

#[test]
fn a_path_through_a_non_object_is_wrong_type_and_through_null_is_missing() {
    let mut cfg = crate::config::demo().decode;
    cfg.fields.event_id = "meta.id".into();
    cfg.fields.event_time = "meta.time".into();
    let entity = EntityPaths {
        key: FieldPath::parse("card.id"),
        more_keys: Vec::new(),
        value: Some(FieldPath::parse("tx.amount")),
        distinct: Some(FieldPath::parse("tx.merchant.id")),
    };
    let d = decoder_with(&cfg, vec![entity]);
    let ok = |extra: &str| {
        format!(r#"{{"meta":{{"id":"e","time":{NOW}}},"card_id":"c","amount":1,"merchant_risk":0.1{extra}}}"#)
    };
    assert!(decode(&d, ok("").as_bytes()).is_ok());
    let wrong = |payload: String, detail: &str| {
        assert_eq!(failure(&d, payload.as_bytes()), (DeadLetterReason::WrongType, detail.to_string()), "{payload}");
    };
    wrong(
        r#"{"meta":"oops","card_id":"c","amount":1,"merchant_risk":0.1}"#.to_string(),
        "field 'meta' (on the way to 'meta.id') expected an object, got string",
    );
    wrong(
        format!(r#"{{"meta":{{"id":"e","time":{NOW}}},"card_id":"c","amount":1,"merchant_risk":0.1,"device":7}}"#),
        "column 'device_type' (device.type): field 'device' (on the way to 'device.type') expected an object, got number",
    );
    wrong(ok(r#","card":[1]"#), "field 'card' (on the way to 'card.id') expected an object, got array");
    wrong(ok(r#","tx":true"#), "field 'tx' (on the way to 'tx.amount') expected an object, got boolean");
    wrong(
        ok(r#","tx":{"merchant":"m"}"#),
        "field 'tx.merchant' (on the way to 'tx.merchant.id') expected an object, got string",
    );
    // Null on the way is missing: identity is required, entities and defaulted columns are optional.
    let (reason, detail) = failure(&d, br#"{"meta":null,"card_id":"c","amount":1,"merchant_risk":0.1}"#);
    assert_eq!((reason, detail.as_str()), (DeadLetterReason::MissingField, "field 'meta.id' is missing"));
    let e = decode(&d, ok(r#","card":null,"tx":null,"device":null"#).as_bytes()).unwrap();
    assert_eq!((e.entities[0].id.as_deref(), e.entities[0].value), (None, None));
}

#[test]
fn a_composite_id_joins_its_parts_and_is_missing_without_one() {
    let cfg = crate::config::demo().decode;
    let entity = EntityPaths {
        key: FieldPath::parse("zone.id"),
        more_keys: vec![FieldPath::parse("driver_id")],
        value: None,
        distinct: None,
    };
    let d = decoder_with(&cfg, vec![entity]);
    let e = decode(&d, &event(NOW, r#","zone":{"id":"z1"},"driver_id":1001"#)).unwrap();
    assert_eq!(e.entities[0].id.as_deref(), Some(format!("z1{KEY_SEPARATOR}1001").as_str()));
    let e = decode(&d, &event(NOW, r#","zone":{"id":"z1"}"#)).unwrap();
    assert_eq!(e.entities[0].id, None, "a part is missing: no entity");
}

const UNION_SCHEMA: &str = r#"{"type": "record", "name": "T", "fields": [
    {"name": "event_id", "type": "string"}, {"name": "card_id", "type": "string"},
    {"name": "event_time", "type": "long"}, {"name": "amount", "type": "double"},
    {"name": "merchant_risk", "type": "double"},
    {"name": "device", "type": ["null", "string", {"type": "record", "name": "D", "fields": [{"name": "type", "type": "string"}]}]}
]}"#;

fn avro_event(device: apache_avro::types::Value) -> Vec<u8> {
    use apache_avro::types::Value as V;
    let schema = Schema::parse_str(UNION_SCHEMA).unwrap();
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema).build().unwrap();
    let value = V::Record(vec![
        ("event_id".into(), V::String("e".into())),
        ("card_id".into(), V::String("c".into())),
        ("event_time".into(), V::Long(NOW)),
        ("amount".into(), V::Double(1.0)),
        ("merchant_risk".into(), V::Double(0.1)),
        ("device".into(), device),
    ]);
    confluent_frame(5, &writer.write_value_to_vec(value).unwrap())
}

#[test]
fn an_avro_union_holding_a_string_where_a_record_is_on_the_path_is_wrong_type() {
    use apache_avro::types::Value as V;
    let d = decoder();
    let record = V::Union(2, Box::new(V::Record(vec![("type".into(), V::String("mobile".into()))])));
    assert!(decode(&d, &avro_event(record)).is_ok());
    assert!(decode(&d, &avro_event(V::Union(0, Box::new(V::Null)))).is_ok(), "null branch: missing, defaulted");
    assert_eq!(
        failure(&d, &avro_event(V::Union(1, Box::new(V::String("tv".into()))))),
        (
            DeadLetterReason::WrongType,
            "column 'device_type' (device.type): field 'device' (on the way to 'device.type') expected an object, got string"
                .to_string()
        )
    );
}

#[test]
fn invalid_utf8_anywhere_is_malformed_naming_where() {
    let d = decoder();
    let mut used = event(NOW, r#","channel":"pos"#);
    used.truncate(used.len() - 1);
    used.extend_from_slice(b"\xff\"}");
    let at = used.len() - 3;
    assert_eq!(
        failure(&d, &used),
        (DeadLetterReason::Malformed, format!("invalid JSON: not UTF-8 at byte {at} in field 'channel'"))
    );
    let ignored = [&event(NOW, "")[..event(NOW, "").len() - 1], b",\"note\":\"caf\xc3\"}"].concat();
    let (reason, detail) = failure(&d, &ignored);
    assert_eq!(reason, DeadLetterReason::Malformed);
    assert!(detail.ends_with("in field 'note'"), "{detail}");
    assert_eq!(failure(&d, b"{\"\xfe\": 1}").0, DeadLetterReason::Malformed, "in a key");
    // Avro: a string field holding invalid UTF-8 (length 1, byte 0xff).
    let schema = Schema::parse_str(UNION_SCHEMA).unwrap();
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema).build().unwrap();
    let good = writer
        .write_value_to_vec(apache_avro::types::Value::Record(vec![
            ("event_id".into(), apache_avro::types::Value::String("E".into())),
            ("card_id".into(), apache_avro::types::Value::String("c".into())),
            ("event_time".into(), apache_avro::types::Value::Long(NOW)),
            ("amount".into(), apache_avro::types::Value::Double(1.0)),
            ("merchant_risk".into(), apache_avro::types::Value::Double(0.1)),
            ("device".into(), apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null))),
        ]))
        .unwrap();
    assert_eq!(&good[..2], &[2, b'E']);
    let bad = [&[2u8, 0xff][..], &good[2..]].concat();
    assert_eq!(failure(&d, &confluent_frame(5, &bad)).0, DeadLetterReason::Malformed);
}

#[test]
fn nesting_a_hundred_thousand_deep_is_malformed_without_overflowing_the_stack() {
    let cfg = DecodeConfig { max_payload_bytes: 4 << 20, ..crate::config::demo().decode };
    let enricher = crate::enrich::Enricher::new(&crate::config::demo().enrich).unwrap();
    let d = decoder_with(&cfg, enricher.paths());
    let n = 100_000;
    let arrays = format!("{}{}", "[".repeat(n), "]".repeat(n));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
    let in_column = format!(r#"{{"event_id":"x","device":{arrays}}}"#);
    let in_ignored = format!(r#"{{"event_id":"x","zzz":{arrays}}}"#);
    let unclosed = "[".repeat(n);
    for payload in [&arrays, &objects, &in_column, &in_ignored, &unclosed] {
        let (reason, detail) = failure(&d, payload.as_bytes());
        assert_eq!(reason, DeadLetterReason::Malformed, "{}", &payload[..40]);
        assert!(detail.starts_with("invalid JSON: nested more than 128 levels deep at byte"), "{detail}");
    }
    assert_eq!(
        failure(&d, objects.as_bytes()).1,
        format!(
            "invalid JSON: nested more than 128 levels deep at byte {} in field '{}'",
            128 * 5,
            vec!["a"; 128].join(".")
        )
    );
    // The default size limit stops such payloads before parsing.
    assert_eq!(failure(&decoder(), arrays.as_bytes()).0, DeadLetterReason::Oversize);
}

#[test]
fn a_window_value_beyond_the_window_limit_is_non_finite_naming_it() {
    let cfg = crate::config::demo().decode;
    let mut entities = crate::enrich::Enricher::new(&crate::config::demo().enrich).unwrap().paths();
    entities[0].value = Some(FieldPath::parse("spend"));
    let d = decoder_with(&cfg, entities);
    assert_eq!(
        failure(&d, &event(NOW, r#","spend":-2.5e300"#)),
        (DeadLetterReason::NonFinite, "window value field 'spend' is -2.5e300, beyond ±1e288".to_string())
    );
    let ok = decode(&d, &event(NOW, r#","spend":1e288"#)).unwrap();
    assert_eq!(ok.entities[0].value, Some(1e288));
}
