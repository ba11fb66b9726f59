//! UDP: one blocking thread per listening socket. A datagram is one message.

use super::{Shell, same_family};
use crate::config::server::Transport;
use crate::proxy::Inbound;
use crate::telemetry::metrics as m;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

/// The bound UDP sockets, used for sending from any thread.
#[derive(Default, Clone)]
pub struct UdpSenders {
    sockets: Vec<Arc<UdpSocket>>,
}

impl UdpSenders {
    pub fn new(sockets: Vec<Arc<UdpSocket>>) -> Self {
        UdpSenders { sockets }
    }

    /// Send from the first socket of the destination's address family.
    pub fn send(&self, dest: SocketAddr, bytes: &[u8]) {
        let sock = self.sockets.iter().find(|s| s.local_addr().is_ok_and(|l| same_family(&l, &dest)));
        match sock {
            Some(s) => {
                if let Err(e) = s.send_to(bytes, dest) {
                    tracing::debug!(%dest, error = %e, "udp send failed");
                    m::dropped("udp_send_error");
                }
            }
            None => m::dropped("no_udp_socket_for_family"),
        }
    }
}

pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Bursts of INVITEs must not be lost in the kernel while we screen.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// The receive loop; runs until the process exits.
pub fn serve(shell: Arc<Shell>, sock: Arc<UdpSocket>, max_message_bytes: usize) {
    // One byte more than allowed, so an oversized datagram is seen as such, not truncated.
    let mut buf = vec![0u8; max_message_bytes + 1];
    let mut actions = Vec::with_capacity(4);
    loop {
        let (n, src) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "udp recv failed");
                continue;
            }
        };
        let bytes = buf.get(..n).unwrap_or_default();
        shell.on_message(Inbound { transport: Transport::Udp, src }, bytes, &mut actions);
    }
}
