//! Cost per decision: the process's CPU time per 1,000 decisions over a sliding window and,
//! with an instance price, dollars per million decisions.
//!
//! A meter thread samples the process's CPU time (`getrusage(RUSAGE_SELF)`: every thread,
//! user and system) and the decided-events counter twelve times per `cost.window_s`, and
//! sets the gauges from the oldest sample still in the window to the newest. It reads two
//! numbers per tick: no work on the runtime, nothing on the hot path.
//!
//! Pricing: the instance costs `instance_usd_per_hour` for `instance_cores` cores, so one
//! core-second costs `usd_per_hour / 3600 / cores`, and a decision costs the CPU-seconds
//! it took times that. The process is charged for the cores it uses (its share of the
//! instance), not for capacity it leaves idle:
//!
//! ```text
//! usd_per_million = cpu_s_per_1k / 1000 × usd_per_hour / 3600 / cores × 1e6
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{Gauge, Registry};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::names::{CPU_SECONDS_PER_1K_DECISIONS, USD_PER_MILLION_DECISIONS};
use super::Metrics;

/// Samples per window: the gauges move every `window_s / 12` seconds.
const SAMPLES: u32 = 12;

/// `[cost]`: what a decision costs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CostConfig {
    /// Price of the instance (or node) the process runs on, US dollars per hour. With
    /// `instance_cores`, `verdict_usd_per_million_decisions` is exported.
    pub instance_usd_per_hour: Option<f64>,
    /// Cores that price buys (vCPUs of the instance).
    pub instance_cores: Option<f64>,
    /// Length of the sliding window the gauges cover (s); sampled 12 times per window.
    pub window_s: u64,
}

impl Default for CostConfig {
    fn default() -> Self {
        Self { instance_usd_per_hour: None, instance_cores: None, window_s: 60 }
    }
}

impl CostConfig {
    /// Every problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut e = Vec::new();
        for (key, v) in [("instance_usd_per_hour", self.instance_usd_per_hour), ("instance_cores", self.instance_cores)]
        {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0)) {
                e.push(format!("cost.{key}: must be a positive number, got {v}"));
            }
        }
        match (self.instance_usd_per_hour, self.instance_cores) {
            (Some(_), None) => e.push("cost.instance_cores: required with cost.instance_usd_per_hour".into()),
            (None, Some(_)) => e.push("cost.instance_usd_per_hour: required with cost.instance_cores".into()),
            _ => {}
        }
        if self.window_s == 0 {
            e.push("cost.window_s: must be > 0".into());
        }
        e
    }

    /// Dollars per core-second, when the instance price is set.
    pub fn usd_per_core_second(&self) -> Option<f64> {
        Some(self.instance_usd_per_hour? / 3600.0 / self.instance_cores?)
    }
}

/// Process CPU time so far, user + system, every thread (seconds, µs resolution).
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// What decisions cost between two readings of CPU time and decisions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostReading {
    /// CPU-seconds per 1,000 decisions (NaN when nothing was decided).
    pub cpu_seconds_per_1k: f64,
    /// Dollars per million decisions, with an instance price.
    pub usd_per_million: Option<f64>,
}

impl CostReading {
    /// From `(cpu_s, decisions)` at the start and at the end of an interval.
    pub fn between(start: (f64, u64), end: (f64, u64), cfg: &CostConfig) -> Self {
        let decisions = end.1.saturating_sub(start.1);
        let cpu_seconds_per_1k =
            if decisions == 0 { f64::NAN } else { (end.0 - start.0).max(0.0) / decisions as f64 * 1e3 };
        let usd_per_million = cfg.usd_per_core_second().map(|usd| cpu_seconds_per_1k / 1e3 * usd * 1e6);
        Self { cpu_seconds_per_1k, usd_per_million }
    }
}

impl std::fmt::Display for CostReading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3} CPU-s per 1k decisions", self.cpu_seconds_per_1k)?;
        if let Some(usd) = self.usd_per_million {
            write!(f, ", ${usd:.6} per million decisions")?;
        }
        Ok(())
    }
}

/// The cost gauges of one pipeline.
pub struct CostMetrics {
    /// See [`CPU_SECONDS_PER_1K_DECISIONS`].
    pub cpu_seconds_per_1k: Gauge,
    /// See [`USD_PER_MILLION_DECISIONS`]: registered once an instance price is configured.
    pub usd_per_million: Gauge,
    registry: Registry,
}

impl CostMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let cpu_seconds_per_1k = Gauge::new(
            CPU_SECONDS_PER_1K_DECISIONS,
            "Process CPU-seconds per 1,000 decisions over the last cost.window_s (NaN: no decisions)",
        )
        .unwrap();
        cpu_seconds_per_1k.set(f64::NAN);
        registry.register(Box::new(cpu_seconds_per_1k.clone())).unwrap();
        let usd_per_million = Gauge::new(
            USD_PER_MILLION_DECISIONS,
            "Dollars per million decisions over the last cost.window_s, at the configured instance price",
        )
        .unwrap();
        usd_per_million.set(f64::NAN);
        Self { cpu_seconds_per_1k, usd_per_million, registry: registry.clone() }
    }

    fn set(&self, r: CostReading) {
        self.cpu_seconds_per_1k.set(r.cpu_seconds_per_1k);
        if let Some(usd) = r.usd_per_million {
            self.usd_per_million.set(usd);
        }
    }
}

/// Samples CPU time and decisions and sets the cost gauges (one thread per pipeline).
pub struct CostMeter {
    cfg: CostConfig,
    metrics: Arc<Metrics>,
}

impl CostMeter {
    /// A meter for `metrics`' pipeline; exports the dollar gauge when a price is set.
    pub fn new(cfg: &CostConfig, metrics: Arc<Metrics>) -> Self {
        if cfg.usd_per_core_second().is_some() {
            // Once per registry: a second pipeline on the same metrics finds it there.
            let _ = metrics.cost.registry.register(Box::new(metrics.cost.usd_per_million.clone()));
        }
        Self { cfg: cfg.clone(), metrics }
    }

    /// `(cpu_s, decisions)` now.
    fn sample(&self) -> (f64, u64) {
        (process_cpu_seconds(), self.metrics.counted("decode", "ok"))
    }

    /// Runs until `cancel` is cancelled.
    pub fn run(self, cancel: &CancellationToken) {
        let tick = Duration::from_secs(self.cfg.window_s.max(1)) / SAMPLES;
        let mut window = VecDeque::with_capacity(SAMPLES as usize + 1);
        window.push_back(self.sample());
        while crate::backoff::sleep_unless(tick, cancel) {
            window.push_back(self.sample());
            if window.len() > SAMPLES as usize + 1 {
                window.pop_front();
            }
            let (first, last) = (window[0], window[window.len() - 1]);
            self.metrics.cost.set(CostReading::between(first, last, &self.cfg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_need_each_other_and_must_be_positive() {
        let cfg = |usd, cores| CostConfig { instance_usd_per_hour: usd, instance_cores: cores, window_s: 60 };
        assert!(cfg(None, None).validate().is_empty());
        assert!(cfg(Some(0.68), Some(4.0)).validate().is_empty());
        assert_eq!(cfg(Some(0.68), None).validate(), ["cost.instance_cores: required with cost.instance_usd_per_hour"]);
        assert_eq!(cfg(None, Some(4.0)).validate(), ["cost.instance_usd_per_hour: required with cost.instance_cores"]);
        assert_eq!(
            cfg(Some(-1.0), Some(0.0)).validate(),
            [
                "cost.instance_usd_per_hour: must be a positive number, got -1",
                "cost.instance_cores: must be a positive number, got 0"
            ]
        );
        assert_eq!(CostConfig { window_s: 0, ..cfg(None, None) }.validate(), ["cost.window_s: must be > 0"]);
    }

    #[test]
    fn a_decision_is_charged_its_cpu_seconds_at_the_price_of_a_core_second() {
        // 2 CPU-s for 4,000 decisions on a $0.72/h, 4-core instance: 0.5 CPU-s per 1k, and a
        // core-second costs $0.00005, so a million decisions cost 500 CPU-s = $0.025.
        let cfg = CostConfig { instance_usd_per_hour: Some(0.72), instance_cores: Some(4.0), window_s: 60 };
        let r = CostReading::between((10.0, 1_000), (12.0, 5_000), &cfg);
        assert!((r.cpu_seconds_per_1k - 0.5).abs() < 1e-12);
        assert!((r.usd_per_million.unwrap() - 0.025).abs() < 1e-12);
        assert_eq!(r.to_string(), "0.500 CPU-s per 1k decisions, $0.025000 per million decisions");
        let idle = CostReading::between((10.0, 5_000), (11.0, 5_000), &CostConfig::default());
        assert!(idle.cpu_seconds_per_1k.is_nan() && idle.usd_per_million.is_none());
    }

    #[test]
    fn process_cpu_time_grows_with_work() {
        // Spins until 20 ms of CPU time show (the machine may be busy: no wall-time bound on
        // how much CPU this thread gets, only a generous timeout).
        let before = process_cpu_seconds();
        assert!(before.is_finite() && before > 0.0, "{before}");
        let (t, mut x) = (std::time::Instant::now(), 0u64);
        while process_cpu_seconds() - before < 0.02 {
            assert!(t.elapsed() < Duration::from_secs(10), "no CPU time counted in 10 s of spinning");
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
    }
}
