//! The stall watchdog: readiness means "making progress", not "started".
//!
//! Every quarter second it looks at whether there is work (batches dispatched and not yet
//! acknowledged) and when a batch was last acknowledged. With work waiting and no
//! acknowledgement for `telemetry.stall_timeout_s`, `verdict_stalled` is 1 and `/readyz`
//! answers 503, until progress resumes.
//!
//! Consumer lag is not used: librdkafka measures it against the committed offset and keeps
//! reporting it for revoked partitions, so an idle instance (after a rebalance, behind a
//! transaction marker, or between commits) would look stalled. Whatever stops progress
//! (a worker, the enrich stage, the acker, a full batch queue) leaves batches in flight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::backoff::sleep_unless;
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

    /// Runs until `cancel` is cancelled.
    pub fn run(self, cancel: &CancellationToken) {
        const TICK: Duration = Duration::from_millis(250);
        if self.timeout.is_zero() {
            while sleep_unless(TICK, cancel) {}
            return;
        }
        let stalled = &self.metrics.guards.stalled;
        let last_progress = &self.metrics.guards.last_progress;
        let mut seen = last_progress.get();
        // When the pipeline last made progress or last had nothing to do.
        let mut since = Instant::now();
        while sleep_unless(TICK, cancel) {
            let progress = last_progress.get();
            let waiting = self.in_flight.load(Ordering::SeqCst) > 0;
            if progress != seen || !waiting {
                seen = progress;
                since = Instant::now();
            }
            let now_stalled = waiting && since.elapsed() >= self.timeout;
            if now_stalled && stalled.get() == 0 {
                tracing::error!(
                    seconds = since.elapsed().as_secs(),
                    in_flight = self.in_flight.load(Ordering::SeqCst),
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
