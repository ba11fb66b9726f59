//! `suspensions.journal` under `[state] dir`: one JSON record per line (see
//! `screen::suspension::Change`), appended and fsynced by a writer thread in the order the
//! changes were made. At start the journal is replayed and rewritten compacted (atomically);
//! it is compacted again whenever it has grown past `COMPACT_AFTER` lines.
//!
//! A kill -9 can tear the last line: a line that does not parse is skipped and counted, and
//! the compaction at start drops it.
use super::{ensure_dir, write_atomic};
use crate::screen::suspension::{Change, Journal, Table};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::time::SystemTime;

pub const FILE: &str = "suspensions.journal";
const COMPACT_AFTER: usize = 10_000;

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// What a start-up replay found.
#[derive(Debug, Default)]
pub struct Replay {
    pub table: Table,
    pub records: usize,
    /// Lines that did not parse (a torn last write), skipped.
    pub skipped: usize,
}

/// Read the journal in `dir` (none yet: an empty table).
pub fn replay(dir: &Path, now: SystemTime) -> io::Result<Replay> {
    let mut r = Replay::default();
    let f = match File::open(path(dir)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(r),
        Err(e) => return Err(e),
    };
    for line in BufReader::new(f).split(b'\n') {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Change>(&line) {
            Ok(c) => {
                r.table.apply(&c);
                r.records += 1;
            }
            Err(_) => r.skipped += 1,
        }
    }
    r.table.prune(now);
    Ok(r)
}

fn encode(records: &[Change]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in records {
        // A Change always serialises: plain strings and integers.
        if serde_json::to_writer(&mut out, c).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

enum Msg {
    Append(Change, Option<SyncSender<io::Result<()>>>),
}

/// The journal file, written by its own thread.
pub struct FileJournal {
    tx: Mutex<Sender<Msg>>,
}

impl FileJournal {
    /// Replay the journal in `dir`, rewrite it compacted, and start appending to it.
    pub fn open(dir: &Path, now: SystemTime) -> io::Result<(Replay, FileJournal)> {
        ensure_dir(dir)?;
        let replayed = replay(dir, now)?;
        let records = replayed.table.records();
        write_atomic(&path(dir), &encode(&records), 0o600)?;
        let file = OpenOptions::new().append(true).open(path(dir))?;
        let (tx, rx) = channel();
        let dir = dir.to_path_buf();
        let lines = records.len();
        std::thread::Builder::new().name("sipguard-suspensions".into()).spawn(move || writer(rx, file, dir, lines))?;
        Ok((replayed, FileJournal { tx: Mutex::new(tx) }))
    }
}

impl Journal for FileJournal {
    fn append(&self, change: &Change, durable: bool) -> io::Result<()> {
        let (ack, wait) = if durable {
            let (a, w) = sync_channel(1);
            (Some(a), Some(w))
        } else {
            (None, None)
        };
        let sent = self.tx.lock().unwrap_or_else(|p| p.into_inner()).send(Msg::Append(change.clone(), ack));
        if sent.is_err() {
            return Err(io::Error::other("suspension journal writer stopped"));
        }
        match wait {
            Some(w) => w.recv().unwrap_or_else(|_| Err(io::Error::other("suspension journal writer stopped"))),
            None => Ok(()),
        }
    }
}

fn writer(rx: Receiver<Msg>, mut file: File, dir: PathBuf, mut lines: usize) {
    while let Ok(first) = rx.recv() {
        // Everything queued now goes out with one fsync.
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let mut acks = Vec::new();
        let mut bytes = Vec::new();
        for Msg::Append(c, ack) in batch {
            bytes.extend(encode(std::slice::from_ref(&c)));
            acks.extend(ack);
            lines += 1;
        }
        let result = file.write_all(&bytes).and_then(|()| file.sync_data());
        if let Err(e) = &result {
            tracing::error!(error = %e, file = %path(&dir).display(), "cannot write the suspension journal");
        }
        for a in acks {
            let _ = a.send(result.as_ref().map(|_| ()).map_err(|e| io::Error::new(e.kind(), e.to_string())));
        }
        if result.is_ok() && lines > COMPACT_AFTER {
            match compact(&dir) {
                Ok((f, n)) => {
                    file = f;
                    lines = n;
                }
                Err(e) => tracing::warn!(error = %e, "cannot compact the suspension journal"),
            }
        }
    }
}

/// Rewrite the journal with only what rebuilds the current table; reopen it for appending.
fn compact(dir: &Path) -> io::Result<(File, usize)> {
    let r = replay(dir, SystemTime::now())?;
    let records = r.table.records();
    write_atomic(&path(dir), &encode(&records), 0o600)?;
    Ok((OpenOptions::new().append(true).open(path(dir))?, records.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screen::suspension::{Subject, Suspension, Suspensions};
    use std::time::{Duration, UNIX_EPOCH};

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn acct(id: &str, since: u64, until: u64) -> Suspension {
        Suspension {
            subject: Subject::Account,
            id: id.into(),
            account: id.into(),
            since: at(since),
            until: at(until),
            source: "complaints".into(),
            cause: "2 complaints in 30 days".into(),
        }
    }

    fn open(dir: &Path, now: u64) -> (Replay, Suspensions) {
        let (r, j) = FileJournal::open(dir, at(now)).unwrap();
        let s = Suspensions::new(r.table.clone(), Some(Box::new(j)));
        (r, s)
    }

    #[test]
    fn what_was_acknowledged_is_there_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_, s) = open(dir.path(), 0);
            assert!(s.suspend_durable(acct("acme", 10, 1000)).unwrap());
            assert!(s.suspend_durable(acct("beta", 10, 1000)).unwrap());
            s.lift("beta", at(20)).unwrap();
        }
        let (r, s) = open(dir.path(), 30);
        assert_eq!(r.skipped, 0);
        assert!(s.check("acme", None, at(30)).is_some());
        assert!(s.check("beta", None, at(30)).is_none());
        // The lift is remembered: a replayed suspension from before it stays lifted.
        assert!(!s.suspend(acct("beta", 10, 1000)));
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_compacted_away() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_, s) = open(dir.path(), 0);
            s.suspend_durable(acct("acme", 10, 1000)).unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(path(dir.path())).unwrap();
        f.write_all(br#"{"op":"suspend","subject":"acc"#).unwrap();
        drop(f);
        let (r, s) = open(dir.path(), 30);
        assert_eq!((r.records, r.skipped), (1, 1));
        assert!(s.check("acme", None, at(30)).is_some());
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    #[test]
    fn expired_suspensions_are_compacted_away_at_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_, s) = open(dir.path(), 0);
            s.suspend_durable(acct("acme", 10, 100)).unwrap();
            s.suspend_durable(acct("beta", 10, 1000)).unwrap();
        }
        let (_, s) = open(dir.path(), 200);
        assert_eq!(s.list(at(200)).len(), 1);
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn the_journal_stays_small_under_many_changes() {
        let dir = tempfile::tempdir().unwrap();
        // Real times: the writer compacts with the real clock.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let (_, s) = open(dir.path(), now);
        for i in 0..(COMPACT_AFTER as u64 + 50) {
            s.suspend(acct("acme", now, now + 1000 + i));
        }
        // The writer compacts after the batch that takes it past COMPACT_AFTER lines; how
        // many of the last 50 come after that depends on how the writer batched them, so
        // the journal holds the compacted line plus at most those 50 and the two below.
        s.suspend_durable(acct("beta", now, now + 5000)).unwrap();
        s.suspend_durable(acct("gamma", now, now + 5000)).unwrap();
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert!(text.lines().count() <= 53, "{} lines", text.lines().count());
        drop(s);
        let (r, s) = open(dir.path(), now);
        assert_eq!(r.skipped, 0);
        let ids: Vec<String> = s.list(at(now)).into_iter().map(|x| x.id).collect();
        assert_eq!(ids, ["beta", "gamma", "acme"], "soonest end first");
        assert_eq!(s.list(at(now))[2].until, at(now + 1000 + COMPACT_AFTER as u64 + 49));
    }
}
