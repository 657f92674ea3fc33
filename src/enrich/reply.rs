//! The script reply protocol: reading what `window.lua` answers for each group (online
//! features, then '=' / 'x' for a compare and set, or the state before the batch and one
//! status per event) into the batch's values, the feature cache and the state copies.

use super::cache::{CachedState, FeatureCache, StateCache, Tokens};
use super::plan::Group;
use super::window::{self, EntityState};
use super::{redis, BatchStats, EnrichError, Entity};

/// What reading a script reply needs besides the groups: where values, features and copies go.
pub(super) struct ReplyReader<'e> {
    pub(super) entities: &'e [Entity],
    pub(super) now: i64,
    pub(super) width: usize,
    pub(super) cache: Option<&'e mut FeatureCache>,
    pub(super) states: Option<&'e mut StateCache>,
    pub(super) tokens: &'e mut Tokens,
    pub(super) missing: &'e mut redis::MissingHashes,
}

impl ReplyReader<'_> {
    /// Reads one reply for `groups`, in order: values into `out`, online features into the
    /// cache, states into the copies. Returns the groups whose copy was stale, to send again.
    pub(super) fn reply<'a>(
        &mut self,
        groups: &mut [Group<'a>],
        reply: &[Vec<u8>],
        out: &mut [Option<f64>],
        stats: &mut BatchStats,
    ) -> Result<Vec<Group<'a>>, EnrichError> {
        let mut at = 0;
        let mut again = Vec::new();
        for g in groups.iter_mut() {
            let e = &self.entities[g.entity_idx];
            let rest = &reply[at.min(reply.len())..];
            let (used, stored) = parse_reply(g, e, rest, self.now, self.width, out, stats, self.states.as_deref_mut())?;
            // Features read and no `_ts`: no hash at the key (or one verdict cannot date).
            if !g.features.is_empty() && rest[g.features.len()].is_empty() {
                self.missing.note(g.entity_idx, g.id);
            }
            if let (Some(cache), false) = (self.cache.as_deref_mut(), g.features.is_empty()) {
                let values: super::cache::FeatureValues =
                    reply[at..at + g.features.len() + 1].iter().map(|v| number(v)).collect();
                cache.insert(g.key.clone(), values);
            }
            at += used;
            if !stored {
                again.push(g.retry(self.tokens.next()));
            }
        }
        if at != reply.len() {
            return Err(EnrichError::Protocol(format!("{} values in the reply, {at} expected", reply.len())));
        }
        Ok(again)
    }
}

pub(super) fn count(stats: &mut BatchStats, applied: bool, late: bool) {
    if applied {
        stats.applied += 1;
    } else if late {
        stats.late += 1;
    } else {
        stats.replayed += 1;
    }
}

/// Writes an event's session values (events, duration_s, since_start_s, distinct) at the
/// entity's session offset (after its sliding windows' values).
pub(super) fn write_session(slot: &mut [Option<f64>], s: &window::SessionSeen) {
    slot[0] = Some(s.events as f64);
    slot[1] = Some(s.duration_ms as f64 / 1000.0);
    slot[2] = Some(s.since_start_ms as f64 / 1000.0);
    slot[3] = Some(s.distinct as f64);
}

/// Writes one event's window values (each window's aggregates as `spec` offers them, then
/// since_last) at the entity's offset.
pub(super) fn write_seen(
    slot: &mut [Option<f64>],
    spec: &window::WindowSpec,
    windows: &[window::WindowAggs],
    since_last_ms: Option<i64>,
) {
    let mut i = 0;
    for (k, w) in windows.iter().enumerate() {
        let offered = spec.outputs(k);
        if offered == window::ALL {
            slot[i..i + 6].copy_from_slice(&[
                Some(w.count as f64),
                Some(w.sum),
                w.avg(),
                w.min,
                w.max,
                Some(w.distinct as f64),
            ]);
            i += 6;
            continue;
        }
        let values = [(window::COUNT, Some(w.count as f64)), (window::SUM, Some(w.sum)), (window::AVG, w.avg())];
        let rest = [(window::MIN, w.min), (window::MAX, w.max), (window::DISTINCT, Some(w.distinct as f64))];
        for (bit, v) in values.into_iter().chain(rest) {
            if offered & bit != 0 {
                slot[i] = v;
                i += 1;
            }
        }
    }
    if !windows.is_empty() {
        slot[i] = since_last_ms.map(|ms| ms as f64 / 1000.0);
    }
}

/// Writes a group's cached online features for each of its events.
pub(super) fn write_cached(g: &Group<'_>, e: &Entity, width: usize, out: &mut [Option<f64>]) {
    if let Some(values) = &g.cached {
        write_features(values, &g.events, e, width, out);
    }
}

/// Writes an entity's online features (then their age) for each of `events`.
pub(super) fn write_features(
    values: &[Option<f64>],
    events: &[usize],
    e: &Entity,
    width: usize,
    out: &mut [Option<f64>],
) {
    let first = e.first + e.cfg.state_width();
    for &ev in events {
        out[ev * width + first..ev * width + first + values.len()].copy_from_slice(values);
    }
}

/// A number in a script reply ('' or anything else: None).
pub(super) fn number(v: &[u8]) -> Option<f64> {
    std::str::from_utf8(v).ok().and_then(|s| s.parse::<f64>().ok())
}

/// One group's part of the script reply: its online features, then (with windows) '=' (the
/// compare and set was stored: the values are the ones verdict computed), 'x' (the state had
/// changed: nothing was applied, the group goes again without its copy), or its state before
/// the batch and one status per event, from which each event's window values are computed
/// here exactly as the in-process backend computes them. Returns the values used and whether
/// the group's window updates are done.
#[allow(clippy::too_many_arguments)]
fn parse_reply(
    g: &mut Group<'_>,
    e: &Entity,
    reply: &[Vec<u8>],
    now_ms: i64,
    width: usize,
    out: &mut [Option<f64>],
    stats: &mut BatchStats,
    states: Option<&mut StateCache>,
) -> Result<(usize, bool), EnrichError> {
    // Feature values plus their age, when the group asked for features.
    let nf = g.features.len() + usize::from(!g.features.is_empty());
    let short =
        |n: usize| EnrichError::Protocol(format!("entity {} {}: {} values, expected {n}", g.entity, g.id, reply.len()));
    if reply.len() < nf {
        return Err(short(nf));
    }
    let feature_first = e.first + e.cfg.state_width();
    if g.cached.is_some() {
        write_cached(g, e, width, out);
    } else {
        for &ev in &g.events {
            for (k, v) in reply[..nf].iter().enumerate() {
                out[ev * width + feature_first + k] = number(v);
            }
        }
    }
    if !g.windows {
        return Ok((nf, true));
    }
    if let Some(cas) = g.cas.take() {
        return match reply.get(nf).map(Vec::as_slice) {
            Some(b"=") => {
                for (seen, &ev) in cas.seen.iter().zip(&g.events) {
                    count(stats, seen.applied, seen.late);
                    write_seen(&mut out[ev * width + e.first..], &e.spec, &seen.windows, seen.since_last_ms);
                }
                stats.state_written += 1;
                if let Some(states) = states {
                    states.put(
                        g.key.clone(),
                        CachedState { state: cas.state, version: std::mem::take(&mut g.token), complete: cas.complete },
                    );
                }
                Ok((nf + 1, true))
            }
            Some(b"x") => {
                stats.state_conflicts += 1;
                g.stale = Some(cas.state);
                Ok((nf + 1, false))
            }
            _ => Err(EnrichError::Protocol(format!(
                "entity {} {}: no compare-and-set result in the reply",
                g.entity, g.id
            ))),
        };
    }
    let expected = nf + 1 + g.events.len();
    if reply.len() < expected {
        return Err(short(expected));
    }
    let blob = &reply[nf];
    let complete = blob.is_empty();
    let mut state =
        if blob.is_empty() { EntityState::default() } else { EntityState::from_msgpack(blob).map_err(protocol(g))? };
    for ((u, &ev), status) in g.updates.iter().zip(&g.events).zip(&reply[nf + 1..expected]) {
        let seen = state.follow(g.spec, u, status).map_err(protocol(g))?;
        count(stats, seen.applied, seen.late);
        write_seen(&mut out[ev * width + e.first..], &e.spec, &seen.windows, seen.since_last_ms);
    }
    if let Some(states) = states {
        // The script pushed the expiry back by the same rule.
        state.push_expiry(now_ms, g.spec.retention_ms());
        if let Some(old) = &g.stale {
            state.learn_distinct(old);
        }
        states.put(g.key.clone(), CachedState { state, version: std::mem::take(&mut g.token), complete });
    }
    Ok((expected, true))
}

fn protocol<'a, E: std::fmt::Display>(g: &'a Group<'_>) -> impl Fn(E) -> EnrichError + 'a {
    move |e| EnrichError::Protocol(format!("entity {} {}: {e}", g.entity, g.id))
}
