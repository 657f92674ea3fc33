//! Per-event cost of the window code for a busy entity whose windows are full: the demo's
//! three windows (10 m, 1 h, 24 h in one-minute buckets), an event every 30 s of event time
//! (2,880 in the day window, over all 1,440 buckets), one distinct value in 50. Compares the
//! running aggregates (`apply_owned`: read the windows, apply the event) with the bucket walk
//! they replaced (`aggregates_into`, reading only), and the running aggregates with the
//! demo's per-window widths (1 m / 5 m / 1 h: three bucket series per event). The state is
//! untracked, as the memory backend's (no checkpoint deltas). One core.
//!
//! `cargo bench --bench window`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use verdict::enrich::window::WindowAggs;
use verdict::enrich::{EntityState, WindowSpec};

const STEP_MS: i64 = 30_000;

fn warmed(spec: &WindowSpec, merchants: &[String]) -> (EntityState, i64) {
    // Held as the memory backend holds it: no checkpoint deltas (a tracked state that never
    // took one would list every value move for the whole run).
    let mut st = EntityState::default();
    st.untracked();
    let mut out = vec![WindowAggs::default(); spec.sizes_ms.len()];
    let mut t = 1_764_000_000_000;
    // 26 h of events: every window full, the oldest buckets expiring.
    for i in 0..(26 * 3_600_000 / STEP_MS) as usize {
        st.apply_owned(spec, t, Some((i % 97) as f64 + 0.25), Some(&merchants[i % merchants.len()]), &mut out);
        t += STEP_MS;
    }
    (st, t)
}

fn bench(c: &mut Criterion) {
    let spec = WindowSpec::from_seconds(60, [600, 3_600, 86_400], 60);
    let merchants: Vec<String> = (0..50).map(|i| format!("m{i:03}")).collect();
    let mut g = c.benchmark_group("window_full_day");
    g.throughput(Throughput::Elements(1));
    g.bench_function("running: read + apply", |b| {
        let (mut st, mut t) = warmed(&spec, &merchants);
        let mut out = vec![WindowAggs::default(); 3];
        let mut i = 0usize;
        b.iter(|| {
            i += 1;
            t += STEP_MS;
            black_box(st.apply_owned(&spec, t, Some((i % 97) as f64), Some(&merchants[i % 50]), &mut out));
        });
    });
    // The demo's windows now: 10 m in 1-minute, 1 h in 5-minute, 24 h in 1-hour buckets.
    let widths = WindowSpec::with_widths(vec![600_000, 3_600_000, 86_400_000], &[60_000, 300_000, 3_600_000], 60_000);
    g.bench_function("running, per-window widths: read + apply", |b| {
        let (mut st, mut t) = warmed(&widths, &merchants);
        let mut out = vec![WindowAggs::default(); 3];
        let mut i = 0usize;
        b.iter(|| {
            i += 1;
            t += STEP_MS;
            black_box(st.apply_owned(&widths, t, Some((i % 97) as f64), Some(&merchants[i % 50]), &mut out));
        });
    });
    g.bench_function("walk: read only (before)", |b| {
        let (st, t) = warmed(&spec, &merchants);
        let mut out = vec![WindowAggs::default(); 3];
        b.iter(|| {
            st.aggregates_into(&spec, black_box(t), &mut out);
            black_box(&out);
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
