//! The I/O shell: sockets move bytes between the network and the sans-IO `Proxy`. UDP runs
//! on dedicated blocking threads (batches of datagrams per system call, no reactor wake-up
//! in the way); TCP runs on tokio with one reader and one writer task per connection.

pub mod lookup;
pub mod tcp;
pub mod udp;

use crate::clock::Clock;
use crate::config::server::Transport;
use crate::proxy::{Action, Inbound, Load, Proxy};
use crate::security::Admit;
use crate::telemetry::metrics as m;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// Receives screening decisions for the decision log (written off the hot path).
pub trait DecisionSink: Send + Sync {
    fn record(&self, d: &crate::proxy::Decided);
}

/// Everything a transport needs to run the core and send what it returns.
pub struct Shell {
    pub proxy: Proxy,
    /// Messages hold it shared while inside the core; `stop` takes it exclusively, so once
    /// it returns no message is inside and none will enter.
    pub gate: RwLock<()>,
    pub clock: Arc<dyn Clock>,
    pub udp: udp::UdpSenders,
    pub tcp: tcp::TcpPool,
    pub decisions: Option<Arc<dyn DecisionSink>>,
    /// Flood defence, before the core: a banned source costs a hash look-up, no parsing.
    pub guard: Arc<crate::security::Guard>,
    /// Set by [`Shell::stop`]: messages are dropped from then on.
    pub stopped: AtomicBool,
    /// Certificate fetches and counter reservations for calls whose screening waits.
    pub lookups: lookup::Lookups,
    /// The shared counters (`[cluster] backend = "redis"`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Shell {
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// Run one message through the core and carry out the actions.
    pub fn on_message(&self, from: Inbound, bytes: &[u8], actions: &mut Vec<Action>) {
        self.process(from, bytes, Load::Normal, actions);
        self.dispatch(actions);
    }

    /// Run one message through the core and queue its decisions for the log; the actions
    /// are left in `actions` for the caller to carry out.
    pub fn process(&self, from: Inbound, bytes: &[u8], load: Load, actions: &mut Vec<Action>) {
        let now = self.clock.now();
        match self.guard.check(now, from.src.ip().to_canonical()) {
            Admit::Yes => {}
            Admit::Banned => return m::dropped("banned"),
            Admit::Over => return m::dropped("over_rate"),
            Admit::NewBan(ban) => {
                tracing::warn!(
                    source = %ban.source,
                    until_unix = ban.until,
                    "source banned: over security.per_source_per_second; nothing is answered until the ban ends"
                );
                m::banned();
                return m::dropped("banned");
            }
        }
        let gate = self.gate.read().unwrap_or_else(|e| e.into_inner());
        if self.stopped.load(Ordering::Relaxed) {
            drop(gate);
            return m::dropped("shutting_down");
        }
        self.proxy.handle_loaded(now, from, bytes, load, actions);
        // Queued while the gate is held, so that once `stop` returns every decision made is
        // in the log's queue and a flush writes them all.
        if let Some(sink) = &self.decisions {
            for a in actions.iter() {
                if let Action::Decided(d) = a {
                    sink.record(d);
                }
            }
        }
        drop(gate);
    }

    /// Stop handling messages (shutdown). Returns once no message is inside the core.
    pub fn stop(&self) {
        let _gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
        self.stopped.store(true, Ordering::Relaxed);
    }

    pub fn dispatch(&self, actions: &mut Vec<Action>) {
        for a in actions.drain(..) {
            self.dispatch_one(a);
        }
    }

    pub fn dispatch_one(&self, a: Action) {
        match a {
            Action::Send { transport: Transport::Udp, dest, bytes, .. } => self.udp.send(dest, &bytes),
            Action::Send { transport: Transport::Tcp, dest, bytes, connect } => self.tcp.send(dest, bytes, connect),
            Action::Drop(reason) if reason.is_absorbed() => m::absorbed(reason.label()),
            Action::Drop(reason) => m::dropped(reason.label()),
            // Recorded in `process`.
            Action::Decided(_) => {}
            Action::Lookup { lookup, held } => self.lookups.submit(lookup, held),
            Action::Release(r) => self.lookups.release(r),
        }
    }
}

/// Same address family, so a send from an IPv4 socket never targets an IPv6 peer.
pub fn same_family(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}
