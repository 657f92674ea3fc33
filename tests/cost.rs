//! Cost per decision: under a steady stream, `verdict_cpu_seconds_per_1k_decisions` is the
//! process's CPU time per 1,000 decisions as this test measures it itself from
//! `/proc/self/stat` over the same window, and the dollar gauge prices it as the README says.
//!
//! Fair by construction: the gauge charges the whole process (the pipeline, the in-process
//! mock broker, the producer thread, this test's polling), and so does `/proc/self/stat`;
//! the test reads it at the gauge's own sample boundaries (the moments the gauge moves), so
//! both cover the same interval. The gauge reads `getrusage`, the test `/proc`: two sources.

mod common;

use std::time::{Duration, Instant};

use common::*;
use verdict::pipeline::Pipeline;
use verdict::telemetry::Metrics;

/// Process CPU time (user + system, every thread) from `/proc/self/stat`, in seconds.
fn proc_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14,
    // stime 15, in clock ticks (USER_HZ, 100 on Linux).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Waits for the gauge to move (a sample was taken), then reads (CPU s, decisions, gauge).
fn at_next_sample(m: &Metrics) -> (f64, u64, f64) {
    let gauge = || m.cost.cpu_seconds_per_1k.get();
    let before = gauge();
    let start = Instant::now();
    while gauge().to_bits() == before.to_bits() {
        assert!(start.elapsed() < Duration::from_secs(5), "the cost gauge did not move");
        std::thread::sleep(Duration::from_micros(500));
    }
    (proc_cpu_seconds(), m.counted("decode", "ok"), gauge())
}

#[test]
fn cpu_seconds_per_1k_decisions_match_proc_over_the_same_window_and_are_priced() {
    let (mock, mut cfg) = mock_setup(2);
    // A 3 s window sampled every 250 ms; a $0.68/h, 4-core instance.
    cfg.cost.window_s = 3;
    cfg.cost.instance_usd_per_hour = Some(0.68);
    cfg.cost.instance_cores = Some(4.0);
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    assert!(m.cost.cpu_seconds_per_1k.get().is_nan(), "nothing decided yet: no cost");
    let stream = Stream::start(mock.bootstrap(), 0, 30_000, 2_000, 41);
    wait_for("a steady stream", Duration::from_secs(60), || handled(&m) >= 4_000);

    // Twelve samples after this one, the gauge's window starts here.
    let (cpu0, dec0, _) = at_next_sample(&m);
    let t0 = Instant::now();
    let mut end = at_next_sample(&m);
    for _ in 1..12 {
        end = at_next_sample(&m);
    }
    let (cpu1, dec1, gauge) = end;
    let window = t0.elapsed();
    let usd = m.cost.usd_per_million.get();
    let body = m.render();
    stream.finish();
    wait_for("every event", Duration::from_secs(60), || handled(&m) >= 30_000);
    assert!(p.shutdown(Duration::from_secs(30)).clean);

    assert!(dec1 - dec0 >= 3_000, "{} decisions in the window", dec1 - dec0);
    let measured = (cpu1 - cpu0) / (dec1 - dec0) as f64 * 1e3;
    let off = (gauge - measured).abs() / measured;
    eprintln!(
        "gauge {gauge:.4}, /proc {measured:.4} CPU-s per 1k decisions over {window:?}, {} decisions",
        dec1 - dec0
    );
    assert!(
        off < 0.10,
        "gauge {gauge:.4} vs /proc {measured:.4} CPU-s per 1k decisions ({:.1}% off) over {window:?}, {} decisions",
        off * 100.0,
        dec1 - dec0
    );
    // A core-second of the instance costs 0.68 / 3600 / 4 dollars.
    let want = gauge / 1e3 * (0.68 / 3600.0 / 4.0) * 1e6;
    assert!((usd - want).abs() <= 1e-9 * want, "usd {usd} vs {want}");
    assert!(body.contains("verdict_cpu_seconds_per_1k_decisions "), "{body}");
    assert!(body.contains("verdict_usd_per_million_decisions "), "{body}");
}

#[test]
fn without_an_instance_price_no_dollar_gauge_is_exported() {
    let (_mock, cfg) = mock_setup(1);
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    let body = m.render();
    p.abort();
    assert!(body.contains("verdict_cpu_seconds_per_1k_decisions NaN"), "{body}");
    assert!(!body.contains("verdict_usd_per_million_decisions"), "{body}");
}
