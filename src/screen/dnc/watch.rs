//! Hot reload: a new `Dnc` is loaded aside and swapped in atomically, so a call is always
//! screened against the old or the new lists, never against nothing. A failed load leaves
//! the old lists in place.
//!
//! The watcher watches directories, not files, because lists are replaced by rename (a watch
//! on the old inode would go quiet). Bursts of events are debounced into one reload.
use super::{Dnc, DncError, delta};
use crate::config::dnc::DncConfig;
use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

/// Quiet time after the last change before reloading: a copy or a burst of journal
/// appends becomes one reload.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Load the configured lists aside (reusing unchanged bases) and swap them in. On error the
/// current lists stay active. The SIGHUP handler calls this too.
pub fn reload(cfg: &DncConfig, target: &ArcSwap<Dnc>) -> Result<Arc<Dnc>, DncError> {
    let current = target.load_full();
    let next = Arc::new(Dnc::load_reusing(cfg, Some(&current))?);
    target.store(Arc::clone(&next));
    Ok(next)
}

/// The result of one watcher-triggered reload, for whoever listens (tests, the admin API).
#[derive(Debug, Clone)]
pub enum ReloadOutcome {
    Reloaded { took: Duration },
    Failed(String),
}

/// Keeps the watch alive; dropping it stops watching and ends the reload thread.
pub struct WatcherHandle {
    _watcher: notify::RecommendedWatcher,
    outcomes: Receiver<ReloadOutcome>,
}

impl WatcherHandle {
    /// Outcomes of watcher reloads (the last few are kept if nobody reads them).
    pub fn outcomes(&self) -> &Receiver<ReloadOutcome> {
        &self.outcomes
    }
}

/// What changes matter: the list and consent files themselves, and any delta file.
#[derive(Debug, Default)]
struct Interest {
    files: HashSet<PathBuf>,
    delta_dirs: HashSet<PathBuf>,
}

impl Interest {
    fn new(cfg: &DncConfig) -> Interest {
        // Events name paths under the directory as watched: compare canonical forms.
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let file = |p: &Path| match (p.parent(), p.file_name()) {
            (Some(d), Some(n)) => canon(if d.as_os_str().is_empty() { Path::new(".") } else { d }).join(n),
            _ => p.to_path_buf(),
        };
        let files = cfg.lists.iter().map(|l| file(&l.path)).chain(cfg.consent.iter().map(|c| file(&c.path)));
        let delta_dirs = cfg.lists.iter().filter_map(|l| l.deltas.as_deref().map(canon));
        Interest { files: files.collect(), delta_dirs: delta_dirs.collect() }
    }

    /// Directories to watch.
    fn dirs(&self) -> HashSet<PathBuf> {
        let parents = self.files.iter().map(|f| f.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf));
        parents.chain(self.delta_dirs.iter().cloned()).collect()
    }

    fn matters(&self, ev: &notify::Event) -> bool {
        // Reads (including our own loads) are not changes.
        if matches!(ev.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write)) {
            return false;
        }
        ev.paths.iter().any(|p| {
            self.files.contains(p)
                || (p.parent().is_some_and(|d| self.delta_dirs.contains(d)) && delta::is_delta_file(p))
        })
    }
}

/// Watch the configured files and reload into `target` when they change.
pub fn spawn_watcher(cfg: DncConfig, target: Arc<ArcSwap<Dnc>>) -> Result<WatcherHandle, DncError> {
    let interest = Interest::new(&cfg);
    let dirs = interest.dirs();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(ev) if interest.matters(&ev) => {
            let _ = tx.send(());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("DNC file watch error: {e}"),
    })
    .map_err(|source| DncError::Watch { path: PathBuf::new(), source })?;
    for dir in &dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| DncError::Watch { path: dir.clone(), source })?;
    }
    let (out_tx, outcomes) = std::sync::mpsc::sync_channel(16);
    std::thread::Builder::new()
        .name("dnc-watch".into())
        .spawn(move || reload_loop(&cfg, &target, &rx, &out_tx))
        .map_err(|e| DncError::Io { path: PathBuf::from("dnc-watch thread"), source: e })?;
    Ok(WatcherHandle { _watcher: watcher, outcomes })
}

/// Wait for a change, let the burst settle, reload; until the watcher is dropped.
fn reload_loop(cfg: &DncConfig, target: &ArcSwap<Dnc>, changes: &Receiver<()>, out: &SyncSender<ReloadOutcome>) {
    while changes.recv().is_ok() {
        loop {
            match changes.recv_timeout(DEBOUNCE) {
                Ok(()) => continue,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let start = Instant::now();
        let outcome = match reload(cfg, target) {
            Ok(dnc) => {
                for s in dnc.summary() {
                    tracing::info!(list = %s.name, count = s.entries, base = s.count, added = s.delta_added, removed = s.delta_removed,
                        line_errors = s.line_errors, "DNC list reloaded");
                }
                ReloadOutcome::Reloaded { took: start.elapsed() }
            }
            Err(e) => {
                tracing::error!("DNC reload failed, keeping the previous lists: {e}");
                ReloadOutcome::Failed(e.to_string())
            }
        };
        let _ = out.try_send(outcome);
    }
}
