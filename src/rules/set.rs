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
//! action = "decline"               # approve | review | decline | a custom name (with `outcome`)
//! reason = "card_deny_listed"
//! priority = 100
//! mode = "enforce"                 # or monitor: recorded, never acting
//! ```
//!
//! Conflict resolution: the threshold bands act as a rule with priority 0. Among the
//! enforce rules that fired and the band, the highest priority wins; on equal priority the
//! most severe action (decline > review > approve); then the earlier rule in the file.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::expr::{compile, EvalError, Names, Node, Scope};
use super::{Action, RuleHit, RuleMode};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    review: ReviewSpec,
    #[serde(default)]
    lists: BTreeMap<String, ListSpec>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReviewSpec {
    priority: Option<String>,
}

/// Where a named list's entries come from.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListSpec {
    /// A text file, one entry per line (`#` comments), relative to the rules file.
    pub file: Option<PathBuf>,
    /// Inline entries.
    pub values: Option<Vec<String>>,
    /// A Redis set (SMEMBERS), refreshed periodically.
    pub redis_set: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    #[serde(default)]
    description: String,
    condition: String,
    action: String,
    /// For a custom action: the base action it routes as.
    outcome: Option<String>,
    reason: String,
    #[serde(default)]
    priority: i32,
    #[serde(default = "enforce")]
    mode: String,
}

fn enforce() -> String {
    "enforce".into()
}

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
    /// Base action (routing, severity).
    pub action: Action,
    /// The action's name: approve/review/decline or a custom one.
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

fn parse_action(s: &str) -> Option<Action> {
    match s {
        "approve" => Some(Action::Approve),
        "review" => Some(Action::Review),
        "decline" => Some(Action::Decline),
        _ => None,
    }
}

impl RuleSet {
    /// Loads and validates a rules file; every problem is reported at once.
    /// `enriched` are the enrichment names available (`window:…`, `feature:…`).
    pub fn load(path: &Path, enriched: &[String]) -> Result<Self, Vec<String>> {
        let text = std::fs::read(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")), enriched)
    }

    /// Validates rules file contents; file lists are resolved against `dir`.
    pub fn parse(text: &[u8], dir: &Path, enriched: &[String]) -> Result<Self, Vec<String>> {
        let text = std::str::from_utf8(text).map_err(|_| vec!["rules file is not UTF-8".to_string()])?;
        let spec: FileSpec = toml::from_str(text).map_err(|e| vec![format!("rules file: {e}")])?;
        let mut errors = Vec::new();
        let mut hash = Sha256::new();
        hash.update(text.as_bytes());

        let mut names = Names { event_paths: Vec::new(), enriched: enriched.to_vec(), lists: Vec::new() };
        let mut list_specs = Vec::new();
        let mut initial_lists = Vec::new();
        for (name, l) in &spec.lists {
            let sources = [l.file.is_some(), l.values.is_some(), l.redis_set.is_some()];
            if sources.iter().filter(|x| **x).count() != 1 {
                errors.push(format!("lists.{name}: exactly one of file, values, redis_set"));
            }
            let mut set = HashSet::new();
            if let Some(v) = &l.values {
                set.extend(v.iter().cloned());
            }
            if let Some(f) = &l.file {
                let p = dir.join(f);
                match std::fs::read_to_string(&p) {
                    Ok(t) => {
                        hash.update(t.as_bytes());
                        set.extend(read_list(&t));
                    }
                    Err(e) => errors.push(format!("lists.{name}: {}: {e}", p.display())),
                }
            }
            let mut resolved = l.clone();
            resolved.file = l.file.as_ref().map(|f| dir.join(f));
            names.lists.push(name.clone());
            list_specs.push((name.clone(), resolved));
            initial_lists.push(Arc::new(set));
        }

        let mut rules = Vec::new();
        let mut ids = HashSet::new();
        for (i, r) in spec.rules.iter().enumerate() {
            let at = if r.id.is_empty() { format!("rules[{i}]") } else { format!("rule '{}'", r.id) };
            if r.id.is_empty() {
                errors.push(format!("{at}: id is empty"));
            } else if !ids.insert(r.id.clone()) {
                errors.push(format!("{at}: duplicate id"));
            }
            if r.reason.is_empty() {
                errors.push(format!("{at}: reason is empty"));
            }
            let mode = match r.mode.as_str() {
                "enforce" => Some(RuleMode::Enforce),
                "monitor" => Some(RuleMode::Monitor),
                m => {
                    errors.push(format!("{at}: mode '{m}' (expected enforce or monitor)"));
                    None
                }
            };
            let action = match (parse_action(&r.action), r.outcome.as_deref()) {
                (Some(a), None) => Some(a),
                (Some(_), Some(_)) => {
                    errors.push(format!("{at}: outcome is only for custom actions"));
                    None
                }
                (None, Some(o)) => match parse_action(o) {
                    Some(a) if !r.action.is_empty() => Some(a),
                    _ => {
                        errors.push(format!("{at}: outcome '{o}' (expected approve, review or decline)"));
                        None
                    }
                },
                (None, None) => {
                    errors.push(format!(
                        "{at}: action '{}' is custom: give its outcome (approve, review or decline)",
                        r.action
                    ));
                    None
                }
            };
            let condition = match compile(&r.condition, &mut names) {
                Ok(n) => Some(n),
                Err(e) => {
                    errors.push(format!("{at}: condition: {e}"));
                    None
                }
            };
            if let (Some(condition), Some(action), Some(mode)) = (condition, action, mode) {
                rules.push(Rule {
                    id: r.id.as_str().into(),
                    description: r.description.clone(),
                    source: r.condition.clone(),
                    condition,
                    action,
                    action_name: r.action.as_str().into(),
                    reason: r.reason.as_str().into(),
                    priority: r.priority,
                    mode,
                });
            }
        }
        let review_priority = match compile(spec.review.priority.as_deref().unwrap_or("score * 100.0"), &mut names) {
            Ok(n) => Some(n),
            Err(e) => {
                errors.push(format!("review.priority: {e}"));
                None
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let digest = hash.finalize();
        let version: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            version: version.into(),
            rules,
            names,
            list_specs,
            initial_lists,
            review_priority: review_priority.expect("checked"),
        })
    }

    /// Bands-only rule set (no rules file).
    pub fn empty() -> Self {
        Self {
            version: "".into(),
            rules: Vec::new(),
            names: Names::default(),
            list_specs: Vec::new(),
            initial_lists: Vec::new(),
            review_priority: compile("score * 100.0", &mut Names::default()).expect("default priority"),
        }
    }

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
            if parse_action(&r.action_name).is_none() {
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
        Self { action: Action::Approve, action_name: None, reason: None, hits: Vec::new(), errors: 0 }
    }
}

/// Entries of a list file: one per line, blank lines and `#` comments skipped.
pub fn read_list(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines().map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::field::FieldValue;

    const ENRICHED: &[&str] = &["window:card.10m.count", "window:card.since_last_s", "feature:card.chargebacks_90d"];

    fn load(text: &str) -> Result<RuleSet, Vec<String>> {
        let enriched: Vec<String> = ENRICHED.iter().map(|s| s.to_string()).collect();
        RuleSet::parse(text.as_bytes(), Path::new("."), &enriched)
    }

    fn decide(set: &RuleSet, band: Action, amount: f64, card: &str, score: f64) -> RulesOutcome {
        let mut fields = vec![FieldValue::Null; set.names.event_paths.len()];
        for (i, p) in set.names.event_paths.iter().enumerate() {
            fields[i] = match p.as_str() {
                "amount" => FieldValue::Num(amount),
                "card_id" => FieldValue::Str(card.into()),
                _ => FieldValue::Null,
            };
        }
        let enriched = [Some(3.0), None, Some(0.0)];
        let scope = Scope { score, fields: &fields, enriched: &enriched, lists: &set.initial_lists };
        let mut out = RulesOutcome::default();
        set.decide(band, &scope, &mut out, &mut []);
        out
    }

    const RULES: &str = r#"
[lists.deny]
values = ["c-bad"]
[lists.allow]
values = ["c-vip"]

[[rules]]
id = "deny"
condition = "event.card_id in lists.deny"
action = "decline"
reason = "deny_listed"
priority = 100

[[rules]]
id = "allow"
condition = "event.card_id in lists.allow"
action = "approve"
reason = "allow_listed"
priority = 50

[[rules]]
id = "big"
condition = "event.amount > 1000"
action = "review"
reason = "large_amount"

[[rules]]
id = "huge"
condition = "event.amount > 5000"
action = "step_up"
outcome = "review"
reason = "huge_amount"
priority = 10

[[rules]]
id = "watch"
condition = "windows.card['10m'].count >= 3"
action = "decline"
reason = "velocity_watch"
priority = 1000
mode = "monitor"

[[rules]]
id = "broken"
condition = "features.card.chargebacks_90d / 0.0 > 1"
action = "decline"
reason = "never"
"#;

    #[test]
    fn bands_decide_when_no_rule_fires() {
        let s = load(RULES).unwrap();
        let o = decide(&s, Action::Approve, 10.0, "c-1", 0.1);
        assert_eq!((o.action, o.reason.is_none()), (Action::Approve, true));
        assert_eq!(o.hits.iter().map(|h| &*h.id).collect::<Vec<_>>(), ["watch"]);
        assert_eq!(o.errors, 1, "the broken rule is counted, not fired");
    }

    #[test]
    fn monitor_rules_are_recorded_but_never_act() {
        let s = load(RULES).unwrap();
        let o = decide(&s, Action::Approve, 10.0, "c-1", 0.1);
        let watch = o.hits.iter().find(|h| &*h.id == "watch").unwrap();
        assert_eq!(watch.mode, RuleMode::Monitor);
        assert_eq!(o.action, Action::Approve, "a priority-1000 monitor decline does not act");
    }

    #[test]
    fn higher_priority_wins_then_severity() {
        let s = load(RULES).unwrap();
        // deny (100, decline) beats allow (50, approve) and the band.
        let o = decide(&s, Action::Approve, 10.0, "c-bad", 0.1);
        assert_eq!((o.action, o.reason.as_deref()), (Action::Decline, Some("deny_listed")));
        // allow (50) overrides a band decline (priority 0).
        let o = decide(&s, Action::Decline, 10.0, "c-vip", 0.99);
        assert_eq!((o.action, o.reason.as_deref()), (Action::Approve, Some("allow_listed")));
        // big (priority 0, review) escalates an approve band: equal priority, more severe.
        let o = decide(&s, Action::Approve, 2000.0, "c-1", 0.1);
        assert_eq!((o.action, o.reason.as_deref()), (Action::Review, Some("large_amount")));
        // ...but does not downgrade a decline band at the same priority.
        let o = decide(&s, Action::Decline, 2000.0, "c-1", 0.95);
        assert_eq!((o.action, o.reason), (Action::Decline, None));
        // huge (10) beats big (0); its custom action routes as review.
        let o = decide(&s, Action::Approve, 6000.0, "c-1", 0.1);
        assert_eq!(
            (o.action, o.action_name.as_deref(), o.reason.as_deref()),
            (Action::Review, Some("step_up"), Some("huge_amount"))
        );
        assert_eq!(o.hits.len(), 3, "big, huge and watch all recorded: {:?}", o.hits);
    }

    #[test]
    fn every_action_kind() {
        let s = load(RULES).unwrap();
        for (band, amount, card, want) in [
            (Action::Approve, 10.0, "c-bad", Action::Decline),
            (Action::Approve, 2000.0, "c-1", Action::Review),
            (Action::Review, 10.0, "c-vip", Action::Approve),
        ] {
            assert_eq!(decide(&s, band, amount, card, 0.5).action, want, "{card} {amount}");
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_name() {
        let bad = r#"
[lists.a]
values = ["x"]
file = "x.txt"

[[rules]]
id = "r1"
condition = "features.card.unknown_feature > 1"
action = "decline"
reason = "x"

[[rules]]
id = "r1"
condition = "event.x in lists.nope"
action = "smite"
reason = ""
mode = "shadow"
"#;
        let errs = load(bad).unwrap_err().join("\n");
        for needle in [
            "lists.a: exactly one of file, values, redis_set",
            "rule 'r1': condition: unknown feature 'card.unknown_feature'",
            "rule 'r1': duplicate id",
            "rule 'r1': reason is empty",
            "mode 'shadow'",
            "action 'smite' is custom",
            "unknown list 'nope'",
        ] {
            assert!(errs.contains(needle), "missing '{needle}' in:\n{errs}");
        }
    }

    #[test]
    fn version_is_a_content_hash_and_review_priority_evaluates() {
        let a = load(RULES).unwrap();
        let b = load(RULES).unwrap();
        let c = load(&format!("{RULES}\n# a comment changes the file\n")).unwrap();
        assert_eq!(a.version, b.version);
        assert_ne!(a.version, c.version);
        assert_eq!(a.version.len(), 16);
        let s = load("[review]\npriority = \"score * 100.0 + (event.amount > 1000.0 ? 50.0 : 0.0)\"").unwrap();
        let fields = [FieldValue::Num(2000.0)];
        let scope = Scope { score: 0.7, fields: &fields, enriched: &[], lists: &[] };
        assert_eq!(s.review_priority(&scope), 120);
    }
}
