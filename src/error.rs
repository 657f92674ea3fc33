//! What to do about a failure: every stage error maps to one [`Policy`].
//!
//! * `Retry`: transient (broker timeout, queue full); the same work is tried again.
//! * `DeadLetter`: this event is bad; it is written to the dead-letter topic with its
//!   [`DeadLetterReason`] and its offset advances.
//! * `Fatal`: configuration or model broken; the process refuses to start or stops.

use std::fmt;

/// The action a stage error calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Transient: try the same work again after a backoff.
    Retry,
    /// The event is bad: route it to the dead-letter topic and move on.
    DeadLetter,
    /// Nothing sensible can continue: refuse to start or stop the pipeline.
    Fatal,
}

/// Implemented by every stage error so the pipeline can act on it uniformly.
pub trait StageError: std::error::Error {
    /// What the pipeline should do about this error.
    fn policy(&self) -> Policy;
}

/// Why an event went to the dead-letter topic. The `code` is a stable label used in
/// the `verdict.dlq.reason` header and the `reason` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterReason {
    /// The message had no payload.
    EmptyPayload,
    /// The payload exceeded `decode.max_payload_bytes`.
    Oversize,
    /// Not valid JSON / not a decodable Avro datum.
    Malformed,
    /// Confluent header present but too short.
    BadWireFormat,
    /// The Confluent schema id is not configured.
    UnknownSchemaId,
    /// A required field is absent or null.
    MissingField,
    /// A field has a type the mapping cannot use.
    WrongType,
    /// NaN or ±infinity where a finite number is required (or a finite number beyond
    /// the model input's range, such as above f32::MAX).
    NonFinite,
    /// The event time is outside `decode.event_time_min_ms` .. now + `event_time_max_ahead_ms`.
    BadEventTime,
    /// verdict itself failed on this event (a caught panic, or scoring that failed through its
    /// retries); the detail has the message.
    InternalError,
    /// An output record for this event was refused by the broker for good (too large,
    /// invalid record, refused by a topic policy); the refused record is attached.
    OutputRefused,
}

impl DeadLetterReason {
    /// Every reason, for pre-registering metric labels.
    pub const ALL: [DeadLetterReason; 11] = [
        Self::EmptyPayload,
        Self::Oversize,
        Self::Malformed,
        Self::BadWireFormat,
        Self::UnknownSchemaId,
        Self::MissingField,
        Self::WrongType,
        Self::NonFinite,
        Self::BadEventTime,
        Self::InternalError,
        Self::OutputRefused,
    ];

    /// Stable snake_case label.
    pub fn code(self) -> &'static str {
        match self {
            Self::EmptyPayload => "empty_payload",
            Self::Oversize => "oversize",
            Self::Malformed => "malformed",
            Self::BadWireFormat => "bad_wire_format",
            Self::UnknownSchemaId => "unknown_schema_id",
            Self::MissingField => "missing_field",
            Self::WrongType => "wrong_type",
            Self::NonFinite => "non_finite",
            Self::BadEventTime => "bad_event_time",
            Self::InternalError => "internal_error",
            Self::OutputRefused => "output_refused",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
