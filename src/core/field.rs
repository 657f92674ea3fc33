//! Event fields, independent of encoding: a dotted path compiled once ([`FieldPath`]), the
//! borrowed view of what an event holds there ([`Field`]), the lookup every decoded format
//! implements ([`Fields`]), and the owned value the rules read ([`FieldValue`]).
//!
//! Here rather than in `decode` because the decoder produces them and the enrich and decide
//! stages consume them: a type both sides name lives below both.

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

    /// Assigns the slot this path fills in a single-pass extraction (`decode::json::PathTrie`).
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

/// An owned event field value, extracted by the decoder for the rules.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// Missing or null.
    Null,
    /// A number.
    Num(f64),
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
}

/// Converts a decoded field for the rules.
pub fn field_value(f: Field<'_>) -> FieldValue {
    match f {
        Field::Float(x) => FieldValue::Num(x),
        Field::Int(i) => FieldValue::Num(i as f64),
        Field::Str(s) => FieldValue::Str(s.to_string()),
        Field::Bool(b) => FieldValue::Bool(b),
        _ => FieldValue::Null,
    }
}
