//! Property tests of the window code: any i64 time and any spec config validation allows
//! never panics, and for times in 2000..2100 the windows agree with a direct count.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

/// A spec as `enrich` config validation allows it: bucket > 0, each size a positive
/// multiple of the bucket, any lateness (all in seconds, as u64).
pub(super) fn valid_spec() -> impl Strategy<Value = WindowSpec> {
    let bucket = prop_oneof![1u64..=3_600, 1u64..=u64::MAX, Just(u64::MAX), Just(i64::MAX as u64 / 1000 + 1)];
    (bucket, prop_oneof![0u64..=86_400, any::<u64>()])
        .prop_flat_map(|(bucket_s, lateness_s)| {
            let most = u64::MAX / bucket_s;
            (Just(bucket_s), prop::collection::vec(prop_oneof![1..=most.min(48), 1..=most], 1..4), Just(lateness_s))
        })
        .prop_map(|(bucket_s, ks, lateness_s)| {
            WindowSpec::from_seconds(bucket_s, ks.into_iter().map(|k| k * bucket_s), lateness_s)
        })
}

/// A window's width in buckets of the finest width: any two of these divide (config
/// validation requires every width to be a multiple of the finest).
pub(super) fn widths() -> impl Strategy<Value = u64> {
    prop_oneof![3 => Just(1u64), 1 => Just(2), 1 => Just(4), 1 => Just(12)]
}

pub(super) fn any_time() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(0i64),
        any::<i64>(),
        i64::MIN..i64::MIN + 100_000_000,
        i64::MAX - 100_000_000..=i64::MAX,
        -100_000_000i64..100_000_000,
    ]
}

fn update<'a>(offset: i64, t: i64, value: Option<f64>, distinct: Option<&'a str>) -> Update<'a> {
    Update { fence_key: if offset % 3 == 0 { "events/0" } else { "events/1" }, offset, time_ms: t, value, distinct }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn window_code_never_panics_on_any_time_or_valid_spec(
        spec in valid_spec(),
        events in prop::collection::vec(
            (any_time(), any::<i64>(), prop::option::of(any::<f64>()), prop::option::of("[abc]")),
            1..40,
        ),
    ) {
        let mut state = EntityState::default();
        let mut blob = Vec::new();
        for (t, offset, value, distinct) in &events {
            let u = update(*offset, *t, *value, distinct.as_deref());
            let mut follower = state.clone();
            let seen = state.apply(&spec, &u);
            prop_assert_eq!(seen.windows.len(), spec.sizes_ms.len());
            // The Redis path follows the script's answer; the same answer must be accepted.
            let status: &[u8] = if seen.applied { b"a" } else if seen.late { b"l" } else { b"r" };
            prop_assert!(follower.follow(&spec, &u, status).is_ok());
            state.aggregates(&spec, *t);
            state.push_expiry(*t, spec.retention_ms());
            blob.clear();
            state.to_msgpack(&mut blob);
            let back = EntityState::from_msgpack(&blob);
            prop_assert!(back.is_ok(), "{:?}", back);
        }
        prop_assert!(spec.retention_ms() > 0);
    }

    #[test]
    fn windows_agree_with_a_direct_count_for_times_in_this_century(
        bucket_s in 1u64..=3_600,
        ks in prop::collection::vec((1u64..=48, widths()), 1..4),
        lateness_s in 0u64..=7_200,
        t0 in 946_684_800_000i64..4_102_444_800_000,
        events in prop::collection::vec((0i64..2 * 86_400_000, -1_000i32..1_000, prop::option::of("[a-e]")), 1..60),
    ) {
        // Each window its own width (a multiple of the finest: 1, 2, 4 or 12 buckets).
        let widths: Vec<i64> = ks.iter().map(|&(_, m)| (m * bucket_s * 1000) as i64).collect();
        let sizes: Vec<i64> = ks.iter().zip(&widths).map(|(&(k, _), &w)| k as i64 * w).collect();
        let spec = WindowSpec::with_widths(sizes, &widths, lateness_s as i64 * 1000);
        let mut state = EntityState::default();
        let mut applied: Vec<(i64, f64, Option<&str>)> = Vec::new();
        let mut newest: Option<i64> = None;
        for (offset, (dt, v, d)) in events.iter().enumerate() {
            let (t, v) = (t0 + dt, f64::from(*v));
            let seen = state.apply(&spec, &update(offset as i64 * 3, t, Some(v), d.as_deref()));
            let late = newest.is_some_and(|n| t < n - spec.lateness_ms);
            prop_assert_eq!((seen.late, seen.applied), (late, !late));
            prop_assert_eq!(seen.since_last_ms, newest.map(|n| (t - n).max(0)));
            if late {
                continue;
            }
            for ((size, got), &b) in spec.sizes_ms.iter().zip(&seen.windows).zip(&widths) {
                // An event is in the window when its bucket [s, s + B) overlaps (t - size, t].
                let within = |tj: i64| {
                    let s = tj.div_euclid(b) * b;
                    s + b > t - size && s <= t
                };
                let inside: Vec<f64> = applied.iter().filter(|e| within(e.0)).map(|e| e.1).collect();
                // A value counts where its latest applied event's bucket is.
                let mut latest: HashMap<&str, i64> = HashMap::new();
                for (tj, _, d) in &applied {
                    if let Some(d) = d {
                        let l = latest.entry(d).or_insert(*tj);
                        *l = (*l).max(*tj);
                    }
                }
                let distinct = latest.values().filter(|&&tj| within(tj)).count() as u64;
                prop_assert_eq!(got.distinct, distinct, "distinct, window of {} in {} ms buckets", size, b);
                prop_assert_eq!(got.count, inside.len() as u64);
                prop_assert_eq!(got.sum, inside.iter().sum::<f64>());
                prop_assert_eq!(got.min, inside.iter().copied().reduce(f64::min));
                prop_assert_eq!(got.max, inside.iter().copied().reduce(f64::max));
            }
            applied.push((t, v, d.as_deref()));
            newest = Some(newest.map_or(t, |n| n.max(t)));
        }
    }

    #[test]
    fn running_aggregates_equal_the_walk_bit_for_bit(
        bucket_s in 1u64..=600,
        ks in prop::collection::vec((1u64..=30, widths()), 1..4),
        lateness_s in 0u64..=1_800,
        events in prop::collection::vec(
            (
                0i64..6 * 3_600_000,
                prop_oneof![
                    4 => (-1e6f64..1e6).prop_map(Some),
                    1 => prop_oneof![Just(1e288), Just(-1e288), Just(1e-300), Just(0.1)].prop_map(Some),
                    1 => Just(None),
                ],
                prop::option::of("[a-e]"),
            ),
            1..200,
        ),
    ) {
        // Mostly in order, every seventh event back in time; values as the decoder passes
        // them (finite, within ±WINDOW_VALUE_LIMIT); windows of several widths.
        let widths: Vec<i64> = ks.iter().map(|&(_, m)| (m * bucket_s * 1000) as i64).collect();
        let sizes: Vec<i64> = ks.iter().zip(&widths).map(|(&(k, _), &w)| k as i64 * w).collect();
        let spec = WindowSpec::with_widths(sizes, &widths, lateness_s as i64 * 1000);
        let mut owned = EntityState::default();
        let mut shared = EntityState::default();
        let mut running = vec![WindowAggs::default(); spec.sizes_ms.len()];
        let mut walked = running.clone();
        let mut t = 1_700_000_000_000i64;
        for (i, (dt, value, distinct)) in events.iter().enumerate() {
            t = if i % 7 == 6 { t - dt / 50 } else { t + dt / 20 };
            owned.aggregates_into(&spec, t, &mut walked);
            owned.apply_owned(&spec, t, *value, distinct.as_deref(), &mut running);
            let seen = shared.apply(&spec, &update(i as i64 * 3, t, *value, distinct.as_deref()));
            let bits = |w: &[WindowAggs]| -> Vec<[u64; 5]> {
                let opt = |x: Option<f64>| x.map_or(u64::MAX - 1, f64::to_bits);
                w.iter().map(|a| [a.count, a.sum.to_bits(), opt(a.min), opt(a.max), a.distinct]).collect()
            };
            prop_assert_eq!(bits(&running), bits(&walked), "event {} at {}", i, t);
            prop_assert_eq!(bits(&seen.windows), bits(&walked), "event {} at {} (fenced path)", i, t);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A partition-owned entity whose windows offer only some aggregates keeps less state
    /// (distinct values only as long as the windows that count them need, min/max only
    /// where read), and what it offers is what the whole state gives, bit for bit, for
    /// every event within the allowed lateness.
    #[test]
    fn windows_that_offer_fewer_aggregates_give_the_same_values(
        bucket_s in 1u64..=600,
        ks in prop::collection::vec((1u64..=30, widths(), 1u8..=ALL), 1..4),
        lateness_s in 0u64..=1_800,
        events in prop::collection::vec(
            (
                0i64..3_600_000,
                prop_oneof![1 => (-1e6f64..1e6).prop_map(Some), 2 => Just(None)],
                prop::option::of("[a-h]"),
            ),
            1..300,
        ),
    ) {
        let widths: Vec<i64> = ks.iter().map(|&(_, m, _)| (m * bucket_s * 1000) as i64).collect();
        let sizes: Vec<i64> = ks.iter().zip(&widths).map(|(&(k, _, _), &w)| k as i64 * w).collect();
        let offered: Vec<u8> = ks.iter().map(|&(_, _, o)| o).collect();
        let full = WindowSpec::with_widths(sizes.clone(), &widths, lateness_s as i64 * 1000);
        let trimmed = full.clone().with_aggregates(&offered, true);
        let (mut whole, mut lean) = (EntityState::default(), EntityState::default());
        let mut want = vec![WindowAggs::default(); sizes.len()];
        let mut got = want.clone();
        let mut t = 1_700_000_000_000i64;
        for (i, (dt, value, distinct)) in events.iter().enumerate() {
            // Mostly forward, every fifth event back (some beyond the lateness).
            t = if i % 5 == 4 { t - dt / 4 } else { t + dt / 10 };
            let seen = whole.apply_owned(&full, t, *value, distinct.as_deref(), &mut want);
            lean.apply_owned(&trimmed, t, *value, distinct.as_deref(), &mut got);
            if seen.late {
                continue;
            }
            for (k, (w, g)) in want.iter().zip(&got).enumerate() {
                let o = offered[k];
                let bits = |x: Option<f64>| x.map(f64::to_bits);
                if o & COUNT != 0 { prop_assert_eq!(w.count, g.count, "count, event {}", i); }
                if o & SUM != 0 { prop_assert_eq!(w.sum.to_bits(), g.sum.to_bits(), "sum, event {}", i); }
                if o & AVG != 0 { prop_assert_eq!(bits(w.avg()), bits(g.avg()), "avg, event {}", i); }
                if o & MIN != 0 { prop_assert_eq!(bits(w.min), bits(g.min), "min, event {}", i); }
                if o & MAX != 0 { prop_assert_eq!(bits(w.max), bits(g.max), "max, event {}", i); }
                if o & DISTINCT != 0 { prop_assert_eq!(w.distinct, g.distinct, "distinct, event {}", i); }
            }
        }
        // Never more distinct values remembered than the whole state.
        prop_assert!(lean.last_bucket.len() <= whole.last_bucket.len());
    }
}
