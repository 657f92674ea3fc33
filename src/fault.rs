//! Test-only fault injection: makes a worker panic, stall or die on a marked event, so the
//! tests can show that a panic is contained, a stall is reported and a dead thread fails
//! `/healthz`. Nothing is armed unless a test calls [`arm`] or the process is started with
//! `VERDICT_FAULTS` (read by `verdict run`; see [`arm_from_env`]); unarmed, the check is
//! one relaxed atomic load per batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::Duration;

/// What happens when a marked event reaches a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The worker panics while processing the batch (the panic is caught).
    Panic,
    /// The worker sleeps this long before processing the batch.
    Stall(Duration),
    /// The worker thread panics outside the batch guard and ends.
    KillThread,
    /// Every scoring call for the batch fails (as ONNX Runtime failing on its rows would).
    ScoreError,
}

/// An entry of `VERDICT_FAULTS` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultSpecError {
    /// The entry has no `:MARKER`.
    #[error("VERDICT_FAULTS: '{0}' has no ':MARKER'")]
    NoMarker(String),
    /// The part before the marker is not a fault kind.
    #[error("VERDICT_FAULTS: '{0}' is not panic, kill, score_error or stall_ms=N")]
    UnknownKind(String),
}

static ARMED: AtomicBool = AtomicBool::new(false);
static FAULTS: RwLock<Vec<(Vec<u8>, Fault)>> = RwLock::new(Vec::new());

/// Arms `fault` for every event whose payload contains `marker`.
pub fn arm(marker: &[u8], fault: Fault) {
    FAULTS.write().unwrap_or_else(|e| e.into_inner()).push((marker.to_vec(), fault));
    ARMED.store(true, Ordering::SeqCst);
}

/// Arms faults from `VERDICT_FAULTS`: comma-separated `panic:MARKER`, `kill:MARKER`,
/// `score_error:MARKER` or `stall_ms=N:MARKER`. Returns how many were armed; unknown entries are errors.
pub fn arm_from_env() -> Result<usize, FaultSpecError> {
    let Ok(spec) = std::env::var("VERDICT_FAULTS") else { return Ok(0) };
    let mut n = 0;
    for entry in spec.split(',').filter(|e| !e.is_empty()) {
        let (kind, marker) = entry.split_once(':').ok_or_else(|| FaultSpecError::NoMarker(entry.to_string()))?;
        let fault = match kind {
            "panic" => Fault::Panic,
            "kill" => Fault::KillThread,
            "score_error" => Fault::ScoreError,
            k => match k.strip_prefix("stall_ms=").and_then(|ms| ms.parse().ok()) {
                Some(ms) => Fault::Stall(Duration::from_millis(ms)),
                None => return Err(FaultSpecError::UnknownKind(kind.to_string())),
            },
        };
        arm(marker.as_bytes(), fault);
        n += 1;
    }
    Ok(n)
}

/// The fault armed for the first event of `payloads` that carries a marker, if any.
pub fn check<'a>(payloads: impl IntoIterator<Item = Option<&'a [u8]>>) -> Option<Fault> {
    if !ARMED.load(Ordering::Relaxed) {
        return None;
    }
    let faults = FAULTS.read().unwrap_or_else(|e| e.into_inner());
    payloads.into_iter().flatten().find_map(|p| {
        faults.iter().find(|(m, _)| !m.is_empty() && p.windows(m.len()).any(|w| w == &m[..])).map(|(_, f)| *f)
    })
}
