//! JSON extraction (issue 23): the fields the demo config reads, from the demo generator's
//! transactions, by `PathTrie::extract` (the hand-written scanner, serde_json as its
//! fallback) against serde_json alone (`PathTrie::extract_serde`, the path before the
//! scanner). Checks first that both give the same fields for every payload.
//!
//!     cargo bench --bench decode
//!     BENCH_SECONDS=2 cargo bench --bench decode     # seconds per case (default 2)

use std::hint::black_box;
use std::time::{Duration, Instant};

use verdict::decode::json::PathTrie;
use verdict::decode::{Field, FieldPath, Fields};
use verdict::demo::Generator;

/// What the demo config reads: the model's event inputs, the identity fields, the card
/// window's value and distinct value.
const PATHS: &[&str] = &[
    "amount",
    "merchant_category",
    "channel",
    "device.type",
    "card_age_days",
    "distance_km",
    "cross_border",
    "card_present",
    "merchant_risk",
    "event_id",
    "card_id",
    "event_time",
    "card_id",
    "amount",
    "merchant_id",
];

fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let paths: Vec<FieldPath> = PATHS.iter().enumerate().map(|(i, p)| FieldPath::parse(p).with_slot(i)).collect();
    let trie = PathTrie::new(&paths);
    let mut gen = Generator::new(7, 50_000, 1_700_000_000_000);
    let payloads: Vec<String> =
        (0..10_000).map(|_| String::from_utf8(gen.next_event().to_json()).expect("utf-8")).collect();
    let bytes: usize = payloads.iter().map(String::len).sum();
    for p in &payloads {
        let (fast, slow) = (trie.extract(p).expect("parses"), trie.extract_serde(p).expect("parses"));
        let both: Vec<(Field<'_>, Field<'_>)> = paths.iter().map(|f| (fast.field(f), slow.field(f))).collect();
        assert!(both.iter().all(|(a, b)| a == b), "{p}: {both:?}");
    }
    println!("{} payloads, {} bytes on average, {} paths", payloads.len(), bytes / payloads.len(), PATHS.len());
    type Extract = for<'a> fn(&PathTrie, &'a str) -> usize;
    let cases: [(&str, Extract); 2] = [
        ("scanner (serde_json fallback)", |t, p| usize::from(black_box(t.extract(p)).is_ok())),
        ("serde_json alone", |t, p| usize::from(black_box(t.extract_serde(p)).is_ok())),
    ];
    // The cases alternate in rounds (this box's speed drifts between seconds); medians.
    let rounds = 20;
    let mut ns = vec![Vec::new(); cases.len()];
    let mut sink = 0usize;
    for _ in 0..rounds {
        for (i, (_, f)) in cases.iter().enumerate() {
            let (mut n, start) = (0u64, Instant::now());
            while start.elapsed() < Duration::from_secs_f64(seconds / rounds as f64) {
                for p in &payloads {
                    sink += f(black_box(&trie), black_box(p));
                }
                n += payloads.len() as u64;
            }
            ns[i].push(start.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = median(&mut ns[1].clone());
    for ((name, _), v) in cases.iter().zip(&mut ns) {
        let m = median(v);
        println!(
            "{name:32} {m:7.1} ns/event (median of {rounds} rounds, {:.1}-{:.1})  {:.2} of serde_json's",
            v[0],
            v[v.len() - 1],
            m / base
        );
    }
    black_box(sink);
}
