//! Decoding the protobuf messages Feast stores in its Redis hashes, by hand (two small
//! messages; no protoc step): `feast.types.Value` (`feast/protos/feast/types/Value.proto`,
//! a oneof `val`) for each feature, `google.protobuf.Timestamp` for each view's `_ts`.
//!
//! A value becomes what a model column takes, a number: int32/int64/float/double/unix
//! timestamp as such, bool as 1/0, a string when it parses as a number. An unset value
//! (Feast writes a null as an empty message), bytes, lists, maps and the rest are missing,
//! as is a message that does not parse.

/// Field numbers of `feast.types.Value`'s oneof.
const STRING_VAL: u64 = 2;
const INT32_VAL: u64 = 3;
const INT64_VAL: u64 = 4;
const DOUBLE_VAL: u64 = 5;
const FLOAT_VAL: u64 = 6;
const BOOL_VAL: u64 = 7;
const UNIX_TIMESTAMP_VAL: u64 = 8;

/// One field of a protobuf message: its number and its value by wire type.
enum Wire<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
}

fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The message's fields in order (None: it does not parse).
fn fields(b: &[u8]) -> Option<Vec<(u64, Wire<'_>)>> {
    let mut at = 0;
    let mut out = Vec::with_capacity(1);
    while at < b.len() {
        let tag = varint(b, &mut at)?;
        let wire = match tag & 7 {
            0 => Wire::Varint(varint(b, &mut at)?),
            1 => {
                let v = b.get(at..at + 8)?.try_into().ok()?;
                at += 8;
                Wire::Fixed64(v)
            }
            2 => {
                let n = usize::try_from(varint(b, &mut at)?).ok()?;
                let v = b.get(at..at.checked_add(n)?)?;
                at += n;
                Wire::Bytes(v)
            }
            5 => {
                let v = b.get(at..at + 4)?.try_into().ok()?;
                at += 4;
                Wire::Fixed32(v)
            }
            _ => return None,
        };
        out.push((tag >> 3, wire));
    }
    Some(out)
}

/// A stored `feast.types.Value` as a number (None: unset, not numeric, or unreadable).
pub fn number(b: &[u8]) -> Option<f64> {
    // In a oneof the last field on the wire wins.
    let (field, wire) = fields(b)?.pop()?;
    match (field, wire) {
        (INT32_VAL, Wire::Varint(v)) => Some(f64::from(v as i32)),
        (INT64_VAL | UNIX_TIMESTAMP_VAL, Wire::Varint(v)) => Some(v as i64 as f64),
        (BOOL_VAL, Wire::Varint(v)) => Some(if v != 0 { 1.0 } else { 0.0 }),
        (DOUBLE_VAL, Wire::Fixed64(v)) => Some(f64::from_le_bytes(v)),
        (FLOAT_VAL, Wire::Fixed32(v)) => Some(f64::from(f32::from_le_bytes(v))),
        (STRING_VAL, Wire::Bytes(s)) => std::str::from_utf8(s).ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// A stored `google.protobuf.Timestamp` in ms since the epoch (None: empty or unreadable).
pub fn timestamp_ms(b: &[u8]) -> Option<i64> {
    if b.is_empty() {
        return None;
    }
    let (mut seconds, mut nanos) = (0i64, 0i64);
    for (field, wire) in fields(b)? {
        match (field, wire) {
            (1, Wire::Varint(v)) => seconds = v as i64,
            (2, Wire::Varint(v)) => nanos = i64::from(v as i32),
            _ => {}
        }
    }
    Some(seconds.saturating_mul(1000).saturating_add(nanos / 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(hex: &str) -> Vec<u8> {
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    /// Bytes printed by `Value(...).SerializeToString()` with Feast 0.67's protobuf classes.
    #[test]
    fn values_serialized_by_feast_decode_to_their_numbers() {
        for (hex, want) in [
            ("18f9ffffffffffffffff01", Some(-7.0)),
            ("20eccb9b8bb4fcffffff01", Some(-123456789012.0)),
            ("350000c03f", Some(1.5)),
            ("2900000000000002c0", Some(-2.25)),
            ("120431322e35", Some(12.5)),
            ("3801", Some(1.0)),
            ("3800", Some(0.0)),
            ("", None),
            ("2000", Some(0.0)),
            ("4080e2cfaa06", Some(1_700_000_000.0)),
            ("72040a020102", None),
            ("1203616263", None),
            ("2080", None),
        ] {
            assert_eq!(number(&bytes(hex)), want, "{hex}");
        }
    }

    #[test]
    fn feasts_timestamps_decode_to_ms() {
        assert_eq!(timestamp_ms(&bytes("0880e2cfaa0610959aef3a")), Some(1_700_000_000_123));
        assert_eq!(timestamp_ms(&[]), None);
        assert_eq!(timestamp_ms(&bytes("08ff")), None);
    }
}
