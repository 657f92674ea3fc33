//! One time bucket's aggregates, and its min and max where a window reads them.

/// One bucket's aggregates: 16 bytes (24 with its start), since an entity holds up to
/// `retention / bucket` of them (1,442 for a day of one-minute buckets). A bucket counts up
/// to `u32::MAX` events and `2^30 - 1` distinct values (more saturates). Its min and max,
/// where a window reads them, are kept beside it ([`MinMax`]).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Bucket {
    count: u32,
    /// Distinct values whose most recent bucket is this one (the low 30 bits), whether some
    /// event in it carried a value ([`VALUED`]), and whether the bucket changed since the
    /// last delta was taken ([`DIRTY`]; only when the state tracks deltas).
    marks: u32,
    pub(super) sum: f64,
}

/// The bit of [`Bucket::marks`] that says the bucket is listed for the next delta.
const DIRTY: u32 = 1 << 31;
/// The bit of [`Bucket::marks`] that says some event in the bucket carried a value.
const VALUED: u32 = 1 << 30;
/// The most distinct values a bucket counts.
const LAST_OF: u32 = VALUED - 1;

impl PartialEq for Bucket {
    fn eq(&self, o: &Self) -> bool {
        (self.count, self.sum.to_bits(), self.marks) == (o.count, o.sum.to_bits(), o.marks)
    }
}

impl Bucket {
    /// A bucket from its stored parts.
    pub(super) fn with(count: u64, sum: f64, valued: bool, last_of: u64) -> Self {
        let last_of = u32::try_from(last_of).unwrap_or(u32::MAX).min(LAST_OF);
        Self { count: u32::try_from(count).unwrap_or(u32::MAX), marks: last_of | if valued { VALUED } else { 0 }, sum }
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
        self.marks & LAST_OF
    }

    /// One more distinct value has this bucket as its most recent.
    pub(super) fn value_joined(&mut self) {
        if self.last_of() < LAST_OF {
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

    /// Some event in the bucket carried a value.
    pub(super) fn valued(&self) -> bool {
        self.marks & VALUED != 0
    }

    /// Adds a value to the sum and marks the bucket valued.
    pub(super) fn add_value(&mut self, v: f64) {
        self.sum += v;
        self.marks |= VALUED;
    }
}

/// A bucket's least and greatest value, kept for the series whose windows read min or max
/// (NaN while no event carried one; window values are finite).
#[derive(Debug, Clone, Copy)]
pub(super) struct MinMax {
    lo: f64,
    hi: f64,
}

impl Default for MinMax {
    fn default() -> Self {
        Self { lo: f64::NAN, hi: f64::NAN }
    }
}

impl PartialEq for MinMax {
    fn eq(&self, o: &Self) -> bool {
        (self.min(), self.max()) == (o.min(), o.max())
    }
}

impl MinMax {
    /// Min and max as stored.
    pub(super) fn with(lo: f64, hi: f64) -> Self {
        Self { lo, hi }
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
