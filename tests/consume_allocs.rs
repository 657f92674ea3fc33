//! The consume thread allocates nothing per message once the workers hand its buffers back:
//! messages are read off verdict's fetch queue (no `Arc` per message, as rust-rdkafka's
//! `poll` makes) and copied into spent buffers. Counted by a global allocator that counts the
//! consume thread's allocations only, against librdkafka's mock cluster.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use verdict::consume::config::{BatchConfig, KafkaConfig};
use verdict::consume::{create_consumer, ConsumeLoop, Control};
use verdict::demo::MockKafka;
use verdict::envelope::{Payloads, Spent};
use verdict::telemetry::Metrics;

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting the allocations of threads that set `COUNTED`.
struct Counting;

fn count() {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn the_consume_thread_allocates_nothing_per_message_once_its_buffers_come_back() {
    const TOTAL: u64 = 60_000;
    const WARM: u64 = 20_000;
    const MAX_EVENTS: usize = 500;
    const QUEUED: usize = 4;
    let mock = MockKafka::start(1);
    mock.create_topic("allocs", 4);
    // Payloads of one size: a spent buffer that is too small grows once, and in this short
    // run that would be counted.
    for i in 0..TOTAL {
        let key = format!("card-{:04}", i % 1000);
        let payload = format!("{{\"event_id\":\"e-{i:08}\",\"amount\":{:03}.25,\"card_id\":\"{key}\"}}", i % 500);
        mock.produce("allocs", None, key.as_bytes(), payload.as_bytes());
    }
    mock.flush();

    let kafka = KafkaConfig {
        brokers: mock.bootstrap().to_string(),
        group_id: "consume-allocs".into(),
        input_topics: vec!["allocs".into()],
        ..Default::default()
    };
    let metrics = Metrics::new();
    let in_flight = Arc::new(AtomicUsize::new(0));
    // No statistics: parsing librdkafka's statistics JSON allocates, once an interval.
    let consumer = create_consumer(&kafka, 0, metrics.clone(), in_flight.clone()).expect("consumer");
    let (tx, rx) = crossbeam_channel::bounded(QUEUED);
    let control = Arc::new(Control::default());
    let spent = Spent::default();
    let batch = BatchConfig { max_events: MAX_EVENTS, ..Default::default() };
    let mut consume =
        ConsumeLoop::new(consumer, batch, Duration::from_secs(1), tx, metrics, in_flight.clone(), control.clone());
    consume.payloads = Payloads::new(spent.clone());
    let thread = std::thread::spawn(move || {
        COUNTED.set(true);
        consume.run()
    });

    // The workers' part: take each batch, hand its buffers back.
    let (mut seen, mut batches, mut at_warm) = (0u64, 0u64, None);
    let start = Instant::now();
    while seen < TOTAL && start.elapsed() < Duration::from_secs(60) {
        let Ok(mut b) = rx.recv_timeout(Duration::from_millis(100)) else { continue };
        seen += b.events.len() as u64;
        if at_warm.is_some() {
            batches += 1;
        }
        spent.give_back(&mut b.events);
        in_flight.fetch_sub(1, Ordering::SeqCst);
        if at_warm.is_none() && seen >= WARM {
            at_warm = Some((seen, ALLOCATIONS.load(Ordering::SeqCst)));
        }
    }
    let end = ALLOCATIONS.load(Ordering::SeqCst);
    control.stop();
    drop(rx);
    thread.join().expect("the consume thread ends");
    assert_eq!(seen, TOTAL, "every message consumed once");
    let (warm_seen, warm_allocs) = at_warm.expect("warmed up");
    let messages = seen - warm_seen;
    let allocations = end - warm_allocs;
    // Per batch, its own event list. Per message, nothing: a payload buffer is allocated only
    // when none has come back yet, so at most as many as can be in flight at once (the queued
    // batches, the one being handed back, the one being filled) are ever allocated, however
    // many messages pass. rust-rdkafka's `poll` allocated once per message.
    let in_flight_most = ((QUEUED + 2) * MAX_EVENTS) as u64;
    assert!(
        allocations <= batches + in_flight_most,
        "{allocations} allocations on the consume thread for {messages} messages in {batches} batches"
    );
    assert!((allocations as f64) / (messages as f64) < 0.1, "{allocations} allocations for {messages} messages");
}
