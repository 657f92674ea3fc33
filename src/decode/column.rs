//! One manifest input column, compiled: where it reads the event, how it converts the
//! value (`Conv`), what a missing value becomes, and which lane of the row it writes.
//! The [`Vectorizer`](super::Vectorizer) runs these over an event.

use std::collections::HashMap;

use super::fields::{Field, FieldPath};
use super::DecodeError;
use crate::core::manifest::{ColumnKind, DefaultValue, InputColumn, Lane, MissingPolicy, TimePart};
use crate::error::DeadLetterReason;

/// Why a manifest column cannot be compiled; each names its column.
#[derive(Debug, thiserror::Error)]
pub enum ColumnError {
    /// A timestamp column names a time zone jiff does not know.
    #[error("column '{column}': timezone '{zone}': {source}")]
    Timezone {
        /// The column.
        column: String,
        /// The zone as written.
        zone: String,
        /// jiff's error.
        source: jiff::Error,
    },
    /// An enriched source the enrich config does not produce.
    #[error("column '{column}': source '{name}' is not produced by the enrich config (it produces {produced})")]
    NotEnriched {
        /// The column.
        column: String,
        /// Its source.
        name: String,
        /// What the enrich config produces (`nothing`, or the names joined by `, `).
        produced: String,
    },
    /// An enriched column set to reject missing values (enriched values may always be missing).
    #[error("column '{column}': an enriched column cannot use missing = reject")]
    EnrichedRejects {
        /// The column.
        column: String,
    },
    /// An enriched column that is not a number feeding a float32 input.
    #[error("column '{column}': an enriched column is a number feeding a float32 input")]
    EnrichedNotFloat {
        /// The column.
        column: String,
    },
}

/// Every column of a manifest that cannot be compiled (shown joined by `; `).
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ColumnErrors(pub Vec<ColumnError>);

#[derive(Debug, Clone)]
pub(super) enum Conv {
    Number,
    Bool,
    Lookup {
        table: HashMap<String, f32>,
        unknown: f32,
    },
    Timestamp {
        part: TimePart,
        zone: jiff::tz::TimeZone,
    },
    Text,
    /// Filled by the enrich stage: index into `enrich::Enricher::names`.
    Enriched(usize),
}

#[derive(Debug, Clone)]
pub(super) struct Column {
    pub(super) name: String,
    pub(super) path: FieldPath,
    pub(super) conv: Conv,
    pub(super) missing: MissingPolicy,
    pub(super) lane: Lane,
}

/// A column's value before it is written to its lane.
pub(super) enum Cell<'a> {
    Float(f64),
    Int(i64),
    Text(&'a str),
    /// The missing-value default of a string column.
    DefaultText(&'a str),
}

pub(super) fn set_text(slot: &mut String, s: &str) {
    slot.clear();
    slot.push_str(s);
}

pub(super) fn compile(c: &InputColumn, slot: usize, lane: Lane) -> Result<Column, ColumnError> {
    let conv = match c.kind {
        ColumnKind::Number => Conv::Number,
        ColumnKind::Bool => Conv::Bool,
        ColumnKind::Lookup => Conv::Lookup {
            table: c.table.clone().unwrap_or_default().into_iter().collect(),
            unknown: c.unknown.unwrap_or(-1.0),
        },
        ColumnKind::Timestamp => {
            let name = c.timezone.as_deref().unwrap_or("UTC");
            let zone = jiff::tz::TimeZone::get(name).map_err(|source| ColumnError::Timezone {
                column: c.name.clone(),
                zone: name.to_string(),
                source,
            })?;
            Conv::Timestamp { part: c.part.unwrap_or(TimePart::Hour), zone }
        }
        ColumnKind::String => Conv::Text,
    };
    Ok(Column {
        name: c.name.clone(),
        path: FieldPath::parse(&c.source).with_slot(slot),
        conv,
        missing: c.missing.clone(),
        lane,
    })
}

impl Column {
    pub(super) fn value<'a>(&'a self, field: Field<'a>) -> Result<Cell<'a>, DecodeError> {
        match (&self.conv, field) {
            (_, Field::Blocked { depth, found }) => Err(DecodeError {
                reason: DeadLetterReason::WrongType,
                detail: format!("column '{}' ({}): {}", self.name, self.path.as_str(), self.path.blocked(depth, found)),
            }),
            (_, Field::Missing | Field::Null) => match &self.missing {
                MissingPolicy::Nan => Ok(Cell::Float(f64::NAN)),
                MissingPolicy::Default(DefaultValue::Number(x)) => Ok(Cell::Float(f64::from(*x))),
                MissingPolicy::Default(DefaultValue::Text(s)) => Ok(Cell::DefaultText(s)),
                MissingPolicy::Reject => Err(self.error(DeadLetterReason::MissingField, "is missing or null".into())),
            },
            (Conv::Number, Field::Int(i)) => Ok(Cell::Int(i)),
            (Conv::Number, Field::Float(f)) if f.is_finite() => Ok(Cell::Float(f)),
            (Conv::Number, Field::Float(f)) => Err(self.error(DeadLetterReason::NonFinite, format!("is {f}"))),
            (Conv::Bool, Field::Bool(b)) => Ok(Cell::Int(i64::from(b))),
            (Conv::Lookup { table, unknown }, Field::Str(s)) => {
                Ok(Cell::Float(f64::from(*table.get(s).unwrap_or(unknown))))
            }
            (Conv::Text, Field::Str(s)) => Ok(Cell::Text(s)),
            (Conv::Timestamp { part, zone }, Field::Int(ms)) => {
                let t = jiff::Timestamp::from_millisecond(ms).map_err(|e| {
                    self.error(DeadLetterReason::WrongType, format!("is not a valid epoch-ms time: {e}"))
                })?;
                let dt = zone.to_datetime(t);
                Ok(Cell::Int(match part {
                    TimePart::Hour => i64::from(dt.hour()),
                    TimePart::Dow => i64::from(dt.weekday().to_monday_zero_offset()),
                    TimePart::Day => i64::from(dt.day()),
                    TimePart::Month => i64::from(dt.month()),
                    TimePart::Minute => i64::from(dt.minute()),
                }))
            }
            (conv, other) => {
                let want = match conv {
                    Conv::Number | Conv::Enriched(_) => "number",
                    Conv::Bool => "boolean",
                    Conv::Lookup { .. } | Conv::Text => "string",
                    Conv::Timestamp { .. } => "epoch milliseconds",
                };
                Err(self.error(DeadLetterReason::WrongType, format!("expected {want}, got {}", other.type_name())))
            }
        }
    }

    pub(super) fn error(&self, reason: DeadLetterReason, what: String) -> DecodeError {
        DecodeError { reason, detail: format!("column '{}' ({}) {what}", self.name, self.path.as_str()) }
    }
}
