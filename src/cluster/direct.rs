//! A UDP thread's own connection to a single Redis (`redis://`): the reservations a receive
//! batch asks for go out as one pipeline after the batch, and their answers are read by the
//! same thread between receives. A call that waits for Redis then costs no hand-off to
//! another thread and no wake-up of its own under load (the answers are taken with the next
//! batch). `Cluster::reserve` on tokio stays the path for TCP, TLS, Redis Cluster, and for a
//! thread whose connection is not up yet.
//!
//! Redis answers a connection's requests in order, so what is in flight is a FIFO. A call
//! not answered within `timeout_ms` is decided by `on_failure`; its answer, when it comes,
//! is taken back if Redis counted the call. A connection whose oldest request has waited
//! `LATE_ANSWER` is dropped (the calls on it were decided long ago).
use super::redis::{Scripts, tally};
use super::resp::{Packer, frame_len, ints};
use super::{Cluster, LATE_ANSWER};
use crate::config::cluster::RedisConfig;
use crate::proxy::Held;
use crate::screen::Counting;
use crate::screen::quota::shared::{Reservation, StoreFailure, Tally};
use crate::telemetry::metrics as m;
use redis::{ConnectionAddr, FromRedisValue, IntoConnectionInfo};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bytes taken per read.
const READ_CHUNK: usize = 16 * 1024;
/// Requests not yet taken by a Redis that has stopped reading: beyond this, new calls are
/// decided by `on_failure` (overloaded) instead of queueing more.
const MAX_UNSENT: usize = 1 << 20;
/// An answer larger than this is not one of ours: the connection is dropped.
const MAX_ANSWER: usize = 64 * 1024;
/// The name of these connections in Redis's CLIENT LIST.
pub const CLIENT_NAME: &str = "sipguard-udp";
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A call's answer from Redis, or the failure that stands in for it.
pub struct Answer {
    pub counting: Box<Counting>,
    pub held: Held,
    pub result: Result<Tally, StoreFailure>,
    /// From the request's write to its answer.
    pub waited: Duration,
}

enum Entry {
    Call {
        counting: Box<Counting>,
        held: Held,
        sent: Instant,
    },
    /// Decided without its answer (timeout): an admitted answer is taken back.
    Late {
        reservation: Box<Reservation>,
        sent: Instant,
    },
    Release {
        sent: Instant,
    },
}

impl Entry {
    fn sent(&self) -> Instant {
        match self {
            Entry::Call { sent, .. } | Entry::Late { sent, .. } | Entry::Release { sent } => *sent,
        }
    }
}

/// One connection and the requests in flight on it.
struct Link {
    stream: TcpStream,
    out: Vec<u8>,
    packer: Packer,
    /// Read into, zeroed once.
    chunk: Box<[u8]>,
    input: Vec<u8>,
    fifo: VecDeque<Entry>,
    /// Entries before this index have been past their timeout already: none of them is a
    /// `Call`, so a wake during a stall looks only at what is new.
    expired: usize,
    broken: bool,
}

impl Link {
    fn new(stream: TcpStream) -> Link {
        Link {
            stream,
            out: Vec::new(),
            packer: Packer::default(),
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            input: Vec::new(),
            fifo: VecDeque::new(),
            expired: 0,
            broken: false,
        }
    }

    /// Send what is queued, as far as the socket takes it.
    fn flush(&mut self) {
        let mut done = 0;
        while done < self.out.len() {
            match self.stream.write(self.out.get(done..).unwrap_or_default()) {
                Ok(0) => {
                    self.broken = true;
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.broken = true;
                    break;
                }
            }
        }
        self.out.drain(..done);
    }

    /// Read what Redis has sent and match each complete answer with its request.
    fn read(&mut self, scripts: &Scripts, prefix: &str, now: Instant, answers: &mut Vec<Answer>) {
        loop {
            let chunk = &mut self.chunk[..];
            match self.stream.read(chunk) {
                Ok(0) => {
                    self.broken = true;
                    break;
                }
                Ok(n) => {
                    self.input.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    if n < chunk.len() {
                        // All there was: another read would only say so.
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.broken = true;
                    break;
                }
            }
        }
        let mut at = 0;
        let input = std::mem::take(&mut self.input);
        while let Some(rest) = input.get(at..) {
            match frame_len(rest) {
                Ok(Some(n)) => {
                    self.answer(rest.get(..n).unwrap_or_default(), scripts, prefix, now, answers);
                    at += n;
                }
                Ok(None) => break,
                Err(()) => {
                    self.broken = true;
                    break;
                }
            }
        }
        self.input = input;
        self.input.drain(..at.min(self.input.len()));
        if self.input.len() > MAX_ANSWER {
            self.broken = true;
        }
    }

    fn answer(&mut self, frame: &[u8], scripts: &Scripts, prefix: &str, now: Instant, answers: &mut Vec<Answer>) {
        let Some(entry) = self.fifo.pop_front() else {
            // An answer to nothing asked: this connection is out of step.
            self.broken = true;
            return;
        };
        self.expired = self.expired.saturating_sub(1);
        let mut v = [0i64; 8];
        let read: Vec<i64>;
        let reply: Result<&[i64], String> = match ints(frame, &mut v) {
            Some(n) => Ok(v.get(..n).unwrap_or_default()),
            // Anything else (an error reply, say) is read by the crate.
            None => match redis::parse_redis_value(frame)
                .map_err(|e| e.to_string())
                .and_then(|value| Vec::<i64>::from_redis_value(value).map_err(|e| e.to_string()))
            {
                Ok(x) => {
                    read = x;
                    Ok(&read)
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = &reply {
            tracing::debug!(error = %e, "cluster: Redis refused a script call");
            // A script flushed from Redis (SCRIPT FLUSH, a failover): a new connection loads it.
            self.broken |= e.contains("NOSCRIPT");
        }
        match entry {
            Entry::Call { counting, held, sent } => {
                let result = reply.map(tally).map_err(|_| StoreFailure::Script);
                answers.push(Answer { counting, held, result, waited: now.saturating_duration_since(sent) });
            }
            Entry::Late { reservation, .. } => {
                if reply.is_ok_and(|v| tally(v).admitted) {
                    scripts.pack_release(prefix, &reservation, &mut self.packer, &mut self.out);
                    self.fifo.push_back(Entry::Release { sent: now });
                }
            }
            Entry::Release { .. } => {}
        }
    }

    /// Decide the calls whose answer is later than `timeout`. Entries are queued in the
    /// order they were sent, so this starts where the last call left off and stops at the
    /// first entry still in time: each entry is looked at once past its timeout.
    fn expire(&mut self, now: Instant, timeout: Duration, answers: &mut Vec<Answer>) {
        if self.fifo.front().is_some_and(|e| now.saturating_duration_since(e.sent()) >= LATE_ANSWER) {
            self.broken = true;
            return;
        }
        let from = self.expired.min(self.fifo.len());
        for e in self.fifo.range_mut(from..) {
            let sent = e.sent();
            if now.saturating_duration_since(sent) < timeout {
                break;
            }
            self.expired += 1;
            if let Entry::Call { .. } = e
                && let Entry::Call { counting, held, .. } = std::mem::replace(e, Entry::Release { sent })
            {
                *e = Entry::Late { reservation: Box::new(counting.reservation.clone()), sent };
                answers.push(Answer { counting, held, result: Err(StoreFailure::Timeout), waited: timeout });
            }
        }
    }

    /// When the next entry's timeout (or the stall limit) passes. The next entry may be a
    /// release rather than a call: waking for it costs one look and moves past it.
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        let stall = self.fifo.front().map(|e| e.sent() + LATE_ANSWER);
        let next = self.fifo.get(self.expired).map(|e| e.sent() + timeout);
        match (stall, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The calls in flight on a connection that is gone, to be reserved again on tokio's
    /// connections. Redis may have counted some of them already (a reply lost with the
    /// connection): counting one twice errs on the strict side.
    fn undecided(self, out: &mut Vec<(Box<Counting>, Held)>) {
        for e in self.fifo {
            if let Entry::Call { counting, held, .. } = e {
                out.push((counting, held));
            }
        }
    }
}

/// Open a connection for a UDP thread: connect, authenticate, select the database and
/// load the scripts, then hand it over non-blocking. Blocking: run off the UDP thread.
pub fn connect(cfg: &RedisConfig, scripts: &Scripts) -> io::Result<TcpStream> {
    let bad = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    let url = cfg.urls.first().ok_or_else(|| bad("no Redis URL".into()))?;
    let info = url.as_str().into_connection_info().map_err(|e| bad(e.to_string()))?;
    let ConnectionAddr::Tcp(host, port) = info.addr() else {
        return Err(bad("not a plain TCP Redis URL".into()));
    };
    let wait = cfg.timeout.max(Duration::from_millis(200));
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the Redis host has no address");
    let mut stream = None;
    for addr in (host.as_str(), *port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, wait) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or(last)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(wait))?;
    stream.set_write_timeout(Some(wait))?;
    let mut out = Vec::new();
    let mut expect: Vec<Option<&str>> = Vec::new();
    let settings = info.redis_settings();
    if let Some(password) = settings.password() {
        let mut c = redis::cmd("AUTH");
        if let Some(user) = settings.username() {
            c.arg(user);
        }
        c.arg(password).write_packed_command(&mut out);
        expect.push(None);
    }
    if settings.db() != 0 {
        redis::cmd("SELECT").arg(settings.db()).write_packed_command(&mut out);
        expect.push(None);
    }
    // Named, so that an operator's CLIENT LIST tells these from tokio's connections.
    redis::cmd("CLIENT").arg("SETNAME").arg(CLIENT_NAME).write_packed_command(&mut out);
    expect.push(None);
    for (c, digest) in scripts.load_cmds() {
        c.write_packed_command(&mut out);
        expect.push(Some(digest));
    }
    stream.write_all(&out)?;
    let mut input = Vec::new();
    let mut chunk = [0u8; 4096];
    for want in expect {
        let n = loop {
            match frame_len(&input) {
                Ok(Some(n)) => break n,
                Ok(None) if input.len() <= MAX_ANSWER => {}
                _ => return Err(bad("Redis sent something that is not RESP".into())),
            }
            let got = stream.read(&mut chunk)?;
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            input.extend_from_slice(chunk.get(..got).unwrap_or_default());
        };
        let value = redis::parse_redis_value(input.get(..n).unwrap_or_default()).map_err(|e| bad(e.to_string()))?;
        input.drain(..n);
        if let redis::Value::ServerError(e) = &value {
            return Err(bad(format!("Redis refused the connection set-up: {e:?}")));
        }
        if let Some(digest) = want {
            let got = String::from_redis_value(value).map_err(|e| bad(e.to_string()))?;
            if got != digest {
                return Err(bad(format!("SCRIPT LOAD gave {got}, expected {digest}")));
            }
        }
    }
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// Whether a UDP thread may keep a connection of its own to this cluster store.
pub fn eligible(cfg: &RedisConfig) -> bool {
    !cfg.cluster
        && cfg.urls.len() == 1
        && cfg
            .urls
            .first()
            .and_then(|u| u.as_str().into_connection_info().ok())
            .is_some_and(|i| matches!(i.addr(), ConnectionAddr::Tcp(..)))
}

/// A UDP thread's side of the cluster store: its connection (opened in the background
/// while Redis is up), and the answers ready for the core.
pub struct Direct {
    cluster: Arc<Cluster>,
    link: Option<Link>,
    opening: Option<mpsc::Receiver<io::Result<TcpStream>>>,
    next_try: Instant,
    /// Before the next try after a failure: none after a good spell, then doubling.
    delay: Duration,
    answers: Vec<Answer>,
    retry: Vec<(Box<Counting>, Held)>,
}

impl Direct {
    pub fn new(cluster: Arc<Cluster>, now: Instant) -> Option<Direct> {
        if !eligible(cluster.config()) {
            return None;
        }
        Some(Direct {
            cluster,
            link: None,
            opening: None,
            next_try: now,
            delay: Duration::ZERO,
            answers: Vec::new(),
            retry: Vec::new(),
        })
    }

    /// Take up a connection that has opened; open one when there is none and Redis is up;
    /// give up a broken one. Its calls are reserved again through tokio (`take_retries`):
    /// a connection Redis closed (its idle `timeout`, CLIENT KILL) is not an outage, and
    /// when Redis is really gone those connections find out and `on_failure` applies.
    pub fn tick(&mut self, now: Instant) {
        if self.link.as_ref().is_some_and(|l| l.broken)
            && let Some(l) = self.link.take()
        {
            tracing::debug!(in_flight = l.fifo.len(), "cluster: a UDP thread's own Redis connection broke");
            m::cluster_failure(StoreFailure::Connection.label());
            l.undecided(&mut self.retry);
            self.failed_at(now);
        }
        if let Some(rx) = &self.opening {
            match rx.try_recv() {
                Ok(Ok(stream)) => {
                    self.link = Some(Link::new(stream));
                    self.opening = None;
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cluster: a UDP thread's own Redis connection did not open");
                    self.opening = None;
                    self.failed_at(now);
                }
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => self.opening = None,
            }
        }
        if self.link.is_none() && self.opening.is_none() && self.cluster.is_up() && now >= self.next_try {
            let (tx, rx) = mpsc::channel();
            let cluster = self.cluster.clone();
            let spawned = std::thread::Builder::new()
                .name("sipguard-redis-open".into())
                .spawn(move || drop(tx.send(connect(cluster.config(), cluster.scripts()))));
            match spawned {
                Ok(_) => self.opening = Some(rx),
                Err(_) => self.next_try = now + BACKOFF_MAX,
            }
        }
    }

    fn failed_at(&mut self, now: Instant) {
        self.next_try = now + self.delay;
        self.delay = (self.delay * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
    }

    /// Whether reservations go through this thread's connection (else through tokio).
    pub fn ready(&self) -> bool {
        self.link.as_ref().is_some_and(|l| !l.broken)
    }

    /// Queue a call's reservation; it is written with the rest of the batch (`flush`).
    pub fn reserve(&mut self, counting: Box<Counting>, held: Held, now: Instant) {
        let failure = if !self.cluster.is_up() {
            Some(StoreFailure::Down)
        } else {
            match &mut self.link {
                Some(l) if l.fifo.len() < self.cluster.config().max_pending && l.out.len() < MAX_UNSENT => {
                    let prefix = &self.cluster.config().key_prefix;
                    self.cluster.scripts().pack_reserve(prefix, &counting.reservation, &mut l.packer, &mut l.out);
                    l.fifo.push_back(Entry::Call { counting, held, sent: now });
                    return;
                }
                Some(_) => Some(StoreFailure::Overloaded),
                None => Some(StoreFailure::Down),
            }
        };
        if let Some(f) = failure {
            self.cluster.failed(f);
            self.answers.push(Answer { counting, held, result: Err(f), waited: Duration::ZERO });
        }
    }

    pub fn flush(&mut self) {
        if let Some(l) = &mut self.link {
            l.flush();
        }
    }

    /// Whether the thread must also wait for this connection (requests in flight or
    /// unsent): its descriptor, and whether to wait for room to write.
    pub fn waits(&self) -> Option<(BorrowedFd<'_>, bool)> {
        let l = self.link.as_ref()?;
        (!l.fifo.is_empty() || !l.out.is_empty()).then(|| (l.stream.as_fd(), !l.out.is_empty()))
    }

    /// When the thread must wake at the latest to decide a call Redis has not answered.
    pub fn deadline(&self) -> Option<Instant> {
        self.link.as_ref().and_then(|l| l.deadline(self.cluster.config().timeout))
    }

    /// Read the answers that have come, decide the calls past their deadline.
    pub fn poll(&mut self, readable: bool, now: Instant) {
        let Some(l) = &mut self.link else { return };
        let before = self.answers.len();
        if readable {
            l.read(self.cluster.scripts(), &self.cluster.config().key_prefix, now, &mut self.answers);
        }
        l.expire(now, self.cluster.config().timeout, &mut self.answers);
        for a in self.answers.get(before..).unwrap_or_default() {
            match &a.result {
                Ok(t) => {
                    self.cluster.answered();
                    self.delay = Duration::ZERO;
                    m::cluster_reservation(t.admitted, a.waited.as_secs_f64());
                }
                Err(f) => {
                    self.cluster.failed(*f);
                }
            }
        }
    }

    /// Move the answers ready for the core to `out`.
    pub fn take_into(&mut self, out: &mut Vec<Answer>) {
        out.append(&mut self.answers);
    }

    /// Move the calls to reserve again (their connection broke) to `out`.
    pub fn take_retries(&mut self, out: &mut Vec<(Box<Counting>, Held)>) {
        out.append(&mut self.retry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::server::Transport;
    use crate::proxy::{Inbound, Load};
    use crate::screen::Decision;
    use crate::screen::quota::Windows;
    use std::net::TcpListener;

    fn call(n: u64) -> (Box<Counting>, Held) {
        let reservation = Reservation {
            account: Arc::from("acme"),
            windows: Windows { hour: 0, day: 1, week: 0, day_start: 0 },
            caller: 12_125_550_100,
            callee: 12_125_550_000 + n,
            caps: [None, Some(10), None, None, None],
            max_tracked: 1000,
        };
        let held = Held {
            from: Inbound { transport: Transport::Udp, src: "127.0.0.1:5060".parse().unwrap() },
            bytes: format!("INVITE {n}").into_bytes(),
            load: Load::Normal,
        };
        (Box::new(Counting { reservation, decision: Decision::pass() }), held)
    }

    /// A link and the Redis end of its connection.
    fn pair() -> (Link, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (theirs, _) = l.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        (Link::new(ours), theirs)
    }

    fn send(link: &mut Link, calls: std::ops::Range<u64>, now: Instant) {
        let scripts = Scripts::default();
        for n in calls {
            let (c, h) = call(n);
            scripts.reserve_cmd("p:", &c.reservation).write_packed_command(&mut link.out);
            link.fifo.push_back(Entry::Call { counting: c, held: h, sent: now });
        }
        link.flush();
    }

    /// Read until the Redis end has `n` whole requests; returns them.
    fn requests(theirs: &mut TcpStream, n: usize) -> Vec<Vec<u8>> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while out.len() < n {
            match frame_len(&buf) {
                Ok(Some(len)) => out.push(buf.drain(..len).collect()),
                _ => {
                    let got = theirs.read(&mut chunk).unwrap();
                    assert!(got > 0, "connection closed with {} of {n} requests", out.len());
                    buf.extend_from_slice(&chunk[..got]);
                }
            }
        }
        out
    }

    fn read_all(link: &mut Link, now: Instant, answers: &mut Vec<Answer>) {
        let scripts = Scripts::default();
        // The answers are on loopback: they come at once, but not always in the same read.
        for _ in 0..200 {
            link.read(&scripts, "p:", now, answers);
            if link.broken || link.fifo.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn answers_in_one_pipeline_go_back_to_their_calls_in_order() {
        let (mut link, mut theirs) = pair();
        let now = Instant::now();
        send(&mut link, 0..3, now);
        let reqs = requests(&mut theirs, 3);
        assert!(reqs.iter().all(|r| r.windows(7).any(|w| w == b"EVALSHA")));
        // Admitted, refused (cap reached), admitted: one write, split across a frame.
        let replies = b"*7\r\n:1\r\n:0\r\n:0\r\n:0\r\n:0\r\n:0\r\n:0\r\n*7\r\n:0\r\n:0\r\n:10\r\n:0\r\n:0\r\n:0\r\n:0\r\n*7\r\n:1\r\n:0\r\n:1\r\n:0\r\n:0\r\n:0\r\n:0\r\n";
        theirs.write_all(&replies[..20]).unwrap();
        let mut answers = Vec::new();
        std::thread::sleep(Duration::from_millis(5));
        link.read(&Scripts::default(), "p:", now, &mut answers);
        assert!(answers.len() <= 1, "a partial answer is not taken");
        theirs.write_all(&replies[20..]).unwrap();
        read_all(&mut link, now, &mut answers);
        assert!(!link.broken);
        let got: Vec<(String, bool)> = answers
            .iter()
            .map(|a| (String::from_utf8_lossy(&a.held.bytes).into_owned(), a.result.as_ref().unwrap().admitted))
            .collect();
        assert_eq!(got, [("INVITE 0".into(), true), ("INVITE 1".into(), false), ("INVITE 2".into(), true)]);
        assert_eq!(answers[1].result.as_ref().unwrap().values[1], 10);
    }

    #[test]
    fn a_late_answer_is_decided_by_timeout_and_taken_back_when_it_counted() {
        let (mut link, mut theirs) = pair();
        let t0 = Instant::now();
        send(&mut link, 0..2, t0);
        requests(&mut theirs, 2);
        let mut answers = Vec::new();
        link.expire(t0 + Duration::from_millis(49), Duration::from_millis(50), &mut answers);
        assert!(answers.is_empty());
        link.expire(t0 + Duration::from_millis(50), Duration::from_millis(50), &mut answers);
        assert_eq!(answers.len(), 2);
        assert!(answers.iter().all(|a| a.result == Err(StoreFailure::Timeout)));
        // Redis counted the first, refused the second: only the first is taken back.
        theirs
            .write_all(
                b"*7\r\n:1\r\n:0\r\n:0\r\n:0\r\n:0\r\n:0\r\n:0\r\n*7\r\n:0\r\n:9\r\n:10\r\n:0\r\n:0\r\n:0\r\n:0\r\n",
            )
            .unwrap();
        let mut more = Vec::new();
        read_all(&mut link, t0, &mut more);
        assert!(more.is_empty(), "a call is decided once");
        link.flush();
        let release = requests(&mut theirs, 1);
        let digest = Scripts::default().load_cmds()[1].1.to_string();
        assert!(release[0].windows(digest.len()).any(|w| w == digest.as_bytes()), "RELEASE for the counted call");
        assert_eq!(link.fifo.len(), 1, "the release's answer is still to come");
        // A connection whose oldest request waited LATE_ANSWER is given up.
        link.expire(t0 + LATE_ANSWER, Duration::from_millis(50), &mut more);
        assert!(link.broken);
    }

    #[test]
    fn a_stall_looks_at_each_call_once_past_its_timeout() {
        let (mut link, mut theirs) = pair();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let timeout = ms(50);
        for n in 0..1000 {
            send(&mut link, n..n + 1, t0 + ms(n));
        }
        let mut answers = Vec::new();
        for k in 0..1000u64 {
            let wake = t0 + timeout + ms(k);
            link.expire(wake, timeout, &mut answers);
            assert_eq!(answers.len(), k as usize + 1, "one more call decided at {k} ms");
            assert_eq!(link.expired, k as usize + 1, "the decided ones are not looked at again");
            link.expire(wake, timeout, &mut answers);
            assert_eq!(answers.len(), k as usize + 1, "a second wake decides nothing");
            let next = (k < 999).then(|| t0 + ms(k + 1) + timeout);
            assert_eq!(link.deadline(timeout), next.map(|n| n.min(t0 + LATE_ANSWER)).or(Some(t0 + LATE_ANSWER)));
        }
        assert!(answers.iter().all(|a| a.result == Err(StoreFailure::Timeout)));
        // Redis comes back and refuses the first ten: they leave the queue, the count follows.
        drop(requests(&mut theirs, 10));
        theirs.write_all(&b"*7\r\n:0\r\n:9\r\n:10\r\n:0\r\n:0\r\n:0\r\n:0\r\n".repeat(10)).unwrap();
        let mut more = Vec::new();
        for _ in 0..200 {
            link.read(&Scripts::default(), "p:", t0 + ms(1100), &mut more);
            if link.fifo.len() == 990 {
                break;
            }
            std::thread::sleep(ms(1));
        }
        assert_eq!((link.fifo.len(), link.expired), (990, 990));
        assert!(more.is_empty() && link.out.is_empty(), "refused late calls are not released");
        // A new call behind them gets its own deadline and is decided once.
        send(&mut link, 1000..1001, t0 + ms(1100));
        assert_eq!(link.deadline(timeout), Some(t0 + ms(1150)));
        link.expire(t0 + ms(1150), timeout, &mut more);
        assert_eq!((more.len(), link.expired), (1, 991));
    }

    #[test]
    fn answers_nobody_asked_for_or_that_are_not_resp_break_the_connection() {
        for junk in [&b":1\r\n"[..], b"HTTP/1.1 200 OK\r\n"] {
            let (mut link, mut theirs) = pair();
            let now = Instant::now();
            if junk.starts_with(b"HTTP") {
                send(&mut link, 0..1, now);
                requests(&mut theirs, 1);
            }
            theirs.write_all(junk).unwrap();
            let mut answers = Vec::new();
            for _ in 0..200 {
                link.read(&Scripts::default(), "p:", now, &mut answers);
                if link.broken {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(link.broken, "{:?}", String::from_utf8_lossy(junk));
            // The call in flight is reserved again elsewhere, not decided here.
            let mut retry = Vec::new();
            link.undecided(&mut retry);
            assert_eq!(retry.len(), usize::from(junk.starts_with(b"HTTP")));
            assert!(answers.is_empty());
        }
    }

    #[test]
    fn a_closed_connection_is_noticed() {
        let (mut link, theirs) = pair();
        send(&mut link, 0..1, Instant::now());
        drop(theirs);
        let mut answers = Vec::new();
        for _ in 0..200 {
            link.read(&Scripts::default(), "p:", Instant::now(), &mut answers);
            if link.broken {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(link.broken);
    }

    #[test]
    fn frames_resp2_values_and_waits_for_the_rest() {
        let reply = b"*7\r\n:1\r\n:0\r\n:3\r\n:0\r\n:0\r\n:0\r\n:0\r\n";
        assert_eq!(frame_len(reply), Ok(Some(reply.len())));
        for cut in 0..reply.len() {
            assert_eq!(frame_len(&reply[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(frame_len(b"$5\r\nhello\r\n+OK\r\n"), Ok(Some(11)));
        assert_eq!(frame_len(b"$5\r\nhel"), Ok(None));
        assert_eq!(frame_len(b"-NOSCRIPT No matching script\r\n"), Ok(Some(30)));
        assert_eq!(frame_len(b"*2\r\n*1\r\n:1\r\n$-1\r\n"), Ok(Some(17)));
        assert_eq!(frame_len(b"*-1\r\n"), Ok(Some(5)));
        assert_eq!(frame_len(b"?x\r\n"), Err(()));
        assert_eq!(frame_len(b"$5\r\nhelloXY"), Err(()));
        assert_eq!(frame_len(b"*-2\r\n"), Err(()));
        assert_eq!(frame_len(b":1\n"), Err(()));
    }
}
