//! The I/O shell: sockets move bytes between the network and the sans-IO `Proxy`. UDP runs
//! on dedicated blocking threads (batches of datagrams per system call, no reactor wake-up
//! in the way); TCP runs on tokio with one reader and one writer task per connection.

pub mod tcp;
pub mod udp;

use crate::clock::Clock;
use crate::config::server::Transport;
use crate::proxy::{Action, Inbound, Proxy};
use crate::security::Admit;
use crate::telemetry::metrics as m;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Receives screening decisions for the decision log (written off the hot path).
pub trait DecisionSink: Send + Sync {
    fn record(&self, d: &crate::proxy::Decided);
}

/// Everything a transport needs to run the core and send what it returns.
pub struct Shell {
    pub proxy: Mutex<Proxy>,
    pub clock: Arc<dyn Clock>,
    pub udp: udp::UdpSenders,
    pub tcp: tcp::TcpPool,
    pub decisions: Option<Arc<dyn DecisionSink>>,
    /// Flood defence, before the core: a banned source costs a hash look-up, no parsing.
    pub guard: Arc<crate::security::Guard>,
    /// Set by [`Shell::stop`]: messages are dropped from then on.
    pub stopped: AtomicBool,
}

impl Shell {
    /// The proxy, even if a thread panicked while holding it (the core keeps no invariant
    /// across calls that a panic could break).
    pub fn proxy(&self) -> MutexGuard<'_, Proxy> {
        self.proxy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run one message through the core and carry out the actions.
    pub fn on_message(&self, from: Inbound, bytes: &[u8], actions: &mut Vec<Action>) {
        self.process(from, bytes, actions);
        self.dispatch(actions);
    }

    /// Run one message through the core and queue its decisions for the log; the actions
    /// are left in `actions` for the caller to carry out.
    pub fn process(&self, from: Inbound, bytes: &[u8], actions: &mut Vec<Action>) {
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
        let mut proxy = self.proxy();
        if self.stopped.load(Ordering::Relaxed) {
            drop(proxy);
            return m::dropped("shutting_down");
        }
        proxy.handle(now, from, bytes, actions);
        // Queued while the core is held, so that once `stop` returns every decision made is
        // in the log's queue and a flush writes them all.
        if let Some(sink) = &self.decisions {
            for a in actions.iter() {
                if let Action::Decided(d) = a {
                    sink.record(d);
                }
            }
        }
        drop(proxy);
    }

    /// Stop handling messages (shutdown). Returns once no message is inside the core.
    pub fn stop(&self) {
        let _core = self.proxy();
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
            Action::Drop(reason) => m::dropped(reason.label()),
            // Recorded in `process`.
            Action::Decided(_) => {}
        }
    }
}

/// Same address family, so a send from an IPv4 socket never targets an IPv6 peer.
pub fn same_family(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}
