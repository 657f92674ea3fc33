//! The root of the pipeline's cancellation tree ([`Control`]): what the pipeline's owner
//! cancels to stop or abort, and what every thread looks at.

use tokio_util::sync::CancellationToken;

/// The root of the pipeline's cancellation tree, shared between its owner and its threads:
/// `abort` (crash-like: drop work, store nothing more) with its child `stop` (stop fetching
/// and drain). Aborting also stops; stopping does not abort. The pipeline hangs a child
/// token off these for each thread that is not told to end by its input channel closing.
#[derive(Debug)]
pub struct Control {
    abort: CancellationToken,
    stop: CancellationToken,
}

impl Default for Control {
    fn default() -> Self {
        let abort = CancellationToken::new();
        Self { stop: abort.child_token(), abort }
    }
}

impl Control {
    /// Whether the pipeline is aborting (crash-like stop: drop work, store nothing more).
    pub fn aborted(&self) -> bool {
        self.abort.is_cancelled()
    }

    /// Whether the pipeline is stopping (gracefully or not).
    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Stop fetching and drain.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Stop at once without storing anything further (also stops).
    pub fn abort(&self) {
        self.abort.cancel();
    }

    /// The root token: cancelled on abort.
    pub fn abort_token(&self) -> &CancellationToken {
        &self.abort
    }

    /// Cancelled on stop and on abort.
    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }
}

#[cfg(test)]
mod tests {
    use super::Control;

    #[test]
    fn aborting_also_stops_and_stopping_does_not_abort() {
        let c = Control::default();
        let watcher = c.stop_token().child_token();
        c.stop();
        assert!(c.stopping() && !c.aborted() && watcher.is_cancelled());
        let c = Control::default();
        let watcher = c.stop_token().child_token();
        c.abort();
        assert!(c.stopping() && c.aborted() && watcher.is_cancelled());
    }
}
