//! The running proxy's control surface, shared by the signal handlers and the admin API:
//! one reload function (SIGHUP and `POST /reload`), health, and account look-ups.

use crate::config::{Config, ConfigErrors};
use crate::proxy::ProxyConfig;
use crate::screen::complaints::lists::Lists as ComplaintLists;
use crate::screen::dnc::query::{self, Answer as DncAnswer, AsAccount};
use crate::screen::dnc::watch::{self, WatcherHandle};
use crate::screen::dnc::{Dnc, DncError};
use crate::screen::policy::{AccountStatus, Screener};
use crate::screen::suspension::Suspensions;
use crate::screen::{PassThrough, Screen};
use crate::state::complaints::Desk;
use crate::telemetry::metrics as m;
use crate::transport::Shell;
use arc_swap::ArcSwap;
use serde::Serialize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The screening state that outlives reloads: the engine (whose counters carry over) and
/// the DNC lists, both swapped atomically inside.
pub struct Screening {
    pub screener: Mutex<Option<Arc<Screener>>>,
    pub dnc: Arc<ArcSwap<Dnc>>,
    /// Reloads the lists when their files change; replaced when the config changes.
    watcher: Mutex<Option<WatcherHandle>>,
    /// Suspended caller IDs and accounts, kept whatever the config says.
    pub suspensions: Arc<Suspensions>,
    /// The `complaints` lists (the complaint desk's), likewise.
    pub complaint_lists: Arc<ComplaintLists>,
}

impl Default for Screening {
    fn default() -> Self {
        Screening::with(Arc::default())
    }
}

impl Screening {
    /// Screening state around an existing suspension store (replayed from its journal).
    pub fn with(suspensions: Arc<Suspensions>) -> Screening {
        Screening {
            screener: Mutex::new(None),
            dnc: Arc::new(ArcSwap::from_pointee(Dnc::default())),
            watcher: Mutex::new(None),
            suspensions,
            complaint_lists: Arc::default(),
        }
    }

    /// Screen with the complaint desk's `complaints` lists.
    pub fn with_complaint_lists(mut self, lists: Arc<ComplaintLists>) -> Screening {
        self.complaint_lists = lists;
        self
    }

    pub fn current(&self) -> Option<Arc<Screener>> {
        lock(&self.screener).clone()
    }

    /// The screen step for `cfg`: the existing engine reloaded, a new one, or pass-through.
    pub fn apply(&self, cfg: &Config) -> Arc<dyn Screen> {
        let mut slot = lock(&self.screener);
        match (&cfg.screening, slot.as_ref()) {
            (Some(sc), Some(existing)) => {
                existing.reload(sc.clone(), std::time::SystemTime::now());
                existing.clone()
            }
            (Some(sc), None) => {
                let s = Arc::new(
                    Screener::new(sc.clone(), self.dnc.clone())
                        .with_suspensions(self.suspensions.clone())
                        .with_complaint_lists(self.complaint_lists.clone()),
                );
                *slot = Some(s.clone());
                s
            }
            (None, _) => {
                *slot = None;
                Arc::new(PassThrough)
            }
        }
    }

    /// Load the lists `cfg` names aside (reusing unchanged ones) and swap them in, then
    /// watch their files. On error the lists in force stay, and so does the old watcher.
    pub fn load_lists(&self, cfg: &Config) -> Result<(), DncError> {
        let Some(dc) = &cfg.dnc else {
            self.dnc.store(Arc::new(Dnc::default()));
            *lock(&self.watcher) = None;
            return Ok(());
        };
        watch::reload(dc, &self.dnc)?;
        *lock(&self.watcher) = Some(watch::spawn_watcher(dc.clone(), self.dnc.clone())?);
        Ok(())
    }

    /// The loaded do-not-call lists.
    pub fn lists(&self) -> Vec<ListInfo> {
        self.dnc
            .load()
            .summary()
            .into_iter()
            .map(|s| {
                let built_unix = s.built.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs());
                ListInfo {
                    name: s.name.to_string(),
                    entries: s.entries,
                    bytes: s.bytes,
                    version: format!(
                        "{} v{} built {}",
                        if s.from_snapshot { "snapshot" } else { "text" },
                        s.format_version,
                        built_unix.unwrap_or(0)
                    ),
                    built_unix,
                }
            })
            .collect()
    }
}

/// Why `GET /dnc/<number>` has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DncQueryError {
    #[error("`{0}` is not a phone number")]
    BadNumber(String),
    #[error("no account `{0}`")]
    UnknownAccount(String),
}

/// A loaded do-not-call list, as `/health` and the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListInfo {
    pub name: String,
    pub entries: u64,
    pub bytes: u64,
    pub version: String,
    pub built_unix: Option<u64>,
}

/// Outcome of the last reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadStatus {
    /// "none" (no reload yet), "ok" or "failed".
    pub result: &'static str,
    pub at_unix: Option<u64>,
    /// Why a failed reload was refused: `FILE:LINE: problem` lines.
    pub error: Option<String>,
    /// Changed settings that only take effect on restart.
    pub restart_needed: Vec<&'static str>,
}

/// What `GET /health` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub config_file: String,
    pub listeners: Vec<String>,
    pub admin: Option<String>,
    pub screening: bool,
    pub accounts: usize,
    pub lists: Vec<ListInfo>,
    pub last_reload: ReloadStatus,
}

/// The running configuration and what acts on it.
pub struct Control {
    shell: Arc<Shell>,
    screening: Screening,
    /// Held for the whole of a reload, so two reloads (signal and HTTP) never interleave.
    current: Mutex<Arc<Config>>,
    last_reload: Mutex<ReloadStatus>,
    started: Instant,
    /// `[complaints]`: the desk that files them (set at start).
    complaints: Option<Arc<Desk>>,
}

impl Control {
    pub fn new(shell: Arc<Shell>, screening: Screening, cfg: Config) -> Control {
        Control {
            shell,
            screening,
            current: Mutex::new(Arc::new(cfg)),
            last_reload: Mutex::new(ReloadStatus {
                result: "none",
                at_unix: None,
                error: None,
                restart_needed: Vec::new(),
            }),
            started: Instant::now(),
            complaints: None,
        }
    }

    /// Take complaints through `desk`.
    pub fn with_complaints(mut self, desk: Option<Arc<Desk>>) -> Control {
        self.complaints = desk;
        self
    }

    pub fn complaints(&self) -> Option<&Arc<Desk>> {
        self.complaints.as_ref()
    }

    pub fn config(&self) -> Arc<Config> {
        lock(&self.current).clone()
    }

    pub fn shell(&self) -> &Arc<Shell> {
        &self.shell
    }

    /// Re-read the config file and apply it; a bad file is refused and the running config
    /// kept. Blocking (file I/O): call from a blocking thread.
    pub fn reload(&self) -> ReloadStatus {
        let mut current = lock(&self.current);
        let file = current.file.clone();
        let now = SystemTime::now();
        let at = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let status = match Config::load(&file) {
            Ok(mut new) => match self.screening.load_lists(&new) {
                Err(e) => {
                    tracing::error!(error = %e, "reload refused: do-not-call lists did not load; keeping the running configuration and lists");
                    let msg = format!("{}: dnc: {e}", file.display());
                    ReloadStatus {
                        result: "failed",
                        at_unix: Some(at.as_secs()),
                        error: Some(msg),
                        restart_needed: Vec::new(),
                    }
                }
                Ok(()) => {
                    let restart_needed = restart_needed(&current, &new);
                    for key in &restart_needed {
                        tracing::warn!("{key} changed: takes effect on restart only");
                    }
                    // The counters' backend is the one the process started with.
                    new.cluster = current.cluster.clone();
                    if let Some(s) = new.screening.as_mut() {
                        s.cluster = new.cluster.as_ref().map(crate::config::cluster::RedisConfig::shared);
                    }
                    self.apply(&new);
                    tracing::info!(file = %file.display(), "configuration reloaded");
                    *current = Arc::new(new);
                    ReloadStatus { result: "ok", at_unix: Some(at.as_secs()), error: None, restart_needed }
                }
            },
            Err(e) => {
                tracing::error!(file = %file.display(), error = %e, "reload refused; keeping the running configuration");
                failed(at.as_secs(), &e)
            }
        };
        m::reload(status.result == "ok", at.as_secs_f64());
        *lock(&self.last_reload) = status.clone();
        status
    }

    fn apply(&self, new: &Config) {
        let screen = self.screening.apply(new);
        if let (Some(desk), Some(cc)) = (&self.complaints, new.complaints) {
            desk.reconfigure(cc);
        }
        let proxy = self.shell.proxy();
        // The key stays the one loaded at start: branches and dialog proofs already handed
        // out must keep verifying (a new `[server] secret` takes effect on restart).
        let key = proxy.config().key;
        proxy.reconfigure(ProxyConfig::from_config(new, key));
        self.shell.guard.reconfigure(crate::security::GuardConfig::from_config(new));
        proxy.set_screen(screen);
        self.export_lists();
    }

    /// Set the list gauges from the loaded lists.
    pub fn export_lists(&self) {
        for l in self.screening.lists() {
            m::dnc_list(&l.name, l.entries, l.bytes, l.built_unix);
        }
    }

    pub fn lists(&self) -> Vec<ListInfo> {
        self.screening.lists()
    }

    pub fn health(&self) -> Health {
        let cfg = self.config();
        Health {
            status: "ok",
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs(),
            config_file: cfg.file.display().to_string(),
            listeners: listeners(&cfg),
            admin: cfg.admin.as_ref().map(|a| a.listen.to_string()),
            screening: cfg.screening.is_some(),
            accounts: accounts(&cfg),
            lists: self.lists(),
            last_reload: lock(&self.last_reload).clone(),
        }
    }

    /// The suspension store (the admin API lists and lifts through it).
    pub fn suspensions(&self) -> &Arc<Suspensions> {
        &self.screening.suspensions
    }

    pub fn now(&self) -> SystemTime {
        self.shell.clock.now()
    }

    /// Sources banned by the flood defence now.
    pub fn bans(&self) -> Vec<crate::security::Ban> {
        self.shell.guard.bans(self.shell.clock.now())
    }

    /// Counters and remaining quota of a configured account; None when unknown or when
    /// screening is off.
    pub fn account(&self, id: &str) -> Option<AccountStatus> {
        let now = self.shell.clock.now();
        self.screening.current()?.account_snapshot(id, now)
    }

    /// Set the call behaviour gauges (at each scrape of `/metrics`).
    pub fn export_behaviour(&self) {
        let now = self.shell.clock.now();
        let suspensions = self.screening.suspensions.list(now);
        match self.screening.current() {
            Some(s) => {
                crate::telemetry::metrics::behaviour(&s.all_figures(now), Some(&s.behaviour().tracker), &suspensions)
            }
            None => crate::telemetry::metrics::behaviour(&[], None, &suspensions),
        }
    }

    /// Each caller ID's behaviour figures of an account, most attempts first, at most
    /// `limit`; None when the account is unknown or its behaviour is not tracked.
    pub fn caller_figures(&self, id: &str, limit: usize) -> Option<Vec<(u64, crate::screen::behaviour::Figures)>> {
        let now = self.shell.clock.now();
        self.screening.current()?.caller_figures(id, now, limit)
    }

    /// Whether the running proxy blocks `number` for `account` (by the lists and accounts
    /// loaded now): the answer `sipguard dnc check` prints, from the same code.
    pub fn dnc_query(&self, number: &str, account: Option<&str>) -> Result<DncAnswer, DncQueryError> {
        let cfg = self.config();
        let plan =
            cfg.screening.as_ref().and_then(|s| s.plan.as_ref()).or(cfg.dnc.as_ref().and_then(|d| d.plan.as_ref()));
        let status = match account {
            Some(id) => Some(self.account(id).ok_or_else(|| DncQueryError::UnknownAccount(id.into()))?),
            None => None,
        };
        let n = crate::screen::number::parse(number, plan).ok_or_else(|| DncQueryError::BadNumber(number.into()))?;
        let acct = status.as_ref().map(|s| AsAccount { id: &s.id, category: s.category.as_deref() });
        Ok(query::query(&self.screening.dnc.load(), n, acct))
    }

    /// As `account`, with the cluster-wide counts when the counters are shared.
    pub async fn account_everywhere(&self, id: &str) -> Option<AccountStatus> {
        let now = self.shell.clock.now();
        let mut status = self.account(id)?;
        if let (Some(cluster), Some(w)) = (&self.shell.cluster, self.shell.proxy.screen().windows(now))
            && let Ok(u) = cluster.usage(id, &w).await
        {
            status.add_cluster(&u);
        }
        Some(status)
    }
}

/// The configured accounts, as the complaint desk attributes by them.
impl crate::state::complaints::Accounts for Control {
    fn owner_of(&self, n: u64) -> Option<Arc<str>> {
        self.screening.current()?.owner_of(n)
    }
    fn category_of(&self, account: &str) -> Option<Arc<str>> {
        self.screening.current()?.category_of(account)
    }
}

fn failed(at: u64, e: &ConfigErrors) -> ReloadStatus {
    ReloadStatus { result: "failed", at_unix: Some(at), error: Some(e.to_string()), restart_needed: Vec::new() }
}

/// Settings read once at start: listeners, the admin listener, logging.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let admin = |c: &Config| c.admin.as_ref().map(|a| (a.listen, a.token.clone()));
    let checks = [
        ("server.listen", old.server.listen != new.server.listen),
        ("server.udp_batch_wait_us", old.server.udp_batch_wait != new.server.udp_batch_wait),
        ("server.secret", old.server.secret != new.server.secret),
        ("server.udp_threads", old.server.udp_threads != new.server.udp_threads),
        ("server.overload_delay_ms", old.server.overload_delay != new.server.overload_delay),
        ("state.dir", old.state.dir != new.state.dir),
        ("[admin]", admin(old) != admin(new)),
        ("log.level", old.log.level != new.log.level),
        ("log.format", old.log.format != new.log.format),
        ("log.decisions", old.log.decisions != new.log.decisions),
        ("[cluster]", old.cluster != new.cluster),
        ("[complaints]", old.complaints.is_some() != new.complaints.is_some()),
    ];
    checks.into_iter().filter_map(|(key, changed)| changed.then_some(key)).collect()
}

/// `udp:127.0.0.1:5060` for each SIP listener.
/// The advertised addresses, for the start-up line.
pub fn advertised(cfg: &Config) -> String {
    [&cfg.server.advertise_v4, &cfg.server.advertise_v6]
        .into_iter()
        .flatten()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

pub fn listeners(cfg: &Config) -> Vec<String> {
    cfg.server.listen.iter().map(|l| format!("{}:{}", l.transport.label(), l.addr)).collect()
}

pub fn accounts(cfg: &Config) -> usize {
    cfg.screening.as_ref().map_or(0, |s| s.accounts.len())
}

/// A poisoned lock still holds consistent data here: every writer stores whole values.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(text: &str) -> Config {
        match Config::parse(Path::new("t.toml"), text) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn listener_and_log_changes_need_a_restart() {
        let a = cfg("[server]\nlisten = [\"udp:127.0.0.1:5060\"]\n");
        let b = cfg("[server]\nlisten = [\"udp:127.0.0.1:5070\"]\n[log]\nformat = \"json\"\n");
        assert_eq!(restart_needed(&a, &b), ["server.listen", "log.format"]);
        assert!(restart_needed(&a, &a).is_empty());
    }
}
