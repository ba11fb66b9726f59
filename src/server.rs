//! Running sipguard: bind the listeners, build the core from the config, and handle
//! signals (SIGHUP reloads, SIGTERM/SIGINT drain and stop).

use crate::admin;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::config::server::Transport;
use crate::control::{self, Control, Screening};
use crate::proxy::{Proxy, ProxyConfig};
use crate::screen::suspension::Suspensions;
use crate::state::complaint_index::IndexFile;
use crate::state::complaints::Desk;
use crate::telemetry::decisions::DecisionLog;
use crate::telemetry::metrics as m;
use crate::transport::DecisionSink;
use crate::transport::tcp::{TcpLimits, TcpPool};
use crate::transport::udp::UdpSenders;
use crate::transport::{Shell, tcp, udp};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {transport}:{addr}: {source}")]
    Bind { transport: &'static str, addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot open the decision log: {0}")]
    DecisionLog(std::io::Error),
    #[error("cannot set up the metrics recorder: {0}")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
    #[error("do-not-call lists: {0}")]
    Dnc(#[from] crate::screen::dnc::DncError),
    #[error("secret: {0}")]
    Secret(#[from] crate::state::secret::SecretError),
    #[error("suspensions journal in {dir}: {source}")]
    Suspensions { dir: std::path::PathBuf, source: std::io::Error },
    #[error("complaints journal or index in {dir}: {source}")]
    Complaints { dir: std::path::PathBuf, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Replay `complaints.journal` and restore `complaints.index`; the index file's writer runs
/// on a thread of its own.
fn open_complaints(
    dir: &std::path::Path,
    cc: crate::config::complaints::ComplaintsConfig,
    suspensions: Arc<Suspensions>,
) -> Result<(Arc<Desk>, Arc<IndexFile>), ServerError> {
    let err = |source| ServerError::Complaints { dir: dir.to_path_buf(), source };
    let now = SystemTime::now();
    let (index, file) = IndexFile::open(dir, cc.max_index_entries, cc.index_for, now).map_err(err)?;
    let (desk, replay) = Desk::open(dir, cc, index, suspensions, now).map_err(err)?;
    if replay.skipped > 0 {
        tracing::warn!(
            file = %crate::state::complaints::path(dir).display(),
            skipped = replay.skipped,
            "complaints journal: skipped unreadable lines (a write torn by a crash)"
        );
    }
    if replay.complaints > 0 {
        tracing::info!(complaints = replay.complaints, listed = desk.lists.len(), "complaints restored");
    }
    for (account, n) in desk.counts() {
        m::complaints(&account, n);
    }
    let file = Arc::new(file);
    file.clone().spawn()?;
    Ok((Arc::new(desk), file))
}

/// Feeds the complaint index with every forwarded call.
struct IndexSink(Arc<crate::screen::complaints::index::Index>);

impl DecisionSink for IndexSink {
    fn record(&self, d: &crate::proxy::Decided) {
        if let Some(e) = self.0.entry_of(d.time, &d.call_id, d.decision.source, &d.decision) {
            self.0.record(e, d.time);
        }
    }
}

/// Hands each decision to several sinks (the decision log and the complaint index).
struct Tee(Vec<Arc<dyn DecisionSink>>);

impl DecisionSink for Tee {
    fn record(&self, d: &crate::proxy::Decided) {
        for s in &self.0 {
            s.record(d);
        }
    }
}

/// Replay `suspensions.journal` and keep writing to it.
fn open_suspensions(dir: &std::path::Path) -> Result<Arc<Suspensions>, ServerError> {
    let (replay, journal) = crate::state::suspensions::FileJournal::open(dir, SystemTime::now())
        .map_err(|source| ServerError::Suspensions { dir: dir.to_path_buf(), source })?;
    if replay.skipped > 0 {
        tracing::warn!(
            file = %crate::state::suspensions::path(dir).display(),
            skipped = replay.skipped,
            "suspension journal: skipped unreadable lines (a write torn by a crash)"
        );
    }
    let store = Suspensions::new(replay.table, Some(Box::new(journal)));
    let n = store.list(SystemTime::now()).len();
    if n > 0 {
        tracing::info!(suspensions = n, "suspensions restored");
    }
    Ok(Arc::new(store))
}

impl DecisionSink for DecisionLog {
    fn record(&self, d: &crate::proxy::Decided) {
        self.log(d.time, &d.call_id, &d.decision);
    }
}

/// Run until SIGTERM/SIGINT. Returns after draining.
pub async fn run(cfg: Config) -> Result<(), ServerError> {
    // Handlers first: a SIGTERM that comes while the listeners open (a service manager
    // stopping us right after the start) waits for the loop below and drains cleanly,
    // instead of killing the process before it can.
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let rt = tokio::runtime::Handle::current();
    // The recorder goes in before anything records, so no early metric is lost.
    let admin = match &cfg.admin {
        Some(a) => {
            let handle = admin::install_recorder()?;
            let listener = tokio::net::TcpListener::bind(a.listen).await.map_err(|source| ServerError::Bind {
                transport: "admin",
                addr: a.listen,
                source,
            })?;
            Some((listener, handle, a.token.clone()))
        }
        None => None,
    };
    let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    m::started(env!("CARGO_PKG_VERSION"), started.as_secs_f64());
    let limits = TcpLimits {
        idle: cfg.server.tcp_idle,
        max_connections: cfg.server.tcp_max_connections,
        max_outbound: cfg.server.tcp_max_outbound_connections,
        max_per_source: cfg.server.tcp_max_connections_per_source,
        message_timeout: cfg.server.tcp_message_timeout,
        max_message_bytes: cfg.server.max_message_bytes,
    };
    let mut udp_sockets = Vec::new();
    let mut tcp_listeners = Vec::new();
    for l in &cfg.server.listen {
        match l.transport {
            Transport::Udp => {
                // One socket per thread on the same address (SO_REUSEPORT): a slow message
                // holds up its own thread only. A port 0 listener gets one: each socket
                // would draw a port of its own.
                let threads = if l.addr.port() == 0 { 1 } else { cfg.server.udp_threads };
                for _ in 0..threads {
                    let s = udp::bind(l.addr).map_err(|source| ServerError::Bind {
                        transport: "udp",
                        addr: l.addr,
                        source,
                    })?;
                    udp_sockets.push(Arc::new(s));
                }
            }
            Transport::Tcp => {
                let s = tokio::net::TcpListener::bind(l.addr).await.map_err(|source| ServerError::Bind {
                    transport: "tcp",
                    addr: l.addr,
                    source,
                })?;
                tcp_listeners.push(s);
            }
        }
    }
    let suspensions = open_suspensions(&cfg.state.dir)?;
    let complaints = match cfg.complaints {
        Some(cc) => Some(open_complaints(&cfg.state.dir, cc, suspensions.clone())?),
        None => None,
    };
    let mut screening = Screening::with(suspensions);
    if let Some((desk, _)) = &complaints {
        screening = screening.with_complaint_lists(desk.lists.clone());
    }
    screening.load_lists(&cfg)?;
    if cfg.dnc.is_some() && cfg.screening.is_none() {
        tracing::warn!("[dnc] lists are loaded but no call is screened without a [screening] section");
    }
    let screen = screening.apply(&cfg);
    let decisions = match &cfg.log.decisions {
        Some(sink) => Some(DecisionLog::start(sink).map_err(ServerError::DecisionLog)?.0),
        None => None,
    };
    if let Some(log) = &decisions {
        let dropped = log.dropped_counter();
        std::thread::Builder::new().name("sipguard-metrics".into()).spawn(move || {
            loop {
                let n = dropped.load(std::sync::atomic::Ordering::Relaxed);
                metrics::gauge!("sipguard_decision_log_dropped").set(n as f64);
                std::thread::sleep(Duration::from_secs(1));
            }
        })?;
    }
    let key = crate::state::secret::key(cfg.server.secret.as_deref(), &cfg.state.dir)?;
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    let proxy = Proxy::new(ProxyConfig::from_config(&cfg, key), screen)
        .with_events(Arc::new(crate::telemetry::metrics::Recorder));
    let log_sink = decisions.clone().map(|d| Arc::new(d) as Arc<dyn DecisionSink>);
    let index_sink = complaints.as_ref().map(|(d, _)| Arc::new(IndexSink(d.index.clone())) as Arc<dyn DecisionSink>);
    let sink = match (log_sink, index_sink) {
        (Some(l), Some(i)) => Some(Arc::new(Tee(vec![l, i])) as Arc<dyn DecisionSink>),
        (l, i) => l.or(i),
    };
    // The decision log and [complaints] are fixed at start (a change needs a restart), and
    // so is this.
    proxy.record_decisions(sink.is_some());
    let shell = Arc::new(Shell {
        proxy,
        gate: std::sync::RwLock::new(()),
        clock: Arc::new(SystemClock),
        udp: UdpSenders::new(udp_sockets.clone()),
        tcp: TcpPool::new(limits, rt.clone()),
        decisions: sink,
        guard: Arc::new(crate::security::Guard::new(crate::security::GuardConfig::from_config(&cfg), &key)),
        stopped: AtomicBool::new(false),
        lookups: crate::transport::lookup::Lookups::new(rt.clone()),
        cluster: cfg.cluster.clone().map(|c| Arc::new(crate::cluster::Cluster::new(c))),
    });
    shell.tcp.attach(&shell);
    shell.lookups.attach(&shell);
    restore_counters(&shell, &cfg.state.dir);
    if let Some(cluster) = shell.cluster.clone() {
        let (a, b, c) = (shell.clone(), shell.clone(), shell.clone());
        let dir = cfg.state.dir.clone();
        tokio::spawn(cluster.supervise(
            move || a.proxy.screen().local_counts(a.clock.now(), true),
            move || {
                tokio::task::block_in_place(|| save_counters(&b, &dir, None));
            },
            move || {
                c.proxy
                    .screen()
                    .windows(c.clock.now())
                    .unwrap_or(crate::screen::quota::Windows::at(chrono_tz::UTC, c.clock.now()))
            },
        ));
        // Give Redis a moment before the listeners open, so the first calls after a start
        // are counted there rather than decided by on_failure.
        let deadline = Instant::now() + FIRST_CONNECT;
        while !cluster_ref(&shell).is_some_and(|c| c.is_up()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let saver = {
        let shell = shell.clone();
        let dir = cfg.state.dir.clone();
        tokio::spawn(async move {
            let mut last = None;
            let mut tick = tokio::time::interval(crate::state::counters::SAVE_EVERY);
            loop {
                tick.tick().await;
                let (s, d) = (shell.clone(), dir.clone());
                let l = last;
                last = tokio::task::spawn_blocking(move || save_counters(&s, &d, l)).await.unwrap_or(last);
            }
        })
    };
    {
        // Chains near the end of their cache lifetime are fetched again in the background.
        let shell = shell.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                shell.lookups.refresh_due();
            }
        });
    }
    for sock in udp_sockets {
        let shell = shell.clone();
        let wait = cfg.server.udp_batch_wait;
        let overload = cfg.server.overload_delay;
        std::thread::Builder::new()
            .name("sipguard-udp".into())
            .spawn(move || udp::serve(shell, sock, wait, overload))?;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut accept_tasks = Vec::new();
    for l in tcp_listeners {
        accept_tasks.push(tokio::spawn(tcp::serve(shell.clone(), l, stop_rx.clone())));
    }
    let lists = screening.lists();
    let list_sizes: Vec<String> = lists.iter().map(|l| format!("{}={}", l.name, l.entries)).collect();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %cfg.file.display(),
        listen = %control::listeners(&cfg).join(","),
        admin = %cfg.admin.as_ref().map_or("off".to_string(), |a| a.listen.to_string()),
        advertise = %control::advertised(&cfg),
        screening = cfg.screening.is_some(),
        accounts = control::accounts(&cfg),
        lists = %list_sizes.join(","),
        "sipguard started"
    );
    let cfg_state_dir = cfg.state.dir.clone();
    let control = Arc::new(
        Control::new(shell.clone(), screening, cfg).with_complaints(complaints.as_ref().map(|(d, _)| d.clone())),
    );
    control.export_lists();
    let admin_task = admin.map(|(listener, handle, token)| {
        tokio::spawn(admin::serve(listener, control.clone(), handle, token, stop_rx.clone()))
    });
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let c = control.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || c.reload()).await {
                    tracing::error!(error = %e, "reload task failed");
                }
                reopen_decisions(decisions.as_ref()).await;
            }
            _ = usr1.recv() => reopen_decisions(decisions.as_ref()).await,
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("stopping: no new connections; draining TCP");
    // Stop accepting (SIP over TCP and admin), then let open TCP connections finish for the
    // grace period.
    let _ = stop_tx.send(true);
    for t in accept_tasks {
        let _ = t.await;
    }
    let deadline = Instant::now() + control.config().server.shutdown_grace;
    while shell.tcp.open_connections() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // No message is handled after this, so the flush below writes every decision made.
    shell.stop();
    saver.abort();
    let _ = saver.await;
    save_counters(&shell, &cfg_state_dir, None);
    if let Some(log) = &decisions {
        log.flush();
    }
    if let Some((_, file)) = &complaints
        && let Err(e) = file.flush()
    {
        tracing::warn!(error = %e, "cannot write the index of forwarded calls");
    }
    if let Some(t) = admin_task {
        // An admin client holding a connection open must not hold up the exit.
        let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
    }
    tracing::info!(open_tcp = shell.tcp.open_connections(), "sipguard stopped");
    Ok(())
}

/// Log rotation (SIGUSR1, and SIGHUP): the decision log writes what it holds to the file it
/// has open, then opens its path again.
async fn reopen_decisions(log: Option<&DecisionLog>) {
    let Some(log) = log.cloned() else { return };
    match tokio::task::spawn_blocking(move || log.reopen()).await {
        Ok(Ok(())) => tracing::info!("decision log reopened"),
        Ok(Err(e)) => tracing::error!(error = %e, "decision log not reopened; still writing to the old file"),
        Err(e) => tracing::error!(error = %e, "decision log reopen task failed"),
    }
}

/// How long start-up waits for the first connection to Redis.
const FIRST_CONNECT: Duration = Duration::from_secs(2);

fn cluster_ref(shell: &Shell) -> Option<&crate::cluster::Cluster> {
    shell.cluster.as_deref()
}

/// Add the counts saved by the last run (those of windows still current).
fn restore_counters(shell: &Shell, dir: &std::path::Path) {
    let screen = shell.proxy.screen();
    match crate::state::counters::load(dir) {
        Ok(saved) if saved.is_empty() => {}
        Ok(saved) => {
            let calls = screen.merge_counts(&saved, shell.clock.now());
            tracing::info!(calls_today = calls, accounts = saved.len(), "counters restored from the last run");
        }
        Err(e) => {
            // Keep the file for a look; counting starts again from zero.
            let path = crate::state::counters::path(dir);
            let aside = path.with_extension("json.unreadable");
            let _ = std::fs::rename(&path, &aside);
            tracing::error!(error = %e, moved_to = %aside.display(), "counters not restored: the file is unreadable");
        }
    }
}

/// Save this node's counts when they changed since `last` (a fingerprint); returns the new
/// fingerprint. `None` saves whatever there is (shutdown).
type Fingerprint = Option<(usize, u64, u64, usize)>;
fn save_counters(shell: &Shell, dir: &std::path::Path, last: Fingerprint) -> Fingerprint {
    let now = shell.clock.now();
    let mut counts = shell.proxy.screen().local_counts(now, false);
    // Counts on their way to Redis are still this node's until written.
    if let Some(c) = &shell.cluster {
        counts.extend(c.unwritten());
    }
    let fp = Some(crate::state::counters::fingerprint(&counts));
    if last.is_some() && fp == last {
        return last;
    }
    let unix = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    match crate::state::counters::save(dir, &counts, unix) {
        Ok(()) => fp,
        Err(e) => {
            tracing::warn!(error = %e, "counters not saved");
            last
        }
    }
}
