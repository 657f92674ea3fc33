//! Settings of the Rust heap's allocator (mimalloc, which the `verdict` binary and the
//! benches install): freed pages go back to the system at once instead of after a second.
//! And the C heap (glibc's `malloc`: librdkafka, ONNX Runtime) given back every few seconds
//! ([`trim_every`]).
//!
//! mimalloc 3 keeps a freed page resident for `purge_delay` (1,000 ms by default) before it
//! gives it back. The windows of 50,000 entities plus a second's worth of transient
//! buffers freed and not yet purged made the Redis backend's RSS 208–211 MiB; with
//! immediate purging it is 194–196 MiB at the same CPU (BENCHMARKS.md, issue 24).
//! `MIMALLOC_PURGE_DELAY` in the environment still wins.

use std::ffi::c_long;

// mimalloc's C library is linked through its crate (the binary and the benches install it
// as the global allocator; unit tests only call its options).
use mimalloc as _;

/// `mi_option_purge_delay`: its index in mimalloc's option enum (the same in versions 2
/// and 3; a unit test checks it against the option's default).
const PURGE_DELAY: i32 = 15;

/// The purge delay verdict sets (ms): pages are given back as soon as they are free.
pub const PURGE_DELAY_MS: c_long = 0;

unsafe extern "C" {
    fn mi_option_set(option: i32, value: c_long);
    fn mi_option_get(option: i32) -> c_long;
}

/// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`] unless `MIMALLOC_PURGE_DELAY` is set.
/// Call first thing in `main`.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options (an integer), as its API allows at any time.
        unsafe { mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// mimalloc's purge delay now (ms).
pub fn purge_delay_ms() -> c_long {
    // SAFETY: reads one of mimalloc's options.
    unsafe { mi_option_get(PURGE_DELAY) }
}

/// How often [`trim_every`] gives the C heap's free memory back.
pub const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Gives glibc's free heap memory back to the system (`malloc_trim(0)`): the pages of free
/// chunks anywhere in its arenas, not only at their tops. Returns whether any was released.
/// A no-op (false) where the C library is not glibc.
///
/// librdkafka's buffers come from glibc's `malloc`. After a catch-up (a backlog drained, a
/// pause, a slow Redis) its arenas keep the burst's freed chunks resident: ~30 MiB in the
/// `rss` bench after a 1-minute backlog at 60k events/s, given back by one call (BENCHMARKS.md,
/// issue 24). In steady state a call finds little and takes well under a millisecond.
pub fn trim() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: glibc's malloc_trim takes its arenas' locks itself; any thread may call it.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

/// Calls [`trim`] every `interval` until `cancel` is cancelled (the pipeline's `verdict-heap`
/// thread).
pub fn trim_every(interval: std::time::Duration, cancel: &tokio_util::sync::CancellationToken) {
    while crate::backoff::sleep_unless(interval, cancel) {
        trim();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn freed_c_heap_memory_is_given_back() {
        if !cfg!(target_env = "gnu") {
            return;
        }
        // 64 MiB in 4 KiB chunks (under the mmap threshold: glibc's heap), all but the last
        // freed: the last one keeps the heap's top, so only a trim can give the rest back.
        let chunks: Vec<*mut libc::c_void> = (0..16_384).map(|_| unsafe { libc::malloc(4096) }).collect();
        for &c in &chunks {
            // SAFETY: writes within the 4 KiB just allocated, so its page is resident.
            unsafe { std::ptr::write_bytes(c.cast::<u8>(), 1, 4096) };
        }
        for &c in &chunks[..chunks.len() - 1] {
            // SAFETY: each was allocated above and is freed once.
            unsafe { libc::free(c) };
        }
        assert!(super::trim(), "64 MiB of free chunks below a live one: some pages given back");
        // SAFETY: the last chunk, allocated above.
        unsafe { libc::free(chunks[chunks.len() - 1]) };
    }

    #[test]
    fn the_option_set_is_mimallocs_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the environment decides
        }
        // Only `purge_delay` defaults to 1,000 in mimalloc 3 (10 in mimalloc 2).
        assert!([1_000, 10].contains(&super::purge_delay_ms()), "option {} is not purge_delay", super::PURGE_DELAY);
        super::tune();
        assert_eq!(super::purge_delay_ms(), super::PURGE_DELAY_MS);
    }
}
