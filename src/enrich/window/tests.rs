//! Window semantics, example by example.

use super::*;

fn spec() -> WindowSpec {
    WindowSpec::new(60_000, vec![600_000, 3_600_000], 60_000)
}

fn up(offset: i64, t: i64, v: f64, d: &str) -> Update<'_> {
    Update { fence_key: "events/0", offset, time_ms: t, value: Some(v), distinct: Some(d) }
}

#[test]
fn each_event_sees_the_window_before_itself() {
    let mut s = EntityState::default();
    let a = s.apply(&spec(), &up(0, 1_000, 10.0, "m1"));
    assert_eq!(a.windows[0].count, 0);
    assert_eq!(a.since_last_ms, None);
    let b = s.apply(&spec(), &up(1, 61_000, 5.0, "m2"));
    assert_eq!((b.windows[0].count, b.windows[0].sum, b.windows[0].distinct), (1, 10.0, 1));
    assert_eq!(b.since_last_ms, Some(60_000));
    let c = s.apply(&spec(), &up(2, 62_000, 1.0, "m1"));
    assert_eq!((c.windows[0].count, c.windows[0].sum, c.windows[0].distinct), (2, 15.0, 2));
    assert_eq!((c.windows[0].min, c.windows[0].max), (Some(5.0), Some(10.0)));
    assert_eq!(c.windows[0].avg(), Some(7.5));
}

#[test]
fn old_buckets_leave_the_short_window_but_stay_in_the_long_one() {
    let mut s = EntityState::default();
    s.apply(&spec(), &up(0, 0, 1.0, "a"));
    let later = s.apply(&spec(), &up(1, 700_000, 1.0, "a"));
    assert_eq!(later.windows[0].count, 0, "10m window no longer holds t=0");
    assert_eq!(later.windows[1].count, 1, "1h window still does");
}

#[test]
fn a_bucket_is_dropped_exactly_when_it_ends_before_the_retention_horizon() {
    // Kept while start + bucket > newest - retention, as `window.lua` keeps it.
    let (sp, mut s) = (spec(), EntityState::default());
    let (b, keep) = (sp.bucket_ms, sp.retention_ms());
    let starts = |s: &EntityState| s.buckets.iter().map(|(start, _)| start).collect::<Vec<_>>();
    s.apply(&sp, &up(0, 0, 1.0, "a"));
    s.apply(&sp, &up(1, b, 1.0, "b"));
    // Horizon b - 1: bucket 0 ends after it.
    let kept = s.apply(&sp, &up(2, keep + b - 1, 1.0, "c"));
    assert!(!kept.pruned);
    assert_eq!(starts(&s), vec![0, b, (keep + b - 1) / b * b]);
    // Horizon 2b - 1: bucket 0 ends at or before it; bucket b ends after it.
    let dropped = s.apply(&sp, &up(3, keep + 2 * b - 1, 1.0, "d"));
    assert!(dropped.pruned);
    assert_eq!(starts(&s)[..2], [b, (keep + b - 1) / b * b]);
    assert!(s.distinct_bucket("a").is_none() && s.distinct_bucket("b").is_some(), "a's only bucket went");
    // Horizon 2b: bucket b ends exactly at it.
    assert!(s.apply(&sp, &up(4, keep + 2 * b, 1.0, "e")).pruned);
    assert_eq!(starts(&s)[0], (keep + b - 1) / b * b);
}

#[test]
fn replayed_offsets_are_read_but_never_applied_twice() {
    let mut s = EntityState::default();
    for o in 0..5 {
        s.apply(&spec(), &up(o, o * 1000, 2.0, "m"));
    }
    let before = s.clone();
    for o in 0..5 {
        let seen = s.apply(&spec(), &up(o, o * 1000, 2.0, "m"));
        assert!(!seen.applied);
    }
    assert_eq!(s, before);
    assert_eq!(s.totals(), (5, 10.0, 1));
    // Another partition's offsets are fenced separately.
    let other = Update { fence_key: "events/1", ..up(0, 6000, 1.0, "n") };
    assert!(s.apply(&spec(), &other).applied);
}

#[test]
fn events_later_than_the_allowed_lateness_are_not_applied() {
    let mut s = EntityState::default();
    s.apply(&spec(), &up(0, 1_000_000, 1.0, "a"));
    let late = s.apply(&spec(), &up(1, 1_000_000 - 61_000, 1.0, "a"));
    assert!(late.late && !late.applied);
    let ok = s.apply(&spec(), &up(2, 1_000_000 - 59_000, 1.0, "a"));
    assert!(ok.applied);
    assert_eq!(s.totals().0, 2);
}

#[test]
fn extreme_event_times_neither_panic_nor_wrap() {
    // Was: `range start is greater than range end` (t - size - bucket + 1 overflowed).
    let mut s = EntityState::default();
    let low = s.apply(&spec(), &up(0, i64::MIN, 1.0, "a"));
    assert!(low.applied);
    assert_eq!(s.aggregates(&spec(), i64::MIN)[0].count, 1, "the bucket at i64::MIN is in its own window");
    let high = s.apply(&spec(), &up(1, i64::MAX, 2.0, "b"));
    assert_eq!((high.windows[0].count, high.since_last_ms), (0, Some(i64::MAX)));
    assert!(high.pruned, "i64::MIN is far beyond retention of i64::MAX");
    assert_eq!(s.totals(), (1, 2.0, 1));
    assert!(s.apply(&spec(), &up(2, i64::MIN, 1.0, "c")).late);
}

#[test]
fn spec_from_seconds_saturates_instead_of_wrapping() {
    let sp = WindowSpec::from_seconds(60, [600, u64::MAX], u64::MAX);
    assert_eq!((sp.bucket_ms, sp.sizes_ms.clone(), sp.lateness_ms), (60_000, vec![600_000, i64::MAX], i64::MAX));
    assert_eq!(sp.retention_ms(), i64::MAX);
    assert_eq!(WindowSpec::from_seconds(60, [600, 3600], 60), spec());
}

#[test]
fn a_bucket_with_its_start_takes_24_bytes_or_40_with_its_min_max_as_the_readme_counts() {
    use super::buckets::{Bucket, Buckets, MinMax};
    assert_eq!(std::mem::size_of::<(i64, Bucket)>(), 24);
    assert_eq!(std::mem::size_of::<(i64, Bucket, MinMax)>(), 40);
    assert!(std::mem::size_of::<Buckets>() <= 40);
}

/// A window whose valued events have all left offers no `avg` (as with every aggregate
/// kept), though events without a value remain; trimmed state keeps no min/max for it.
#[test]
fn avg_is_none_once_every_valued_event_left_the_window_without_min_or_max_kept() {
    let spec = WindowSpec::new(60_000, vec![120_000], 0).with_aggregates(&[COUNT | AVG], true);
    let mut st = EntityState::default();
    let mut out = vec![WindowAggs::default(); 1];
    let t0 = 1_700_000_000_000 - 1_700_000_000_000 % 60_000;
    for (dt, v) in [(0, Some(1.0)), (1_000, Some(2.0)), (60_000, None), (120_000, None), (190_000, None)] {
        st.apply_owned(&spec, t0 + dt, v, None, &mut out);
    }
    // At t0 + 190 s the window holds the buckets from t0 + 60 s on: three events, none valued.
    assert_eq!((out[0].count, out[0].avg(), out[0].min), (2, None, None));
    st.apply_owned(&spec, t0 + 200_000, Some(4.0), None, &mut out);
    st.apply_owned(&spec, t0 + 201_000, None, None, &mut out);
    // Before the event at 201 s: the 60, 120, 190 and 200 s events, one valued.
    assert_eq!((out[0].count, out[0].avg(), out[0].min), (4, Some(1.0), None));
}

#[test]
fn a_burst_of_distinct_values_gives_back_its_room_once_they_are_forgotten() {
    let spec = WindowSpec::new(60_000, vec![120_000], 0).with_aggregates(&[COUNT | DISTINCT], true);
    let mut st = EntityState::default();
    let mut out = vec![WindowAggs::default(); 1];
    let t0 = 1_700_000_000_000 - 1_700_000_000_000 % 60_000;
    for i in 0..500 {
        st.apply_owned(&spec, t0 + i, None, Some(&format!("m-{i}")), &mut out);
    }
    assert!(st.last_bucket.capacity() >= 500);
    // Past the horizon only the latest value is remembered: the table shrinks to fit.
    st.apply_owned(&spec, t0 + 600_000, None, Some("m-late"), &mut out);
    assert_eq!((out[0].count, st.last_bucket.len()), (0, 1));
    assert!(st.last_bucket.capacity() < 16, "capacity {}", st.last_bucket.capacity());
}
