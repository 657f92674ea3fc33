use std::path::Path;

use super::*;
use crate::demo::{confluent_frame, Generator};

fn decoder() -> Decoder {
    let manifest = crate::score::Manifest::load(Path::new("models/demo")).unwrap();
    let demo = crate::config::demo();
    let cfg = demo.decode;
    let schemas = LocalSchemas::load(&cfg.avro_schemas).unwrap();
    let enricher = crate::enrich::Enricher::new(&demo.enrich).unwrap();
    Decoder::new(&cfg, Arc::new(schemas), Vectorizer::new(&manifest, enricher.names()).unwrap(), enricher.paths())
}

#[test]
fn json_and_avro_encodings_of_an_event_give_identical_rows() {
    let d = decoder();
    let schema = parse_schema_file(Path::new("schemas/transaction.avsc")).unwrap();
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema).build().unwrap();
    let mut g = Generator::new(11, 1000, 1_764_000_000_000);
    let (mut a, mut b) = (d.rows(), d.rows());
    for _ in 0..500 {
        let tx = g.next_event();
        let json = tx.to_json();
        let avro = confluent_frame(1, &writer.write_value_to_vec(tx.to_avro_value()).unwrap());
        a.clear();
        b.clear();
        let ea = d.batch().decode(Some(&json), a.push()).unwrap();
        let eb = d.batch().decode(Some(&avro), b.push()).unwrap();
        assert_eq!(ea, eb);
        assert_eq!(ea.event_id, tx.event_id);
        assert_eq!(ea.event_time_ms, tx.event_time);
        let bits = |r: &[f32]| r.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a.values()), bits(b.values()));
    }
}

fn reason(payload: &[u8]) -> DeadLetterReason {
    let d = decoder();
    let mut rows = d.rows();
    d.batch().decode(Some(payload), rows.push()).unwrap_err().reason
}

#[test]
fn each_kind_of_bad_input_gets_its_reason() {
    assert_eq!(reason(b"{\"a\":"), DeadLetterReason::Malformed);
    assert_eq!(reason(br#"{"event_id":"x","amount":NaN}"#), DeadLetterReason::NonFinite);
    assert_eq!(reason(br#"{"event_id":"x","amount":-Infinity}"#), DeadLetterReason::NonFinite);
    assert_eq!(reason(br#"{"event_id":"x","amount":1e999}"#), DeadLetterReason::NonFinite);
    assert_eq!(reason(br#"{"card_id":"c","event_time":1}"#), DeadLetterReason::MissingField);
    assert_eq!(reason(br#"{"event_id":"x","card_id":"c","event_time":"yesterday"}"#), DeadLetterReason::WrongType);
    assert_eq!(reason(b"[1,2]"), DeadLetterReason::WrongType);
    assert_eq!(reason(&confluent_frame(77, &[0])), DeadLetterReason::UnknownSchemaId);
    assert_eq!(reason(&[0, 0, 0]), DeadLetterReason::BadWireFormat);
    assert_eq!(reason(&confluent_frame(1, &[0x08, b'a'])), DeadLetterReason::Malformed);
    assert_eq!(reason(&vec![b' '; 70_000]), DeadLetterReason::Oversize);
    assert_eq!(reason(b""), DeadLetterReason::EmptyPayload);
}

#[test]
fn missing_model_input_names_the_column() {
    let d = decoder();
    let mut rows = d.rows();
    let e = d
        .batch()
        .decode(Some(br#"{"event_id":"x","card_id":"c","event_time":1,"merchant_risk":0.1}"#), rows.push())
        .unwrap_err();
    assert_eq!(e.reason, DeadLetterReason::MissingField);
    assert!(e.detail.contains("'amount'"), "{}", e.detail);
}

#[test]
fn a_nan_literal_names_its_field() {
    let d = decoder();
    let mut rows = d.rows();
    let e = d
        .batch()
        .decode(Some(br#"{"event_id":"x","card_id":"c","event_time":1,"amount": NaN}"#), rows.push())
        .unwrap_err();
    assert_eq!(e.reason, DeadLetterReason::NonFinite);
    assert!(e.detail.contains("field 'amount'"), "{}", e.detail);
}

#[test]
fn a_recursive_avro_schema_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.avsc");
    std::fs::write(
        &list,
        r#"{"type":"record","name":"L","fields":[{"name":"v","type":"long"},{"name":"next","type":["null","L"]}]}"#,
    )
    .unwrap();
    let e = super::parse_schema_file(&list).unwrap_err();
    assert!(e.to_string().contains("record 'L' contains itself"), "{e}");
    // The same named type used twice side by side is not recursion.
    let pair = dir.path().join("pair.avsc");
    std::fs::write(
        &pair,
        r#"{"type":"record","name":"P","fields":[{"name":"a","type":{"type":"record","name":"X","fields":[{"name":"v","type":"long"}]}},{"name":"b","type":"X"}]}"#,
    )
    .unwrap();
    assert!(super::parse_schema_file(&pair).is_ok());
}
