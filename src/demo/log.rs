//! The demo's log goes to a file, so the terminal shows the progress lines and the summary
//! only (a cold demo stream makes the drift monitor warn about velocity features, which
//! interleaved with the progress lines made them unreadable); warnings are counted for the
//! summary.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::{fmt, EnvFilter};

/// The demo's log file and the number of warnings (and errors) written to it.
pub struct DemoLog {
    path: PathBuf,
    warnings: Arc<AtomicU64>,
}

impl DemoLog {
    /// Sends this process's log to `path` (truncated) in `format` (`pretty` or `json`),
    /// filtered by `RUST_LOG` if set, else by `filter`.
    pub fn init(path: &Path, format: &str, filter: &str) -> std::io::Result<Self> {
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_string());
        let (log, subscriber) = Self::open(path, format, &filter)?;
        // A subscriber already set (a test harness) keeps its own; nothing to undo.
        let _ = tracing::subscriber::set_global_default(subscriber);
        Ok(log)
    }

    /// The log and its subscriber, not yet installed.
    fn open(path: &Path, format: &str, filter: &str) -> std::io::Result<(Self, Box<dyn Subscriber + Send + Sync>)> {
        let file = Mutex::new(File::create(path)?);
        let warnings = Arc::new(AtomicU64::new(0));
        let registry =
            tracing_subscriber::registry().with(EnvFilter::new(filter)).with(CountWarnings(warnings.clone()));
        let subscriber: Box<dyn Subscriber + Send + Sync> = if format == "json" {
            Box::new(registry.with(fmt::layer().json().with_writer(file)))
        } else {
            Box::new(registry.with(fmt::layer().with_ansi(false).with_writer(file)))
        };
        Ok((Self { path: path.to_path_buf(), warnings }, subscriber))
    }

    /// The file the log goes to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Warnings and errors logged so far.
    pub fn warnings(&self) -> u64 {
        self.warnings.load(Ordering::Relaxed)
    }
}

/// Counts the WARN and ERROR events that pass the filter.
struct CountWarnings(Arc<AtomicU64>);

impl<S: Subscriber> Layer<S> for CountWarnings {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if matches!(*event.metadata().level(), Level::WARN | Level::ERROR) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_go_to_the_file_and_are_counted_info_is_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo.log");
        let (log, subscriber) = DemoLog::open(&path, "pretty", "info,noisy=warn").unwrap();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("started");
            tracing::warn!(feature = "x", "drift");
            tracing::error!("stalled");
            tracing::warn!(target: "noisy", "counted: it passes the filter");
            tracing::info!(target: "noisy", "filtered out");
        });
        assert_eq!(log.warnings(), 3);
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert!(text.contains("started") && text.contains("drift") && text.contains("stalled"), "{text}");
        assert!(!text.contains("filtered out"), "{text}");
    }
}
