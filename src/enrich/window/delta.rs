//! Checkpoints of partition-owned states as deltas of a Redis hash, and the state rebuilt
//! from that hash.
//!
//! Fields (other code relies on these exact bytes):
//! * `n` → newest event time (ms), decimal ASCII; absent when none.
//! * `b:<start>` → 41 bytes: count u64, sum f64, min f64, max f64, last_of u64 (all little
//!   endian, floats as their bits), flags u8 (bit 0: min/max present).
//! * `d:<value>` → start of the value's latest bucket, decimal ASCII.
//!
//! Tracking costs what changed, not the history: a bucket or value is listed once, when it
//! first changes after a delta (its `dirty` flag says it is listed); expired buckets and
//! values are listed as they go.

use std::io::Write as _;
use std::sync::Arc;

use super::{Bucket, Buckets, EntityState, Slot, StateError};

/// The length of a `b:` field's value.
const BUCKET_LEN: usize = 41;

/// What changed in a state since its last delta. Off (nothing recorded) until the state is
/// used as partition-owned, so the shared path pays a branch per change.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Tracking {
    on: bool,
    /// Never records (an in-process state that is not checkpointed).
    never: bool,
    newest: bool,
    /// Starts of buckets flagged dirty, each once.
    buckets: Vec<i64>,
    /// Values flagged dirty, each once per flagging.
    values: Vec<Arc<str>>,
    /// Starts of expired buckets.
    dropped_buckets: Vec<i64>,
    /// Expired values.
    dropped_values: Vec<Arc<str>>,
}

impl Tracking {
    /// Starts recording changes.
    pub(super) fn start(&mut self) {
        self.on = !self.never;
    }

    /// Whether changes are recorded.
    pub(super) fn on(&self) -> bool {
        self.on
    }

    /// Bucket `start` (`b`) changed.
    pub(super) fn bucket_changed(&mut self, start: i64, b: &mut Bucket) {
        if self.on && !b.dirty {
            b.dirty = true;
            self.buckets.push(start);
        }
    }

    /// Value `key` (`slot`) is new or moved to another bucket.
    pub(super) fn value_changed(&mut self, key: &Arc<str>, slot: &mut Slot) {
        if self.on && !slot.dirty {
            slot.dirty = true;
            self.values.push(key.clone());
        }
    }

    /// The newest event time changed.
    pub(super) fn newest_changed(&mut self) {
        self.newest |= self.on;
    }

    /// Bucket `start` expired.
    pub(super) fn bucket_dropped(&mut self, start: i64) {
        if self.on {
            self.dropped_buckets.push(start);
        }
    }

    /// Value `key` expired (its bucket did).
    pub(super) fn value_dropped(&mut self, key: &Arc<str>) {
        if self.on {
            self.dropped_values.push(key.clone());
        }
    }

    fn is_empty(&self) -> bool {
        !self.newest
            && self.buckets.is_empty()
            && self.values.is_empty()
            && self.dropped_buckets.is_empty()
            && self.dropped_values.is_empty()
    }
}

/// Redis hash writes that bring a checkpoint up to date: fields to set and fields to delete.
/// Cleared and refilled per checkpoint; its buffers are reused.
#[derive(Debug, Clone, Default)]
pub struct Delta {
    /// (field, value) to set.
    pub set: Vec<(Vec<u8>, Vec<u8>)>,
    /// Fields to delete.
    pub del: Vec<Vec<u8>>,
    /// Emptied buffers, for the next fields.
    pub(super) spare: Vec<Vec<u8>>,
}

impl Delta {
    /// Empties the delta, keeping its buffers for reuse.
    pub fn clear(&mut self) {
        for (k, v) in self.set.drain(..) {
            self.spare.push(k);
            self.spare.push(v);
        }
        self.spare.append(&mut self.del);
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.del.is_empty()
    }

    fn buffer(&mut self) -> Vec<u8> {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b
    }

    /// A field name: `prefix` then `name`.
    fn field(&mut self, prefix: &[u8], name: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut f = self.buffer();
        f.extend_from_slice(prefix);
        name(&mut f);
        f
    }
}

const VEC: &str = "writing to a Vec cannot fail";

fn decimal(out: &mut Vec<u8>, n: i64) {
    write!(out, "{n}").expect(VEC);
}

fn encode_bucket(out: &mut Vec<u8>, b: &Bucket) {
    out.extend_from_slice(&b.count.to_le_bytes());
    out.extend_from_slice(&b.sum.to_bits().to_le_bytes());
    out.extend_from_slice(&b.min().unwrap_or(0.0).to_bits().to_le_bytes());
    out.extend_from_slice(&b.max().unwrap_or(0.0).to_bits().to_le_bytes());
    out.extend_from_slice(&u64::from(b.last_of).to_le_bytes());
    out.push(u8::from(b.min().is_some()));
}

fn decode_bucket(v: &[u8]) -> Option<Bucket> {
    if v.len() != BUCKET_LEN {
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(v[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let has = v[40] & 1 == 1;
    Some(Bucket::with(
        word(0),
        f64::from_bits(word(1)),
        has.then(|| (f64::from_bits(word(2)), f64::from_bits(word(3)))),
        word(4),
    ))
}

fn parse_i64(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

impl EntityState {
    /// Records no deltas from now on: the state lives only in process (the `memory`
    /// backend), so nothing would ever take them.
    pub fn untracked(&mut self) {
        if !self.track.never {
            self.track = Tracking { never: true, ..Tracking::default() };
        }
    }

    /// Whether anything changed since the last [`EntityState::take_delta`].
    pub fn is_dirty(&self) -> bool {
        !self.track.is_empty()
    }

    /// Appends to `out` the hash writes for what changed since the last call (or since the
    /// first [`EntityState::apply_owned`] / [`EntityState::from_fields`]), and forgets it.
    pub fn take_delta(&mut self, out: &mut Delta) {
        let Self { buckets, last_bucket, newest_ms, track, .. } = self;
        // Expired, unless there again (then it is dirty and set below).
        for s in track.dropped_buckets.drain(..) {
            if !buckets.contains(s) {
                let f = out.field(b"b:", |f| decimal(f, s));
                out.del.push(f);
            }
        }
        for v in track.dropped_values.drain(..) {
            if !last_bucket.contains_key(&v) {
                let f = out.field(b"d:", |f| f.extend_from_slice(v.as_bytes()));
                out.del.push(f);
            }
        }
        for s in track.buckets.drain(..) {
            // Gone (expired) or listed twice: nothing to set.
            if let Some(b) = buckets.get_mut(s).filter(|b| b.dirty) {
                b.dirty = false;
                let f = out.field(b"b:", |f| decimal(f, s));
                let mut val = out.buffer();
                encode_bucket(&mut val, b);
                out.set.push((f, val));
            }
        }
        for v in track.values.drain(..) {
            if let Some(slot) = last_bucket.get_mut(&v).filter(|s| s.dirty) {
                slot.dirty = false;
                let f = out.field(b"d:", |f| f.extend_from_slice(v.as_bytes()));
                let mut val = out.buffer();
                decimal(&mut val, slot.bucket);
                out.set.push((f, val));
            }
        }
        if std::mem::take(&mut track.newest) {
            if let Some(n) = *newest_ms {
                let f = out.field(b"n", |_| {});
                let mut val = out.buffer();
                decimal(&mut val, n);
                out.set.push((f, val));
            }
        }
    }

    /// Rebuilds a partition-owned state from its hash's fields (any order): no fence,
    /// nothing pending, changes tracked from here. Unknown fields are ignored, and so are
    /// values whose bucket has expired; a malformed field is an error naming it.
    pub fn from_fields<'a>(fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Result<EntityState, StateError> {
        let bad = StateError::Bad;
        let mut st = EntityState::default();
        let mut buckets = Vec::new();
        let mut values = Vec::new();
        for (name, v) in fields {
            match name {
                b"n" => st.newest_ms = Some(parse_i64(v).ok_or(bad("field n (newest)"))?),
                [b'b', b':', start @ ..] => {
                    let start = parse_i64(start).ok_or(bad("field b:<start> (its start)"))?;
                    buckets.push((start, decode_bucket(v).ok_or(bad("field b:<start> (41 bytes)"))?));
                }
                [b'd', b':', value @ ..] => {
                    let value = std::str::from_utf8(value).map_err(|_| bad("field d:<value> (not UTF-8)"))?;
                    values.push((value, parse_i64(v).ok_or(bad("field d:<value> (its bucket)"))?));
                }
                _ => {}
            }
        }
        st.buckets = Buckets::from_unsorted(buckets);
        st.last_bucket.reserve(values.len());
        for (value, bucket) in values {
            if st.buckets.contains(bucket) {
                st.last_bucket.insert(Arc::from(value), Slot { bucket, dirty: false });
            }
        }
        st.track.start();
        Ok(st)
    }
}
