//! What a produce error calls for, and how a dead-letter copy is made to fit.
//!
//! librdkafka refuses a record larger than the producer's `message.max.bytes` (1,000,000 by
//! default) at enqueue time, and a broker refuses one larger than the topic's limit at
//! delivery. Retrying either can never succeed, so such errors are told apart from the
//! transient ones (broker down, queue full, timeouts), which are retried with a bounded
//! backoff. A dead-letter copy carries the original bytes; when they do not fit, the copy is
//! cut to fit and says so in its headers, with the original size and sha256.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use sha2::{Digest, Sha256};

/// librdkafka's default `message.max.bytes`.
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// Room kept for the record batch and record framing librdkafka adds to key, value and
/// headers (61-byte v2 batch header plus varints) and for verdict's own headers.
const FRAMING: usize = 1024;

/// Header on a truncated dead-letter copy: `true`.
pub const DLQ_TRUNCATED: &str = "verdict.dlq.truncated";
/// Header on a truncated dead-letter copy: the original payload's size in bytes.
pub const DLQ_ORIGINAL_SIZE: &str = "verdict.dlq.original_size";
/// Header on a truncated dead-letter copy: hex sha256 of the original payload.
pub const DLQ_ORIGINAL_SHA256: &str = "verdict.dlq.original_sha256";
/// Header on a dead-letter copy whose original headers did not fit: how many were dropped.
pub const DLQ_HEADERS_DROPPED: &str = "verdict.dlq.headers_dropped";

/// The longest detail text a dead-letter record carries (the rest is cut, marked `…`).
pub const MAX_DETAIL_BYTES: usize = 1024;

/// How a produce error is handled. Transient errors are an explicit list; so are the
/// per-record refusals; anything else stops the pipeline with the error (a crash loop an
/// operator sees beats records skipped or retried in silence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Transient (broker unreachable, queue full, timeout, leader change): try again after
    /// a bounded backoff.
    Retryable,
    /// This record can never be accepted (too large, invalid, refused by a topic policy):
    /// handled by `publish.on_refused`, never retried.
    Refused,
    /// Nothing can be produced as configured (topic unknown or not writable, producer fenced
    /// or its idempotence state lost, unsupported compression, an unlisted code): the
    /// pipeline stops and `verdict run` exits non-zero with the error.
    Fatal,
}

/// Classifies a produce or delivery error.
pub fn classify(error: &KafkaError) -> Class {
    use RDKafkaErrorCode as C;
    let code = match error {
        KafkaError::MessageProduction(c) => *c,
        KafkaError::ClientCreation(_) | KafkaError::ClientConfig(..) => return Class::Fatal,
        other => match other.rdkafka_error_code() {
            Some(c) => c,
            None => return Class::Retryable,
        },
    };
    match code {
        // Transient: librdkafka or the cluster will get past them.
        C::QueueFull
        | C::MessageTimedOut
        | C::RequestTimedOut
        | C::OperationTimedOut
        | C::BrokerTransportFailure
        | C::AllBrokersDown
        | C::Resolve
        | C::NotLeaderForPartition
        | C::LeaderNotAvailable
        | C::BrokerNotAvailable
        | C::ReplicaNotAvailable
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::NetworkException
        | C::KafkaStorageError
        | C::NotController
        | C::CoordinatorNotAvailable
        | C::NotCoordinator
        | C::CoordinatorLoadInProgress
        | C::FencedLeaderEpoch
        | C::UnknownLeaderEpoch
        | C::OffsetNotAvailable
        | C::PreferredLeaderNotAvailable
        | C::ThrottlingQuotaExceeded
        | C::PurgeQueue
        | C::PurgeInflight
        | C::Interrupted
        | C::Retry
        | C::InProgress
        | C::PreviousInProgress
        | C::WaitingForCoordinator
        | C::TimedOutQueue
        // A partition unknown for a while (leader moves) is retried inside librdkafka until
        // message.timeout.ms; a CRC error is a corruption on the way.
        | C::UnknownTopicOrPartition
        | C::InvalidMessage => Class::Retryable,
        // This record, not the others: too large, invalid, refused by a topic policy.
        C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::BadMessage
        | C::InvalidRecord
        | C::MessageBatchTooLarge
        | C::PolicyViolation
        | C::InvalidTimestamp => Class::Refused,
        // Everything else stops the pipeline with the error: a topic that does not exist or
        // may not be written (every record would be refused, dead letters included), a
        // producer that lost its idempotence state or was fenced, a broker that cannot take
        // the configured compression or request, and any code not listed above.
        _ => Class::Fatal,
    }
}

/// A stable label for an error in `verdict_produce_errors_total{error}`.
pub fn error_label(error: &KafkaError) -> String {
    match error {
        KafkaError::MessageProduction(c) => format!("{c:?}"),
        other => match other.rdkafka_error_code() {
            Some(c) => format!("{c:?}"),
            None => "Other".to_string(),
        },
    }
}

/// The largest dead-letter record, all told: `publish.dead_letter_max_bytes` when set, never
/// above the producer's `message.max.bytes` (from `kafka.producer`, else librdkafka's default).
pub fn dead_letter_limit(configured: usize, producer_message_max_bytes: Option<&str>) -> usize {
    let producer = producer_message_max_bytes.and_then(|v| v.trim().parse().ok()).unwrap_or(DEFAULT_MESSAGE_MAX_BYTES);
    if configured == 0 {
        producer
    } else {
        configured.min(producer)
    }
}

/// What a dead-letter copy carries once made to fit.
#[derive(Debug, PartialEq, Eq)]
pub struct Fitted<'a> {
    /// The payload, possibly cut.
    pub payload: &'a [u8],
    /// The key, possibly cut.
    pub key: Option<&'a [u8]>,
    /// How many of the original headers are carried (the first ones, in order).
    pub headers_kept: usize,
    /// Set when anything was cut: (original payload size, hex sha256 of it).
    pub truncated: Option<(usize, String)>,
}

/// Cuts a dead-letter copy to fit `limit` bytes: first the original headers are dropped if
/// they take more than a quarter of the room, then a key over 16 KiB is cut, then the payload
/// takes what is left. `own_headers` is the size of verdict's reason and source headers.
pub fn fit<'a>(
    limit: usize,
    key: Option<&'a [u8]>,
    payload: &'a [u8],
    headers: &[(String, Vec<u8>)],
    own_headers: usize,
) -> Fitted<'a> {
    let header_size = |h: &(String, Vec<u8>)| h.0.len() + h.1.len() + 16;
    let original_headers: usize = headers.iter().map(header_size).sum();
    let key_len = key.map_or(0, <[u8]>::len);
    if FRAMING + own_headers + original_headers + key_len + payload.len() <= limit {
        return Fitted { payload, key, headers_kept: headers.len(), truncated: None };
    }
    // Room for the truncation headers too (names, a decimal size, 64 hex digits).
    let room = limit.saturating_sub(FRAMING + own_headers + 160);
    let mut headers_kept = 0;
    let mut used = 0;
    for h in headers {
        if used + header_size(h) > room / 4 {
            break;
        }
        used += header_size(h);
        headers_kept += 1;
    }
    let key = key.map(|k| &k[..k.len().min(16 * 1024).min(room.saturating_sub(used) / 2)]);
    used += key.map_or(0, <[u8]>::len);
    let payload_room = room.saturating_sub(used);
    let cut = &payload[..payload.len().min(payload_room)];
    let sha = Sha256::digest(payload);
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    Fitted { payload: cut, key, headers_kept, truncated: Some((payload.len(), hex)) }
}

/// `detail` cut to [`MAX_DETAIL_BYTES`] at a character boundary.
pub fn short_detail(detail: &str) -> std::borrow::Cow<'_, str> {
    if detail.len() <= MAX_DETAIL_BYTES {
        return detail.into();
    }
    let mut end = MAX_DETAIL_BYTES - 3;
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &detail[..end]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_that_retrying_cannot_fix_are_refused_not_retried() {
        let p = |c| KafkaError::MessageProduction(c);
        assert_eq!(classify(&p(RDKafkaErrorCode::MessageSizeTooLarge)), Class::Refused);
        assert_eq!(classify(&p(RDKafkaErrorCode::UnknownTopic)), Class::Fatal, "every record would be refused");
        assert_eq!(classify(&p(RDKafkaErrorCode::TopicAuthorizationFailed)), Class::Fatal);
        assert_eq!(classify(&p(RDKafkaErrorCode::UnsupportedCompressionType)), Class::Fatal);
        assert_eq!(classify(&p(RDKafkaErrorCode::UnknownTopicOrPartition)), Class::Retryable);
        assert_eq!(classify(&p(RDKafkaErrorCode::InvalidRecord)), Class::Refused);
        assert_eq!(classify(&p(RDKafkaErrorCode::QueueFull)), Class::Retryable);
        assert_eq!(classify(&p(RDKafkaErrorCode::MessageTimedOut)), Class::Retryable);
        assert_eq!(classify(&p(RDKafkaErrorCode::AllBrokersDown)), Class::Retryable);
        assert_eq!(classify(&p(RDKafkaErrorCode::NotLeaderForPartition)), Class::Retryable);
        assert_eq!(classify(&p(RDKafkaErrorCode::Fatal)), Class::Fatal);
        assert_eq!(classify(&p(RDKafkaErrorCode::ProducerFenced)), Class::Fatal);
        assert_eq!(error_label(&p(RDKafkaErrorCode::MessageSizeTooLarge)), "MessageSizeTooLarge");
    }

    #[test]
    fn the_limit_is_the_configured_one_capped_by_the_producers() {
        assert_eq!(dead_letter_limit(0, None), 1_000_000);
        assert_eq!(dead_letter_limit(0, Some("2000000")), 2_000_000);
        assert_eq!(dead_letter_limit(500_000, None), 500_000);
        assert_eq!(dead_letter_limit(5_000_000, Some("1048576")), 1_048_576);
    }

    #[test]
    fn a_copy_that_fits_is_untouched_and_a_large_one_is_cut_with_its_digest() {
        let small = vec![7u8; 1000];
        let f = fit(1_000_000, Some(b"k"), &small, &[("h".into(), b"v".to_vec())], 300);
        assert_eq!(f, Fitted { payload: &small[..], key: Some(&b"k"[..]), headers_kept: 1, truncated: None });

        let big = vec![1u8; 1_500_000];
        let f = fit(1_000_000, Some(b"k"), &big, &[], 300);
        let (size, sha) = f.truncated.clone().unwrap();
        assert_eq!(size, 1_500_000);
        assert_eq!(sha, Sha256::digest(&big).iter().map(|b| format!("{b:02x}")).collect::<String>());
        assert!(f.payload.len() > 990_000 && f.payload.len() + 300 + 1024 + 160 < 1_000_000, "{}", f.payload.len());
        assert_eq!(f.payload, &big[..f.payload.len()], "a prefix of the original");
    }

    #[test]
    fn huge_headers_and_keys_are_dropped_or_cut_before_the_payload() {
        let headers: Vec<(String, Vec<u8>)> = (0..100).map(|i| (format!("h{i}"), vec![0u8; 20_000])).collect();
        let key = vec![b'k'; 500_000];
        let payload = vec![b'p'; 10];
        let f = fit(1_000_000, Some(&key), &payload, &headers, 300);
        let kept: usize = headers[..f.headers_kept].iter().map(|h| h.0.len() + h.1.len() + 16).sum();
        assert!(kept <= 250_000, "{kept}");
        assert_eq!(f.key.unwrap().len(), 16 * 1024);
        assert_eq!(f.payload, &payload[..], "the payload itself fitted");
        assert!(f.truncated.is_some(), "marked: headers were dropped and the key cut");
    }

    #[test]
    fn long_details_are_cut_at_a_character_boundary() {
        let d = "é".repeat(2000);
        let s = short_detail(&d);
        assert!(s.len() <= MAX_DETAIL_BYTES && s.ends_with('…'));
        assert_eq!(short_detail("short"), "short");
    }
}
