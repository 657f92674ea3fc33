//! Single-pass JSON extraction: only the fields the mapping and the model need are
//! kept; everything else is skipped without allocating (`IgnoredAny`). Strings are
//! borrowed from the payload unless they contain escapes.
//!
//! Paths are compiled into a trie once per decoder; each path owns a slot, and
//! [`JsonFields`] answers [`Fields::field`] by slot index. A hand-written scanner
//! (`scan.rs`) fills the slots for the payloads producers almost always send, and gives up
//! on anything else (an escape in a string, a long integer, an error): serde_json then
//! parses it, giving the same fields or the error to report.

mod scan;

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::fields::{Field, FieldPath, Fields};

#[derive(Debug, Default, Clone)]
struct Node {
    children: Vec<(String, usize)>,
    /// Each child's key as the scanner compares it first: its length and first 16 bytes.
    tags: Vec<(usize, [u64; 2])>,
    /// Every slot this path fills (one path may serve several roles, e.g. entity key and window key).
    slots: Vec<usize>,
    /// Path segments from the root to this node (the root is 0).
    depth: usize,
    /// The slots of every path below this node: blocked when its value is not an object.
    below: Vec<usize>,
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
                        nodes.push(Node { depth: nodes[cur].depth + 1, ..Node::default() });
                        let i = nodes.len() - 1;
                        nodes[cur].children.push((part.clone(), i));
                        i
                    }
                };
            }
            nodes[cur].slots.push(path.slot());
            // Every proper prefix of the path blocks this slot when it holds a non-object.
            let mut prefix = 0;
            for part in &path.parts()[..path.parts().len().saturating_sub(1)] {
                prefix = nodes[prefix].children.iter().find(|(k, _)| k == part).map(|&(_, i)| i).unwrap_or(prefix);
                nodes[prefix].below.push(path.slot());
            }
            slots = slots.max(path.slot() + 1);
        }
        for node in &mut nodes {
            node.tags = node.children.iter().map(|(k, _)| (k.len(), scan::tag(k.as_bytes()))).collect();
        }
        Self { nodes, slots }
    }

    /// Parses `text` (checked UTF-8, see [`super::json_check`]), keeping only the trie's paths.
    pub fn extract<'de>(&self, text: &'de str) -> Result<JsonFields<'de>, serde_json::Error> {
        let mut out = JsonFields { slots: smallvec::smallvec![Slot::Missing; self.slots] };
        match scan::extract(self, text, &mut out.slots) {
            Some(()) => Ok(out),
            None => self.extract_serde(text),
        }
    }

    /// [`PathTrie::extract`] by serde_json alone: any JSON, and the error when it is not
    /// (the scanner's fallback; `benches/decode.rs` compares the two).
    pub fn extract_serde<'de>(&self, text: &'de str) -> Result<JsonFields<'de>, serde_json::Error> {
        let mut out = JsonFields { slots: smallvec::smallvec![Slot::Missing; self.slots] };
        let mut de = serde_json::Deserializer::from_str(text);
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
    Blocked { depth: usize, found: &'static str },
}

/// The extracted fields of one JSON event.
#[derive(Debug)]
pub struct JsonFields<'de> {
    /// On the stack for up to `INLINE_SLOTS` extracted paths: no allocation per event.
    slots: smallvec::SmallVec<[Slot<'de>; INLINE_SLOTS]>,
}

/// Extracted paths kept without a heap allocation (more spill to the heap).
const INLINE_SLOTS: usize = 24;

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
            Some(&Slot::Blocked { depth, found }) => Field::Blocked { depth, found },
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

impl<'de> NodeSeed<'_, '_, 'de> {
    /// This node's value was `own` (filling the node's own slots, if a path ends here);
    /// when it is `found` (neither an object nor null), every path below is blocked.
    fn settle(self, own: Slot<'de>, found: Option<&'static str>) {
        let node = &self.trie.nodes[self.node];
        for &slot in &node.slots {
            self.out[slot] = own.clone();
        }
        if let Some(found) = found {
            let depth = node.depth.saturating_sub(1);
            for &slot in &node.below {
                self.out[slot] = Slot::Blocked { depth, found };
            }
        }
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let node = &self.trie.nodes[self.node];
        while let Some(key) = map.next_key_seed(KeySeed)? {
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
        self.settle(Slot::Other("object"), None);
        Ok(())
    }

    // An interior path that is not an object: the paths below it are blocked.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.settle(Slot::Other("array"), Some("array"));
        Ok(())
    }
    // A null level is an absent subtree: the paths below it are missing.
    fn visit_unit<E>(self) -> Result<(), E> {
        self.settle(Slot::Null, None);
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.settle(Slot::Bool(v), Some("boolean"));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.settle(Slot::Int(v), Some("number"));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.settle(i64::try_from(v).map(Slot::Int).unwrap_or(Slot::Float(v as f64)), Some("number"));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.settle(Slot::Float(v), Some("number"));
        Ok(())
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.settle(Slot::Str(Cow::Borrowed(v)), Some("string"));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.settle(Slot::Str(Cow::Owned(v.to_string())), Some("string"));
        Ok(())
    }
}

/// Object keys, borrowed from the payload unless they contain escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_string()))
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
        let fast = trie.extract(text).unwrap();
        for p in &ps {
            assert_eq!(fast.field(p), full.field(p), "{}", p.as_str());
        }
        assert_eq!(fast.field(&ps[5]), Field::Str("tést"));
    }

    #[test]
    fn one_path_can_fill_several_slots() {
        let ps = vec![FieldPath::parse("id").with_slot(0), FieldPath::parse("id").with_slot(1)];
        let fields = PathTrie::new(&ps).extract(r#"{"id": "x"}"#).unwrap();
        assert_eq!((fields.field(&ps[0]), fields.field(&ps[1])), (Field::Str("x"), Field::Str("x")));
    }

    #[test]
    fn a_path_through_null_or_nothing_is_missing() {
        let ps = paths(&["device.type"]);
        let trie = PathTrie::new(&ps);
        for text in [r#"{"device": null}"#, r#"{}"#, r#"{"device": {}}"#] {
            assert_eq!(trie.extract(text).unwrap().field(&ps[0]), Field::Missing, "{text}");
        }
    }

    #[test]
    fn a_path_through_a_scalar_or_array_is_blocked_where_it_stops() {
        let ps = paths(&["a.b.c", "a.x", "a"]);
        let trie = PathTrie::new(&ps);
        let cases = [
            (r#"{"a": "oops"}"#, [Field::Blocked { depth: 0, found: "string" }; 2]),
            (r#"{"a": 1.5}"#, [Field::Blocked { depth: 0, found: "number" }; 2]),
            (r#"{"a": true}"#, [Field::Blocked { depth: 0, found: "boolean" }; 2]),
            (r#"{"a": [{"b": 1}]}"#, [Field::Blocked { depth: 0, found: "array" }; 2]),
            (r#"{"a": {"b": 7, "x": 1}}"#, [Field::Blocked { depth: 1, found: "number" }, Field::Int(1)]),
        ];
        for (text, want) in cases {
            let fast = trie.extract(text).unwrap();
            let full: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!([fast.field(&ps[0]), fast.field(&ps[1])], want, "{text}");
            for p in &ps {
                assert_eq!(fast.field(p), full.field(p), "{text} {}", p.as_str());
            }
        }
    }

    #[test]
    fn a_path_that_is_also_a_prefix_gets_its_value() {
        let ps = paths(&["device", "device.type"]);
        let trie = PathTrie::new(&ps);
        let f = trie.extract(r#"{"device": {"type": "tv"}}"#).unwrap();
        assert_eq!((f.field(&ps[0]), f.field(&ps[1])), (Field::Other("object"), Field::Str("tv")));
        let f = trie.extract(r#"{"device": "tv"}"#).unwrap();
        assert_eq!(
            (f.field(&ps[0]), f.field(&ps[1])),
            (Field::Str("tv"), Field::Blocked { depth: 0, found: "string" })
        );
    }

    #[test]
    fn invalid_json_is_an_error() {
        let trie = PathTrie::new(&paths(&["a"]));
        assert!(trie.extract(r#"{"a": NaN}"#).is_err());
        assert!(trie.extract(r#"{"a": 1} trailing"#).is_err());
        assert!(trie.extract(r#"{"a": 1"#).is_err());
    }
}
