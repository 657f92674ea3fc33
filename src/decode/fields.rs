//! The JSON and Avro implementations of [`Fields`]: one [`Field`] view over either
//! encoding, found by a [`FieldPath`] (those types live in [`crate::core::field`]).

use apache_avro::types::Value as AvroValue;
use serde_json::Value as JsonValue;

pub use crate::core::field::{Field, FieldPath, Fields};

impl Fields for JsonValue {
    fn field(&self, path: &FieldPath) -> Field<'_> {
        let mut cur = self;
        for (i, part) in path.parts().iter().enumerate() {
            match cur {
                JsonValue::Object(map) => match map.get(part) {
                    Some(v) => cur = v,
                    None => return Field::Missing,
                },
                // A null level is an absent subtree; the root is checked to be an object by the decoder.
                JsonValue::Null => return Field::Missing,
                _ if i == 0 => return Field::Missing,
                other => return Field::Blocked { depth: i - 1, found: json_type(other) },
            }
        }
        json_field(cur)
    }
}

/// The JSON type of `v`, for error messages.
pub fn json_type(v: &JsonValue) -> &'static str {
    match v {
        JsonValue::Null => "null",
        JsonValue::Bool(_) => "boolean",
        JsonValue::Number(_) => "number",
        JsonValue::String(_) => "string",
        JsonValue::Array(_) => "array",
        JsonValue::Object(_) => "object",
    }
}

fn json_field(v: &JsonValue) -> Field<'_> {
    match v {
        JsonValue::Null => Field::Null,
        JsonValue::Bool(b) => Field::Bool(*b),
        JsonValue::Number(n) => match n.as_i64() {
            Some(i) => Field::Int(i),
            None => Field::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        JsonValue::String(s) => Field::Str(s),
        JsonValue::Array(_) => Field::Other("array"),
        JsonValue::Object(_) => Field::Other("object"),
    }
}

impl Fields for AvroValue {
    fn field(&self, path: &FieldPath) -> Field<'_> {
        let mut cur = unwrap_union(self);
        for (i, part) in path.parts().iter().enumerate() {
            let next = match cur {
                AvroValue::Record(fields) => fields.iter().find(|(n, _)| n == part).map(|(_, v)| v),
                AvroValue::Map(map) => map.get(part),
                AvroValue::Null => None,
                _ if i == 0 => None,
                other => return Field::Blocked { depth: i - 1, found: avro_type(other) },
            };
            match next {
                Some(v) => cur = unwrap_union(v),
                None => return Field::Missing,
            }
        }
        avro_field(cur)
    }
}

fn unwrap_union(v: &AvroValue) -> &AvroValue {
    match v {
        AvroValue::Union(_, inner) => unwrap_union(inner),
        other => other,
    }
}

/// The Avro type of `v`, for error messages.
fn avro_type(v: &AvroValue) -> &'static str {
    match v {
        AvroValue::Null => "null",
        AvroValue::Boolean(_) => "boolean",
        AvroValue::Int(_) => "int",
        AvroValue::Long(_) => "long",
        AvroValue::Float(_) => "float",
        AvroValue::Double(_) => "double",
        AvroValue::String(_) => "string",
        AvroValue::Enum(..) => "enum",
        AvroValue::Bytes(_) => "bytes",
        AvroValue::Fixed(..) => "fixed",
        AvroValue::Array(_) => "array",
        AvroValue::Map(_) => "map",
        AvroValue::Record(_) => "record",
        _ => "logical type",
    }
}

fn avro_field(v: &AvroValue) -> Field<'_> {
    match v {
        AvroValue::Null => Field::Null,
        AvroValue::Boolean(b) => Field::Bool(*b),
        AvroValue::Int(i) => Field::Int(i64::from(*i)),
        AvroValue::Long(i) | AvroValue::TimestampMillis(i) => Field::Int(*i),
        AvroValue::Float(f) => Field::Float(f64::from(*f)),
        AvroValue::Double(f) => Field::Float(*f),
        AvroValue::String(s) | AvroValue::Enum(_, s) => Field::Str(s),
        AvroValue::Record(_) => Field::Other("record"),
        AvroValue::Map(_) => Field::Other("map"),
        AvroValue::Array(_) => Field::Other("array"),
        AvroValue::Bytes(_) | AvroValue::Fixed(..) => Field::Other("bytes"),
        _ => Field::Other("logical type"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_json_paths_resolve_and_absent_ones_are_missing() {
        let v: JsonValue = serde_json::json!({"a": {"b": {"c": 2.5}}, "n": null, "i": 7});
        assert_eq!(v.field(&FieldPath::parse("a.b.c")), Field::Float(2.5));
        assert_eq!(v.field(&FieldPath::parse("i")), Field::Int(7));
        assert_eq!(v.field(&FieldPath::parse("n")), Field::Null);
        assert_eq!(v.field(&FieldPath::parse("a.x")), Field::Missing);
        assert_eq!(v.field(&FieldPath::parse("n.x")), Field::Missing, "a null level is missing");
    }

    #[test]
    fn a_json_level_that_is_not_an_object_blocks_the_path() {
        let v: JsonValue = serde_json::json!({"i": 7, "a": {"s": "x", "l": [1]}});
        assert_eq!(v.field(&FieldPath::parse("i.x")), Field::Blocked { depth: 0, found: "number" });
        let p = FieldPath::parse("a.s.t.u");
        assert_eq!(v.field(&p), Field::Blocked { depth: 1, found: "string" });
        assert_eq!(p.blocked(1, "string"), "field 'a.s' (on the way to 'a.s.t.u') expected an object, got string");
        assert_eq!(v.field(&FieldPath::parse("a.l.x")), Field::Blocked { depth: 1, found: "array" });
    }

    #[test]
    fn avro_unions_are_transparent() {
        let v = AvroValue::Record(vec![
            (
                "device".into(),
                AvroValue::Union(
                    1,
                    Box::new(AvroValue::Record(vec![("type".into(), AvroValue::String("mobile".into()))])),
                ),
            ),
            ("d".into(), AvroValue::Union(0, Box::new(AvroValue::Null))),
        ]);
        assert_eq!(v.field(&FieldPath::parse("device.type")), Field::Str("mobile"));
        assert_eq!(v.field(&FieldPath::parse("d")), Field::Null);
        assert_eq!(v.field(&FieldPath::parse("d.x")), Field::Missing, "a null branch is missing");
    }

    #[test]
    fn an_avro_union_branch_that_is_not_a_record_blocks_the_path() {
        let v =
            AvroValue::Record(vec![("device".into(), AvroValue::Union(2, Box::new(AvroValue::String("tv".into()))))]);
        assert_eq!(v.field(&FieldPath::parse("device.type")), Field::Blocked { depth: 0, found: "string" });
    }
}
