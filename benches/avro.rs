//! Decision-record encoding (issues 16 and 17): verdict's hand Avro encoder
//! (`DecisionRecord::write_avro`) against apache-avro's schema-aware serde path
//! (`GenericDatumWriter::write_ser`, the same as `write_avro_datum_ref`) on
//! `schemas/decision.avsc`, and the record's size in Avro and JSON. The records are the
//! spine benchmark's (demo model and config, in-memory windows, no online feature seeded):
//! bands only with `publish.include_features` and `include_aggregates` off, features on (the
//! default), features and aggregates on, and that plus rule hits and a shadow verdict.
//! Checks first that both Avro paths write the same bytes. Then the cost of building the
//! `defaults_used` names per record (a `Vec<&str>`, before issue 17) against borrowing them.
//!
//!     cargo bench --bench avro
//!     BENCH_SECONDS=2 cargo bench --bench avro     # seconds per case (default 2)

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::writer::datum::GenericDatumWriter;
use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use serde::Serialize;
use verdict::publish::record::{DecisionRecord, DefaultsUsed, Inputs, ShadowVerdict};
use verdict::rules::{Action, Decision, RuleHit, RuleMode};

/// The demo model's sixteen inputs.
const FEATURES: &[&str] = &[
    "amount",
    "merchant_category",
    "channel",
    "device_type",
    "card_age_days",
    "distance_km",
    "cross_border",
    "card_present",
    "merchant_risk",
    "card_10m_count",
    "card_10m_distinct_merchants",
    "card_1h_sum",
    "card_24h_count",
    "card_24h_avg",
    "card_since_last_s",
    "card_chargebacks_90d",
];

/// The demo's window aggregates, as the worker names them, with the values one spine event
/// had (no online feature: the spine benchmark seeds none).
const AGGREGATES: &[(&str, f64)] = &[
    ("window:card.10m.count", 220.0),
    ("window:card.10m.sum", 18260.889999999996),
    ("window:card.10m.avg", 83.00404545454543),
    ("window:card.10m.min", 1.27),
    ("window:card.10m.max", 2738.71),
    ("window:card.10m.distinct", 117.0),
    ("window:card.1h.count", 220.0),
    ("window:card.1h.sum", 18260.889999999996),
    ("window:card.1h.avg", 83.00404545454543),
    ("window:card.1h.min", 1.27),
    ("window:card.1h.max", 2738.71),
    ("window:card.1h.distinct", 117.0),
    ("window:card.24h.count", 220.0),
    ("window:card.24h.sum", 18260.889999999996),
    ("window:card.24h.avg", 83.00404545454543),
    ("window:card.24h.min", 1.27),
    ("window:card.24h.max", 2738.71),
    ("window:card.24h.distinct", 117.0),
    ("window:card.since_last_s", 0.113),
];

/// That event's model inputs, in the demo model's order.
const VALUES: &[f32] =
    &[4.53, 7.0, 0.0, -1.0, 2914.0, 1557.4, 0.0, 1.0, 0.025921, 220.0, 117.0, 18260.89, 220.0, 83.00404, 0.113, 0.0];

/// The decision record in the schema's field order, for apache-avro's serde path: what
/// `publish/record.rs` would hold if it used the library.
struct SerdeView<'r, 'a>(&'r DecisionRecord<'a>);

struct Hits<'a>(&'a [RuleHit]);
struct Hit<'a>(&'a RuleHit);
struct Features<'a>(&'a [String], &'a [f32]);
struct Aggregates<'a>(&'a [String], &'a [Option<f64>]);

impl Serialize for Hit<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut r = s.serialize_struct("RuleHit", 4)?;
        r.serialize_field("id", &*self.0.id)?;
        r.serialize_field("reason", &*self.0.reason)?;
        let mode = match self.0.mode {
            RuleMode::Enforce => "enforce",
            RuleMode::Monitor => "monitor",
        };
        r.serialize_field("mode", mode)?;
        r.serialize_field("action", &*self.0.action)?;
        r.end()
    }
}

impl Serialize for Hits<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(Hit))
    }
}

impl Serialize for Features<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len().min(self.1.len())))?;
        for (k, v) in self.0.iter().zip(self.1) {
            m.serialize_entry(k, &f64::from(*v))?;
        }
        m.end()
    }
}

impl Serialize for Aggregates<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.1.iter().filter(|v| v.is_some()).count()))?;
        for (k, v) in self.0.iter().zip(self.1) {
            if let Some(v) = v {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

impl Serialize for SerdeView<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let d = r.decision;
        let mut w = s.serialize_struct("Decision", 30)?;
        w.serialize_field("event_id", r.event_id)?;
        w.serialize_field("entity_key", r.entity_key)?;
        w.serialize_field("action", &d.action)?;
        w.serialize_field("reason", &*d.reason)?;
        w.serialize_field("score", &f64::from(d.score))?;
        w.serialize_field("model_name", r.model_name)?;
        w.serialize_field("model_version", r.model_version)?;
        w.serialize_field("rule_hits", &Hits(&d.rule_hits))?;
        w.serialize_field("event_time", &r.event_time)?;
        w.serialize_field("decided_at", &r.decided_at)?;
        w.serialize_field("latency_us", &r.latency_us)?;
        w.serialize_field("degraded", &r.degraded)?;
        w.serialize_field("source_topic", r.source_topic)?;
        w.serialize_field("source_partition", &r.source_partition)?;
        w.serialize_field("source_offset", &r.source_offset)?;
        w.serialize_field("defaults_used", &r.defaults_used)?;
        w.serialize_field("features", &Features(r.features.names, r.features.values))?;
        w.serialize_field("feature_texts", &std::collections::BTreeMap::<&str, &str>::new())?;
        w.serialize_field("rules_version", &*d.rules_version)?;
        w.serialize_field("action_name", &d.action_name.as_deref())?;
        w.serialize_field("review_priority", &d.review_priority)?;
        w.serialize_field("rule_errors", &(d.rule_errors as i32))?;
        w.serialize_field("aggregates", &Aggregates(r.aggregates.0, r.aggregates.1))?;
        let sh = r.shadow.as_ref();
        w.serialize_field("shadow_model", sh.map_or("", |s| s.model))?;
        w.serialize_field("shadow_version", sh.map_or("", |s| s.version))?;
        w.serialize_field("shadow_score", &sh.map(|s| f64::from(s.score)))?;
        w.serialize_field("shadow_action", &sh.map(|s| s.action.label()))?;
        w.serialize_field("fallback", &d.fallback)?;
        w.serialize_field("redelivery", &r.redelivery)?;
        w.end()
    }
}

struct Case {
    name: &'static str,
    decision: Decision,
    features: bool,
    aggregates: bool,
    shadow: bool,
}

fn decision(hits: bool) -> Decision {
    let rule_hits = if hits {
        vec![
            RuleHit {
                id: "velocity_10m".into(),
                reason: "card_velocity".into(),
                mode: RuleMode::Enforce,
                action: "review".into(),
            },
            RuleHit {
                id: "cross_border_big".into(),
                reason: "cross_border_amount".into(),
                mode: RuleMode::Monitor,
                action: "decline".into(),
            },
        ]
    } else {
        Vec::new()
    };
    Decision {
        action: if hits { Action::REVIEW } else { Action::APPROVE },
        action_name: None,
        reason: Arc::from(if hits { "card_velocity" } else { "score_below_review_threshold" }),
        score: 0.013989568,
        rule_hits,
        rule_errors: 0,
        rules_version: Arc::from(if hits { "9f2c4e1a7b3d5f60" } else { "" }),
        review_priority: if hits { Some(40) } else { None },
        fallback: false,
        top: Vec::new(),
    }
}

fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2.0);
    let schema = verdict::decode::parse_schema_file(std::path::Path::new("schemas/decision.avsc")).expect("schema");
    let writer = GenericDatumWriter::builder(&schema).human_readable(false).build().expect("writer");
    let names: Vec<String> = FEATURES.iter().map(|s| s.to_string()).collect();
    let agg_names: Vec<String> = AGGREGATES.iter().map(|(n, _)| n.to_string()).collect();
    let agg: Vec<Option<f64>> = AGGREGATES.iter().map(|(_, v)| Some(*v)).collect();
    // The spine workload never seeds the online feature: every event defaults it.
    let defaulted: &[u16] = &[15];

    let case = |name, hits, features, aggregates, shadow| Case {
        name,
        decision: decision(hits),
        features,
        aggregates,
        shadow,
    };
    let cases = [
        case("bands, features off, aggregates off", false, false, false, false),
        case("bands, features on, aggregates off (the defaults)", false, true, false, false),
        case("bands, features + aggregates", false, true, true, false),
        case("rules (2 hits), features + aggregates, shadow", true, true, true, true),
    ];
    let record = |c: &'static Case| DecisionRecord {
        event_id: "tx-0000001379",
        entity_key: "card-000001",
        decision: &c.decision,
        model_name: "demo-fraud-gbdt",
        model_version: "1",
        event_time: 1_764_000_013_181,
        decided_at: 1_796_306_325_789,
        latency_us: 11_223,
        degraded: false,
        source_topic: "events",
        source_partition: 0,
        source_offset: 1_379,
        defaults_used: DefaultsUsed { names: &names, columns: defaulted },
        features: if c.features { Inputs::numbers(&names, VALUES) } else { Inputs::default() },
        aggregates: if c.aggregates { (&agg_names, &agg) } else { (&[], &[]) },
        shadow: c.shadow.then_some(ShadowVerdict {
            model: "demo-fraud-mlp",
            version: "1",
            score: 0.052,
            action: Action::APPROVE,
        }),
        redelivery: false,
        top: Default::default(),
    };
    let cases: &'static [Case] = Box::leak(Box::new(cases));
    println!(
        "| record | Avro bytes | JSON bytes | hand Avro µs/record | apache-avro serde µs/record | JSON µs/record |"
    );
    println!("|---|---|---|---|---|---|");
    for c in cases {
        let record = record(c);
        let mut hand = Vec::new();
        record.write_avro(1, &mut hand);
        let mut serde = vec![0, 0, 0, 0, 1];
        writer.write_ser(&mut serde, &SerdeView(&record)).expect("serde path encodes");
        assert_eq!(hand, serde, "{}: both paths write the same bytes", c.name);
        let mut json = Vec::new();
        record.write_json(&mut json);

        let mut buf = Vec::with_capacity(2048);
        let hand_us = time(seconds, || {
            buf.clear();
            black_box(&record).write_avro(1, &mut buf);
            black_box(&buf);
        });
        let serde_us = time(seconds, || {
            buf.clear();
            buf.push(0);
            buf.extend_from_slice(&1u32.to_be_bytes());
            writer.write_ser(&mut buf, &SerdeView(black_box(&record))).expect("encodes");
            black_box(&buf);
        });
        let json_us = time(seconds, || {
            buf.clear();
            black_box(&record).write_json(&mut buf);
            black_box(&buf);
        });
        let (a, j) = (hand.len(), json.len());
        println!("| {} | {a} | {j} | {hand_us:.3} | {serde_us:.3} | {json_us:.3} |", c.name);
    }

    // Before issue 17 the publish stage collected `defaults_used` into a `Vec<&str>` per
    // record; now the record borrows the batch's column indices and the names table.
    println!();
    println!("| defaults_used, first record above (1 defaulted input) | Avro µs/record | JSON µs/record |");
    println!("|---|---|---|");
    let mut buf = Vec::with_capacity(2048);
    for (label, collect) in
        [("a `Vec<&str>` collected per record (before)", true), ("borrowed column indices (after)", false)]
    {
        let mut us = [0.0; 2];
        for (slot, json) in us.iter_mut().zip([false, true]) {
            *slot = time(seconds, || {
                if collect {
                    let list: Vec<&str> = black_box(defaulted).iter().map(|&k| names[k as usize].as_str()).collect();
                    black_box(&list);
                }
                let r = record(&cases[0]);
                buf.clear();
                if json {
                    black_box(&r).write_json(&mut buf);
                } else {
                    black_box(&r).write_avro(1, &mut buf);
                }
                black_box(&buf);
            });
        }
        println!("| {label} | {:.3} | {:.3} |", us[0], us[1]);
    }
}

/// Runs `f` for about `seconds` (after a short warm-up); µs per call.
fn time(seconds: f64, mut f: impl FnMut()) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        f();
    }
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..1000 {
            f();
        }
        n += 1000;
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}
