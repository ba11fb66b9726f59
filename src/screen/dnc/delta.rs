//! Deltas: change lists applied on top of a list without rebuilding its snapshot.
//!
//! A list's `deltas` directory holds files applied in name order (so date-stamped FTC change
//! files apply oldest first), then the operator journal written by `sipguard dnc add/remove`.
//! A file is a deletion list when its name contains `deletion` or ends in `.del`; otherwise its
//! lines are additions. Any line may also say its operation itself: `add NUMBER[,cats]` or
//! `remove NUMBER`, or, in a change-list record `area code,number,...,A|D`, by a flag field. A later change to a number replaces an earlier one.
//! Hidden files and `*.tmp*` (files being written before a rename) are ignored.
use super::DncError;
use super::parse::{Categories, LineErrors, for_each_line, parse_line};
use crate::screen::number::{NumberPlan, format_e164};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The journal `sipguard dnc add/remove` appends to; applied after every other delta file.
pub const JOURNAL: &str = "sipguard-operator.delta";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Remove,
    /// Added, blocking the categories in the mask (0: every account).
    Add(u64),
}

/// The folded changes of one directory, sorted by number.
#[derive(Debug, Default, Clone)]
pub struct Delta {
    entries: Vec<(u64, Op)>,
    pub files: usize,
}

impl Delta {
    pub fn get(&self, n: u64) -> Option<Op> {
        if self.entries.is_empty() {
            return None;
        }
        self.entries.binary_search_by_key(&n, |e| e.0).ok().and_then(|i| self.entries.get(i)).map(|e| e.1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, Op)> + '_ {
        self.entries.iter().copied()
    }

    pub fn added(&self) -> usize {
        self.entries.iter().filter(|e| e.1 != Op::Remove).count()
    }

    pub fn removed(&self) -> usize {
        self.entries.len() - self.added()
    }
}

/// Files to apply, in order.
fn delta_files(dir: &Path) -> Result<Vec<PathBuf>, DncError> {
    let io = |e| DncError::Io { path: dir.to_path_buf(), source: e };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.contains(".tmp") || name.ends_with('~') {
            continue;
        }
        if entry.file_type().map_err(io)?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort_by_key(|p| (p.file_name().is_some_and(|n| n == JOURNAL), p.clone()));
    Ok(files)
}

/// Whether a file's plain lines are deletions.
fn is_deletions(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    name.contains("deletion") || name.ends_with(".del")
}

/// Whether a file name is one `read_dir` applies (for the watcher).
pub fn is_delta_file(path: &Path) -> bool {
    path.file_name()
        .map(|n| n.to_string_lossy())
        .is_some_and(|n| !n.starts_with('.') && !n.contains(".tmp") && !n.ends_with('~'))
}

/// A change-list record `area code,number,...` with more fields after the number (the FTC
/// change list carries several per record): the number, and whether a field flags it as a
/// deletion (`D`, `delete`...) or an addition (`A`, `add`...).
fn change_record(line: &str) -> Option<(u64, Option<bool>)> {
    let mut fields = line.split('#').next()?.split(',').map(str::trim);
    let (area, num) = (fields.next()?, fields.next()?);
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(area, 3) || !digits(num, 7) {
        return None;
    }
    let mut flag = None;
    let mut more = false;
    for f in fields {
        more = true;
        match f.to_ascii_lowercase().as_str() {
            "d" | "del" | "delete" | "deleted" | "deletion" => flag = Some(true),
            "a" | "add" | "added" | "addition" => flag = Some(false),
            _ => {}
        }
    }
    let n = parse_line(&format!("{area},{num}"), None).ok()??.number;
    more.then_some((n, flag))
}

/// Read and fold a deltas directory.
pub fn read_dir(
    dir: &Path,
    plan: Option<&NumberPlan>,
    categories: &mut Categories,
    errors: &mut LineErrors,
) -> Result<Delta, DncError> {
    let files = delta_files(dir)?;
    let mut ops: HashMap<u64, Op> = HashMap::new();
    for file in &files {
        let default_remove = is_deletions(file);
        for_each_line(file, errors, |text| {
            let t = text.trim_start();
            let (remove, rest) = if let Some(r) = t.strip_prefix("remove ") {
                (true, r)
            } else if let Some(r) = t.strip_prefix("add ") {
                (false, r)
            } else {
                (default_remove, t)
            };
            if let Some((number, flag)) = change_record(rest) {
                ops.insert(number, if flag.unwrap_or(remove) { Op::Remove } else { Op::Add(0) });
                return Ok(());
            }
            let Some(line) = parse_line(rest, plan)? else {
                return Ok(());
            };
            let op = match (remove, line.categories) {
                (true, _) => Op::Remove,
                (false, None) => Op::Add(0),
                (false, Some(spec)) => Op::Add(categories.mask(spec)?),
            };
            ops.insert(line.number, op);
            Ok(())
        })?;
    }
    let mut entries: Vec<(u64, Op)> = ops.into_iter().collect();
    entries.sort_unstable_by_key(|e| e.0);
    Ok(Delta { entries, files: files.len() })
}

/// Append one change to the operator journal of `dir` (one write, so a reader never sees
/// half a line). The watcher of a running proxy picks it up; it persists across restarts.
pub fn append_journal(dir: &Path, remove: bool, number: u64, categories: Option<&str>) -> Result<PathBuf, DncError> {
    let path = dir.join(JOURNAL);
    let mut line = format!("{} {}", if remove { "remove" } else { "add" }, format_e164(number));
    if let Some(c) = categories {
        line.push(',');
        line.push_str(c);
    }
    line.push('\n');
    let io = |e| DncError::Io { path: path.clone(), source: e };
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
    f.write_all(line.as_bytes()).map_err(io)?;
    f.sync_data().map_err(io)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screen::dnc::testutil::tempdir;

    #[test]
    fn files_fold_in_name_order_with_the_journal_last() {
        let dir = tempdir();
        std::fs::write(dir.join("2026-11-01-additions.txt"), "+12125550100\n+12125550101\n212,5550102\n").unwrap();
        std::fs::write(dir.join("2026-11-02-deletions.txt"), "+12125550101\n212,5550102\n").unwrap();
        std::fs::write(dir.join("2026-11-03.txt"), "+12125550102,finance\nremove +12125550103\n").unwrap();
        std::fs::write(dir.join("2026-11-04-changes.csv"), "212,5550105,2026-11-04,D\n212,5550106,2026-11-04,A\n")
            .unwrap();
        std::fs::write(dir.join(".hidden"), "+19999999999\n").unwrap();
        std::fs::write(dir.join("x.tmp123"), "+19999999998\n").unwrap();
        append_journal(&dir, true, 12125550100, None).unwrap();
        append_journal(&dir, false, 12125550104, Some("realestate")).unwrap();
        // Sorted after the journal by name, but applied before it.
        std::fs::write(dir.join("zzz.txt"), "+12125550100\n").unwrap();
        let mut cats = Categories::default();
        let mut errors = LineErrors::default();
        let d = read_dir(&dir, None, &mut cats, &mut errors).unwrap();
        assert_eq!(errors.count, 0);
        assert_eq!(d.files, 6);
        assert_eq!(d.get(12125550100), Some(Op::Remove), "journal removal wins");
        assert_eq!(d.get(12125550101), Some(Op::Remove));
        assert_eq!(d.get(12125550102), Some(Op::Add(0b01)), "re-added with a category");
        assert_eq!(d.get(12125550103), Some(Op::Remove));
        assert_eq!(d.get(12125550104), Some(Op::Add(0b10)));
        assert_eq!(d.get(19999999999), None);
        assert_eq!(d.get(19999999998), None);
        assert_eq!((d.get(12125550105), d.get(12125550106)), (Some(Op::Remove), Some(Op::Add(0))));
        assert_eq!((d.added(), d.removed()), (3, 4));
        let _ = std::fs::remove_dir_all(dir);
    }
}
