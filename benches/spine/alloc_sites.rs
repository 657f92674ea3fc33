//! Where verdict's allocations come from (`BENCH_ALLOC_SITES=N`): while a backlog drains,
//! every Nth allocation counted (not the bench's own threads) records its call stack, and
//! the drain prints the stacks that recorded most, so "allocations per event" names its
//! sources. Recording allocates; those allocations are not recorded (and the counted figure
//! of a run with sites on is not a measurement).

use std::backtrace::Backtrace;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Record every Nth counted allocation (0: off).
static EVERY: AtomicU64 = AtomicU64::new(0);
/// The stacks recorded so far.
static STACKS: Mutex<Vec<Backtrace>> = Mutex::new(Vec::new());

thread_local! {
    /// The calling thread is recording a stack (its own allocations are not recorded).
    static RECORDING: Cell<bool> = const { Cell::new(false) };
}

/// Called for the `n`th counted allocation.
pub fn counted(n: u64) {
    let every = EVERY.load(Ordering::Relaxed);
    if every == 0 || !n.is_multiple_of(every) || RECORDING.try_with(Cell::get).unwrap_or(true) {
        return;
    }
    RECORDING.with(|r| r.set(true));
    let stack = Backtrace::force_capture();
    STACKS.lock().unwrap_or_else(|p| p.into_inner()).push(stack);
    RECORDING.with(|r| r.set(false));
}

/// Starts recording when `BENCH_ALLOC_SITES` is set.
pub fn start() {
    EVERY.store(super::env_u64("BENCH_ALLOC_SITES", 0), Ordering::Relaxed);
}

/// Stops recording and prints the most frequent stacks (verdict's frames, allocator frames
/// left out), with the share of the samples each has.
pub fn stop_and_print() {
    if EVERY.swap(0, Ordering::Relaxed) == 0 {
        return;
    }
    let stacks = std::mem::take(&mut *STACKS.lock().unwrap_or_else(|p| p.into_inner()));
    // BENCH_ALLOC_DEPTH: frames kept per stack (8 unless set).
    let depth = super::env_u64("BENCH_ALLOC_DEPTH", 8) as usize;
    let mut sites: HashMap<String, usize> = HashMap::new();
    for s in &stacks {
        let text = s.to_string();
        let frames: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("at ") && !l.contains("/rustc/") && !l.contains("alloc_sites.rs"))
            .filter(|l| !l.contains("benches/spine.rs"))
            .take(depth)
            .collect();
        *sites.entry(frames.join("\n      ")).or_default() += 1;
    }
    let mut sites: Vec<_> = sites.into_iter().collect();
    sites.sort_by_key(|s| std::cmp::Reverse(s.1));
    println!(
        "  allocation sites ({} stacks, one per {} allocations):",
        stacks.len(),
        super::env_u64("BENCH_ALLOC_SITES", 0)
    );
    for (site, n) in sites.iter().take(25) {
        println!("    {:5.1}%  {}", 100.0 * *n as f64 / stacks.len().max(1) as f64, site);
    }
}
