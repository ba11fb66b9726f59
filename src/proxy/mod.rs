//! The sans-IO proxy core: bytes and a source address in, actions out. No sockets, no clock
//! of its own (`now` is an argument), so every rule is testable without I/O.
//!
//! Requests are checked (§16.3), initial INVITEs screened (once per transaction, through the
//! verdict cache), and then either answered locally as a stateless UAS or forwarded by
//! splicing our Via, Max-Forwards and the screening headers into the original bytes
//! (§16.6, §16.11). Responses whose top Via is ours lose it and go to the next Via.

pub mod cache;
mod route;

use crate::config::server::{ServerConfig, Transport, Upstream};
use crate::screen::{Call, Decision, ExtraHeader, Screen, Verdict};
use crate::sip::check::{self, Facts, Problem, TopVia};
use crate::sip::reply;
use crate::sip::scan::{self, Kind, Message, StartLine, split_values};
use crate::sip::splice::{Splice, push_dec, push_hex};
use crate::sip::via::{self, HostPort, TxFields};
use crate::telemetry::metrics as m;
use cache::VerdictCache;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inbound {
    pub transport: Transport,
    pub src: SocketAddr,
}

/// Why a message was not forwarded and got no reply; each is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Keepalive,
    TooLarge,
    Malformed,
    NoVia,
    BadVia,
    /// A response whose top Via is not ours (RFC 3261 §16.11).
    NotOurVia,
    /// A response whose next Via has no IP address to send to.
    Unroutable,
    /// The ACK for a reply we generated.
    AckAbsorbed,
    /// An ACK we could not forward (malformed, or no route): ACKs are never answered.
    AckDropped,
}

impl DropReason {
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Keepalive => "keepalive",
            DropReason::TooLarge => "too_large",
            DropReason::Malformed => "malformed",
            DropReason::NoVia => "no_via",
            DropReason::BadVia => "bad_via",
            DropReason::NotOurVia => "not_our_via",
            DropReason::Unroutable => "unroutable",
            DropReason::AckAbsorbed => "ack_absorbed",
            DropReason::AckDropped => "ack_dropped",
        }
    }
}

/// A screening decision, for the decision log.
#[derive(Debug, Clone)]
pub struct Decided {
    pub time: SystemTime,
    pub call_id: String,
    pub decision: Decision,
}

#[derive(Debug)]
pub enum Action {
    Send { transport: Transport, dest: SocketAddr, bytes: Vec<u8> },
    Drop(DropReason),
    Decided(Box<Decided>),
}

/// What the core needs from `[server]` and `[upstream]`.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub advertise: HostPort,
    /// `host:port` as configured, and ` host:port;branch=z9hG4bK-sg` for our Via: built
    /// once so forwarding formats nothing but the branch hash.
    pub advertise_text: String,
    pub via_tail: Vec<u8>,
    /// Addresses we listen on: a Route or Request-URI naming one of them is us.
    pub local: Vec<SocketAddr>,
    pub record_route: bool,
    pub upstream: Option<Upstream>,
    pub max_message_bytes: usize,
    /// Seed for branch and tag hashes; derived from the advertised address so that
    /// branches survive a restart (a CANCEL after a restart still matches its INVITE).
    pub seed: u64,
}

impl ProxyConfig {
    /// A config advertising `host:port` and listening on `local`; the rest default
    /// (no Record-Route, no upstream, 65535-byte messages) and may be set after.
    pub fn new(advertise: &str, local: Vec<SocketAddr>) -> ProxyConfig {
        let hp = HostPort::parse(advertise).unwrap_or(HostPort { host: advertise.to_string(), port: 5060 });
        let via_tail = format!(" {}:{};branch={}", hp.host, hp.port, via::OUR_BRANCH_PREFIX).into_bytes();
        ProxyConfig {
            seed: xxhash_rust::xxh3::xxh3_64(advertise.as_bytes()),
            advertise_text: format!("{}:{}", hp.host, hp.port),
            advertise: hp,
            via_tail,
            local,
            record_route: false,
            upstream: None,
            max_message_bytes: 65535,
        }
    }

    pub fn from_server(s: &ServerConfig) -> ProxyConfig {
        let mut c = ProxyConfig::new(&s.advertise, s.listen.iter().map(|l| l.addr).collect());
        c.record_route = s.record_route;
        c.upstream = s.upstream.clone();
        c.max_message_bytes = s.max_message_bytes;
        c
    }
}

pub const VERDICT_CACHE_CAP: usize = 200_000;

pub struct Proxy {
    cfg: ProxyConfig,
    screen: Arc<dyn Screen>,
    cache: VerdictCache,
    /// Emit `Action::Decided` for each screening (off when no decision log is written).
    record_decisions: bool,
}

impl Proxy {
    pub fn new(cfg: ProxyConfig, screen: Arc<dyn Screen>) -> Proxy {
        Proxy { cfg, screen, cache: VerdictCache::new(VERDICT_CACHE_CAP), record_decisions: true }
    }

    /// Whether screenings produce `Action::Decided` (on by default).
    pub fn record_decisions(&mut self, on: bool) {
        self.record_decisions = on;
    }

    /// Apply a reloaded configuration; cached verdicts stay valid.
    pub fn reconfigure(&mut self, cfg: ProxyConfig) {
        self.cfg = cfg;
    }

    /// Swap the screening step (a reload that adds or removes `[screening]`).
    pub fn set_screen(&mut self, screen: Arc<dyn Screen>) {
        self.screen = screen;
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.cfg
    }

    /// Handle one message; actions are appended to `out`.
    pub fn handle(&mut self, now: SystemTime, from: Inbound, bytes: &[u8], out: &mut Vec<Action>) {
        if bytes.iter().all(|&b| scan::is_lws(b)) {
            return out.push(Action::Drop(DropReason::Keepalive));
        }
        if bytes.len() > self.cfg.max_message_bytes {
            return out.push(Action::Drop(DropReason::TooLarge));
        }
        let msg = match scan::scan(bytes) {
            Ok(msg) => msg,
            Err(_) => return out.push(Action::Drop(DropReason::Malformed)),
        };
        match msg.start {
            StartLine::Response { .. } => {
                m::message_in(from.transport, "response", "-");
                self.response(&msg, out)
            }
            StartLine::Request { .. } => {
                m::message_in(from.transport, "request", m::method_label(msg.method()));
                self.request(now, from, &msg, out)
            }
        }
    }

    fn request(&mut self, now: SystemTime, from: Inbound, msg: &Message<'_>, out: &mut Vec<Action>) {
        let is_ack = msg.method() == b"ACK";
        let top = match check::top_via(msg) {
            Ok(t) => t,
            Err(check::Unanswerable::NoVia) => return out.push(Action::Drop(DropReason::NoVia)),
            Err(check::Unanswerable::BadVia) => return out.push(Action::Drop(DropReason::BadVia)),
        };
        let tag_key = tag_key(msg, &top);
        if is_ack {
            let to_tag = msg.first(Kind::To).and_then(|h| via::tag(msg.bytes, h.value.clone()));
            if to_tag.is_some_and(|t| msg.bytes[t] == self.to_tag(tag_key)[..]) {
                return out.push(Action::Drop(DropReason::AckAbsorbed));
            }
        }
        let facts = match check::request(msg, top.clone(), self.cfg.max_message_bytes) {
            Ok(f) => f,
            Err(_) if is_ack => return out.push(Action::Drop(DropReason::AckDropped)),
            Err(p) => return self.reply_problem(msg, &top, from, &p, out),
        };
        let fields = tx_fields(msg, &facts);
        let tx = via::transaction_hash(&fields, self.cfg.seed);
        let key = verdict_key(tx, &fields);
        let lp = via::loop_hash(&fields, self.cfg.seed);
        if self.looped(msg, lp) {
            if is_ack {
                return out.push(Action::Drop(DropReason::AckDropped));
            }
            let p = Problem {
                code: 482,
                reason: "Loop Detected",
                warning: "request looped back to this proxy".into(),
                unsupported: None,
            };
            return self.reply_problem(msg, &facts.top, from, &p, out);
        }
        let mut verdict = None;
        let initial_invite = msg.method() == b"INVITE" && !has_to_tag(msg);
        if initial_invite {
            let v = match self.cache.get(key, now) {
                Some(v) => {
                    m::cache_hit();
                    v.clone()
                }
                None => {
                    let v = self.screen_call(now, from, msg, out);
                    self.cache.insert(key, v.clone(), now);
                    v
                }
            };
            if let Verdict::Reject { code, reason, headers } = &*v {
                let hs: SmallVec<[(&str, &str); 4]> =
                    headers.iter().map(|h| (h.name.as_ref(), h.value.as_str())).collect();
                return self.reply(msg, &facts.top, from, (*code, reason), &hs, out);
            }
            verdict = Some(v);
        }
        if msg.method() == b"CANCEL" {
            // The INVITE was answered here and never forwarded: nothing downstream to cancel.
            if let Some(Verdict::Reject { .. }) = self.cache.get(key, now).map(|v| &**v) {
                return self.reply(msg, &facts.top, from, (200, "OK"), &[], out);
            }
        }
        let extra = match verdict.as_deref() {
            Some(Verdict::Forward { headers }) => headers.as_slice(),
            _ => &[],
        };
        match self.forward(msg, &facts, from, tx, lp, extra) {
            Ok(send) => {
                m::message_out(send_transport(&send), "request");
                out.push(send)
            }
            Err(_) if is_ack => out.push(Action::Drop(DropReason::AckDropped)),
            Err(p) => self.reply_problem(msg, &facts.top, from, &p, out),
        }
    }

    /// Run the screen for an initial INVITE and record the decision.
    fn screen_call<'a>(
        &self,
        now: SystemTime,
        from: Inbound,
        msg: &Message<'a>,
        out: &mut Vec<Action>,
    ) -> Arc<Verdict> {
        // Borrowed from the message; only a value that is not valid UTF-8 is copied. (The
        // strict check first: it is several times faster than the lossy one on valid text.)
        let text = |b: &'a [u8]| match std::str::from_utf8(b) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(b),
        };
        let call = Call {
            source: Some(from.src.ip()),
            account_header: self.screen.account_header().and_then(|h| msg.named(&h)).map(text),
            request_uri: text(msg.request_uri()),
            from: msg.value(Kind::From).map(text).unwrap_or_default(),
            to: msg.value(Kind::To).map(text).unwrap_or_default(),
            p_asserted_identity: msg.value(Kind::PAssertedIdentity).map(text),
            identity: msg.value(Kind::Identity).map(text),
            call_id: msg.value(Kind::CallId).map(text).unwrap_or_default(),
        };
        let started = Instant::now();
        let decision = self.screen.screen(&call, now);
        let verdict_label = match (&*decision.verdict, decision.would_reject) {
            (Verdict::Reject { .. }, _) => "reject",
            (Verdict::Forward { .. }, true) => "would_reject",
            (Verdict::Forward { .. }, false) => "forward",
        };
        m::verdict(
            verdict_label,
            decision.rule.map_or("-", |r| r.name()),
            decision.account.as_deref().unwrap_or("-"),
            started.elapsed().as_secs_f64(),
        );
        let verdict = decision.verdict.clone();
        if self.record_decisions {
            let call_id = call.call_id.into_owned();
            out.push(Action::Decided(Box::new(Decided { time: now, call_id, decision })));
        }
        verdict
    }

    /// A Via of ours further down the stack whose loop part matches this request: the
    /// request came back unchanged (a spiral changes the Request-URI and passes).
    fn looped(&self, msg: &Message<'_>, lp: u32) -> bool {
        let b = msg.bytes;
        msg.all(Kind::Via)
            .filter(|h| memchr::memmem::find(&b[h.value.clone()], via::OUR_BRANCH_PREFIX.as_bytes()).is_some())
            .flat_map(|h| split_values(b, h.value.clone()))
            .any(|v| {
                via::parse(b, v).is_ok_and(|v| {
                    v.is_ours(b, &self.cfg.advertise)
                        && v.branch.as_ref().and_then(|r| via::loop_part(&b[r.clone()])) == Some(lp)
                })
            })
    }

    /// Our To tag for a local reply: derived from the transaction so that a retransmission
    /// gets the same reply and the ACK for it can be recognised without state.
    fn to_tag(&self, key: u64) -> [u8; 18] {
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(&key.to_le_bytes(), self.cfg.seed);
        let mut tag = *b"sg0000000000000000";
        for (i, c) in tag[2..].iter_mut().enumerate() {
            *c = b"0123456789abcdef"[((h >> (60 - 4 * i)) & 0xf) as usize];
        }
        tag
    }

    fn reply_problem(&self, msg: &Message<'_>, top: &TopVia, from: Inbound, p: &Problem, out: &mut Vec<Action>) {
        if msg.method() == b"ACK" {
            return out.push(Action::Drop(DropReason::AckDropped));
        }
        let warning = format!("399 {} \"{}\"", self.cfg.advertise.host, p.warning.replace('"', "'"));
        let mut extra = vec![("Warning", warning.as_str())];
        if let Some(u) = &p.unsupported {
            extra.push(("Unsupported", u.as_str()));
        }
        self.reply(msg, top, from, (p.code, p.reason), &extra, out)
    }

    fn reply(
        &self,
        msg: &Message<'_>,
        top: &TopVia,
        from: Inbound,
        (code, reason): (u16, &str),
        extra: &[(&str, &str)],
        out: &mut Vec<Action>,
    ) {
        let tag = self.to_tag(tag_key(msg, top));
        let bytes = reply::build(msg, Some(top), from.src, code, reason, &tag, extra);
        // Reliable transports answer on the connection (its peer address); UDP per §18.2.2
        // with RFC 3581: to the source address, at the rport or sent-by port.
        let dest = match from.transport {
            Transport::Tcp => from.src,
            Transport::Udp => match top.via.rport {
                Some(_) => from.src,
                None => SocketAddr::new(from.src.ip(), top.via.port.unwrap_or(5060)),
            },
        };
        m::reply_sent(code);
        m::message_out(from.transport, "reply");
        out.push(Action::Send { transport: from.transport, dest, bytes });
    }

    fn response(&self, msg: &Message<'_>, out: &mut Vec<Action>) {
        let b = msg.bytes;
        let Ok(top) = check::top_via(msg) else {
            return out.push(Action::Drop(DropReason::BadVia));
        };
        if !top.via.is_ours(b, &self.cfg.advertise) {
            return out.push(Action::Drop(DropReason::NotOurVia));
        }
        let mut s = Splice::new();
        let line = msg.headers[top.header].line.clone();
        let next = match top.values.get(1) {
            Some(second) => {
                s.delete(top.value().start..second.start);
                Some(second.clone())
            }
            None => {
                s.delete(line.clone());
                msg.headers
                    .iter()
                    .skip(top.header + 1)
                    .find(|h| h.kind == Kind::Via)
                    .and_then(|h| split_values(b, h.value.clone()).into_iter().next())
            }
        };
        let Some(next) = next.and_then(|r| via::parse(b, r).ok()) else {
            return out.push(Action::Drop(DropReason::Unroutable));
        };
        let transport = match &b[next.transport.clone()] {
            t if t.eq_ignore_ascii_case(b"UDP") => Transport::Udp,
            t if t.eq_ignore_ascii_case(b"TCP") => Transport::Tcp,
            _ => return out.push(Action::Drop(DropReason::Unroutable)),
        };
        let Some(dest) = next.response_target(b) else {
            return out.push(Action::Drop(DropReason::Unroutable));
        };
        m::message_out(transport, "response");
        out.push(Action::Send { transport, dest, bytes: s.apply(b) });
    }

    /// Splice the forwarded request and choose its next hop.
    fn forward(
        &self,
        msg: &Message<'_>,
        facts: &Facts,
        from: Inbound,
        tx: u64,
        lp: u32,
        extra: &[ExtraHeader],
    ) -> Result<Action, Problem> {
        let b = msg.bytes;
        let mut s = Splice::new();
        let (transport, dest) = route::next_hop(msg, facts.ruri.as_ref(), &self.cfg, &mut s)?;
        let mut head = Vec::with_capacity(160);
        head.extend_from_slice(b"Via: SIP/2.0/");
        head.extend_from_slice(transport.via_token().as_bytes());
        head.extend_from_slice(&self.cfg.via_tail);
        push_hex(&mut head, tx, 16);
        push_hex(&mut head, u64::from(lp), 8);
        head.extend_from_slice(b"\r\n");
        if self.cfg.record_route && creates_dialog(msg) {
            head.extend_from_slice(b"Record-Route: <sip:");
            head.extend_from_slice(self.cfg.advertise_text.as_bytes());
            head.extend_from_slice(b";lr>\r\n");
        }
        if facts.max_forwards.is_none() {
            head.extend_from_slice(b"Max-Forwards: 70\r\n");
        }
        for h in extra {
            head.extend_from_slice(h.name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(h.value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        s.insert(msg.headers[facts.top.header].line.start, &head);
        reply::received_edits(&mut s, b, &facts.top, from.src, 0);
        if let Some((idx, v)) = facts.max_forwards {
            let mut n = Vec::with_capacity(3);
            push_dec(&mut n, v - 1);
            s.replace(msg.headers[idx].value.clone(), &n);
        }
        // Bytes past Content-Length (a second message in a datagram) are not ours to send.
        if facts.body.end < b.len() {
            s.delete(facts.body.end..b.len());
        }
        Ok(Action::Send { transport, dest, bytes: s.apply(b) })
    }
}

fn send_transport(a: &Action) -> Transport {
    match a {
        Action::Send { transport, .. } => *transport,
        _ => Transport::Udp,
    }
}

fn has_to_tag(msg: &Message<'_>) -> bool {
    msg.first(Kind::To).is_some_and(|h| via::tag(msg.bytes, h.value.clone()).is_some())
}

/// Requests that establish a dialog get our Record-Route when record_route is on.
fn creates_dialog(msg: &Message<'_>) -> bool {
    matches!(msg.method(), b"INVITE" | b"SUBSCRIBE" | b"REFER" | b"NOTIFY") && !has_to_tag(msg)
}

fn tx_fields<'a>(msg: &Message<'a>, facts: &Facts) -> TxFields<'a> {
    let b = msg.bytes;
    let v = &facts.top.via;
    let joined = |k: Kind| msg.first(k).map(|h| &b[h.value.clone()]).unwrap_or_default();
    TxFields {
        top_via: &b[facts.top.value()],
        top_branch: v.branch.as_ref().map(|r| &b[r.clone()]),
        sent_by: &b[v.host.clone()],
        magic: v.has_magic_cookie(b),
        request_uri: msg.request_uri(),
        call_id: joined(Kind::CallId),
        from_tag: msg.first(Kind::From).and_then(|h| via::tag(b, h.value.clone())).map(|r| &b[r]).unwrap_or_default(),
        cseq_number: facts.cseq_number,
        proxy_require: joined(Kind::ProxyRequire),
        proxy_authorization: joined(Kind::ProxyAuthorization),
    }
}

/// What our To tag is derived from: fields an INVITE, its retransmissions and the ACK for
/// a non-2xx reply share (top Via, Call-ID, CSeq number), read raw so that even a request
/// that failed the checks gets a stable tag.
fn tag_key(msg: &Message<'_>, top: &TopVia) -> u64 {
    let cseq = msg.value(Kind::CSeq).unwrap_or_default();
    let digits = &cseq[..cseq.iter().position(|c| !c.is_ascii_digit()).unwrap_or(cseq.len())];
    via::hash_parts(0, &[&msg.bytes[top.value()], msg.value(Kind::CallId).unwrap_or_default(), digits])
}

/// The verdict cache key: the transaction (branch or §16.11 fields), Call-ID, CSeq number.
fn verdict_key(tx: u64, f: &TxFields<'_>) -> u64 {
    via::hash_parts(tx, &[f.call_id, &f.cseq_number.to_le_bytes()])
}

#[cfg(test)]
mod tests;
