//! Decision records: Avro (Confluent wire format, `schemas/decision.avsc`) or JSON.
//!
//! Avro is encoded by hand on the hot path (no per-field `Value` allocation): apache-avro's
//! serde path writes the same bytes 1.4–2.3 µs slower per record, 15–25% of the per-event
//! cost (`benches/avro.rs`, BENCHMARKS.md "Avro decision encoding"). The tests decode the
//! output with `apache-avro` against the schema file, so the two cannot drift apart silently.

use serde::Serialize;

use crate::core::decision::{Decision, RuleHit};
use crate::core::manifest::{Lane, TensorType};

/// Everything a decision record says about one event.
#[derive(Debug, Serialize)]
pub struct DecisionRecord<'a> {
    /// Unique event id.
    pub event_id: &'a str,
    /// Entity key.
    pub entity_key: &'a str,
    /// Action and reason, score, rule hits.
    #[serde(flatten)]
    pub decision: &'a Decision,
    /// Model name.
    pub model_name: &'a str,
    /// Model version.
    pub model_version: &'a str,
    /// Event time, ms since epoch.
    pub event_time: i64,
    /// Decision time, ms since epoch.
    pub decided_at: i64,
    /// Poll → decision within this instance, µs.
    pub latency_us: i64,
    /// Decided with degraded inputs (defaults for unavailable features).
    pub degraded: bool,
    /// Source topic.
    pub source_topic: &'a str,
    /// Source partition.
    pub source_partition: i32,
    /// Source offset.
    pub source_offset: i64,
    /// Names of model inputs that took their default.
    pub defaults_used: DefaultsUsed<'a>,
    /// Model inputs (empty to omit): `features` (numbers as fed to the model) and
    /// `feature_texts` (string inputs, as the event's text).
    #[serde(flatten)]
    pub features: Inputs<'a>,
    /// Window aggregates and online features: names and values (None = absent, omitted;
    /// empty unless `publish.include_aggregates`).
    #[serde(serialize_with = "aggregates_map")]
    pub aggregates: (&'a [String], &'a [Option<f64>]),
    /// The shadow model's verdict on this event, if it scored it.
    pub shadow: Option<ShadowVerdict<'a>>,
    /// A re-decision: this event was decided (and its record published) before a crash or
    /// rebalance, and is decided again from the partition's checkpoint. In JSON the key is
    /// written only when true, to keep records small; Avro always carries it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub redelivery: bool,
    /// A multi-output model's best classes with their scores, best first (JSON: written only
    /// for such models).
    #[serde(skip_serializing_if = "Top::is_empty")]
    pub top: Top<'a>,
}

/// A decision's best classes (`Decision::top`) by name: `[{"class": …, "score": …}, …]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Top<'a> {
    /// The model's class names.
    pub names: &'a [String],
    /// (class index, score), best first.
    pub picks: &'a [(u16, f32)],
}

impl Top<'_> {
    /// Whether no class was chosen (or the model has one score).
    pub fn is_empty(&self) -> bool {
        self.picks.is_empty()
    }

    fn entries(&self) -> impl Iterator<Item = (&str, f32)> + '_ {
        self.picks.iter().map(|&(c, s)| (self.names.get(usize::from(c)).map_or("", String::as_str), s))
    }
}

impl Serialize for Top<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Ranked<'b> {
            class: &'b str,
            score: f32,
        }
        s.collect_seq(self.entries().map(|(class, score)| Ranked { class, score }))
    }
}

/// A shadow (challenger) model's score and would-be action: recorded, never acted on.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ShadowVerdict<'a> {
    /// Model name.
    pub model: &'a str,
    /// Model version.
    pub version: &'a str,
    /// Its score.
    pub score: f32,
    /// What it would have decided.
    pub action: crate::core::decision::Action,
}

/// The model inputs that took their default, as column indices into the names table: borrowed
/// from the batch and written out by name, so no list of names is built per event.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultsUsed<'a> {
    /// The model's input names.
    pub names: &'a [String],
    /// Indices into `names`.
    pub columns: &'a [u16],
}

impl<'a> DefaultsUsed<'a> {
    /// Number of defaulted inputs.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether no input took its default.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The defaulted inputs' names.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.columns.iter().map(|&c| self.names[c as usize].as_str())
    }
}

impl Serialize for DefaultsUsed<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

fn aggregates_map<S: serde::Serializer>(f: &(&[String], &[Option<f64>]), s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(None)?;
    for (k, v) in f.0.iter().zip(f.1) {
        if let Some(v) = v {
            m.serialize_entry(k, v)?;
        }
    }
    m.end()
}

/// A record's model inputs: every column's `f32` value as fed to the model and, for string
/// columns (whose `f32` value is only a placeholder), the event's text. Written as two maps:
/// `features` (number columns) and `feature_texts` (string columns).
#[derive(Debug, Clone, Copy, Default)]
pub struct Inputs<'a> {
    /// Column names.
    pub names: &'a [String],
    /// Each column's `f32` value.
    pub values: &'a [f32],
    /// Each column's lane; empty when every column is a number.
    pub lanes: &'a [Lane],
    /// The row's texts, indexed by a string column's lane.
    pub texts: &'a [String],
}

impl<'a> Inputs<'a> {
    /// Number columns only.
    pub fn numbers(names: &'a [String], values: &'a [f32]) -> Self {
        Self { names, values, lanes: &[], texts: &[] }
    }

    fn text(&self, column: usize) -> Option<&'a str> {
        let lane = self.lanes.get(column)?;
        (lane.ty == TensorType::String).then(|| self.texts.get(lane.index).map(String::as_str)).flatten()
    }

    /// (name, value) of the number columns.
    fn number_entries(&self) -> impl Iterator<Item = (&'a String, f32)> + '_ {
        self.names
            .iter()
            .zip(self.values)
            .enumerate()
            .filter(|(i, _)| self.text(*i).is_none())
            .map(|(_, (k, v))| (k, *v))
    }

    /// (name, text) of the string columns.
    fn text_entries(&self) -> impl Iterator<Item = (&'a String, &'a str)> + '_ {
        self.names.iter().take(self.values.len()).enumerate().filter_map(|(i, k)| self.text(i).map(|t| (k, t)))
    }
}

impl Serialize for Inputs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Numbers<'b, 'a>(&'b Inputs<'a>);
        impl Serialize for Numbers<'_, '_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.number_entries())
            }
        }
        struct Texts<'b, 'a>(&'b Inputs<'a>);
        impl Serialize for Texts<'_, '_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.text_entries())
            }
        }
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("features", &Numbers(self))?;
        // Only models with string inputs have texts: other records stay as they were.
        if self.text_entries().next().is_some() {
            m.serialize_entry("feature_texts", &Texts(self))?;
        }
        m.end()
    }
}

fn zigzag(buf: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

fn string(buf: &mut Vec<u8>, s: &str) {
    zigzag(buf, s.len() as i64);
    buf.extend_from_slice(s.as_bytes());
}

fn rule_hits(buf: &mut Vec<u8>, hits: &[RuleHit]) {
    if !hits.is_empty() {
        zigzag(buf, hits.len() as i64);
        for h in hits {
            string(buf, &h.id);
            string(buf, &h.reason);
            string(
                buf,
                match h.mode {
                    crate::core::decision::RuleMode::Enforce => "enforce",
                    crate::core::decision::RuleMode::Monitor => "monitor",
                },
            );
            string(buf, &h.action);
        }
    }
    zigzag(buf, 0);
}

impl DecisionRecord<'_> {
    /// Appends the Confluent-framed Avro encoding to `buf`.
    pub fn write_avro(&self, schema_id: u32, buf: &mut Vec<u8>) {
        buf.push(0);
        buf.extend_from_slice(&schema_id.to_be_bytes());
        string(buf, self.event_id);
        string(buf, self.entity_key);
        zigzag(buf, self.decision.action.avro_index());
        string(buf, &self.decision.reason);
        buf.extend_from_slice(&f64::from(self.decision.score).to_le_bytes());
        string(buf, self.model_name);
        string(buf, self.model_version);
        rule_hits(buf, &self.decision.rule_hits);
        zigzag(buf, self.event_time);
        zigzag(buf, self.decided_at);
        zigzag(buf, self.latency_us);
        buf.push(u8::from(self.degraded));
        string(buf, self.source_topic);
        zigzag(buf, i64::from(self.source_partition));
        zigzag(buf, self.source_offset);
        if !self.defaults_used.is_empty() {
            zigzag(buf, self.defaults_used.len() as i64);
            for d in self.defaults_used.iter() {
                string(buf, d);
            }
        }
        zigzag(buf, 0);
        let numbers = self.features.number_entries().count();
        if numbers > 0 {
            zigzag(buf, numbers as i64);
            for (k, v) in self.features.number_entries() {
                string(buf, k);
                buf.extend_from_slice(&f64::from(v).to_le_bytes());
            }
        }
        zigzag(buf, 0);
        let texts = self.features.text_entries().count();
        if texts > 0 {
            zigzag(buf, texts as i64);
            for (k, t) in self.features.text_entries() {
                string(buf, k);
                string(buf, t);
            }
        }
        zigzag(buf, 0);
        string(buf, &self.decision.rules_version);
        match &self.decision.action_name {
            None => zigzag(buf, 0),
            Some(a) => {
                zigzag(buf, 1);
                string(buf, a);
            }
        }
        match self.decision.review_priority {
            None => zigzag(buf, 0),
            Some(p) => {
                zigzag(buf, 1);
                zigzag(buf, p);
            }
        }
        zigzag(buf, i64::from(self.decision.rule_errors));
        let (names, values) = self.aggregates;
        let present = values.iter().filter(|v| v.is_some()).count();
        if present > 0 {
            zigzag(buf, present as i64);
            for (k, v) in names.iter().zip(values) {
                if let Some(v) = v {
                    string(buf, k);
                    buf.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        zigzag(buf, 0);
        match &self.shadow {
            None => {
                string(buf, "");
                string(buf, "");
                zigzag(buf, 0);
                zigzag(buf, 0);
            }
            Some(s) => {
                string(buf, s.model);
                string(buf, s.version);
                zigzag(buf, 1);
                buf.extend_from_slice(&f64::from(s.score).to_le_bytes());
                zigzag(buf, 1);
                string(buf, s.action.label());
            }
        }
        buf.push(u8::from(self.decision.fallback));
        buf.push(u8::from(self.redelivery));
        if !self.top.is_empty() {
            zigzag(buf, self.top.picks.len() as i64);
            for (class, score) in self.top.entries() {
                string(buf, class);
                buf.extend_from_slice(&f64::from(score).to_le_bytes());
            }
        }
        zigzag(buf, 0);
    }

    /// Appends the JSON encoding to `buf`.
    pub fn write_json(&self, buf: &mut Vec<u8>) {
        serde_json::to_writer(buf, self).expect("decision record serializes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decision::{Action, RuleMode};
    use apache_avro::types::Value;

    fn decision() -> Decision {
        Decision {
            action: Action::REVIEW,
            action_name: Some("step_up".into()),
            reason: "huge_amount".into(),
            score: 0.625,
            rule_hits: vec![RuleHit {
                id: "r1".into(),
                reason: "huge_amount".into(),
                mode: RuleMode::Enforce,
                action: "step_up".into(),
            }],
            rule_errors: 2,
            rules_version: "0123456789abcdef".into(),
            review_priority: Some(-7),
            fallback: false,
            top: Vec::new(),
        }
    }

    static NAMES: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| vec!["amount".into(), "age".into()]);
    static AGG: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| vec!["window:card.10m.count".into(), "feature:card.cb".into()]);

    fn record(d: &Decision) -> DecisionRecord<'_> {
        DecisionRecord {
            event_id: "tx-1",
            entity_key: "card-9",
            decision: d,
            model_name: "m",
            model_version: "3",
            event_time: 1_700_000_000_123,
            decided_at: 1_700_000_000_456,
            latency_us: -5,
            degraded: false,
            source_topic: "events",
            source_partition: 3,
            source_offset: 123_456_789,
            defaults_used: DefaultsUsed { names: &NAMES, columns: &[1] },
            features: Inputs::numbers(&NAMES, &[1.5, -1.0]),
            aggregates: (&AGG, &[Some(3.0), None]),
            shadow: Some(ShadowVerdict { model: "challenger", version: "7", score: 0.25, action: Action::APPROVE }),
            redelivery: false,
            top: Top::default(),
        }
    }

    /// `schemas/decision.avsc` as it was before `redelivery` (docs left out: they do not
    /// take part in schema resolution).
    const BEFORE_REDELIVERY: &str = r#"{"type": "record", "name": "Decision", "namespace": "verdict", "fields": [
        {"name": "event_id", "type": "string"}, {"name": "entity_key", "type": "string"},
        {"name": "action", "type": {"type": "enum", "name": "Action", "symbols": ["approve", "review", "decline"]}},
        {"name": "reason", "type": "string"}, {"name": "score", "type": "double"},
        {"name": "model_name", "type": "string"}, {"name": "model_version", "type": "string"},
        {"name": "rule_hits", "type": {"type": "array", "items": {"type": "record", "name": "RuleHit", "fields": [
            {"name": "id", "type": "string"}, {"name": "reason", "type": "string"},
            {"name": "mode", "type": "string"}, {"name": "action", "type": "string", "default": ""}]}},
         "default": []},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "decided_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "latency_us", "type": "long"}, {"name": "degraded", "type": "boolean", "default": false},
        {"name": "source_topic", "type": "string"}, {"name": "source_partition", "type": "int"},
        {"name": "source_offset", "type": "long"},
        {"name": "defaults_used", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "features", "type": {"type": "map", "values": "double"}, "default": {}},
        {"name": "rules_version", "type": "string", "default": ""},
        {"name": "action_name", "type": ["null", "string"], "default": null},
        {"name": "review_priority", "type": ["null", "long"], "default": null},
        {"name": "rule_errors", "type": "int", "default": 0},
        {"name": "aggregates", "type": {"type": "map", "values": "double"}, "default": {}},
        {"name": "shadow_model", "type": "string", "default": ""},
        {"name": "shadow_version", "type": "string", "default": ""},
        {"name": "shadow_score", "type": ["null", "double"], "default": null},
        {"name": "shadow_action", "type": ["null", "string"], "default": null},
        {"name": "fallback", "type": "boolean", "default": false}
    ]}"#;

    fn schema_file() -> apache_avro::Schema {
        crate::decode::parse_schema_file(std::path::Path::new("schemas/decision.avsc")).unwrap()
    }

    /// Reads `body` (no Confluent framing) written with `writer` as `reader` sees it; all of it.
    fn read_fields(
        writer: &apache_avro::Schema,
        reader: &apache_avro::Schema,
        mut body: &[u8],
    ) -> Vec<(String, Value)> {
        let r = apache_avro::reader::datum::GenericDatumReader::builder(writer).reader_schema(reader).build().unwrap();
        let Value::Record(fields) = r.read_value(&mut body).unwrap() else { panic!("not a record") };
        assert!(body.is_empty(), "no trailing bytes");
        fields
    }

    fn field(fields: &[(String, Value)], name: &str) -> Option<Value> {
        fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn hand_encoded_avro_decodes_with_the_schema_file() {
        let d = decision();
        let mut buf = Vec::new();
        record(&d).write_avro(100, &mut buf);
        assert_eq!(&buf[..5], &[0, 0, 0, 0, 100]);
        let schema = crate::decode::parse_schema_file(std::path::Path::new("schemas/decision.avsc")).unwrap();
        let reader = apache_avro::reader::datum::GenericDatumReader::builder(&schema).build().unwrap();
        let mut body = &buf[5..];
        let v = reader.read_value(&mut body).unwrap();
        assert!(body.is_empty(), "no trailing bytes");
        let Value::Record(fields) = v else { panic!("not a record") };
        let get = |n: &str| fields.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(get("event_id"), Value::String("tx-1".into()));
        assert_eq!(get("action"), Value::Enum(1, "review".into()));
        assert_eq!(get("score"), Value::Double(0.625));
        assert_eq!(get("source_offset"), Value::Long(123_456_789));
        assert_eq!(get("latency_us"), Value::Long(-5));
        assert_eq!(get("event_time"), Value::TimestampMillis(1_700_000_000_123));
        let Value::Array(hits) = get("rule_hits") else { panic!() };
        assert_eq!(hits.len(), 1);
        assert_eq!(get("defaults_used"), Value::Array(vec![Value::String("age".into())]));
        let Value::Map(f) = get("features") else { panic!() };
        assert_eq!(f["amount"], Value::Double(1.5));
        assert_eq!(f["age"], Value::Double(-1.0));
        assert_eq!(get("rules_version"), Value::String("0123456789abcdef".into()));
        assert_eq!(get("action_name"), Value::Union(1, Box::new(Value::String("step_up".into()))));
        assert_eq!(get("review_priority"), Value::Union(1, Box::new(Value::Long(-7))));
        assert_eq!(get("rule_errors"), Value::Int(2));
        assert_eq!(get("shadow_model"), Value::String("challenger".into()));
        assert_eq!(get("shadow_score"), Value::Union(1, Box::new(Value::Double(0.25))));
        assert_eq!(get("shadow_action"), Value::Union(1, Box::new(Value::String("approve".into()))));
        let Value::Map(a) = get("aggregates") else { panic!() };
        assert_eq!(a.len(), 1, "absent aggregates are omitted");
        assert_eq!(a["window:card.10m.count"], Value::Double(3.0));
        let Value::Record(hit) = &hits[0] else { panic!() };
        assert_eq!(hit[3], ("action".to_string(), Value::String("step_up".into())));
        assert_eq!(get("redelivery"), Value::Boolean(false));
    }

    #[test]
    fn redelivered_record_says_so_in_avro_and_json() {
        let d = decision();
        let r = DecisionRecord { redelivery: true, ..record(&d) };
        let mut avro = Vec::new();
        r.write_avro(100, &mut avro);
        let schema = schema_file();
        let fields = read_fields(&schema, &schema, &avro[5..]);
        assert_eq!(field(&fields, "redelivery"), Some(Value::Boolean(true)));
        assert_eq!(fields[fields.len() - 2].0, "redelivery", "appended after every older field, before top");
        assert_eq!(field(&fields, "fallback"), Some(Value::Boolean(false)));

        let mut json = Vec::new();
        r.write_json(&mut json);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["redelivery"], true);
    }

    #[test]
    fn a_multi_output_decision_carries_its_top_classes_by_name_and_older_readers_skip_them() {
        let mut d = decision();
        d.top = vec![(2, 0.5), (0, 0.25)];
        let names: Vec<String> = ["sports", "news", "music"].map(String::from).into();
        let r = DecisionRecord { top: Top { names: &names, picks: &d.top }, ..record(&d) };
        let mut json = Vec::new();
        r.write_json(&mut json);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["top"], serde_json::json!([{"class": "music", "score": 0.5}, {"class": "sports", "score": 0.25}]));
        let mut avro = Vec::new();
        r.write_avro(100, &mut avro);
        let schema = schema_file();
        let fields = read_fields(&schema, &schema, &avro[5..]);
        let ranked = |c: &str, s: f64| {
            Value::Record(vec![("class".into(), Value::String(c.into())), ("score".into(), Value::Double(s))])
        };
        assert_eq!(field(&fields, "top"), Some(Value::Array(vec![ranked("music", 0.5), ranked("sports", 0.25)])));
        // A consumer holding the schema before `top` reads the record without it.
        let mut before: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string("schemas/decision.avsc").unwrap()).unwrap();
        before["fields"].as_array_mut().unwrap().retain(|f| f["name"] != "top");
        let old = apache_avro::Schema::parse_str(&before.to_string()).unwrap();
        let fields = read_fields(&schema, &old, &avro[5..]);
        assert_eq!(field(&fields, "top"), None);
        assert_eq!(field(&fields, "redelivery"), Some(Value::Boolean(false)));
        // A one-score model's JSON record has no `top`; its Avro record an empty one.
        let mut json = Vec::new();
        record(&decision()).write_json(&mut json);
        assert!(!String::from_utf8(json).unwrap().contains("\"top\""));
    }

    #[test]
    fn json_record_omits_redelivery_when_false() {
        let d = decision();
        let mut json = Vec::new();
        record(&d).write_json(&mut json);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert!(v.get("redelivery").is_none(), "{v}");
        assert!(!String::from_utf8(json).unwrap().contains("redelivery"));
    }

    #[test]
    fn a_consumer_holding_the_schema_before_redelivery_reads_redelivered_records() {
        let d = decision();
        let mut buf = Vec::new();
        DecisionRecord { redelivery: true, ..record(&d) }.write_avro(100, &mut buf);
        let new = schema_file();
        let old = apache_avro::Schema::parse_str(BEFORE_REDELIVERY).unwrap();
        let fields = read_fields(&new, &old, &buf[5..]);
        assert_eq!(field(&fields, "redelivery"), None, "the old reader sees only its own fields");
        assert_eq!(field(&fields, "event_id"), Some(Value::String("tx-1".into())));
        assert_eq!(field(&fields, "shadow_action"), Some(Value::Union(1, Box::new(Value::String("approve".into())))));
        assert_eq!(field(&fields, "fallback"), Some(Value::Boolean(false)));

        // Records written before the field read with the new schema as not redelivered.
        let mut old_bytes = Vec::new();
        let w = apache_avro::writer::datum::GenericDatumWriter::builder(&old).build().unwrap();
        w.write_value(&mut old_bytes, Value::Record(fields)).unwrap();
        let fields = read_fields(&old, &new, &old_bytes);
        assert_eq!(field(&fields, "redelivery"), Some(Value::Boolean(false)));
        assert_eq!(field(&fields, "source_offset"), Some(Value::Long(123_456_789)));
    }

    #[test]
    fn a_consumer_holding_the_previous_schema_reads_new_records() {
        let d = decision();
        let mut buf = Vec::new();
        record(&d).write_avro(100, &mut buf);
        let writer = crate::decode::parse_schema_file(std::path::Path::new("schemas/decision.avsc")).unwrap();
        let old = crate::decode::parse_schema_file(std::path::Path::new("tests/data/decision-v1.avsc")).unwrap();
        let reader =
            apache_avro::reader::datum::GenericDatumReader::builder(&writer).reader_schema(&old).build().unwrap();
        let mut body = &buf[5..];
        let Value::Record(fields) = reader.read_value(&mut body).unwrap() else { panic!("not a record") };
        assert!(body.is_empty());
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert!(!names.contains(&"rules_version"), "the old reader sees only its own fields");
        let get = |n: &str| fields.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(get("event_id"), Value::String("tx-1".into()));
        assert_eq!(get("action"), Value::Enum(1, "review".into()));
        let Value::Array(hits) = get("rule_hits") else { panic!() };
        let Value::Record(hit) = &hits[0] else { panic!() };
        assert_eq!(hit.len(), 3, "id, reason, mode: the old RuleHit");

        // And the other way: records written with the previous schema read with the new
        // one, the added fields taking their defaults.
        let old_bytes = {
            let mut b = Vec::new();
            let w = apache_avro::writer::datum::GenericDatumWriter::builder(&old).build().unwrap();
            let old_reader =
                apache_avro::reader::datum::GenericDatumReader::builder(&writer).reader_schema(&old).build().unwrap();
            let v = old_reader.read_value(&mut &buf[5..]).unwrap();
            w.write_value(&mut b, v).unwrap();
            b
        };
        let new_reader =
            apache_avro::reader::datum::GenericDatumReader::builder(&old).reader_schema(&writer).build().unwrap();
        let Value::Record(fields) = new_reader.read_value(&mut &old_bytes[..]).unwrap() else { panic!() };
        let get = |n: &str| fields.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(get("rules_version"), Value::String(String::new()));
        assert_eq!(get("review_priority"), Value::Union(0, Box::new(Value::Null)));
    }

    #[test]
    fn json_record_flattens_the_decision() {
        let d = decision();
        let mut buf = Vec::new();
        record(&d).write_json(&mut buf);
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["action"], "review");
        assert_eq!(v["rule_hits"][0]["mode"], "enforce");
        assert_eq!(v["rule_hits"][0]["action"], "step_up");
        assert_eq!(v["rules_version"], "0123456789abcdef");
        assert_eq!(v["review_priority"], -7);
        assert_eq!(v["aggregates"]["window:card.10m.count"], 3.0);
        assert!(v["aggregates"].get("feature:card.cb").is_none());
        assert_eq!(v["source_partition"], 3);
        assert_eq!(v["features"]["amount"], 1.5);
        assert_eq!(v["defaults_used"][0], "age");
    }
    #[test]
    fn string_inputs_are_written_as_the_events_text_in_avro_and_json() {
        let d = decision();
        let names = vec!["amount".to_string(), "channel".to_string()];
        let lanes = [Lane { ty: TensorType::Float32, index: 0 }, Lane { ty: TensorType::String, index: 0 }];
        let texts = vec!["ecom".to_string()];
        // A string column's f32 is a placeholder (0, or NaN when defaulted): never written.
        let features = Inputs { names: &names, values: &[12.5, 0.0], lanes: &lanes, texts: &texts };
        let r = DecisionRecord { features, ..record(&d) };
        let mut json = Vec::new();
        r.write_json(&mut json);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["features"], serde_json::json!({"amount": 12.5}));
        assert_eq!(v["feature_texts"], serde_json::json!({"channel": "ecom"}));

        let mut avro = Vec::new();
        r.write_avro(100, &mut avro);
        let schema = schema_file();
        let fields = read_fields(&schema, &schema, &avro[5..]);
        let Some(Value::Map(f)) = field(&fields, "features") else { panic!() };
        assert_eq!((f.len(), &f["amount"]), (1, &Value::Double(12.5)));
        let Some(Value::Map(t)) = field(&fields, "feature_texts") else { panic!() };
        assert_eq!((t.len(), &t["channel"]), (1, &Value::String("ecom".into())));
        // Records of number-only models stay as they were in JSON.
        let mut plain = Vec::new();
        record(&d).write_json(&mut plain);
        assert!(!String::from_utf8(plain).unwrap().contains("feature_texts"));
    }
}
