//! One named list: a base (snapshot or compiled text), the deltas on top of it, and who it
//! applies to.
use super::DncError;
use super::delta::{self, Delta, Op};
use super::parse::{Builder, Categories, LineErrors};
use super::snapshot::{self, Snapshot};
use crate::config::dnc::ListConfig;
use crate::screen::number::NumberPlan;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// Identity of a source file's contents, to reuse an unchanged base on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn fingerprint(path: &Path) -> Result<Fingerprint, DncError> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).map_err(|e| DncError::Io { path: path.to_path_buf(), source: e })?;
    Ok(Fingerprint { len: m.len(), modified: m.modified().ok(), inode: m.ino() })
}

/// The loaded base of a list; shared between generations while its file is unchanged.
#[derive(Debug)]
pub struct Base {
    pub snap: Snapshot,
    /// Read from a snapshot file (else compiled from text at load).
    pub from_snapshot: bool,
    /// Bad lines skipped in a text list (a lenient one).
    pub line_errors: LineErrors,
    path: PathBuf,
    fingerprint: Fingerprint,
    plan: Option<NumberPlan>,
    strict: bool,
}

impl Base {
    fn load(path: &Path, plan: Option<&NumberPlan>, strict: bool) -> Result<Base, DncError> {
        let fingerprint = fingerprint(path)?;
        let io = |e| DncError::Io { path: path.to_path_buf(), source: e };
        let refused = |reason| DncError::Snapshot { path: path.to_path_buf(), reason };
        let (snap, from_snapshot, line_errors) = if snapshot::is_snapshot(path).map_err(io)? {
            (Snapshot::open(path).map_err(refused)?, true, LineErrors::new(strict))
        } else {
            let mut b = Builder::new(strict);
            b.add_text_file(path, plan)?;
            let errors = std::mem::take(&mut b.errors);
            let image = snapshot::image(&b.finish(), SystemTime::now());
            (Snapshot::from_image(image).map_err(refused)?, false, errors)
        };
        let plan = plan.cloned();
        Ok(Base { snap, from_snapshot, line_errors, path: path.to_path_buf(), fingerprint, plan, strict })
    }

    /// Whether the base list holds `n` (plain or categorised).
    pub fn contains(&self, n: u64) -> bool {
        self.snap.set().contains(n) || self.snap.categorized(n).is_some()
    }

    /// Numbers in the base list.
    pub fn numbers(&self) -> u64 {
        self.snap.count + self.snap.categorized_len() as u64
    }

    /// Reuse `prev` if it was loaded from the same, unchanged file the same way.
    fn reuse(prev: &Arc<Base>, path: &Path, plan: Option<&NumberPlan>, strict: bool) -> Option<Arc<Base>> {
        let same = prev.path == path
            && prev.plan.as_ref() == plan
            && prev.strict == strict
            && fingerprint(path).is_ok_and(|f| f == prev.fingerprint);
        same.then(|| Arc::clone(prev))
    }
}

/// Which entry a number has in a list, for `dnc check` and the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Blocks every account.
    All,
    /// Blocks accounts of these categories.
    Categories(Vec<Arc<str>>),
    /// Was in the base list, removed by a delta.
    Removed,
}

#[derive(Debug)]
pub struct List {
    pub cfg: ListConfig,
    accounts: Option<HashSet<Box<str>>>,
    pub base: Arc<Base>,
    pub delta: Delta,
    pub delta_errors: LineErrors,
    /// What the deltas change: numbers added that the base lacks, base numbers removed.
    /// A delta line that changes nothing (removing an unlisted number, adding a listed one)
    /// is counted in neither.
    pub effective_added: u64,
    pub effective_removed: u64,
    /// Base category names followed by names that only deltas use.
    categories: Vec<Arc<str>>,
}

impl List {
    pub fn load(cfg: &ListConfig, plan: Option<&NumberPlan>, prev: Option<&List>) -> Result<List, DncError> {
        let reused = prev.and_then(|p| Base::reuse(&p.base, &cfg.path, plan, cfg.strict));
        let base = match reused {
            Some(b) => b,
            None => Arc::new(Base::load(&cfg.path, plan, cfg.strict)?),
        };
        let mut categories = Categories { names: base.snap.category_names() };
        let mut errors = LineErrors::new(cfg.strict);
        let delta = match &cfg.deltas {
            Some(dir) => delta::read_dir(dir, plan, &mut categories, &mut errors)?,
            None => Delta::default(),
        };
        let accounts = cfg.accounts.as_ref().map(|a| a.iter().map(|s| s.as_str().into()).collect());
        let (mut effective_added, mut effective_removed) = (0, 0);
        for (n, op) in delta.iter() {
            match (op, base.contains(n)) {
                (Op::Remove, true) => effective_removed += 1,
                (Op::Add(_), false) => effective_added += 1,
                _ => {}
            }
        }
        Ok(List {
            cfg: cfg.clone(),
            accounts,
            base,
            delta,
            delta_errors: errors,
            effective_added,
            effective_removed,
            categories: categories.names.into_iter().map(Arc::from).collect(),
        })
    }

    /// Numbers the list blocks now: the base with its deltas applied.
    pub fn entries(&self) -> u64 {
        (self.base.numbers() + self.effective_added).saturating_sub(self.effective_removed)
    }

    pub fn applies_to(&self, account: &str) -> bool {
        self.accounts.as_ref().is_none_or(|a| a.contains(account))
    }

    /// The entry for `n`, if any.
    pub fn entry(&self, n: u64) -> Option<Entry> {
        let mask = match self.delta.get(n) {
            Some(Op::Remove) => {
                return self.base.contains(n).then_some(Entry::Removed);
            }
            Some(Op::Add(mask)) => mask,
            None if self.base.snap.set().contains(n) => 0,
            None => self.base.snap.categorized(n)?,
        };
        if mask == 0 {
            return Some(Entry::All);
        }
        let names = self.categories.iter().enumerate().filter(|&(i, _)| has_bit(mask, i));
        Some(Entry::Categories(names.map(|(_, c)| Arc::clone(c)).collect()))
    }

    /// Whether `n` blocks an account of `category`: `Some(None)` for an entry that blocks
    /// everyone, `Some(Some(category))` for a category match. Allocation-free.
    pub fn blocks(&self, n: u64, category: Option<&str>) -> Option<Option<&Arc<str>>> {
        let mask = match self.delta.get(n) {
            Some(Op::Remove) => return None,
            Some(Op::Add(mask)) => mask,
            None if self.base.snap.set().contains(n) => return Some(None),
            None => self.base.snap.categorized(n)?,
        };
        if mask == 0 {
            return Some(None);
        }
        let category = category?;
        let (i, name) = self.categories.iter().enumerate().find(|(_, c)| c.eq_ignore_ascii_case(category))?;
        has_bit(mask, i).then_some(Some(name))
    }
}

fn has_bit(mask: u64, i: usize) -> bool {
    u32::try_from(i).ok().and_then(|i| mask.checked_shr(i)).is_some_and(|m| m & 1 == 1)
}
