//! A rules file, validated and compiled: ordered rules, named lists, the review priority,
//! and the content hash that versions it.
//!
//! ```toml
//! [review]
//! priority = "score * 100.0 + (event.amount > 1000.0 ? 50.0 : 0.0)"
//!
//! [lists.deny_cards]
//! file = "deny_cards.txt"          # one entry per line, relative to this file
//! [lists.risky_countries]
//! values = ["NG", "KP"]
//! [lists.vip_cards]
//! redis_set = "verdict:list:vip"   # refreshed every rules.list_refresh_s
//!
//! [[rules]]
//! id = "deny-listed-card"
//! description = "Card on the deny list"
//! condition = "event.card_id in lists.deny_cards"
//! action = "decline"               # an action of decide.actions, or a custom name (with `outcome`)
//! reason = "card_deny_listed"
//! priority = 100
//! mode = "enforce"                 # or monitor: recorded, never acting
//! ```
//!
//! Conflict resolution: the threshold bands act as a rule with priority 0. Among the
//! enforce rules that fired and the band, the highest priority wins; on equal priority the
//! most severe action (later in `decide.actions`; decline > review > approve by default);
//! then the earlier rule in the file.
//!
//! `load` reads and validates the file; this file holds the compiled set and applies it.

use std::collections::HashSet;
use std::sync::Arc;

use super::expr::{EvalError, Names, Node, Scope};
use super::{Action, RuleHit, RuleMode};

mod load;
#[cfg(test)]
mod tests;

pub use load::ListSpec;

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Unique id.
    pub id: Arc<str>,
    /// What it is for.
    pub description: String,
    /// Its condition source.
    pub source: String,
    condition: Node,
    /// Its vocabulary action (routing, severity).
    pub action: Action,
    /// The action's name: the vocabulary action's, or a custom one (with `outcome`).
    pub action_name: Arc<str>,
    /// Reason code.
    pub reason: Arc<str>,
    /// Higher wins.
    pub priority: i32,
    /// Enforce or monitor.
    pub mode: RuleMode,
}

/// A validated, compiled rules file.
#[derive(Debug)]
pub struct RuleSet {
    /// Content hash (first 16 hex digits of SHA-256 of the file, lists included).
    pub version: Arc<str>,
    /// Rules in file order.
    pub rules: Vec<Rule>,
    /// Names the conditions use (event paths to extract, enrichment names, lists).
    pub names: Names,
    /// Named lists' sources, in `names.lists` order.
    pub list_specs: Vec<(String, ListSpec)>,
    /// Entries of file and inline lists loaded at validation (Redis lists start empty).
    pub initial_lists: Vec<Arc<HashSet<String>>>,
    review_priority: Node,
}

/// The outcome of rules + bands for one event.
#[derive(Debug, Clone, PartialEq)]
pub struct RulesOutcome {
    /// Action taken.
    pub action: Action,
    /// Custom action name, when the deciding rule has one.
    pub action_name: Option<Arc<str>>,
    /// Reason code of the deciding rule, None when the band decided.
    pub reason: Option<Arc<str>>,
    /// Every rule that fired, enforce and monitor.
    pub hits: Vec<RuleHit>,
    /// Rules whose condition could not be evaluated (absent value, type mismatch).
    pub errors: u32,
}

impl RuleSet {
    /// Applies the rules to one event whose band decision is `band`. `fired[i]` counts the
    /// hits of rule `i` (callers add them to metrics once per batch).
    pub fn decide(&self, band: Action, scope: &Scope<'_>, out: &mut RulesOutcome, fired: &mut [u64]) {
        out.action = band;
        out.action_name = None;
        out.reason = None;
        out.hits.clear();
        out.errors = 0;
        // The band is the priority-0 candidate; a rule replaces it only by ranking higher.
        let mut best: (i32, Action, Option<&Rule>) = (0, band, None);
        for (i, r) in self.rules.iter().enumerate() {
            match r.condition.test(scope) {
                Ok(true) => {
                    if let Some(f) = fired.get_mut(i) {
                        *f += 1;
                    }
                    out.hits.push(RuleHit {
                        id: r.id.clone(),
                        reason: r.reason.clone(),
                        mode: r.mode,
                        action: r.action_name.clone(),
                    });
                    if r.mode == RuleMode::Enforce && (r.priority, r.action) > (best.0, best.1) {
                        best = (r.priority, r.action, Some(r));
                    }
                }
                Ok(false) => {}
                Err(EvalError) => out.errors += 1,
            }
        }
        if let Some(r) = best.2 {
            out.action = r.action;
            out.reason = Some(r.reason.clone());
            if r.action_name.as_ref() != r.action.label() {
                out.action_name = Some(r.action_name.clone());
            }
        }
    }

    /// The review priority of an event (0 when it cannot be evaluated).
    pub fn review_priority(&self, scope: &Scope<'_>) -> i64 {
        match self.review_priority.eval(scope) {
            Ok(super::expr::Val::Num(x)) => x.round().clamp(i64::MIN as f64, i64::MAX as f64) as i64,
            _ => 0,
        }
    }

    /// Event paths the decoder must extract for these rules.
    pub fn event_paths(&self) -> &[String] {
        &self.names.event_paths
    }
}

impl Default for RulesOutcome {
    fn default() -> Self {
        Self { action: Action::APPROVE, action_name: None, reason: None, hits: Vec::new(), errors: 0 }
    }
}

/// Entries of a list file: one per line, blank lines and `#` comments skipped.
pub fn read_list(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines().map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty()).map(str::to_string)
}
