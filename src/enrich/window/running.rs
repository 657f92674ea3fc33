//! Running aggregates: each window keeps its count, exact sum, distinct count and min/max
//! over the buckets at or after its lower edge, updated as events land and as the edge
//! moves, so an event costs O(windows) instead of a walk over every bucket of its longest
//! window (1,440 one-minute buckets for a day).
//!
//! The edge of a window for an event at `t` is `t - size - B + 1`: buckets starting there or
//! later are in it. In order, events only move edges forward, and each bucket enters and
//! leaves each window once. Min and max use monotonic deques (bucket start, value): the
//! front is the window's extreme, and a newer bucket with a better value drops the worse
//! ones behind it. The rare cases that do not fit (an event older than the newest bucket,
//! an edge moving back, an out-of-order event landing in an older bucket) walk the
//! buckets, exactly as [`EntityState::aggregates`] does; the results are the same numbers
//! either way (the sum is exact, see `exact.rs`).

use smallvec::SmallVec;

use super::buckets::{Bucket, Buckets, MinMax};
use super::exact::{window_sum, ExactSum};
use super::{clamp, WindowAggs, WindowSpec};

/// One window's running aggregates over the buckets starting at or after `edge` (88 bytes:
/// three per card with the demo's windows).
#[derive(Debug, Clone, Default)]
struct Window {
    edge: i64,
    count: u64,
    sum: ExactSum,
    /// Distinct values whose latest bucket is in the window (a bucket's own count is a u32).
    distinct: u32,
    /// Buckets in the window in which some event carried a value (`avg` needs one).
    valued: u32,
    /// The bucket series the window reads.
    series: u32,
    /// The min and max deques, for a window that offers either (others keep none: 112
    /// bytes less per window).
    extremes: Option<Box<Monotonic>>,
    /// A bucket other than the newest changed its min or max: rebuild the deques.
    extremes_stale: bool,
}

/// A window's min and max deques.
#[derive(Debug, Clone, Default)]
struct Monotonic {
    /// Increasing values from the front: the front is the minimum.
    min: Deque,
    /// Decreasing values from the front: the front is the maximum.
    max: Deque,
}

/// A monotonic deque of (bucket start, value), front first. Over random values it holds
/// about ln(buckets in the window) entries: three inline cover most windows, so a card's
/// windows allocate nothing for it (a `VecDeque` was 32 bytes plus an 80-byte chunk, six
/// per card). Popping the front shifts the rest: a few entries.
type Deque = SmallVec<[(i64, f64); 3]>;

/// Drops the entries before bucket `edge` from the front of `d`.
fn drop_front_before(d: &mut Deque, edge: i64) {
    let n = d.iter().take_while(|&&(s, _)| s < edge).count();
    if n > 0 {
        d.drain(..n);
    }
}

/// The running aggregates of an entity's windows; empty until first asked (and after any
/// change it cannot follow). A cache: it takes no part in equality.
#[derive(Debug, Clone, Default)]
pub(super) struct Running(Box<[Window]>);

impl PartialEq for Running {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The first bucket start inside a window of `size` over buckets of `width` for an event at
/// `t` (below i64::MIN: every bucket); None for an empty window (a negative size).
fn edge_of(width: i64, size: i64, t: i64) -> Option<i64> {
    let first = clamp(i128::from(t) - i128::from(size) - i128::from(width) + 1);
    (first <= t).then_some(first)
}

/// Series `k` of the finest and coarser series.
fn pick<'a>(fine: &'a Buckets, coarse: &'a [Buckets], k: usize) -> &'a Buckets {
    match k {
        0 => fine,
        _ => coarse.get(k - 1).unwrap_or(&super::buckets::EMPTY),
    }
}

impl Running {
    /// Writes the aggregates at `t` into `out` (one per window of `spec`), moving each
    /// window's edge to `t`. The caller walks instead when a bucket starts after `t`.
    pub(super) fn aggregates_into(
        &mut self,
        fine: &Buckets,
        coarse: &[Buckets],
        spec: &WindowSpec,
        t: i64,
        out: &mut [WindowAggs],
    ) {
        let differs = |(i, (w, &k)): (usize, (&Window, &usize))| {
            w.series() != k || w.extremes.is_some() != spec.keeps_extremes(i)
        };
        if self.0.len() != spec.sizes_ms.len() || self.0.iter().zip(&spec.window_series).enumerate().any(differs) {
            self.0 = (spec.window_series.iter().enumerate())
                .map(|(i, &k)| Window::build(pick(fine, coarse, k), i64::MAX, k, spec.keeps_extremes(i)))
                .collect();
        }
        for ((w, a), &size) in self.0.iter_mut().zip(out.iter_mut()).zip(&spec.sizes_ms) {
            let Some(edge) = edge_of(spec.series[w.series()].width, size, t) else {
                *a = WindowAggs::default();
                continue;
            };
            let buckets = pick(fine, coarse, w.series());
            w.move_edge(buckets, edge);
            *a = w.aggregates(buckets);
        }
    }

    /// An event changed the bucket of series `k` starting at `start` (`newest`: the last
    /// bucket), whose sum was `old_sum` before (`was_valued`: it had a value before);
    /// `seen`: its min and max, when a value changed them in a series that keeps them.
    pub(super) fn bucket_changed(
        &mut self,
        k: usize,
        start: i64,
        newest: bool,
        (old_sum, was_valued): (f64, bool),
        b: &Bucket,
        seen: Option<&MinMax>,
    ) {
        let valued = u32::from(!was_valued && b.valued());
        for w in self.0.iter_mut().filter(|w| w.series() == k && start >= w.edge) {
            w.count += 1;
            w.valued += valued;
            if old_sum.to_bits() != b.sum.to_bits() {
                w.sum.sub(old_sum);
                w.sum.add(b.sum);
            }
            match (seen, w.extremes.as_deref_mut()) {
                (Some(m), Some(x)) if newest => x.push(start, m),
                (Some(_), Some(_)) => w.extremes_stale = true,
                _ => {}
            }
        }
    }

    /// A distinct value left (`-1`) or joined (`+1`) the bucket of series `k` starting at
    /// `start`.
    pub(super) fn distinct_moved(&mut self, k: usize, start: i64, delta: i32) {
        for w in self.0.iter_mut().filter(|w| w.series() == k && start >= w.edge) {
            w.distinct = w.distinct.saturating_add_signed(delta);
        }
    }

    /// The bucket of series `k` starting at `start` expired (normally long behind every edge).
    pub(super) fn bucket_dropped(&mut self, k: usize, start: i64, b: &Bucket) {
        for w in self.0.iter_mut().filter(|w| w.series() == k && start >= w.edge) {
            w.leave(b);
            w.extremes_stale = true;
        }
    }
}

impl Window {
    /// The aggregates of the buckets starting at or after `edge`, built by a walk.
    fn build(buckets: &Buckets, edge: i64, series: usize, extremes: bool) -> Self {
        let series = u32::try_from(series).expect("fewer bucket series than windows, far under 2^32");
        let mut w = Window { series, edge, extremes: extremes.then(Box::default), ..Window::default() };
        for b in buckets.range(edge, i64::MAX) {
            w.enter(b);
        }
        w.rebuild_extremes(buckets);
        w
    }

    /// The bucket series the window reads.
    fn series(&self) -> usize {
        self.series as usize
    }

    fn enter(&mut self, b: &Bucket) {
        self.count += b.count();
        self.sum.add(b.sum);
        self.distinct = self.distinct.saturating_add(b.last_of());
        self.valued = self.valued.saturating_add(u32::from(b.valued()));
    }

    fn leave(&mut self, b: &Bucket) {
        self.count = self.count.saturating_sub(b.count());
        self.sum.sub(b.sum);
        self.distinct = self.distinct.saturating_sub(b.last_of());
        self.valued = self.valued.saturating_sub(u32::from(b.valued()));
    }

    /// Moves the edge to `edge`: buckets between the two leave (forward) or enter (back).
    fn move_edge(&mut self, buckets: &Buckets, edge: i64) {
        if edge > self.edge {
            for b in buckets.range(self.edge, edge - 1) {
                self.leave(b);
            }
            self.edge = edge;
            if let Some(x) = &mut self.extremes {
                drop_front_before(&mut x.min, edge);
                drop_front_before(&mut x.max, edge);
            }
        } else if edge < self.edge {
            for b in buckets.range(edge, self.edge - 1) {
                self.enter(b);
            }
            self.edge = edge;
            self.extremes_stale = true;
        }
    }

    /// Rebuilds the min and max deques from the series' min/max at or after the edge.
    fn rebuild_extremes(&mut self, buckets: &Buckets) {
        if let Some(x) = &mut self.extremes {
            x.min.clear();
            x.max.clear();
            for (s, m) in buckets.extremes_from(self.edge) {
                x.push(s, m);
            }
        }
        self.extremes_stale = false;
    }

    fn aggregates(&mut self, buckets: &Buckets) -> WindowAggs {
        if self.extremes_stale {
            self.rebuild_extremes(buckets);
        }
        let sum = match self.sum.value() {
            Some(s) => s,
            None => {
                // The partials overflowed: start them again from the buckets (still
                // overflowed while the window holds such sums: then summed plainly).
                let mut fresh = ExactSum::default();
                buckets.range(self.edge, i64::MAX).for_each(|b| fresh.add(b.sum));
                self.sum = fresh;
                window_sum(|| buckets.range(self.edge, i64::MAX).map(|b| b.sum))
            }
        };
        WindowAggs {
            count: self.count,
            sum,
            min: self.extremes.as_ref().and_then(|x| x.min.first()).map(|&(_, v)| v),
            max: self.extremes.as_ref().and_then(|x| x.max.first()).map(|&(_, v)| v),
            distinct: u64::from(self.distinct),
            valued: self.valued > 0,
        }
    }
}

impl Monotonic {
    /// The newest bucket's min or max may have improved: drop what it beats, then add it.
    fn push(&mut self, start: i64, b: &MinMax) {
        if let Some(v) = b.min() {
            while self.min.last().is_some_and(|&(s, x)| x >= v || s == start) {
                self.min.pop();
            }
            self.min.push((start, v));
        }
        if let Some(v) = b.max() {
            while self.max.last().is_some_and(|&(s, x)| x <= v || s == start) {
                self.max.pop();
            }
            self.max.push((start, v));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_windows_running_aggregates_take_88_bytes() {
        // Three per card with the demo's windows (was 104 each: usize series, u64 counts).
        assert_eq!(std::mem::size_of::<super::Window>(), 88);
    }
}
