//! The stall watchdog: readiness means "making progress", not "started".
//!
//! Every quarter second it looks at whether there is work (consumer lag from librdkafka's
//! statistics, or batches dispatched and not yet acknowledged) and when a batch was last
//! acknowledged. With work waiting and no acknowledgement for `telemetry.stall_timeout_s`,
//! `verdict_stalled` is 1 and `/readyz` answers 503, until progress resumes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::core::Collector;

use crate::telemetry::Metrics;

/// Watches one pipeline for stalls.
pub struct Watchdog {
    timeout: Duration,
    metrics: Arc<Metrics>,
    in_flight: Arc<AtomicUsize>,
}

impl Watchdog {
    /// A watchdog that reports a stall after `timeout` without progress (zero: never).
    pub fn new(timeout: Duration, metrics: Arc<Metrics>, in_flight: Arc<AtomicUsize>) -> Self {
        Self { timeout, metrics, in_flight }
    }

    /// Consumer lag summed over the assigned partitions (from the last statistics).
    fn lag(&self) -> i64 {
        self.metrics
            .consumer_lag
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|m| m.get_gauge().get_value() as i64)
            .filter(|&lag| lag > 0)
            .sum()
    }

    /// Runs until `stopped` says so.
    pub fn run(self, stopped: impl Fn() -> bool) {
        if self.timeout.is_zero() {
            while !stopped() {
                std::thread::sleep(Duration::from_millis(250));
            }
            return;
        }
        let stalled = &self.metrics.guards.stalled;
        let last_progress = &self.metrics.guards.last_progress;
        let mut seen = last_progress.get();
        // When the pipeline last made progress or last had nothing to do.
        let mut since = Instant::now();
        while !stopped() {
            std::thread::sleep(Duration::from_millis(250));
            let progress = last_progress.get();
            let waiting = self.in_flight.load(Ordering::SeqCst) > 0 || self.lag() > 0;
            if progress != seen || !waiting {
                seen = progress;
                since = Instant::now();
            }
            let now_stalled = waiting && since.elapsed() >= self.timeout;
            if now_stalled && stalled.get() == 0 {
                tracing::error!(
                    seconds = since.elapsed().as_secs(),
                    in_flight = self.in_flight.load(Ordering::SeqCst),
                    lag = self.lag(),
                    "stalled: work is waiting but nothing was acknowledged; /readyz now fails"
                );
            } else if !now_stalled && stalled.get() == 1 {
                tracing::info!("progress resumed; no longer stalled");
            }
            stalled.set(i64::from(now_stalled));
        }
        stalled.set(0);
    }
}
