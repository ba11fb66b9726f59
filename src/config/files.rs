//! check-config loads the files a valid configuration names the way start-up does, so that
//! it never passes a config the proxy then refuses. Owned numbers, trust anchors and CRLs are
//! read during validation already; this adds the do-not-call lists: text lists, snapshots,
//! deltas and consent files.
//!
//! Every bad line is reported, not only the first: the lists are loaded leniently here and
//! each skipped line of a strict list (which start-up would refuse) becomes an error, while
//! a lenient list's skipped lines are warnings (start-up skips and counts them).
use super::{Config, Diag};
use crate::screen::dnc::parse::Skipped;
use crate::screen::dnc::{Dnc, DncError};
use std::path::Path;

/// Skipped lines of a lenient file shown as warnings; the rest are counted.
const WARNED_LINES: usize = 5;

/// What loading the referenced files found.
#[derive(Debug, Default)]
pub struct FileReport {
    /// Problems start-up would refuse.
    pub errors: Vec<Diag>,
    /// Problems start-up would log and go on.
    pub warnings: Vec<Diag>,
}

/// Load every file `cfg` names (`text` is the config file's text, to point at the line that
/// names a file that cannot be read).
pub fn check(cfg: &Config, text: &str) -> FileReport {
    let mut report = FileReport::default();
    let Some(dc) = &cfg.dnc else { return report };
    let mut lenient = dc.clone();
    lenient.strict = false;
    lenient.lists.iter_mut().for_each(|l| l.strict = false);
    let dnc = match Dnc::load(&lenient) {
        Ok(d) => d,
        Err(e) => {
            let at = |path: &Path| naming_line(text, path);
            let (line, msg) = match &e {
                DncError::Io { path, .. } | DncError::Snapshot { path, .. } => (at(path), e.to_string()),
                _ => (0, e.to_string()),
            };
            report.errors.push(Diag { file: cfg.file.clone(), line, msg });
            return report;
        }
    };
    for (list, summary) in dc.lists.iter().zip(dnc.summary()) {
        let what = format!("dnc.list `{}`", list.name);
        skipped(&mut report, &what, list.strict, summary.line_errors, &summary.skipped);
    }
    let consent = &dnc.consent_errors;
    skipped(&mut report, "dnc.consent", dc.strict, consent.count, &consent.first);
    report
}

/// Report the skipped lines of one list: each an error when the list is strict, else a
/// count and the first few as warnings.
fn skipped(report: &mut FileReport, what: &str, strict: bool, count: u64, first: &[Skipped]) {
    let diag =
        |s: &Skipped, prefix: &str| Diag { file: s.file.clone(), line: s.line, msg: format!("{prefix}{}", s.msg) };
    let Some(head) = first.first() else { return };
    if strict {
        report.errors.extend(first.iter().map(|s| diag(s, "")));
        let more = count.saturating_sub(first.len() as u64);
        if more > 0 {
            let msg = format!("{what}: {more} more bad lines (strict: the list is refused)");
            report.errors.push(Diag { file: head.file.clone(), line: head.line, msg });
        }
        return;
    }
    let msg = format!("{what}: {count} bad lines skipped (strict = false), the first from here");
    report.warnings.push(Diag { file: head.file.clone(), line: head.line, msg });
    report.warnings.extend(first.iter().take(WARNED_LINES).map(|s| diag(s, "skipped: ")));
}

/// The line of the config that names `path` (by its file name), else 0.
fn naming_line(text: &str, path: &Path) -> usize {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return 0 };
    text.find(name).map_or(0, |o| text[..o].matches('\n').count() + 1)
}
