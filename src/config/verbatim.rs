//! Environment variables taken as written, as strings: the `[kafka.security]` keys (a
//! password `007` must stay `007`, not become the number 7) and librdkafka properties, whose
//! dotted names the `__`-separated layer would otherwise split into nested tables
//! (`VERDICT__KAFKA__CONSUMER__SASL.PASSWORD` gave `invalid type: map, expected a string`).

use std::collections::HashMap;

use serde_json::Value;

/// Variable prefix (matched in any case, as the environment layer does) → table under `kafka`.
const VERBATIM: [(&str, &str); 3] = [
    ("VERDICT__KAFKA__SECURITY__", "security"),
    ("VERDICT__KAFKA__CONSUMER__", "consumer"),
    ("VERDICT__KAFKA__PRODUCER__", "producer"),
];

/// One variable taken out of the environment layer: its table, key (lower case) and value.
pub(super) struct Verbatim {
    table: &'static str,
    key: String,
    value: String,
}

/// Takes the verbatim variables out of `env`.
pub(super) fn take(env: &mut HashMap<String, String>) -> Vec<Verbatim> {
    let mut taken = Vec::new();
    env.retain(|name, value| {
        let upper = name.to_ascii_uppercase();
        let Some((prefix, table)) = VERBATIM.iter().find(|(p, _)| upper.starts_with(p)) else { return true };
        let key = name[prefix.len()..].to_ascii_lowercase();
        if key.is_empty() {
            return true;
        }
        taken.push(Verbatim { table, key, value: std::mem::take(value) });
        false
    });
    taken
}

/// Writes `taken` into the merged tree as `kafka.<table>.<key>` strings (the environment wins
/// over the files, as the environment layer does).
pub(super) fn put(tree: &mut Value, taken: Vec<Verbatim>) {
    let Some(kafka) = tree.get_mut("kafka").and_then(Value::as_object_mut) else { return };
    for Verbatim { table, key, value } in taken {
        let entry = kafka.entry(table).or_insert_with(|| Value::Object(Default::default()));
        if let Some(map) = entry.as_object_mut() {
            map.insert(key, Value::String(value));
        }
    }
}
