//! Reading a rules file: the TOML shape, validation that reports every problem at once,
//! compiling each condition, loading file and inline lists, and the content hash.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{read_list, Rule, RuleSet};
use crate::core::decision::Actions;
use crate::rules::expr::{compile, Names};
use crate::rules::RuleMode;

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
    /// For a custom action: the vocabulary action it routes as.
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

impl RuleSet {
    /// Loads and validates a rules file; every problem is reported at once.
    /// `enriched` are the enrichment names available (`window:…`, `feature:…`); `actions`
    /// the decision vocabulary its rules choose from.
    pub fn load(path: &Path, enriched: &[String], actions: &Actions) -> Result<Self, Vec<String>> {
        let text = std::fs::read(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")), enriched, actions)
    }

    /// Validates rules file contents; file lists are resolved against `dir`.
    pub fn parse(text: &[u8], dir: &Path, enriched: &[String], actions: &Actions) -> Result<Self, Vec<String>> {
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
            let known = || actions.names().join(", ");
            let action = match (actions.by_name(&r.action), r.outcome.as_deref()) {
                (Some(a), None) => Some(a),
                (Some(_), Some(_)) => {
                    errors.push(format!("{at}: outcome is only for custom actions"));
                    None
                }
                (None, Some(o)) => match actions.by_name(o) {
                    Some(a) if !r.action.is_empty() => Some(a),
                    _ => {
                        errors.push(format!("{at}: outcome '{o}' (expected one of {})", known()));
                        None
                    }
                },
                (None, None) => {
                    errors.push(format!(
                        "{at}: action '{}' is not one of decide.actions ({}): add it there, or give its outcome",
                        r.action,
                        known()
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
}
