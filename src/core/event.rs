//! What the decode stage hands on: one event's identity and the values the later stages
//! read ([`DecodedEvent`], with an [`EntityInput`] per configured entity), or why it could
//! not be decoded ([`DecodeError`]); and what the enrich stage asks the decoder to extract
//! ([`EntityPaths`]).
//!
//! In `core` because decode produces these and enrich consumes them (and enrich tells
//! decode which paths to read): with the types here, neither stage imports the other.

use super::field::{FieldPath, FieldValue};
use crate::error::{DeadLetterReason, Policy, StageError};

/// Why one message could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct DecodeError {
    /// Dead-letter reason code.
    pub reason: DeadLetterReason,
    /// Human-readable detail (names the field or column).
    pub detail: String,
}

impl StageError for DecodeError {
    fn policy(&self) -> Policy {
        Policy::DeadLetter
    }
}

/// An id or key read from an event: held inline up to 24 bytes (no heap allocation per
/// event for the ids real events carry), a `&str` wherever it is read.
pub type Id = compact_str::CompactString;

/// Identity of a decoded event; its model row is written into the batch matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedEvent {
    /// Unique event id.
    pub event_id: Id,
    /// Entity key (decisions are keyed by it).
    pub entity_key: Id,
    /// Event time, ms since epoch.
    pub event_time_ms: i64,
    /// Per configured entity: id, value and distinct fields for the enrich stage.
    pub entities: Entities,
    /// The event fields the rules read, in `decode::Decoder::set_rule_paths` order.
    pub fields: Vec<FieldValue>,
}

/// The largest magnitude a window value may have: sums of up to 2^64 such values stay
/// finite, so window sums are always exact (see `enrich/window/exact.rs`). The decoder
/// dead-letters larger ones (`non_finite`, naming the field).
pub const WINDOW_VALUE_LIMIT: f64 = 1e288;

/// Inline [`EntityInput`]s per event (no heap allocation for up to this many entities).
const INLINE_ENTITIES: usize = 2;

/// An event's [`EntityInput`]s, one per configured entity, in config order.
pub type Entities = smallvec::SmallVec<[EntityInput; INLINE_ENTITIES]>;

/// What the decoder extracts per event, per entity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityInput {
    /// Entity id (None: the event has no such entity; its values are missing).
    pub id: Option<Id>,
    /// The value field: finite, at most [`WINDOW_VALUE_LIMIT`] in magnitude.
    pub value: Option<f64>,
    /// The distinct field.
    pub distinct: Option<Id>,
}

/// Between the parts of a composite entity id ([`EntityPaths::more_keys`]).
pub const KEY_SEPARATOR: char = '\u{1f}';

/// Paths the decoder must extract for enrichment, per entity.
#[derive(Debug, Clone)]
pub struct EntityPaths {
    /// Entity id.
    pub key: FieldPath,
    /// Further parts of a composite id (a Feast entity with several join keys): the id is
    /// every part's value joined by [`KEY_SEPARATOR`], missing when any part is.
    pub more_keys: Vec<FieldPath>,
    /// Value field.
    pub value: Option<FieldPath>,
    /// Distinct field.
    pub distinct: Option<FieldPath>,
}
