//! Format-neutral field access: one [`Field`] view over JSON and Avro values, found
//! by a dotted path compiled once ([`FieldPath`]).

use apache_avro::types::Value as AvroValue;
use serde_json::Value as JsonValue;

/// A dotted path (`payment.card.bin`), split once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    parts: Vec<String>,
    slot: usize,
}

impl FieldPath {
    /// Compiles `a.b.c`.
    pub fn parse(text: &str) -> Self {
        Self { text: text.to_string(), parts: text.split('.').map(str::to_string).collect(), slot: 0 }
    }

    /// Assigns the slot this path fills in a single-pass extraction ([`super::json::PathTrie`]).
    pub fn with_slot(mut self, slot: usize) -> Self {
        self.slot = slot;
        self
    }

    /// Slot index in a single-pass extraction.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The path's segments.
    pub fn parts(&self) -> &[String] {
        &self.parts
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Describes a [`Field::Blocked`] lookup of this path, for dead-letter details:
    /// `field 'a' (on the way to 'a.b') expected an object, got string`.
    pub fn blocked(&self, depth: usize, found: &str) -> String {
        let end = (depth + 1).min(self.parts.len());
        format!(
            "field '{}' (on the way to '{}') expected an object, got {found}",
            self.parts[..end].join("."),
            self.text
        )
    }
}

/// A field as found in an event, independent of encoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field<'a> {
    /// No such field.
    Missing,
    /// Present and null.
    Null,
    /// Floating-point number.
    Float(f64),
    /// Integer.
    Int(i64),
    /// String (Avro enums too).
    Str(&'a str),
    /// Boolean.
    Bool(bool),
    /// Anything else (object, array, bytes), named for error messages.
    Other(&'static str),
    /// A level on the way is neither an object (record, map) nor null: segment `depth` of
    /// the path holds a `found`. The event is malformed for this path, not missing it.
    Blocked {
        /// Index of the path segment whose value is not an object.
        depth: usize,
        /// What that segment holds (`string`, `number`, `array`, ...).
        found: &'static str,
    },
}

impl Field<'_> {
    /// Name of the type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Field::Missing => "missing",
            Field::Null => "null",
            Field::Float(_) => "float",
            Field::Int(_) => "integer",
            Field::Str(_) => "string",
            Field::Bool(_) => "boolean",
            Field::Other(t) => t,
            Field::Blocked { .. } => "unreachable",
        }
    }
}

/// A decoded event whose fields can be looked up by path.
pub trait Fields {
    /// The field at `path`, or [`Field::Missing`].
    fn field(&self, path: &FieldPath) -> Field<'_>;
}

impl Fields for JsonValue {
    fn field(&self, path: &FieldPath) -> Field<'_> {
        let mut cur = self;
        for (i, part) in path.parts.iter().enumerate() {
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
        for (i, part) in path.parts.iter().enumerate() {
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
