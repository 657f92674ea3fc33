//! Feast's Redis key of an entity and its hash field names, as Feast 0.67 computes them
//! (`feast/infra/online_stores/helpers.py` `_redis_key`, `_mmh3`;
//! `feast/infra/key_encoding_utils.py` `serialize_entity_key`).
//!
//! Key: the serialized `EntityKey` followed by the project name. Serialization (version 3):
//! `u32` number of join keys, then per join key (sorted by name) `u32` type STRING (2),
//! `u32` length and the name's bytes, then per value `u32` value type, `u32` length and the
//! value's bytes (string: UTF-8; int32: `i32`; int64: `i64`); every integer little-endian.
//! Version 2 leaves out the count and the names' lengths. A feature's hash field is the
//! murmur3 (x86, 32-bit, seed 0) of `feature_view:feature`, as 4 little-endian bytes.

use super::config::KeyType;

/// Feast's value type numbers (`feast.value_type.ValueType`).
const STRING: u32 = 2;
const INT32: u32 = 3;
const INT64: u32 = 4;

/// One join key: its name and type (the value comes from the event).
#[derive(Debug, Clone)]
pub struct JoinKey {
    /// Join key name in Feast.
    pub name: String,
    /// Its value type.
    pub kind: KeyType,
    /// Which part of the entity id holds its value (the id's parts are in config order).
    pub part: usize,
}

/// Feast's Redis key for an entity whose join key values are `parts` (in config order):
/// None when a value does not parse as its type (an int64 key given "abc"), as Feast
/// could not have written such a row.
pub fn redis_key(project: &str, version: u32, sorted: &[JoinKey], parts: &[&str]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(64 + project.len());
    let u32le = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
    if version > 2 {
        u32le(&mut out, sorted.len() as u32);
    }
    for k in sorted {
        u32le(&mut out, STRING);
        if version > 2 {
            u32le(&mut out, k.name.len() as u32);
        }
        out.extend_from_slice(k.name.as_bytes());
    }
    for k in sorted {
        let v = parts.get(k.part)?;
        match k.kind {
            KeyType::String => {
                u32le(&mut out, STRING);
                u32le(&mut out, v.len() as u32);
                out.extend_from_slice(v.as_bytes());
            }
            KeyType::Int32 => {
                u32le(&mut out, INT32);
                u32le(&mut out, 4);
                out.extend_from_slice(&v.parse::<i32>().ok()?.to_le_bytes());
            }
            KeyType::Int64 => {
                u32le(&mut out, INT64);
                u32le(&mut out, 8);
                out.extend_from_slice(&v.parse::<i64>().ok()?.to_le_bytes());
            }
        }
    }
    out.extend_from_slice(project.as_bytes());
    Some(out)
}

/// The hash field of feature `name` (`feature_view:feature`).
pub fn feature_field(name: &str) -> Vec<u8> {
    murmur3_32(name.as_bytes(), 0).to_le_bytes().to_vec()
}

/// MurmurHash3 x86 32-bit (what Python's `mmh3.hash(key, signed=False)` computes).
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut blocks = data.chunks_exact(4);
    for b in &mut blocks {
        let k = u32::from_le_bytes([b[0], b[1], b[2], b[3]]).wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h = (h ^ k).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, &b) in tail.iter().enumerate() {
            k |= u32::from(b) << (8 * i);
        }
        h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Expected bytes printed by Feast 0.67's own `_mmh3` and `_redis_key`.
    #[test]
    fn feature_fields_match_feasts_mmh3() {
        for (s, want) in [
            ("", "00000000"),
            ("a", "b269253c"),
            ("ab", "5fd7bf9b"),
            ("abc", "fa93ddb3"),
            ("abcd", "6a67ed43"),
            ("driver_hourly:conv_rate", "10dfb4c4"),
            ("views:ünï", "b2d32689"),
        ] {
            assert_eq!(hex(&feature_field(s)), want, "{s:?}");
        }
    }

    #[test]
    fn entity_keys_match_feasts_serialization() {
        let one = [JoinKey { name: "driver_id".into(), kind: KeyType::Int64, part: 0 }];
        assert_eq!(
            hex(&redis_key("proj", 3, &one, &["1001"]).unwrap()),
            "0100000002000000090000006472697665725f69640400000008000000e90300000000000070726f6a"
        );
        assert_eq!(
            hex(&redis_key("proj", 2, &one, &["1001"]).unwrap()),
            "020000006472697665725f69640400000008000000e90300000000000070726f6a"
        );
        // Configured as (zone, driver_id); Feast sorts by name: driver_id first.
        let two = [
            JoinKey { name: "driver_id".into(), kind: KeyType::Int32, part: 1 },
            JoinKey { name: "zone".into(), kind: KeyType::String, part: 0 },
        ];
        assert_eq!(
            hex(&redis_key("proj", 3, &two, &["b7", "-5"]).unwrap()),
            "0200000002000000090000006472697665725f696402000000040000007a6f6e650300000004000000fbffffff0200000002000000623770726f6a"
        );
        assert_eq!(redis_key("proj", 3, &one, &["x1"]), None, "not an int64: Feast has no such row");
    }
}
