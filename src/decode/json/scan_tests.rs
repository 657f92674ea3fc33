//! Tests of the JSON scanner against serde_json's path: generated and mutated payloads,
//! compared bit for bit.
use proptest::prelude::*;

use super::super::{PathTrie, Slot};
use crate::decode::fields::FieldPath;

const KEYS: [&str; 8] = ["a", "b", "c", "id", "x y", "é", "merchant_category_code", "merchant_category_codf"];

fn trie() -> (PathTrie, usize) {
    let paths = ["a", "b", "a.b", "a.c", "b.c.a", "id", "x y", "é", "c.id", "a.b.c", "merchant_category_code"];
    let ps: Vec<FieldPath> = paths.iter().enumerate().map(|(i, p)| FieldPath::parse(p).with_slot(i)).collect();
    (PathTrie::new(&ps), ps.len())
}

/// Both paths on `text`: fast (None when it gave up) and serde's (None on an error),
/// as `Debug` text, so floats compare bit for bit (`-0.0` is not `0.0` here).
fn both(text: &str) -> (Option<String>, Option<String>) {
    let (trie, n) = trie();
    let mut fast = vec![Slot::Missing; n];
    let fast = super::extract(&trie, text, &mut fast).map(|()| format!("{fast:?}"));
    let slow = trie.extract_serde(text).ok().map(|f| format!("{:?}", f.slots.to_vec()));
    (fast, slow)
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:?}")),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
        "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,30})?([eE][+-]?[0-9]{1,4})?",
        Just("-0".to_string()),
        Just("-0.0".to_string()),
        Just("1e400".to_string()),
    ]
}

fn plain() -> impl Strategy<Value = String> {
    prop_oneof![
        number(),
        "[a-z é\"\\\\/\\n\\t\u{1}]{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        "[a-z\\\\\"]{0,6}".prop_map(|s| format!("\"{s}\"")),
        Just("true".to_string()),
        Just("false".to_string()),
        Just("null".to_string()),
    ]
}

fn value() -> impl Strategy<Value = String> {
    let ws = prop_oneof![Just(""), Just(" "), Just("\n\t"), Just("\r ")];
    plain().prop_recursive(5, 40, 6, move |inner| {
        let ws = ws.clone();
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(","))),
            (proptest::collection::vec((proptest::sample::select(&KEYS[..]), inner), 0..6), ws).prop_map(|(kv, ws)| {
                let body: Vec<String> = kv.iter().map(|(k, v)| format!("{ws}\"{k}\"{ws}:{ws}{v}{ws}")).collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn gives_what_serde_gives_or_gives_up(v in value()) {
        let text = format!("{{\"a\":{v},\"id\":{v}, \"b\" : {v}}}");
        let (fast, slow) = both(&text);
        if let Some(f) = fast {
            prop_assert_eq!(Some(f), slow, "{}", text);
        }
    }

    #[test]
    fn numbers_are_what_serde_makes_of_them(n in number()) {
        let text = format!("{{\"a\": {n}, \"b\": {{\"c\": [{n}]}}}}");
        let (fast, slow) = both(&text);
        if let Some(f) = fast {
            prop_assert_eq!(Some(f), slow, "{}", text);
        } else {
            prop_assert!(slow.is_none() || n.trim_start_matches('-').len() > 18, "{}", text);
        }
    }

    #[test]
    fn never_accepts_what_serde_refuses(v in value(), at in any::<prop::sample::Index>(), byte in prop::sample::select(&b"{}[],:\"\\ 0-.eE9atn"[..]), cut in any::<bool>()) {
        let mut bytes = format!("{{\"a\":{v}}}").into_bytes();
        let at = at.index(bytes.len());
        if cut { bytes.remove(at); } else { bytes.insert(at, byte); }
        let Ok(text) = String::from_utf8(bytes) else { return Ok(()) };
        let (fast, slow) = both(&text);
        if let Some(f) = fast {
            prop_assert_eq!(Some(f), slow, "{}", text);
        }
    }
}

#[test]
fn finds_the_first_special_byte() {
    for text in ["", "abc", "abcdefgh", "abcdefghi\"", "é\u{1}", "ab\\cdefgh\"", "\u{7f}\u{80}xyzéé\u{1f}"] {
        for from in 0..=text.len() {
            let b = text.as_bytes();
            let want = b[from..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).map(|p| from + p);
            assert_eq!(super::special(b, from), want, "{text:?} from {from}");
        }
    }
}

#[test]
fn takes_the_fast_path_for_plain_payloads() {
    let text = r#"{"id": "tx-1", "a": {"b": 1.5, "c": -0, "z": [1, {"q": null}]}, "é": true, "b": 12}"#;
    let (fast, slow) = both(text);
    assert!(fast.is_some());
    assert_eq!(fast, slow);
    // Left to serde_json: an escape, a long integer (both parse there), a float out of range (an error).
    for (odd, parses) in
        [(r#"{"id": "t\"x"}"#, true), (r#"{"a": 123456789012345678901}"#, true), (r#"{"a": 1e999}"#, false)]
    {
        let (fast, slow) = both(odd);
        assert!(fast.is_none() && slow.is_some() == parses, "{odd}");
    }
}
