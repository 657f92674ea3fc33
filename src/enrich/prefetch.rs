//! The online-feature read overlapped with other work: the Enrich stage sends a batch's
//! feature read, applies the partition-owned windows while the reply travels, then takes
//! the reply. The worker's CPU work and Redis's round trip no longer add up.

use super::plan::group;
use super::reply::{write_cached, ReplyReader};
use super::{BatchStats, EnrichError, Enricher, Request, Store};

impl Enricher {
    /// [`Enricher::enrich_into`], running `meanwhile` (taken: at most once) while the
    /// online-feature read is in flight. Only an enricher that reads features alone from
    /// Redis overlaps (the owned setup's `Part::Features`); any other runs `meanwhile`
    /// first and then [`Enricher::enrich_into`].
    pub fn enrich_around<F: FnOnce()>(
        &mut self,
        reqs: &[Request<'_>],
        out: &mut [Option<f64>],
        meanwhile: &mut Option<F>,
    ) -> Result<BatchStats, EnrichError> {
        let run = |m: &mut Option<F>| {
            if let Some(f) = m.take() {
                f()
            }
        };
        let width = self.names.len();
        let part = self.part;
        let overlaps = matches!(self.store, Store::Redis(_)) && !self.entities.is_empty() && !reqs.is_empty();
        let mut groups = if overlaps { group(&self.entities, reqs) } else { Vec::new() };
        groups.retain_mut(|g| {
            let (served, windows) = part.serves(&self.entities[g.entity_idx].cfg);
            g.windows &= windows;
            served && (g.windows || !g.features.is_empty())
        });
        if !overlaps || groups.iter().any(|g| g.windows) {
            drop(groups);
            run(meanwhile);
            return self.enrich_into(reqs, out);
        }
        let mut stats = BatchStats::default();
        if let Some(cache) = &mut self.cache {
            for g in groups.iter_mut() {
                match cache.get(&g.key) {
                    Some(v) => {
                        g.cached = Some(v);
                        g.features = &[];
                        stats.cache_hits += 1;
                    }
                    None => stats.cache_misses += 1,
                }
            }
        }
        let (mut ask, local): (Vec<_>, Vec<_>) = groups.into_iter().partition(|g| !g.features.is_empty());
        for g in &local {
            write_cached(g, &self.entities[g.entity_idx], width, out);
        }
        let Store::Redis(store) = &mut self.store else { unreachable!("checked above") };
        if ask.is_empty() {
            run(meanwhile);
            return Ok(stats);
        }
        let now = crate::core::clock::wall_clock_ms();
        let flight = store.send(&ask, now, self.per_group);
        run(meanwhile);
        let reply = store.receive(flight)?;
        stats.round_trips = 1;
        stats.commands = if self.per_group { ask.len() as u64 } else { 1 };
        self.missing.clear();
        let mut read = ReplyReader {
            entities: &self.entities,
            now,
            width,
            cache: self.cache.as_mut(),
            states: self.states.as_mut(),
            tokens: &mut self.tokens,
            missing: &mut self.missing,
        };
        let again = read.reply(&mut ask, &reply, out, &mut stats)?;
        read.missing.report(&ask);
        debug_assert!(again.is_empty(), "a features-only read has no state to store again");
        Ok(stats)
    }
}
