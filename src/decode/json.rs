//! Single-pass JSON extraction: only the fields the mapping and the model need are
//! kept; everything else is skipped without allocating (`IgnoredAny`). Strings are
//! borrowed from the payload unless they contain escapes.
//!
//! Paths are compiled into a trie once per decoder; each path owns a slot, and
//! [`JsonFields`] answers [`Fields::field`] by slot index.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::fields::{Field, FieldPath, Fields};

#[derive(Debug, Default, Clone)]
struct Node {
    children: Vec<(String, usize)>,
    /// Every slot this path fills (one path may serve several roles, e.g. entity key and window key).
    slots: Vec<usize>,
}

/// The set of paths to extract, as a trie.
#[derive(Debug, Clone)]
pub struct PathTrie {
    nodes: Vec<Node>,
    slots: usize,
}

impl PathTrie {
    /// Builds the trie and assigns each path its slot (paths are numbered by [`FieldPath::slot`]).
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a FieldPath>) -> Self {
        let mut nodes = vec![Node::default()];
        let mut slots = 0;
        for path in paths {
            let mut cur = 0;
            for part in path.parts() {
                cur = match nodes[cur].children.iter().find(|(k, _)| k == part) {
                    Some(&(_, i)) => i,
                    None => {
                        nodes.push(Node::default());
                        let i = nodes.len() - 1;
                        nodes[cur].children.push((part.clone(), i));
                        i
                    }
                };
            }
            nodes[cur].slots.push(path.slot());
            slots = slots.max(path.slot() + 1);
        }
        Self { nodes, slots }
    }

    /// Parses `bytes`, keeping only the trie's paths.
    pub fn extract<'de>(&self, bytes: &'de [u8]) -> Result<JsonFields<'de>, serde_json::Error> {
        let mut out = JsonFields { slots: vec![Slot::Missing; self.slots] };
        let mut de = serde_json::Deserializer::from_slice(bytes);
        NodeSeed { trie: self, node: 0, out: &mut out.slots }.deserialize(&mut de)?;
        de.end()?;
        Ok(out)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Slot<'de> {
    Missing,
    Null,
    Float(f64),
    Int(i64),
    Str(Cow<'de, str>),
    Bool(bool),
    Other(&'static str),
}

/// The extracted fields of one JSON event.
#[derive(Debug)]
pub struct JsonFields<'de> {
    slots: Vec<Slot<'de>>,
}

impl Fields for JsonFields<'_> {
    fn field(&self, path: &FieldPath) -> Field<'_> {
        match self.slots.get(path.slot()) {
            None | Some(Slot::Missing) => Field::Missing,
            Some(Slot::Null) => Field::Null,
            Some(Slot::Float(f)) => Field::Float(*f),
            Some(Slot::Int(i)) => Field::Int(*i),
            Some(Slot::Str(s)) => Field::Str(s),
            Some(Slot::Bool(b)) => Field::Bool(*b),
            Some(Slot::Other(t)) => Field::Other(t),
        }
    }
}

struct NodeSeed<'t, 'o, 'de> {
    trie: &'t PathTrie,
    node: usize,
    out: &'o mut [Slot<'de>],
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let node = &self.trie.nodes[self.node];
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match node.children.iter().find(|(k, _)| *k == key) {
                Some(&(_, child)) => {
                    let c = &self.trie.nodes[child];
                    if c.children.is_empty() {
                        let v = map.next_value_seed(ScalarSeed)?;
                        for &slot in &c.slots {
                            self.out[slot] = v.clone();
                        }
                    } else {
                        map.next_value_seed(NodeSeed { trie: self.trie, node: child, out: &mut *self.out })?;
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    // An interior path that is not an object: its leaves stay Missing.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Slot<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Slot<'de>, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Slot<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Slot<'de>, E> {
        Ok(Slot::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Slot<'de>, E> {
        Ok(Slot::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Slot<'de>, E> {
        Ok(Slot::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Slot<'de>, E> {
        Ok(i64::try_from(v).map(Slot::Int).unwrap_or(Slot::Float(v as f64)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Slot<'de>, E> {
        Ok(Slot::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Slot<'de>, E> {
        Ok(Slot::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Slot<'de>, E> {
        Ok(Slot::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Slot<'de>, E> {
        Ok(Slot::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Slot<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Slot::Other("array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Slot<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Slot::Other("object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(ps: &[&str]) -> Vec<FieldPath> {
        ps.iter().enumerate().map(|(i, p)| FieldPath::parse(p).with_slot(i)).collect()
    }

    #[test]
    fn extracts_exactly_what_a_full_parse_would_give() {
        let ps = paths(&["a", "b.c", "b.d", "e", "s", "esc", "n", "arr", "obj", "deep.x.y"]);
        let trie = PathTrie::new(&ps);
        let text = r#"{"a": 1, "skip": {"x": [1, 2, {"y": 3}]}, "b": {"c": 2.5, "d": null}, "e": true,
                       "s": "plain", "esc": "t\u00e9st", "n": 18446744073709551615, "arr": [1], "obj": {},
                       "deep": {"x": 7}}"#;
        let full: serde_json::Value = serde_json::from_str(text).unwrap();
        let fast = trie.extract(text.as_bytes()).unwrap();
        for p in &ps {
            assert_eq!(fast.field(p), full.field(p), "{}", p.as_str());
        }
        assert_eq!(fast.field(&ps[5]), Field::Str("tést"));
    }

    #[test]
    fn one_path_can_fill_several_slots() {
        let ps = vec![FieldPath::parse("id").with_slot(0), FieldPath::parse("id").with_slot(1)];
        let fields = PathTrie::new(&ps).extract(br#"{"id": "x"}"#).unwrap();
        assert_eq!((fields.field(&ps[0]), fields.field(&ps[1])), (Field::Str("x"), Field::Str("x")));
    }

    #[test]
    fn a_path_through_a_non_object_is_missing() {
        let ps = paths(&["device.type"]);
        let trie = PathTrie::new(&ps);
        for text in [r#"{"device": null}"#, r#"{"device": "x"}"#, r#"{}"#, r#"{"device": [1]}"#] {
            assert_eq!(trie.extract(text.as_bytes()).unwrap().field(&ps[0]), Field::Missing, "{text}");
        }
    }

    #[test]
    fn invalid_json_is_an_error() {
        let trie = PathTrie::new(&paths(&["a"]));
        assert!(trie.extract(b"{\"a\": NaN}").is_err());
        assert!(trie.extract(b"{\"a\": 1} trailing").is_err());
        assert!(trie.extract(b"{\"a\": 1").is_err());
    }
}
