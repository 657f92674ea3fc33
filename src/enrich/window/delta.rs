//! Checkpoints of partition-owned states as deltas of a Redis hash, and the state rebuilt
//! from that hash.
//!
//! Fields (other code relies on these exact bytes):
//! * `n` → newest event time (ms), decimal ASCII; absent when none.
//! * `w` → the finest bucket width (ms), decimal ASCII: `b:` and `d:` fields written under
//!   another width are not loaded (and are deleted by the next delta).
//! * `b:<start>` → a bucket of the finest series, 41 bytes: count u64, sum f64, min f64,
//!   max f64, last_of u64 (all little endian, floats as their bits), flags u8 (bit 0:
//!   min/max present).
//! * `b<width>:<start>` → a bucket of the series of that width (ms), same bytes; fields of a
//!   width the config no longer has are not loaded (and are deleted by the next delta).
//! * `h:<key>` → start of a distinct value's latest bucket in the finest series, decimal
//!   ASCII; `<key>` is the value's [`value_key`] (xxh3-64 of its bytes) as 8 bytes, big
//!   endian (binary: a day of a busy card's values costs Redis 8 bytes each, not 16 as hex).
//!   Earlier versions wrote `d:<value>` (the value itself): such fields are read as the
//!   value's key and replaced by its `h:` field in the next delta.
//! * `s` → the entity's session (`session.rs`): start, last (i64), events (u64), little
//!   endian, then each distinct value as a u32 length and its bytes; rewritten whole.
//!
//! Tracking costs what changed, not the history: a bucket is listed once, when it first
//! changes after a delta (its `dirty` flag says it is listed); a value's key each time it moves to
//! a later bucket (once per bucket at most), deduplicated when the delta is taken; expired
//! buckets and values are listed as they go.

use std::io::Write as _;

use super::buckets::MinMax;
use super::{value_key, Bucket, Buckets, EntityState, StateError, WindowSpec};

/// The length of a `b:` field's value.
const BUCKET_LEN: usize = 41;

/// What changed in a state since its last delta. Off (nothing recorded) until the state is
/// used as partition-owned, so the shared path pays a branch per change. The changes are
/// one boxed list made on the first change and handed back with the delta: a state that
/// never records (the `memory` backend, shared states) holds 16 bytes of this.
#[derive(Debug, Clone, Default)]
pub(super) struct Tracking {
    on: bool,
    /// Never records (an in-process state that is not checkpointed).
    never: bool,
    newest: bool,
    /// The session changed.
    session: bool,
    /// The hash has the finest width (`w`) of this state's spec.
    pub(super) width_stored: bool,
    lists: Option<Box<Lists>>,
}

/// One change since the last delta: 16 bytes.
#[derive(Debug, Clone, PartialEq)]
enum Change {
    /// Bucket (series, start) was flagged dirty (listed once).
    Bucket(u32, i64),
    /// The value of this key is new or moved to a later bucket (maybe listed more than once).
    Value(u64),
    /// Bucket (series, start) expired.
    DroppedBucket(u32, i64),
    /// The value of this key expired.
    DroppedValue(u64),
    /// A field found in the hash that the spec cannot use (another width): deleted next.
    /// Boxed to keep every change at 16 bytes (a stale field is rare: after a width change).
    #[allow(clippy::box_collection)]
    Stale(Box<Vec<u8>>),
}

const _: () = assert!(std::mem::size_of::<Change>() == 16);

/// The changes since the last delta, in the order they happened: most entities change a
/// handful of things between two checkpoints, held in the box itself (one allocation of ~104
/// bytes; it was a box of five lists, three or four allocations and ~250 bytes per changed
/// entity). Boxes come from, and go back to, a per-thread pool ([`SPARE`]).
type Lists = smallvec::SmallVec<[Change; 6]>;

/// The most emptied boxes a thread keeps for the next changed entities.
const SPARE_MAX: usize = 8192;

thread_local! {
    /// Emptied change boxes of this thread (sealing and applying run on the same workers):
    /// in steady state an entity that changes takes one made for an earlier one.
    // The boxes themselves are what is reused: an entity holds one, and takes it as is.
    #[allow(clippy::vec_box)]
    static SPARE: std::cell::RefCell<Vec<Box<Lists>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A box for a changed entity's list: an emptied one when this thread has one.
fn spare_box() -> Box<Lists> {
    SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_default()
}

/// Empties `b` and keeps it for [`spare_box`] (a list that outgrew the box lets go of its
/// overflow; past [`SPARE_MAX`] the box is freed).
fn give_back(mut b: Box<Lists>) {
    if b.spilled() {
        *b = Lists::new();
    } else {
        b.clear();
    }
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARE_MAX {
            s.push(b);
        }
    });
}

/// Equal when the same things are pending: no list and an empty list are the same, and
/// changes of different kinds may interleave in any order.
impl PartialEq for Tracking {
    fn eq(&self, o: &Self) -> bool {
        fn all(t: &Tracking) -> &[Change] {
            t.lists.as_deref().map_or(&[][..], |l| &l[..])
        }
        let (a, b) = (all(self), all(o));
        let kind = |k: u8| {
            move |c: &&Change| {
                k == match c {
                    Change::Bucket(..) => 0,
                    Change::Value(_) => 1,
                    Change::DroppedBucket(..) => 2,
                    Change::DroppedValue(_) => 3,
                    Change::Stale(_) => 4,
                }
            }
        };
        (self.on, self.never, self.newest, self.session, self.width_stored)
            == (o.on, o.never, o.newest, o.session, o.width_stored)
            && (0..5).all(|k| a.iter().filter(kind(k)).eq(b.iter().filter(kind(k))))
    }
}

impl Tracking {
    /// Starts recording changes.
    pub(super) fn start(&mut self) {
        self.on = !self.never;
    }

    fn record(&mut self, c: Change) {
        self.lists.get_or_insert_with(spare_box).push(c);
    }

    /// Bucket `start` (`b`) of series `k` changed.
    pub(super) fn bucket_changed(&mut self, k: usize, start: i64, b: &mut Bucket) {
        if self.on && !b.is_dirty() {
            b.set_dirty(true);
            self.record(Change::Bucket(series_u32(k), start));
        }
    }

    /// The value of `key` is new or moved to a later bucket.
    pub(super) fn value_changed(&mut self, key: u64) {
        if self.on {
            self.record(Change::Value(key));
        }
    }

    /// The newest event time changed.
    pub(super) fn newest_changed(&mut self) {
        self.newest |= self.on;
    }

    /// The session changed.
    pub(super) fn session_changed(&mut self) {
        self.session |= self.on;
    }

    /// Bucket `start` of series `k` expired.
    pub(super) fn bucket_dropped(&mut self, k: usize, start: i64) {
        if self.on {
            self.record(Change::DroppedBucket(series_u32(k), start));
        }
    }

    /// The value of `key` expired (its bucket did).
    pub(super) fn value_dropped(&mut self, key: u64) {
        if self.on {
            self.record(Change::DroppedValue(key));
        }
    }

    fn is_empty(&self) -> bool {
        !self.newest && !self.session && self.lists.as_ref().is_none_or(|l| l.is_empty())
    }

    /// Where the change list is (tests: the pool hands the same box on).
    #[cfg(test)]
    pub(super) fn list_at(&self) -> Option<*const ()> {
        self.lists.as_deref().map(|l| l as *const Lists as *const ())
    }
}

fn series_u32(k: usize) -> u32 {
    u32::try_from(k).expect("fewer bucket series than windows, far under 2^32")
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
    /// The value keys of one entity's delta, sorted and deduplicated there.
    values: Vec<u64>,
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

/// A bucket's field value: count, sum, min, max, distinct count (8 bytes each, little
/// endian), then a flag byte: bit 0, min and max are there (some event carried a value,
/// and the series keeps them); bit 1, some event carried a value but min and max are not
/// kept (zeros in their place).
fn encode_bucket(out: &mut Vec<u8>, b: &Bucket, m: Option<&MinMax>) {
    let m = m.filter(|m| m.min().is_some());
    out.extend_from_slice(&b.count().to_le_bytes());
    out.extend_from_slice(&b.sum.to_bits().to_le_bytes());
    out.extend_from_slice(&m.and_then(MinMax::min).unwrap_or(0.0).to_bits().to_le_bytes());
    out.extend_from_slice(&m.and_then(MinMax::max).unwrap_or(0.0).to_bits().to_le_bytes());
    out.extend_from_slice(&u64::from(b.last_of()).to_le_bytes());
    out.push(u8::from(m.is_some()) | u8::from(b.valued() && m.is_none()) << 1);
}

/// A bucket and, when stored, its min and max.
fn decode_bucket(v: &[u8]) -> Option<(Bucket, Option<MinMax>)> {
    if v.len() != BUCKET_LEN {
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(v[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let has = v[40] & 1 == 1;
    let valued = has || v[40] & 2 == 2;
    let m = has.then(|| MinMax::with(f64::from_bits(word(2)), f64::from_bits(word(3))));
    Some((Bucket::with(word(0), f64::from_bits(word(1)), valued, word(4)), m))
}

/// A value's field name after its `h:`: its key, 8 bytes big endian.
fn value_field(f: &mut Vec<u8>, key: u64) {
    f.extend_from_slice(&key.to_be_bytes());
}

/// The key of an `h:` field's name.
fn parse_key(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
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
    pub fn take_delta(&mut self, spec: &WindowSpec, out: &mut Delta) {
        let Self { buckets, coarse, last_bucket, newest_ms, track, .. } = self;
        let series = |k: usize| -> &Buckets {
            match k {
                0 => buckets,
                _ => coarse.get(k - 1).unwrap_or(&super::buckets::EMPTY),
            }
        };
        let mut lists = track.lists.take();
        let changes: &mut [Change] = lists.as_deref_mut().map_or(&mut [], |l| &mut l[..]);
        let mut had_stale = false;
        for c in changes.iter_mut() {
            if let Change::Stale(f) = c {
                had_stale = true;
                out.del.push(std::mem::take(&mut **f));
            }
        }
        // Expired, unless there again (then it is dirty and set below).
        for c in changes.iter() {
            if let &Change::DroppedBucket(k, s) = c {
                let k = k as usize;
                if !series(k).contains(s) {
                    let f = out.field(b"b", |f| bucket_field(f, spec, k, s));
                    out.del.push(f);
                }
            }
        }
        for c in changes.iter() {
            if let &Change::DroppedValue(v) = c {
                if !last_bucket.contains_key(&v) {
                    let f = out.field(b"h:", |f| value_field(f, v));
                    out.del.push(f);
                }
            }
        }
        let mut values = std::mem::take(&mut out.values);
        values.clear();
        for c in changes.iter() {
            let (k, s) = match *c {
                Change::Bucket(k, s) => (k as usize, s),
                Change::Value(v) => {
                    values.push(v);
                    continue;
                }
                _ => continue,
            };
            let b = match k {
                0 => buckets.get_mut_with(s),
                _ => coarse.get_mut(k - 1).and_then(|c| c.get_mut_with(s)),
            };
            // Gone (expired) or listed twice: nothing to set.
            if let Some((b, m)) = b.filter(|(b, _)| b.is_dirty()) {
                b.set_dirty(false);
                let f = out.field(b"b", |f| bucket_field(f, spec, k, s));
                let mut val = out.buffer();
                encode_bucket(&mut val, b, m);
                out.set.push((f, val));
            }
        }
        if let Some(l) = lists {
            give_back(l);
        }
        // A value that moved twice since the last delta is listed twice: set once.
        if values.len() > 1 {
            values.sort_unstable();
            values.dedup();
        }
        for &v in &values {
            if let Some(&bucket) = last_bucket.get(&v) {
                let f = out.field(b"h:", |f| value_field(f, v));
                let mut val = out.buffer();
                decimal(&mut val, bucket);
                out.set.push((f, val));
            }
        }
        out.values = values;
        if std::mem::take(&mut track.newest) {
            if let Some(n) = *newest_ms {
                let f = out.field(b"n", |_| {});
                let mut val = out.buffer();
                decimal(&mut val, n);
                out.set.push((f, val));
            }
        }
        if std::mem::take(&mut track.session) {
            let mut val = out.buffer();
            if self.encode_session(&mut val) {
                let f = out.field(b"s", |_| {});
                out.set.push((f, val));
            } else {
                out.spare.push(val);
            }
        }
        if had_stale {
            // A stale field's name can be set again (a bucket start under the new width):
            // the script deletes after it sets, so it must not delete that one.
            let Delta { set, del, .. } = out;
            del.retain(|d| !set.iter().any(|(f, _)| f == d));
        }
        let track = &mut self.track;
        // The list went back to the pool with the delta: an entity that changes again takes
        // one. Kept per entity, every entity held kept room for the most it ever changed
        // between two checkpoints (50,000 cards: 6–15 MiB more RSS; BENCHMARKS.md,
        // "verdict's own memory").
        if !track.width_stored && !out.is_empty() {
            track.width_stored = true;
            let f = out.field(b"w", |_| {});
            let mut val = out.buffer();
            decimal(&mut val, spec.bucket());
            out.set.push((f, val));
        }
    }

    /// Rebuilds a partition-owned state of `spec` from its hash's fields (any order): no
    /// fence, nothing pending, changes tracked from here. Unknown fields are ignored, and
    /// so are values whose bucket has expired; buckets of a width `spec` does not have are
    /// deleted by the next delta; a malformed field is an error naming it.
    pub fn from_fields<'a>(
        spec: &WindowSpec,
        fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<EntityState, StateError> {
        let bad = StateError::Bad;
        let mut st = EntityState::default();
        let mut series: Vec<Vec<(i64, Bucket, Option<MinMax>)>> = vec![Vec::new(); spec.series.len()];
        let mut values: Vec<(u64, i64)> = Vec::new();
        let mut width = None;
        let mut stale = Vec::new();
        let mut legacy = Vec::new();
        for (name, v) in fields {
            match name {
                b"n" => st.newest_ms = Some(parse_i64(v).ok_or(bad("field n (newest)"))?),
                b"w" => width = Some(parse_i64(v).ok_or(bad("field w (finest width)"))?),
                b"s" if spec.session.is_some() => {
                    st.session = Some(Box::new(super::session::decode_session(v).ok_or(bad("field s (session)"))?))
                }
                [b'b', rest @ ..] if rest.contains(&b':') => {
                    let colon = rest.iter().position(|&c| c == b':').expect("contains ':'");
                    let (w, start) = (&rest[..colon], &rest[colon + 1..]);
                    let start = parse_i64(start).ok_or(bad("field b:<start> or b<width>:<start> (its start)"))?;
                    let (bucket, m) = decode_bucket(v).ok_or(bad("field b:<start> or b<width>:<start> (41 bytes)"))?;
                    let k = match w {
                        [] => Some(0),
                        w => {
                            let w = parse_i64(w).ok_or(bad("field b<width>:<start> (its width)"))?;
                            spec.series.iter().skip(1).position(|s| s.width == w).map(|i| i + 1)
                        }
                    };
                    match k {
                        Some(k) => series[k].push((start, bucket, m)),
                        None => stale.push(name.to_vec()),
                    }
                }
                [b'h', b':', key @ ..] => {
                    let key = parse_key(key).ok_or(bad("field h:<key> (8 bytes)"))?;
                    values.push((key, parse_i64(v).ok_or(bad("field h:<key> (its bucket)"))?));
                }
                [b'd', b':', value @ ..] => {
                    // An earlier version's field: read as its key, replaced by the next delta.
                    let value = std::str::from_utf8(value).map_err(|_| bad("field d:<value> (not UTF-8)"))?;
                    values.push((value_key(value), parse_i64(v).ok_or(bad("field d:<value> (its bucket)"))?));
                    legacy.push(name.to_vec());
                }
                _ => {}
            }
        }
        // Finest buckets and values of another finest width cannot be used: delete them.
        let fine = std::mem::take(&mut series[0]);
        if width.is_some_and(|w| w != spec.bucket()) {
            stale.extend(fine.iter().map(|(s, _, _)| format!("b:{s}").into_bytes()));
            stale.extend(values.drain(..).map(|(v, _)| {
                let mut f = b"h:".to_vec();
                value_field(&mut f, v);
                f
            }));
        } else {
            st.buckets = Buckets::from_unsorted(fine, spec.series[0].extremes);
        }
        st.coarse = (series.into_iter().enumerate().skip(1))
            .map(|(k, all)| Buckets::from_unsorted(all, spec.series[k].extremes))
            .collect();
        st.last_bucket.reserve(values.len());
        for (key, bucket) in values {
            let held = (spec.series.iter().enumerate())
                .filter(|(_, sk)| sk.distinct_retention.is_some())
                .any(|(k, sk)| st.series(k).contains(super::bucket_start(bucket, sk.width)));
            if held {
                // A value under both names (an earlier version wrote beside this one): its later bucket.
                let b = st.last_bucket.entry(key).or_insert(bucket);
                *b = (*b).max(bucket);
            }
        }
        st.track.width_stored = width == Some(spec.bucket());
        // `d:<value>` fields go; the values still held are written as `h:` fields instead.
        let rewrite: Vec<u64> = if legacy.is_empty() { Vec::new() } else { st.last_bucket.keys().copied().collect() };
        stale.append(&mut legacy);
        st.track.start();
        for f in stale {
            st.track.record(Change::Stale(Box::new(f)));
        }
        for key in rewrite {
            st.track.value_changed(key);
        }
        Ok(st)
    }
}

/// A bucket field's name after its `b`: `:<start>` for the finest series, else
/// `<width>:<start>`.
fn bucket_field(f: &mut Vec<u8>, spec: &WindowSpec, k: usize, start: i64) {
    if k > 0 {
        decimal(f, spec.series[k].width);
    }
    f.push(b':');
    decimal(f, start);
}
