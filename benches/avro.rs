//! Decision-record Avro encoding, two ways (issue 16, item 6): verdict's hand encoder
//! (`DecisionRecord::write_avro`) and apache-avro's schema-aware serde path
//! (`GenericDatumWriter::write_ser`, the same as `write_avro_datum_ref`) against
//! `schemas/decision.avsc`. Prints µs per record and bytes per record for three records the
//! worker writes: bands only without features, the full feature map and aggregates
//! (`publish.include_features`, the default), and that plus rule hits and a shadow verdict.
//! Checks first that both paths write the same bytes.
//!
//!     cargo bench --bench avro
//!     BENCH_SECONDS=2 cargo bench --bench avro     # seconds per case (default 2)

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::writer::datum::GenericDatumWriter;
use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use serde::Serialize;
use verdict::publish::record::{DecisionRecord, ShadowVerdict};
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

/// The demo's window aggregates and online feature, as the worker names them.
const AGGREGATES: &[&str] = &[
    "window:card.10m.count",
    "window:card.10m.sum",
    "window:card.10m.distinct",
    "window:card.1h.count",
    "window:card.1h.sum",
    "window:card.24h.count",
    "window:card.24h.avg",
    "window:card.since_last_s",
    "feature:card.chargebacks_90d",
];

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
        let mut w = s.serialize_struct("Decision", 28)?;
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
        w.serialize_field("features", &Features(r.features.0, r.features.1))?;
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
        w.end()
    }
}

struct Case {
    name: &'static str,
    decision: Decision,
    with_features: bool,
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
        action: if hits { Action::Review } else { Action::Approve },
        action_name: None,
        reason: Arc::from(if hits { "card_velocity" } else { "low_score" }),
        score: 0.0371,
        rule_hits,
        rule_errors: 0,
        rules_version: Arc::from(if hits { "9f2c4e1a7b3d5f60" } else { "" }),
        review_priority: if hits { Some(40) } else { None },
        fallback: false,
    }
}

fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2.0);
    let schema = verdict::decode::parse_schema_file(std::path::Path::new("schemas/decision.avsc")).expect("schema");
    let writer = GenericDatumWriter::builder(&schema).human_readable(false).build().expect("writer");
    let names: Vec<String> = FEATURES.iter().map(|s| s.to_string()).collect();
    let values: Vec<f32> = (0..names.len()).map(|i| i as f32 * 1.37 + 0.5).collect();
    let agg_names: Vec<String> = AGGREGATES.iter().map(|s| s.to_string()).collect();
    let agg: Vec<Option<f64>> =
        (0..agg_names.len()).map(|i| if i == 7 { None } else { Some(i as f64 * 12.5 + 1.0) }).collect();

    let cases = [
        Case { name: "bands only, features off", decision: decision(false), with_features: false, shadow: false },
        Case { name: "bands, features + aggregates", decision: decision(false), with_features: true, shadow: false },
        Case { name: "rules (2 hits), features, shadow", decision: decision(true), with_features: true, shadow: true },
    ];
    println!("| record | bytes | hand encoder µs/record | apache-avro serde µs/record | difference µs |");
    println!("|---|---|---|---|---|");
    for c in &cases {
        let features: (&[String], &[f32]) = if c.with_features { (&names, &values) } else { (&[], &[]) };
        let aggregates: (&[String], &[Option<f64>]) = if c.with_features { (&agg_names, &agg) } else { (&[], &[]) };
        let record = DecisionRecord {
            event_id: "evt-00000000001234567",
            entity_key: "card-004217",
            decision: &c.decision,
            model_name: "demo-fraud-gbdt",
            model_version: "3",
            event_time: 1_764_700_000_123,
            decided_at: 1_764_700_000_131,
            latency_us: 8_412,
            degraded: false,
            source_topic: "events",
            source_partition: 11,
            source_offset: 48_213_377,
            defaults_used: if c.with_features { vec!["card_chargebacks_90d"] } else { Vec::new() },
            features,
            aggregates,
            shadow: c.shadow.then_some(ShadowVerdict {
                model: "demo-fraud-mlp",
                version: "1",
                score: 0.052,
                action: Action::Approve,
            }),
        };
        let mut hand = Vec::new();
        record.write_avro(1, &mut hand);
        let mut serde = vec![0, 0, 0, 0, 1];
        writer.write_ser(&mut serde, &SerdeView(&record)).expect("serde path encodes");
        assert_eq!(hand, serde, "{}: both paths write the same bytes", c.name);

        let mut buf = Vec::with_capacity(1024);
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
        println!("| {} | {} | {:.3} | {:.3} | {:+.3} |", c.name, hand.len(), hand_us, serde_us, serde_us - hand_us);
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
