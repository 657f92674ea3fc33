//! The fast path of [`PathTrie::extract`]: a scanner for the JSON producers almost always
//! send (strings without escapes, numbers it parses exactly, nesting at most
//! [`FAST_DEPTH`] deep). On anything else it gives up (None) and the caller parses the
//! payload again with serde_json, which then gives the same fields or the error. So it
//! accepts only what serde_json accepts, and fills the slots exactly as the serde path
//! does: its tests (`scan_tests.rs`) compare the two on generated and mutated payloads.
//!
//! Numbers follow serde_json's rules: an integer is an `Int` (`-0` is the float `-0.0`); a
//! fraction or exponent makes a correctly rounded `Float` (std's parser, as serde_json's
//! `float_roundtrip`); integers of more than [`FAST_DIGITS`] digits and out-of-range floats
//! take the serde path.

use std::borrow::Cow;

use super::{PathTrie, Slot};

/// Deepest nesting the fast path follows (serde_json's own limit is 128 levels).
const FAST_DEPTH: usize = 64;

/// Integers of up to this many digits are exact in an `i64`.
const FAST_DIGITS: usize = 18;

/// Fills `out` from `text` (checked UTF-8) as the serde path would, or None: parse it
/// with serde_json (the slots may be partly filled then).
pub(super) fn extract<'de>(trie: &PathTrie, text: &'de str, out: &mut [Slot<'de>]) -> Option<()> {
    let mut s = Scan { text, b: text.as_bytes(), i: 0 };
    s.ws();
    s.node(trie, 0, out, 0)?;
    s.ws();
    (s.i == s.b.len()).then_some(())
}

struct Scan<'de> {
    text: &'de str,
    b: &'de [u8],
    i: usize,
}

impl<'de> Scan<'de> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Skips JSON whitespace (space, tab, line feed, carriage return: nothing else).
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// The value at interior node `n` (`depth` containers around it): fills the node's
    /// slots, and blocks the paths below it unless it is an object or null.
    fn node(&mut self, trie: &PathTrie, n: usize, out: &mut [Slot<'de>], depth: usize) -> Option<()> {
        let node = &trie.nodes[n];
        let (own, found) = match self.peek()? {
            b'{' if depth < FAST_DEPTH => {
                self.i += 1;
                self.ws();
                if self.peek()? == b'}' {
                    self.i += 1;
                } else {
                    loop {
                        let key = self.key()?;
                        match child(node, self.b, key) {
                            Some(child) if trie.nodes[child].children.is_empty() => {
                                let v = self.scalar(depth + 1)?;
                                for &slot in &trie.nodes[child].slots {
                                    out[slot] = v.clone();
                                }
                            }
                            Some(child) => self.node(trie, child, out, depth + 1)?,
                            None => self.skip(depth + 1)?,
                        }
                        self.ws();
                        match self.peek()? {
                            b',' => {
                                self.i += 1;
                                self.ws();
                            }
                            b'}' => {
                                self.i += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                (Slot::Other("object"), None)
            }
            b'[' => {
                self.skip(depth)?;
                (Slot::Other("array"), Some("array"))
            }
            _ => {
                let v = self.plain()?;
                let found = match v {
                    Slot::Null => None,
                    Slot::Bool(_) => Some("boolean"),
                    Slot::Str(_) => Some("string"),
                    _ => Some("number"),
                };
                (v, found)
            }
        };
        for &slot in &node.slots {
            out[slot] = own.clone();
        }
        if let Some(found) = found {
            let depth = node.depth.saturating_sub(1);
            for &slot in &node.below {
                out[slot] = Slot::Blocked { depth, found };
            }
        }
        Some(())
    }

    /// An object key and its colon (the scanner is at the key's opening quote): where the
    /// key starts and how long it is.
    #[inline(always)]
    fn key(&mut self) -> Option<(usize, usize)> {
        let start = self.i + 1;
        let n = self.string()?.len();
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some((start, n))
    }

    /// A leaf's value: a container counts as what it is, not as its contents.
    #[inline(always)]
    fn scalar(&mut self, depth: usize) -> Option<Slot<'de>> {
        match self.peek()? {
            b'{' => self.skip(depth).map(|()| Slot::Other("object")),
            b'[' => self.skip(depth).map(|()| Slot::Other("array")),
            _ => self.plain(),
        }
    }

    /// A string, number, boolean or null.
    #[inline(always)]
    fn plain(&mut self) -> Option<Slot<'de>> {
        Some(match self.peek()? {
            b'"' => Slot::Str(Cow::Borrowed(self.string()?)),
            b'n' => self.word(b"null", Slot::Null)?,
            b't' => self.word(b"true", Slot::Bool(true))?,
            b'f' => self.word(b"false", Slot::Bool(false))?,
            _ => self.number()?,
        })
    }

    #[inline(always)]
    fn word(&mut self, w: &[u8], v: Slot<'de>) -> Option<Slot<'de>> {
        self.b[self.i..].starts_with(w).then(|| {
            self.i += w.len();
            v
        })
    }

    /// A string with neither escapes nor control characters (the scanner is at its quote).
    #[inline(always)]
    fn string(&mut self) -> Option<&'de str> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.i + 1;
        let end = special(self.b, start)?;
        if self.b[end] != b'"' {
            return None;
        }
        self.i = end + 1;
        // The quotes are ASCII, so both ends are character boundaries.
        Some(&self.text[start..end])
    }

    /// Digits from here; how many.
    fn digits(&mut self) -> usize {
        let n = self.b[self.i..].iter().take_while(|c| c.is_ascii_digit()).count();
        self.i += n;
        n
    }

    /// A number in JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    #[inline(always)]
    fn number(&mut self) -> Option<Slot<'de>> {
        let start = self.i;
        let negative = self.peek() == Some(b'-');
        self.i += usize::from(negative);
        let int_start = self.i;
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        let int_end = self.i;
        let (mut frac, mut exp) = (0, None);
        if self.peek() == Some(b'.') {
            self.i += 1;
            frac = self.digits();
            if frac == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            let minus = self.peek() == Some(b'-');
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            let from = self.i;
            let n = self.digits();
            if n == 0 {
                return None;
            }
            // Up to 4 digits for the fast path; longer ones are parsed by std below.
            let e = if n <= 4 {
                self.b[from..self.i].iter().fold(0i32, |e, &c| e * 10 + i32::from(c - b'0'))
            } else {
                i32::MAX
            };
            exp = Some(if minus { -e } else { e });
        }
        if frac > 0 || exp.is_some() {
            return self.float(start, negative, (int_start, int_end), frac, exp.unwrap_or(0)).map(Slot::Float);
        }
        if int_end - int_start > FAST_DIGITS {
            return None;
        }
        let n = self.b[int_start..int_end].iter().fold(0i64, |n, &c| n * 10 + i64::from(c - b'0'));
        Some(match (negative, n) {
            (true, 0) => Slot::Float(-0.0),
            (true, n) => Slot::Int(-n),
            (false, n) => Slot::Int(n),
        })
    }

    /// A number with a fraction or an exponent, correctly rounded: exact digits times an
    /// exact power of ten in one IEEE operation where that is exact (Clinger's fast path, as
    /// std's parser takes first), std's parser otherwise. None when out of range.
    fn float(
        &self,
        start: usize,
        negative: bool,
        (int_start, int_end): (usize, usize),
        frac: usize,
        exp: i32,
    ) -> Option<f64> {
        /// Powers of ten exact in an f64.
        const POW10: [f64; 23] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
            1e19, 1e20, 1e21, 1e22,
        ];
        let frac_start = int_end + 1;
        let digits = (int_end - int_start) + frac;
        if digits <= 19 {
            let all = self.b[int_start..int_end].iter().chain(&self.b[frac_start..frac_start + frac]);
            let w = all.fold(0u64, |w, &c| w * 10 + u64::from(c - b'0'));
            let k = i64::from(exp) - frac as i64;
            if w <= 1 << 53 && k.unsigned_abs() <= 22 {
                let p = POW10[k.unsigned_abs() as usize];
                let v = if k >= 0 { w as f64 * p } else { w as f64 / p };
                return Some(if negative { -v } else { v });
            }
        }
        let v: f64 = self.text[start..self.i].parse().ok()?;
        v.is_finite().then_some(v)
    }

    /// Skips one value (`depth` containers around it), checking its syntax.
    fn skip(&mut self, depth: usize) -> Option<()> {
        // Open containers as bits, newest lowest: 1 for an object. FAST_DEPTH fits a u64.
        let (mut stack, mut open) = (0u64, 0usize);
        loop {
            // At the start of a value.
            match self.peek()? {
                c @ (b'{' | b'[') => {
                    if depth + open >= FAST_DEPTH {
                        return None;
                    }
                    self.i += 1;
                    self.ws();
                    let object = c == b'{';
                    if self.peek()? == if object { b'}' } else { b']' } {
                        self.i += 1;
                    } else {
                        stack = stack << 1 | u64::from(object);
                        open += 1;
                        if object {
                            self.key()?;
                        }
                        continue;
                    }
                }
                _ => {
                    self.plain()?;
                }
            }
            // After a value: close what ends here, then on to the next value.
            loop {
                if open == 0 {
                    return Some(());
                }
                self.ws();
                let object = stack & 1 == 1;
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        self.ws();
                        if object {
                            self.key()?;
                        }
                        break;
                    }
                    b'}' if object => {}
                    b']' if !object => {}
                    _ => return None,
                }
                self.i += 1;
                stack >>= 1;
                open -= 1;
            }
        }
    }
}

/// A key's first 16 bytes as two words (zero after its end), for comparing without `memcmp`.
pub(super) fn tag(key: &[u8]) -> [u64; 2] {
    let mut x = [0u8; 16];
    let n = key.len().min(16);
    x[..n].copy_from_slice(&key[..n]);
    [u64::from_le_bytes(x[..8].try_into().expect("8")), u64::from_le_bytes(x[8..].try_into().expect("8"))]
}

/// The first 16 bytes of the `n`-byte key at `start` as [`tag`] gives them, read as two
/// words when the payload has 16 bytes there (it nearly always has).
fn head(b: &[u8], start: usize, n: usize) -> [u64; 2] {
    let Some(w) = b.get(start..start + 16) else {
        return tag(&b[start..start + n]);
    };
    let word = |i: usize, len: usize| {
        let x = u64::from_le_bytes(w[i..i + 8].try_into().expect("8 bytes"));
        match len {
            0 => 0,
            1..=7 => x & ((1u64 << (8 * len)) - 1),
            _ => x,
        }
    };
    [word(0, n.min(8)), word(8, n.saturating_sub(8).min(8))]
}

/// The child of `node` whose key is the `n` bytes of `b` from `start`.
fn child(node: &super::Node, b: &[u8], (start, n): (usize, usize)) -> Option<usize> {
    let head = head(b, start, n);
    let key = &b[start..start + n];
    let i = node
        .tags
        .iter()
        .zip(&node.children)
        .position(|(&(len, t), (k, _))| len == n && t == head && (n <= 16 || k.as_bytes()[16..] == key[16..]))?;
    Some(node.children[i].1)
}

/// Where the first quote, backslash or control character at or after `from` is: eight
/// bytes at a time (the zero-byte test of "Bit Twiddling Hacks"; a borrow can mark a byte
/// only after a true match, so the first mark is exact).
fn special(b: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while let Some(w) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        let (q, s) = (x ^ (ONES * u64::from(b'"')), x ^ (ONES * u64::from(b'\\')));
        let m = (q.wrapping_sub(ONES) & !q | s.wrapping_sub(ONES) & !s | x.wrapping_sub(ONES * 0x20) & !x) & HIGH;
        if m != 0 {
            return Some(i + m.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    b[i..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).map(|p| i + p)
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
