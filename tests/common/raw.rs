//! Byte-level SIP peers for assertions sipp cannot make: a UDP peer, a TCP client that frames
//! messages by Content-Length, a recording fake next hop, and a small message view.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Turn readable text into a SIP message: lines are trimmed of leading indentation and joined
/// with CRLF, a blank line separates headers from body; `{len}` becomes the body's length.
pub fn sip(text: &str) -> Vec<u8> {
    let lines: Vec<&str> = text.trim().lines().map(str::trim_start).collect();
    let split = lines.iter().position(|l| l.is_empty()).unwrap_or(lines.len());
    let (head, body) = lines.split_at(split);
    let body: String = body.iter().skip(1).map(|l| format!("{l}\r\n")).collect();
    let mut msg = head.join("\r\n").replace("{len}", &body.len().to_string());
    msg.push_str("\r\n\r\n");
    msg.push_str(&body);
    msg.into_bytes()
}

/// A UDP socket on 127.0.0.1 that sends and receives with timeouts.
pub struct UdpPeer {
    sock: UdpSocket,
}

impl UdpPeer {
    /// On a free port chosen by the OS.
    pub fn bind() -> UdpPeer {
        Self::bind_port(0)
    }

    pub fn bind_port(port: u16) -> UdpPeer {
        match UdpSocket::bind(("127.0.0.1", port)) {
            Ok(sock) => UdpPeer { sock },
            Err(e) => panic!("bind udp 127.0.0.1:{port}: {e}"),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        match self.sock.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("local_addr: {e}"),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    pub fn send_to(&self, bytes: &[u8], to: SocketAddr) {
        if let Err(e) = self.sock.send_to(bytes, to) {
            panic!("send to {to}: {e}");
        }
    }

    /// The next datagram, or None after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Datagram> {
        recv_datagram(&self.sock, timeout)
    }

    /// The next datagram or a panic naming what was awaited.
    pub fn expect(&self, what: &str, timeout: Duration) -> Datagram {
        match self.recv(timeout) {
            Some(d) => d,
            None => panic!("no datagram within {timeout:?}: expected {what}"),
        }
    }
}

fn recv_datagram(sock: &UdpSocket, timeout: Duration) -> Option<Datagram> {
    // A zero read timeout means "block forever" to the OS.
    sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1)))).ok()?;
    let mut buf = vec![0u8; 65536];
    let (n, from) = sock.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some(Datagram { from, bytes: buf })
}

/// One received datagram.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub from: SocketAddr,
    pub bytes: Vec<u8>,
}

impl Datagram {
    pub fn msg(&self) -> SipMsg {
        SipMsg::parse(&self.bytes)
    }
}

/// A fake next hop (carrier) on 127.0.0.1:port that records every datagram the proxy sends
/// it, on a thread of its own, and can answer from the same socket.
pub struct NextHop {
    sock: UdpSocket,
    got: Arc<(Mutex<Vec<Datagram>>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NextHop {
    pub fn bind(port: u16) -> NextHop {
        let peer = UdpPeer::bind_port(port);
        let sock = match peer.sock.try_clone() {
            Ok(s) => s,
            Err(e) => panic!("clone socket: {e}"),
        };
        let got: Arc<(Mutex<Vec<Datagram>>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                // Short timeout so that drop is noticed promptly.
                if let Some(d) = recv_datagram(&peer.sock, Duration::from_millis(50)) {
                    let (list, cv) = &*g;
                    list.lock().unwrap_or_else(|e| e.into_inner()).push(d);
                    cv.notify_all();
                }
            }
        });
        NextHop { sock, got, stop, thread: Some(thread) }
    }

    pub fn addr(&self) -> SocketAddr {
        match self.sock.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("local_addr: {e}"),
        }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Datagram> {
        self.got.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Wait until at least `n` datagrams have arrived and return all of them; panics on timeout.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Datagram> {
        let (list, cv) = &*self.got;
        let deadline = Instant::now() + timeout;
        let mut got = list.lock().unwrap_or_else(|e| e.into_inner());
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("next hop got {} datagrams within {timeout:?}, expected {n}: {got:?}", got.len());
            }
            got = cv.wait_timeout(got, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        got.clone()
    }

    /// Send from the next hop's socket (e.g. a response back to the proxy).
    pub fn send_to(&self, bytes: &[u8], to: SocketAddr) {
        if let Err(e) = self.sock.send_to(bytes, to) {
            panic!("send to {to}: {e}");
        }
    }
}

impl Drop for NextHop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP SIP connection that reads whole messages (headers + Content-Length body).
pub struct TcpSip {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl TcpSip {
    pub fn connect(addr: SocketAddr) -> TcpSip {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(stream) => TcpSip { stream, buf: Vec::new() },
            Err(e) => panic!("connect {addr}: {e}"),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        match self.stream.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("local_addr: {e}"),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.stream.write_all(bytes) {
            panic!("tcp send: {e}");
        }
    }

    /// The next complete message, or None on timeout or when the peer closes.
    pub fn recv(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(len) = message_len(&self.buf) {
                return Some(self.buf.drain(..len).collect());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).ok()?;
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// True if the peer closes the connection within `timeout` (data received meanwhile is kept).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                return false;
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }
}

/// Length of the first complete message in `buf` (CRLF keep-alives count as messages).
pub fn message_len(buf: &[u8]) -> Option<usize> {
    if buf.starts_with(b"\r\n") {
        return Some(2);
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = SipMsg::parse(buf.get(..end)?);
    let body: usize = head.header("content-length").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    (buf.len() >= end + body).then_some(end + body)
}

/// A parsed view of a SIP message for assertions: start line, headers in order, body.
#[derive(Debug, Clone, Default)]
pub struct SipMsg {
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// RFC 3261 compact header forms, expanded so tests can ask for the long name.
const COMPACT: [(&str, &str); 9] = [
    ("v", "via"),
    ("f", "from"),
    ("t", "to"),
    ("i", "call-id"),
    ("m", "contact"),
    ("l", "content-length"),
    ("c", "content-type"),
    ("k", "supported"),
    ("s", "subject"),
];

impl SipMsg {
    pub fn parse(bytes: &[u8]) -> SipMsg {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = match text.find("\r\n\r\n") {
            Some(i) => (&text[..i], bytes.get(i + 4..).unwrap_or_default().to_vec()),
            None => (&text[..], Vec::new()),
        };
        let mut lines = head.split("\r\n");
        let start = lines.next().unwrap_or_default().to_owned();
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                // Folded continuation of the previous header.
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let name = name.trim().to_ascii_lowercase();
            let name = COMPACT.iter().find(|(c, _)| *c == name).map_or(name, |(_, long)| long.to_string());
            headers.push((name, value.trim().to_owned()));
        }
        SipMsg { start, headers, body }
    }

    /// Status code of a response; None for a request.
    pub fn status(&self) -> Option<u16> {
        self.start.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
    }

    /// Method of a request; None for a response.
    pub fn method(&self) -> Option<&str> {
        if self.start.starts_with("SIP/2.0 ") {
            return None;
        }
        self.start.split(' ').next()
    }

    /// The first header line of this name, whole (case-insensitive, compact forms expanded).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order, comma-separated values split (fine for Via,
    /// Route, Record-Route; not for headers whose values contain quoted commas).
    pub fn all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().filter(|(n, _)| *n == name).flat_map(|(_, v)| v.split(',').map(str::trim)).collect()
    }
}
