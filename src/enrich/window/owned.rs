//! Events applied to a partition-owned state: the partition's own worker holds the state and
//! replays restart from a checkpoint of it, so there is no fence, and nothing is allocated
//! per event (a distinct value's key once, the first time the entity sees it).

use super::{EntityState, SessionSeen, WindowAggs, WindowSpec};

/// What an event saw of a partition-owned state and what happened to it; its windows go to
/// the caller's buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnedSeen {
    /// Time since the entity's newest applied event (ms), None if it has none.
    pub since_last_ms: Option<i64>,
    /// Applied now (false for late events).
    pub applied: bool,
    /// Dropped as later than the allowed lateness.
    pub late: bool,
    /// Its session before it (zeros without a session window).
    pub session: SessionSeen,
}

impl EntityState {
    /// Writes the aggregates before the event into `out` (one per window of `spec`, so as
    /// long as `spec.sizes_ms`), then applies the event unless it is late, recording what
    /// changed for the next [`EntityState::take_delta`]. The same semantics as
    /// [`EntityState::apply`] without a fence.
    pub fn apply_owned(
        &mut self,
        spec: &WindowSpec,
        time_ms: i64,
        value: Option<f64>,
        distinct: Option<&str>,
        out: &mut [WindowAggs],
    ) -> OwnedSeen {
        self.track.start();
        self.aggregates_running(spec, time_ms, out);
        let since_last_ms = self.since_last(time_ms);
        let late = self.is_late(spec, time_ms);
        let session = spec.session.map(|s| self.session_seen(&s, time_ms)).unwrap_or_default();
        if !late {
            self.add(spec, time_ms, value, distinct, None);
            if let Some(s) = &spec.session {
                self.session_add(s, time_ms, distinct);
            }
        }
        OwnedSeen { since_last_ms, applied: !late, late, session }
    }
}
