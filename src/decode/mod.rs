//! Decode stage: raw bytes → identity fields + the model's input row.
//!
//! JSON, or Avro in the Confluent wire format (0x00, 4-byte big-endian schema id,
//! binary datum) with writer schemas from a [`SchemaSource`]. Anything that cannot be
//! decided becomes a [`DecodeError`] carrying its [`DeadLetterReason`]; nothing panics.
//!
//! Takes a message's payload bytes; hands on a [`DecodedEvent`] (identity, entity inputs,
//! the fields the rules read) and the event's model row, written into the batch's [`Rows`].
//! Both types live in [`crate::core`], so the stages after this one never import it.
//!
//! Files: [`schemas`] (writer schemas), [`fields`] (JSON/Avro field lookup), [`json`] and
//! [`json_check`] (single-pass JSON extraction, error detail), [`vectorize`] and `column.rs`
//! (the manifest's columns → the row), [`config`] (`decode.*`).

mod column;
pub mod config;
pub mod fields;
pub mod json;
pub mod json_check;
pub mod registry;
pub mod schemas;
pub mod stage;
pub mod vectorize;

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::Schema;
use compact_str::ToCompactString;

pub use column::{ColumnError, ColumnErrors};
pub use config::{DecodeConfig, FieldMapping, PayloadFormat};
pub use fields::{Field, FieldPath, Fields};
pub use schemas::{parse_schema_file, LocalSchemas, SchemaErrors, SchemaFileError, SchemaSource, SchemaUnavailable};
pub use vectorize::{RowMut, Rows, Vectorizer};

pub use crate::core::event::{DecodeError, DecodedEvent};
use crate::core::event::{EntityInput, EntityPaths, Id, KEY_SEPARATOR, WINDOW_VALUE_LIMIT};
use crate::core::field::field_value;
use crate::error::DeadLetterReason;

fn err(reason: DeadLetterReason, detail: impl Into<String>) -> DecodeError {
    DecodeError { reason, detail: detail.into() }
}

/// Decodes messages of one batch. Built once per worker; cheap to call per message.
pub struct Decoder {
    format: PayloadFormat,
    max_payload: usize,
    /// `decode.event_time_min_ms`.
    time_min_ms: i64,
    /// `decode.event_time_max_ahead_ms` (0: no upper bound).
    time_max_ahead_ms: i64,
    schemas: Arc<dyn SchemaSource>,
    event_id: FieldPath,
    entity_key: FieldPath,
    event_time: FieldPath,
    vectorizer: Vectorizer,
    entities: Vec<EntityPaths>,
    rule_fields: Vec<FieldPath>,
    /// Every path but the rules', with its slot (the trie is rebuilt when rules change).
    base_paths: Vec<FieldPath>,
    next_slot: usize,
    json: json::PathTrie,
}

impl Decoder {
    /// Builds a decoder from config and the model's column spec.
    /// `entities` are the enrich stage's per-entity paths (empty when enrichment is off).
    pub fn new(
        cfg: &DecodeConfig,
        schemas: Arc<dyn SchemaSource>,
        vectorizer: Vectorizer,
        entities: Vec<EntityPaths>,
    ) -> Self {
        let w = vectorizer.width();
        let event_id = FieldPath::parse(&cfg.fields.event_id).with_slot(w);
        let entity_key = FieldPath::parse(&cfg.fields.entity_key).with_slot(w + 1);
        let event_time = FieldPath::parse(&cfg.fields.event_time).with_slot(w + 2);
        let mut next = w + 3;
        let mut slot = |p: FieldPath| {
            next += 1;
            p.with_slot(next - 1)
        };
        let mut slotted = Vec::with_capacity(entities.len());
        for e in entities {
            let key = slot(e.key);
            let more_keys = e.more_keys.into_iter().map(&mut slot).collect();
            let value = e.value.map(&mut slot);
            let distinct = e.distinct.map(&mut slot);
            slotted.push(EntityPaths { key, more_keys, value, distinct });
        }
        let entities = slotted;
        let mut paths: Vec<&FieldPath> = vectorizer.paths().chain([&event_id, &entity_key, &event_time]).collect();
        for e in &entities {
            paths.push(&e.key);
            paths.extend(&e.more_keys);
            paths.extend(e.value.iter().chain(e.distinct.iter()));
        }
        let base_paths: Vec<FieldPath> = paths.into_iter().cloned().collect();
        let json = json::PathTrie::new(&base_paths);
        Self {
            format: cfg.format,
            max_payload: cfg.max_payload_bytes,
            time_min_ms: cfg.event_time_min_ms,
            time_max_ahead_ms: cfg.event_time_max_ahead_ms,
            schemas,
            event_id,
            entity_key,
            event_time,
            vectorizer,
            entities,
            rule_fields: Vec::new(),
            base_paths,
            next_slot: next,
            json,
        }
    }

    /// Sets the event paths the rules read (a new rules version may read others).
    pub fn set_rule_paths(&mut self, paths: &[String]) {
        self.rule_fields =
            paths.iter().enumerate().map(|(i, p)| FieldPath::parse(p).with_slot(self.next_slot + i)).collect();
        self.json = json::PathTrie::new(self.base_paths.iter().chain(&self.rule_fields));
    }

    /// The Confluent schema id of `payload` if it is decoded as Avro.
    pub fn avro_schema_id(&self, payload: &[u8]) -> Option<u32> {
        let avro = match self.format {
            PayloadFormat::Avro => true,
            PayloadFormat::Json => false,
            PayloadFormat::Auto => payload.first() == Some(&0),
        };
        match payload {
            [0, a, b, c, d, ..] if avro => Some(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => None,
        }
    }

    /// Resolves writer schema `id` now (a remote source fetches it), or says why it cannot.
    pub fn resolve_schema(&self, id: u32) -> Result<(), SchemaUnavailable> {
        self.schemas.resolve(id).map(drop)
    }

    /// Width of the model row.
    pub fn width(&self) -> usize {
        self.vectorizer.width()
    }

    /// Empty rows with the model's layout.
    pub fn rows(&self) -> Rows {
        self.vectorizer.rows()
    }

    /// Starts decoding one batch (caches Avro readers for the batch's schema ids); event
    /// times are checked against the wall clock read now, once for the batch.
    pub fn batch(&self) -> BatchDecoder<'_> {
        self.batch_at(crate::core::clock::wall_clock_ms())
    }

    /// Starts decoding one batch as if the wall clock read `now_ms` (replays, tests).
    pub fn batch_at(&self, now_ms: i64) -> BatchDecoder<'_> {
        let time_max_ms = (self.time_max_ahead_ms > 0).then(|| now_ms.saturating_add(self.time_max_ahead_ms));
        BatchDecoder { decoder: self, schemas: HashMap::new(), time_max_ms }
    }
}

/// Decoder state for one batch: resolved Avro schemas are reused across its messages.
pub struct BatchDecoder<'d> {
    decoder: &'d Decoder,
    schemas: HashMap<u32, Option<Arc<Schema>>>,
    /// Latest event time accepted in this batch (wall clock + allowed lead), if bounded.
    time_max_ms: Option<i64>,
}

impl BatchDecoder<'_> {
    /// Decodes `payload`, writing the model row into `row` (left partly written on error).
    pub fn decode(&mut self, payload: Option<&[u8]>, row: RowMut<'_>) -> Result<DecodedEvent, DecodeError> {
        let d = self.decoder;
        let bytes = match payload {
            None | Some([]) => return Err(err(DeadLetterReason::EmptyPayload, "message has no payload")),
            Some(b) => b,
        };
        if bytes.len() > d.max_payload {
            return Err(err(
                DeadLetterReason::Oversize,
                format!("payload is {} bytes, limit is {}", bytes.len(), d.max_payload),
            ));
        }
        let avro = match d.format {
            PayloadFormat::Avro => true,
            PayloadFormat::Json => false,
            PayloadFormat::Auto => bytes[0] == 0,
        };
        let event = if avro {
            let value = self.decode_avro(bytes)?;
            extract(d, &value, row)?
        } else {
            let text = json_check::text(bytes)?;
            if !text.trim_start().starts_with('{') {
                return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                    Ok(_) => err(DeadLetterReason::WrongType, "JSON payload is not an object"),
                    Err(e) => json_check::error(bytes, e),
                });
            }
            let fields = d.json.extract(text).map_err(|e| json_check::error(bytes, e))?;
            extract(d, &fields, row)?
        };
        // Last, so an event that is bad for another reason is dead-lettered for that reason.
        self.check_time(event.event_time_ms)?;
        Ok(event)
    }

    fn check_time(&self, t: i64) -> Result<(), DecodeError> {
        let d = self.decoder;
        let path = d.event_time.as_str();
        if t < d.time_min_ms {
            return Err(err(
                DeadLetterReason::BadEventTime,
                format!(
                    "field '{path}' is {t}{}, before decode.event_time_min_ms {}{}",
                    iso(t),
                    d.time_min_ms,
                    iso(d.time_min_ms)
                ),
            ));
        }
        match self.time_max_ms {
            Some(max) if t > max => Err(err(
                DeadLetterReason::BadEventTime,
                format!(
                    "field '{path}' is {t}{}, after the wall clock plus decode.event_time_max_ahead_ms ({} ms): {max}{}",
                    iso(t),
                    d.time_max_ahead_ms,
                    iso(max)
                ),
            )),
            _ => Ok(()),
        }
    }

    fn decode_avro(&mut self, bytes: &[u8]) -> Result<apache_avro::types::Value, DecodeError> {
        if bytes.len() < 5 || bytes[0] != 0 {
            return Err(err(DeadLetterReason::BadWireFormat, "expected Confluent header: 0x00 + 4-byte schema id"));
        }
        let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let source = &self.decoder.schemas;
        let schema = match self.schemas.get(&id) {
            Some(s) => s.clone(),
            None => {
                // Unavailable here only where the stage could not wait for the registry.
                let s = source.resolve(id).map_err(|e| {
                    err(DeadLetterReason::UnknownSchemaId, format!("schema id {id}: schema registry unavailable: {e}"))
                })?;
                self.schemas.insert(id, s.clone());
                s
            }
        }
        .ok_or_else(|| err(DeadLetterReason::UnknownSchemaId, format!("schema id {id} is not configured")))?;
        let reader = GenericDatumReader::builder(&schema)
            .build()
            .map_err(|e| err(DeadLetterReason::UnknownSchemaId, format!("schema id {id}: {e}")))?;
        let mut body = &bytes[5..];
        let value = reader
            .read_value(&mut body)
            .map_err(|e| err(DeadLetterReason::Malformed, format!("Avro datum (schema id {id}): {e}")))?;
        if !body.is_empty() {
            return Err(err(DeadLetterReason::Malformed, format!("{} trailing bytes after Avro datum", body.len())));
        }
        Ok(value)
    }
}

/// ` (2000-01-01T00:00:00Z)` for epoch milliseconds jiff can represent, else nothing.
fn iso(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| format!(" ({t})")).unwrap_or_default()
}

/// A path that runs through a non-object: `wrong_type`, naming where it stopped.
fn blocked(path: &FieldPath, depth: usize, found: &str) -> DecodeError {
    err(DeadLetterReason::WrongType, path.blocked(depth, found))
}

fn extract(d: &Decoder, event: &dyn Fields, row: RowMut<'_>) -> Result<DecodedEvent, DecodeError> {
    let event_id = identity(event.field(&d.event_id), &d.event_id)?;
    let entity_key = identity(event.field(&d.entity_key), &d.entity_key)?;
    let event_time_ms = match event.field(&d.event_time) {
        Field::Int(ms) => ms,
        Field::Missing | Field::Null => {
            return Err(err(DeadLetterReason::MissingField, format!("field '{}' is missing", d.event_time.as_str())))
        }
        Field::Blocked { depth, found } => return Err(blocked(&d.event_time, depth, found)),
        other => {
            return Err(err(
                DeadLetterReason::WrongType,
                format!("field '{}' expected epoch milliseconds, got {}", d.event_time.as_str(), other.type_name()),
            ))
        }
    };
    d.vectorizer.fill(event, row)?;
    let entities = d.entities.iter().map(|p| entity_input(event, p)).collect::<Result<_, _>>()?;
    let fields = d.rule_fields.iter().map(|p| field_value(event.field(p))).collect();
    Ok(DecodedEvent { event_id, entity_key, event_time_ms, entities, fields })
}

fn entity_input(event: &dyn Fields, p: &EntityPaths) -> Result<EntityInput, DecodeError> {
    let part = |k: &FieldPath| match event.field(k) {
        Field::Missing | Field::Null => Ok(None),
        f => identity(f, k).map(Some),
    };
    let mut id = part(&p.key)?;
    for k in &p.more_keys {
        id = match (id, part(k)?) {
            (Some(mut id), Some(part)) => {
                id.push(KEY_SEPARATOR);
                id.push_str(&part);
                Some(id)
            }
            _ => None,
        };
    }
    let value = match p.value.as_ref().map(|v| (v, event.field(v))) {
        Some((_, Field::Int(i))) => Some(i as f64),
        Some((_, Field::Float(f))) if f.abs() <= WINDOW_VALUE_LIMIT => Some(f),
        Some((v, Field::Float(f))) if f.is_finite() => {
            return Err(err(
                DeadLetterReason::NonFinite,
                format!("window value field '{}' is {f:e}, beyond ±{WINDOW_VALUE_LIMIT:e}", v.as_str()),
            ))
        }
        Some((v, Field::Float(f))) => {
            return Err(err(DeadLetterReason::NonFinite, format!("window value field '{}' is {f}", v.as_str())))
        }
        Some((v, Field::Blocked { depth, found })) => return Err(blocked(v, depth, found)),
        _ => None,
    };
    let distinct = match p.distinct.as_ref().map(|d| (d, event.field(d))) {
        Some((_, Field::Str(s))) => Some(Id::from(s)),
        Some((_, Field::Int(i))) => Some(i.to_compact_string()),
        Some((d, Field::Blocked { depth, found })) => return Err(blocked(d, depth, found)),
        _ => None,
    };
    Ok(EntityInput { id, value, distinct })
}

fn identity(f: Field<'_>, path: &FieldPath) -> Result<Id, DecodeError> {
    match f {
        Field::Str(s) if !s.is_empty() => Ok(Id::from(s)),
        Field::Int(i) => Ok(i.to_compact_string()),
        Field::Missing | Field::Null | Field::Str(_) => {
            Err(err(DeadLetterReason::MissingField, format!("field '{}' is missing", path.as_str())))
        }
        Field::Blocked { depth, found } => Err(blocked(path, depth, found)),
        other => Err(err(
            DeadLetterReason::WrongType,
            format!("field '{}' expected string or integer, got {}", path.as_str(), other.type_name()),
        )),
    }
}

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
