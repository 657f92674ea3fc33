//! verdict's own fetch queue. Once the consume loop has opened it, every partition assigned
//! to this member has its fetched messages forwarded to it (librdkafka's partition-queue
//! forwarding, set up in the rebalance callback before the partition is assigned, so none of
//! its messages can reach the consumer's own queue first), and the consume thread reads them
//! with `rd_kafka_consume_queue`: a message is librdkafka's own `rd_kafka_message_t`, read in
//! place and destroyed once copied. rust-rdkafka's `poll` wraps every fetched message's event
//! in an `Arc`, one heap allocation per event; this path has none.
//!
//! Rebalances, commit results, errors, logs and statistics stay on the consumer's queue,
//! served by `BaseConsumer::poll` as before. A callback on that queue (librdkafka calls it
//! when the queue stops being empty) marks it pending and wakes a consume thread waiting on
//! the fetch queue, which then serves it.
//!
//! Ordering is librdkafka's: a partition's messages reach one queue in offset order, a seek or
//! a revocation makes the messages fetched before it outdated (dropped when read), and a
//! partition that is revoked stops being forwarded (librdkafka clears the forwarding when it
//! stops fetching it; the next assignment forwards it again).

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use rdkafka::bindings as rd;

/// The two queue handles: verdict's fetch queue and a reference to the consumer's queue.
struct Queues {
    fetch: NonNull<rd::rd_kafka_queue_t>,
    main: NonNull<rd::rd_kafka_queue_t>,
}

/// The fetch queue, shared by the consume loop (which reads it), the rebalance callback
/// (which forwards partitions to it) and librdkafka's threads (which wake its reader).
pub struct Fetch {
    rk: *mut rd::rd_kafka_t,
    /// Handles while open (between the consume loop's `open` and its end).
    queues: RwLock<Option<Queues>>,
    /// Not opened yet: until then the consumer's own `poll` returns every message.
    opened: AtomicBool,
    /// The consumer's queue went non-empty since the consume loop last served it.
    main_pending: AtomicBool,
}

// SAFETY: librdkafka's queue handles and client handle are thread-safe (their operations
// lock internally); the handles are destroyed only under the write lock, after the one
// reader that uses them without it (the consume loop) has stopped using them.
unsafe impl Send for Fetch {}
unsafe impl Sync for Fetch {}

impl Fetch {
    /// A fetch queue for the consumer `rk` (not yet opened).
    pub fn new(rk: *mut rd::rd_kafka_t) -> Self {
        Self { rk, queues: RwLock::new(None), opened: AtomicBool::new(false), main_pending: AtomicBool::new(false) }
    }

    /// Creates the queues and starts forwarding partitions assigned from now on. Must come
    /// before the consumer's first poll (no partition is assigned yet). None if librdkafka
    /// refuses a queue (the consumer's own `poll` then keeps returning every message).
    pub fn open(self: &std::sync::Arc<Self>) -> Option<Reader> {
        let mut q = self.queues.write();
        if self.opened.swap(true, Ordering::SeqCst) {
            return None;
        }
        // SAFETY: `rk` is the live consumer's handle (this value lives inside its context).
        let (fetch, main) = unsafe { (rd::rd_kafka_queue_new(self.rk), rd::rd_kafka_queue_get_consumer(self.rk)) };
        let (Some(fetch), Some(main)) = (NonNull::new(fetch), NonNull::new(main)) else {
            // SAFETY: each non-null handle was just created here and is not shared.
            unsafe {
                if !fetch.is_null() {
                    rd::rd_kafka_queue_destroy(fetch);
                }
                if !main.is_null() {
                    rd::rd_kafka_queue_destroy(main);
                }
            }
            return None;
        };
        *q = Some(Queues { fetch, main });
        Some(Reader { fetch, main, owner: self.clone() })
    }

    /// Forwards a partition's fetched messages to the fetch queue (no-op until opened, and
    /// after it is closed). Called for each partition about to be assigned.
    pub fn route(&self, topic: &str, partition: i32) {
        let q = self.queues.read();
        let Some(q) = q.as_ref() else { return };
        let Ok(name) = CString::new(topic) else { return };
        // SAFETY: `rk` and `q.fetch` are live while the read lock is held; the partition
        // queue handle is a new reference, released after the forwarding is set.
        unsafe {
            let pq = rd::rd_kafka_queue_get_partition(self.rk, name.as_ptr(), partition);
            if pq.is_null() {
                tracing::warn!(topic, partition, "no partition queue; its messages come through the consumer's queue");
                return;
            }
            rd::rd_kafka_queue_forward(pq, q.fetch.as_ptr());
            rd::rd_kafka_queue_destroy(pq);
        }
    }

    /// librdkafka's callback: the consumer's queue went non-empty. Wakes the reader.
    pub fn wake(&self) {
        self.main_pending.store(true, Ordering::Release);
        if let Some(q) = self.queues.read().as_ref() {
            // SAFETY: live while the read lock is held.
            unsafe { rd::rd_kafka_queue_yield(q.fetch.as_ptr()) };
        }
    }

    /// Whether the consumer's queue went non-empty since the last call.
    pub fn take_pending(&self) -> bool {
        self.main_pending.swap(false, Ordering::AcqRel)
    }

    /// Destroys the handles (the reader's end). Messages still queued, or fetched later for a
    /// partition still forwarded, are dropped: their offsets were never stored. A consumer
    /// whose loop never opened it closes it when dropped.
    fn close(&self) {
        // Taken out under the lock and destroyed after it is released: librdkafka calls `wake`
        // holding the consumer queue's lock, which destroying its handle takes too.
        let taken = self.queues.write().take();
        if let Some(q) = taken {
            // SAFETY: no route or wake can reach them any more, and the reader is being
            // dropped.
            unsafe {
                rd::rd_kafka_queue_destroy(q.fetch.as_ptr());
                rd::rd_kafka_queue_destroy(q.main.as_ptr());
            }
        }
    }
}

impl Drop for Fetch {
    fn drop(&mut self) {
        self.close();
    }
}

/// The consume loop's side: reads the fetch queue without the lock. Dropping it closes the
/// queue, while the consumer still lives (the consume loop owns it).
pub struct Reader {
    fetch: NonNull<rd::rd_kafka_queue_t>,
    main: NonNull<rd::rd_kafka_queue_t>,
    owner: std::sync::Arc<Fetch>,
}

// SAFETY: used by the one consume thread; the handles stay valid until `Fetch::close`, which
// only dropping the reader calls before the consumer itself is dropped.
unsafe impl Send for Reader {}

impl Drop for Reader {
    fn drop(&mut self) {
        self.owner.close();
    }
}

impl Reader {
    /// The next fetched message, waiting up to `timeout` (whole milliseconds). None on
    /// timeout or when woken to serve the consumer's queue.
    pub fn next(&self, timeout: Duration) -> Option<Fetched> {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: the handle is live until `Fetch::close` (see the type's doc).
        NonNull::new(unsafe { rd::rd_kafka_consume_queue(self.fetch.as_ptr(), ms) }).map(Fetched)
    }

    /// Whether the consumer's queue went non-empty since the last call.
    pub fn take_pending(&self) -> bool {
        self.owner.take_pending()
    }

    /// Events waiting on the consumer's queue.
    pub fn main_len(&self) -> usize {
        // SAFETY: as above.
        unsafe { rd::rd_kafka_queue_length(self.main.as_ptr()) }
    }
}

/// A message read from the fetch queue, destroyed on drop.
pub struct Fetched(NonNull<rd::rd_kafka_message_t>);

impl Drop for Fetched {
    fn drop(&mut self) {
        // SAFETY: returned by `rd_kafka_consume_queue`, destroyed once.
        unsafe { rd::rd_kafka_message_destroy(self.0.as_ptr()) }
    }
}

impl Fetched {
    fn raw(&self) -> &rd::rd_kafka_message_t {
        // SAFETY: live until dropped.
        unsafe { self.0.as_ref() }
    }

    /// The consumer error this message carries instead of an event (an offset out of
    /// range, a broker error for the partition), as rust-rdkafka's `poll` reports it.
    pub fn error(&self) -> Option<rdkafka::error::KafkaError> {
        let m = self.raw();
        match m.err {
            rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => None,
            rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                Some(rdkafka::error::KafkaError::PartitionEOF(m.partition))
            }
            e => Some(rdkafka::error::KafkaError::MessageConsumption(e.into())),
        }
    }
}

impl super::incoming::Incoming for Fetched {
    /// Its topic's name (empty if librdkafka gives none, or it is not UTF-8).
    fn topic(&self) -> &str {
        let rkt = self.raw().rkt;
        if rkt.is_null() {
            return "";
        }
        // SAFETY: the topic handle and its NUL-terminated name outlive the message.
        unsafe { std::ffi::CStr::from_ptr(rd::rd_kafka_topic_name(rkt)) }.to_str().unwrap_or("")
    }

    /// Its partition.
    fn partition(&self) -> i32 {
        self.raw().partition
    }

    /// Its offset.
    fn offset(&self) -> i64 {
        self.raw().offset
    }

    /// Its timestamp in ms (create or log-append time), None when not set.
    fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: live message; `kind` is written by librdkafka.
        let ts = unsafe { rd::rd_kafka_message_timestamp(self.0.as_ptr(), &mut kind) };
        (kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && ts != -1).then_some(ts)
    }

    /// Its key, if any.
    fn key(&self) -> Option<&[u8]> {
        let m = self.raw();
        // SAFETY: `key_len` bytes at `key`, valid while the message lives.
        (!m.key.is_null()).then(|| unsafe { std::slice::from_raw_parts(m.key.cast::<u8>(), m.key_len) })
    }

    /// Its payload, if any.
    fn payload(&self) -> Option<&[u8]> {
        let m = self.raw();
        // SAFETY: `len` bytes at `payload`, valid while the message lives.
        (!m.payload.is_null()).then(|| unsafe { std::slice::from_raw_parts(m.payload.cast::<u8>(), m.len) })
    }

    /// Its header list, if it has one (valid while the message lives).
    fn headers(&self) -> Option<*const rd::rd_kafka_headers_t> {
        let mut h: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
        // SAFETY: live message; `h` is written by librdkafka and owned by the message.
        let err = unsafe { rd::rd_kafka_message_headers(self.0.as_ptr(), &mut h) };
        (err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && !h.is_null()).then_some(h as *const _)
    }
}
