//! `[publish.redact]`: which event values the outputs leave out, pseudonymize or mask, the
//! pseudonym key's source, and what happens to dead-letter payloads that are not JSON.
//!
//! Field entries are kept as written (`serde_json::Value`) and read by [`RedactConfig::rules`],
//! so that every malformed entry is reported at once with its key, and so that a TOML dotted
//! key (`features.amount = "drop"`, which TOML nests as a table) means the same as the quoted
//! one (`"features.amount" = "drop"`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The key path of the field table, for messages.
const FIELDS: &str = "publish.redact.fields";

/// Shortest pseudonym key accepted (bytes): a short key can be found by trying keys against
/// a known card number, and then every pseudonym is reversible by enumeration.
pub const MIN_KEY_BYTES: usize = 16;

/// What the outputs carry instead of a field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Left out (Avro: the field's default, `""` for a string; JSON: `""` for `entity_key`,
    /// removed elsewhere).
    Drop,
    /// Replaced by its keyed pseudonym (HMAC-SHA256, first 128 bits as 32 hex digits).
    Hash,
    /// Every character but the last `n` replaced by `*` (all of them when it has at most `n`).
    Mask(usize),
}

/// What a dead-letter payload that cannot be redacted field by field (not a JSON object:
/// Avro, text, broken JSON, larger than [`super::PARSE_LIMIT`]) becomes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Unparsed {
    /// Copied as it came (it may hold the raw values).
    Keep,
    /// Left out: the dead letter has an empty payload (its headers still say why).
    Drop,
    /// Replaced by the 64 hex digits of its SHA-256 (find the original by hash upstream).
    Sha256,
}

/// `[publish.redact]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedactConfig {
    /// Field path → `"drop"`, `"hash"`, `"mask"` or `{ mode = "mask", keep_last = N }`.
    /// Paths: `event_id`, `entity_key`, `features.<model input>`, `event.<event field path>`.
    pub fields: BTreeMap<String, serde_json::Value>,
    /// File holding the pseudonym key (trailing newline ignored); read at start-up.
    pub hash_key_file: String,
    /// Name of an environment variable holding the pseudonym key.
    pub hash_key_env: String,
    /// Dead-letter payloads that are not JSON objects: `keep`, `drop` or `sha256`.
    pub unparsed: Unparsed,
}

impl Default for RedactConfig {
    fn default() -> Self {
        Self {
            fields: BTreeMap::new(),
            hash_key_file: String::new(),
            hash_key_env: String::new(),
            unparsed: Unparsed::Sha256,
        }
    }
}

/// The event paths of the record's `event_id` and `entity_key` (`decode.fields`).
#[derive(Debug, Clone, Copy)]
pub struct IdPaths<'a> {
    /// `decode.fields.event_id`.
    pub event_id: &'a str,
    /// `decode.fields.entity_key`.
    pub entity_key: &'a str,
}

/// What a field path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The record's `event_id` (and the `verdict.event_id` header).
    EventId,
    /// The record's `entity_key` (and the record key).
    EntityKey,
    /// A model input in the record's `features`.
    Feature(String),
    /// An event field, by its dotted path.
    Event(String),
}

/// One `publish.redact.fields` entry, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRule {
    /// The path as written (`features.amount`), for messages.
    pub key: String,
    /// What it names.
    pub target: Target,
    /// What is done to it.
    pub rule: Rule,
}

impl RedactConfig {
    /// Whether any field is redacted (otherwise the outputs are not touched at all).
    pub fn is_on(&self) -> bool {
        !self.fields.is_empty()
    }

    /// The entries, flattened, and every problem with its key.
    pub fn rules(&self) -> (Vec<FieldRule>, Vec<String>) {
        let (mut out, mut problems) = (Vec::new(), Vec::new());
        for (k, v) in &self.fields {
            walk(k, v, &mut out, &mut problems);
        }
        (out, problems)
    }

    /// Every problem of this section that the configuration alone shows (the model's inputs
    /// are checked when the model is loaded), each naming its key.
    pub fn validate(&self, fields: IdPaths<'_>) -> Vec<String> {
        let (rules, mut e) = self.rules();
        if rules.iter().any(|r| r.rule == Rule::Hash) {
            match (self.hash_key_file.is_empty(), self.hash_key_env.is_empty()) {
                (true, true) => e.push(
                    "publish.redact.hash_key_file: a field is hashed (mode \"hash\") but no key is given: set \
                     hash_key_file or hash_key_env"
                        .into(),
                ),
                (false, false) => {
                    e.push("publish.redact.hash_key_file: give the key in one place (hash_key_env is set too)".into())
                }
                _ => {
                    if let Err(why) = self.key() {
                        e.push(why);
                    }
                }
            }
        }
        // Two keys naming the same event field must agree, or one output would show what
        // the other hides.
        let mut seen: BTreeMap<String, &FieldRule> = BTreeMap::new();
        for r in &rules {
            let Some(path) = event_path(&r.target, fields) else { continue };
            match seen.get(path) {
                Some(first) if first.rule != r.rule => e.push(format!(
                    "{FIELDS}.{}: the same event field ('{path}') as {FIELDS}.{}, with another mode",
                    r.key, first.key
                )),
                Some(_) => {}
                None => {
                    seen.insert(path.to_string(), r);
                }
            }
        }
        e
    }

    /// The pseudonym key, from the file or the environment variable: `Err` names the key.
    pub fn key(&self) -> Result<Vec<u8>, String> {
        let (key, bytes) = if !self.hash_key_file.is_empty() {
            let text = std::fs::read(&self.hash_key_file)
                .map_err(|e| format!("publish.redact.hash_key_file: {}: {e}", self.hash_key_file))?;
            ("publish.redact.hash_key_file", text)
        } else if !self.hash_key_env.is_empty() {
            let text = std::env::var_os(&self.hash_key_env).ok_or_else(|| {
                format!("publish.redact.hash_key_env: environment variable {} is not set", self.hash_key_env)
            })?;
            ("publish.redact.hash_key_env", text.into_encoded_bytes())
        } else {
            return Err("publish.redact.hash_key_file: no key given (hash_key_file or hash_key_env)".into());
        };
        let mut bytes = bytes;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        if bytes.len() < MIN_KEY_BYTES {
            return Err(format!("{key}: the key is {} bytes; at least {MIN_KEY_BYTES} are needed", bytes.len()));
        }
        Ok(bytes)
    }

    /// The key as text, for the log scrubber ([`crate::redact::Secrets`]); none if unreadable.
    pub fn secret_values(&self) -> Vec<String> {
        self.key().ok().map(|k| String::from_utf8_lossy(&k).into_owned()).into_iter().collect()
    }
}

/// The event field a target reads, if any (`features.*` name model inputs, whose sources
/// are known only with the model).
pub fn event_path<'a>(t: &'a Target, fields: IdPaths<'a>) -> Option<&'a str> {
    match t {
        Target::EventId => Some(fields.event_id),
        Target::EntityKey => Some(fields.entity_key),
        Target::Event(p) => Some(p),
        Target::Feature(_) => None,
    }
}

fn walk(key: &str, v: &serde_json::Value, out: &mut Vec<FieldRule>, problems: &mut Vec<String>) {
    use serde_json::Value;
    let rule = match v {
        Value::String(mode) => rule(key, mode, None, problems),
        Value::Object(m) if m.contains_key("mode") => {
            for k in m.keys().filter(|k| !["mode", "keep_last"].contains(&k.as_str())) {
                problems.push(format!("{FIELDS}.{key}.{k}: unknown key (expected mode, keep_last)"));
            }
            match &m["mode"] {
                Value::String(mode) => rule(key, mode, m.get("keep_last"), problems),
                other => {
                    problems.push(format!("{FIELDS}.{key}.mode: expected drop, hash or mask, got {other}"));
                    None
                }
            }
        }
        // A TOML dotted key: `features.amount = "drop"` arrives as { features = { amount = … } }.
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                walk(&format!("{key}.{k}"), v, out, problems);
            }
            return;
        }
        other => {
            problems.push(format!(
                "{FIELDS}.{key}: expected \"drop\", \"hash\", \"mask\" or {{ mode = \"mask\", keep_last = N }}, \
                 got {other}"
            ));
            None
        }
    };
    let target = target(key, problems);
    if let (Some(rule), Some(target)) = (rule, target) {
        match (&target, rule) {
            (Target::EventId, Rule::Drop) => problems.push(format!(
                "{FIELDS}.{key}: the event id cannot be dropped (a record without it cannot be tied to its event \
                 or its label): hash or mask it"
            )),
            (Target::Feature(_), Rule::Hash | Rule::Mask(_)) => problems.push(format!(
                "{FIELDS}.{key}: a model input is a number in the decision record; only \"drop\" applies"
            )),
            _ => out.push(FieldRule { key: key.to_string(), target, rule }),
        }
    }
}

fn rule(key: &str, mode: &str, keep_last: Option<&serde_json::Value>, problems: &mut Vec<String>) -> Option<Rule> {
    let keep = match keep_last {
        None => Some(4),
        Some(n) => match n.as_u64() {
            Some(n) if mode == "mask" => Some(n as usize),
            Some(_) => {
                problems.push(format!("{FIELDS}.{key}.keep_last: only mode \"mask\" keeps characters"));
                None
            }
            None => {
                problems.push(format!("{FIELDS}.{key}.keep_last: expected a whole number >= 0, got {n}"));
                None
            }
        },
    };
    match mode {
        "drop" => Some(Rule::Drop),
        "hash" => Some(Rule::Hash),
        "mask" => keep.map(Rule::Mask),
        other => {
            problems.push(format!("{FIELDS}.{key}: unknown mode '{other}' (expected drop, hash or mask)"));
            None
        }
    }
}

fn target(key: &str, problems: &mut Vec<String>) -> Option<Target> {
    let well_formed = |p: &str| !p.is_empty() && p.split('.').all(|s| !s.trim().is_empty());
    let t = match key {
        "event_id" => Target::EventId,
        "entity_key" => Target::EntityKey,
        _ => match key.split_once('.') {
            Some(("features", name)) if !name.is_empty() => Target::Feature(name.to_string()),
            Some(("event", path)) if well_formed(path) => Target::Event(path.to_string()),
            _ => {
                problems.push(format!(
                    "{FIELDS}.{key}: names nothing the records carry (expected event_id, entity_key, \
                     features.<model input> or event.<event field path>)"
                ));
                return None;
            }
        },
    };
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: IdPaths<'static> = IdPaths { event_id: "event_id", entity_key: "entity_id" };

    fn cfg(toml: &str) -> RedactConfig {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn dotted_and_quoted_keys_name_the_same_field() {
        let a = cfg("[fields]\nfeatures.amount = \"drop\"\nevent.customer.email = \"hash\"");
        let b = cfg("[fields]\n\"features.amount\" = \"drop\"\n\"event.customer.email\" = \"hash\"");
        let (ra, pa) = a.rules();
        assert!(pa.is_empty(), "{pa:?}");
        assert_eq!(ra, b.rules().0);
        let targets: Vec<&Target> = ra.iter().map(|r| &r.target).collect();
        assert_eq!(targets, [&Target::Event("customer.email".into()), &Target::Feature("amount".into())]);
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let c = cfg("[fields]\nentity_key = \"scramble\"\nevent_id = \"drop\"\n\"features.amount\" = \"hash\"\n\
             score = \"drop\"\nevent.x = { mode = \"drop\", keep_last = 2 }\n\"event.card\" = \"hash\"");
        let e = c.validate(IDS);
        let want = [
            "fields.entity_key: unknown mode 'scramble'",
            "fields.event_id: the event id cannot be dropped",
            "fields.features.amount: a model input is a number",
            "fields.score: names nothing the records carry",
            "fields.event.x.keep_last: only mode \"mask\"",
            "publish.redact.hash_key_file: a field is hashed",
        ];
        for w in want {
            assert!(e.iter().any(|p| p.contains(w)), "{w} not in {e:#?}");
        }
        assert_eq!(e.len(), want.len(), "{e:#?}");
    }

    #[test]
    fn a_short_or_missing_key_is_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").unwrap();
        let mut c = cfg("[fields]\nentity_key = \"hash\"");
        c.hash_key_file = short.display().to_string();
        let e = c.validate(IDS);
        assert!(e[0].starts_with("publish.redact.hash_key_file: the key is 3 bytes"), "{e:?}");
        c.hash_key_file = dir.path().join("absent").display().to_string();
        assert!(c.validate(IDS)[0].contains("No such file"));
        c.hash_key_file.clear();
        c.hash_key_env = "VERDICT_TEST_SURELY_UNSET_KEY".into();
        assert!(c.validate(IDS)[0].starts_with("publish.redact.hash_key_env: environment"));
    }

    #[test]
    fn two_keys_for_one_event_field_must_agree() {
        let c = cfg("[fields]\nentity_key = \"drop\"\n\"event.entity_id\" = { mode = \"mask\", keep_last = 2 }");
        let e = c.validate(IDS);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("the same event field ('entity_id')"), "{e:?}");
    }
}
