//! The shared path's side of a state: following the Redis script's answers, the key's
//! expiry, and distinct values learnt from an older copy.

use super::{EntityState, Seen, StateError, Update, WindowSpec};

impl EntityState {
    /// After a batch changed the state at `now_ms`: whether the Redis key's expiry is due to
    /// be pushed back (as `window.lua` decides it: a tenth of `ttl_ms` since the last push),
    /// recording the push.
    pub fn push_expiry(&mut self, now_ms: i64, ttl_ms: i64) -> bool {
        let due = self.expiry_pushed_ms.is_none_or(|x| now_ms.saturating_sub(x) > ttl_ms / 10);
        if due {
            self.expiry_pushed_ms = Some(now_ms);
        }
        due
    }

    /// Adds the distinct values `older` knew of and this state does not, as long as their
    /// bucket is still here. A copy's values are assumptions the store checks before it
    /// stores a compare and set, so stale ones only cost a conflict.
    pub fn learn_distinct(&mut self, older: &EntityState) {
        for (&v, &bucket) in &older.last_bucket {
            if self.buckets.contains(bucket) && !self.last_bucket.contains_key(&v) {
                self.values_floor.0 = self.values_floor.0.min(bucket);
                self.track.value_changed(v);
                self.last_bucket.insert(v, bucket);
            }
        }
    }

    /// Follows an event the Redis script already fenced and applied: `status` is its reply
    /// for the event (`r` replayed, `l` late, `a` applied, `a<ms>` applied and its distinct
    /// value's previous bucket). Returns what the event saw, computed exactly as [`apply`]
    /// does; a status this state disagrees with is an error.
    ///
    /// [`apply`]: EntityState::apply
    pub fn follow(&mut self, spec: &WindowSpec, u: &Update<'_>, status: &[u8]) -> Result<Seen, StateError> {
        let prior = match status {
            [b'a'] => None,
            [b'a', rest @ ..] => Some(
                std::str::from_utf8(rest)
                    .ok()
                    .and_then(|r| r.parse::<i64>().ok())
                    .ok_or_else(|| StateError::Status(String::from_utf8_lossy(status).into_owned()))?,
            ),
            _ => None,
        };
        let seen = self.apply_inner(spec, u, Some(prior));
        let expected: &[u8] = if seen.applied {
            b"a"
        } else if seen.late {
            b"l"
        } else {
            b"r"
        };
        if status.first() != expected.first() {
            return Err(StateError::Disagrees {
                offset: u.offset,
                fence_key: u.fence_key.to_string(),
                store: String::from_utf8_lossy(status).into_owned(),
                ours: String::from_utf8_lossy(expected).into_owned(),
            });
        }
        Ok(seen)
    }
}
