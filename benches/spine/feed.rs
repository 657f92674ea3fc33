//! The bench's event source: the demo generator's transactions on one event clock that the
//! warm-up and every measured phase share, so an entity's windows see time move forward
//! only, from the warm-up's first event to the last measured one.

use std::time::{Duration, Instant};

use verdict::demo::{Generator, MockKafka};

/// Generated events, one event-time step apart.
pub struct Feed {
    gen: Generator,
    /// Event time of the next event (ms since epoch; fractional steps accumulate).
    clock_ms: f64,
    step_ms: f64,
    /// Card number of every event since the last [`Feed::take_cards`].
    cards: Vec<u32>,
}

impl Feed {
    /// Events from `start_ms` on, `step_ms` apart.
    pub fn new(seed: u64, start_ms: i64, step_ms: f64) -> Self {
        Self { gen: Generator::new(seed, 50_000, start_ms), clock_ms: start_ms as f64, step_ms, cards: Vec::new() }
    }

    /// Event time of the next event.
    pub fn clock_ms(&self) -> i64 {
        self.clock_ms as i64
    }

    /// Sets the step between the next events' times.
    pub fn set_step(&mut self, step_ms: f64) {
        self.step_ms = step_ms;
    }

    /// The next event as (key, JSON payload).
    pub fn next(&mut self) -> (Vec<u8>, Vec<u8>) {
        let mut tx = self.gen.next_event();
        tx.event_time = self.clock_ms as i64;
        self.clock_ms += self.step_ms;
        self.cards.push(tx.card_id["card-".len()..].parse().unwrap_or(0));
        let payload = tx.to_json();
        (tx.card_id.into_bytes(), payload)
    }

    /// The card of every event since the last call, in order.
    pub fn take_cards(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.cards)
    }
}

/// What the offered-rate phase produces.
#[derive(Debug, Clone, Copy)]
pub struct Offer {
    /// Events in all.
    pub events: u64,
    /// Events per second.
    pub rate: u64,
    /// The producer's `linger.ms`.
    pub linger_ms: u64,
}

/// Produces `offer.events` events at `offer.rate` per second into `topic`; counts them into `sent` as
/// it goes and stops early when `stop` is set. Returns the feed.
///
/// Its own producer, lingering `linger_ms`: the mock broker answers a fetch with one message
/// set per partition and finds it by walking the partition's sets from the oldest, so a log
/// of many small sets (a 5 ms linger at 20k events/s over 16 partitions: ~6 events each)
/// caps how fast a consumer that has fallen behind can catch up, and the cap falls as the
/// log fills (~5 MiB per partition). Longer lingers make fewer, larger sets.
pub fn produce_at_rate(
    mock: &MockKafka,
    topic: &str,
    mut feed: Feed,
    offer: Offer,
    sent: &std::sync::atomic::AtomicU64,
    stop: &std::sync::atomic::AtomicBool,
) -> Feed {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use std::sync::atomic::Ordering;
    let Offer { events, rate, linger_ms } = offer;
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap())
        .set("linger.ms", linger_ms.to_string())
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .set("batch.num.messages", "10000")
        .create()
        .expect("bench producer");
    let start = Instant::now();
    let mut n = 0;
    while n < events && !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        if n >= due {
            producer.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let (key, payload) = feed.next();
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(&key[..]).payload(&payload[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
        n += 1;
        sent.store(n, Ordering::Relaxed);
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    feed
}

/// Mean number of distinct cards per run of `group` consecutive events (the entities a
/// checkpoint interval touches when `group` events are decided per interval).
pub fn distinct_per_group(cards: &[u32], group: usize) -> f64 {
    let group = group.max(1);
    let mut seen = std::collections::HashSet::with_capacity(group.min(1 << 20));
    let (mut sum, mut groups) = (0u64, 0u64);
    for chunk in cards.chunks(group) {
        if chunk.len() < group && groups > 0 {
            break; // a partial last group would pull the mean down
        }
        seen.clear();
        seen.extend(chunk.iter().copied());
        sum += seen.len() as u64;
        groups += 1;
    }
    sum as f64 / groups.max(1) as f64
}

/// This process's resident set (MiB), from /proc.
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
