//! The window counters this node holds, under `[state] dir` as `counters.json`: all of them
//! with the local backend, the calls not yet written back to Redis with the shared one.
//! Written atomically every `SAVE_EVERY` when they changed, and on shutdown; read at start,
//! keeping only the windows still current. A kill -9 loses at most the calls of the last
//! `SAVE_EVERY`.
use crate::screen::quota::CountersSnapshot;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const FILE: &str = "counters.json";
pub const SAVE_EVERY: Duration = Duration::from_secs(2);
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a sipguard counters file ({detail})")]
    Format { path: PathBuf, detail: String },
}

#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    saved_unix: u64,
    accounts: Vec<SavedAccount>,
}

#[derive(Serialize, Deserialize)]
struct SavedAccount {
    id: String,
    #[serde(flatten)]
    counts: CountersSnapshot,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Replace the file with `counts`.
pub fn save(dir: &Path, counts: &[(Arc<str>, CountersSnapshot)], saved_unix: u64) -> Result<(), CountersError> {
    let path = path(dir);
    let saved = Saved {
        version: VERSION,
        saved_unix,
        accounts: counts.iter().map(|(id, c)| SavedAccount { id: id.to_string(), counts: c.clone() }).collect(),
    };
    let bytes =
        serde_json::to_vec(&saved).map_err(|e| CountersError::Format { path: path.clone(), detail: e.to_string() })?;
    super::ensure_dir(dir).map_err(|source| CountersError::Io { path: dir.to_path_buf(), source })?;
    super::write_atomic(&path, &bytes, 0o600).map_err(|source| CountersError::Io { path, source })
}

/// The saved counts; none when there is no file yet.
pub fn load(dir: &Path) -> Result<Vec<(Arc<str>, CountersSnapshot)>, CountersError> {
    let path = path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(CountersError::Io { path, source }),
    };
    let saved: Saved = serde_json::from_slice(&bytes)
        .map_err(|e| CountersError::Format { path: path.clone(), detail: e.to_string() })?;
    if saved.version != VERSION {
        return Err(CountersError::Format { path, detail: format!("version {}", saved.version) });
    }
    Ok(saved.accounts.into_iter().map(|a| (Arc::from(a.id), a.counts)).collect())
}

/// A cheap fingerprint of the counts, to skip saving what did not change.
pub fn fingerprint(counts: &[(Arc<str>, CountersSnapshot)]) -> (usize, u64, u64, usize) {
    counts.iter().fold((counts.len(), 0, 0, 0), |(n, h, d, k), (_, c)| {
        let numbers = c.caller_day.1.len() + c.callee_day.1.len() + c.callee_week.1.len();
        (n, h.wrapping_add(c.hour.1), d.wrapping_add(c.day.1).wrapping_add(c.day.0 as u64), k + numbers)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trip_and_a_torn_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty(), "no file yet: nothing to restore");
        let c = CountersSnapshot {
            hour: (3600, 4),
            day: (739_000, 7),
            caller_day: (739_000, vec![(12125550100, 7)]),
            callee_day: (739_000, vec![(13105550001, 1), (13105550002, 2)]),
            callee_week: (738_996, vec![]),
            seen: (40, 70),
        };
        save(dir.path(), &[("acme".into(), c.clone())], 1).unwrap();
        let back = load(dir.path()).unwrap();
        assert_eq!(back, vec![(Arc::from("acme"), c)]);
        let bytes = std::fs::read(path(dir.path())).unwrap();
        std::fs::write(path(dir.path()), &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(load(dir.path()), Err(CountersError::Format { .. })));
    }
}
