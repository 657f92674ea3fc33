//! Configuration of the decide stage: threshold bands, the deadline fallback, and the live rules file.
//!
//! `config` composes this into the one tree ([`crate::config::Config`]) and re-exports it;
//! serde names, defaults and `deny_unknown_fields` are the file format, so change them there.

use serde::{Deserialize, Serialize};

use crate::core::decision::{ActionSpec, Actions};

/// The decision vocabulary and its threshold bands. Without `actions`: `score < review_at` →
/// approve, `< decline_at` → review, else decline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecideConfig {
    /// Lowest score that is sent to review (the default vocabulary only).
    pub review_at: f64,
    /// Lowest score that is declined (the default vocabulary only).
    pub decline_at: f64,
    /// A named vocabulary instead of approve / review / decline, least severe first (on
    /// equal rule priority the more severe wins); each with its score band, if any, and
    /// whether it goes to the review topic.
    pub actions: Vec<ActionConfig>,
    /// End-to-end budget, ms from the message's Kafka timestamp: an event already older when
    /// its batch reaches scoring is decided without the model (`fallback=true`). 0: off.
    pub deadline_ms: u64,
    /// The action of a deadline fallback before rules (one of the vocabulary's actions).
    pub fallback_action: String,
}

impl Default for DecideConfig {
    fn default() -> Self {
        Self { review_at: 0.5, decline_at: 0.9, actions: Vec::new(), deadline_ms: 0, fallback_action: "review".into() }
    }
}

/// One action of a named vocabulary (`[[decide.actions]]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// Its name in records, rules, metrics and the decision schema's `Action` enum: a letter
    /// or `_`, then letters, digits or `_`.
    pub name: String,
    /// Lowest score the threshold bands give this action, up to the next action's; one
    /// action starts at 0. Absent: only rules and the deadline fallback choose it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub band_from: Option<f64>,
    /// Its decisions also go to the review topic.
    #[serde(default)]
    pub review: bool,
    /// The review priority of its review cases (default: the rules file's `[review] priority`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_priority: Option<i64>,
}

impl DecideConfig {
    /// The decision vocabulary this configures (`actions`, or approve / review / decline at
    /// `review_at` / `decline_at`); every problem at once, naming its `decide.` key.
    pub fn vocabulary(&self) -> Result<Actions, Vec<String>> {
        let named = |e: Vec<String>| e.into_iter().map(|e| format!("decide.{e}")).collect::<Vec<_>>();
        if self.actions.is_empty() {
            return Actions::fraud(self.review_at, self.decline_at, &self.fallback_action)
                .map_err(|e| vec![format!("decide.{e}")]);
        }
        let mut errors = Vec::new();
        let d = Self::default();
        for (key, v, default) in
            [("review_at", self.review_at, d.review_at), ("decline_at", self.decline_at, d.decline_at)]
        {
            if v != default {
                errors.push(format!(
                    "decide.{key}: only for the default approve / review / decline actions; with decide.actions give each its band_from"
                ));
            }
        }
        let specs: Vec<ActionSpec> = self
            .actions
            .iter()
            .map(|a| ActionSpec {
                name: a.name.clone(),
                band_from: a.band_from,
                review: a.review,
                review_priority: a.review_priority,
            })
            .collect();
        match Actions::new(&specs, &self.fallback_action) {
            Ok(a) if errors.is_empty() => Ok(a),
            Ok(_) => Err(errors),
            Err(e) => {
                errors.extend(named(e));
                Err(errors)
            }
        }
    }

    /// The vocabulary of a validated config (`Config::load` checked it).
    pub fn actions(&self) -> Actions {
        self.vocabulary().expect("decide.* validated when the config was loaded")
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
