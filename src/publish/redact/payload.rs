//! Dead-letter copies: the original record's key and payload, redacted. A JSON object payload
//! is redacted field by field (each configured event path: removed, or its value replaced by
//! its pseudonym or mask as a string); any other payload follows `publish.redact.unparsed`.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use super::{Redactor, Rule, Unparsed};

/// Largest payload redacted field by field (bytes); a larger one follows
/// `publish.redact.unparsed`. Parsing builds a tree several times the payload's size, and
/// dead letters come in bursts; a payload this large is cut to fit the topic anyway.
pub const PARSE_LIMIT: usize = 1 << 20;

/// A dead letter's key and payload after redaction.
#[derive(Debug)]
pub struct Redacted<'a> {
    /// The key (none when dropped).
    pub key: Option<Cow<'a, [u8]>>,
    /// The payload.
    pub payload: Cow<'a, [u8]>,
    /// What was done to the payload: `fields`, `kept`, `dropped` or `sha256` ([`super::DLQ_REDACTED`]).
    pub how: &'static str,
}

impl Redactor {
    /// Redacts a dead-lettered record's key and payload.
    pub fn dead_letter<'a>(&self, key: Option<&'a [u8]>, payload: &'a [u8]) -> Redacted<'a> {
        let key = match (key, self.record_key) {
            (None, _) => None,
            (Some(k), None) => Some(Cow::Borrowed(k)),
            (Some(k), Some(rule)) => self.bytes(rule, k).map(|v| Cow::Owned(v.into_bytes())),
        };
        let (payload, how) = match self.json(payload) {
            Some(redacted) => (Cow::Owned(redacted), "fields"),
            None => match self.unparsed {
                Unparsed::Keep => (Cow::Borrowed(payload), "kept"),
                Unparsed::Drop => (Cow::Borrowed(&[][..]), "dropped"),
                Unparsed::Sha256 => {
                    let hex: String = Sha256::digest(payload).iter().map(|b| format!("{b:02x}")).collect();
                    (Cow::Owned(hex.into_bytes()), "sha256")
                }
            },
        };
        Redacted { key, payload, how }
    }

    /// What `rule` makes of raw bytes: text is redacted as text; other bytes are hashed as
    /// they are, and dropped for a mask (which only makes sense of characters).
    fn bytes(&self, rule: Rule, v: &[u8]) -> Option<String> {
        let mut out = String::new();
        match (std::str::from_utf8(v), rule) {
            (Ok(text), _) => self.apply(rule, text, &mut out).then_some(out),
            (Err(_), Rule::Hash) => {
                self.pseudonym(v, &mut out);
                Some(out)
            }
            (Err(_), _) => None,
        }
    }

    /// The payload with each configured path redacted, if it is a JSON object.
    fn json(&self, payload: &[u8]) -> Option<Vec<u8>> {
        if payload.len() > PARSE_LIMIT {
            return None;
        }
        let mut v: serde_json::Value = serde_json::from_slice(payload).ok()?;
        let root = v.as_object_mut()?;
        let mut out = String::new();
        for (path, rule) in &self.paths {
            let mut parts = path.split('.').peekable();
            let mut obj = &mut *root;
            while let Some(part) = parts.next() {
                if parts.peek().is_none() {
                    if *rule == Rule::Drop {
                        obj.remove(part);
                    } else if let Some(slot) = obj.get_mut(part) {
                        let text = match &mut *slot {
                            serde_json::Value::String(s) => std::mem::take(s),
                            other => other.to_string(),
                        };
                        self.apply(*rule, &text, &mut out);
                        *slot = serde_json::Value::String(std::mem::take(&mut out));
                    }
                    break;
                }
                match obj.get_mut(part).and_then(serde_json::Value::as_object_mut) {
                    Some(next) => obj = next,
                    None => break,
                }
            }
        }
        Some(serde_json::to_vec(&v).expect("a JSON value serializes"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{IdPaths, RedactConfig};
    use super::*;

    fn redactor(toml: &str) -> Redactor {
        std::env::set_var("VERDICT_TEST_PAYLOAD_KEY", "payload-test-key-0123456789");
        let mut cfg: RedactConfig = toml::from_str(toml).unwrap();
        cfg.hash_key_env = "VERDICT_TEST_PAYLOAD_KEY".into();
        let ids = IdPaths { event_id: "event_id", entity_key: "card_id" };
        Redactor::new(&cfg, ids, "", &[]).unwrap().unwrap()
    }

    #[test]
    fn json_payload_is_redacted_field_by_field_and_the_key_with_the_entity_key() {
        let r = redactor(
            "[fields]\nentity_key = \"hash\"\nevent.device.ip = \"drop\"\nevent_id = { mode = \"mask\", keep_last = 2 }\n\
             event.amount = \"hash\"\nevent.absent.path = \"drop\"",
        );
        let payload = br#"{"event_id": "tx-991", "card_id": "card-5", "amount": 12.5, "device": {"ip": "10.1.2.3", "type": "mobile"}}"#;
        let d = r.dead_letter(Some(b"card-5"), payload);
        assert_eq!(d.how, "fields");
        let v: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
        let mut card = String::new();
        r.pseudonym(b"card-5", &mut card);
        assert_eq!(v["card_id"], card.as_str());
        assert_eq!(d.key.as_deref(), Some(card.as_bytes()), "the record key is the entity key here");
        assert_eq!(v["event_id"], "****91");
        assert!(v["device"].get("ip").is_none());
        assert_eq!(v["device"]["type"], "mobile");
        let mut amount = String::new();
        r.pseudonym(b"12.5", &mut amount);
        assert_eq!(v["amount"], amount.as_str(), "a number is hashed as its JSON text");
    }

    #[test]
    fn payloads_that_are_not_json_objects_follow_the_unparsed_policy() {
        for (policy, how) in [("keep", "kept"), ("drop", "dropped"), ("sha256", "sha256")] {
            let r = redactor(&format!("unparsed = \"{policy}\"\n[fields]\nentity_key = \"drop\""));
            for payload in [&b"\x00\x00\x00\x00\x01avro card-5"[..], b"[\"card-5\"]", b"{\"card_id\": \"card-5\""] {
                let d = r.dead_letter(Some(b"card-5"), payload);
                assert_eq!(d.how, how);
                assert_eq!(d.key, None, "the entity key is dropped, so is the record key");
                let want: Vec<u8> = match policy {
                    "keep" => payload.to_vec(),
                    "drop" => Vec::new(),
                    _ => Sha256::digest(payload).iter().map(|b| format!("{b:02x}")).collect::<String>().into_bytes(),
                };
                assert_eq!(&d.payload[..], &want[..], "{policy}");
            }
        }
    }
}
