//! Memory of partition-owned window state per entity at steady state: the demo's stream
//! (50,000 cards, heavy-tailed activity, ~9.1M events per day of event time) applied to
//! `EntityState`s as the owned path does, with the demo's card windows (`config/demo.toml`:
//! 10 m in 1-minute, 1 h in 5-minute, 24 h in 1-hour buckets) and, for comparison, the same
//! windows all in 1-minute buckets; then both again with every window computing all six
//! aggregates (the demo's windows compute what its model and rules read). Heap bytes are counted by a counting allocator, each
//! allocation as glibc sizes its chunk (request + 8 rounded up to 16, at least 32 bytes).
//! Measures the state alone (map of cards included), not the process: see BENCHMARKS.md.
//!
//! `cargo bench --bench state_memory` (BENCH_HOURS: event-time hours to run, default 30)

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use verdict::demo::Generator;
use verdict::enrich::config::EntityConfig;
use verdict::enrich::window::WindowAggs;
use verdict::enrich::{EntityState, WindowSpec};

/// Live heap bytes as glibc chunks, and live allocations.
static BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE: AtomicI64 = AtomicI64::new(0);

struct Counting;

fn chunk(size: usize) -> i64 {
    (((size + 8).div_ceil(16) * 16).max(32)) as i64
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        BYTES.fetch_add(chunk(l.size()), Ordering::Relaxed);
        LIVE.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        BYTES.fetch_sub(chunk(l.size()), Ordering::Relaxed);
        LIVE.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: as allocated above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        BYTES.fetch_add(chunk(new) - chunk(l.size()), Ordering::Relaxed);
        // SAFETY: as allocated above, with the caller's new size.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The demo's card entity, read from config/demo.toml.
fn demo_card() -> EntityConfig {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml")).expect("demo.toml");
    let doc: toml::Table = text.parse().expect("demo.toml parses");
    let card = doc["enrich"]["entities"][0].clone();
    card.try_into().expect("an entity table")
}

fn run(name: &str, card: &EntityConfig, hours: i64) {
    let spec = WindowSpec::of_entity(card, 60);
    let start = 1_764_000_000_000;
    let mut gen = Generator::new(7, 50_000, start);
    let base = BYTES.load(Ordering::Relaxed);
    let mut states: HashMap<String, EntityState> = HashMap::new();
    let mut out = vec![WindowAggs::default(); spec.sizes_ms.len()];
    let (began, mut events, mut next_report) = (Instant::now(), 0u64, start + 24 * 3_600_000);
    loop {
        let e = gen.next_event();
        if e.event_time >= next_report {
            let h = (e.event_time - start) / 3_600_000;
            let bytes = BYTES.load(Ordering::Relaxed) - base;
            println!(
                "{name:<32} {h:>3} h  {events:>10} events  {:>6} cards  {:>8.1} MiB  {:>6.0} B/card  {:>5.1} allocs/card  {:.2} µs/event",
                states.len(),
                bytes as f64 / (1 << 20) as f64,
                bytes as f64 / states.len() as f64,
                (LIVE.load(Ordering::Relaxed) as f64) / states.len() as f64,
                began.elapsed().as_secs_f64() * 1e6 / events as f64,
            );
            next_report += 3 * 3_600_000;
            if h >= hours {
                break;
            }
        }
        let st = match states.get_mut(e.card_id.as_str()) {
            Some(st) => st,
            None => {
                let mut st = EntityState::default();
                st.untracked(); // the memory backend: no deltas
                states.entry(e.card_id.clone()).or_insert(st)
            }
        };
        st.apply_owned(&spec, e.event_time, Some(e.amount), Some(&e.merchant_id), &mut out);
        events += 1;
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let hours: i64 = std::env::var("BENCH_HOURS").ok().and_then(|h| h.parse().ok()).unwrap_or(30);
    let card = demo_card();
    let mut one_width = card.clone();
    for w in &mut one_width.windows {
        w.bucket_s = None;
    }
    one_width.bucket_s = 60;
    // The same windows computing all six aggregates (`aggregates` left out): every distinct
    // value remembered for 24 h, min and max kept in every series.
    let mut all_six = card.clone();
    for w in &mut all_six.windows {
        w.aggregates = None;
    }
    let mut all_one_width = one_width.clone();
    for w in &mut all_one_width.windows {
        w.aggregates = None;
    }
    run("demo widths (1m/5m/1h)", &card, hours);
    run("one width (1m)", &one_width, hours);
    run("demo widths, all six aggregates", &all_six, hours);
    run("one width, all six aggregates", &all_one_width, hours);
}
