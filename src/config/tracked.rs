//! Deserializes the merged configuration tree while tracking where each value sits, so a
//! type error names its key (`batch.max_events: invalid type: string "two", expected usize`)
//! instead of only the value, and [`from_tree`] can report every such error, not the first.

use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde_json::Value;

/// One step of a path into the tree.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A deserialization error and the path of the value it is about.
#[derive(Debug)]
pub struct PathError {
    path: Vec<Step>,
    message: String,
}

impl PathError {
    /// The dotted path, `enrich.entities[0].key`; empty for the root.
    pub fn path(&self) -> String {
        let mut s = String::new();
        for step in &self.path {
            match step {
                Step::Key(k) if k.contains('.') => s.push_str(&format!(".\"{k}\"")),
                Step::Key(k) => {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(k);
                }
                Step::Index(i) => s.push_str(&format!("[{i}]")),
            }
        }
        s
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path(), self.message)
    }
}

impl std::error::Error for PathError {}

impl de::Error for PathError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self { path: Vec::new(), message: msg.to_string() }
    }
}

/// Key names whose values are never echoed in an error (they may hold credentials).
/// The same rule as the log redaction ([`crate::redact::is_secret_property`]), plus names
/// ending in `api_key` / `private_key`; `entity_key` or `key_prefix` are not secrets.
pub fn is_secret_key(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    crate::redact::is_secret_property(&n) || n.ends_with("api_key") || n.ends_with("private_key")
}

/// Deserializes `tree` as `T`, collecting every error with its path. After an error the
/// offending value is removed (so its default applies) and deserialization is retried,
/// so one bad key does not hide the next; an error about a value that contains one already
/// reported (a struct left without a required field) is not reported again. Returns the
/// value built from what was valid (None if nothing could be) and the errors.
pub fn from_tree<T: DeserializeOwned>(mut tree: Value) -> (Option<T>, Vec<String>) {
    let mut errors = Vec::new();
    let mut removed: Vec<Vec<Step>> = Vec::new();
    // Each round removes one value, so the tree's size bounds the rounds; 64 is plenty.
    for _ in 0..64 {
        match T::deserialize(Tracked(tree.clone())) {
            Ok(v) => return (Some(v), errors),
            Err(e) => {
                if e.path.is_empty() {
                    errors.push(e.message);
                    return (None, errors);
                }
                let covers_reported = removed.iter().any(|r| r.starts_with(&e.path));
                if !covers_reported {
                    errors.push(redacted(&e, &tree));
                }
                remove(&mut tree, &e.path);
                removed.push(e.path);
            }
        }
    }
    (None, errors)
}

/// `path: message`, with the value left out when its key may hold a secret.
fn redacted(e: &PathError, tree: &Value) -> String {
    let secret = e.path.iter().any(|s| matches!(s, Step::Key(k) if is_secret_key(k)));
    if !secret {
        return e.to_string();
    }
    let mut message = e.message.clone();
    if let Some(v) = lookup(tree, &e.path) {
        let shown = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if !shown.is_empty() {
            message = message.replace(&shown, "***");
        }
    }
    format!("{}: {message}", e.path())
}

fn lookup<'a>(tree: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(tree, |v, step| match step {
        Step::Key(k) => v.get(k),
        Step::Index(i) => v.get(i),
    })
}

fn remove(tree: &mut Value, path: &[Step]) {
    let Some((last, parent)) = path.split_last() else { return };
    let mut v = tree;
    for step in parent {
        let next = match step {
            Step::Key(k) => v.get_mut(k),
            Step::Index(i) => v.get_mut(*i),
        };
        let Some(next) = next else { return };
        v = next;
    }
    match (last, v) {
        (Step::Key(k), Value::Object(m)) => {
            m.remove(k);
        }
        (Step::Index(i), Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
        }
        _ => {}
    }
}

/// A `serde_json::Value` deserializer whose errors carry the path of their value.
struct Tracked(Value);

impl<'de> de::Deserializer<'de> for Tracked {
    type Error = PathError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_string(s),
            Value::Array(a) => visitor.visit_seq(Seq { items: a.into_iter().enumerate() }),
            Value::Object(m) => visitor.visit_map(Map { entries: m.into_iter(), value: None }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            v => visitor.visit_some(Tracked(v)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PathError> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(s.into_deserializer()),
            other => Err(de::Error::invalid_type(unexpected(&other), &"a string")),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, PathError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

fn unexpected(v: &Value) -> de::Unexpected<'_> {
    match v {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(_) => de::Unexpected::Other("a number"),
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

struct Seq {
    items: std::iter::Enumerate<std::vec::IntoIter<Value>>,
}

impl<'de> de::SeqAccess<'de> for Seq {
    type Error = PathError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, PathError> {
        match self.items.next() {
            Some((i, v)) => seed.deserialize(Tracked(v)).map(Some).map_err(|mut e| {
                e.path.insert(0, Step::Index(i));
                e
            }),
            None => Ok(None),
        }
    }
}

struct Map {
    entries: serde_json::map::IntoIter,
    value: Option<(String, Value)>,
}

impl<'de> de::MapAccess<'de> for Map {
    type Error = PathError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, PathError> {
        match self.entries.next() {
            Some((k, v)) => {
                self.value = Some((k.clone(), v));
                seed.deserialize(Tracked(Value::String(k.clone()))).map(Some).map_err(|mut e| {
                    e.path.insert(0, Step::Key(k));
                    e
                })
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, PathError> {
        let Some((k, v)) = self.value.take() else {
            return Err(de::Error::custom("value is missing"));
        };
        seed.deserialize(Tracked(v)).map_err(|mut e| {
            e.path.insert(0, Step::Key(k));
            e
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        size: usize,
        api_key: String,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Outer {
        name: String,
        inner: Inner,
        list: Vec<Inner>,
    }

    #[test]
    fn every_type_error_names_its_path() {
        let tree = serde_json::json!({
            "name": 3,
            "inner": {"size": "two"},
            "list": [{"size": 1}, {"size": -1, "bogus": 1}],
        });
        let (value, errors) = from_tree::<Outer>(tree);
        assert_eq!(value.unwrap().list.len(), 2, "the valid rest is kept");
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("name: invalid type: integer `3`")), "{errors:?}");
        assert!(errors.contains(&"inner.size: invalid type: string \"two\", expected usize".to_string()), "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("list[1].size: invalid value: integer `-1`")), "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("list[1].bogus: unknown field `bogus`")), "{errors:?}");
    }

    #[test]
    fn a_secret_value_is_never_echoed() {
        let tree = serde_json::json!({"inner": {"api_key": ["hunter2"]}});
        let errors = from_tree::<Outer>(tree).1;
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("inner.api_key: invalid type"), "{errors:?}");
        let tree = serde_json::json!({"inner": {"api_key": 12345}});
        let errors = from_tree::<Outer>(tree).1;
        assert!(!errors[0].contains("12345"), "{errors:?}");
    }
}
