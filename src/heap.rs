//! Settings of the Rust heap's allocator (mimalloc, which the `verdict` binary and the
//! benches install): freed pages go back to the system at once instead of after a second.
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

#[cfg(test)]
mod tests {
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
