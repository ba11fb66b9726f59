//! `complaints.journal` under `[state] dir` and the desk that files complaints through it.
//! One JSON record per line (`screen::complaints::JournalRecord`): each complaint, the list
//! entries it made and the suspensions it decided, appended and fsynced before the API
//! answers 201. At start the journal is replayed (a torn last line is skipped and counted)
//! and rewritten compacted; it is compacted again after `COMPACT_AFTER` appended lines.
use super::{ensure_dir, write_atomic};
use crate::config::complaints::ComplaintsConfig;
use crate::screen::complaints::attribution::attribute;
use crate::screen::complaints::index::Index;
use crate::screen::complaints::intake::Record;
use crate::screen::complaints::lists::Lists;
use crate::screen::complaints::{Book, Complaint, Effects, JournalRecord};
use crate::screen::suspension::{Suspension, Suspensions};
use arc_swap::ArcSwap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

pub const FILE: &str = "complaints.journal";
const COMPACT_AFTER: usize = 10_000;

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// What the desk needs to know of the configured accounts.
pub trait Accounts {
    /// The account owning caller ID `n` (the first in config order when several do).
    fn owner_of(&self, n: u64) -> Option<Arc<str>>;
    fn category_of(&self, account: &str) -> Option<Arc<str>>;
}

/// No accounts (screening off): every complaint is unattributed unless the index knows it.
pub struct NoAccounts;

impl Accounts for NoAccounts {
    fn owner_of(&self, _: u64) -> Option<Arc<str>> {
        None
    }
    fn category_of(&self, _: &str) -> Option<Arc<str>> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    #[error("{held} complaints are kept, complaints.max_complaints is {max}: not taken")]
    Full { held: usize, max: usize },
    #[error("cannot write the complaints journal: {0}")]
    Io(#[from] io::Error),
}

/// What a start-up replay found.
#[derive(Debug, Default)]
pub struct Replay {
    pub records: usize,
    /// Lines that did not parse (a torn last write), skipped.
    pub skipped: usize,
    pub complaints: usize,
}

struct Inner {
    book: Book,
    /// Suspensions complaints decided, kept for compaction while in force.
    suspensions: Vec<Suspension>,
    file: File,
    lines: usize,
}

/// Files complaints: attribution, effects, the journal, then the list and suspension stores.
pub struct Desk {
    inner: Mutex<Inner>,
    dir: PathBuf,
    cfg: ArcSwap<ComplaintsConfig>,
    pub index: Arc<Index>,
    pub lists: Arc<Lists>,
    suspensions: Arc<Suspensions>,
}

/// A complaint filed, with what it did.
#[derive(Debug, Clone)]
pub struct Filed {
    pub complaint: Complaint,
    pub effects: Effects,
}

fn encode(records: impl IntoIterator<Item = JournalRecord>) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut n = 0;
    for r in records {
        // A record always serialises: strings and integers.
        if serde_json::to_writer(&mut out, &r).is_ok() {
            out.push(b'\n');
            n += 1;
        }
    }
    (out, n)
}

impl Desk {
    /// Replay the journal in `dir` into the book, the lists and `suspensions`, rewrite it
    /// compacted, and take complaints from then on.
    pub fn open(
        dir: &Path,
        cfg: ComplaintsConfig,
        index: Arc<Index>,
        suspensions: Arc<Suspensions>,
        now: SystemTime,
    ) -> io::Result<(Desk, Replay)> {
        ensure_dir(dir)?;
        let mut replay = Replay::default();
        let mut book = Book::default();
        let mut listed = Vec::new();
        let mut decided = Vec::new();
        match File::open(path(dir)) {
            Ok(f) => {
                for line in BufReader::new(f).split(b'\n') {
                    let line = line?;
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match serde_json::from_slice::<JournalRecord>(&line) {
                        Ok(JournalRecord::Complaint(c)) => book.add(*c),
                        Ok(JournalRecord::Listed { list, number, listed: l }) => listed.push((list, number, l)),
                        Ok(JournalRecord::Suspend(s)) => decided.push(s),
                        Err(_) => {
                            replay.skipped += 1;
                            continue;
                        }
                    }
                    replay.records += 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        replay.complaints = book.len();
        let lists = Arc::new(Lists::default());
        lists.add(&listed);
        decided.retain(|s| s.until > now);
        // A crash after this journal's fsync but before the suspensions journal's loses
        // nothing: applied again here (a suspension already there, or lifted since, is left).
        for s in &decided {
            suspensions.suspend(s.clone());
        }
        let (bytes, lines) = encode(compacted(&book, &lists, &decided));
        write_atomic(&path(dir), &bytes, 0o600)?;
        let file = OpenOptions::new().append(true).open(path(dir))?;
        let desk = Desk {
            inner: Mutex::new(Inner { book, suspensions: decided, file, lines }),
            dir: dir.to_path_buf(),
            cfg: ArcSwap::from_pointee(cfg),
            index,
            lists,
            suspensions,
        };
        Ok((desk, replay))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> Arc<ComplaintsConfig> {
        self.cfg.load_full()
    }

    /// A reloaded `[complaints]` section.
    pub fn reconfigure(&self, cfg: ComplaintsConfig) {
        self.index.set_limits(cfg.max_index_entries, cfg.index_for);
        self.cfg.store(Arc::new(cfg));
    }

    /// File `records` together: all of them or, on an error, none. Returns once they and
    /// what they did are on disk.
    pub fn file(&self, records: &[Record], accounts: &dyn Accounts, now: SystemTime) -> Result<Vec<Filed>, DeskError> {
        let cfg = self.config();
        let mut g = self.lock();
        let held = g.book.len();
        if held + records.len() > cfg.max_complaints {
            return Err(DeskError::Full { held, max: cfg.max_complaints });
        }
        let first = g.book.next_id();
        let mut batch: Vec<Complaint> = Vec::with_capacity(records.len());
        let mut filed = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let a = attribute(r, &self.index, cfg.match_window, |n| accounts.owner_of(n));
            let c = Complaint::new(first + i as u64, now, r, a);
            let category = c.account().and_then(|a| accounts.category_of(a));
            let effects = g.book.effects(&c, &batch, &cfg, category, now);
            batch.push(c.clone());
            filed.push(Filed { complaint: c, effects });
        }
        let records = filed.iter().flat_map(|f| {
            std::iter::once(JournalRecord::Complaint(Box::new(f.complaint.clone()))).chain(f.effects.records())
        });
        let (bytes, lines) = encode(records);
        g.file.write_all(&bytes).and_then(|()| g.file.sync_data())?;
        g.lines += lines;
        for f in &filed {
            g.book.add(f.complaint.clone());
            self.lists.add(&f.effects.listed);
            g.suspensions.extend(f.effects.suspensions.iter().cloned());
        }
        drop(g);
        for s in filed.iter().flat_map(|f| &f.effects.suspensions) {
            self.suspensions.suspend_durable(s.clone())?;
        }
        self.compact_if_due(now);
        Ok(filed)
    }

    /// Complaints of `account` (all when None) received at or after `since`.
    pub fn list(&self, account: Option<&str>, since: Option<u64>) -> Vec<Complaint> {
        self.lock().book.list(account, since).into_iter().cloned().collect()
    }

    pub fn get(&self, id: u64) -> Option<Complaint> {
        self.lock().book.get(id).cloned()
    }

    /// Complaints per account (`unattributed` for the rest).
    pub fn counts(&self) -> Vec<(String, u64)> {
        self.lock().book.counts()
    }

    fn compact_if_due(&self, now: SystemTime) {
        let mut g = self.lock();
        if g.lines <= g.book.len() + COMPACT_AFTER {
            return;
        }
        g.suspensions.retain(|s| s.until > now);
        let (bytes, lines) = encode(compacted(&g.book, &self.lists, &g.suspensions));
        let result = write_atomic(&path(&self.dir), &bytes, 0o600)
            .and_then(|()| OpenOptions::new().append(true).open(path(&self.dir)));
        match result {
            Ok(f) => {
                g.file = f;
                g.lines = lines;
            }
            Err(e) => tracing::warn!(error = %e, "cannot compact the complaints journal"),
        }
    }
}

/// The records that rebuild the desk: every complaint, every list entry, the suspensions
/// still in force.
fn compacted<'a>(
    book: &'a Book,
    lists: &Lists,
    suspensions: &'a [Suspension],
) -> impl Iterator<Item = JournalRecord> + 'a {
    let listed: Vec<JournalRecord> = lists
        .entries()
        .into_iter()
        .map(|(list, number, listed)| JournalRecord::Listed { list, number, listed })
        .collect();
    book.all()
        .iter()
        .cloned()
        .map(|c| JournalRecord::Complaint(Box::new(c)))
        .chain(listed)
        .chain(suspensions.iter().cloned().map(JournalRecord::Suspend))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screen::complaints::attribution::By;
    use crate::screen::complaints::index::Callee;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    struct Owned;
    impl Accounts for Owned {
        fn owner_of(&self, n: u64) -> Option<Arc<str>> {
            (n == 12125550100).then(|| Arc::from("acme"))
        }
        fn category_of(&self, _: &str) -> Option<Arc<str>> {
            None
        }
    }

    fn rec(callee: u64, t: u64) -> Record {
        Record {
            caller: 12125550100,
            callee: Callee::Number(callee),
            time: at(t),
            call_id: None,
            category: None,
            source: None,
            note: None,
        }
    }

    const NOW: u64 = 1_800_000_000;

    fn open(dir: &Path, cfg: ComplaintsConfig) -> (Desk, Replay, Arc<Suspensions>) {
        let (r, j) = crate::state::suspensions::FileJournal::open(dir, at(NOW)).unwrap();
        let s = Arc::new(Suspensions::new(r.table, Some(Box::new(j))));
        let index = Arc::new(Index::new((1, 2), 1000, Duration::from_secs(86_400), false));
        let (d, replay) = Desk::open(dir, cfg, index, s.clone(), at(NOW)).unwrap();
        (d, replay, s)
    }

    #[test]
    fn filed_complaints_lists_and_suspensions_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ComplaintsConfig::default();
        {
            let (d, _, s) = open(dir.path(), cfg);
            let f = d.file(&[rec(13125550199, NOW - 60)], &Owned, at(NOW)).unwrap();
            assert_eq!((f[0].complaint.id, f[0].complaint.attribution.by), (1, By::Owner));
            assert_eq!(f[0].effects.listed.len(), 1);
            assert!(s.check("acme", Some(12125550100), at(NOW)).is_some(), "the caller ID");
            assert!(s.check("acme", Some(12125550101), at(NOW)).is_none());
            let f = d.file(&[rec(13125550198, NOW - 30)], &Owned, at(NOW + 1)).unwrap();
            assert_eq!(f[0].complaint.id, 2);
            assert!(s.check("acme", Some(12125550101), at(NOW + 1)).is_some(), "the account");
        }
        let (d, r, s) = open(dir.path(), cfg);
        assert_eq!((r.complaints, r.skipped), (2, 0));
        assert!(d.lists.check(13125550199, "acme", None).is_some());
        assert!(s.check("acme", None, at(NOW + 2)).is_some());
        assert_eq!(d.counts(), [("acme".to_string(), 2)]);
        assert_eq!(d.file(&[rec(1312555019, NOW)], &NoAccounts, at(NOW + 3)).unwrap()[0].complaint.id, 3);
    }

    #[test]
    fn a_crash_between_the_journals_loses_no_suspension() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ComplaintsConfig::default();
        {
            let (d, _, _) = open(dir.path(), cfg);
            d.file(&[rec(13125550199, NOW - 60)], &Owned, at(NOW)).unwrap();
        }
        // As if the suspension never reached its own journal.
        std::fs::remove_file(crate::state::suspensions::path(dir.path())).unwrap();
        let (_, _, s) = open(dir.path(), cfg);
        assert!(s.check("acme", Some(12125550100), at(NOW + 5)).is_some());
        // A lift stays a lift across the next restart.
        s.lift("+12125550100", at(NOW + 10)).unwrap();
        drop(s);
        let (_, _, s) = open(dir.path(), cfg);
        assert!(s.check("acme", Some(12125550100), at(NOW + 20)).is_none());
    }

    #[test]
    fn a_torn_line_is_skipped_and_an_import_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ComplaintsConfig { max_complaints: 3, ..Default::default() };
        {
            let (d, _, _) = open(dir.path(), cfg);
            d.file(&[rec(13125550199, NOW)], &Owned, at(NOW)).unwrap();
            let e = d.file(&[rec(1, NOW), rec(2, NOW), rec(3, NOW)], &Owned, at(NOW)).unwrap_err();
            assert!(matches!(e, DeskError::Full { held: 1, max: 3 }), "{e}");
            assert_eq!(d.list(None, None).len(), 1, "nothing of the refused import");
        }
        let mut f = OpenOptions::new().append(true).open(path(dir.path())).unwrap();
        f.write_all(br#"{"op":"complaint","id":9,"rece"#).unwrap();
        drop(f);
        let (d, r, _) = open(dir.path(), cfg);
        assert_eq!((r.complaints, r.skipped), (1, 1));
        assert_eq!(d.get(1).map(|c| c.id), Some(1));
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert!(!text.contains("rece\""), "compacted away: {text}");
    }
}
