//! The wall clock, read one way everywhere.
//!
//! In `core` because the consumer, the enrich stage and the acknowledger all read it; a
//! stage should not import another stage for the time of day.

/// Milliseconds since the Unix epoch.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
