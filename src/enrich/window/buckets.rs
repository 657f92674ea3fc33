//! An entity's time buckets, contiguous and sorted by start.
//!
//! Events almost always land in the newest bucket and expiry drops the oldest, so a deque
//! sorted by start does both at its ends; a window is a contiguous range found by binary
//! search. An out-of-order event may still create a bucket in the middle (rare). A width
//! whose windows read min or max keeps each bucket's [`MinMax`] in the same entry (40 bytes);
//! any other, none (24 bytes).

use std::collections::VecDeque;

pub(super) use super::bucket::{Bucket, MinMax};

/// The fewest buckets a series' deque grows by.
const GROW: usize = 4;

/// Buckets sorted by start, each start at most once: with their [`MinMax`] beside them in a
/// series whose windows read min or max (40 bytes a bucket), without in any other (24).
#[derive(Debug, Clone)]
pub(super) enum Buckets {
    /// No min or max kept.
    Lean(VecDeque<(i64, Bucket)>),
    /// Each bucket with its min and max.
    Full(VecDeque<(i64, Bucket, MinMax)>),
}

impl PartialEq for Buckets {
    /// The same buckets (and min/max where both keep them); no buckets equal no buckets
    /// whatever either would keep.
    fn eq(&self, o: &Self) -> bool {
        match (self, o) {
            (Buckets::Lean(a), Buckets::Lean(b)) => a == b,
            (Buckets::Full(a), Buckets::Full(b)) => a == b,
            _ => self.len() == 0 && o.len() == 0,
        }
    }
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets::Lean(VecDeque::new())
    }
}

/// No buckets: a series a state has not made yet.
pub(super) static EMPTY: Buckets = Buckets::Lean(VecDeque::new());

/// One of a deque's entries, with or without min and max.
trait Entry {
    fn new(start: i64, b: Bucket, m: Option<MinMax>) -> Self;
    fn start(&self) -> i64;
    fn bucket(&self) -> &Bucket;
    fn bucket_mut(&mut self) -> &mut Bucket;
    fn minmax(&self) -> Option<&MinMax>;
    fn minmax_mut(&mut self) -> Option<&mut MinMax>;
}

impl Entry for (i64, Bucket) {
    fn new(start: i64, b: Bucket, _: Option<MinMax>) -> Self {
        (start, b)
    }
    fn start(&self) -> i64 {
        self.0
    }
    fn bucket(&self) -> &Bucket {
        &self.1
    }
    fn bucket_mut(&mut self) -> &mut Bucket {
        &mut self.1
    }
    fn minmax(&self) -> Option<&MinMax> {
        None
    }
    fn minmax_mut(&mut self) -> Option<&mut MinMax> {
        None
    }
}

impl Entry for (i64, Bucket, MinMax) {
    fn new(start: i64, b: Bucket, m: Option<MinMax>) -> Self {
        (start, b, m.unwrap_or_default())
    }
    fn start(&self) -> i64 {
        self.0
    }
    fn bucket(&self) -> &Bucket {
        &self.1
    }
    fn bucket_mut(&mut self) -> &mut Bucket {
        &mut self.1
    }
    fn minmax(&self) -> Option<&MinMax> {
        Some(&self.2)
    }
    fn minmax_mut(&mut self) -> Option<&mut MinMax> {
        Some(&mut self.2)
    }
}

/// Runs `$e` with `$d` bound to the deque, whichever kind it is.
macro_rules! each {
    ($self:expr, $d:ident => $e:expr) => {
        match $self {
            Buckets::Lean($d) => $e,
            Buckets::Full($d) => $e,
        }
    };
}

/// The same iterator over either kind of deque.
macro_rules! either {
    ($self:expr, $d:ident => $e:expr) => {
        match $self {
            Buckets::Lean($d) => Either::Left($e),
            Buckets::Full($d) => Either::Right($e),
        }
    };
}

/// `Ok(index)` of the entry starting at `start`, or `Err(index)` where it would go.
fn find<E: Entry>(d: &VecDeque<E>, start: i64) -> Result<usize, usize> {
    match d.back().map(Entry::start) {
        None => Err(0),
        Some(last) if last == start => Ok(d.len() - 1),
        Some(last) if last < start => Err(d.len()),
        _ => d.binary_search_by_key(&start, Entry::start),
    }
}

/// Index of the entry starting at `start`, made empty if absent, growing as [`Buckets::slot`] says.
fn slot<E: Entry>(d: &mut VecDeque<E>, start: i64, most: usize) -> usize {
    match find(d, start) {
        Ok(i) => i,
        Err(i) => {
            let len = d.len();
            if len == d.capacity() && len < most {
                d.reserve_exact((len / 8).max(GROW).min(most - len));
            }
            d.insert(i, E::new(start, Bucket::default(), None));
            i
        }
    }
}

/// Drops the entries before `keep_from` (telling `gone`), then gives back spare room.
fn drop_before<E: Entry>(d: &mut VecDeque<E>, keep_from: i64, mut gone: impl FnMut(i64, &Bucket)) {
    while let Some(e) = d.front() {
        if e.start() >= keep_from {
            break;
        }
        gone(e.start(), e.bucket());
        d.pop_front();
    }
    // An entity gone quiet gives back what it no longer fills.
    let len = d.len();
    if d.capacity() >= len + 2 * (len / 8).max(GROW) {
        d.shrink_to(len + (len / 8).max(GROW));
    }
}

/// Entries in any order into a sorted deque; of two with the same start the later one stays.
fn sorted<E: Entry>(mut all: Vec<(i64, Bucket, Option<MinMax>)>) -> VecDeque<E> {
    all.sort_by_key(|&(s, _, _)| s); // stable: equal starts keep their order
    let mut out: VecDeque<E> = VecDeque::with_capacity(all.len());
    for (s, b, m) in all {
        match out.back_mut() {
            Some(last) if last.start() == s => *last = E::new(s, b, m),
            _ => out.push_back(E::new(s, b, m)),
        }
    }
    out
}

/// The indices of the entries starting in `first..=last`.
fn span<E: Entry>(d: &VecDeque<E>, first: i64, last: i64) -> std::ops::Range<usize> {
    let from = d.partition_point(|e| e.start() < first);
    let to = d.partition_point(|e| e.start() <= last).max(from);
    from..to
}

impl Buckets {
    /// Keeps min and max from here on (`true`; buckets so far have none) or drops them.
    fn extremes(&mut self, keep: bool) {
        match (&*self, keep) {
            (Buckets::Lean(d), true) => {
                *self = Buckets::Full(d.iter().map(|&(s, b)| (s, b, MinMax::default())).collect());
            }
            (Buckets::Full(d), false) => *self = Buckets::Lean(d.iter().map(|&(s, b, _)| (s, b)).collect()),
            _ => {}
        }
    }

    /// Index of the bucket starting at `start`, created empty if it is not there (with its
    /// min and max where `extremes`). `most`: how many buckets the entity can hold
    /// (retention / width): the deque grows by an eighth (at least [`GROW`] buckets), never
    /// past that, so at most an eighth of it or three buckets are unused (doubling left a
    /// quarter of a card's buckets unused on average), and a copy on growth still costs
    /// O(1) per bucket.
    pub(super) fn slot(&mut self, start: i64, most: usize, extremes: bool) -> usize {
        self.extremes(extremes);
        each!(self, d => slot(d, start, most))
    }

    /// The bucket at `index` (from [`Buckets::slot`]).
    pub(super) fn at(&mut self, index: usize) -> &mut Bucket {
        each!(self, d => d[index].bucket_mut())
    }

    /// Counts value `v` in the min and max of the bucket at `index` (if the series keeps
    /// them) and returns them.
    pub(super) fn see(&mut self, index: usize, v: f64) -> Option<&MinMax> {
        let m = each!(self, d => d[index].minmax_mut())?;
        m.see(v);
        Some(m)
    }

    /// The bucket starting at `start`.
    pub(super) fn get_mut(&mut self, start: i64) -> Option<&mut Bucket> {
        each!(self, d => find(d, start).ok().map(|i| d[i].bucket_mut()))
    }

    /// The bucket starting at `start`, and its min and max (if kept).
    pub(super) fn get_mut_with(&mut self, start: i64) -> Option<(&mut Bucket, Option<&MinMax>)> {
        match self {
            Buckets::Lean(d) => find(d, start).ok().map(|i| (&mut d[i].1, None)),
            Buckets::Full(d) => find(d, start).ok().map(|i| {
                let (_, b, m) = &mut d[i];
                (b, Some(&*m))
            }),
        }
    }

    /// Whether a bucket starts at `start`.
    pub(super) fn contains(&self, start: i64) -> bool {
        each!(self, d => find(d, start).is_ok())
    }

    /// Sets the bucket starting at `start` (and its min and max if the series keeps them:
    /// `extremes`), replacing one already there.
    pub(super) fn insert(&mut self, start: i64, bucket: Bucket, m: Option<MinMax>, extremes: bool) {
        self.extremes(extremes);
        each!(self, d => match find(d, start) {
            Ok(i) => d[i] = Entry::new(start, bucket, m),
            Err(i) => d.insert(i, Entry::new(start, bucket, m)),
        })
    }

    /// Builds from buckets in any order; of two with the same start the later one stays.
    /// `extremes`: the series keeps min and max (a bucket stored without them has none).
    pub(super) fn from_unsorted(all: Vec<(i64, Bucket, Option<MinMax>)>, extremes: bool) -> Self {
        if extremes {
            Buckets::Full(sorted(all))
        } else {
            Buckets::Lean(sorted(all))
        }
    }

    /// The buckets starting in `first..=last`, oldest first.
    pub(super) fn range(&self, first: i64, last: i64) -> impl Iterator<Item = &Bucket> {
        either!(self, d => d.range(span(d, first, last)).map(Entry::bucket))
    }

    /// The min and max of the buckets starting in `first..=last` (none if not kept).
    pub(super) fn range_extremes(&self, first: i64, last: i64) -> impl Iterator<Item = &MinMax> {
        either!(self, d => d.range(span(d, first, last)).filter_map(Entry::minmax))
    }

    /// The min and max of the buckets starting at or after `first`, with their starts,
    /// oldest first (none if not kept).
    pub(super) fn extremes_from(&self, first: i64) -> impl Iterator<Item = (i64, &MinMax)> {
        either!(self, d => d.range(span(d, first, i64::MAX)).filter_map(|e| Some((e.start(), e.minmax()?))))
    }

    /// The newest bucket's start.
    pub(super) fn last_start(&self) -> Option<i64> {
        each!(self, d => d.back().map(Entry::start))
    }

    /// The oldest bucket's start.
    pub(super) fn first_start(&self) -> Option<i64> {
        each!(self, d => d.front().map(Entry::start))
    }

    /// Drops the buckets starting before `keep_from`, telling `gone` each one.
    pub(super) fn drop_before(&mut self, keep_from: i64, gone: impl FnMut(i64, &Bucket)) {
        each!(self, d => drop_before(d, keep_from, gone))
    }

    /// Every bucket with its start, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = (i64, &Bucket)> {
        either!(self, d => d.iter().map(|e| (e.start(), e.bucket())))
    }

    /// Every bucket with its start and its min and max (None where not kept), oldest first.
    pub(super) fn iter_all(&self) -> impl Iterator<Item = (i64, &Bucket, Option<&MinMax>)> {
        either!(self, d => d.iter().map(|e| (e.start(), e.bucket(), e.minmax())))
    }

    /// The number of buckets.
    pub(super) fn len(&self) -> usize {
        each!(self, d => d.len())
    }
}

/// One of two iterators with the same items.
enum Either<A, B> {
    Left(A),
    Right(B),
}

impl<A: Iterator, B: Iterator<Item = A::Item>> Iterator for Either<A, B> {
    type Item = A::Item;

    fn next(&mut self) -> Option<A::Item> {
        match self {
            Either::Left(a) => a.next(),
            Either::Right(b) => b.next(),
        }
    }
}
