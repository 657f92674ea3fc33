//! Metrics, health and logs: the only place metric names live.
//!
//! Each pipeline owns one [`Metrics`] (its own Prometheus registry, so several
//! pipelines in one test process do not mix their counts). The HTTP server
//! serves `/metrics`, `/healthz` and `/readyz` from it.
//!
//! - `names`: the metric names;
//! - `metrics`: the registry and the counting helpers;
//! - `guards`: the never-wedge guards' metrics and the failure state;
//! - `health`: readiness, health and the HTTP endpoints;
//! - `cost`: CPU-seconds and dollars per decision, and the `[cost]` section.

mod cost;
mod guards;
mod health;
mod metrics;
mod names;
mod state;

pub use cost::{process_cpu_seconds, CostConfig, CostMeter, CostMetrics, CostReading};
pub use guards::Guards;
pub use health::{serve, RolloutView};
pub use metrics::Metrics;
pub use names::*;
pub use state::StateMetrics;

/// Installs the global `tracing` subscriber (pretty or JSON lines).
pub fn init_logging(format: &str, level: &str) {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DeadLetterReason;

    #[test]
    fn exposition_names_every_dead_letter_reason_even_before_any_occurs() {
        let m = Metrics::new();
        let text = m.render();
        for r in DeadLetterReason::ALL {
            assert!(text.contains(&format!("{DEAD_LETTERS_TOTAL}{{reason=\"{}\"}} 0", r.code())), "{}", r.code());
        }
    }

    #[test]
    fn ready_only_with_model_and_partitions() {
        let m = Metrics::new();
        assert!(!m.ready());
        m.set_model("m", "1", "cpu");
        assert!(!m.ready());
        m.partitions_assigned.set(2);
        assert!(m.ready());
        assert_eq!(m.readiness()["execution_provider"], "cpu");
    }
}
