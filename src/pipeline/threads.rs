//! Every thread the pipeline starts, owned: started through one function (named, with a
//! sentinel that fails `/healthz` when a thread ends while the pipeline runs), kept by
//! handle, and joined on shutdown and abort within the deadline. A thread that does not end
//! in time is named in a log line.
//!
//! Each thread ends through its input channel closing or through a token of the
//! cancellation tree ([`Control`]):
//!
//! ```text
//! abort ─┬─ stop ──── watchdog, rules watcher, model watcher, cost meter
//!        ├─ late ──── drift publisher, label joiner   (cancelled once the workers have ended)
//!        └─ (itself)  scored-event writer             (else ends when the workers' sinks drop)
//! consume: stop / abort;  workers: batch channel closes;  acker: completed channel closes;
//! offsets: the acker's channel closes
//! ```

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::consume::{Control, Exit};
use crate::telemetry::Metrics;

/// How long threads that outlived the shutdown deadline get to end once aborted.
const ABORT_GRACE: Duration = Duration::from_secs(2);

/// A pipeline thread could not be started.
#[derive(Debug, thiserror::Error)]
#[error("starting thread {thread}: {source}")]
pub struct SpawnError {
    /// The thread's name.
    pub thread: String,
    /// Why the OS refused it.
    #[source]
    pub source: std::io::Error,
}

/// A named thread's handle.
type Owned = (String, JoinHandle<()>);

/// The pipeline's threads, in the order a graceful stop joins them.
pub(super) struct Threads {
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    late: CancellationToken,
    consume: Option<JoinHandle<Exit>>,
    workers: Vec<Owned>,
    /// The acker, then the offset thread behind it.
    ackers: Vec<Owned>,
    watchers: Vec<Owned>,
    last: Vec<Owned>,
}

/// Which token a side thread stops by.
#[derive(Debug, Clone, Copy)]
pub(super) enum Ends {
    /// A child of `stop`: the watchers.
    OnStop,
    /// Cancelled once the workers have ended: threads that sum up what the workers did.
    AfterWorkers,
    /// A child of `abort` only: the thread ends by itself once the workers have ended.
    OnAbort,
}

impl Threads {
    pub(super) fn new(control: Arc<Control>, metrics: Arc<Metrics>) -> Self {
        let late = control.abort_token().child_token();
        Self {
            control,
            metrics,
            late,
            consume: None,
            workers: Vec::new(),
            ackers: Vec::new(),
            watchers: Vec::new(),
            last: Vec::new(),
        }
    }

    /// The pipeline's cancellation tree.
    pub(super) fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// The pipeline's metrics.
    pub(super) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Starts the consume loop.
    pub(super) fn consume(&mut self, f: impl FnOnce() -> Exit + Send + 'static) -> Result<(), SpawnError> {
        self.consume = Some(self.spawn("verdict-consume", f)?);
        Ok(())
    }

    /// Starts a worker (ends when the batch channel closes).
    pub(super) fn worker(&mut self, name: String, f: impl FnOnce() + Send + 'static) -> Result<(), SpawnError> {
        let h = self.spawn(&name, f)?;
        self.workers.push((name, h));
        Ok(())
    }

    /// Starts the acker (ends when every worker has ended) or the offset thread behind it
    /// (ends when the acker has ended); joined in the order started.
    pub(super) fn acker(&mut self, name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), SpawnError> {
        let h = self.spawn(name, f)?;
        self.ackers.push((name.to_string(), h));
        Ok(())
    }

    /// Starts a side thread that runs until its token (see [`Ends`]) is cancelled.
    pub(super) fn side(
        &mut self,
        name: &str,
        ends: Ends,
        f: impl FnOnce(CancellationToken) + Send + 'static,
    ) -> Result<(), SpawnError> {
        let token = match ends {
            Ends::OnStop => self.control.stop_token().child_token(),
            Ends::AfterWorkers => self.late.child_token(),
            Ends::OnAbort => self.control.abort_token().child_token(),
        };
        let h = self.spawn(name, move || f(token))?;
        match ends {
            Ends::OnStop => self.watchers.push((name.to_string(), h)),
            Ends::AfterWorkers | Ends::OnAbort => self.last.push((name.to_string(), h)),
        }
        Ok(())
    }

    /// Whether any thread is still owned (not yet joined or given up on).
    pub(super) fn any(&self) -> bool {
        self.consume.is_some() || !self.workers.is_empty() || !self.ackers.is_empty() || !self.all_side().is_empty()
    }

    fn all_side(&self) -> Vec<&str> {
        self.watchers.iter().chain(&self.last).map(|(n, _)| n.as_str()).collect()
    }

    /// Graceful stop: stop fetching, then join in pipeline order: consume (flushes its partial
    /// batch), workers, acker, watchers; then the threads that sum up the workers' output.
    /// True if the consume loop drained and it, the workers and the acker ended by
    /// `deadline`. Threads that did not end by then are aborted and given a short grace.
    pub(super) fn drain(&mut self, deadline: Instant) -> bool {
        self.control.stop();
        let mut overdue = Vec::new();
        let mut clean = match self.consume.take().map(|h| join_until(h, deadline)) {
            Some(Ok(exit)) => exit == Some(Exit::Drain),
            Some(Err(h)) => {
                tracing::warn!(thread = "verdict-consume", "thread did not end by the deadline");
                overdue.push(("verdict-consume".to_string(), Waiting::Consume(h)));
                false
            }
            None => true,
        };
        let main: Vec<Owned> =
            std::mem::take(&mut self.workers).into_iter().chain(std::mem::take(&mut self.ackers)).collect();
        for (name, h) in main {
            clean &= join_named(name, h, deadline, &mut overdue);
        }
        for (name, h) in std::mem::take(&mut self.watchers) {
            join_named(name, h, deadline, &mut overdue);
        }
        // The last (partial) drift window, after every worker has observed its batches.
        self.late.cancel();
        for (name, h) in std::mem::take(&mut self.last) {
            join_named(name, h, deadline, &mut overdue);
        }
        if !overdue.is_empty() {
            self.control.abort();
            join_overdue(overdue);
        }
        clean
    }

    /// Crash-like stop: abort, then join every thread by `deadline`.
    pub(super) fn abort(&mut self, deadline: Instant) {
        self.control.abort();
        let mut overdue = Vec::new();
        if let Some(h) = self.consume.take() {
            if join_until(h, deadline).is_err() {
                tracing::warn!(thread = "verdict-consume", "thread did not end by the deadline");
            }
        }
        let all: Vec<Owned> = std::mem::take(&mut self.workers)
            .into_iter()
            .chain(std::mem::take(&mut self.ackers))
            .chain(std::mem::take(&mut self.watchers))
            .chain(std::mem::take(&mut self.last))
            .collect();
        for (name, h) in all {
            join_named(name, h, deadline, &mut overdue);
        }
    }

    /// Starts a named pipeline thread. If it ends while the pipeline is neither stopping nor
    /// aborting (it panicked, or returned early), the pipeline is marked failed: `/healthz`
    /// answers 503 and `verdict run` exits non-zero.
    fn spawn<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<JoinHandle<T>, SpawnError> {
        struct Sentinel(String, Arc<Control>, Arc<Metrics>);
        impl Drop for Sentinel {
            fn drop(&mut self) {
                if !self.1.stopping() {
                    let how = if std::thread::panicking() { "panicked" } else { "ended" };
                    self.2.guards.fail(format!("thread {} {how} while the pipeline was running", self.0));
                }
            }
        }
        let sentinel = Sentinel(name.to_string(), self.control.clone(), self.metrics.clone());
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let _sentinel = sentinel;
                f()
            })
            .map_err(|source| SpawnError { thread: name.to_string(), source })
    }
}

impl Drop for Threads {
    /// Start-up failed half way, or the pipeline was dropped: nothing is left running.
    fn drop(&mut self) {
        if self.any() {
            self.abort(Instant::now() + Duration::from_secs(10));
        }
    }
}

/// A thread that outlived the deadline.
enum Waiting {
    Consume(JoinHandle<Exit>),
    Other(JoinHandle<()>),
}

/// Joins `h` by `deadline`; true if it ended. Else logs its name and keeps it in `overdue`.
fn join_named(name: String, h: JoinHandle<()>, deadline: Instant, overdue: &mut Vec<(String, Waiting)>) -> bool {
    match join_until(h, deadline) {
        Ok(ended) => ended.is_some(),
        Err(h) => {
            tracing::warn!(thread = %name, "thread did not end by the deadline");
            overdue.push((name, Waiting::Other(h)));
            false
        }
    }
}

/// After the deadline and the abort: a short grace, then whatever has not ended is named.
fn join_overdue(overdue: Vec<(String, Waiting)>) {
    let grace = Instant::now() + ABORT_GRACE;
    for (name, w) in overdue {
        let ended = match w {
            Waiting::Consume(h) => join_until(h, grace).is_ok(),
            Waiting::Other(h) => join_until(h, grace).is_ok(),
        };
        if !ended {
            tracing::warn!(thread = %name, "thread did not end after abort; left behind");
        }
    }
}

/// Waits for `handle` until `deadline`: Ok(its result, None if it panicked), or the handle
/// back if it is still running.
fn join_until<T>(handle: JoinHandle<T>, deadline: Instant) -> Result<Option<T>, JoinHandle<T>> {
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return Err(handle);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(handle.join().ok())
}
