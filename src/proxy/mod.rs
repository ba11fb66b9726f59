//! The sans-IO proxy core: bytes and a source address in, actions out. No sockets, no clock
//! of its own (`now` is an argument), so every rule is testable without I/O.
//!
//! Requests are checked (§16.3); every INVITE that does not prove it belongs to a dialog
//! screened here is screened, once per call (Call-ID + From tag, through the verdict
//! cache), and then either answered locally as a stateless UAS or forwarded by splicing our
//! Via, Record-Route and Max-Forwards into the original bytes (§16.6, §16.11). A response is
//! relayed only when its top Via carries a branch we issued for the address it goes to.

pub mod cache;
mod config;
pub mod events;
pub mod redirect;
mod route;

pub use config::{Advert, ProxyConfig};

use crate::config::server::{ServerMode, Transport};
use crate::screen::behaviour::CallEvent;
use crate::screen::quota::shared::Reservation;
use crate::screen::stir::Verstat;
use crate::screen::{Call, Decision, ExtraHeader, Lookup, Screen, Step, Verdict};
use crate::sip::addr::{party_of, tag_of};
use crate::sip::branch::{self, Purpose, TxFields};
use crate::sip::check::{self, Facts, Problem, TopVia};
use crate::sip::reply;
use crate::sip::scan::{self, Kind, Message, StartLine, values};
use crate::sip::splice::{Splice, push_dec};
use crate::sip::via;
use arc_swap::ArcSwap;
use cache::{Pending, SharedCache};
use events::{Events, Inward, NoEvents};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::cell::Cell;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

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
    /// A response whose top Via looks like ours but whose branch we did not issue for the
    /// address its next Via names: forged or altered.
    Forged,
    /// A response whose next Via has no IP address to send to.
    Unroutable,
    /// A request from a SIP scanner (by its User-Agent).
    Scanner,
    /// The ACK for a reply we generated.
    AckAbsorbed,
    /// An ACK we could not forward (malformed, or no route): ACKs are never answered.
    AckDropped,
    /// A retransmitted INVITE of a call whose screening waits for a lookup.
    Pending,
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
            DropReason::Forged => "forged_branch",
            DropReason::Unroutable => "unroutable",
            DropReason::Scanner => "scanner",
            DropReason::AckAbsorbed => "ack_absorbed",
            DropReason::AckDropped => "ack_dropped",
            DropReason::Pending => "pending_absorbed",
        }
    }

    /// Consumed by design, with nothing wrong: a keepalive, the ACK of a reply we generated
    /// (RFC 3261 §17.1.1.3 sends one for every local reject), a retransmission of an INVITE
    /// whose screening waits. Counted in `sipguard_absorbed_total`, apart from the drops, so
    /// that an alert on drops stays silent on normal traffic.
    pub fn is_absorbed(self) -> bool {
        matches!(self, DropReason::Keepalive | DropReason::AckAbsorbed | DropReason::Pending)
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
    /// `connect`: the shell may open a TCP connection for it (forwarded requests only; a
    /// response or reply goes over a connection that exists, or nowhere).
    Send {
        transport: Transport,
        dest: SocketAddr,
        bytes: Vec<u8>,
        connect: bool,
    },
    Drop(DropReason),
    Decided(Box<Decided>),
    /// The INVITE waits for a lookup: perform it, then hand `held` to `Proxy::resume`
    /// (a certificate) or `Proxy::resume_counted` (the cluster store's answer).
    Lookup {
        lookup: Lookup,
        held: Held,
    },
    /// Take back a call's counts in the cluster store: it was reserved there but not
    /// forwarded after all.
    Release(Box<Reservation>),
}

/// An INVITE held while its screening waits for a lookup.
#[derive(Debug, Clone)]
pub struct Held {
    pub from: Inbound,
    pub bytes: Vec<u8>,
    pub load: Load,
}

/// Whether this message is a held INVITE coming back after its lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    No,
    /// Screen again; another lookup may be asked for.
    Wait,
    /// Screen without waiting (the lookup failed to come in, or too many calls wait).
    NoWait,
}

pub const VERDICT_CACHE_CAP: usize = 200_000;

/// The core. `handle` takes `&self`: any number of threads run messages through it at
/// once. Config and screen are swapped whole on reload (arc-swap); the verdict cache is
/// sharded, each shard behind its own lock, held for a look-up or an insert only.
pub struct Proxy {
    loaded: ArcSwap<Loaded>,
    cache: SharedCache,
    /// Emit `Action::Decided` for each screening (off when no decision log is written).
    record_decisions: AtomicBool,
    /// Where counts go (the shell's metrics); nowhere by default.
    events: Arc<dyn Events>,
}

/// The config and the screen, swapped together: one arc-swap load per message.
struct Loaded {
    cfg: Arc<ProxyConfig>,
    screen: Arc<dyn Screen>,
}

/// How loaded the shell is when it hands a message in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Load {
    #[default]
    Normal,
    /// The message waited too long in the receive queue: new calls are refused with 503
    /// (Retry-After) so that responses and calls in progress keep flowing.
    Shedding,
}

/// One message's view of the core: the config and screen as loaded when it arrived.
struct Ctx<'a> {
    cfg: &'a ProxyConfig,
    events: &'a dyn Events,
    screen: &'a dyn Screen,
    cache: &'a SharedCache,
    record_decisions: bool,
    load: Load,
    resume: Resume,
    /// The decision of a call that waited for the cluster store (taken by the screening).
    decided: Cell<Option<Decision>>,
}

/// The end of a dialog a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Caller,
    Callee,
}

/// A fresh screening of this request, kept until the forward is known to have succeeded.
struct Screened {
    call: u64,
    decision: Decision,
}

/// Length of our To tag: `sg` and 16 hex digits.
const OUR_TAG_LEN: usize = 18;

/// Seconds a shed call is asked to wait before trying again.
pub const SHED_RETRY_AFTER: &str = "5";

impl Proxy {
    pub fn new(cfg: ProxyConfig, screen: Arc<dyn Screen>) -> Proxy {
        Proxy {
            loaded: ArcSwap::from_pointee(Loaded { cfg: Arc::new(cfg), screen }),
            cache: SharedCache::new(VERDICT_CACHE_CAP),
            record_decisions: AtomicBool::new(true),
            events: Arc::new(NoEvents),
        }
    }

    /// Count into `events` (the shell's metrics recorder).
    pub fn with_events(mut self, events: Arc<dyn Events>) -> Proxy {
        self.events = events;
        self
    }

    /// Whether screenings produce `Action::Decided` (on by default).
    pub fn record_decisions(&self, on: bool) {
        self.record_decisions.store(on, Ordering::Relaxed);
    }

    /// Apply a reloaded configuration; cached verdicts stay valid.
    pub fn reconfigure(&self, cfg: ProxyConfig) {
        let cfg = Arc::new(cfg);
        self.loaded.rcu(|cur| Loaded { cfg: cfg.clone(), screen: cur.screen.clone() });
    }

    /// Swap the screening step (a reload that adds or removes `[screening]`).
    pub fn set_screen(&self, screen: Arc<dyn Screen>) {
        self.loaded.rcu(|cur| Loaded { cfg: cur.cfg.clone(), screen: screen.clone() });
    }

    pub fn config(&self) -> Arc<ProxyConfig> {
        self.loaded.load().cfg.clone()
    }

    /// Handle one message; actions are appended to `out`.
    pub fn handle(&self, now: SystemTime, from: Inbound, bytes: &[u8], out: &mut Vec<Action>) {
        self.handle_loaded(now, from, bytes, Load::Normal, out)
    }

    /// `handle`, told how loaded the shell is.
    pub fn handle_loaded(&self, now: SystemTime, from: Inbound, bytes: &[u8], load: Load, out: &mut Vec<Action>) {
        self.run(now, from, bytes, load, Resume::No, out)
    }

    /// Handle an INVITE held by `Action::Lookup` once its lookup is done (the result is in
    /// the screen's caches). `wait = false`: decide without waiting again (the lookup did
    /// not come in; STIR then counts the certificate as unavailable).
    pub fn resume(&self, now: SystemTime, held: &Held, wait: bool, out: &mut Vec<Action>) {
        let resume = if wait { Resume::Wait } else { Resume::NoWait };
        self.run(now, held.from, &held.bytes, held.load, resume, out)
    }

    /// Handle an INVITE held by `Action::Lookup` for the cluster store, with the decision
    /// its answer gave (`Screen::counted`).
    pub fn resume_counted(&self, now: SystemTime, held: &Held, decision: Decision, out: &mut Vec<Action>) {
        self.run_with(now, held.from, &held.bytes, held.load, Resume::Wait, Some(decision), out)
    }

    /// The screen in use (the shell reads its STIR state to fetch certificates).
    pub fn screen(&self) -> Arc<dyn Screen> {
        self.loaded.load().screen.clone()
    }

    fn run(&self, now: SystemTime, from: Inbound, bytes: &[u8], load: Load, resume: Resume, out: &mut Vec<Action>) {
        self.run_with(now, from, bytes, load, resume, None, out)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_with(
        &self,
        now: SystemTime,
        from: Inbound,
        bytes: &[u8],
        load: Load,
        resume: Resume,
        decided: Option<Decision>,
        out: &mut Vec<Action>,
    ) {
        let loaded = self.loaded.load();
        let ctx = Ctx {
            cfg: &loaded.cfg,
            events: &*self.events,
            screen: &*loaded.screen,
            cache: &self.cache,
            record_decisions: self.record_decisions.load(Ordering::Relaxed),
            load,
            resume,
            decided: Cell::new(decided),
        };
        ctx.handle(now, from, bytes, out);
        // A decision the message did not use (CANCELled while it waited, or answered from
        // the cache meanwhile) gives its charge back.
        if let Some(d) = ctx.decided.take() {
            ctx.release(&d, out);
        }
    }
}

impl Ctx<'_> {
    fn handle(&self, now: SystemTime, from: Inbound, bytes: &[u8], out: &mut Vec<Action>) {
        // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d: it is its IPv4
        // address for every network match (trusted, accounts, relay).
        let from = Inbound { src: SocketAddr::new(from.src.ip().to_canonical(), from.src.port()), ..from };
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
                self.events.message_in(from.transport, Inward::Response);
                self.response(now, &msg, out)
            }
            StartLine::Request { .. } => {
                self.events.message_in(from.transport, Inward::Request(events::method_label(msg.method())));
                self.request(now, from, &msg, out)
            }
        }
    }

    fn request(&self, now: SystemTime, from: Inbound, msg: &Message<'_>, out: &mut Vec<Action>) {
        let is_ack = msg.method() == b"ACK";
        let top = match check::top_via(msg) {
            Ok(t) => t,
            Err(check::Unanswerable::NoVia) => return out.push(Action::Drop(DropReason::NoVia)),
            Err(check::Unanswerable::BadVia) => return out.push(Action::Drop(DropReason::BadVia)),
        };
        // Read once: the branch, the verdict key, the dialog proof and the ACK check use them.
        let to = msg.value(Kind::To).unwrap_or_default();
        let to_range = crate::sip::addr::tag(to, 0..to.len());
        let to_tag = to_range.clone().and_then(|r| to.get(r)).unwrap_or_default();
        let tags = Tags { from: msg.value(Kind::From).map(tag_of).unwrap_or_default(), to: to_tag, to_range };
        // Only a tag of our form can be ours: no hash for the ACK of a forwarded call.
        if is_ack && to_tag.len() == OUR_TAG_LEN && to_tag.starts_with(b"sg") && to_tag == self.to_tag(msg, tags.from) {
            return out.push(Action::Drop(DropReason::AckAbsorbed));
        }
        if self.is_scanner(msg) {
            return out.push(Action::Drop(DropReason::Scanner));
        }
        let facts = match check::request(msg, top.clone(), tags.to, self.cfg.max_message_bytes) {
            Ok(f) => f,
            Err(_) if is_ack => return out.push(Action::Drop(DropReason::AckDropped)),
            Err(p) => return self.reply_problem(msg, &top, from, &p, out),
        };
        // SBCs and trunks ping their next hop this way: answered here, in both modes.
        if redirect::options_to_us(msg, facts.ruri.as_ref(), self.cfg) {
            let allow: &[(&str, &str)] = if self.redirecting() { &[("Allow", redirect::ALLOW)] } else { &[] };
            return self.reply(msg, &facts.top, from, (200, "OK"), allow, out);
        }
        if self.redirecting() && msg.method() != b"INVITE" {
            return self.redirect_other(now, msg, &facts, from, &tags, out);
        }
        let fields = tx_fields(msg, &facts, &tags);
        let tx = branch::transaction_hash(&self.cfg.key, &fields);
        let lp = branch::loop_hash(&self.cfg.key, &fields);
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
        // A redirect server hands out no dialog proofs: every INVITE is a call to screen.
        let side = if self.redirecting() { None } else { self.dialog_side(msg, from, &tags) };
        // The end of a call record-routed here, from either side, for its duration; a BYE
        // in a dialog that proves nothing ends nothing, and is only reported.
        if msg.method() == b"BYE" && !self.redirecting() && self.screen.tracks_calls() {
            let key = |caller_tag| call_key(&self.cfg.key, msg, caller_tag);
            let event = match side {
                Some(Side::Caller) => Some(CallEvent::Bye { call: key(tags.from) }),
                Some(Side::Callee) => Some(CallEvent::Bye { call: key(tags.to) }),
                None if tags.to.is_empty() => None,
                None => Some(CallEvent::UnprovenBye { calls: [key(tags.from), key(tags.to)] }),
            };
            if let Some(event) = event {
                self.screen.call_event(event, now);
            }
        }
        let (invite, cancel) = (msg.method() == b"INVITE", msg.method() == b"CANCEL");
        let call = if invite || cancel { call_key(&self.cfg.key, msg, tags.from) } else { 0 };
        let mut verdict = None;
        let mut screened = None;
        // Under overload, new calls go first: a 503 costs less than screening, and the
        // calls in progress (responses, in-dialog requests) keep flowing.
        if invite && side.is_none() && self.load == Load::Shedding {
            self.events.shed();
            return self.reply(
                msg,
                &facts.top,
                from,
                (503, "Service Unavailable"),
                &[("Retry-After", SHED_RETRY_AFTER)],
                out,
            );
        }
        // Only an INVITE that proves its dialog was screened here skips screening.
        if invite && side.is_none() {
            let ruri = route::effective_request_uri(msg, facts.ruri.as_ref(), self.cfg);
            // The account header's value, looked up once for the verdict key and the screen.
            let account = self.screen.account_header().and_then(|h| msg.named(&h));
            let facts_key = facts_key(&self.cfg.key, msg, ruri, from, &tags, account.unwrap_or_default());
            let cached = self
                .cache
                .get(call, now)
                .filter(|e| e.facts == facts_key && e.answered.is_none_or(|n| facts.cseq_number <= n));
            let v = match cached {
                Some(e) if e.pending == Pending::Waiting && self.resume == Resume::No => {
                    return out.push(Action::Drop(DropReason::Pending));
                }
                Some(e) if e.pending == Pending::Cancelled => {
                    // CANCELled while waiting: never forwarded, so it ends here (§9.2).
                    let terminated =
                        Verdict::Reject { code: 487, reason: "Request Terminated".into(), headers: Vec::new() };
                    self.cache.insert(call, facts_key, Arc::new(terminated), now);
                    return self.reply(msg, &facts.top, from, (487, "Request Terminated"), &[], out);
                }
                Some(e) if e.pending == Pending::No => {
                    self.events.cache_hit();
                    e.verdict.clone()
                }
                _ => match self.screen_call(now, from, msg, (ruri, account), call) {
                    Step::Done(decision) => {
                        let v = if self.redirecting() {
                            redirect::verdict(&decision, ruri)
                        } else {
                            decision.verdict.clone()
                        };
                        self.cache.insert(call, facts_key, v.clone(), now);
                        screened = Some(Screened { call, decision });
                        v
                    }
                    Step::Need(lookup) => {
                        self.cache.insert_pending(call, facts_key, now);
                        let held = Held { from, bytes: msg.bytes.to_vec(), load: self.load };
                        return out.push(Action::Lookup { lookup, held });
                    }
                },
            };
            if let Verdict::Reject { code, reason, headers } = &*v {
                self.decided(now, msg, screened.map(|s| s.decision), out);
                let hs: SmallVec<[(&str, &str); 4]> =
                    headers.iter().map(|h| (h.name.as_ref(), h.value.as_str())).collect();
                return self.reply(msg, &facts.top, from, (*code, reason), &hs, out);
            }
            if self.redirecting() {
                // A forward verdict cached before the mode changed: redirect it all the same.
                let moved = redirect::moved(ruri, &[(redirect::VERDICT_HEADER.into(), "pass".into())]);
                self.cache.insert(call, facts_key, moved.clone(), now);
                if let Verdict::Reject { code, reason, headers } = &*moved {
                    let hs: SmallVec<[(&str, &str); 4]> =
                        headers.iter().map(|h| (h.name.as_ref(), h.value.as_str())).collect();
                    return self.reply(msg, &facts.top, from, (*code, reason), &hs, out);
                }
            }
            verdict = Some(v);
        }
        if cancel {
            // The INVITE waits for a lookup, or was answered here and never forwarded:
            // nothing downstream to cancel.
            if self.cache.cancel_pending(call)
                || self.cache.get(call, now).is_some_and(|e| e.pending == Pending::No && !e.verdict.is_forward())
            {
                return self.reply(msg, &facts.top, from, (200, "OK"), &[], out);
            }
        }
        let (extra, verstat) = match verdict.as_deref() {
            Some(Verdict::Forward { headers, verstat }) => (headers.as_slice(), *verstat),
            _ => (&[][..], None),
        };
        let forwarded = self.forward(msg, &facts, from, (side, &tags), (tx, lp), (extra, verstat));
        if let Some(s) = &screened
            && forwarded.is_err()
        {
            // Not forwarded after all: the call is not charged, and a retransmission is
            // screened again rather than taking a verdict that was never acted on.
            self.release(&s.decision, out);
            self.cache.remove(s.call);
        }
        self.decided(now, msg, screened.map(|s| s.decision), out);
        match forwarded {
            Ok(send) => {
                if let Action::Send { transport, .. } = &send {
                    self.events.message_out(*transport, "request");
                }
                out.push(send)
            }
            Err(_) if is_ack => out.push(Action::Drop(DropReason::AckDropped)),
            Err(p) => self.reply_problem(msg, &facts.top, from, &p, out),
        }
    }

    fn redirecting(&self) -> bool {
        self.cfg.mode == ServerMode::Redirect
    }

    /// A request other than INVITE in redirect mode: nothing is forwarded. An ACK that is
    /// not for one of our answers is dropped; a CANCEL of a call we answered (or that waits
    /// for a lookup, then answered 487) gets 200, of one we never saw 481; the rest 405.
    fn redirect_other(
        &self,
        now: SystemTime,
        msg: &Message<'_>,
        facts: &Facts,
        from: Inbound,
        tags: &Tags<'_>,
        out: &mut Vec<Action>,
    ) {
        match msg.method() {
            b"ACK" => out.push(Action::Drop(DropReason::AckDropped)),
            b"CANCEL" => {
                let call = call_key(&self.cfg.key, msg, tags.from);
                if self.cache.cancel_pending(call) || self.cache.get(call, now).is_some() {
                    self.reply(msg, &facts.top, from, (200, "OK"), &[], out)
                } else {
                    self.reply(msg, &facts.top, from, (481, "Call/Transaction Does Not Exist"), &[], out)
                }
            }
            _ => self.reply(msg, &facts.top, from, (405, "Method Not Allowed"), &[("Allow", redirect::ALLOW)], out),
        }
    }

    /// Which end of a dialog record-routed here sent this request: the Route brings back
    /// our Record-Route, whose MAC covers the Call-ID, the caller's tag and the callee. The
    /// caller sends them as From tag and To URI, the callee as To tag and From URI; a
    /// request claiming the callee's end must also come from the far side. None when the
    /// request carries no such proof (not in a dialog of ours, forged, or lifted from
    /// another call).
    fn dialog_side(&self, msg: &Message<'_>, from: Inbound, tags: &Tags<'_>) -> Option<Side> {
        let b = msg.bytes;
        if tags.from.is_empty() && tags.to.is_empty() {
            return None;
        }
        let first = msg.first(Kind::Route).and_then(|h| values(b, h.value.clone()).next())?;
        let u = crate::sip::uri::parse(crate::sip::uri::inner(&b[first]))?;
        if !route::is_local(self.cfg, &u) {
            return None;
        }
        let mac = u.sg.and_then(branch::hex)?;
        let call_id = msg.value(Kind::CallId).unwrap_or_default();
        let party = |k: Kind| msg.value(k).map(party_of).unwrap_or_default();
        let key = &self.cfg.key;
        if !tags.to.is_empty() && branch::route_mac(key, call_id, tags.from, party(Kind::To)) == mac {
            Some(Side::Caller)
        } else if !tags.from.is_empty()
            && self.cfg.may_be_callee_side(from.src.ip())
            && branch::route_mac(key, call_id, tags.to, party(Kind::From)) == mac
        {
            Some(Side::Callee)
        } else {
            None
        }
    }

    /// A request whose User-Agent names a SIP scanner (`[security] scanner_user_agents`):
    /// dropped without a word, so the scanner learns nothing.
    fn is_scanner(&self, msg: &Message<'_>) -> bool {
        if self.cfg.scanners.is_empty() {
            return false;
        }
        let Some(ua) = msg.value(Kind::UserAgent) else { return false };
        let ua = ua.to_ascii_lowercase();
        self.cfg.scanners.iter().any(|s| memchr::memmem::find(&ua, s.as_bytes()).is_some())
    }

    /// Run the screen for an INVITE.
    /// Take back the charge of a decision whose call was not forwarded.
    fn release(&self, d: &Decision, out: &mut Vec<Action>) {
        if let Some(r) = self.screen.release(d) {
            out.push(Action::Release(r));
        }
    }

    fn screen_call<'a>(
        &self,
        now: SystemTime,
        from: Inbound,
        msg: &Message<'a>,
        (ruri, account): (&'a [u8], Option<&'a [u8]>),
        key: u64,
    ) -> Step {
        // Borrowed from the message; only a value that is not valid UTF-8 is copied. (The
        // strict check first: it is several times faster than the lossy one on valid text.)
        let text = |b: &'a [u8]| match std::str::from_utf8(b) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(b),
        };
        // P-Asserted-Identity from outside the trust boundary is removed before forwarding,
        // so the policy must not judge it either.
        let pai = msg.value(Kind::PAssertedIdentity).filter(|_| self.cfg.is_trusted(from.src.ip()));
        let call = Call {
            source: Some(from.src.ip()),
            account_header: account.map(text),
            request_uri: text(ruri),
            from: msg.value(Kind::From).map(text).unwrap_or_default(),
            to: msg.value(Kind::To).map(text).unwrap_or_default(),
            p_asserted_identity: pai.map(text),
            identity: identity(msg).map(|b| match b {
                Cow::Borrowed(b) => text(b),
                Cow::Owned(v) => Cow::Owned(String::from_utf8_lossy(&v).into_owned()),
            }),
            call_id: msg.value(Kind::CallId).map(text).unwrap_or_default(),
            key: Some(key),
            asserted_account: None,
        };
        let started = self.events.stopwatch();
        let decision = match self.decided.take() {
            Some(d) => d,
            None => match self.screen.step(&call, now, self.resume != Resume::NoWait) {
                Step::Done(d) => d,
                need => return need,
            },
        };
        self.events.decided(&decision, started);
        Step::Done(decision)
    }

    fn decided(&self, now: SystemTime, msg: &Message<'_>, decision: Option<Decision>, out: &mut Vec<Action>) {
        if let Some(decision) = decision
            && self.record_decisions
        {
            let call_id = String::from_utf8_lossy(msg.value(Kind::CallId).unwrap_or_default()).into_owned();
            out.push(Action::Decided(Box::new(Decided { time: now, call_id, decision })));
        }
    }

    /// A Via of ours further down the stack whose loop part matches this request: the
    /// request came back unchanged (a spiral changes the Request-URI and passes).
    fn looped(&self, msg: &Message<'_>, lp: u32) -> bool {
        // Built once: `memmem::find` builds its searcher on every call.
        static OURS: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(branch::OUR_BRANCH_PREFIX.as_bytes()));
        let b = msg.bytes;
        msg.all(Kind::Via)
            .filter(|h| OURS.find(&b[h.value.clone()]).is_some())
            .flat_map(|h| values(b, h.value.clone()))
            .any(|v| {
                via::parse(b, v).is_ok_and(|v| {
                    self.cfg.is_our_address(&b[v.host.clone()], v.port)
                        && v.branch.as_ref().and_then(|r| branch::parse(&b[r.clone()])).is_some_and(|o| o.lp == lp)
                })
            })
    }

    /// Our To tag for a local reply: derived from what an INVITE, its retransmissions and
    /// the ACK for the reply share (top Via, Call-ID, CSeq number), read raw so that even a
    /// request that failed the checks gets a stable tag, and keyed so nobody can predict it.
    /// The To tag of our replies to a request: a MAC of what its ACK repeats (Call-ID, From
    /// tag, CSeq number), so that the ACK of one of our rejections is known by its To tag
    /// alone. Not of the Via: a UAC that gives that ACK a branch of its own (RFC 3261
    /// §17.1.1.3 says not to; SIPp's `[branch]` does) would otherwise have it relayed to the
    /// Request-URI, towards a next hop that never saw the INVITE.
    fn to_tag(&self, msg: &Message<'_>, from_tag: &[u8]) -> [u8; OUR_TAG_LEN] {
        let cseq = msg.value(Kind::CSeq).unwrap_or_default();
        let digits =
            cseq.get(..cseq.iter().position(|c| !c.is_ascii_digit()).unwrap_or(cseq.len())).unwrap_or_default();
        let parts: [&[u8]; 3] = [from_tag, msg.value(Kind::CallId).unwrap_or_default(), digits];
        let h = self.cfg.key.fast(Purpose::ToTag, &parts);
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
        let host = &self.cfg.advert_for(&from.src).hp.host;
        let warning = format!("399 {host} \"{}\"", p.warning.replace('"', "'"));
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
        let tag = self.to_tag(msg, msg.value(Kind::From).map(tag_of).unwrap_or_default());
        let mut bytes = reply::build(msg, Some(top), from.transport, from.src, code, reason, &tag, extra);
        let mut trimmed = false;
        // Not an amplifier towards a spoofed source: the Warning (our diagnostic text) goes in
        // only as far as the reply stays within the request's size, cut to fit. The rest is
        // bounded and fixed: the request's own headers, the To tag, received/rport, the
        // headers of the configured reject response (Reason, Retry-After), and for a 420 the
        // Unsupported list (no longer than the request's Proxy-Require).
        if bytes.len() > msg.bytes.len() && extra.iter().any(|(n, _)| *n == "Warning") {
            let cut: String;
            let mut kept: SmallVec<[(&str, &str); 4]> =
                extra.iter().filter(|(n, _)| *n != "Warning").copied().collect();
            let bare = reply::build(msg, Some(top), from.transport, from.src, code, reason, &tag, &kept);
            let budget = msg.bytes.len().saturating_sub(bare.len());
            if let Some(&(_, value)) = extra.iter().find(|(n, _)| *n == "Warning")
                && budget >= "Warning: ".len() + 2 + 16
            {
                // `399 host "text` cut at a character boundary, the quote closed.
                let mut end = (budget - "Warning: ".len() - 3).min(value.len());
                while !value.is_char_boundary(end) {
                    end -= 1;
                }
                cut = format!("{}\"", &value[..end]);
                kept.push(("Warning", cut.as_str()));
            }
            bytes = reply::build(msg, Some(top), from.transport, from.src, code, reason, &tag, &kept);
            trimmed = true;
        }
        let dest = via::reply_target(from.transport, &top.via, from.src);
        self.events.reply(code, trimmed);
        self.events.message_out(from.transport, "reply");
        out.push(Action::Send { transport: from.transport, dest, bytes, connect: false });
    }

    fn response(&self, now: SystemTime, msg: &Message<'_>, out: &mut Vec<Action>) {
        let b = msg.bytes;
        let Ok(top) = check::top_via(msg) else {
            return out.push(Action::Drop(DropReason::BadVia));
        };
        let ours = top.via.branch.as_ref().and_then(|r| branch::parse(&b[r.clone()]));
        let Some(ours) = ours.filter(|_| self.cfg.is_our_address(&b[top.via.host.clone()], top.via.port)) else {
            return out.push(Action::Drop(DropReason::NotOurVia));
        };
        let mut s = Splice::new();
        let line = msg.headers[top.header].line.clone();
        let next = match &top.second {
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
                    .and_then(|h| values(b, h.value.clone()).next())
            }
        };
        let Some((transport, dest)) = next.and_then(|r| via::parse(b, r).ok()).and_then(|v| v.response_target(b))
        else {
            return out.push(Action::Drop(DropReason::Unroutable));
        };
        if !ours.verifies(&self.cfg.key, transport, dest) {
            return out.push(Action::Drop(DropReason::Forged));
        }
        // Bytes past Content-Length (a second message smuggled in a datagram) are not sent.
        match check::content_length(msg, self.cfg.max_message_bytes) {
            Ok(body) if body.end < b.len() => s.delete(body.end..b.len()),
            Ok(_) => {}
            Err(_) => return out.push(Action::Drop(DropReason::Malformed)),
        }
        // A final response to an INVITE, named by its call's key. A 2xx puts the call up in the
        // verdict cache: an INVITE that comes later under the same Call-ID and From tag with
        // a higher CSeq and no dialog proof is a new call (screened and charged), not a
        // retry, while a retransmission of the answered one still reuses the verdict.
        if let StartLine::Response { code: code @ 200.., .. } = msg.start
            && let Some(cseq) = invite_cseq(msg)
        {
            let call = call_key(&self.cfg.key, msg, msg.value(Kind::From).map(tag_of).unwrap_or_default());
            let tracks = self.screen.tracks_calls();
            if tracks {
                self.screen.prefetch_call(call);
            }
            if code < 300 {
                self.cache.answered(call, cseq);
            }
            if tracks {
                self.screen.call_event(CallEvent::Final { call, code }, now);
            }
        }
        self.events.message_out(transport, "response");
        out.push(Action::Send { transport, dest, bytes: s.apply(b), connect: false });
    }

    /// Splice the forwarded request and choose its next hop.
    fn forward(
        &self,
        msg: &Message<'_>,
        facts: &Facts,
        from: Inbound,
        (side, tags): (Option<Side>, &Tags<'_>),
        (tx, lp): (u64, u32),
        (extra, verstat): (&[ExtraHeader], Option<Verstat>),
    ) -> Result<Action, Problem> {
        let b = msg.bytes;
        let mut s = Splice::new();
        // From the callee's end of a dialog of ours, requests go back to the caller; without
        // a proof, requests from the upstream or relay_to networks are taken to be.
        let far = match side {
            Some(Side::Callee) => true,
            Some(Side::Caller) => false,
            None => self.cfg.is_far_side(from.src.ip()),
        };
        let hop = route::next_hop(msg, facts.ruri.as_ref(), self.cfg, (far, side.is_some()), &mut s, self.events)?;
        let out_adv = self.cfg.advert_for(&hop.dest);
        let via_line = msg.headers[facts.top.header].line.start;
        let mut rr = None;
        if self.cfg.record_route && creates_dialog(msg, tags) {
            let in_adv = self.cfg.advert_for(&from.src);
            // Only a screened INVITE gets the proof: a SUBSCRIBE or REFER, never screened,
            // must not hand out what lets an INVITE skip screening.
            let mac = (msg.method() == b"INVITE").then(|| {
                let callee = msg.value(Kind::To).map(party_of).unwrap_or_default();
                branch::route_mac(&self.cfg.key, msg.value(Kind::CallId).unwrap_or_default(), tags.from, callee)
            });
            let mut values = Vec::with_capacity(160);
            // RFC 5658: when the two sides differ in transport or address, one value for
            // each side, the one facing the next hop on top.
            record_route(&mut values, out_adv, hop.transport, mac);
            if in_adv.text != out_adv.text || from.transport != hop.transport {
                record_route(&mut values, in_adv, from.transport, mac);
            }
            // Ours go above every Record-Route already present (§16.6 step 4).
            match msg.first(Kind::RecordRoute) {
                Some(h) if h.line.start < via_line => s.insert(h.line.start, &values),
                _ => rr = Some(values),
            }
        }
        let back = via::reply_target(from.transport, &facts.top.via, from.src);
        s.insert_with(via_line, |head| {
            head.extend_from_slice(b"Via: SIP/2.0/");
            head.extend_from_slice(hop.transport.via_token().as_bytes());
            head.extend_from_slice(&out_adv.via_tail);
            branch::write(head, &self.cfg.key, tx, lp, from.transport, back);
            head.extend_from_slice(b"\r\n");
            if facts.max_forwards.is_none() {
                head.extend_from_slice(b"Max-Forwards: 70\r\n");
            }
            for h in extra {
                head.extend_from_slice(h.name.as_bytes());
                head.extend_from_slice(b": ");
                head.extend_from_slice(h.value.as_bytes());
                head.extend_from_slice(b"\r\n");
            }
            if let Some(rr) = &rr {
                head.extend_from_slice(rr);
            }
        });
        reply::received_edits(&mut s, b, &facts.top, from.transport, from.src, 0);
        if let Some((idx, v)) = facts.max_forwards {
            s.replace_with(msg.headers[idx].value.clone(), |n| push_dec(n, v - 1));
        }
        let pai_kept = self.trust_boundary(msg, from, &mut s);
        if let Some(v) = verstat {
            tag_verstat(msg, pai_kept, v, &mut s);
        }
        // Bytes past Content-Length (a second message in a datagram) are not ours to send.
        if facts.body.end < b.len() {
            s.delete(facts.body.end..b.len());
        }
        Ok(Action::Send { transport: hop.transport, dest: hop.dest, bytes: s.apply(b), connect: true })
    }

    /// Headers that are ours or that only a trusted source may assert (RFC 3325 §5): the
    /// account header always goes (unless configured to pass), P-Asserted-Identity from
    /// outside `trusted_sources` and the upstream. Whether P-Asserted-Identity is kept.
    fn trust_boundary(&self, msg: &Message<'_>, from: Inbound, s: &mut Splice) -> bool {
        let account = self.cfg.account_header.as_deref().filter(|_| !self.cfg.forward_account_header);
        let strip_pai = !self.cfg.is_trusted(from.src.ip());
        if account.is_none() && !strip_pai {
            return true;
        }
        for h in &msg.headers {
            let drop_it = (strip_pai && h.kind == Kind::PAssertedIdentity)
                || account.is_some_and(|a| msg.text(&h.name).eq_ignore_ascii_case(a.as_bytes()));
            if drop_it {
                s.delete(h.line.clone());
            }
        }
        !strip_pai
    }
}

/// Tag the caller's identity with the verstat: every P-Asserted-Identity value when PAI is
/// forwarded, else the From; a verstat anywhere in those headers from outside is removed.
fn tag_verstat(msg: &Message<'_>, pai_kept: bool, v: Verstat, s: &mut Splice) {
    let b = msg.bytes;
    let mut text = Vec::with_capacity(32);
    text.extend_from_slice(b";verstat=");
    text.extend_from_slice(v.as_str().as_bytes());
    let has_pai = pai_kept && msg.first(Kind::PAssertedIdentity).is_some();
    for h in &msg.headers {
        let target = match h.kind {
            Kind::PAssertedIdentity if pai_kept => true,
            Kind::From => !has_pai,
            _ => continue,
        };
        for r in values(b, h.value.clone()) {
            let Some((deletes, at)) = crate::sip::verstat::edits(&b[r.clone()]) else { continue };
            for d in deletes {
                s.delete(r.start + d.start..r.start + d.end);
            }
            if target {
                s.insert(r.start + at, &text);
            }
        }
    }
}

/// All Identity header values joined by commas: borrowed when there is one header. No
/// scan at all for the common INVITE without Identity (the scanner indexes first headers).
fn identity<'a>(msg: &Message<'a>) -> Option<Cow<'a, [u8]>> {
    let b = msg.bytes;
    let mut all = msg.all(Kind::Identity);
    let first = all.next()?;
    let mut more = all.peekable();
    if more.peek().is_none() {
        return Some(Cow::Borrowed(&b[first.value.clone()]));
    }
    let mut joined = b[first.value.clone()].to_vec();
    for h in more.take(crate::screen::stir::identity::MAX_VALUES) {
        joined.push(b',');
        joined.extend_from_slice(&b[h.value.clone()]);
    }
    Some(Cow::Owned(joined))
}

/// `Record-Route: <sip:HOST:PORT;transport=tcp;lr;sg=MAC>` (transport only for TCP, the
/// proof only for a screened INVITE).
fn record_route(out: &mut Vec<u8>, adv: &Advert, transport: Transport, mac: Option<u64>) {
    out.extend_from_slice(b"Record-Route: <sip:");
    out.extend_from_slice(adv.text.as_bytes());
    if transport == Transport::Tcp {
        out.extend_from_slice(b";transport=tcp");
    }
    out.extend_from_slice(b";lr");
    if let Some(mac) = mac {
        out.push(b';');
        out.extend_from_slice(crate::sip::uri::OUR_ROUTE_PARAM);
        out.push(b'=');
        crate::sip::splice::push_hex(out, mac, 16);
    }
    out.extend_from_slice(b">\r\n");
}

/// The CSeq number of a response to an INVITE (None for other methods or a bad CSeq).
fn invite_cseq(msg: &Message<'_>) -> Option<u64> {
    let cseq = msg.value(Kind::CSeq).unwrap_or_default();
    let digits = cseq.iter().take_while(|c| c.is_ascii_digit()).count();
    let method = cseq.get(crate::sip::scan::trim(cseq, digits..cseq.len()))?;
    let n = scan::parse_uint(cseq.get(..digits)?, u64::from(u32::MAX))?;
    (method == b"INVITE").then_some(n)
}

/// The From and To tags of a request (empty when absent).
struct Tags<'a> {
    from: &'a [u8],
    to: &'a [u8],
    /// Where the To tag is in the To value.
    to_range: Option<Range<usize>>,
}

/// Requests that establish a dialog get our Record-Route when record_route is on.
fn creates_dialog(msg: &Message<'_>, tags: &Tags<'_>) -> bool {
    matches!(msg.method(), b"INVITE" | b"SUBSCRIBE" | b"REFER" | b"NOTIFY") && tags.to.is_empty()
}

fn tx_fields<'a>(msg: &Message<'a>, facts: &Facts, tags: &Tags<'a>) -> TxFields<'a> {
    let b = msg.bytes;
    let v = &facts.top.via;
    TxFields {
        top_via: &b[facts.top.value()],
        top_branch: v.branch.as_ref().map(|r| &b[r.clone()]),
        sent_by: &b[v.sent_by.clone()],
        magic: v.has_magic_cookie(b),
        request_uri: msg.request_uri(),
        call_id: msg.value(Kind::CallId).unwrap_or_default(),
        from_tag: tags.from,
        cseq_number: facts.cseq_number,
    }
}

/// The call a message belongs to: its Call-ID and the caller's From tag (a request's From
/// tag; in a BYE from the callee's side, its To tag). The retry of an INVITE after a
/// 401/407/422/491 is the same call (a new transaction), and so is its CANCEL. The verdict
/// cache and call behaviour both know the call by this key.
fn call_key(key: &branch::Key, msg: &Message<'_>, caller_tag: &[u8]) -> u64 {
    key.map_key(Purpose::Call, &[msg.value(Kind::CallId).unwrap_or_default(), caller_tag])
}

/// Everything screening reads from an INVITE besides the call: a cached verdict is reused
/// only for the same facts, so an INVITE that keeps a screened call's Call-ID and From tag
/// but names another callee or caller ID is screened anew.
fn facts_key(key: &branch::Key, msg: &Message<'_>, ruri: &[u8], from: Inbound, tags: &Tags<'_>, account: &[u8]) -> u64 {
    let ip = match from.src.ip() {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    };
    let to = msg.value(Kind::To).unwrap_or_default();
    // The To tag is not a fact: a retry keeps it empty, an unproven re-INVITE has one.
    let tag = tags.to_range.clone().unwrap_or(to.len()..to.len());
    let parts: [&[u8]; 7] = [
        ruri,
        msg.value(Kind::From).unwrap_or_default(),
        to.get(..tag.start).unwrap_or_default(),
        to.get(tag.end..).unwrap_or_default(),
        msg.value(Kind::PAssertedIdentity).unwrap_or_default(),
        account,
        &ip,
    ];
    key.map_key(Purpose::Facts, &parts)
}

#[cfg(test)]
mod tests;
