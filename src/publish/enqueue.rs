//! One record into librdkafka's queue without an allocation: rust-rdkafka's
//! `BaseProducer::send` makes a C string of the topic's name for every record; here the names
//! are kept per thread.

use std::ffi::{CStr, CString};

use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::ThreadedProducer;

use super::delivery;

thread_local! {
    /// Topic names as C strings, per thread (a handful of topics: decisions, review,
    /// dead-letter, drift), so that a record is enqueued without allocating one.
    static TOPIC_NAMES: std::cell::RefCell<Vec<(Box<str>, CString)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with `topic` as a C string, kept for this thread's next records to it.
pub(super) fn topic_cstr<R>(topic: &str, f: impl FnOnce(&CStr) -> R) -> Result<R, std::ffi::NulError> {
    TOPIC_NAMES.with_borrow_mut(|names| {
        if let Some((_, c)) = names.iter().find(|(t, _)| &**t == topic) {
            return Ok(f(c));
        }
        let c = CString::new(topic)?;
        if names.len() >= 32 {
            // Topics named per record would grow this without end: keep the newest only.
            names.clear();
        }
        names.push((topic.into(), c));
        Ok(f(&names.last().expect("just pushed").1))
    })
}

/// Enqueues one record (payload and key copied by librdkafka), as rust-rdkafka's
/// `BaseProducer::send` does, with a topic name that is not allocated per record. On
/// `NoError` librdkafka owns `headers` and `opaque`; on any other code neither was taken.
pub(super) fn enqueue(
    producer: &ThreadedProducer<delivery::DeliveryContext>,
    topic: &CStr,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: Option<&OwnedHeaders>,
    opaque: *mut std::ffi::c_void,
) -> RDKafkaErrorCode {
    use rd::rd_kafka_vtype_t::*;
    use rdkafka::bindings as rd;
    use rdkafka::producer::Producer;
    let (key_ptr, key_len) = key.map_or((std::ptr::null_mut(), 0), |k| (k.as_ptr() as *mut std::ffi::c_void, k.len()));
    // rust-rdkafka's `OwnedHeaders` keeps its native pointer to itself; its borrowed view is
    // that pointer (`BorrowedHeaders` is a zero-sized type at the native list's address).
    let headers_ptr = headers.map_or(std::ptr::null_mut(), |h| {
        h.as_borrowed() as *const rdkafka::message::BorrowedHeaders as *mut rd::rd_kafka_headers_t
    });
    // SAFETY: `rk` is the live producer's handle; the topic is NUL-terminated; payload and
    // key are copied (`RD_KAFKA_MSG_F_COPY`) before the call returns; the headers pointer is
    // a live header list whose ownership passes to librdkafka only on success (the caller
    // forgets its `OwnedHeaders` then); every vararg has the type librdkafka reads for its tag.
    let code = unsafe {
        rd::rd_kafka_producev(
            producer.client().native_ptr(),
            RD_KAFKA_VTYPE_TOPIC,
            topic.as_ptr(),
            RD_KAFKA_VTYPE_PARTITION,
            -1i32,
            RD_KAFKA_VTYPE_MSGFLAGS,
            rd::RD_KAFKA_MSG_F_COPY as std::ffi::c_int,
            RD_KAFKA_VTYPE_VALUE,
            payload.as_ptr() as *mut std::ffi::c_void,
            payload.len(),
            RD_KAFKA_VTYPE_KEY,
            key_ptr,
            key_len,
            RD_KAFKA_VTYPE_OPAQUE,
            opaque,
            RD_KAFKA_VTYPE_TIMESTAMP,
            0i64,
            RD_KAFKA_VTYPE_HEADERS,
            headers_ptr,
            RD_KAFKA_VTYPE_END,
        )
    };
    code.into()
}
