//! Hostile-input checks on JSON payloads, and dead-letter details that name the field.
//!
//! Before parsing, a payload must be UTF-8 (serde_json skips unused strings without
//! checking them) and nested at most [`MAX_DEPTH`] deep (unused values are skipped
//! without a depth limit). Both checks are one pass over the bytes and allocate
//! nothing; the deep scan runs only when the payload has more brackets than the limit.
//! The error paths re-scan the payload to name the field where parsing failed.

use super::{err, DecodeError};
use crate::error::DeadLetterReason;

/// Deepest nesting of arrays and objects a payload may have (serde_json's own limit).
pub const MAX_DEPTH: usize = 128;

/// `bytes` as text, or a `malformed` error naming where it is not UTF-8 or too deep.
pub fn text(bytes: &[u8]) -> Result<&str, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        err(DeadLetterReason::Malformed, format!("invalid JSON: not UTF-8 at byte {at}{}", in_field(bytes, at)))
    })?;
    if let Some(at) = too_deep(bytes) {
        return Err(err(
            DeadLetterReason::Malformed,
            format!("invalid JSON: nested more than {MAX_DEPTH} levels deep at byte {at}{}", in_field(bytes, at)),
        ));
    }
    Ok(text)
}

/// Offset of the bracket that opens level `MAX_DEPTH + 1`, if any.
fn too_deep(bytes: &[u8]) -> Option<usize> {
    // Only a payload with more brackets than the limit can be too deep. Counted in byte
    // lanes ('[' and '{' are the two bytes that OR 0x20 makes '{'), 255 bytes per lane sum.
    let brackets: usize = bytes
        .chunks(255)
        .map(|c| usize::from(c.iter().fold(0u8, |n, &b| n.wrapping_add(u8::from(b | 0x20 == b'{')))))
        .sum();
    if brackets <= MAX_DEPTH {
        return None;
    }
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Classifies a serde_json error. NaN/Infinity literals and numbers beyond the f64 range
/// are not JSON; they are `non_finite`, naming the field that holds them.
pub fn error(bytes: &[u8], e: serde_json::Error) -> DecodeError {
    let at = byte_offset(bytes, e.line(), e.column()).min(bytes.len());
    let rest = &bytes[at..];
    let non_finite = ["NaN", "Infinity", "-Infinity", "+Infinity"].iter().any(|t| rest.starts_with(t.as_bytes()))
        || e.to_string().starts_with("number out of range");
    if non_finite {
        // serde_json points into the token (after a sign, at its last digit): back up to its start.
        let mut start = at;
        while start > 0 && matches!(bytes[start - 1], b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'+' | b'-' | b'.') {
            start -= 1;
        }
        err(DeadLetterReason::NonFinite, format!("non-finite number{} (not valid JSON): {e}", in_field(bytes, start)))
    } else {
        err(DeadLetterReason::Malformed, format!("invalid JSON: {e}"))
    }
}

/// serde_json reports 1-based line and column of the byte *after* the offending one.
fn byte_offset(bytes: &[u8], line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(p) => start += p + 1,
            None => break,
        }
    }
    (start + column).saturating_sub(1)
}

/// ` in field 'a.b[2]'` for the value at byte `at`, or nothing outside any field.
fn in_field(bytes: &[u8], at: usize) -> String {
    let path = path_at(bytes, at);
    if path.is_empty() {
        String::new()
    } else {
        format!(" in field '{path}'")
    }
}

/// One open container while scanning: an object (with the key whose value is being read)
/// or an array (with the index of the element being read).
enum Level {
    Object { key: Option<(usize, usize)>, want_key: bool },
    Array(usize),
}

/// The dotted path (`a.b`, array elements as `[i]`) of the value being read at byte `at`.
/// Error paths only: it re-scans the payload up to `at`.
pub fn path_at(bytes: &[u8], at: usize) -> String {
    let head = &bytes[..at.min(bytes.len())];
    let mut stack: Vec<Level> = Vec::new();
    let mut i = 0;
    while i < head.len() {
        match head[i] {
            b'"' => {
                let open = i + 1;
                i = open;
                while i < head.len() && head[i] != b'"' {
                    i += if head[i] == b'\\' { 2 } else { 1 };
                }
                if let Some(Level::Object { key, want_key: want @ true }) = stack.last_mut() {
                    *key = Some((open, i.min(head.len())));
                    *want = false;
                }
            }
            b'{' => stack.push(Level::Object { key: None, want_key: true }),
            b'[' => stack.push(Level::Array(0)),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Level::Object { want_key, .. }) => *want_key = true,
                Some(Level::Array(n)) => *n += 1,
                None => {}
            },
            _ => {}
        }
        i += 1;
    }
    let mut path = String::new();
    for level in &stack {
        match level {
            Level::Object { key: Some((a, b)), want_key: false } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&String::from_utf8_lossy(&head[*a..*b]));
            }
            Level::Object { .. } => break,
            Level::Array(n) => path.push_str(&format!("[{n}]")),
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_at_a_byte_names_keys_and_array_indices() {
        let text = br#"{"a": {"b\"q": [1, {"c": X"#;
        assert_eq!(path_at(text, text.len() - 1), r#"a.b\"q[1].c"#);
        assert_eq!(path_at(br#"{"a": 1, "z": X"#, 14), "z");
        assert_eq!(path_at(br#"{"a": 1, X"#, 9), "", "between fields there is no field");
    }

    #[test]
    fn only_payloads_nested_past_the_limit_are_too_deep() {
        let nest = |n: usize| format!("{{\"a\": {}\"[[[[\"{}}}", "[".repeat(n), "]".repeat(n));
        assert_eq!(too_deep(nest(MAX_DEPTH - 1).as_bytes()), None, "brackets inside strings do not count");
        let deep = nest(MAX_DEPTH);
        assert_eq!(too_deep(deep.as_bytes()), Some(deep.find('[').unwrap() + MAX_DEPTH - 1));
        let flat = format!("{{\"a\": [{}]}}", vec!["[]"; 500].join(","));
        assert_eq!(too_deep(flat.as_bytes()), None, "many brackets, shallow");
    }
}
