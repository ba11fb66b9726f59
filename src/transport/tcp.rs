//! TCP: messages framed by Content-Length, a bounded read buffer, an idle timeout and caps
//! on open connections, accepted and opened by us apart (so peers connecting in cannot use
//! up the connections to next hops, nor the reverse). Every connection is registered by its
//! peer address, so a response goes back over the connection its request came on, and a
//! request to a next hop reuses an open connection. Only a forwarded request may open a
//! connection: a response or reply with no connection to go back on is dropped.

use super::Shell;
use crate::config::server::Transport;
use crate::proxy::Inbound;
use crate::sip::scan;
use crate::telemetry::metrics as m;
use bytes::BytesMut;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

/// Messages queued for one connection beyond this are dropped (a stuck peer).
const QUEUE: usize = 1024;

#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    pub idle: Duration,
    /// Accepted connections.
    pub max_connections: usize,
    /// Connections we open to next hops.
    pub max_outbound: usize,
    /// Accepted connections from one source IP.
    pub max_per_source: usize,
    /// Time allowed to receive one message once its first byte has arrived.
    pub message_timeout: Duration,
    pub max_message_bytes: usize,
}

/// Open connections by peer address.
pub struct TcpPool {
    conns: Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
    pub open: AtomicUsize,
    limits: Mutex<TcpLimits>,
    slots: Arc<Semaphore>,
    outbound_slots: Arc<Semaphore>,
    /// Accepted connections per source IP (at most `max_connections` entries).
    per_source: Mutex<HashMap<std::net::IpAddr, usize>>,
    shell: Mutex<Weak<Shell>>,
    rt: tokio::runtime::Handle,
}

impl TcpPool {
    pub fn new(limits: TcpLimits, rt: tokio::runtime::Handle) -> Self {
        TcpPool {
            conns: Mutex::new(HashMap::new()),
            open: AtomicUsize::new(0),
            limits: Mutex::new(limits),
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            outbound_slots: Arc::new(Semaphore::new(limits.max_outbound)),
            per_source: Mutex::new(HashMap::new()),
            shell: Mutex::new(Weak::new()),
            rt,
        }
    }

    /// Connect the pool to its shell (they refer to each other).
    pub fn attach(&self, shell: &Arc<Shell>) {
        *self.shell.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(shell);
    }

    fn limits(&self) -> TcpLimits {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Send over the open connection to `dest`; when there is none, open one if `connect`
    /// (a forwarded request), else drop (a response must not make us connect anywhere).
    pub fn send(&self, dest: SocketAddr, bytes: Vec<u8>, connect: bool) {
        let mut map = self.map();
        let bytes = match map.get(&dest) {
            Some(tx) => match tx.try_send(bytes) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => return m::dropped("tcp_queue_full"),
                Err(mpsc::error::TrySendError::Closed(b)) => {
                    map.remove(&dest);
                    b
                }
            },
            None => bytes,
        };
        if connect { self.connect(map, dest, bytes) } else { m::dropped("tcp_no_connection") }
    }

    fn connect(
        &self,
        mut map: std::sync::MutexGuard<'_, HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
        dest: SocketAddr,
        first: Vec<u8>,
    ) {
        let Some(shell) = self.shell.lock().unwrap_or_else(|e| e.into_inner()).upgrade() else {
            return;
        };
        let Ok(permit) = self.outbound_slots.clone().try_acquire_owned() else {
            return m::dropped("tcp_outbound_connection_limit");
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let _ = tx.try_send(first);
        map.insert(dest, tx);
        drop(map);
        self.rt.spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(dest)).await {
                Ok(Ok(stream)) => run_connection(shell, stream, dest, rx).await,
                _ => {
                    tracing::debug!(%dest, "tcp connect failed");
                    m::dropped("tcp_connect_failed");
                    shell.tcp.forget(dest);
                }
            }
        });
    }

    fn forget(&self, peer: SocketAddr) {
        let mut map = self.map();
        if map.get(&peer).is_some_and(|tx| tx.is_closed()) {
            map.remove(&peer);
        }
    }

    /// Count an accepted connection from `ip`; false when it has its share already.
    fn enter(&self, ip: std::net::IpAddr) -> bool {
        let max = self.limits().max_per_source;
        let mut m = self.per_source.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    fn leave(&self, ip: std::net::IpAddr) {
        let mut m = self.per_source.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Accept loop for one listener; stops when `stop` flips to true.
pub async fn serve(shell: Arc<Shell>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // An IPv4 peer on a dual-stack listener is its IPv4 address (as the core sees it).
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let Ok(permit) = shell.tcp.slots.clone().try_acquire_owned() else {
            m::dropped("tcp_connection_limit");
            continue;
        };
        if !shell.tcp.enter(peer.ip()) {
            m::dropped("tcp_source_connection_limit");
            continue;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        shell.tcp.map().insert(peer, tx);
        let shell = shell.clone();
        tokio::spawn(async move {
            let _permit = permit;
            run_connection(shell.clone(), stream, peer, rx).await;
            shell.tcp.leave(peer.ip());
        });
    }
}

/// Read framed messages into the core and write queued messages, until the peer closes,
/// the connection idles out, or it sends something unframeable.
async fn run_connection(shell: Arc<Shell>, stream: TcpStream, peer: SocketAddr, mut rx: mpsc::Receiver<Vec<u8>>) {
    let _ = stream.set_nodelay(true);
    shell.tcp.open.fetch_add(1, Ordering::Relaxed);
    metrics::gauge!("sipguard_tcp_connections").increment(1.0);
    let limits = shell.tcp.limits();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if wr.write_all(&msg).await.is_err() {
                break;
            }
        }
    });
    let mut buf = BytesMut::with_capacity(8192);
    let mut actions = Vec::with_capacity(4);
    let mut framer = scan::Framer::default();
    let from = Inbound { transport: Transport::Tcp, src: peer };
    // When the message now being received began: it must be complete within
    // `message_timeout` (a slow sender cannot hold a connection by trickling bytes).
    let mut started: Option<Instant> = None;
    'conn: loop {
        let wait = match started {
            Some(t) => limits.message_timeout.saturating_sub(t.elapsed()).min(limits.idle),
            None => limits.idle,
        };
        match tokio::time::timeout(wait, rd.read_buf(&mut buf)).await {
            Err(_) => {
                if started.is_some() {
                    m::dropped("tcp_message_timeout");
                }
                break;
            }
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
        }
        loop {
            match framer.next(&buf, limits.max_message_bytes) {
                Ok(Some((skip, len))) => {
                    let frame = buf.split_to(skip + len);
                    framer.consumed();
                    started = None;
                    shell.on_message(from, frame.get(skip..).unwrap_or_default(), &mut actions);
                }
                Ok(None) => {
                    // Only keep-alive CRLFs so far: discard them.
                    if buf.iter().all(|&b| b == b'\r' || b == b'\n') {
                        buf.clear();
                        framer.consumed();
                    } else if started.is_none() {
                        started = Some(Instant::now());
                    }
                    break;
                }
                Err(scan::FrameError::TooLarge { header_len }) => {
                    m::dropped("tcp_message_too_large");
                    // A request declaring more than the limit still gets its answer (413)
                    // from the headers, before the connection closes.
                    if let Some(h) = header_len {
                        let skip = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
                        shell.on_message(from, buf.get(skip..skip + h).unwrap_or_default(), &mut actions);
                    }
                    break 'conn;
                }
                Err(_) => {
                    m::dropped("tcp_framing");
                    break 'conn;
                }
            }
        }
    }
    {
        let mut map = shell.tcp.map();
        map.remove(&peer);
    }
    // The writer ends once what is queued (a last 413, say) is written; a peer that does
    // not read gets a second.
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    shell.tcp.open.fetch_sub(1, Ordering::Relaxed);
    metrics::gauge!("sipguard_tcp_connections").decrement(1.0);
}
