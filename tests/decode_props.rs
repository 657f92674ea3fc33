//! Property tests of the decode stage against hostile input: arbitrary bytes, arbitrary
//! JSON (at random depth, also at the column paths), broken Confluent/Avro frames. The
//! decoder never panics; each message is either an event or a dead letter with a reason,
//! and a decoded event's model columns are never ±inf.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use proptest::prelude::*;
use serde_json::{Map, Value};
use verdict::config::DecodeConfig;
use verdict::decode::{parse_schema_file, Decoder, LocalSchemas, Vectorizer};
use verdict::demo::{confluent_frame, Generator};
use verdict::enrich::Enricher;
use verdict::score::Manifest;

/// The generator's clock (2025-11-24), used as the batch wall clock.
const NOW: i64 = 1_764_000_000_000;

struct Fixture {
    /// Default bounds on event time.
    strict: Decoder,
    /// Any event time (how old files are read).
    lenient: Decoder,
    /// Columns read from the event (not filled by the enrich stage).
    event_columns: Vec<usize>,
    /// Valid events: JSON values and Confluent Avro frames.
    json: Vec<Value>,
    avro: Vec<Vec<u8>>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let manifest = Manifest::load(Path::new("models/demo")).unwrap();
    // The demo's decode mapping, schemas and entities (the embedded defaults are neutral).
    let demo = verdict::config::demo();
    let enricher = Enricher::new(&demo.enrich).unwrap();
    let build = |cfg: &DecodeConfig| {
        let schemas = LocalSchemas::load(&cfg.avro_schemas).unwrap();
        let vectorizer = Vectorizer::new(&manifest, enricher.names()).unwrap();
        Decoder::new(cfg, Arc::new(schemas), vectorizer, enricher.paths())
    };
    let lenient = DecodeConfig { event_time_min_ms: i64::MIN, event_time_max_ahead_ms: 0, ..demo.decode.clone() };
    let event_columns = manifest
        .inputs
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.source.starts_with("window:") && !c.source.starts_with("feature:"))
        .map(|(i, _)| i)
        .collect();
    let schema = parse_schema_file(Path::new("schemas/transaction.avsc")).unwrap();
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema).build().unwrap();
    let mut g = Generator::new(7, 100, NOW);
    let events: Vec<_> = (0..32).map(|_| g.next_event()).collect();
    Fixture {
        strict: build(&demo.decode),
        lenient: build(&lenient),
        event_columns,
        json: events.iter().map(|tx| serde_json::from_slice(&tx.to_json()).unwrap()).collect(),
        avro: events
            .iter()
            .map(|tx| confluent_frame(1, &writer.write_value_to_vec(tx.to_avro_value()).unwrap()))
            .collect(),
    }
});

/// Decodes `payload` with both decoders and checks the outcome's invariants.
fn check(payload: &[u8]) -> Result<bool, TestCaseError> {
    let f = &*FIXTURE;
    let mut decoded = false;
    for d in [&f.strict, &f.lenient] {
        let mut rows = d.rows();
        match d.batch_at(NOW).decode(Some(payload), rows.push()) {
            Ok(_) => {
                decoded = true;
                let row = rows.values_row(0);
                prop_assert!(row.iter().all(|v| !v.is_infinite()), "±inf in {row:?}");
                for &i in &f.event_columns {
                    // The demo's columns default to numbers: no NaN reaches the model either.
                    prop_assert!(row[i].is_finite(), "column {i} is {} in {row:?}", row[i]);
                }
            }
            Err(e) => prop_assert!(!e.detail.is_empty() && !e.reason.to_string().is_empty(), "{e:?}"),
        }
    }
    Ok(decoded)
}

/// Keys the decoder looks for, and others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "event_id",
            "card_id",
            "event_time",
            "amount",
            "merchant_risk",
            "merchant_id",
            "device",
            "type",
            "channel",
            "card_age_days",
            "distance_km",
            "cross_border",
        ])
        .prop_map(str::to_string),
        "[a-z]{0,6}",
    ]
}

/// Any JSON value, nested up to 8 levels, with numbers anywhere in the f64 range.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN/inf become null
        prop::sample::select(vec![1e308, -3.5e38, 3.4e38, 1e39, -1e300, 5e-324]).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(8, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Sets `path` in `event` to `v`, replacing whatever is on the way.
fn set(event: &mut Value, path: &[String], v: Value) {
    let Some((last, init)) = path.split_last() else { return };
    let mut cur = event;
    for part in init {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        cur = cur.as_object_mut().unwrap().entry(part.clone()).or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    cur.as_object_mut().unwrap().insert(last.clone(), v);
}

/// A literal JSON cannot hold; the decoder must name its field.
const LITERALS: [&str; 5] = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_an_event_or_a_dead_letter(
        prefix in prop::sample::select(vec![&b""[..], b"{", b"{\"", b"\x00\x00\x00\x00\x01", b" [", b"{\"amount\":"]),
        bytes in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        check(&[prefix, &bytes[..]].concat())?;
    }

    #[test]
    fn arbitrary_json_anywhere_in_an_event_is_an_event_or_a_dead_letter(
        base in 0usize..32,
        edits in prop::collection::vec((prop::collection::vec(key(), 1..4), json_value()), 0..4),
        top in json_value(),
        literal in prop::option::of((
            prop::sample::select(LITERALS.to_vec()),
            prop::collection::vec(key().prop_filter("a named key", |k| !k.is_empty()), 1..3),
        )),
    ) {
        let mut event = FIXTURE.json[base].clone();
        for (path, v) in edits {
            set(&mut event, &path, v);
        }
        check(&serde_json::to_vec(&event).unwrap())?;
        check(&serde_json::to_vec(&top).unwrap())?;
        if let Some((lit, path)) = literal {
            set(&mut event, &path, Value::String("@@LITERAL@@".into()));
            let text = serde_json::to_string(&event).unwrap().replace("\"@@LITERAL@@\"", lit);
            let f = &*FIXTURE;
            let mut rows = f.lenient.rows();
            if let Err(e) = f.lenient.batch_at(NOW).decode(Some(text.as_bytes()), rows.push()) {
                if e.reason == verdict::error::DeadLetterReason::NonFinite && e.detail.starts_with("non-finite number") {
                    prop_assert!(e.detail.contains(&format!("in field '{}'", path.join("."))), "{}: {}", text, e.detail);
                }
            }
            check(text.as_bytes())?;
        }
    }

    #[test]
    fn broken_avro_frames_are_an_event_or_a_dead_letter(
        base in 0usize..32,
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        schema_id in prop_oneof![Just(1u32), any::<u32>()],
        tail in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut frame = FIXTURE.avro[base].clone();
        prop_assert!(check(&frame)?, "the unbroken frame decodes");
        frame[1..5].copy_from_slice(&schema_id.to_be_bytes());
        for (at, byte) in flips {
            let i = 5 + at.index(frame.len() - 5);
            frame[i] = byte;
        }
        check(&frame)?;
        check(&frame[..cut.index(frame.len() + 1)])?;
        check(&[&frame[..], &tail[..]].concat())?;
    }
}

#[test]
fn every_generated_event_decodes_with_finite_columns() {
    for (json, avro) in FIXTURE.json.iter().zip(&FIXTURE.avro) {
        assert!(check(&serde_json::to_vec(json).unwrap()).unwrap());
        assert!(check(avro).unwrap());
    }
}
