//! Running sipguard: bind the listeners, build the core from the config, and handle
//! signals (SIGHUP reloads, SIGTERM/SIGINT drain and stop).

use crate::clock::SystemClock;
use crate::config::Config;
use crate::config::server::Transport;
use crate::proxy::{Proxy, ProxyConfig};
use crate::screen::dnc::Dnc;
use crate::screen::policy::Screener;
use crate::screen::{PassThrough, Screen};
use crate::telemetry::decisions::DecisionLog;
use crate::transport::DecisionSink;
use crate::transport::tcp::{TcpLimits, TcpPool};
use crate::transport::udp::UdpSenders;
use crate::transport::{Shell, tcp, udp};
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {transport}:{addr}: {source}")]
    Bind { transport: &'static str, addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot open the decision log: {0}")]
    DecisionLog(std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The screening state that outlives reloads: the engine (whose counters carry over) and
/// the DNC lists, both swapped atomically inside.
pub struct Screening {
    pub screener: Mutex<Option<Arc<Screener>>>,
    pub dnc: Arc<ArcSwap<Dnc>>,
}

impl Screening {
    fn new() -> Self {
        Screening { screener: Mutex::new(None), dnc: Arc::new(ArcSwap::from_pointee(Dnc::default())) }
    }

    pub fn current(&self) -> Option<Arc<Screener>> {
        self.screener.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The screen step for `cfg`: the existing engine reloaded, a new one, or pass-through.
    fn apply(&self, cfg: &Config) -> Arc<dyn Screen> {
        let mut slot = self.screener.lock().unwrap_or_else(|e| e.into_inner());
        match (&cfg.screening, slot.as_ref()) {
            (Some(sc), Some(existing)) => {
                existing.reload(sc.clone());
                existing.clone()
            }
            (Some(sc), None) => {
                let s = Arc::new(Screener::new(sc.clone(), self.dnc.clone()));
                *slot = Some(s.clone());
                s
            }
            (None, _) => {
                *slot = None;
                Arc::new(PassThrough)
            }
        }
    }
}

impl DecisionSink for DecisionLog {
    fn record(&self, d: Box<crate::proxy::Decided>) {
        self.log(d.time, &d.call_id, &d.decision);
    }
}

/// Run until SIGTERM/SIGINT. Returns after draining.
pub async fn run(cfg: Config) -> Result<(), ServerError> {
    let rt = tokio::runtime::Handle::current();
    let limits = TcpLimits {
        idle: cfg.server.tcp_idle,
        max_connections: cfg.server.tcp_max_connections,
        max_message_bytes: cfg.server.max_message_bytes,
    };
    let mut udp_sockets = Vec::new();
    let mut tcp_listeners = Vec::new();
    for l in &cfg.server.listen {
        match l.transport {
            Transport::Udp => {
                let s =
                    udp::bind(l.addr).map_err(|source| ServerError::Bind { transport: "udp", addr: l.addr, source })?;
                udp_sockets.push(Arc::new(s));
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
    let screening = Screening::new();
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
    let shell = Arc::new(Shell {
        proxy: std::sync::Mutex::new(Proxy::new(ProxyConfig::from_server(&cfg.server), screen)),
        clock: Arc::new(SystemClock),
        udp: UdpSenders::new(udp_sockets.clone()),
        tcp: TcpPool::new(limits, rt.clone()),
        decisions: decisions.clone().map(|d| Arc::new(d) as Arc<dyn DecisionSink>),
    });
    shell.tcp.attach(&shell);
    for sock in udp_sockets {
        let shell = shell.clone();
        let max = cfg.server.max_message_bytes;
        std::thread::Builder::new().name("sipguard-udp".into()).spawn(move || udp::serve(shell, sock, max))?;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut accept_tasks = Vec::new();
    for l in tcp_listeners {
        accept_tasks.push(tokio::spawn(tcp::serve(shell.clone(), l, stop_rx.clone())));
    }
    let listen: Vec<String> = cfg.server.listen.iter().map(|l| format!("{}:{}", l.transport.label(), l.addr)).collect();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %listen.join(","),
        advertise = %cfg.server.advertise,
        screening = cfg.screening.is_some(),
        "sipguard started"
    );
    let mut current = cfg;
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => current = reload(&shell, &screening, current),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // Stop accepting, then let open TCP connections finish for the grace period.
    let _ = stop_tx.send(true);
    for t in accept_tasks {
        let _ = t.await;
    }
    let deadline = Instant::now() + current.server.shutdown_grace;
    while shell.tcp.open_connections() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(log) = &decisions {
        log.flush();
    }
    tracing::info!(open_tcp = shell.tcp.open_connections(), "sipguard stopped");
    Ok(())
}

/// Re-read the config file; a bad file is refused and the running config kept.
pub fn reload(shell: &Shell, screening: &Screening, current: Config) -> Config {
    let file: PathBuf = current.file.clone();
    match Config::load(&file) {
        Ok(new) => {
            if new.server.listen != current.server.listen {
                tracing::warn!("server.listen changed: listeners change only on restart");
            }
            if new.log.decisions != current.log.decisions {
                tracing::warn!("log.decisions changed: the decision log moves only on restart");
            }
            let screen = screening.apply(&new);
            let mut proxy = shell.proxy();
            proxy.reconfigure(ProxyConfig::from_server(&new.server));
            proxy.set_screen(screen);
            drop(proxy);
            metrics::counter!("sipguard_reloads_total", "result" => "ok").increment(1);
            tracing::info!(file = %file.display(), "configuration reloaded");
            new
        }
        Err(e) => {
            metrics::counter!("sipguard_reloads_total", "result" => "failed").increment(1);
            tracing::error!(file = %file.display(), error = %e, "reload refused; keeping the running configuration");
            current
        }
    }
}
