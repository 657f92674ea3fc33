//! What the consume loop reads off a message, and the envelope it makes of it: a message read
//! from verdict's fetch queue, or one rust-rdkafka's `poll` returned from the consumer's queue.

use std::sync::Arc;
use std::time::Instant;

use rdkafka::message::Message;

use crate::envelope::{Envelope, Key, Origin, RawMessage};

/// Copies a message's headers (librdkafka's list `ptr`, valid while the message is held).
/// rdkafka's header iterator unwraps each name as UTF-8, and a producer can send any bytes:
/// one such header would panic the consume thread, and the restarted process would meet the
/// same message. Names are read lossily here instead. They go into `out`, a list that may
/// hold an earlier message's headers (their buffers are reused).
fn copy_headers(
    ptr: *const rdkafka::bindings::rd_kafka_headers_t,
    mut out: crate::envelope::Headers,
) -> crate::envelope::Headers {
    use rdkafka::bindings as rd;
    let mut n = 0;
    // SAFETY: `ptr` is the live header list of a message this thread holds.
    let count = unsafe { rd::rd_kafka_header_cnt(ptr) };
    for idx in 0..count {
        let mut name: *const std::ffi::c_char = std::ptr::null();
        let mut value: *const std::ffi::c_void = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: as above; idx < count.
        let err = unsafe { rd::rd_kafka_header_get_all(ptr, idx, &mut name, &mut value, &mut size) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            continue;
        }
        // SAFETY: librdkafka hands back a NUL-terminated name and `size` bytes of value, both
        // valid while the message is held; they are copied before it is released.
        let key = unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy();
        let value =
            if value.is_null() { &[][..] } else { unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) } };
        crate::envelope::set_header(&mut out, n, &key, value);
        n += 1;
    }
    out.truncate(n);
    out
}

/// What the consume loop reads off a message: one read from verdict's fetch queue, or one
/// rust-rdkafka's `poll` returned from the consumer's queue.
pub(super) trait Incoming {
    fn topic(&self) -> &str;
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
    fn timestamp_ms(&self) -> Option<i64>;
    fn key(&self) -> Option<&[u8]>;
    fn payload(&self) -> Option<&[u8]>;
    /// Its header list, when it has headers.
    fn headers(&self) -> Option<*const rdkafka::bindings::rd_kafka_headers_t>;
}

impl Incoming for rdkafka::message::BorrowedMessage<'_> {
    fn topic(&self) -> &str {
        Message::topic(self)
    }
    fn partition(&self) -> i32 {
        Message::partition(self)
    }
    fn offset(&self) -> i64 {
        Message::offset(self)
    }
    fn timestamp_ms(&self) -> Option<i64> {
        Message::timestamp(self).to_millis()
    }
    fn key(&self) -> Option<&[u8]> {
        Message::key(self)
    }
    fn payload(&self) -> Option<&[u8]> {
        Message::payload(self)
    }
    fn headers(&self) -> Option<*const rdkafka::bindings::rd_kafka_headers_t> {
        // A `BorrowedHeaders` reference is librdkafka's header-list pointer (rdkafka casts it so).
        Message::headers(self).map(|hs| hs as *const rdkafka::message::BorrowedHeaders as *const _)
    }
}

/// The envelope of a polled message: its payload and headers copied into buffers the workers
/// gave back (`payloads`), its topic name shared (`topics`).
pub(super) fn envelope(
    topics: &mut Vec<Arc<str>>,
    payloads: &mut crate::envelope::Payloads,
    m: &impl Incoming,
    received_at: Instant,
) -> Envelope<RawMessage> {
    // A header section may be there and empty: no list taken for it.
    let headers = match m.headers() {
        // SAFETY: the list of the message `m`, held by this thread.
        Some(hs) if unsafe { rdkafka::bindings::rd_kafka_header_cnt(hs) } > 0 => copy_headers(hs, payloads.headers()),
        _ => Vec::new(),
    };
    Envelope {
        origin: Origin { topic: intern(topics, m.topic()), partition: m.partition(), offset: m.offset() },
        received_at,
        timestamp_ms: m.timestamp_ms(),
        payload: RawMessage {
            key: m.key().map(Key::from_slice),
            payload: m.payload().map(|p| payloads.copy(p)),
            headers,
        },
    }
}

/// Shares one `Arc<str>` per topic name, so envelopes clone a pointer, not a string.
fn intern(topics: &mut Vec<Arc<str>>, name: &str) -> Arc<str> {
    if let Some(t) = topics.iter().find(|t| &***t == name) {
        return t.clone();
    }
    let t: Arc<str> = Arc::from(name);
    topics.push(t.clone());
    t
}
