//! PII redaction of the outputs (`[publish.redact]`): event values the decision, review and
//! dead-letter records must not carry are left out, replaced by a keyed pseudonym, or masked.
//!
//! Applied once per output, where the output is made: the publish stage encodes each
//! decision with the redacted identity and features ([`Redactor::ids`], [`Redactor::kept`]),
//! and [`crate::publish::Publisher::dead_letter`] redacts each dead-lettered payload and key
//! ([`Redactor::dead_letter`]). Nothing upstream changes: windows, online features, Redis keys,
//! the label join and scoring all use the raw values. Without `publish.redact.fields` there is
//! no [`Redactor`] at all, and the outputs are written as before.
//!
//! A pseudonym is `HMAC-SHA256(key, value)`, its first 16 bytes as 32 lowercase hex digits:
//! the same value maps to the same pseudonym on every instance and across restarts for as long
//! as the key is the same, so reviewers can still group by card; without the key it cannot be
//! reversed by enumerating card numbers.

pub mod config;
mod payload;

use std::collections::BTreeSet;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use config::{IdPaths, RedactConfig, Rule, Target, Unparsed};
pub use payload::{Redacted, PARSE_LIMIT};

use super::record::Inputs;
use crate::core::manifest::{InputColumn, Lane};

/// Header on a redacted dead letter: what was done to its payload (`fields`: redacted field
/// by field; `kept`, `dropped`, `sha256`: not a JSON object, `publish.redact.unparsed`).
pub const DLQ_REDACTED: &str = "verdict.dlq.redacted";

/// Enriched model-input sources: not event fields, so not redacted here.
const ENRICHED: [&str; 3] = ["window:", "session:", "feature:"];

/// The redaction configuration is wrong: every problem, each naming its key.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct RedactError(pub Vec<String>);

/// What the outputs do to event values, built once at start-up from `[publish.redact]`.
#[derive(Debug)]
pub struct Redactor {
    /// The keyed HMAC state; cloned per value, so the key is not re-hashed.
    mac: Option<Hmac<Sha256>>,
    event_id: Option<Rule>,
    entity_key: Option<Rule>,
    /// The source record's key (the dead-letter copy keeps it): `enrich.record_key`'s field,
    /// else `decode.fields.entity_key`'s.
    record_key: Option<Rule>,
    /// Event paths and their rules, for dead-letter payloads (one rule per path).
    paths: Vec<(String, Rule)>,
    /// Model inputs named to be dropped (`features.<name>`).
    features: BTreeSet<String>,
    /// The inputs of the model served at start-up that the records leave out ([`Redactor::dropped`]).
    dropped_at_start: BTreeSet<String>,
    unparsed: Unparsed,
}

impl Redactor {
    /// From the configuration: `None` when no field is redacted (the outputs are then not
    /// touched). `ids` are `decode.fields`' paths, `record_key` the path of the source
    /// record's key (`enrich.record_key`, or the entity key's path when empty), `inputs` the
    /// serving model's inputs (each `features.<name>` must be one of them).
    pub fn new(
        cfg: &RedactConfig,
        ids: IdPaths<'_>,
        record_key: &str,
        inputs: &[InputColumn],
    ) -> Result<Option<Self>, RedactError> {
        if !cfg.is_on() {
            return Ok(None);
        }
        let mut problems = cfg.validate(ids);
        let (rules, _) = cfg.rules();
        let mut paths: Vec<(String, Rule)> = Vec::new();
        let mut features = BTreeSet::new();
        for r in &rules {
            if let Target::Feature(name) = &r.target {
                if inputs.iter().all(|c| &c.name != name) {
                    let names: Vec<&str> = inputs.iter().map(|c| c.name.as_str()).collect();
                    problems.push(format!(
                        "publish.redact.fields.{}: the model has no input '{name}' (its inputs: {})",
                        r.key,
                        names.join(", ")
                    ));
                }
                features.insert(name.clone());
            }
            if let Some(p) = config::event_path(&r.target, ids) {
                if paths.iter().all(|(q, _)| q != p) {
                    paths.push((p.to_string(), r.rule));
                }
            }
        }
        // A dropped input's event field goes from the dead letters too.
        for c in inputs.iter().filter(|c| features.contains(&c.name)) {
            if !ENRICHED.iter().any(|p| c.source.starts_with(p)) && paths.iter().all(|(q, _)| q != &c.source) {
                paths.push((c.source.clone(), Rule::Drop));
            }
        }
        if !problems.is_empty() {
            return Err(RedactError(problems));
        }
        let mac = if rules.iter().any(|r| r.rule == Rule::Hash) {
            let key = cfg.key().map_err(|e| RedactError(vec![e]))?;
            Some(Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes a key of any length"))
        } else {
            None
        };
        let rule_at = |p: &str| paths.iter().find(|(q, _)| q == p).map(|(_, r)| *r);
        let record_key = if record_key.is_empty() { ids.entity_key } else { record_key };
        let mut r = Self {
            mac,
            event_id: rule_at(ids.event_id),
            entity_key: rule_at(ids.entity_key),
            record_key: rule_at(record_key),
            features,
            dropped_at_start: BTreeSet::new(),
            unparsed: cfg.unparsed,
            paths,
        };
        r.dropped_at_start = r.dropped(inputs);
        Ok(Some(r))
    }

    /// Whether the outputs redact the event field at `path` (its value must then not be
    /// logged either: e.g. an entity id inside a Redis key).
    pub fn redacts_path(&self, path: &str) -> bool {
        self.paths.iter().any(|(p, _)| p == path)
    }

    /// The pseudonym of `value`: the first 128 bits of HMAC-SHA256(key, value), as 32 hex digits.
    pub fn pseudonym(&self, value: &[u8], out: &mut String) {
        let mut mac = self.mac.clone().expect("a hashed field has a key (checked at start-up)");
        mac.update(value);
        let digest = mac.finalize().into_bytes();
        out.clear();
        for b in &digest[..16] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }

    /// Writes what `rule` makes of `value` into `out`; false when it is dropped.
    pub fn apply(&self, rule: Rule, value: &str, out: &mut String) -> bool {
        match rule {
            Rule::Drop => return false,
            Rule::Hash => self.pseudonym(value.as_bytes(), out),
            Rule::Mask(keep) => mask(value, keep, out),
        }
        true
    }

    /// The event id, entity key and record key a decision carries, redacted, into `out`.
    pub fn ids(&self, event_id: &str, entity_key: &str, out: &mut Ids) {
        out.event_id.clear();
        out.event_id.push_str(event_id);
        if let Some(r) = self.event_id {
            // `validate` refuses to drop the event id, so this always writes.
            self.apply(r, event_id, &mut out.event_id);
        }
        out.keyed = true;
        out.entity_key.clear();
        match self.entity_key {
            None => out.entity_key.push_str(entity_key),
            Some(r) => out.keyed = self.apply(r, entity_key, &mut out.entity_key),
        }
    }

    /// The model inputs the decision records leave out: those named in `features.<name>`
    /// and those read from a redacted event field (a number cannot carry a pseudonym).
    pub fn dropped(&self, inputs: &[InputColumn]) -> BTreeSet<String> {
        let from_event = |c: &InputColumn| !ENRICHED.iter().any(|p| c.source.starts_with(p));
        inputs
            .iter()
            .filter(|c| self.features.contains(&c.name) || (from_event(c) && self.redacts_path(&c.source)))
            .map(|c| c.name.clone())
            .collect()
    }

    /// [`Redactor::dropped`] of the model served at start-up.
    pub fn dropped_at_start(&self) -> &BTreeSet<String> {
        &self.dropped_at_start
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `value` with every character but the last `keep` replaced by `*`; all of them when it has
/// no more than `keep` (keeping them all would show the value).
fn mask(value: &str, keep: usize, out: &mut String) {
    let n = value.chars().count();
    out.clear();
    let shown = if n > keep { keep } else { 0 };
    out.extend(std::iter::repeat_n('*', n - shown));
    out.extend(value.chars().skip(n - shown));
}

/// The publish stage's redaction of decision records: the event being encoded's identity
/// and the model inputs the records keep, in buffers reused from event to event.
#[derive(Debug)]
pub struct Records {
    redactor: Arc<Redactor>,
    ids: Ids,
    /// Indices of the model inputs the records keep, their names, and the current event's
    /// values of them (None: all inputs kept).
    kept: Option<(Vec<usize>, Vec<String>, Vec<f32>)>,
    /// The kept columns' lanes (string inputs), rebuilt per event.
    kept_lanes: Vec<Lane>,
}

impl Records {
    /// For the model served at start-up, whose input names are `columns`.
    pub fn new(redactor: Arc<Redactor>, columns: &[String]) -> Self {
        let mut r = Self { redactor, ids: Ids::default(), kept: None, kept_lanes: Vec::new() };
        let dropped = r.redactor.dropped_at_start().clone();
        r.set_columns(columns, &dropped);
        r
    }

    /// Another model serves: its input names `columns`, read as `inputs` say.
    pub fn set_model(&mut self, columns: &[String], inputs: &[InputColumn]) {
        let dropped = self.redactor.dropped(inputs);
        self.set_columns(columns, &dropped);
    }

    fn set_columns(&mut self, columns: &[String], dropped: &BTreeSet<String>) {
        let kept: Vec<usize> = (0..columns.len()).filter(|&i| !dropped.contains(&columns[i])).collect();
        self.kept = (kept.len() < columns.len()).then(|| {
            let names = kept.iter().map(|&i| columns[i].clone()).collect();
            let n = kept.len();
            (kept, names, Vec::with_capacity(n))
        });
    }

    /// One event's event id, entity key and model inputs (`features`: names and values) as
    /// its decision record carries them; the inputs are copied only `with_features`.
    pub fn event<'a>(
        &'a mut self,
        event_id: &str,
        entity_key: &str,
        features: Inputs<'a>,
        with_features: bool,
    ) -> (&'a str, &'a str, Inputs<'a>) {
        self.redactor.ids(event_id, entity_key, &mut self.ids);
        let features = match &mut self.kept {
            Some((kept, names, values)) if with_features => {
                values.clear();
                values.extend(kept.iter().map(|&c| features.values[c]));
                self.kept_lanes.clear();
                if !features.lanes.is_empty() {
                    self.kept_lanes.extend(kept.iter().map(|&c| features.lanes[c]));
                }
                Inputs { names, values, lanes: &self.kept_lanes, texts: features.texts }
            }
            _ => features,
        };
        (self.ids.event_id(), self.ids.entity_key(), features)
    }

    /// The identity of the event last passed to [`Records::event`].
    pub fn ids(&self) -> &Ids {
        &self.ids
    }
}

/// One event's identity as its outputs carry it; reused from event to event.
#[derive(Debug, Default)]
pub struct Ids {
    event_id: String,
    entity_key: String,
    /// False when the entity key is dropped: the records then have no key.
    keyed: bool,
}

impl Ids {
    /// The event id (or its pseudonym or mask).
    pub fn event_id(&self) -> &str {
        &self.event_id
    }

    /// The entity key (or its pseudonym or mask); empty when dropped.
    pub fn entity_key(&self) -> &str {
        &self.entity_key
    }

    /// The Kafka key of the decision and review records; none when the entity key is dropped.
    pub fn record_key(&self) -> Option<&[u8]> {
        self.keyed.then_some(self.entity_key.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: IdPaths<'static> = IdPaths { event_id: "event_id", entity_key: "card_id" };

    fn redactor(fields: &str, key_env: &str) -> Redactor {
        let mut cfg: RedactConfig = toml::from_str(&format!("[fields]\n{fields}")).unwrap();
        cfg.hash_key_env = key_env.into();
        let inputs: Vec<InputColumn> = serde_json::from_str(
            r#"[{"name": "amount", "source": "amount", "kind": "number"},
                {"name": "card_hash", "source": "card_id", "kind": "number"},
                {"name": "n10m", "source": "window:card.10m.count", "kind": "number"}]"#,
        )
        .unwrap();
        Redactor::new(&cfg, IDS, "", &inputs).unwrap().unwrap()
    }

    #[test]
    fn mask_keeps_exactly_the_last_n_characters_and_hides_short_values_whole() {
        let mut out = String::new();
        for (v, n, want) in [("card-12345", 4, "******2345"), ("abc", 4, "***"), ("abcd", 4, "****"), ("é€x", 1, "**x")]
        {
            mask(v, n, &mut out);
            assert_eq!(out, want, "{v}");
        }
    }

    #[test]
    fn pseudonym_is_the_truncated_hmac_of_rfc_4231_case_2() {
        // RFC 4231 test case 2 (key "Jefe" is too short for a configuration; the HMAC is the same).
        let r = Redactor { mac: Some(Hmac::new_from_slice(b"Jefe").unwrap()), ..redactor("entity_key = \"drop\"", "") };
        let mut out = String::new();
        r.pseudonym(b"what do ya want for nothing?", &mut out);
        assert_eq!(out, "5bdcc146bf60754e6a042426089575c7");
    }

    #[test]
    fn ids_are_redacted_and_a_dropped_entity_key_leaves_no_record_key() {
        std::env::set_var("VERDICT_TEST_REDACT_KEY", "0123456789abcdef0123");
        let r =
            redactor("event_id = { mode = \"mask\", keep_last = 3 }\nentity_key = \"hash\"", "VERDICT_TEST_REDACT_KEY");
        let mut ids = Ids::default();
        r.ids("tx-000123", "card-77", &mut ids);
        assert_eq!(ids.event_id(), "******123");
        assert_eq!(ids.entity_key().len(), 32);
        assert_eq!(ids.record_key(), Some(ids.entity_key().as_bytes()));
        let r = redactor("entity_key = \"drop\"", "");
        r.ids("tx-1", "card-77", &mut ids);
        assert_eq!((ids.event_id(), ids.entity_key(), ids.record_key()), ("tx-1", "", None));
    }

    #[test]
    fn features_named_or_read_from_a_redacted_field_are_left_out() {
        let inputs = serde_json::from_str::<Vec<InputColumn>>(
            r#"[{"name": "amount", "source": "amount", "kind": "number"},
                {"name": "card_hash", "source": "card_id", "kind": "number"},
                {"name": "n10m", "source": "window:card.10m.count", "kind": "number"}]"#,
        )
        .unwrap();
        let names = |r: Redactor| r.dropped(&inputs).into_iter().collect::<Vec<_>>();
        assert_eq!(names(redactor("\"features.amount\" = \"drop\"", "")), ["amount"]);
        assert_eq!(names(redactor("entity_key = \"drop\"", "")), ["card_hash"]);
        assert!(names(redactor("\"event.email\" = \"drop\"", "")).is_empty());
        assert!(names(redactor("\"event.window:card.10m.count\" = \"drop\"", "")).is_empty(), "not an event field");
    }

    #[test]
    fn an_unknown_model_input_is_refused_naming_the_key() {
        let cfg: RedactConfig = toml::from_str("[fields]\n\"features.nope\" = \"drop\"").unwrap();
        let e = Redactor::new(&cfg, IDS, "", &[]).unwrap_err();
        assert!(e.to_string().starts_with("publish.redact.fields.features.nope: the model has no input 'nope'"), "{e}");
    }
}
