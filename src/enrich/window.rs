//! Sliding-window state of one entity, in time buckets, with a replay fence.
//!
//! Semantics, shared by this in-process implementation, the Redis Lua script
//! (`window.lua`) and the training code (`ops/model/features.py`):
//!
//! * An event at time `t` sees the aggregates **before** it is applied: every bucket
//!   `[s, s + B)` with `s + B > t - size` and `s <= t`, over events applied so far.
//! * Then it is applied to bucket `floor(t / B) * B` — unless its source offset is at or
//!   below the fence of its source partition (a replay: read, never applied twice), or it
//!   is older than the entity's newest event by more than the allowed lateness (late:
//!   counted, not applied). Either way the fence advances.
//! * Sums are added in event order within a bucket; a window's sum is the correctly rounded
//!   sum of its bucket sums (Python's `math.fsum`; `exact.rs` has the corner cases), so it
//!   can be kept running as buckets enter and leave (`running.rs`) and stays exact.
//! * Distinct counts use each value's most recent bucket: a value counts in a window when
//!   that bucket is in the window (exact for in-order streams; an out-of-order event cannot
//!   move a value's bucket back). A partition-owned entity remembers a value only as long as
//!   its longest window that counts distinct values needs (`spec.rs`); past that horizon a
//!   value seen again joins as new, its old bucket keeping its mark.
//! * Buckets whose end is older than `newest - longest window - lateness` are dropped,
//!   so memory per entity is bounded by `longest window / B` buckets.
//!
//! Two kinds of state use this type. Shared entities (several partitions write them) live
//! in Redis as a msgpack blob (`msgpack.rs`), fenced per source partition and followed
//! from the script's answers (`shared.rs`). Partition-owned entities are applied here with
//! [`EntityState::apply_owned`] (`owned.rs`, no fence) and checkpointed as deltas of a
//! Redis hash (`delta.rs`). Buckets are kept sorted in a deque (`buckets.rs`), with their
//! min and max only in a width whose windows read them (`bucket.rs`). A partition-owned
//! entity can also keep a session window (`session.rs`).

use std::collections::HashMap;

mod bucket;
mod buckets;
mod delta;
mod exact;
mod msgpack;
mod owned;
mod running;
mod session;
mod shared;
mod spec;

use buckets::{Bucket, Buckets};
pub use delta::Delta;
pub use owned::OwnedSeen;
pub use session::{SessionSeen, SessionSpec};
pub use spec::{WindowSpec, ALL, AVG, COUNT, DISTINCT, MAX, MIN, SUM};

/// A window state or a store reply this code cannot follow (a protocol error).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The blob is not msgpack.
    #[error("window state: {0}")]
    Decode(#[source] rmpv::decode::Error),
    /// The blob is msgpack but not a map.
    #[error("window state: not a map")]
    NotAMap,
    /// A field of the map has the wrong shape; names the field.
    #[error("window state: bad {0}")]
    Bad(&'static str),
    /// An event status the store should not send.
    #[error("status '{0}'")]
    Status(String),
    /// The store's status for an event disagrees with the state it returned.
    #[error("offset {offset} of {fence_key}: the store says '{store}', the state it returned says '{ours}'")]
    Disagrees {
        /// The event's source offset.
        offset: i64,
        /// Its fence key (topic/partition).
        fence_key: String,
        /// The store's status.
        store: String,
        /// What this state computed.
        ours: String,
    },
}

/// Seconds to milliseconds, saturating at the i64 range.
fn ms(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000)
}

/// Event times are any i64 (the decoder's bounds can be lowered for old files), so window
/// arithmetic runs in i128 and clamps back: exact wherever the i64 result exists.
fn clamp(x: i128) -> i64 {
    x.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Start of the bucket holding `t` (`floor(t / B) * B`), clamped to i64.
fn bucket_start(t: i64, bucket: i64) -> i64 {
    clamp(i128::from(t.div_euclid(bucket)) * i128::from(bucket))
}

/// Aggregates of one window as seen by one event.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowAggs {
    /// Events in the window.
    pub count: u64,
    /// Sum of the value field.
    pub sum: f64,
    /// Minimum value (None when no event carried one).
    pub min: Option<f64>,
    /// Maximum value.
    pub max: Option<f64>,
    /// Distinct values of the distinct field.
    pub distinct: u64,
    /// Some event in the window carried a value (min and max are None without one, and
    /// also where the window does not keep them).
    pub valued: bool,
}

impl WindowAggs {
    /// Mean value, None for an empty window or one without values.
    pub fn avg(&self) -> Option<f64> {
        (self.count > 0 && self.valued).then(|| self.sum / self.count as f64)
    }
}

/// One event's contribution to an entity's windows.
#[derive(Debug, Clone)]
pub struct Update<'a> {
    /// Source `topic/partition`: fences are per source partition.
    pub fence_key: &'a str,
    /// Source offset.
    pub offset: i64,
    /// Event time (ms).
    pub time_ms: i64,
    /// Value summed / min / max (None: counted only).
    pub value: Option<f64>,
    /// Value counted for distinctness.
    pub distinct: Option<&'a str>,
}

/// What an event saw and what happened to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// One entry per window, before this event.
    pub windows: Vec<WindowAggs>,
    /// Time since the entity's newest applied event (ms), None if it has none.
    pub since_last_ms: Option<i64>,
    /// Applied now (false for replays and late events).
    pub applied: bool,
    /// Dropped as later than the allowed lateness.
    pub late: bool,
    /// Applying it expired the entity's oldest buckets.
    pub pruned: bool,
    /// Its session before it (zeros without a session window; kept in process only: the
    /// shared path's Redis state has no sessions, which config validation keeps there).
    pub session: SessionSeen,
}

/// Window state of one entity. Equality covers what is pending for the next delta too.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityState {
    /// The finest series (series 0).
    buckets: Buckets,
    /// The coarser series, in width order (empty while every window uses one width).
    coarse: Vec<Buckets>,
    /// Distinct value (its [`value_key`]) → the most recent bucket it was seen in: 16 bytes
    /// per value whatever its length, no allocation per value.
    last_bucket: Values,
    fence: Fence,
    newest_ms: Option<i64>,
    /// When `window.lua` last pushed the Redis key's expiry back (its field `x`, ms).
    expiry_pushed_ms: Option<i64>,
    /// What changed since the last delta (partition-owned states only).
    track: delta::Tracking,
    /// Running aggregates per window (a cache, rebuilt when absent).
    running: running::Running,
    /// At or below the finest bucket of every distinct value (a cache).
    values_floor: Floor,
    /// The current session (entities with a session window).
    session: Option<Box<session::Session>>,
}

/// Distinct values by their 64-bit [`value_key`], placed in the table by foldhash seeded
/// per map (as hashbrown's default), so crafted values cannot pile up in one probe chain.
type Values = HashMap<u64, i64, foldhash::fast::RandomState>;

/// A distinct value's key: the xxh3-64 hash of its bytes (seed 0, a specified function:
/// the same on every machine and version, as the checkpoint's `h:` fields need). Two
/// values count as one only if their hashes collide: for `n` values in a window about
/// `n² / 2^65` (1e-16 for 40 values), far below any other source of error, but values
/// crafted to collide would count once: see the README's window semantics.
pub fn value_key(v: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(v.as_bytes())
}

/// Source partition (`topic/partition`) → the last offset applied from it: shared states
/// only (a partition-owned state has no fence), so boxed and made on first use.
type Fence = Option<Box<HashMap<String, i64>>>;

/// A lower bound on the distinct values' buckets: when the oldest series bucket is still
/// at or below it, a prune has no value to let go and skips the walk over them. A cache:
/// it takes no part in equality; `i64::MIN` (the default) makes the next prune walk.
#[derive(Debug, Clone, Copy)]
struct Floor(i64);

impl Default for Floor {
    fn default() -> Self {
        Floor(i64::MIN)
    }
}

impl PartialEq for Floor {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl EntityState {
    /// Aggregates at time `t` over the applied events.
    pub fn aggregates(&self, spec: &WindowSpec, t: i64) -> Vec<WindowAggs> {
        let mut out = vec![WindowAggs::default(); spec.sizes_ms.len()];
        self.aggregates_into(spec, t, &mut out);
        out
    }

    /// Aggregates at time `t` into `out`, one per window of `spec` (`out` is as long as
    /// `spec.sizes_ms`), without allocating, by a walk over the buckets: the reference the
    /// running aggregates ([`EntityState::aggregates_running`]) equal.
    pub fn aggregates_into(&self, spec: &WindowSpec, t: i64, out: &mut [WindowAggs]) {
        debug_assert_eq!(out.len(), spec.sizes_ms.len());
        for (i, ((a, &size), &k)) in out.iter_mut().zip(&spec.sizes_ms).zip(&spec.window_series).enumerate() {
            *a = WindowAggs::default();
            let (buckets, width) = (self.series(k), spec.series[k].width);
            // Buckets with s + B > t - size, i.e. s >= t - size - B + 1 (below i64::MIN: all of them).
            let first = clamp(i128::from(t) - i128::from(size) - i128::from(width) + 1);
            if first > t {
                continue; // a negative size: an empty window
            }
            for b in buckets.range(first, t) {
                a.count += b.count();
                a.valued |= b.valued();
                a.distinct += u64::from(b.last_of());
            }
            if spec.keeps_extremes(i) {
                for m in buckets.range_extremes(first, t) {
                    a.min = min_opt(a.min, m.min());
                    a.max = max_opt(a.max, m.max());
                }
            }
            a.sum = exact::window_sum(|| buckets.range(first, t).map(|b| b.sum));
        }
    }

    /// [`EntityState::aggregates_into`] from the running aggregates: O(windows) for an event
    /// at or after the newest bucket (the walk otherwise). Same numbers.
    pub fn aggregates_running(&mut self, spec: &WindowSpec, t: i64, out: &mut [WindowAggs]) {
        let newer = |b: &Buckets| b.last_start().is_some_and(|s| s > t);
        if newer(&self.buckets) || self.coarse.iter().any(newer) {
            self.aggregates_into(spec, t, out);
        } else {
            self.running.aggregates_into(&self.buckets, &self.coarse, spec, t, out);
        }
    }

    /// Reads the aggregates before `u`, then applies it unless fenced or late.
    pub fn apply(&mut self, spec: &WindowSpec, u: &Update<'_>) -> Seen {
        self.apply_inner(spec, u, None)
    }

    /// The newest applied event time (ms).
    pub fn newest_ms(&self) -> Option<i64> {
        self.newest_ms
    }

    /// The start of the latest bucket of distinct value `v`, as far as this copy knows.
    pub fn distinct_bucket(&self, v: &str) -> Option<i64> {
        self.last_bucket.get(&value_key(v)).copied()
    }

    /// `prior`: None keeps distinct values here; Some(x) takes the value's previous bucket
    /// from the store (as `window.lua` read it), and records the value's bucket here too.
    fn apply_inner(&mut self, spec: &WindowSpec, u: &Update<'_>, prior: Option<Option<i64>>) -> Seen {
        let mut windows = vec![WindowAggs::default(); spec.sizes_ms.len()];
        self.aggregates_running(spec, u.time_ms, &mut windows);
        let since_last_ms = self.since_last(u.time_ms);
        let replay = self.fence.as_ref().and_then(|f| f.get(u.fence_key)).is_some_and(|&f| u.offset <= f);
        let late = !replay && self.is_late(spec, u.time_ms);
        let applied = !replay && !late;
        let session = spec.session.map(|s| self.session_seen(&s, u.time_ms)).unwrap_or_default();
        let pruned = applied && self.add(spec, u.time_ms, u.value, u.distinct, prior);
        if let (Some(s), true) = (&spec.session, applied) {
            self.session_add(s, u.time_ms, u.distinct);
        }
        if !replay {
            let fence = self.fence.get_or_insert_with(Box::default);
            match fence.get_mut(u.fence_key) {
                Some(f) => *f = u.offset,
                None => {
                    fence.insert(u.fence_key.to_string(), u.offset);
                }
            }
        }
        Seen { windows, since_last_ms, applied, late, pruned, session }
    }

    /// Time since the newest applied event, for an event at `t`.
    fn since_last(&self, t: i64) -> Option<i64> {
        self.newest_ms.map(|n| t.saturating_sub(n).max(0))
    }

    /// Whether an event at `t` is later than the allowed lateness.
    fn is_late(&self, spec: &WindowSpec, t: i64) -> bool {
        // Saturating is exact here: below i64::MIN no time is late.
        self.newest_ms.is_some_and(|n| t < n.saturating_sub(spec.lateness_ms))
    }

    /// Applies an event (neither replayed nor late) to every series and expires old
    /// buckets; returns whether any expired. `prior` as in [`EntityState::apply_inner`].
    fn add(
        &mut self,
        spec: &WindowSpec,
        t: i64,
        value: Option<f64>,
        distinct: Option<&str>,
        prior: Option<Option<i64>>,
    ) -> bool {
        if spec.sizes_ms.is_empty() {
            // A session window alone: no buckets, only the newest time (for lateness).
            if self.newest_ms.is_none_or(|n| t > n) {
                self.newest_ms = Some(t);
                self.track.newest_changed();
            }
            return false;
        }
        let start = bucket_start(t, spec.bucket());
        if self.coarse.len() + 1 < spec.series.len() {
            self.coarse.resize_with(spec.series.len() - 1, Buckets::default);
        }
        for (k, sk) in spec.series.iter().enumerate() {
            let Self { buckets, coarse, track, running, .. } = self;
            let series = series_mut(buckets, coarse, k);
            let s = bucket_start(t, sk.width);
            let at = series.slot(s, sk.most, sk.extremes);
            let newest = at + 1 == series.len();
            let b = series.at(at);
            let old = (b.sum, b.valued());
            b.count_one();
            if let Some(v) = value {
                b.add_value(v);
            }
            let seen = value.and_then(|v| series.see(at, v).copied());
            let b = series.at(at);
            track.bucket_changed(k, s, b);
            running.bucket_changed(k, s, newest, old, b, seen.as_ref());
        }
        // The value's previous bucket: from the store (which keeps the map), or here.
        let distinct = distinct.filter(|_| spec.counts_distinct());
        let previous = match (distinct, prior) {
            (Some(d), Some(p)) if !d.is_empty() => {
                // Learn the value's bucket, so a later batch can assume it.
                self.move_value(d, p.map_or(start, |p| p.max(start)));
                Some(p)
            }
            (Some(d), None) => Some(self.move_value(d, start)),
            _ => None,
        };
        if let Some(previous) = previous {
            // In each series that counts distinct values the value counts in its latest
            // bucket: move it there. A bucket past the series' distinct horizon (as of the
            // newest event before this one) no longer holds it: it joins as new.
            for (k, sk) in spec.series.iter().enumerate() {
                let Some(remembered) = sk.distinct_retention else { continue };
                let now = bucket_start(t, sk.width);
                let horizon = self.newest_ms.map(|n| i128::from(n) - i128::from(remembered));
                let alive = |last: &i64| horizon.is_none_or(|h| i128::from(*last) + i128::from(sk.width) > h);
                match previous.map(|p| bucket_start(p, sk.width)).filter(alive) {
                    Some(last) if last < now => {
                        self.distinct_moved(k, last, -1);
                        self.distinct_moved(k, now, 1);
                    }
                    None => self.distinct_moved(k, now, 1),
                    _ => {}
                }
            }
        }
        let newest = self.newest_ms.map_or(t, |n| n.max(t));
        if self.newest_ms != Some(newest) {
            self.newest_ms = Some(newest);
            self.track.newest_changed();
        }
        let mut pruned = false;
        for (k, sk) in spec.series.iter().enumerate() {
            let Self { buckets, coarse, track, running, .. } = self;
            let series = series_mut(buckets, coarse, k);
            let horizon = i128::from(newest) - i128::from(sk.retention);
            let bucket = i128::from(sk.width);
            // Buckets are sorted: only when the oldest has expired is there anything to drop
            // (scanning them all for every event cost O(buckets) per event).
            if series.first_start().is_none_or(|s| i128::from(s) + bucket > horizon) {
                continue;
            }
            // Kept: s + width > horizon, i.e. s >= horizon - width + 1.
            let keep_from = clamp(horizon - bucket + 1);
            series.drop_before(keep_from, |s, b| {
                track.bucket_dropped(k, s);
                running.bucket_dropped(k, s, b);
            });

            pruned = true;
        }
        {
            // A value stays while its bucket is within the distinct horizon of a series that
            // counts distinct values (with every aggregate kept: while any series still holds
            // its bucket): O(series) per value, no search. Nothing can go while the oldest
            // value's bucket stays (`values_floor` is at or below every value's bucket).
            let Self { last_bucket, track, values_floor, .. } = self;
            let held = |b: i64| {
                spec.series.iter().any(|sk| {
                    sk.distinct_retention.is_some_and(|r| {
                        i128::from(bucket_start(b, sk.width)) + i128::from(sk.width)
                            > i128::from(newest) - i128::from(r)
                    })
                })
            };
            if !last_bucket.is_empty() && !held(values_floor.0) {
                let mut floor = i64::MAX;
                last_bucket.retain(|&v, &mut bucket| {
                    let keep = held(bucket);
                    if keep {
                        floor = floor.min(bucket);
                    } else {
                        track.value_dropped(v);
                    }
                    keep
                });
                values_floor.0 = floor;
                // A burst's table gives back what it no longer fills: hashbrown only grows,
                // so each entity would keep room for the most values it ever remembered.
                let len = last_bucket.len();
                if last_bucket.capacity() > 4 * len.max(4) {
                    last_bucket.shrink_to(2 * len);
                }
            }
        }
        pruned
    }

    /// A distinct value left (`-1`) or joined (`+1`) bucket `start` of series `k` (a bucket
    /// that has expired is left alone).
    fn distinct_moved(&mut self, k: usize, start: i64, delta: i32) {
        let Self { buckets, coarse, track, running, .. } = self;
        let Some(b) = series_mut(buckets, coarse, k).get_mut(start) else {
            return;
        };
        if delta < 0 {
            if b.last_of() > 0 {
                running.distinct_moved(k, start, -1);
            }
            b.value_left();
        } else {
            b.value_joined();
            running.distinct_moved(k, start, 1);
        }
        track.bucket_changed(k, start, b);
    }

    /// Series `k`'s buckets (empty if the state has not made it yet).
    fn series(&self, k: usize) -> &Buckets {
        match k {
            0 => &self.buckets,
            _ => self.coarse.get(k - 1).unwrap_or(&buckets::EMPTY),
        }
    }

    /// Moves distinct value `d` to bucket `to` unless it is in a later one already (adding
    /// it if new); returns its bucket before.
    fn move_value(&mut self, d: &str, to: i64) -> Option<i64> {
        let key = value_key(d);
        let Some(bucket) = self.last_bucket.get_mut(&key) else {
            self.values_floor.0 = self.values_floor.0.min(to);
            self.track.value_changed(key);
            self.last_bucket.insert(key, to);
            return None;
        };
        let old = *bucket;
        if to > old {
            *bucket = to;
            self.track.value_changed(key);
        }
        Some(old)
    }

    /// Totals over the retained buckets of the series that holds the most events (the one
    /// kept longest): (count, sum, distinct values) — what tests compare.
    pub fn totals(&self) -> (u64, f64, u64) {
        let count = |b: &Buckets| b.iter().map(|(_, b)| b.count()).sum::<u64>();
        let most = std::iter::once(&self.buckets).chain(&self.coarse).max_by_key(|b| count(b)).expect("one series");
        let s = exact::window_sum(|| most.iter().map(|(_, b)| b.sum));
        (count(most), s, self.last_bucket.len() as u64)
    }
}

/// Series `k` of a state's finest and coarser series (which exist: `add` makes them).
fn series_mut<'a>(fine: &'a mut Buckets, coarse: &'a mut [Buckets], k: usize) -> &'a mut Buckets {
    match k {
        0 => fine,
        _ => &mut coarse[k - 1],
    }
}

fn min_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod owned_tests;
