//! UDP: one blocking thread per listening socket. A datagram is one message.
//!
//! The thread receives in batches (`recvmmsg`) and sends what a batch produced in one
//! `sendmmsg`. On a loopback or LAN path most of a message's CPU cost is the kernel's
//! sleep/wake-up around each datagram, not the datagram itself, so under load the thread
//! waits `udp_batch_wait_us` after a batch before receiving again: datagrams that arrive
//! meanwhile are taken, and their replies sent, with one wake-up. The wait bounds the
//! latency this adds to a message. The wait only runs while datagrams arrive fast enough that
//! several are expected per wait: below that rate its own wake-up would cost more than it
//! saves, so an idle or lightly loaded proxy blocks in the kernel and adds no latency.

use super::{Shell, same_family};
use crate::cluster::direct::{Answer, Direct};
use crate::config::server::Transport;
use crate::proxy::Load;
use crate::proxy::{Action, Inbound};
use crate::screen::Lookup;
use crate::telemetry::metrics as m;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use nix::sys::time::{TimeSpec, TimeVal};
use smallvec::SmallVec;
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Datagrams taken per `recvmmsg`. A full batch skips the wait: more are already queued.
pub const BATCH: usize = 32;
/// Largest UDP payload (IPv4 65507, IPv6 65527) plus one, so an oversized one shows as such.
const DATAGRAM_BUF: usize = 65536;

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
    // One socket per thread on the same address: the kernel spreads sources over them.
    s.set_reuse_port(true)?;
    // Bursts of INVITEs must not be lost in the kernel while we screen.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// The receive loop; runs until the process exits. A datagram that waited in the kernel's
/// queue longer than `overload_delay` (its receive timestamp says so; stamps are taken while
/// the queue is backed up, see `Stamps`) means the core is behind: new calls in it are shed
/// (503) until the queue drains. Zero turns that off.
pub fn serve(shell: Arc<Shell>, sock: Arc<UdpSocket>, batch_wait: Duration, overload_delay: Duration) {
    let local = match sock.local_addr() {
        Ok(a) => a,
        Err(e) => return tracing::error!(error = %e, "udp socket has no local address"),
    };
    let fd = sock.as_raw_fd();
    let mut bufs = vec![0u8; BATCH * DATAGRAM_BUF];
    let mut stamps = Stamps::new(!overload_delay.is_zero(), Instant::now());
    let mut rx_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut tx_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut tx = Outbox::default();
    let mut actions = Vec::with_capacity(4);
    let mut got: SmallVec<[(usize, SocketAddr, Load); BATCH]> = SmallVec::new();
    let mut pacer = Pacer::new(batch_wait, Instant::now());
    // Reservations in the cluster store go through this thread's own connection to Redis
    // when it can have one (a single plain-TCP Redis).
    let mut direct = shell.cluster.clone().and_then(|c| Direct::new(c, Instant::now()));
    let mut answers = Vec::new();
    let mut retries = Vec::new();
    // Whether Redis was readable when the last pace ended: the next round then goes straight
    // to its receive, without a wait of its own that would find the datagrams already there.
    let mut after_pace: Option<bool> = None;
    loop {
        got.clear();
        let mut flags = MsgFlags::MSG_WAITFORONE;
        let mut waited = None;
        if let Some(d) = &mut direct {
            d.tick(Instant::now());
            // Answers and deadlines of reservations in flight wake the thread too.
            waited = match after_pace.take() {
                Some(redis_ready) => Some((true, redis_ready)),
                None => wait_with_redis(Some(&sock), d, None),
            };
            if let Some((_, redis_ready)) = waited {
                d.poll(redis_ready, Instant::now());
            }
            d.take_into(&mut answers);
            d.take_retries(&mut retries);
        }
        for (counting, held) in retries.drain(..) {
            shell.dispatch_one(Action::Lookup { lookup: Lookup::Counters(counting), held });
        }
        if !answers.is_empty() {
            settle(&shell, &local, &mut answers, &mut direct, &mut tx, &mut actions);
            if waited.is_none() {
                // Nothing else will wake the thread: send before blocking.
                flush_all(&mut direct, &mut tx, fd, &mut tx_headers);
            }
        }
        match waited {
            Some((false, _)) => {
                flush_all(&mut direct, &mut tx, fd, &mut tx_headers);
                continue;
            }
            Some((true, _)) => flags |= MsgFlags::MSG_DONTWAIT,
            None => {}
        }
        {
            // An array, not a collection with a destructor: recvmmsg borrows it for as long
            // as the buffers it points into.
            let mut chunks = bufs.chunks_mut(DATAGRAM_BUF);
            let mut slices: [[IoSliceMut<'_>; 1]; BATCH] =
                std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
            // Blocks for the first datagram (unless told not to), then takes what is queued.
            match recvmmsg(fd, &mut rx_headers, slices.iter_mut(), flags, None) {
                Ok(results) => {
                    let now = std::time::SystemTime::now();
                    for r in results {
                        let load = match stamps.on.then(|| r.cmsgs().ok().and_then(|mut c| c.next())).flatten() {
                            Some(ControlMessageOwned::ScmTimestamp(tv)) => {
                                let at = std::time::UNIX_EPOCH
                                    + Duration::new(tv.tv_sec().max(0) as u64, (tv.tv_usec().max(0) as u32) * 1000);
                                let waited = now.duration_since(at).unwrap_or_default();
                                if waited > overload_delay { Load::Shedding } else { Load::Normal }
                            }
                            _ => Load::Normal,
                        };
                        match r.address.as_ref().and_then(socket_addr) {
                            Some(src) => got.push((r.bytes, src, load)),
                            None => m::dropped("udp_no_source"),
                        }
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => {}
                Err(e) => tracing::debug!(error = %e, "udp recv failed"),
            }
        }
        let now = Instant::now();
        let late = got.iter().any(|g| g.2 == Load::Shedding);
        if let Some(on) = stamps.after_receive(got.len(), late, now) {
            // Fresh headers: the kernel shrinks each one's control length to what it used,
            // so headers that went without stamps have no room left for one.
            let space = on.then(|| nix::cmsg_space!(TimeVal));
            rx_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, space);
            if nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimestamp, &on).is_err() {
                tracing::warn!("udp receive timestamps unavailable: no overload shedding on this socket");
                stamps.unavailable();
            }
        }
        for (i, &(n, src, load)) in got.iter().enumerate() {
            let start = i * DATAGRAM_BUF;
            let bytes = bufs.get(start..start + n.min(DATAGRAM_BUF)).unwrap_or_default();
            shell.process(Inbound { transport: Transport::Udp, src }, bytes, load, &mut actions);
            for a in actions.drain(..) {
                route(&shell, &local, a, &mut direct, &mut tx, now);
            }
        }
        if let Some(d) = &mut direct {
            // Reservations refused at once (Redis down, too many waiting).
            d.take_into(&mut answers);
            settle(&shell, &local, &mut answers, &mut direct, &mut tx, &mut actions);
        }
        flush_all(&mut direct, &mut tx, fd, &mut tx_headers);
        if got.is_empty() {
            continue;
        }
        let wait = pacer.after_batch(got.len(), Instant::now());
        m::udp_batch(!wait.is_zero());
        if !wait.is_zero() {
            // With reservations in flight, their answers end the wait early: a held INVITE
            // does not sit out the pace on top of its round trip.
            let paced = direct.as_ref().and_then(|d| wait_with_redis(None, d, Some(wait)));
            after_pace = paced.map(|(_, redis_ready)| redis_ready);
            if paced.is_none() {
                std::thread::sleep(wait);
            }
        }
    }
}

/// Carry out one action of the core: a UDP send to this socket's family joins the batch, a
/// reservation goes to this thread's Redis connection when it has one.
fn route(shell: &Shell, local: &SocketAddr, a: Action, direct: &mut Option<Direct>, tx: &mut Outbox, now: Instant) {
    match a {
        Action::Send { transport: Transport::Udp, dest, bytes, .. } if same_family(local, &dest) => {
            tx.push(dest, bytes)
        }
        Action::Lookup { lookup: Lookup::Counters(counting), held } if direct.as_ref().is_some_and(Direct::ready) => {
            if let Some(d) = direct {
                d.reserve(counting, held, now);
            }
        }
        other => shell.dispatch_one(other),
    }
}

/// Hand the store's answers to the core and carry out what it returns.
fn settle(
    shell: &Shell,
    local: &SocketAddr,
    answers: &mut Vec<Answer>,
    direct: &mut Option<Direct>,
    tx: &mut Outbox,
    actions: &mut Vec<Action>,
) {
    for a in answers.drain(..) {
        let decision = shell.proxy.screen().counted(*a.counting, a.result, shell.clock.now());
        shell.resume_counted_into(&a.held, decision, actions);
        let now = Instant::now();
        for act in actions.drain(..) {
            route(shell, local, act, direct, tx, now);
        }
    }
}

fn flush_all(
    direct: &mut Option<Direct>,
    tx: &mut Outbox,
    fd: std::os::fd::RawFd,
    headers: &mut MultiHeaders<SockaddrStorage>,
) {
    if let Some(d) = direct {
        d.flush();
    }
    tx.flush(fd, headers);
}

/// With reservations in flight on `d`, wait for an answer from Redis, the next deadline,
/// a datagram on `sock` (when given) or the end of `pace` (when given), whichever comes
/// first: whether the UDP socket and the Redis connection are readable. `None`: nothing in
/// flight, so the caller blocks in its receive (or sleeps its pace) as without Redis.
fn wait_with_redis(sock: Option<&UdpSocket>, d: &Direct, pace: Option<Duration>) -> Option<(bool, bool)> {
    let (redis, write) = d.waits()?;
    let now = Instant::now();
    let left = d.deadline().map(|at| at.saturating_duration_since(now));
    let timeout = match (left, pace) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let redis_events = if write { PollFlags::POLLIN | PollFlags::POLLOUT } else { PollFlags::POLLIN };
    let redis = PollFd::new(redis, redis_events);
    let mut fds: SmallVec<[PollFd<'_>; 2]> = SmallVec::new();
    fds.push(redis);
    if let Some(s) = sock {
        fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
    }
    // ppoll, not poll: its timeout is not rounded to milliseconds.
    match ppoll(&mut fds, timeout.map(TimeSpec::from_duration), None) {
        Ok(_) => {
            let ready = |f: Option<&PollFd<'_>>| f.and_then(PollFd::revents).is_some_and(|r| !r.is_empty());
            Some((ready(fds.get(1)), ready(fds.first())))
        }
        // Interrupted: look again.
        Err(_) => Some((false, false)),
    }
}

/// Decides the wait after each batch from the recent arrival rate.
#[derive(Debug)]
pub struct Pacer {
    wait: Duration,
    window_start: Instant,
    datagrams: u64,
    /// Datagrams expected during one wait at the rate of the last full window.
    expected: f64,
}

/// How long the rate is measured over: short enough to follow a change in load within a
/// fraction of a second, long enough to count many datagrams at any rate worth batching.
const RATE_WINDOW: Duration = Duration::from_millis(50);
/// Datagrams expected per wait before waiting pays: a wait ends in a timer wake-up of its
/// own, so it must save several datagram wake-ups. Measured (BENCHMARKS.md): at 2 expected
/// per wait the CPU per call did not go down, at 5 it went down by about a quarter.
const MIN_EXPECTED: f64 = 3.0;

impl Pacer {
    pub fn new(wait: Duration, now: Instant) -> Pacer {
        Pacer { wait, window_start: now, datagrams: 0, expected: 0.0 }
    }

    /// Record a batch of `n` datagrams received at `now`; returns how long to wait before
    /// the next receive.
    pub fn after_batch(&mut self, n: usize, now: Instant) -> Duration {
        self.datagrams += n as u64;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= RATE_WINDOW {
            self.expected = self.datagrams as f64 * self.wait.as_secs_f64() / elapsed.as_secs_f64();
            self.window_start = now;
            self.datagrams = 0;
        }
        // A full batch means more are queued already; with few datagrams per wait, the
        // wait's own wake-up costs more than the ones it saves.
        if n >= BATCH || self.expected < MIN_EXPECTED { Duration::ZERO } else { self.wait }
    }
}

/// Receive timestamps, on only while the socket's queue is backed up.
///
/// A datagram's wait in the kernel's queue (what overload shedding judges) is known only
/// from a kernel stamp, and stamps cost a control message per datagram on every receive,
/// about 2 % of a passed call's CPU. A queue that keeps being read down to empty holds
/// nothing that waited long, so the stamps are asked for once two receives in a row came
/// back full (more than 2 x BATCH datagrams were waiting), and given up again after
/// `STAMP_HOLD` without a full receive or a late datagram. Datagrams already queued when
/// the stamps come on read as not having waited (the kernel stamps them on reading), so
/// shedding starts at most one backlog later than with stamps always on.
#[derive(Debug)]
pub struct Stamps {
    /// Stamps are asked for now.
    on: bool,
    /// Overload shedding is configured and the socket can stamp.
    usable: bool,
    full_in_row: u32,
    last_busy: Instant,
}

/// How long the stamps stay on after the queue last backed up or a datagram came late.
const STAMP_HOLD: Duration = Duration::from_secs(2);

impl Stamps {
    pub fn new(usable: bool, now: Instant) -> Stamps {
        Stamps { on: false, usable, full_in_row: 0, last_busy: now }
    }

    /// Record a receive of `n` datagrams at `now`, `late` when one of them waited too long;
    /// returns whether to turn the stamps on or off.
    pub fn after_receive(&mut self, n: usize, late: bool, now: Instant) -> Option<bool> {
        if !self.usable {
            return None;
        }
        self.full_in_row = if n >= BATCH { self.full_in_row.saturating_add(1) } else { 0 };
        if n >= BATCH || late {
            self.last_busy = now;
        }
        if !self.on && self.full_in_row >= 2 {
            self.on = true;
            return Some(true);
        }
        if self.on && now.saturating_duration_since(self.last_busy) >= STAMP_HOLD {
            self.on = false;
            return Some(false);
        }
        None
    }

    /// The socket refused to stamp: never ask again.
    pub fn unavailable(&mut self) {
        self.usable = false;
        self.on = false;
    }
}

fn socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*a).into()));
    }
    s.as_sockaddr_in6().map(|a| SocketAddr::V6((*a).into()))
}

/// Datagrams produced by one receive batch, sent with `sendmmsg`.
#[derive(Default)]
struct Outbox {
    dests: Vec<Option<SockaddrStorage>>,
    bytes: Vec<Vec<u8>>,
}

impl Outbox {
    fn push(&mut self, dest: SocketAddr, bytes: Vec<u8>) {
        self.dests.push(Some(SockaddrStorage::from(dest)));
        self.bytes.push(bytes);
    }

    /// Send everything queued. A datagram the kernel refuses is counted and skipped; the
    /// rest are still sent.
    fn flush(&mut self, fd: std::os::fd::RawFd, headers: &mut MultiHeaders<SockaddrStorage>) {
        let mut from = 0;
        while from < self.bytes.len() {
            let n = (self.bytes.len() - from).min(BATCH);
            let mut queued = self.bytes.iter().skip(from);
            let slices: [[IoSlice<'_>; 1]; BATCH] =
                std::array::from_fn(|_| [IoSlice::new(queued.next().map_or(&[][..], |b| b.as_slice()))]);
            let dests = self.dests.get(from..from + n).unwrap_or_default();
            let sent = match sendmmsg(fd, headers, &slices[..n], dests, [], MsgFlags::empty()) {
                Ok(r) => r.count(),
                Err(e) => {
                    tracing::debug!(error = %e, "udp send failed");
                    m::dropped("udp_send_error");
                    1
                }
            };
            // sendmmsg sends at most as many as there are headers; loop for the rest.
            from += sent.max(1);
        }
        self.dests.clear();
        self.bytes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `per_ms` datagrams a millisecond (one batch each) for `ms` milliseconds.
    fn run(p: &mut Pacer, t0: Instant, from_ms: u64, ms: u64, per_ms: usize) -> Duration {
        let mut last = Duration::ZERO;
        for i in from_ms..from_ms + ms {
            last = p.after_batch(per_ms, t0 + Duration::from_millis(i));
        }
        last
    }

    #[test]
    fn waits_only_while_the_rate_fills_a_wait() {
        let t0 = Instant::now();
        let wait = Duration::from_micros(500);
        let mut p = Pacer::new(wait, t0);
        assert_eq!(p.after_batch(1, t0), Duration::ZERO, "no rate measured yet");
        // 10 datagrams/ms: 5 expected per 0.5 ms wait.
        assert_eq!(run(&mut p, t0, 1, 60, 10), wait);
        // A full batch: more are queued, no wait.
        assert_eq!(p.after_batch(BATCH, t0 + Duration::from_millis(61)), Duration::ZERO);
        // 1 datagram/ms: 0.5 expected per wait; once a window has shown it, no wait.
        assert_eq!(run(&mut p, t0, 62, 120, 1), Duration::ZERO);
        // Load comes back.
        assert_eq!(run(&mut p, t0, 182, 120, 8), wait);
    }

    #[test]
    fn stamps_come_on_with_a_backlog_and_go_after_the_hold() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut s = Stamps::new(true, t0);
        assert_eq!(s.after_receive(5, false, ms(1)), None);
        assert_eq!(s.after_receive(BATCH, false, ms(2)), None, "one full receive is a burst");
        assert_eq!(s.after_receive(3, false, ms(3)), None, "read down to empty");
        assert_eq!(s.after_receive(BATCH, false, ms(4)), None);
        assert_eq!(s.after_receive(BATCH, false, ms(5)), Some(true), "two full in a row: backed up");
        assert_eq!(s.after_receive(BATCH, false, ms(6)), None, "already on");
        assert_eq!(s.after_receive(1, false, ms(1000)), None);
        assert_eq!(s.after_receive(1, true, ms(1500)), None, "a late datagram keeps them on");
        assert_eq!(s.after_receive(1, false, ms(1500 + 1999)), None);
        assert_eq!(s.after_receive(1, false, ms(1500 + 2000)), Some(false), "quiet for the hold");
        assert_eq!(s.after_receive(1, false, ms(5000)), None, "off stays off");
    }

    #[test]
    fn stamps_stay_off_when_shedding_is_off_or_the_socket_cannot_stamp() {
        let t0 = Instant::now();
        let mut off = Stamps::new(false, t0);
        let mut refused = Stamps::new(true, t0);
        for i in 0..10 {
            assert_eq!(off.after_receive(BATCH, true, t0 + Duration::from_millis(i)), None);
        }
        refused.unavailable();
        assert_eq!(refused.after_receive(BATCH, false, t0), None);
        assert_eq!(refused.after_receive(BATCH, false, t0), None);
    }

    #[test]
    fn zero_wait_never_waits() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::ZERO, t0);
        assert_eq!(run(&mut p, t0, 0, 200, 30), Duration::ZERO);
    }
}
