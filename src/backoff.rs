//! One exponential backoff for every retry loop in verdict (produce, acknowledge, enrich,
//! scoring, state-store reconnects): doubling from `initial`, capped at `max`, and a sleep
//! that wakes early when the pipeline is cancelled.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Doubling delays from `initial` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    attempts: u32,
}

impl Backoff {
    /// Starts at `initial`, doubles per attempt, never above `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max, next: initial.min(max), attempts: 0 }
    }

    /// The delay before the next try (and advances the sequence).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        self.attempts += 1;
        d
    }

    /// How many delays have been handed out since the start or the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Back to `initial` (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
        self.attempts = 0;
    }

    /// Sleeps the next delay on this thread; returns false at once if `cancel` fires first.
    pub fn wait(&mut self, cancel: &CancellationToken) -> bool {
        sleep_unless(self.next_delay(), cancel)
    }
}

/// Sleeps `d` on this thread unless `cancel` fires first (checked every 10 ms); returns
/// whether the whole sleep ran.
pub fn sleep_unless(d: Duration, cancel: &CancellationToken) -> bool {
    let end = std::time::Instant::now() + d;
    loop {
        if cancel.is_cancelled() {
            return false;
        }
        let now = std::time::Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(10)));
    }
}

/// Waits until `kick` has a message or `interval` has passed (true), or `cancel` fires first
/// (false): a watcher's wait between checks. `cancel` is looked at every 50 ms.
pub fn wait_for_kick<T>(kick: &crossbeam_channel::Receiver<T>, interval: Duration, cancel: &CancellationToken) -> bool {
    let due = crossbeam_channel::after(interval);
    let ticks = crossbeam_channel::tick(Duration::from_millis(50));
    while !cancel.is_cancelled() {
        crossbeam_channel::select! {
            recv(kick) -> _ => return !cancel.is_cancelled(),
            recv(due) -> _ => return !cancel.is_cancelled(),
            recv(ticks) -> _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let got: Vec<u64> = (0..5).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, [50, 100, 200, 300, 300]);
        assert_eq!(b.attempts(), 5);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(50));
    }

    #[test]
    fn a_cancelled_wait_returns_at_once() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let t = std::time::Instant::now();
        assert!(!Backoff::new(Duration::from_secs(5), Duration::from_secs(5)).wait(&cancel));
        assert!(t.elapsed() < Duration::from_millis(100));
    }
}
