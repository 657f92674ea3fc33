//! Configuration of drift statistics against the model's training baseline.
//!
//! `config` composes this into the one tree ([`crate::config::Config`]) and re-exports it;
//! serde names, defaults and `deny_unknown_fields` are the file format, so change them there.

use serde::{Deserialize, Serialize};

/// Drift statistics: windows, destination, alert thresholds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Compute and publish drift statistics (needs a `baseline` in the model manifest).
    pub enabled: bool,
    /// Topic drift records are published to.
    pub topic: String,
    /// A window ends after this many seconds...
    pub window_s: u64,
    /// ...or this many decided events, whichever comes first.
    pub window_events: u64,
    /// PSI above this: warn.
    pub psi_warn: f64,
    /// PSI above this: alert.
    pub psi_alert: f64,
    /// Instance id in drift records; empty: $HOSTNAME, else the process id.
    pub instance: String,
    /// Topic of delayed labels (`{"event_id": .., "label": 0|1}`); empty: no label join.
    pub labels_topic: String,
    /// How long scored events are kept (Redis TTL) for their labels, seconds.
    pub labels_horizon_s: u64,
    /// Scored events waiting to be written to Redis; beyond this they are not kept (counted).
    pub labels_queue: usize,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            topic: "drift".into(),
            window_s: 60,
            window_events: 50_000,
            psi_warn: 0.1,
            psi_alert: 0.25,
            instance: String::new(),
            labels_topic: String::new(),
            labels_horizon_s: 7 * 86_400,
            labels_queue: 100_000,
        }
    }
}
