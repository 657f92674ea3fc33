//! Model integrity: the model file is the one its manifest was written for, and it still
//! gives the manifest's known answers.
//!
//! Both checks run inside [`super::OnnxScorer::load`], the one function every session is
//! opened through (start-up, reload, shadow, `check-config`, `vectorize`, `backtest`), so
//! no path serves a model that fails them. The hash is checked before the file reaches
//! ONNX Runtime (a tampered file may not even parse, and the user should read why); the
//! vectors after the session is built and warmed up.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::manifest::Manifest;
use super::{OnnxScorer, ScoreError};

/// Hex SHA-256 of the file at `path`, read in blocks (model files can be large).
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Refuses a model file whose SHA-256 is not the manifest's `sha256` (when it has one).
pub fn check_file(m: &Manifest, path: &Path) -> Result<(), ScoreError> {
    let Some(want) = &m.sha256 else { return Ok(()) };
    let got = file_sha256(path).map_err(|e| ScoreError::Load(format!("{}: {e}", path.display())))?;
    if got.eq_ignore_ascii_case(want) {
        return Ok(());
    }
    // A `Load` error: the file is refused before it is loaded.
    Err(ScoreError::Load(format!(
        "{} has sha256 {got}, the manifest's sha256 is {}: not the file the manifest was written for",
        path.display(),
        want.to_ascii_lowercase()
    )))
}

/// Scores every test vector alone (one row per call, as it was recorded) and refuses the
/// model if any score is further from the expected one than its tolerance. Vectors that do
/// not fit the columns are a manifest error, every one named.
pub fn check_vectors(scorer: &mut OnnxScorer, m: &Manifest) -> Result<(), ScoreError> {
    let mut rows = scorer.empty_rows();
    let unfit: Vec<String> = m
        .test_vectors
        .iter()
        .enumerate()
        .filter_map(|(k, v)| v.push_row(m, &mut rows).err().map(|e| format!("test_vectors[{k}].inputs: {e}")))
        .collect();
    if !unfit.is_empty() {
        return Err(ScoreError::Manifest(unfit.join("; ")));
    }
    let mut failed = Vec::new();
    let mut out = Vec::with_capacity(1);
    for (k, v) in m.test_vectors.iter().enumerate() {
        rows.clear();
        out.clear();
        v.push_row(m, &mut rows).map_err(ScoreError::Manifest)?;
        scorer.score(&rows, &mut out)?;
        let got = f64::from(out[0]);
        let close = (got - v.score).abs() <= v.tolerance();
        // A NaN score is never close.
        if !close {
            failed.push(format!("test_vectors[{k}]: expected score {} (± {:e}), got {got}", v.score, v.tolerance()));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(ScoreError::Mismatch(format!(
            "{} of {} known answers differ: {}",
            failed.len(),
            m.test_vectors.len(),
            failed.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_of_a_file_is_its_sha256_in_hex() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.onnx");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(file_sha256(&f).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
