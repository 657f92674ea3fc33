//! Rate-limited logging of repeating errors.
//!
//! A broker that is down makes librdkafka report the same error ~20 times a second, and
//! each report used to become a log line (1,026 lines in 20 s). [`LogRate`] logs the first
//! occurrence of an error kind, counts the repeats within a window in
//! `verdict_log_suppressed_total{source}`, and logs one summary line,
//! `... (repeated N times in 30 s)`, when the window ends or the source's error changes.
//!
//! [`KafkaLogs`] routes librdkafka's own log lines and errors through one; [`LimitedContext`]
//! is a librdkafka client context doing only that (producers, the labels consumer).

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::IntCounter;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use tracing::Level;

use crate::telemetry::Metrics;

/// The window of [`LogRate::new`]'s usual callers.
pub const WINDOW: Duration = Duration::from_secs(30);

/// A new error kind tells the previous kind's repeats only if that one began this long ago.
const CHANGE_AFTER: Duration = Duration::from_secs(1);

/// Error kinds tracked at once per limiter; the oldest is summarized and dropped beyond it.
const MAX_KINDS: usize = 32;

/// One error kind seen in the current window.
struct Kind {
    name: String,
    level: Level,
    since: Instant,
    repeats: u64,
    /// A summary was already logged in this window because the error changed.
    summarized: bool,
}

/// The kinds in their windows, and which one occurred last.
#[derive(Default)]
struct Kinds {
    list: Vec<Kind>,
    last: Option<usize>,
}

/// Logs the first occurrence of each error kind per window and counts the rest.
pub struct LogRate {
    source: &'static str,
    window: Duration,
    suppressed: Option<IntCounter>,
    kinds: Mutex<Kinds>,
}

/// Logs at a level known only at run time.
macro_rules! event_at {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            Level::ERROR => tracing::error!($($rest)+),
            Level::WARN => tracing::warn!($($rest)+),
            Level::INFO => tracing::info!($($rest)+),
            Level::DEBUG => tracing::debug!($($rest)+),
            _ => tracing::trace!($($rest)+),
        }
    };
}

impl LogRate {
    /// A limiter for `source` (the `source` label of `verdict_log_suppressed_total`);
    /// without `metrics`, suppressed lines are not counted.
    pub fn new(source: &'static str, window: Duration, metrics: Option<&Metrics>) -> Self {
        let suppressed = metrics.map(|m| m.guards.log_suppressed.with_label_values(&[source]));
        Self { source, window, suppressed, kinds: Mutex::new(Kinds::default()) }
    }

    /// Counts suppressed lines in `metrics` from now on.
    pub fn count_in(&mut self, metrics: &Metrics) {
        self.suppressed = Some(metrics.guards.log_suppressed.with_label_values(&[self.source]));
    }

    /// Records one occurrence of `kind` (a few words that stay the same between repeats,
    /// used in the summary line). True: the caller logs this occurrence, the first of its
    /// kind in the window. False: it was counted; it will be in a summary.
    pub fn admit(&self, level: Level, kind: &str) -> bool {
        let now = Instant::now();
        let mut k = self.kinds.lock();
        self.expire(&mut k, now);
        let at = k.list.iter().position(|x| x.name == kind);
        // The source's error changed to a new one: what the previous one repeated is told
        // now, once a window (alternating errors cannot make a line per change), and only if
        // it had gone on for a while: one failure shows as several kinds at once (a refused
        // connection, then "transport failure", then "all brokers down"), which is no change.
        if let (None, Some(prev)) = (at, k.last) {
            let p = &mut k.list[prev];
            if p.repeats > 0 && !p.summarized && now.duration_since(p.since) >= CHANGE_AFTER {
                self.summary(p, now);
                p.repeats = 0;
                p.summarized = true;
            }
        }
        match at {
            Some(i) => {
                k.list[i].repeats += 1;
                k.last = Some(i);
                if let Some(c) = &self.suppressed {
                    c.inc();
                }
                false
            }
            None => {
                if k.list.len() >= MAX_KINDS {
                    let oldest = (0..k.list.len()).min_by_key(|&i| k.list[i].since).expect("full");
                    let gone = k.list.remove(oldest);
                    self.summary(&gone, now);
                }
                k.list.push(Kind { name: kind.to_string(), level, since: now, repeats: 0, summarized: false });
                k.last = Some(k.list.len() - 1);
                true
            }
        }
    }

    /// Logs the summaries of windows that have ended (callers with a periodic tick use it so
    /// the last summary is not held back until the next error).
    pub fn flush(&self) {
        self.expire(&mut self.kinds.lock(), Instant::now());
    }

    /// Repeats not yet told in a summary (all kinds).
    pub fn pending(&self) -> u64 {
        self.kinds.lock().list.iter().map(|k| k.repeats).sum()
    }

    /// Ends the windows that have run out, with their summaries.
    fn expire(&self, k: &mut Kinds, now: Instant) {
        let window = self.window;
        if !k.list.iter().any(|x| now.duration_since(x.since) >= window) {
            return;
        }
        // Removals move the last kind's slot: find it again by name (rare: once a window).
        let last = k.last.map(|i| k.list[i].name.clone());
        k.list.retain(|x| {
            let ended = now.duration_since(x.since) >= window;
            if ended {
                self.summary(x, now);
            }
            !ended
        });
        k.last = last.and_then(|n| k.list.iter().position(|x| x.name == n));
    }

    fn summary(&self, k: &Kind, now: Instant) {
        if k.repeats == 0 {
            return;
        }
        let secs = now.duration_since(k.since).as_secs().max(1);
        event_at!(
            k.level,
            source = self.source,
            repeated = k.repeats,
            "{} (repeated {} times in {secs} s)",
            k.name,
            k.repeats
        );
    }
}

/// librdkafka's log lines and errors, rate limited (see [`LogRate`]).
pub struct KafkaLogs {
    rate: LogRate,
}

impl KafkaLogs {
    /// Logs of one client: `source` is the label of the suppressed-lines counter
    /// (`kafka_consumer`, `kafka_producer`, `labels_consumer`).
    pub fn new(source: &'static str, metrics: Option<&Metrics>) -> Self {
        Self { rate: LogRate::new(source, WINDOW, metrics) }
    }

    /// A librdkafka log line (`ClientContext::log`). Debug lines (only with `debug=...`)
    /// pass unlimited: whoever turned them on wants them all.
    pub fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let level = match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                Level::ERROR
            }
            RDKafkaLogLevel::Warning => Level::WARN,
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => Level::INFO,
            RDKafkaLogLevel::Debug => {
                return tracing::debug!(target: "librdkafka", fac, "librdkafka: {message}");
            }
        };
        if self.rate.admit(level, &format!("librdkafka {fac}")) {
            event_at!(level, target: "librdkafka", fac, "librdkafka: {message}");
        }
    }

    /// A client-wide error (`ClientContext::error`).
    pub fn error(&self, error: &KafkaError, reason: &str) {
        if self.rate.admit(Level::ERROR, &kind(error)) {
            tracing::error!(source = self.rate.source, error = %error, reason, "kafka client error");
        }
    }

    /// An error a consumer's `poll` returned. A consumer's client-wide errors reach
    /// [`KafkaLogs::error`] first and then `poll`: the same kind, so one line for both.
    pub fn poll_error(&self, error: &KafkaError) {
        if self.rate.admit(Level::WARN, &kind(error)) {
            tracing::warn!(source = self.rate.source, error = %error, "consumer error");
        }
    }

    /// Logs summaries whose window ended (call it from a periodic callback).
    pub fn flush(&self) {
        self.rate.flush();
    }

    /// The client's other repeating failures (commit errors...): see [`LogRate::admit`].
    pub fn admit(&self, level: Level, kind: &str) -> bool {
        self.rate.admit(level, kind)
    }

    /// Counts suppressed lines in `metrics` from now on.
    pub fn count_in(&mut self, metrics: &Metrics) {
        self.rate.count_in(metrics);
    }
}

/// The kind of a Kafka error: its code and description, without the wrapping variant, so a
/// global error and the same error returned by `poll` are one kind.
fn kind(error: &KafkaError) -> String {
    match error.rdkafka_error_code() {
        Some(code) => format!("kafka error {code}"),
        None => format!("kafka error {error}"),
    }
}

/// A client context that only rate-limits librdkafka's logs and errors: for clients with
/// no other callbacks (a producer, the labels consumer).
pub struct LimitedContext {
    logs: KafkaLogs,
}

impl LimitedContext {
    /// A context for the client named `source` (label of the suppressed-lines counter).
    pub fn new(source: &'static str, metrics: Option<&Metrics>) -> Self {
        Self { logs: KafkaLogs::new(source, metrics) }
    }

    /// The rate-limited logs, for the client's own error paths (`poll` errors).
    pub fn logs(&self) -> &KafkaLogs {
        &self.logs
    }
}

impl ClientContext for LimitedContext {
    // OAUTHBEARER tokens (an OAuth token endpoint, or the unsecured test token).
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        crate::core::kafka_security::oauth::token(config)
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.logs.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.logs.error(&error, reason);
    }
}

impl ConsumerContext for LimitedContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_a_kind_is_logged_and_repeats_are_counted() {
        let m = Metrics::new();
        let r = LogRate::new("test", Duration::from_secs(60), Some(&m));
        assert!(r.admit(Level::WARN, "broker down"));
        for _ in 0..5 {
            assert!(!r.admit(Level::WARN, "broker down"));
        }
        assert!(r.admit(Level::WARN, "transport failure"), "another kind is logged at once");
        assert!(!r.admit(Level::WARN, "transport failure"));
        assert_eq!(m.guards.log_suppressed.with_label_values(&["test"]).get(), 6);
        assert_eq!(r.pending(), 6, "kinds arriving together are one failure: no summary yet");
        // A second later the error changes: the previous kind's repeats are told then.
        std::thread::sleep(CHANGE_AFTER);
        assert!(r.admit(Level::WARN, "auth failed"));
        assert_eq!(r.pending(), 5, "the one repeat of the last kind was told");
        assert!(!r.admit(Level::WARN, "broker down"), "its window goes on: still counted, not logged");
    }

    #[test]
    fn a_new_window_logs_the_kind_again() {
        let r = LogRate::new("test", Duration::from_millis(50), None);
        assert!(r.admit(Level::ERROR, "x"));
        assert!(!r.admit(Level::ERROR, "x"));
        std::thread::sleep(Duration::from_millis(60));
        r.flush();
        assert_eq!(r.pending(), 0, "the ended window was summarized");
        assert!(r.admit(Level::ERROR, "x"));
    }

    #[test]
    fn many_kinds_stay_bounded() {
        let r = LogRate::new("test", Duration::from_secs(60), None);
        for i in 0..(MAX_KINDS * 3) {
            assert!(r.admit(Level::INFO, &format!("kind {i}")));
        }
        assert!(r.kinds.lock().list.len() <= MAX_KINDS);
    }

    #[test]
    fn a_global_error_and_the_same_error_from_poll_are_one_kind() {
        use rdkafka::types::RDKafkaErrorCode::AllBrokersDown;
        assert_eq!(kind(&KafkaError::Global(AllBrokersDown)), kind(&KafkaError::MessageConsumption(AllBrokersDown)));
    }
}
