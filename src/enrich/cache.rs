//! What the enricher keeps between batches: its copies of Redis window states
//! ([`CachedState`], for compare-and-set writes), the online features it read (with a
//! time to live), both in a two-generation bounded map; and the version tokens that name
//! each write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::window::EntityState;

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
    current: HashMap<(usize, String), V>,
    previous: HashMap<(usize, String), V>,
    half: usize,
    /// The thread freeing the last dropped generation: joined before the next one, and on drop.
    freeing: Option<std::thread::JoinHandle<()>>,
}

impl<V: Send + 'static> Generations<V> {
    pub(super) fn new(capacity: u64) -> Self {
        Self { current: HashMap::new(), previous: HashMap::new(), half: (capacity as usize / 2).max(1), freeing: None }
    }

    /// Removes and returns the entry.
    pub(super) fn take(&mut self, key: &(usize, String)) -> Option<V> {
        self.current.remove(key).or_else(|| self.previous.remove(key))
    }

    /// The entry, moved into the current generation.
    pub(super) fn get(&mut self, key: &(usize, String)) -> Option<&V> {
        if !self.current.contains_key(key) {
            let v = self.previous.remove(key)?;
            self.put(key.clone(), v);
        }
        self.current.get(key)
    }

    pub(super) fn put(&mut self, key: (usize, String), value: V) {
        if self.current.len() >= self.half && !self.current.contains_key(&key) {
            let dropped = std::mem::replace(&mut self.previous, std::mem::take(&mut self.current));
            if dropped.len() > 1000 {
                // Freeing tens of thousands of states takes milliseconds: not in the turnstile.
                // (If no thread can be started, `dropped` is freed here.)
                let _ = self.freeing.take().map(std::thread::JoinHandle::join);
                self.freeing = std::thread::Builder::new().spawn(move || drop(dropped)).ok();
            }
        }
        self.previous.remove(&key);
        self.current.insert(key, value);
    }
}

impl<V> Drop for Generations<V> {
    fn drop(&mut self) {
        let _ = self.freeing.take().map(std::thread::JoinHandle::join);
    }
}

/// Verdict's copies of window states.
pub(super) type StateCache = Generations<CachedState>;

/// Online feature vectors read from Redis, with when they were read: used for `ttl`.
pub(super) struct FeatureCache {
    pub(super) map: Generations<(std::time::Instant, Arc<Vec<Option<f64>>>)>,
    pub(super) ttl: Duration,
}

impl FeatureCache {
    pub(super) fn get(&mut self, key: &(usize, String)) -> Option<Arc<Vec<Option<f64>>>> {
        let ttl = self.ttl;
        self.map.get(key).filter(|(at, _)| at.elapsed() < ttl).map(|(_, v)| v.clone())
    }

    pub(super) fn insert(&mut self, key: (usize, String), values: Arc<Vec<Option<f64>>>) {
        self.map.put(key, (std::time::Instant::now(), values));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> (usize, String) {
        (0, format!("card-{i}"))
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
        let mut c = FeatureCache { map: Generations::new(100), ttl: Duration::from_millis(50) };
        c.insert(key(1), Arc::new(vec![Some(1.0), None]));
        assert_eq!(c.get(&key(1)).as_deref(), Some(&vec![Some(1.0), None]));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(&key(1)), None);
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
