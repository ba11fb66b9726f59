//! `complaints.index` under `[state] dir`: the index of forwarded calls, so attribution by
//! Call-ID and by the index survives a restart. A 32-byte header (magic, the Call-ID hash
//! key) then 48-byte entries, appended by a writer every second (a kill -9 loses nothing
//! written: the page cache keeps it; a power cut may lose the last minute, fsynced every
//! `SYNC_EVERY`). The account names the entries number are in `complaints.index.names`
//! (JSON, replaced atomically before entries that use a new name are appended). Rewritten
//! compacted at start and when it holds twice `max_index_entries`.
use super::{ensure_dir, write_atomic};
use crate::screen::complaints::index::{ENTRY_BYTES, Entry, Index};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub const FILE: &str = "complaints.index";
pub const NAMES: &str = "complaints.index.names";
const MAGIC: &[u8; 8] = b"SGCIDX01";
const HEADER: usize = 32;
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
const SYNC_EVERY: Duration = Duration::from_secs(60);

/// Appends what the index records to its file.
pub struct IndexFile {
    index: Arc<Index>,
    dir: PathBuf,
    state: Mutex<(File, usize, Instant)>,
    max: usize,
}

/// The Call-ID hash key kept in the header (so entries hash alike after a restart).
type Key = (u64, u64);

fn header(key: Key) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&key.0.to_le_bytes());
    h[16..24].copy_from_slice(&key.1.to_le_bytes());
    h
}

fn image(key: Key, entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + entries.len() * ENTRY_BYTES);
    out.extend_from_slice(&header(key));
    for e in entries {
        out.extend_from_slice(&e.to_bytes());
    }
    out
}

/// Read the file: its key and entries (a torn last entry is dropped). None: no usable file.
fn read(dir: &Path) -> io::Result<Option<(Key, Vec<Entry>)>> {
    let mut bytes = Vec::new();
    match File::open(dir.join(FILE)) {
        Ok(mut f) => f.read_to_end(&mut bytes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some((head, body)) = bytes.split_at_checked(HEADER) else { return Ok(None) };
    if &head[..8] != MAGIC {
        return Ok(None);
    }
    let word = |i: usize| head.get(i..i + 8).and_then(|s| <[u8; 8]>::try_from(s).ok()).map_or(0, u64::from_le_bytes);
    let entries = body
        .chunks_exact(ENTRY_BYTES)
        .filter_map(|c| <&[u8; ENTRY_BYTES]>::try_from(c).ok().map(Entry::from_bytes))
        .collect();
    Ok(Some(((word(8), word(16)), entries)))
}

fn random_key() -> Key {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // Without OS randomness: std's per-process random hasher key.
        use std::hash::BuildHasher;
        let s = std::collections::hash_map::RandomState::new();
        return (s.hash_one(1u8), s.hash_one(2u8));
    }
    let (a, c) = b.split_at(8);
    let w = |s: &[u8]| <[u8; 8]>::try_from(s).map_or(0, u64::from_le_bytes);
    (w(a), w(c))
}

impl IndexFile {
    /// The index restored from `dir` (a new one, with a new key, when there is no file),
    /// and its writer. The file is rewritten compacted.
    pub fn open(dir: &Path, max: usize, keep: Duration, now: SystemTime) -> io::Result<(Arc<Index>, IndexFile)> {
        ensure_dir(dir)?;
        let names: Vec<Arc<str>> = std::fs::read(dir.join(NAMES))
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok())
            .map(|v| v.into_iter().map(Arc::from).collect())
            .unwrap_or_default();
        let (index, restored) = match read(dir)? {
            Some((key, entries)) => {
                let index = Index::new(key, max, keep, true);
                index.restore(names, entries, now);
                (index, true)
            }
            None => (Index::new(random_key(), max, keep, true), false),
        };
        let (entries, names) = index.snapshot();
        if restored {
            tracing::info!(calls = entries.len(), "index of forwarded calls restored");
        }
        let names_json: Vec<&str> = names.iter().map(|n| &**n).collect();
        write_atomic(&dir.join(NAMES), &serde_json::to_vec(&names_json).unwrap_or_default(), 0o600)?;
        write_atomic(&dir.join(FILE), &image(index.key(), &entries), 0o600)?;
        let file = OpenOptions::new().append(true).open(dir.join(FILE))?;
        let index = Arc::new(index);
        let me = IndexFile {
            index: index.clone(),
            dir: dir.to_path_buf(),
            state: Mutex::new((file, entries.len(), Instant::now())),
            max,
        };
        Ok((index, me))
    }

    /// Write out what was recorded since the last flush.
    pub fn flush(&self) -> io::Result<()> {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (entries, names) = self.index.take_pending();
        if let Some(names) = names {
            let names: Vec<&str> = names.iter().map(|n| &**n).collect();
            write_atomic(&self.dir.join(NAMES), &serde_json::to_vec(&names).unwrap_or_default(), 0o600)?;
        }
        if entries.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(entries.len() * ENTRY_BYTES);
        for e in &entries {
            bytes.extend_from_slice(&e.to_bytes());
        }
        g.0.write_all(&bytes)?;
        g.1 += entries.len();
        if g.2.elapsed() >= SYNC_EVERY {
            g.0.sync_data()?;
            g.2 = Instant::now();
        }
        if g.1 > 2 * self.max {
            let (all, _) = self.index.snapshot();
            write_atomic(&self.dir.join(FILE), &image(self.index.key(), &all), 0o600)?;
            g.0 = OpenOptions::new().append(true).open(self.dir.join(FILE))?;
            g.1 = all.len();
        }
        Ok(())
    }

    /// Flush every `FLUSH_EVERY` on a thread of its own.
    pub fn spawn(self: Arc<Self>) -> io::Result<()> {
        std::thread::Builder::new().name("sipguard-index".into()).spawn(move || {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                if let Err(e) = self.flush() {
                    tracing::warn!(error = %e, "cannot write the index of forwarded calls");
                }
                crate::telemetry::metrics::complaint_index(self.index.len());
            }
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screen::Decision;
    use std::time::UNIX_EPOCH;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn entries_survive_a_restart_with_the_same_key_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let keep = Duration::from_secs(86_400);
        let key = {
            let (index, file) = IndexFile::open(dir.path(), 1000, keep, at(1000)).unwrap();
            for (i, acct) in ["acme", "beta"].iter().enumerate() {
                let d =
                    Decision { account: Some((*acct).into()), caller: Some(1), callee: Some(2), ..Decision::pass() };
                let e = index.entry_of(at(1000 + i as u64), &format!("call-{i}"), None, &d).unwrap();
                index.record(e, at(1000));
            }
            file.flush().unwrap();
            index.key()
        };
        let mut f = OpenOptions::new().append(true).open(dir.path().join(FILE)).unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        drop(f);
        let (index, _) = IndexFile::open(dir.path(), 1000, keep, at(2000)).unwrap();
        assert_eq!(index.key(), key);
        assert_eq!(index.len(), 2);
        assert_eq!(index.by_call_id("call-1").and_then(|f| f.account).as_deref(), Some("beta"));
        // Past index_days the entries are dropped at start.
        drop(index);
        let (index, _) = IndexFile::open(dir.path(), 1000, keep, at(1000 + 86_400 + 10)).unwrap();
        assert!(index.is_empty());
    }
}
