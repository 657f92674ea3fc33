//! An entity's time buckets, contiguous and sorted by start.
//!
//! Events almost always land in the newest bucket and expiry drops the oldest, so a deque
//! sorted by start does both at its ends; a window is a contiguous range found by binary
//! search. An out-of-order event may still create a bucket in the middle (rare).

use std::collections::VecDeque;

/// One bucket's aggregates: 32 bytes (40 with its start), since an entity holds up to
/// `retention / bucket` of them (1,442 for a day of one-minute buckets). A bucket counts up
/// to `u32::MAX` events and `2^31 - 1` distinct values (more saturates).
#[derive(Debug, Clone)]
pub(super) struct Bucket {
    count: u32,
    /// Distinct values whose most recent bucket is this one (the low 31 bits), and whether
    /// the bucket changed since the last delta was taken ([`DIRTY`]; only when the state
    /// tracks deltas).
    marks: u32,
    pub(super) sum: f64,
    /// Minimum and maximum value; NaN while no event carried one (window values are finite).
    lo: f64,
    hi: f64,
}

/// The bit of [`Bucket::marks`] that says the bucket is listed for the next delta.
const DIRTY: u32 = 1 << 31;

impl Default for Bucket {
    fn default() -> Self {
        Self { count: 0, marks: 0, sum: 0.0, lo: f64::NAN, hi: f64::NAN }
    }
}

impl PartialEq for Bucket {
    fn eq(&self, o: &Self) -> bool {
        (self.count, self.sum.to_bits(), self.min(), self.max(), self.marks)
            == (o.count, o.sum.to_bits(), o.min(), o.max(), o.marks)
    }
}

impl Bucket {
    /// A bucket from its stored parts.
    pub(super) fn with(count: u64, sum: f64, min_max: Option<(f64, f64)>, last_of: u64) -> Self {
        let (lo, hi) = min_max.unwrap_or((f64::NAN, f64::NAN));
        Self {
            count: u32::try_from(count).unwrap_or(u32::MAX),
            marks: u32::try_from(last_of).unwrap_or(u32::MAX).min(DIRTY - 1),
            sum,
            lo,
            hi,
        }
    }

    /// Events counted in the bucket.
    pub(super) fn count(&self) -> u64 {
        u64::from(self.count)
    }

    /// Counts one more event.
    pub(super) fn count_one(&mut self) {
        self.count = self.count.saturating_add(1);
    }

    /// Distinct values whose most recent bucket is this one.
    pub(super) fn last_of(&self) -> u32 {
        self.marks & !DIRTY
    }

    /// One more distinct value has this bucket as its most recent.
    pub(super) fn value_joined(&mut self) {
        if self.last_of() < DIRTY - 1 {
            self.marks += 1;
        }
    }

    /// A distinct value moved on to a later bucket.
    pub(super) fn value_left(&mut self) {
        if self.last_of() > 0 {
            self.marks -= 1;
        }
    }

    /// Changed since the last delta was taken.
    pub(super) fn is_dirty(&self) -> bool {
        self.marks & DIRTY != 0
    }

    /// Marks the bucket listed for the next delta (true) or written (false).
    pub(super) fn set_dirty(&mut self, dirty: bool) {
        if dirty {
            self.marks |= DIRTY;
        } else {
            self.marks &= !DIRTY;
        }
    }

    /// The least value, None when no event carried one.
    pub(super) fn min(&self) -> Option<f64> {
        (!self.lo.is_nan()).then_some(self.lo)
    }

    /// The greatest value.
    pub(super) fn max(&self) -> Option<f64> {
        (!self.hi.is_nan()).then_some(self.hi)
    }

    /// Counts a value in min and max (a NaN is ignored, as `f64::min` does).
    pub(super) fn see(&mut self, v: f64) {
        self.lo = self.lo.min(v);
        self.hi = self.hi.max(v);
    }
}

/// The fewest buckets a series' deque grows by.
const GROW: usize = 4;

/// Buckets sorted by start, each start at most once.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Buckets(VecDeque<(i64, Bucket)>);

/// No buckets: a series a state has not made yet.
pub(super) static EMPTY: Buckets = Buckets(VecDeque::new());

impl Buckets {
    /// `Ok(index)` of the bucket starting at `start`, or `Err(index)` where it would go.
    fn find(&self, start: i64) -> Result<usize, usize> {
        match self.0.back() {
            None => Err(0),
            Some(&(last, _)) if last == start => Ok(self.0.len() - 1),
            Some(&(last, _)) if last < start => Err(self.0.len()),
            _ => self.0.binary_search_by_key(&start, |&(s, _)| s),
        }
    }

    /// Index of the bucket starting at `start`, created empty if it is not there. `most`:
    /// how many buckets the entity can hold (retention / width): the deque grows by an
    /// eighth (at least [`GROW`] buckets), never past that, so at most an eighth of it or
    /// three buckets are unused (doubling left a quarter of a card's buckets unused on
    /// average), and a copy on growth still costs O(1) per bucket.
    pub(super) fn slot(&mut self, start: i64, most: usize) -> usize {
        match self.find(start) {
            Ok(i) => i,
            Err(i) => {
                let len = self.0.len();
                if len == self.0.capacity() && len < most {
                    self.0.reserve_exact((len / 8).max(GROW).min(most - len));
                }
                self.0.insert(i, (start, Bucket::default()));
                i
            }
        }
    }

    /// The bucket at `index` (from [`Buckets::slot`]).
    pub(super) fn at(&mut self, index: usize) -> &mut Bucket {
        &mut self.0[index].1
    }

    /// The bucket starting at `start`.
    pub(super) fn get_mut(&mut self, start: i64) -> Option<&mut Bucket> {
        self.find(start).ok().map(|i| &mut self.0[i].1)
    }

    /// Whether a bucket starts at `start`.
    pub(super) fn contains(&self, start: i64) -> bool {
        self.find(start).is_ok()
    }

    /// Sets the bucket starting at `start`, replacing one already there.
    pub(super) fn insert(&mut self, start: i64, bucket: Bucket) {
        match self.find(start) {
            Ok(i) => self.0[i].1 = bucket,
            Err(i) => self.0.insert(i, (start, bucket)),
        }
    }

    /// Builds from buckets in any order; of two with the same start the later one stays.
    pub(super) fn from_unsorted(mut all: Vec<(i64, Bucket)>) -> Self {
        all.sort_by_key(|&(s, _)| s); // stable: equal starts keep their order
        let mut out = VecDeque::with_capacity(all.len());
        for (s, b) in all {
            match out.back_mut() {
                Some((last, kept)) if *last == s => *kept = b,
                _ => out.push_back((s, b)),
            }
        }
        Self(out)
    }

    /// The buckets starting in `first..=last`, oldest first.
    pub(super) fn range(&self, first: i64, last: i64) -> impl Iterator<Item = &Bucket> {
        let from = self.0.partition_point(|&(s, _)| s < first);
        let to = self.0.partition_point(|&(s, _)| s <= last).max(from);
        self.0.range(from..to).map(|(_, b)| b)
    }

    /// The buckets starting at or after `first`, with their starts, oldest first.
    pub(super) fn iter_from(&self, first: i64) -> impl Iterator<Item = (i64, &Bucket)> {
        let from = self.0.partition_point(|&(s, _)| s < first);
        self.0.range(from..).map(|(s, b)| (*s, b))
    }

    /// The newest bucket's start.
    pub(super) fn last_start(&self) -> Option<i64> {
        self.0.back().map(|&(s, _)| s)
    }

    /// The oldest bucket's start.
    pub(super) fn first_start(&self) -> Option<i64> {
        self.0.front().map(|&(s, _)| s)
    }

    /// Drops the buckets starting before `keep_from`, telling `gone` each one.
    pub(super) fn drop_before(&mut self, keep_from: i64, mut gone: impl FnMut(i64, &Bucket)) {
        while let Some((s, b)) = self.0.front() {
            if *s >= keep_from {
                break;
            }
            gone(*s, b);
            self.0.pop_front();
        }
        // An entity gone quiet gives back what it no longer fills.
        let len = self.0.len();
        if self.0.capacity() >= len + 2 * (len / 8).max(GROW) {
            self.0.shrink_to(len + (len / 8).max(GROW));
        }
    }

    /// Every bucket with its start, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = (i64, &Bucket)> {
        self.0.iter().map(|(s, b)| (*s, b))
    }

    /// The number of buckets.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}
