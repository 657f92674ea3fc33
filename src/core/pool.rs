//! Emptied vectors (and other reusable items, such as a batch's delivery counter) handed back
//! by the thread that read them to the thread that fills them, so a per-batch list keeps its
//! allocation from batch to batch (issue 23: no heap allocation per event or per batch in
//! steady state).

use std::sync::{Arc, Mutex};

/// A bounded pool of emptied `Vec<T>`s ([`Pool`]'s methods for vectors: `take`, `give`).
pub type VecPool<T> = Pool<Vec<T>>;

impl<T> Pool<Vec<T>> {
    /// The largest capacity (in entries) a kept vector may have.
    pub const MAX_LEN: usize = 65_536;

    /// An empty vector with room for `capacity` entries: a kept one when there is one.
    pub fn take(&self, capacity: usize) -> Vec<T> {
        let mut v = self.get();
        v.reserve(capacity);
        v
    }

    /// As [`VecPool::take`], but never waits: while another thread holds the pool, a new
    /// vector (the consume thread never waits for a worker).
    pub fn try_take(&self, capacity: usize) -> Vec<T> {
        let kept = match self.0.try_lock() {
            Ok(mut kept) => kept.pop(),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().pop(),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        let mut v = kept.unwrap_or_default();
        v.reserve(capacity);
        v
    }

    /// `v` is read: emptied and kept for a later [`VecPool::take`] (unless the pool is full
    /// or `v` is very large).
    pub fn give(&self, mut v: Vec<T>) {
        v.clear();
        if v.capacity() == 0 || v.capacity() > Self::MAX_LEN {
            return;
        }
        self.put(v);
    }
}

/// A bounded pool of reusable items (such as a batch's delivery counter, or emptied
/// vectors); clones share it.
pub struct Pool<T>(Arc<Mutex<Vec<T>>>);

impl<T> Clone for Pool<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Vec::new())))
    }
}

impl<T> std::fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self.0.lock().map_or(0, |k| k.len());
        f.debug_struct("Pool").field("kept", &kept).finish()
    }
}

impl<T: Default> Pool<T> {
    /// The most items the pool keeps; more are dropped.
    pub const MAX_KEPT: usize = 64;

    /// A kept item, or a new one.
    pub fn get(&self) -> T {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default()
    }

    /// Keeps `item` (ready for reuse) for a later [`Pool::get`], unless the pool is full.
    pub fn put(&self, item: T) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < Self::MAX_KEPT {
            kept.push(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_given_back_is_taken_again_with_its_allocation() {
        let pool: VecPool<u64> = VecPool::default();
        let mut v = pool.take(100);
        v.extend(0..100);
        let at = v.as_ptr();
        pool.clone().give(v);
        let again = pool.take(50);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), at, "the same allocation");
        let fresh = pool.try_take(10);
        assert!(fresh.capacity() >= 10, "none kept: a new one");
    }

    #[test]
    fn the_pool_keeps_a_bounded_number() {
        let pool: VecPool<u8> = VecPool::default();
        for _ in 0..VecPool::<u8>::MAX_KEPT + 10 {
            pool.give(Vec::with_capacity(8));
        }
        pool.give(Vec::with_capacity(VecPool::<u8>::MAX_LEN + 1));
        assert_eq!(pool.0.lock().unwrap().len(), VecPool::<u8>::MAX_KEPT);
    }

    #[test]
    fn an_item_given_back_is_taken_again_and_the_pool_is_bounded() {
        let pool: Pool<Box<u64>> = Pool::default();
        let item = Box::new(7);
        let at: *const u64 = &*item;
        pool.put(item);
        let again = pool.get();
        assert_eq!((*again, &*again as *const u64), (7, at), "the same item");
        assert_eq!(*pool.get(), 0, "none kept: a new one");
        for _ in 0..Pool::<Box<u64>>::MAX_KEPT + 10 {
            pool.put(Box::new(1));
        }
        assert_eq!(pool.0.lock().unwrap().len(), Pool::<Box<u64>>::MAX_KEPT);
    }
}
