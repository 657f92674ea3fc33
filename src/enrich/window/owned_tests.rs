//! Partition-owned states: `apply_owned` agrees with `apply`, and deltas checkpoint a state
//! that `from_fields` rebuilds exactly, at a cost that follows what changed.

use std::collections::HashMap;

use proptest::prelude::*;

use super::props::{any_time, valid_spec, widths};
use super::*;

type Model = HashMap<Vec<u8>, Vec<u8>>;

/// A `b:` field's value: `count` events, no sum, no min/max, no distinct values.
fn bucket(count: u64) -> Vec<u8> {
    let mut v = count.to_le_bytes().to_vec();
    v.extend_from_slice(&[0; 32]);
    v.push(0);
    v
}

/// The `h:` field name of distinct value `v`.
fn h(v: &str) -> Vec<u8> {
    [&b"h:"[..], &value_key(v).to_be_bytes()].concat()
}

/// One event: time, value, distinct value.
type Event = (i64, Option<f64>, Option<String>);

/// One window's aggregates with its floats as bits.
type Bits = (u64, u64, Option<u64>, Option<u64>, u64);

/// Windows compared bit for bit (`-0.0` and `NaN` included).
fn bits(w: &[WindowAggs]) -> Vec<Bits> {
    w.iter().map(|a| (a.count, a.sum.to_bits(), a.min.map(f64::to_bits), a.max.map(f64::to_bits), a.distinct)).collect()
}

/// A spec in milliseconds small enough that random steps expire buckets and run late; half
/// of its windows offer every aggregate, the others some (their state trimmed to them).
fn small_spec() -> impl Strategy<Value = WindowSpec> {
    let offered = prop_oneof![Just(super::ALL), 1u8..=super::ALL];
    let windows = prop::collection::vec((1i64..=12, widths(), offered), 1..4);
    (prop_oneof![Just(1i64), Just(1_000), Just(7_000), Just(60_000)], windows, 0i64..=3).prop_map(|(b, ks, late)| {
        let widths: Vec<i64> = ks.iter().map(|&(_, m, _)| m as i64 * b).collect();
        let offered: Vec<u8> = ks.iter().map(|&(_, _, o)| o).collect();
        WindowSpec::with_widths(ks.iter().zip(&widths).map(|(&(k, _, _), &w)| k * w).collect(), &widths, late * b)
            .with_aggregates(&offered, true)
    })
}

/// Events that mostly move forward, sometimes back (out of order, some late), sometimes far
/// (expiring buckets); values with rounding (sum order shows), distinct values from a few.
fn walk(spec: &WindowSpec) -> impl Strategy<Value = Vec<Event>> {
    let b = spec.bucket_ms;
    let step = prop_oneof![6 => 0..=b, 2 => -5 * b..0, 1 => 5 * b..=30 * b];
    let value = prop::option::of((-1_000i32..1_000).prop_map(|v| f64::from(v) / 7.0));
    let distinct = prop::option::of("[a-f]{1,2}");
    prop::collection::vec((step, value, distinct), 1..120).prop_map(move |steps| {
        let mut t = 1_700_000_000_000i64;
        steps
            .into_iter()
            .map(|(dt, v, d)| {
                t += dt;
                (t, v, d)
            })
            .collect()
    })
}

fn spec_and_walk() -> impl Strategy<Value = (WindowSpec, Vec<Event>)> {
    small_spec().prop_flat_map(|s| (Just(s.clone()), walk(&s)))
}

/// Any valid spec with any times, values and values.
fn spec_and_wild_events() -> impl Strategy<Value = (WindowSpec, Vec<Event>)> {
    let event = (any_time(), prop::option::of(any::<f64>()), prop::option::of("[abc]"));
    (valid_spec(), prop::collection::vec(event, 1..40))
}

fn owned(st: &mut EntityState, spec: &WindowSpec, e: &Event) -> (OwnedSeen, Vec<WindowAggs>) {
    let mut out = vec![WindowAggs::default(); spec.sizes_ms.len()];
    let seen = st.apply_owned(spec, e.0, e.1, e.2.as_deref(), &mut out);
    (seen, out)
}

fn check_owned_matches_fenced(spec: &WindowSpec, events: &[Event]) -> Result<(), TestCaseError> {
    let (mut fenced, mut own) = (EntityState::default(), EntityState::default());
    for (offset, e) in events.iter().enumerate() {
        let u =
            Update { fence_key: "events/0", offset: offset as i64, time_ms: e.0, value: e.1, distinct: e.2.as_deref() };
        let want = fenced.apply(spec, &u);
        let (got, windows) = owned(&mut own, spec, e);
        prop_assert_eq!(bits(&windows), bits(&want.windows));
        prop_assert_eq!((got.since_last_ms, got.applied, got.late), (want.since_last_ms, want.applied, want.late));
    }
    prop_assert_eq!(own.totals().0, fenced.totals().0);
    prop_assert_eq!(own.totals().2, fenced.totals().2);
    Ok(())
}

/// Writes a delta into the model as Redis would (`HSET`, `HDEL`).
fn checkpoint(st: &mut EntityState, spec: &WindowSpec, delta: &mut Delta, model: &mut Model) {
    delta.clear();
    st.take_delta(spec, delta);
    assert!(!st.is_dirty());
    for f in &delta.del {
        model.remove(f);
    }
    for (f, v) in &delta.set {
        model.insert(f.clone(), v.clone());
    }
}

fn rebuild(spec: &WindowSpec, model: &Model) -> EntityState {
    EntityState::from_fields(spec, model.iter().map(|(f, v)| (f.as_slice(), v.as_slice()))).expect("own fields")
}

/// The model holds exactly the state's fields: nothing pruned or dropped lingers.
fn fields_of(st: &EntityState, spec: &WindowSpec) -> Vec<Vec<u8>> {
    let mut f: Vec<Vec<u8>> = st.buckets.iter().map(|(s, _)| format!("b:{s}").into_bytes()).collect();
    for (c, w) in st.coarse.iter().zip(spec.series[1..].iter().map(|s| s.width)) {
        f.extend(c.iter().map(|(s, _)| format!("b{w}:{s}").into_bytes()));
    }
    f.extend(st.last_bucket.keys().map(|&v| [&b"h:"[..], &v.to_be_bytes()].concat()));
    f.extend(st.newest_ms.map(|_| b"n".to_vec()));
    f.extend(st.track.width_stored.then(|| b"w".to_vec()));
    f.sort();
    f
}

fn check_round_trip(spec: &WindowSpec, events: &[Event], every: usize, resume: usize) -> Result<(), TestCaseError> {
    let (mut st, mut delta, mut model) = (EntityState::default(), Delta::default(), Model::new());
    let mut resumed: Option<EntityState> = None;
    for (i, e) in events.iter().enumerate() {
        let (seen, windows) = owned(&mut st, spec, e);
        if let Some(r) = resumed.as_mut() {
            let (rseen, rwindows) = owned(r, spec, e);
            prop_assert_eq!(rseen, seen);
            prop_assert_eq!(bits(&rwindows), bits(&windows));
        }
        if (i + 1) % every == 0 || i + 1 == events.len() {
            checkpoint(&mut st, spec, &mut delta, &mut model);
            let back = rebuild(spec, &model);
            prop_assert_eq!(&back, &st, "rebuilt after event {}", i);
            let mut keys: Vec<Vec<u8>> = model.keys().cloned().collect();
            keys.sort();
            prop_assert_eq!(keys, fields_of(&st, spec));
            if resumed.is_none() && i >= resume {
                resumed = Some(back);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn owned_apply_sees_and_applies_what_a_never_replayed_fenced_apply_does((spec, events) in spec_and_walk()) {
        check_owned_matches_fenced(&spec, &events)?;
    }

    #[test]
    fn owned_apply_matches_fenced_apply_for_any_time_and_valid_spec((spec, events) in spec_and_wild_events()) {
        check_owned_matches_fenced(&spec, &events)?;
    }

    #[test]
    fn a_state_rebuilt_from_its_deltas_is_the_state_and_goes_on_the_same(
        (spec, events) in spec_and_walk(),
        every in 1usize..8,
        resume in 0usize..100,
    ) {
        check_round_trip(&spec, &events, every, resume)?;
    }

    #[test]
    fn deltas_round_trip_for_any_time_and_valid_spec((spec, events) in spec_and_wild_events(), every in 1usize..5) {
        check_round_trip(&spec, &events, every, 0)?;
    }
}

#[test]
fn a_changed_entitys_list_is_reused_after_its_delta() {
    let spec = WindowSpec::new(60_000, vec![600_000], 60_000);
    let (mut st, mut delta) = (EntityState::default(), Delta::default());
    let mut out = [WindowAggs::default()];
    st.apply_owned(&spec, 61_000, Some(2.5), Some("m"), &mut out);
    let first = st.track.list_at().expect("a list of changes");
    st.take_delta(&spec, &mut delta);
    assert_eq!(st.track.list_at(), None, "handed back with the delta");
    // The next entity changed on this thread takes it: no allocation per changed entity.
    let mut other = EntityState::default();
    other.apply_owned(&spec, 121_000, Some(1.0), Some("n"), &mut out);
    assert_eq!(other.track.list_at(), Some(first));
    assert!(other.is_dirty());
}

#[test]
fn a_delta_is_exactly_the_changed_fields() {
    let spec = WindowSpec::new(60_000, vec![600_000], 60_000);
    let (mut st, mut delta) = (EntityState::default(), Delta::default());
    let mut out = [WindowAggs::default()];
    st.apply_owned(&spec, 61_000, Some(2.5), Some("m"), &mut out);
    st.apply_owned(&spec, 62_000, None, None, &mut out);
    assert!(st.is_dirty());
    st.take_delta(&spec, &mut delta);
    let mut bucket = Vec::new();
    bucket.extend_from_slice(&2u64.to_le_bytes());
    bucket.extend_from_slice(&2.5f64.to_bits().to_le_bytes());
    bucket.extend_from_slice(&2.5f64.to_bits().to_le_bytes());
    bucket.extend_from_slice(&2.5f64.to_bits().to_le_bytes());
    bucket.extend_from_slice(&1u64.to_le_bytes());
    bucket.push(1);
    let mut set = delta.set.clone();
    set.sort();
    assert_eq!(
        set,
        vec![
            (b"b:60000".to_vec(), bucket),
            (h("m"), b"60000".to_vec()),
            (b"n".to_vec(), b"62000".to_vec()),
            (b"w".to_vec(), b"60000".to_vec()),
        ]
    );
    assert!(delta.del.is_empty());
    // Nothing changed since: nothing to write.
    delta.clear();
    st.take_delta(&spec, &mut delta);
    assert!(delta.is_empty() && !st.is_dirty());
    // Far ahead: the old bucket and its value expire; a bucket without values has no min/max.
    st.apply_owned(&spec, 10_000_000, None, None, &mut out);
    st.take_delta(&spec, &mut delta);
    assert_eq!(delta.del, vec![b"b:60000".to_vec(), h("m")]);
    let b = &delta.set.iter().find(|(f, _)| f == b"b:9960000").expect("new bucket").1;
    assert_eq!((b.len(), b[0], b[40]), (41, 1, 0));
}

#[test]
fn one_event_on_a_long_history_writes_a_few_fields() {
    let day = 86_400_000;
    let spec = WindowSpec::new(60_000, vec![3_600_000, day], 60_000);
    let (mut st, mut delta) = (EntityState::default(), Delta::default());
    let mut out = [WindowAggs::default(); 2];
    let mut t = 0;
    for i in 0..30_000 {
        t = i * 4_000;
        st.apply_owned(&spec, t, Some(i as f64), Some(&format!("m{}", i % 3_000)), &mut out);
    }
    st.take_delta(&spec, &mut delta);
    assert!(delta.set.len() > 1_000, "the first delta holds the history");
    // Same bucket as the newest event, a value last seen long ago: the new bucket, the
    // value's old bucket, the value, the newest time.
    delta.clear();
    st.apply_owned(&spec, t + 1, Some(1.0), Some("m17"), &mut out);
    st.take_delta(&spec, &mut delta);
    assert_eq!((delta.set.len(), delta.del.len()), (4, 0), "{:?}", delta.set);
    // Into the next bucket: it expires the oldest bucket and its values, a bounded number.
    delta.clear();
    st.apply_owned(&spec, t + 60_000, None, None, &mut out);
    st.take_delta(&spec, &mut delta);
    assert!(delta.set.len() <= 2 && delta.del.len() <= 1 + 15, "{:?} {:?}", delta.set, delta.del);
}

#[test]
fn the_shared_path_tracks_nothing() {
    let spec = WindowSpec::new(60_000, vec![600_000], 60_000);
    let mut st = EntityState::default();
    st.apply(&spec, &Update { fence_key: "events/0", offset: 0, time_ms: 1, value: Some(1.0), distinct: Some("a") });
    let mut delta = Delta::default();
    st.take_delta(&spec, &mut delta);
    assert!(!st.is_dirty() && delta.is_empty());
}

#[test]
fn from_fields_sorts_buckets_ignores_strangers_and_expired_values_and_names_bad_fields() {
    let (b2, b1) = (bucket(2), bucket(1));
    let (x, gone) = (h("x"), h("gone"));
    let fields: Vec<(&[u8], &[u8])> =
        vec![(b"b:120", &b2), (b"zz", b"?"), (b"b:60", &b1), (&x, b"60"), (&gone, b"0"), (b"n", b"130")];
    let spec = WindowSpec::new(60, vec![600], 0);
    let st = EntityState::from_fields(&spec, fields).expect("valid");
    assert_eq!(st.buckets.iter().map(|(s, b)| (s, b.count())).collect::<Vec<_>>(), vec![(60, 1), (120, 2)]);
    assert_eq!((st.distinct_bucket("x"), st.distinct_bucket("gone"), st.newest_ms()), (Some(60), None, Some(130)));
    assert!(!st.is_dirty());
    for (f, v, named) in [
        (&b"b:60"[..], &b"short"[..], "b:"),
        (b"b:sixty", &b1, "b:"),
        (&x, b"later", "h:"),
        (b"h:0123", b"60", "h:"),
        (b"h:0123456789", b"60", "h:"),
        (b"d:x", b"later", "d:"),
        (b"d:\xff", b"60", "d:"),
        (b"n", b"", "n"),
    ] {
        let e = EntityState::from_fields(&spec, [(f, v)]).expect_err("malformed");
        assert!(matches!(e, StateError::Bad(s) if s.contains(named)), "{e}");
    }
}

#[test]
fn a_cleared_delta_reuses_its_buffers() {
    let spec = WindowSpec::new(1_000, vec![10_000], 0);
    let (mut st, mut delta) = (EntityState::default(), Delta::default());
    let mut out = [WindowAggs::default()];
    st.apply_owned(&spec, 5, Some(1.0), Some("v"), &mut out);
    st.take_delta(&spec, &mut delta);
    assert_eq!(delta.set.len(), 4, "the bucket, the value, the newest time, the width");
    delta.clear();
    assert_eq!((delta.set.len(), delta.spare.len()), (0, 8));
    st.apply_owned(&spec, 6, Some(1.0), Some("v"), &mut out);
    st.take_delta(&spec, &mut delta);
    assert_eq!((delta.set.len(), delta.spare.len()), (2, 4), "both fields took spare buffers");
}

#[test]
fn coarse_series_checkpoint_under_their_width_and_a_changed_width_is_not_loaded() {
    let spec = WindowSpec::with_widths(vec![600_000, 86_400_000], &[60_000, 3_600_000], 60_000);
    let (mut st, mut delta) = (EntityState::default(), Delta::default());
    let mut out = [WindowAggs::default(); 2];
    st.apply_owned(&spec, 3_661_000, Some(2.0), Some("m"), &mut out);
    st.take_delta(&spec, &mut delta);
    let mut names: Vec<&[u8]> = delta.set.iter().map(|(f, _)| f.as_slice()).collect();
    names.sort();
    assert_eq!(names, vec![&b"b3600000:3600000"[..], b"b:3660000", &h("m"), b"n", b"w"]);
    let back = EntityState::from_fields(&spec, delta.set.iter().map(|(f, v)| (f.as_slice(), v.as_slice())));
    assert_eq!(back.expect("own fields"), st);
    // Read under other widths (finest 30 s, the day in 2-hour buckets): no bucket and no
    // value is loaded, and the next delta deletes them and records the new width.
    let other = WindowSpec::with_widths(vec![600_000, 86_400_000], &[30_000, 7_200_000], 60_000);
    let fields = delta.set.clone();
    let mut back =
        EntityState::from_fields(&other, fields.iter().map(|(f, v)| (f.as_slice(), v.as_slice()))).expect("own fields");
    assert_eq!(back.aggregates(&other, 3_700_000), vec![WindowAggs::default(); 2]);
    assert_eq!(back.distinct_bucket("m"), None);
    delta.clear();
    back.take_delta(&other, &mut delta);
    let mut del = delta.del.clone();
    del.sort();
    assert_eq!(del, vec![b"b3600000:3600000".to_vec(), b"b:3660000".to_vec(), h("m")]);
    assert!(delta.set.iter().any(|(f, v)| f == b"w" && v == b"30000"), "{:?}", delta.set);
}

#[test]
fn a_field_set_again_under_a_new_width_is_not_deleted_with_the_stale_ones() {
    // Written under 60 s buckets, read under 30 s: bucket 3,660,000 is stale, then an event
    // lands in the 30 s bucket of that same start. The script deletes after it sets, so the
    // delta must not list the name as both.
    let (old, new) = (WindowSpec::new(60_000, vec![600_000], 0), WindowSpec::new(30_000, vec![600_000], 0));
    let (mut st, mut delta) = (EntityState::default(), Delta::default());
    let mut out = [WindowAggs::default()];
    st.apply_owned(&old, 3_661_000, Some(2.0), Some("m"), &mut out);
    st.take_delta(&old, &mut delta);
    let fields = delta.set.clone();
    let mut back =
        EntityState::from_fields(&new, fields.iter().map(|(f, v)| (f.as_slice(), v.as_slice()))).expect("own fields");
    back.apply_owned(&new, 3_662_000, Some(5.0), Some("m"), &mut out);
    delta.clear();
    back.take_delta(&new, &mut delta);
    let set: Vec<&[u8]> = delta.set.iter().map(|(f, _)| f.as_slice()).collect();
    assert!(set.contains(&&b"b:3660000"[..]) && set.contains(&h("m").as_slice()), "{set:?}");
    assert!(delta.del.iter().all(|d| !set.contains(&d.as_slice())), "set {set:?}, deleted {:?}", delta.del);
}

#[test]
fn an_earlier_versions_value_fields_are_read_and_rewritten_under_their_key() {
    // `d:<value>` fields (before values were held as keys): read, then the next delta
    // deletes every one of them and writes the values still held as `h:` fields. A value
    // under both names keeps its later bucket.
    let (b1, b2) = (bucket(1), bucket(2));
    let y = h("y");
    let fields: Vec<(&[u8], &[u8])> = vec![
        (b"w", b"60"),
        (b"b:60", &b1),
        (b"b:120", &b2),
        (b"d:x", b"60"),
        (b"d:gone", b"0"),
        (b"d:y", b"60"),
        (&y, b"120"),
    ];
    let spec = WindowSpec::new(60, vec![600], 0);
    let mut st = EntityState::from_fields(&spec, fields).expect("valid");
    assert_eq!(
        (st.distinct_bucket("x"), st.distinct_bucket("y"), st.distinct_bucket("gone")),
        (Some(60), Some(120), None)
    );
    assert!(st.is_dirty(), "the old fields are to be replaced");
    let mut delta = Delta::default();
    st.take_delta(&spec, &mut delta);
    let mut del = delta.del.clone();
    del.sort();
    assert_eq!(del, vec![b"d:gone".to_vec(), b"d:x".to_vec(), b"d:y".to_vec()]);
    let mut set = delta.set.clone();
    set.sort();
    let mut want = vec![(h("x"), b"60".to_vec()), (h("y"), b"120".to_vec())];
    want.sort();
    assert_eq!(set, want);
    // Read back from what is stored after that delta: the same state, nothing pending.
    let mut stored: Model = fields_map(&[(b"w", b"60"), (b"b:60", &b1), (b"b:120", &b2), (&y, b"120")]);
    for (f, v) in &delta.set {
        stored.insert(f.clone(), v.clone());
    }
    let back = rebuild(&spec, &stored);
    assert!(!back.is_dirty());
    assert_eq!((back.distinct_bucket("x"), back.distinct_bucket("y")), (Some(60), Some(120)));
}

fn fields_map(fields: &[(&[u8], &[u8])]) -> Model {
    fields.iter().map(|&(f, v)| (f.to_vec(), v.to_vec())).collect()
}
