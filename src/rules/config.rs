//! Configuration of the decide stage: threshold bands, the deadline fallback, and the live rules file.
//!
//! `config` composes this into the one tree ([`crate::config::Config`]) and re-exports it;
//! serde names, defaults and `deny_unknown_fields` are the file format, so change them there.

use serde::{Deserialize, Serialize};

/// Threshold bands: `score < review_at` → approve, `< decline_at` → review, else decline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecideConfig {
    /// Lowest score that is sent to review.
    pub review_at: f64,
    /// Lowest score that is declined.
    pub decline_at: f64,
    /// End-to-end budget, ms from the message's Kafka timestamp: an event already older when
    /// its batch reaches scoring is decided without the model (`fallback=true`). 0: off.
    pub deadline_ms: u64,
    /// The action of a deadline fallback before rules (approve, review or decline).
    pub fallback_action: String,
}

impl Default for DecideConfig {
    fn default() -> Self {
        Self { review_at: 0.5, decline_at: 0.9, deadline_ms: 0, fallback_action: "review".into() }
    }
}

/// The rules file and how it is kept current.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Rules file (TOML); empty: threshold bands only.
    pub file: String,
    /// How often the file (and its list files) is checked for changes, ms. SIGHUP checks at once.
    pub reload_interval_ms: u64,
    /// How often named lists are re-read (files, Redis sets), s.
    pub list_refresh_s: u64,
    /// Redis for `redis_set` lists; empty: `enrich.redis_url`.
    pub redis_url: String,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self { file: String::new(), reload_interval_ms: 1000, list_refresh_s: 60, redis_url: String::new() }
    }
}
