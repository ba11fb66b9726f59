//! Do-not-call engine: named lists (national registry, the operator's own, per-account)
//! held as compact exact sets, loaded from mmap'd snapshots or text, with deltas, opt-out
//! categories, per-account consent, and hot reload by atomic swap of the whole `Dnc`.
//!
//! - `efset`: the compact set (partitioned Elias-Fano, read in place).
//! - `snapshot`: the versioned, checksummed file format and its mmap loading.
//! - `parse`: text and FTC lines with per-line errors.
//! - `delta`: change lists on top of a list, and the operator journal.
//! - `list`: one list with its base, deltas and account scope.
//! - `watch`: reload on file changes (and the reload the SIGHUP handler calls).
pub mod delta;
pub mod efset;
pub mod list;
pub mod parse;
pub mod query;
pub mod snapshot;
#[cfg(test)]
pub(crate) mod testutil;
pub mod watch;

use crate::config::dnc::DncConfig;
use list::{Entry, List};
use parse::{LineErrors, for_each_line, parse_line};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

pub use watch::{WatcherHandle, reload, spawn_watcher};

/// A DNC match: which list, and which `[responses.<name>]` answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DncHit {
    pub list: Arc<str>,
    pub response: Arc<str>,
    /// The opt-out category that matched the account's, when the entry was categorised.
    pub category: Option<Arc<str>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DncError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: snapshot refused: {reason}", path.display())]
    Snapshot { path: PathBuf, reason: String },
    /// A bad line in strict mode.
    #[error("{}:{line}: {msg}", file.display())]
    Line { file: PathBuf, line: usize, msg: String },
    #[error("{0}")]
    Config(String),
    #[error("no [[dnc.list]] named `{0}`")]
    UnknownList(String),
    #[error("list `{0}` has no `deltas` directory to record changes in")]
    NoDeltas(String),
    #[error("no [[account]] `{0}` in the configuration")]
    UnknownAccount(String),
    #[error("`{0}` is not a phone number")]
    BadNumber(String),
    #[error("watching {}: {source}", path.display())]
    Watch { path: PathBuf, source: notify::Error },
}

/// All loaded lists; swapped whole (arc-swap) on reload.
#[derive(Debug)]
pub struct Dnc {
    lists: Vec<List>,
    /// Per account, sorted numbers the account has consent to call.
    consent: HashMap<Box<str>, Vec<u64>>,
    /// Bad lines skipped in consent files (lenient `[dnc]`).
    pub consent_errors: LineErrors,
    pub loaded: SystemTime,
}

impl Default for Dnc {
    fn default() -> Self {
        Dnc {
            lists: Vec::new(),
            consent: HashMap::new(),
            consent_errors: LineErrors::default(),
            loaded: SystemTime::UNIX_EPOCH,
        }
    }
}

/// One list's figures for /health, metrics and `dnc stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListSummary {
    pub name: Arc<str>,
    pub path: PathBuf,
    pub from_snapshot: bool,
    /// Entries in the base list (plain and categorised).
    pub count: u64,
    /// Numbers the list blocks now: the base with its deltas applied.
    pub entries: u64,
    /// Numbers the deltas add to the base, and base numbers they remove (a delta line
    /// that changes nothing counts in neither).
    pub delta_added: u64,
    pub delta_removed: u64,
    /// Bytes the list's set occupies (the mapped snapshot or the compiled image).
    pub bytes: u64,
    /// When the snapshot was built, or the text list compiled.
    pub built: SystemTime,
    pub format_version: u32,
    /// Lines skipped as unreadable in the list and its deltas.
    pub line_errors: u64,
    /// The first of them.
    pub skipped: Vec<parse::Skipped>,
}

/// A list's entry for a number, for `dnc check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub list: Arc<str>,
    pub response: Arc<str>,
    pub entry: Entry,
    pub accounts: Option<Vec<String>>,
    pub consent_applies: bool,
}

impl Dnc {
    /// Load every configured list and consent file. Builds aside: nothing is shared with a
    /// running `Dnc` except unchanged bases passed in `previous`.
    pub fn load(cfg: &DncConfig) -> Result<Dnc, DncError> {
        Self::load_reusing(cfg, None)
    }

    /// Like `load`, reusing the bases of `previous` whose files did not change (so a delta
    /// or consent change does not re-read a national snapshot).
    pub fn load_reusing(cfg: &DncConfig, previous: Option<&Dnc>) -> Result<Dnc, DncError> {
        let mut lists = Vec::with_capacity(cfg.lists.len());
        for lc in &cfg.lists {
            let prev = previous.and_then(|p| p.lists.iter().find(|l| l.cfg.name == lc.name));
            lists.push(List::load(lc, cfg.plan.as_ref(), prev)?);
        }
        let mut consent: HashMap<Box<str>, Vec<u64>> = HashMap::new();
        let mut errors = LineErrors::new(cfg.strict);
        for c in &cfg.consent {
            let numbers = consent.entry(c.account.as_str().into()).or_default();
            for_each_line(&c.path, &mut errors, |text| match parse_line(text, cfg.plan.as_ref())? {
                Some(line) if line.categories.is_some() => Err("a consent entry takes no categories".into()),
                Some(line) => {
                    numbers.push(line.number);
                    Ok(())
                }
                None => Ok(()),
            })?;
        }
        for numbers in consent.values_mut() {
            numbers.sort_unstable();
            numbers.dedup();
        }
        Ok(Dnc { lists, consent, consent_errors: errors, loaded: SystemTime::now() })
    }

    /// Is `number` blocked for calls from `account` (of `category`)? The first list (in
    /// config order) that blocks it wins. Consent of the account exempts the number from
    /// lists with `consent_applies`. No allocation unless there is a hit.
    pub fn check(&self, number: u64, account: &str, category: Option<&str>) -> Option<DncHit> {
        for list in &self.lists {
            if !list.applies_to(account) {
                continue;
            }
            let Some(matched) = list.blocks(number, category) else {
                continue;
            };
            if list.cfg.consent_applies && self.has_consent(account, number) {
                continue;
            }
            return Some(DncHit {
                list: Arc::clone(&list.cfg.name),
                response: Arc::clone(&list.cfg.response),
                category: matched.cloned(),
            });
        }
        None
    }

    pub fn has_consent(&self, account: &str, number: u64) -> bool {
        self.consent.get(account).is_some_and(|n| n.binary_search(&number).is_ok())
    }

    /// Every list's entry for `number`, whoever calls.
    pub fn entries(&self, number: u64) -> Vec<ListEntry> {
        let entry = |l: &List| {
            Some(ListEntry {
                list: Arc::clone(&l.cfg.name),
                response: Arc::clone(&l.cfg.response),
                entry: l.entry(number)?,
                accounts: l.cfg.accounts.clone(),
                consent_applies: l.cfg.consent_applies,
            })
        };
        self.lists.iter().filter_map(entry).collect()
    }

    /// Accounts whose consent list holds `number`.
    pub fn consenting_accounts(&self, number: u64) -> Vec<&str> {
        let mut a: Vec<&str> =
            self.consent.iter().filter(|(_, n)| n.binary_search(&number).is_ok()).map(|(a, _)| &**a).collect();
        a.sort_unstable();
        a
    }

    pub fn summary(&self) -> Vec<ListSummary> {
        self.lists
            .iter()
            .map(|l| {
                let s = &l.base.snap;
                ListSummary {
                    name: Arc::clone(&l.cfg.name),
                    path: l.cfg.path.clone(),
                    from_snapshot: l.base.from_snapshot,
                    count: l.base.numbers(),
                    entries: l.entries(),
                    delta_added: l.effective_added,
                    delta_removed: l.effective_removed,
                    bytes: s.bytes(),
                    built: s.built,
                    format_version: s.version,
                    line_errors: l.base.line_errors.count + l.delta_errors.count,
                    skipped: {
                        let mut e = l.base.line_errors.clone();
                        e.absorb(&l.delta_errors);
                        e.first
                    },
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
