//! Builds the model's input row from an event, column by column, as the manifest says.
//!
//! This is the training–serving contract: `ops/model/features.py` implements the same
//! rules, and the parity tests compare the two as f32 bits.

use std::collections::HashMap;

use super::fields::{Field, FieldPath, Fields};
use super::DecodeError;
use crate::error::DeadLetterReason;
use crate::score::manifest::{ColumnKind, InputColumn, Manifest, MissingPolicy};

#[derive(Debug, Clone)]
enum Conv {
    Number,
    Bool,
    Lookup {
        table: HashMap<String, f32>,
        unknown: f32,
    },
    /// Filled by the enrich stage: index into [`crate::enrich::Enricher::names`].
    Enriched(usize),
}

/// Prefixes of column sources produced by the enrich stage rather than read from the event.
pub const ENRICHED_PREFIXES: [&str; 2] = ["window:", "feature:"];

#[derive(Debug, Clone)]
struct Column {
    name: String,
    path: FieldPath,
    conv: Conv,
    missing: MissingPolicy,
}

/// The manifest's input columns, compiled once.
#[derive(Debug, Clone)]
pub struct Vectorizer {
    columns: Vec<Column>,
}

impl Vectorizer {
    /// Compiles the manifest's `inputs`.
    /// `enriched` names the values the enrich stage produces; a column whose source
    /// names anything else with an enrich prefix is an error naming it.
    pub fn new(manifest: &Manifest, enriched: &[String]) -> Result<Self, String> {
        let mut columns = Vec::new();
        let mut problems = Vec::new();
        for (slot, c) in manifest.inputs.iter().enumerate() {
            let mut col = compile(c, slot);
            if ENRICHED_PREFIXES.iter().any(|p| c.source.starts_with(p)) {
                match enriched.iter().position(|n| *n == c.source) {
                    Some(i) => col.conv = Conv::Enriched(i),
                    None => problems.push(format!(
                        "column '{}': source '{}' is not produced by the enrich config (it produces {})",
                        c.name,
                        c.source,
                        if enriched.is_empty() { "nothing".to_string() } else { enriched.join(", ") }
                    )),
                }
                if c.missing == MissingPolicy::Reject {
                    problems.push(format!("column '{}': an enriched column cannot use missing = reject", c.name));
                }
            }
            columns.push(col);
        }
        if problems.is_empty() {
            Ok(Self { columns })
        } else {
            Err(problems.join("; "))
        }
    }

    /// Source paths of the columns read from the event (their slots are their column indices).
    pub fn paths(&self) -> impl Iterator<Item = &FieldPath> {
        self.columns.iter().filter(|c| !matches!(c.conv, Conv::Enriched(_))).map(|c| &c.path)
    }

    /// Whether any column comes from the enrich stage.
    pub fn has_enriched(&self) -> bool {
        self.columns.iter().any(|c| matches!(c.conv, Conv::Enriched(_)))
    }

    /// Fills the enriched columns of `row` from `values` (one per enrich output); a missing
    /// value takes the column's policy and its column index is pushed to `defaults`.
    pub fn fill_enriched(&self, values: &[Option<f64>], row: &mut [f32], defaults: &mut Vec<u16>) {
        for (i, (col, slot)) in self.columns.iter().zip(row.iter_mut()).enumerate() {
            let Conv::Enriched(k) = col.conv else { continue };
            *slot = match values.get(k).copied().flatten() {
                Some(v) if v.is_finite() => v as f32,
                _ => {
                    defaults.push(i as u16);
                    match col.missing {
                        MissingPolicy::Default(x) => x,
                        MissingPolicy::Nan | MissingPolicy::Reject => f32::NAN,
                    }
                }
            };
        }
    }

    /// Number of columns (the model's row width).
    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// Column names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.name.as_str())
    }

    /// Fills `row` (length [`Self::width`]) from `event`.
    pub fn fill(&self, event: &dyn Fields, row: &mut [f32]) -> Result<(), DecodeError> {
        for (col, slot) in self.columns.iter().zip(row.iter_mut()) {
            *slot = match col.conv {
                Conv::Enriched(_) => f32::NAN,
                _ => col.value(event.field(&col.path))?,
            };
        }
        Ok(())
    }
}

fn compile(c: &InputColumn, slot: usize) -> Column {
    let conv = match c.kind {
        ColumnKind::Number => Conv::Number,
        ColumnKind::Bool => Conv::Bool,
        ColumnKind::Lookup => Conv::Lookup {
            table: c.table.clone().unwrap_or_default().into_iter().collect(),
            unknown: c.unknown.unwrap_or(-1.0),
        },
    };
    Column { name: c.name.clone(), path: FieldPath::parse(&c.source).with_slot(slot), conv, missing: c.missing }
}

impl Column {
    fn value(&self, field: Field<'_>) -> Result<f32, DecodeError> {
        match (&self.conv, field) {
            (_, Field::Missing | Field::Null) => match self.missing {
                MissingPolicy::Nan => Ok(f32::NAN),
                MissingPolicy::Default(x) => Ok(x),
                MissingPolicy::Reject => Err(self.error(DeadLetterReason::MissingField, "is missing or null".into())),
            },
            (Conv::Number, Field::Int(i)) => Ok(i as f64 as f32),
            (Conv::Number, Field::Float(f)) if f.is_finite() => Ok(f as f32),
            (Conv::Number, Field::Float(f)) => Err(self.error(DeadLetterReason::NonFinite, format!("is {f}"))),
            (Conv::Bool, Field::Bool(b)) => Ok(if b { 1.0 } else { 0.0 }),
            (Conv::Lookup { table, unknown }, Field::Str(s)) => Ok(*table.get(s).unwrap_or(unknown)),
            (conv, other) => {
                let want = match conv {
                    Conv::Number | Conv::Enriched(_) => "number",
                    Conv::Bool => "boolean",
                    Conv::Lookup { .. } => "string",
                };
                Err(self.error(DeadLetterReason::WrongType, format!("expected {want}, got {}", other.type_name())))
            }
        }
    }

    fn error(&self, reason: DeadLetterReason, what: String) -> DecodeError {
        DecodeError { reason, detail: format!("column '{}' ({}) {what}", self.name, self.path.as_str()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest() -> Manifest {
        serde_json::from_value(json!({
            "name": "t", "version": "1", "model_file": "m.onnx", "input_name": "input", "output_name": "probabilities",
            "inputs": [
                {"name": "amount", "source": "amount", "kind": "number"},
                {"name": "age", "source": "card.age_days", "kind": "number", "missing": {"default": -1.0}},
                {"name": "dist", "source": "distance_km", "kind": "number", "missing": "nan"},
                {"name": "channel", "source": "channel", "kind": "lookup", "table": {"pos": 0.0, "ecom": 1.0}, "unknown": 9.0, "missing": {"default": -1.0}},
                {"name": "present", "source": "card_present", "kind": "bool", "missing": {"default": 0.0}}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn each_column_kind_and_missing_policy_fills_its_slot() {
        let v = Vectorizer::new(&manifest(), &[]).unwrap();
        let mut row = [0f32; 5];
        v.fill(&json!({"amount": 12.5, "card": {"age_days": 30}, "channel": "atm", "card_present": true}), &mut row)
            .unwrap();
        assert_eq!(row[0], 12.5);
        assert_eq!(row[1], 30.0);
        assert!(row[2].is_nan());
        assert_eq!(row[3], 9.0, "unknown category gets the unknown code");
        assert_eq!(row[4], 1.0);
        v.fill(&json!({"amount": 1, "channel": null}), &mut row).unwrap();
        assert_eq!((row[1], row[3], row[4]), (-1.0, -1.0, 0.0));
    }

    #[test]
    fn bad_values_name_the_column_and_reason() {
        let v = Vectorizer::new(&manifest(), &[]).unwrap();
        let mut row = [0f32; 5];
        let e = v.fill(&json!({"amount": "12"}), &mut row).unwrap_err();
        assert_eq!(e.reason, DeadLetterReason::WrongType);
        assert!(e.detail.contains("'amount'"), "{}", e.detail);
        let e = v.fill(&json!({"card": {}}), &mut row).unwrap_err();
        assert_eq!(e.reason, DeadLetterReason::MissingField);
        assert!(e.detail.contains("'amount'"));
    }

    #[test]
    fn f64_rounds_to_nearest_f32() {
        let v = Vectorizer::new(&manifest(), &[]).unwrap();
        let mut row = [0f32; 5];
        v.fill(&json!({"amount": 0.1}), &mut row).unwrap();
        assert_eq!(row[0].to_bits(), 0.1f32.to_bits());
    }
}
