//! What the enricher keeps between batches: its copies of Redis window states
//! ([`CachedState`], for compare-and-set writes), the online features it read (with a
//! time to live), both in a two-generation bounded map; and the version tokens that name
//! each write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compact_str::CompactString;

use super::window::EntityState;

/// An entity in verdict's caches: (configured entity index, id). Ids of up to 24 bytes are
/// held inline (no allocation per key).
pub(super) type EntityKey = (usize, CompactString);

/// An entity's online feature values as read (its features in config order, then `_ts`), in
/// one allocation shared by the events of a batch and the cache.
pub(super) type FeatureValues = Arc<[Option<f64>]>;

/// Version tokens: this process's random prefix and a counter, so a token names one write
/// by one writer (a compare and set must not mistake another instance's write for its own).
pub(super) struct Tokens {
    prefix: u64,
    next: u64,
}

impl Tokens {
    pub(super) fn new() -> Self {
        Self { prefix: rand::random::<u64>(), next: 0 }
    }

    pub(super) fn next(&mut self) -> String {
        self.next += 1;
        format!("{:016x}{:x}", self.prefix, self.next)
    }
}

/// Verdict's copy of an entity's window state in Redis and the version it has there.
pub(super) struct CachedState {
    pub(super) state: EntityState,
    pub(super) version: String,
    /// The copy knows every distinct value of the entity (it was new when first read), so a
    /// value it does not know has never been seen. Otherwise a batch with a value the copy
    /// does not know is applied by the script, which reports the value's bucket.
    pub(super) complete: bool,
}

/// A bounded map used only inside the turnstile (one batch at a time, so no lock): two
/// generations. A lookup moves an entry into the current generation; when that holds half
/// the capacity, the previous one (everything not used since) is dropped. Cheaper than a
/// concurrent cache on this path, where every entity of every batch is looked up.
pub(super) struct Generations<V> {
    current: HashMap<EntityKey, V>,
    previous: HashMap<EntityKey, V>,
    half: usize,
    /// The thread freeing the last dropped generation: joined before the next one, and on drop.
    freeing: Option<std::thread::JoinHandle<()>>,
}

impl<V: Send + 'static> Generations<V> {
    pub(super) fn new(capacity: u64) -> Self {
        Self { current: HashMap::new(), previous: HashMap::new(), half: (capacity as usize / 2).max(1), freeing: None }
    }

    /// Removes and returns the entry.
    pub(super) fn take(&mut self, key: &EntityKey) -> Option<V> {
        self.current.remove(key).or_else(|| self.previous.remove(key))
    }

    /// The entry, moved into the current generation.
    pub(super) fn get(&mut self, key: &EntityKey) -> Option<&V> {
        if !self.current.contains_key(key) {
            let v = self.previous.remove(key)?;
            self.put(key.clone(), v);
        }
        self.current.get(key)
    }

    pub(super) fn put(&mut self, key: EntityKey, value: V) {
        if self.current.len() >= self.half && !self.current.contains_key(&key) {
            self.turn();
        }
        self.previous.remove(&key);
        self.current.insert(key, value);
    }

    /// Drops the previous generation (everything not used since the last turn); the current
    /// one becomes the previous.
    fn turn(&mut self) {
        let dropped = std::mem::replace(&mut self.previous, std::mem::take(&mut self.current));
        if dropped.len() > 1000 {
            // Freeing tens of thousands of states takes milliseconds: not in the turnstile.
            // (If no thread can be started, `dropped` is freed here.)
            let _ = self.freeing.take().map(std::thread::JoinHandle::join);
            self.freeing = std::thread::Builder::new().spawn(move || drop(dropped)).ok();
        }
    }

    /// Entries held in both generations.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

impl<V> Drop for Generations<V> {
    fn drop(&mut self) {
        let _ = self.freeing.take().map(std::thread::JoinHandle::join);
    }
}

/// Verdict's copies of window states.
pub(super) type StateCache = Generations<CachedState>;

/// A [`FeatureCache`] shared by the workers' feature readers (locked once per batch for its
/// lookups and once for what it read).
pub(super) type SharedFeatureCache = Arc<parking_lot::Mutex<FeatureCache>>;

/// Online feature vectors read from Redis, with when they were read: used for `ttl`.
///
/// The generations also turn every `ttl`: what the dropped generation holds was read at
/// least one `ttl` ago (a lookup moves an entry without renewing it), so only expired
/// entries go, and the cache holds what was read in the last two `ttl`s, not
/// `cache_capacity` entries that mostly expired (issue 24: ~12 MiB at 50,000 cards, where
/// a card's events came further apart than the 1 s default).
pub(super) struct FeatureCache {
    map: Generations<(Instant, FeatureValues)>,
    ttl: Duration,
    /// When the generations last turned for age.
    turned: Instant,
}

impl FeatureCache {
    /// At most `capacity` entries, each served for `ttl` after it was read.
    pub(super) fn new(capacity: u64, ttl: Duration) -> Self {
        Self { map: Generations::new(capacity), ttl, turned: Instant::now() }
    }

    /// A cache to share (`enrich.cache_capacity` entries, `enrich.cache_ttl_ms`).
    pub(super) fn shared(capacity: u64, ttl_ms: u64) -> SharedFeatureCache {
        Arc::new(parking_lot::Mutex::new(Self::new(capacity, Duration::from_millis(ttl_ms.max(1)))))
    }

    pub(super) fn get(&mut self, key: &EntityKey) -> Option<FeatureValues> {
        let ttl = self.ttl;
        self.map.get(key).filter(|(at, _)| at.elapsed() < ttl).map(|(_, v)| v.clone())
    }

    pub(super) fn insert(&mut self, key: EntityKey, values: FeatureValues) {
        let now = Instant::now();
        if now.duration_since(self.turned) >= self.ttl {
            self.map.turn();
            self.turned = now;
        }
        self.map.put(key, (now, values));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> EntityKey {
        (0, compact_str::format_compact!("card-{i}"))
    }

    #[test]
    fn the_generational_cache_stays_bounded_and_keeps_what_is_used() {
        let mut c: Generations<usize> = Generations::new(10);
        for i in 0..6 {
            c.put(key(i), i); // the sixth turns the first five into the previous generation
        }
        assert_eq!(c.get(&key(0)), Some(&0), "moved back into the current generation");
        for i in 6..12 {
            c.put(key(i), i);
            assert!(c.current.len() + c.previous.len() <= 10);
        }
        assert_eq!(c.get(&key(0)), Some(&0), "used since the last turnover: kept");
        assert_eq!(c.get(&key(1)), None, "not used for two turnovers: dropped");
        assert_eq!(c.take(&key(11)), Some(11));
        assert_eq!(c.take(&key(11)), None);
    }

    #[test]
    fn cached_features_expire_after_their_ttl() {
        let mut c = FeatureCache::new(100, Duration::from_millis(50));
        c.insert(key(1), Arc::from(vec![Some(1.0), None]));
        assert_eq!(c.get(&key(1)).as_deref(), Some(&[Some(1.0), None][..]));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(&key(1)), None);
    }

    #[test]
    fn the_feature_cache_lets_go_of_expired_entries_and_keeps_live_ones() {
        let ttl = Duration::from_millis(40);
        let mut c = FeatureCache::new(1_000_000, ttl);
        for i in 0..500 {
            c.insert(key(i), Arc::from(vec![Some(i as f64)]));
        }
        std::thread::sleep(ttl + Duration::from_millis(5));
        c.insert(key(1000), Arc::from(vec![None])); // turns: the 500 are the previous generation
        assert_eq!(c.map.len(), 501, "nothing dropped at the first turn");
        std::thread::sleep(ttl + Duration::from_millis(5));
        c.insert(key(1001), Arc::from(vec![None])); // turns again: the 500, all expired, go
        assert_eq!(c.map.len(), 2, "far under the capacity: only what was read in the last two ttls");
        assert_eq!(c.get(&key(1000)), None, "expired (read over one ttl ago), though still held");
        assert_eq!(c.get(&key(1001)).as_deref(), Some(&[None][..]), "read just now: served");
    }

    #[test]
    fn version_tokens_are_unique_per_writer_and_write() {
        let (mut a, mut b) = (Tokens::new(), Tokens::new());
        let ta: Vec<String> = (0..3).map(|_| a.next()).collect();
        let tb = b.next();
        assert!(ta[0] != ta[1] && ta[1] != ta[2]);
        assert!(!ta.contains(&tb), "another instance's first write is not ours");
    }
}
