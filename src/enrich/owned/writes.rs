//! A checkpoint's entity writes, encoded once, while the partition is sealed, as the
//! checkpoint script's keys and arguments in the Redis protocol (RESP bulk strings): two
//! buffers per checkpoint however many entities it holds, copied once into the script call.
//!
//! Each entity was three allocations (its key, its fields, their ends), copied again into
//! redis-rs's command (the bytes and a record per argument, grown by doubling) and once more
//! into the packed pipeline: ~1.5 KB per entity in flight, up to four partitions × 4,096
//! entities per round. The Redis backend held 15–30 MiB more RSS for it (BENCHMARKS.md,
//! "Checkpoint writes encoded once").

use std::io::Write as _;

/// Growing a `Vec` cannot fail short of running out of memory.
const VEC: &str = "writing to a Vec";

/// Appends `piece` as a RESP bulk string.
pub fn bulk(out: &mut Vec<u8>, piece: &[u8]) {
    write!(out, "${}\r\n", piece.len()).expect(VEC);
    out.extend_from_slice(piece);
    out.extend_from_slice(b"\r\n");
}

/// Appends the decimal `n` as a RESP bulk string.
pub fn bulk_int(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut w = &mut digits[..];
    write!(w, "{n}").expect("an i64 has at most 20 characters");
    let len = 20 - w.len();
    bulk(out, &digits[..len]);
}

/// Appends the RESP array header of `count` elements.
pub fn array(out: &mut Vec<u8>, count: usize) {
    write!(out, "*{count}\r\n").expect(VEC);
}

/// The bulk strings of `buf` (as [`bulk`] writes them), in order. Stops at the first piece
/// that is not one (never the case for what this module writes).
pub fn bulk_strings(buf: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let body = rest.strip_prefix(b"$")?;
        let eol = body.iter().position(|&b| b == b'\r')?;
        let len: usize = std::str::from_utf8(&body[..eol]).ok()?.parse().ok()?;
        let start = eol + 2;
        let piece = body.get(start..start + len)?;
        rest = body.get(start + len + 2..)?;
        Some(piece)
    })
}

/// The arguments of `command` (as [`array`] and [`bulk`] write a command), its name first.
pub fn command_args(command: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    let body = command.iter().position(|&b| b == b'\n').map_or(&[][..], |eol| &command[eol + 1..]);
    bulk_strings(body)
}

/// A checkpoint's entity writes: the entities' keys (the script's KEYS after the
/// partition's), and for each entity the number of fields it sets, their names and values,
/// the number it deletes and their names (its ARGV after the partition's four values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntityWrites {
    keys: Vec<u8>,
    args: Vec<u8>,
    entities: usize,
    /// Bulk strings in `args`.
    arg_count: usize,
    /// Fields set or deleted, over every entity.
    fields: u64,
}

impl EntityWrites {
    /// Empty, with room for `keys` bytes of keys and `args` bytes of arguments.
    pub fn with_capacity(keys: usize, args: usize) -> Self {
        Self { keys: Vec::with_capacity(keys), args: Vec::with_capacity(args), ..Self::default() }
    }

    /// Appends an entity: its key is `key`'s parts joined by ':'; it sets `set` and deletes
    /// `del`.
    pub fn push<'a>(
        &mut self,
        key: &[&str],
        set: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
        del: impl ExactSizeIterator<Item = &'a [u8]>,
    ) {
        let len = key.iter().map(|p| p.len()).sum::<usize>() + key.len().saturating_sub(1);
        write!(self.keys, "${len}\r\n").expect(VEC);
        for (i, p) in key.iter().enumerate() {
            if i > 0 {
                self.keys.push(b':');
            }
            self.keys.extend_from_slice(p.as_bytes());
        }
        self.keys.extend_from_slice(b"\r\n");
        let (n_set, n_del) = (set.len(), del.len());
        bulk_int(&mut self.args, n_set as i64);
        for (f, v) in set {
            bulk(&mut self.args, f);
            bulk(&mut self.args, v);
        }
        bulk_int(&mut self.args, n_del as i64);
        for f in del {
            bulk(&mut self.args, f);
        }
        self.entities += 1;
        self.arg_count += 2 + 2 * n_set + n_del;
        self.fields += (n_set + n_del) as u64;
    }

    /// Entities written.
    pub fn len(&self) -> usize {
        self.entities
    }

    /// Whether no entity is written.
    pub fn is_empty(&self) -> bool {
        self.entities == 0
    }

    /// Hash fields set or deleted.
    pub fn fields(&self) -> u64 {
        self.fields
    }

    /// The entities' keys, as RESP bulk strings.
    pub fn keys(&self) -> &[u8] {
        &self.keys
    }

    /// The entities' script arguments, as RESP bulk strings.
    pub fn args(&self) -> &[u8] {
        &self.args
    }

    /// Bulk strings in [`args`](Self::args).
    pub fn arg_count(&self) -> usize {
        self.arg_count
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.keys.len() + self.args.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_are_written_as_the_scripts_keys_and_arguments_and_read_back_in_order() {
        let mut w = EntityWrites::default();
        let set: Vec<(&[u8], &[u8])> = vec![(b"b:60000", &[7; 41]), (b"n", b"")];
        w.push(&["v:po:{events/3}", "card", "c-1"], set.into_iter(), [&b"d:merchant-1"[..]].into_iter());
        w.push(&["v:po:{events/3}", "card", "empty"], std::iter::empty(), std::iter::empty());
        assert_eq!((w.len(), w.fields(), w.arg_count()), (2, 3, 9));
        let keys: Vec<&[u8]> = bulk_strings(w.keys()).collect();
        assert_eq!(keys, vec![&b"v:po:{events/3}:card:c-1"[..], b"v:po:{events/3}:card:empty"]);
        let args: Vec<&[u8]> = bulk_strings(w.args()).collect();
        let expected: Vec<&[u8]> = vec![b"2", b"b:60000", &[7; 41], b"n", b"", b"1", b"d:merchant-1", b"0", b"0"];
        assert_eq!(args, expected);
        // Exactly the bytes redis-rs writes for the same arguments.
        let mut cmd = redis::cmd("X");
        for a in &expected {
            cmd.arg(*a);
        }
        let packed = cmd.get_packed_command();
        assert!(packed.ends_with(w.args()), "{:?}", String::from_utf8_lossy(&packed));
    }

    #[test]
    fn a_commands_arguments_are_read_back_in_order() {
        let mut cmd = Vec::new();
        array(&mut cmd, 3);
        bulk(&mut cmd, b"EVALSHA");
        bulk(&mut cmd, b"a\r\nb");
        bulk_int(&mut cmd, -7);
        let args: Vec<&[u8]> = command_args(&cmd).collect();
        assert_eq!(args, vec![&b"EVALSHA"[..], b"a\r\nb", b"-7"]);
        assert_eq!(command_args(b"").count(), 0);
    }

    #[test]
    fn integers_are_bulk_strings_of_their_decimals() {
        let mut out = Vec::new();
        bulk_int(&mut out, i64::MIN);
        bulk_int(&mut out, 0);
        array(&mut out, 3);
        assert_eq!(out, b"$20\r\n-9223372036854775808\r\n$1\r\n0\r\n*3\r\n");
    }
}
