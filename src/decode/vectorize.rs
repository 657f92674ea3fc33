//! Builds the model's input row from an event, column by column, as the manifest says.
//!
//! This is the training–serving contract: `ops/model/features.py` implements the same
//! rules, and the parity tests compare the two as f32 bits (and exact integers / strings
//! for columns that feed int64 or string graph inputs).

use super::column::{compile, set_text, Cell, Column, ColumnError, ColumnErrors, Conv};
use super::fields::{FieldPath, Fields};
use super::DecodeError;
use crate::core::manifest::{ColumnKind, DefaultValue, Lane, Manifest, MissingPolicy, TensorType};
pub use crate::core::rows::{RowMut, Rows};
use crate::error::DeadLetterReason;

/// Prefixes of column sources produced by the enrich stage rather than read from the event.
pub const ENRICHED_PREFIXES: [&str; 3] = ["window:", "session:", "feature:"];

/// The manifest's input columns, compiled once.
#[derive(Debug, Clone)]
pub struct Vectorizer {
    columns: Vec<Column>,
    lanes: Vec<Lane>,
    empty: Rows,
    /// The manifest's input columns as written (where each reads from: `publish.redact`).
    inputs: std::sync::Arc<[crate::core::manifest::InputColumn]>,
}

impl Vectorizer {
    /// Compiles the manifest's `inputs`.
    /// `enriched` names the values the enrich stage produces; a column whose source
    /// names anything else with an enrich prefix is an error naming it.
    pub fn new(manifest: &Manifest, enriched: &[String]) -> Result<Self, ColumnErrors> {
        let mut columns = Vec::new();
        let mut problems = Vec::new();
        let lanes = manifest.lanes();
        for (slot, (c, &lane)) in manifest.inputs.iter().zip(&lanes).enumerate() {
            let mut col = match compile(c, slot, lane) {
                Ok(col) => col,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            if ENRICHED_PREFIXES.iter().any(|p| c.source.starts_with(p)) {
                match enriched.iter().position(|n| *n == c.source) {
                    Some(i) => col.conv = Conv::Enriched(i),
                    None => problems.push(ColumnError::NotEnriched {
                        column: c.name.clone(),
                        name: c.source.clone(),
                        produced: if enriched.is_empty() { "nothing".to_string() } else { enriched.join(", ") },
                    }),
                }
                if c.missing == MissingPolicy::Reject {
                    problems.push(ColumnError::EnrichedRejects { column: c.name.clone() });
                }
                if lane.ty != TensorType::Float32 || c.kind != ColumnKind::Number {
                    problems.push(ColumnError::EnrichedNotFloat { column: c.name.clone() });
                }
            }
            columns.push(col);
        }
        if problems.is_empty() {
            Ok(Self { columns, lanes, empty: Rows::for_manifest(manifest), inputs: manifest.inputs.clone().into() })
        } else {
            Err(ColumnErrors(problems))
        }
    }

    /// The manifest's input columns.
    pub fn inputs(&self) -> &[crate::core::manifest::InputColumn] {
        &self.inputs
    }

    /// Source paths of the columns read from the event (their slots are their column indices).
    pub fn paths(&self) -> impl Iterator<Item = &FieldPath> {
        self.columns.iter().filter(|c| !matches!(c.conv, Conv::Enriched(_))).map(|c| &c.path)
    }

    /// Whether any column comes from the enrich stage.
    pub fn has_enriched(&self) -> bool {
        self.columns.iter().any(|c| matches!(c.conv, Conv::Enriched(_)))
    }

    /// Empty [`Rows`] with this model's layout.
    pub fn rows(&self) -> Rows {
        self.empty.clone()
    }

    /// Each column's lane.
    pub fn lanes(&self) -> &[Lane] {
        &self.lanes
    }

    /// Fills the enriched columns of `row` from `values` (one per enrich output); a missing
    /// value takes the column's policy and its column index is pushed to `defaults`.
    pub fn fill_enriched(&self, values: &[Option<f64>], row: &mut [f32], defaults: &mut Vec<u16>) {
        for (i, (col, slot)) in self.columns.iter().zip(row.iter_mut()).enumerate() {
            let Conv::Enriched(k) = col.conv else { continue };
            // A value beyond the f32 range (a window sum of huge values) is no usable input either.
            *slot = match values.get(k).copied().flatten() {
                Some(v) if (v as f32).is_finite() => v as f32,
                _ => {
                    defaults.push(i as u16);
                    match col.missing {
                        MissingPolicy::Default(DefaultValue::Number(x)) => x,
                        _ => f32::NAN,
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

    /// Fills `row` from `event`.
    pub fn fill(&self, event: &dyn Fields, row: RowMut<'_>) -> Result<(), DecodeError> {
        for (col, slot) in self.columns.iter().zip(row.values.iter_mut()) {
            if matches!(col.conv, Conv::Enriched(_)) {
                *slot = f32::NAN;
                continue;
            }
            let cell = col.value(event.field(&col.path))?;
            *slot = match (col.lane.ty, cell) {
                (TensorType::String, Cell::Text(s)) => {
                    set_text(&mut row.texts[col.lane.index], s);
                    0.0
                }
                (TensorType::String, Cell::DefaultText(s)) => {
                    set_text(&mut row.texts[col.lane.index], s);
                    f32::NAN
                }
                (TensorType::Int64, Cell::Int(i)) => {
                    row.ints[col.lane.index] = i;
                    i as f64 as f32
                }
                (TensorType::Int64, Cell::Float(f)) => {
                    // Codes and defaults are checked integral at load; event numbers here.
                    if f.fract() != 0.0 || f.abs() > 9.007_199_254_740_992e15 {
                        return Err(col.error(DeadLetterReason::WrongType, format!("expected an integer, got {f}")));
                    }
                    row.ints[col.lane.index] = f as i64;
                    f as f32
                }
                (_, Cell::Int(i)) => i as f64 as f32,
                // A finite f64 beyond the f32 range would reach the model as ±inf.
                (_, Cell::Float(f)) if f.is_finite() && !(f as f32).is_finite() => {
                    return Err(col.error(DeadLetterReason::NonFinite, format!("is {f:e}, outside the float32 range")));
                }
                (_, Cell::Float(f)) => f as f32,
                (_, Cell::Text(_) | Cell::DefaultText(_)) => f32::NAN, // excluded by the manifest check
            };
        }
        Ok(())
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

    /// Fills one row from `event`.
    fn fill(v: &Vectorizer, event: &serde_json::Value) -> Result<Rows, DecodeError> {
        let mut rows = v.rows();
        v.fill(event, rows.push())?;
        Ok(rows)
    }

    #[test]
    fn each_column_kind_and_missing_policy_fills_its_slot() {
        let v = Vectorizer::new(&manifest(), &[]).unwrap();
        let rows = fill(&v, &json!({"amount": 12.5, "card": {"age_days": 30}, "channel": "atm", "card_present": true}))
            .unwrap();
        let row = rows.values_row(0);
        assert_eq!(row[0], 12.5);
        assert_eq!(row[1], 30.0);
        assert!(row[2].is_nan());
        assert_eq!(row[3], 9.0, "unknown category gets the unknown code");
        assert_eq!(row[4], 1.0);
        let rows = fill(&v, &json!({"amount": 1, "channel": null})).unwrap();
        let row = rows.values_row(0);
        assert_eq!((row[1], row[3], row[4]), (-1.0, -1.0, 0.0));
    }

    #[test]
    fn bad_values_name_the_column_and_reason() {
        let v = Vectorizer::new(&manifest(), &[]).unwrap();
        let e = fill(&v, &json!({"amount": "12"})).unwrap_err();
        assert_eq!(e.reason, DeadLetterReason::WrongType);
        assert!(e.detail.contains("'amount'"), "{}", e.detail);
        let e = fill(&v, &json!({"card": {}})).unwrap_err();
        assert_eq!(e.reason, DeadLetterReason::MissingField);
        assert!(e.detail.contains("'amount'"));
    }

    #[test]
    fn a_number_beyond_the_float32_range_is_non_finite_whatever_the_missing_policy() {
        let v = Vectorizer::new(&manifest(), &[]).unwrap();
        for (event, column) in [
            (json!({"amount": 1e308}), "'amount'"),
            (json!({"amount": -3.5e38}), "'amount'"),
            (json!({"amount": 1, "distance_km": 3.5e38}), "'dist'"),
            (json!({"amount": 1, "card": {"age_days": -1e300}}), "'age'"),
        ] {
            let e = fill(&v, &event).unwrap_err();
            assert_eq!(e.reason, DeadLetterReason::NonFinite, "{event}");
            assert!(e.detail.contains(column) && e.detail.contains("outside the float32 range"), "{}", e.detail);
        }
        let rows = fill(&v, &json!({"amount": 3.4e38})).unwrap();
        assert_eq!(rows.values_row(0)[0], 3.4e38f32, "the f32 range itself is fine");
    }

    #[test]
    fn a_level_on_the_way_that_is_not_an_object_is_wrong_type_naming_it() {
        let v = Vectorizer::new(&manifest(), &[]).unwrap();
        for (card, got) in
            [(json!("oops"), "string"), (json!(3), "number"), (json!(false), "boolean"), (json!([]), "array")]
        {
            let e = fill(&v, &json!({"amount": 1, "card": card})).unwrap_err();
            assert_eq!(e.reason, DeadLetterReason::WrongType);
            assert_eq!(
                e.detail,
                format!("column 'age' (card.age_days): field 'card' (on the way to 'card.age_days') expected an object, got {got}")
            );
        }
        let rows = fill(&v, &json!({"amount": 1, "card": null})).unwrap();
        assert_eq!(rows.values_row(0)[1], -1.0, "a null level is missing: the default applies");
    }

    #[test]
    fn an_enriched_value_beyond_the_float32_range_takes_the_missing_policy() {
        let m: Manifest = serde_json::from_value(json!({
            "name": "t", "version": "1", "model_file": "m.onnx", "input_name": "input", "output_name": "probabilities",
            "inputs": [{"name": "sum", "source": "window:card.10m.sum", "kind": "number", "missing": {"default": -1.0}}]
        }))
        .unwrap();
        let v = Vectorizer::new(&m, &["window:card.10m.sum".to_string()]).unwrap();
        let (mut row, mut defaults) = ([0f32], Vec::new());
        v.fill_enriched(&[Some(1e300)], &mut row, &mut defaults);
        assert_eq!((row[0], defaults), (-1.0, vec![0]));
    }

    #[test]
    fn f64_rounds_to_nearest_f32() {
        let v = Vectorizer::new(&manifest(), &[]).unwrap();
        let rows = fill(&v, &json!({"amount": 0.1})).unwrap();
        assert_eq!(rows.values_row(0)[0].to_bits(), 0.1f32.to_bits());
    }

    fn typed() -> Manifest {
        serde_json::from_value(json!({
            "name": "t", "version": "1", "model_file": "m.onnx", "output_name": "probabilities",
            "inputs": [
                {"name": "amount", "source": "amount", "kind": "number"},
                {"name": "merchant_category", "source": "merchant_category", "kind": "string", "missing": {"default": "none"}},
                {"name": "big_id", "source": "ids.big", "kind": "number", "missing": {"default": 0.0}},
                {"name": "hour", "source": "event_time", "kind": "timestamp", "part": "hour", "timezone": "Asia/Kolkata"},
                {"name": "dow", "source": "event_time", "kind": "timestamp", "part": "dow", "timezone": "America/New_York"},
                {"name": "device_type", "source": "device.type", "kind": "string", "missing": "reject"}
            ],
            "graph_inputs": [
                {"name": "num", "type": "float32", "columns": ["amount"]},
                {"name": "cats", "type": "string", "columns": ["device_type", "merchant_category"]},
                {"name": "ints", "type": "int64", "columns": ["hour", "dow", "big_id"]}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn typed_columns_land_in_their_lanes_exactly() {
        let m = typed();
        assert!(m.problems().is_empty(), "{:?}", m.problems());
        let v = Vectorizer::new(&m, &[]).unwrap();
        // 2026-11-29T23:30:00Z: 05:00 Monday in Kolkata, 18:30 Sunday in New York.
        let t = 1_795_995_000_000i64;
        let e = json!({"amount": 3.5, "merchant_category": "crypto", "ids": {"big": 9_007_199_254_740_993i64},
                       "event_time": t, "device": {"type": "tv"}});
        let rows = fill(&v, &e).unwrap();
        assert_eq!((rows.width(), rows.int_width(), rows.text_width()), (6, 3, 2));
        assert_eq!(rows.texts_row(0), ["crypto".to_string(), "tv".to_string()]);
        assert_eq!(&rows.ints()[..3], &[9_007_199_254_740_993, 5, 6], "exact beyond 2^53; hour, dow in their zones");
        let json = rows.row_json(v.lanes(), 0);
        assert_eq!(
            json,
            vec![json!(3.5), json!("crypto"), json!(9_007_199_254_740_993i64), json!(5), json!(6), json!("tv")]
        );
        // A missing string column takes its text default (its f32 value is NaN for drift).
        let rows = fill(&v, &json!({"amount": 1, "event_time": t, "device": {"type": "tv"}})).unwrap();
        assert_eq!(rows.texts_row(0)[0], "none");
        assert!(rows.values_row(0)[1].is_nan());
    }

    #[test]
    fn typed_bad_values_name_the_column() {
        let v = Vectorizer::new(&typed(), &[]).unwrap();
        let t = 1_795_995_000_000i64;
        let e = fill(&v, &json!({"amount": 1, "event_time": t})).unwrap_err();
        assert_eq!(e.reason, DeadLetterReason::MissingField);
        assert!(e.detail.contains("'device_type'"), "{}", e.detail);
        let e = fill(&v, &json!({"amount": 1, "event_time": t, "device": {"type": 3}})).unwrap_err();
        assert_eq!(e.reason, DeadLetterReason::WrongType);
        assert!(e.detail.contains("'device_type'") && e.detail.contains("expected string"), "{}", e.detail);
        let e = fill(&v, &json!({"amount": 1, "event_time": t, "ids": {"big": 1.5}, "device": {"type": "tv"}}))
            .unwrap_err();
        assert_eq!(e.reason, DeadLetterReason::WrongType);
        assert!(e.detail.contains("'big_id'") && e.detail.contains("integer"), "{}", e.detail);
        // Beyond i64 (or beyond exact f64 integers) is not an integer either.
        for big in [json!(1e30), json!(18_446_744_073_709_551_615u64), json!(-9.3e18), json!(1e17)] {
            let event = json!({"amount": 1, "event_time": t, "ids": {"big": big}, "device": {"type": "tv"}});
            let e = fill(&v, &event).unwrap_err();
            assert_eq!(e.reason, DeadLetterReason::WrongType, "{big}");
            assert!(e.detail.contains("'big_id'") && e.detail.contains("expected an integer"), "{}", e.detail);
        }
        let e = fill(&v, &json!({"amount": 1, "event_time": "noon", "device": {"type": "tv"}})).unwrap_err();
        assert!(e.detail.contains("'hour'") && e.detail.contains("epoch milliseconds"), "{}", e.detail);
    }

    #[test]
    fn graph_input_mistakes_are_all_listed() {
        let mut m = typed();
        m.graph_inputs[0].columns.push("merchant_category".into()); // string into float, fed twice
        m.graph_inputs[2].columns.retain(|c| c != "big_id"); // not fed
        m.graph_inputs[2].columns.push("ghost".into());
        m.inputs[3].timezone = Some("Mars/Olympus".into());
        m.input_name = Some("input".into());
        let p = m.problems().join("\n");
        for needle in [
            "not both",
            "'merchant_category' is fed to both",
            "string column; graph input 'num' is float32",
            "'big_id' is not fed",
            "'ghost' is not in inputs",
            "unknown timezone 'Mars/Olympus'",
        ] {
            assert!(p.contains(needle), "missing '{needle}' in:\n{p}");
        }
    }

    #[test]
    fn class_mistakes_are_all_listed() {
        let mut m = typed();
        m.classes = vec!["sports".into(), "sports".into(), "a.b".into()];
        m.top_k = 4;
        m.min_score = f32::NAN;
        let p = m.problems().join("\n");
        for needle in [
            "classes[1] ('sports'): named twice",
            "classes[2] ('a.b'): use letters, digits",
            "top_k: 4 must be between 1 and the 3 classes",
            "min_score: must be a finite number",
        ] {
            assert!(p.contains(needle), "missing '{needle}' in:\n{p}");
        }
    }
}
