//! Session windows of a partition-owned entity: its activity since its current session
//! started, where a session ends after an inactivity gap of event time.
//!
//! Semantics, shared with `ops/model/features.py`:
//!
//! * An event at `t` continues the entity's session when `t <= last + gap` (`last`: the
//!   latest event time of the session; an event older than `last`, within the allowed
//!   lateness, continues it too); otherwise it opens a new one.
//! * It sees the session **before** itself: events so far, duration (`last - start`), time
//!   since the start (`max(t - start, 0)`) and distinct values of the entity's
//!   `distinct_field` (at most `max_distinct`); an event that opens a session sees zeros.
//! * Then it is applied (unless later than the allowed lateness, as for sliding windows):
//!   `start = min(start, t)`, `last = max(last, t)`, one more event, its value added to the
//!   distinct set while the set holds fewer than `max_distinct` values.
//!
//! Replays restart from a checkpoint of this state (field `s` of the entity's hash,
//! `delta.rs`), so a replayed event sees what it saw the first time.

use std::collections::HashSet;

use compact_str::CompactString;

use super::EntityState;

/// A session window's parameters, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSpec {
    /// Inactivity gap that ends a session.
    pub gap_ms: i64,
    /// Distinct values a session counts at most.
    pub max_distinct: usize,
}

/// What an event saw of its session, before itself (zeros when it opens one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionSeen {
    /// Events in the session so far.
    pub events: u64,
    /// Time from the session's first to its latest event (ms).
    pub duration_ms: i64,
    /// Time from the session's first event to this one (ms, at least 0).
    pub since_start_ms: i64,
    /// Distinct values in the session (at most `max_distinct`).
    pub distinct: u64,
}

/// An entity's current session.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Session {
    /// Earliest event time of the session (ms).
    pub(super) start: i64,
    /// Latest event time of the session (ms).
    pub(super) last: i64,
    /// Events applied to it.
    pub(super) events: u64,
    /// Its distinct values (up to the spec's `max_distinct`).
    pub(super) values: HashSet<CompactString>,
}

impl Session {
    /// Whether an event at `t` belongs to this session.
    fn continues(&self, spec: &SessionSpec, t: i64) -> bool {
        t <= self.last.saturating_add(spec.gap_ms)
    }
}

impl EntityState {
    /// What an event at `t` sees of its session (the state is not changed).
    pub fn session_seen(&self, spec: &SessionSpec, t: i64) -> SessionSeen {
        match &self.session {
            Some(s) if s.continues(spec, t) => SessionSeen {
                events: s.events,
                duration_ms: s.last.saturating_sub(s.start),
                since_start_ms: t.saturating_sub(s.start).max(0),
                distinct: s.values.len() as u64,
            },
            _ => SessionSeen::default(),
        }
    }

    /// Applies an event at `t` (neither late nor replayed) to the session, opening a new
    /// one after the gap.
    pub(super) fn session_add(&mut self, spec: &SessionSpec, t: i64, distinct: Option<&str>) {
        match &mut self.session {
            Some(s) if s.continues(spec, t) => {
                s.start = s.start.min(t);
                s.last = s.last.max(t);
                s.events += 1;
            }
            Some(s) => {
                s.values.clear();
                let values = std::mem::take(&mut s.values);
                **s = Session { start: t, last: t, events: 1, values };
            }
            none => *none = Some(Box::new(Session { start: t, last: t, events: 1, values: Default::default() })),
        }
        let s = self.session.as_mut().expect("set above");
        if let Some(d) = distinct.filter(|d| !d.is_empty()) {
            if s.values.len() < spec.max_distinct && !s.values.contains(d) {
                s.values.insert(CompactString::from(d));
            }
        }
        self.track.session_changed();
    }

    /// The session's bytes for a checkpoint: start, last, events (i64, i64, u64, little
    /// endian), then each value as a u32 length (little endian) and its bytes.
    pub(super) fn encode_session(&self, out: &mut Vec<u8>) -> bool {
        let Some(s) = &self.session else { return false };
        out.extend_from_slice(&s.start.to_le_bytes());
        out.extend_from_slice(&s.last.to_le_bytes());
        out.extend_from_slice(&s.events.to_le_bytes());
        for v in &s.values {
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        true
    }
}

/// A session from [`EntityState::encode_session`]'s bytes (None: malformed).
pub(super) fn decode_session(v: &[u8]) -> Option<Session> {
    let word = |i: usize| -> Option<[u8; 8]> { v.get(i * 8..i * 8 + 8)?.try_into().ok() };
    let (start, last, events) =
        (i64::from_le_bytes(word(0)?), i64::from_le_bytes(word(1)?), u64::from_le_bytes(word(2)?));
    let mut values = HashSet::new();
    let mut rest = &v[24..];
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let value = std::str::from_utf8(rest.get(4..4 + len)?).ok()?;
        values.insert(CompactString::from(value));
        rest = &rest[4 + len..];
    }
    Some(Session { start, last, events, values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::window::{Delta, WindowAggs, WindowSpec};

    fn spec() -> WindowSpec {
        WindowSpec::new(60_000, vec![600_000], 60_000).with_session(SessionSpec { gap_ms: 1_800_000, max_distinct: 3 })
    }

    fn apply(st: &mut EntityState, sp: &WindowSpec, t: i64, d: &str) -> SessionSeen {
        let mut out = vec![WindowAggs::default(); sp.sizes_ms.len()];
        st.apply_owned(sp, t, Some(1.0), Some(d), &mut out).session
    }

    #[test]
    fn a_session_counts_its_events_until_the_gap_then_restarts() {
        let sp = spec();
        let mut st = EntityState::default();
        assert_eq!(apply(&mut st, &sp, 1_000_000, "a"), SessionSeen::default());
        let s = apply(&mut st, &sp, 1_060_000, "b");
        assert_eq!(s, SessionSeen { events: 1, duration_ms: 0, since_start_ms: 60_000, distinct: 1 });
        let s = apply(&mut st, &sp, 1_120_000, "a");
        assert_eq!(s, SessionSeen { events: 2, duration_ms: 60_000, since_start_ms: 120_000, distinct: 2 });
        // Exactly the gap after the latest event: the same session.
        let s = apply(&mut st, &sp, 1_120_000 + 1_800_000, "c");
        assert_eq!(s.events, 3);
        // One millisecond past the gap: a new session, which sees nothing.
        let t = 1_120_000 + 3_600_001;
        assert_eq!(apply(&mut st, &sp, t, "d"), SessionSeen::default());
        let s = apply(&mut st, &sp, t + 5_000, "d");
        assert_eq!(s, SessionSeen { events: 1, duration_ms: 0, since_start_ms: 5_000, distinct: 1 });
    }

    #[test]
    fn out_of_order_events_join_the_session_and_late_ones_are_not_applied() {
        let sp = spec();
        let mut st = EntityState::default();
        apply(&mut st, &sp, 10_000_000, "a");
        apply(&mut st, &sp, 10_030_000, "b");
        // 30 s before the start (60 s before the newest: inside the lateness): joins, moves the start back.
        let s = apply(&mut st, &sp, 9_970_000, "c");
        assert_eq!((s.events, s.since_start_ms), (2, 0));
        let s = apply(&mut st, &sp, 10_030_000, "a");
        assert_eq!(s, SessionSeen { events: 3, duration_ms: 60_000, since_start_ms: 60_000, distinct: 3 });
        // Later than the lateness: sees the session, is not applied.
        let s = apply(&mut st, &sp, 9_000_000, "z");
        assert_eq!(s.events, 4);
        assert_eq!(st.session_seen(sp.session.as_ref().unwrap(), 10_030_000).events, 4);
    }

    #[test]
    fn distinct_values_stop_at_the_cap() {
        let sp = spec();
        let mut st = EntityState::default();
        for (i, v) in ["a", "b", "a", "c", "d", "e"].iter().enumerate() {
            apply(&mut st, &sp, 1_000 * i as i64, v);
        }
        assert_eq!(st.session_seen(sp.session.as_ref().unwrap(), 10_000).distinct, 3);
    }

    #[test]
    fn a_checkpointed_session_is_read_back_equal() {
        let sp = spec();
        let mut st = EntityState::default();
        let mut hash = std::collections::BTreeMap::<Vec<u8>, Vec<u8>>::new();
        let mut delta = Delta::default();
        for (i, v) in ["p1", "p2", "p1", "p3"].iter().enumerate() {
            apply(&mut st, &sp, 5_000_000 + 20_000 * i as i64, v);
            if i % 2 == 1 {
                delta.clear();
                st.take_delta(&sp, &mut delta);
                for (k, v) in &delta.set {
                    hash.insert(k.clone(), v.clone());
                }
                for k in &delta.del {
                    hash.remove(k);
                }
            }
        }
        assert!(hash.contains_key(&b"s"[..]));
        let mut back = EntityState::from_fields(&sp, hash.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))).unwrap();
        let t = 5_200_000;
        assert_eq!(
            back.session_seen(sp.session.as_ref().unwrap(), t),
            st.session_seen(sp.session.as_ref().unwrap(), t)
        );
        assert_eq!(apply(&mut back, &sp, t, "p4"), apply(&mut st, &sp, t, "p4"));
        assert!(decode_session(b"short").is_none());
        let mut bytes = Vec::new();
        st.encode_session(&mut bytes);
        bytes.push(9);
        assert!(decode_session(&bytes).is_none(), "a truncated value is refused");
    }
}
