//! Delivery accounting per batch: one counter for all of a batch's output records, counted
//! down by librdkafka's delivery reports on the producer's polling thread (the publish
//! stage's producer context, `publish::delivery`); the acker waits for it to reach zero (one
//! wake-up per batch, not one future and one wake-up per record). Failed records are kept,
//! with their bytes, for the acker to re-send or dead-letter. Here because the staged batch
//! carries it from the publish stage to the acker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::util::IntoOpaque;

/// A record the broker did not take: the error and the record, to re-send or dead-letter.
pub type Failed = (KafkaError, OwnedMessage);

/// The outputs of one batch in flight. Cloning shares the count.
#[derive(Clone, Default)]
pub struct Deliveries(Arc<Count>);

/// Outstanding records, the failures reported so far, and the acker's wake-up.
#[derive(Default)]
pub struct Count {
    outstanding: AtomicUsize,
    failed: Mutex<Vec<Failed>>,
    lock: Mutex<()>,
    zero: Condvar,
}

/// How a wait for a batch's deliveries ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited {
    /// Every record has its delivery report.
    Done,
    /// Some records are still in flight after the timeout.
    Pending,
}

impl Deliveries {
    /// Records sent so far that have no delivery report yet.
    pub fn outstanding(&self) -> usize {
        self.0.outstanding.load(Ordering::Acquire)
    }

    /// Waits up to `timeout` for every record's delivery report.
    pub fn wait(&self, timeout: Duration) -> Waited {
        let c = &self.0;
        let mut guard = c.lock.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = std::time::Instant::now() + timeout;
        while c.outstanding.load(Ordering::Acquire) > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Waited::Pending;
            }
            guard = c.zero.wait_timeout(guard, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        Waited::Done
    }

    /// The records reported as failed so far (taken: each is handed out once).
    pub fn take_failed(&self) -> Vec<Failed> {
        std::mem::take(&mut *self.0.failed.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether a new batch can count in this: nothing else holds it (every delivery report
    /// has let go of it) and it counts nothing outstanding or failed.
    pub fn is_clean(&mut self) -> bool {
        Arc::get_mut(&mut self.0).is_some_and(|c| {
            *c.outstanding.get_mut() == 0 && c.failed.get_mut().unwrap_or_else(|p| p.into_inner()).is_empty()
        })
    }

    /// Counts a record about to be sent and returns its delivery opaque.
    pub fn add(&self) -> Opaque {
        self.0.outstanding.fetch_add(1, Ordering::AcqRel);
        Opaque(Some(self.0.clone()))
    }
}

impl Count {
    /// A record's delivery report: a failure is kept, then the count goes down; the waiter
    /// is woken when it reaches zero.
    pub fn report(&self, failed: Option<Failed>) {
        if let Some(f) = failed {
            self.failed.lock().unwrap_or_else(|p| p.into_inner()).push(f);
        }
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.zero.notify_all();
        }
    }
}

/// A record's delivery opaque: the batch it counts in, or nothing (records nobody waits
/// for, such as drift statistics). Carried through librdkafka as a raw `Arc` pointer.
pub struct Opaque(Option<Arc<Count>>);

impl Opaque {
    /// The batch count the record is counted in (None: nobody waits for it).
    pub fn into_count(self) -> Option<Arc<Count>> {
        self.0
    }

    /// For a record nobody waits for.
    pub fn none() -> Self {
        Opaque(None)
    }

    /// The send failed: the record is not in flight, so it is not counted.
    pub fn unsent(self) {
        if let Some(c) = self.0 {
            c.outstanding.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl IntoOpaque for Opaque {
    fn into_ptr(self) -> *mut std::ffi::c_void {
        match self.0 {
            Some(c) => Arc::into_raw(c) as *mut std::ffi::c_void,
            None => std::ptr::null_mut(),
        }
    }

    unsafe fn from_ptr(ptr: *mut std::ffi::c_void) -> Self {
        if ptr.is_null() {
            Opaque(None)
        } else {
            // SAFETY: a non-null pointer came from `into_ptr` above (librdkafka hands each
            // record's opaque back exactly once, or to `from_ptr` when a send fails).
            Opaque(Some(unsafe { Arc::from_raw(ptr as *const Count) }))
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::Message;

    use super::*;

    #[test]
    fn the_count_reaches_zero_once_every_record_is_reported_and_failures_are_kept() {
        let d = Deliveries::default();
        let (a, b, c) = (d.add(), d.add(), d.add());
        assert_eq!(d.outstanding(), 3);
        c.unsent();
        assert_eq!(d.outstanding(), 2);
        assert_eq!(d.wait(Duration::from_millis(10)), Waited::Pending);
        let waiter = {
            let d = d.clone();
            std::thread::spawn(move || d.wait(Duration::from_secs(10)))
        };
        // Round trip through the raw pointer, as librdkafka carries it.
        let a = unsafe { Opaque::from_ptr(a.into_ptr()) };
        a.into_count().expect("counted").report(None);
        let msg = OwnedMessage::new(None, None, "t".into(), rdkafka::Timestamp::NotAvailable, 0, 7, None);
        b.into_count().expect("counted").report(Some((KafkaError::Canceled, msg)));
        assert_eq!(waiter.join().expect("waiter"), Waited::Done);
        let failed = d.take_failed();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].1.offset(), 7);
        assert!(d.take_failed().is_empty(), "handed out once");
        assert!(unsafe { Opaque::from_ptr(Opaque::none().into_ptr()) }.into_count().is_none());
    }
}
