//! Next-hop choice for a forwarded request (RFC 3261 §16.4, §16.5, §16.6 steps 6-7): pop
//! our own Route values, undo a strict router's Request-URI rewrite, then send to the first
//! remaining Route, else `[upstream]`, else the Request-URI. An in-dialog request from the
//! far side (upstream or `relay_to`) that came back through our Record-Route follows its
//! Request-URI to the customer instead. No DNS: a stateless proxy must pick the same hop for
//! a retransmission, so hosts must be IP literals. Every destination is checked against the
//! relay policy. Linear in the number of Route values.

use super::ProxyConfig;
use crate::config::server::Transport;
use crate::sip::check::Problem;
use crate::sip::scan::{Kind, Message, StartLine, values};
use crate::sip::splice::Splice;
use crate::sip::uri::{self, SipUri};
use smallvec::SmallVec;
use std::net::SocketAddr;
use std::ops::Range;

/// Where a request goes, and what the Route header told us.
pub struct NextHop {
    pub transport: Transport,
    pub dest: SocketAddr,
}

pub fn is_local(cfg: &ProxyConfig, u: &SipUri<'_>) -> bool {
    if cfg.is_our_address(u.host, u.port) {
        return true;
    }
    // The port first: most URIs name another one, and reading the host costs more.
    let port = u.port_or_default();
    cfg.local.iter().any(|a| a.port() == port) && u.socket_addr().is_some_and(|a| cfg.local.contains(&a))
}

/// The Request-URI the request will be forwarded with: after a strict router (Request-URI
/// naming us, a Route set present) it is the last Route value (§16.4). Screening judges
/// this one, not the one the sender put on the request line.
pub fn effective_request_uri<'a>(msg: &Message<'a>, parsed: Option<&SipUri<'_>>, cfg: &ProxyConfig) -> &'a [u8] {
    let ruri = msg.request_uri();
    if !parsed.is_some_and(|u| is_local(cfg, u)) {
        return ruri;
    }
    let b = msg.bytes;
    let last = msg.all(Kind::Route).last().and_then(|h| values(b, h.value.clone()).last());
    match last {
        Some(r) => uri::inner(&b[r]),
        None => ruri,
    }
}

fn no_route(what: &str) -> Problem {
    Problem {
        code: 502,
        reason: "Bad Gateway",
        warning: format!("no IP next hop in {what}; configure [upstream]"),
        unsupported: None,
    }
}

fn relay_denied(dest: SocketAddr) -> Problem {
    Problem {
        code: 403,
        reason: "Relaying Denied",
        warning: format!("{} is not a destination this proxy relays to", dest.ip()),
        unsupported: None,
    }
}

/// Choose the next hop, adding the Route/Request-URI edits to `s`. `ruri` is the
/// Request-URI as parsed by the checks (None when it is not a SIP URI). `top_is_ours`: the
/// caller has parsed the first Route value and found it ours (a dialog proof), so it is not
/// parsed again.
pub fn next_hop(
    msg: &Message<'_>,
    ruri: Option<&SipUri<'_>>,
    cfg: &ProxyConfig,
    (from_far_side, top_is_ours): (bool, bool),
    s: &mut Splice,
    events: &dyn super::events::Events,
) -> Result<NextHop, Problem> {
    let hop = choose(msg, ruri, cfg, (from_far_side, top_is_ours), s)?;
    if !cfg.relay_permits(hop.dest.ip()) {
        events.relay_denied();
        return Err(relay_denied(hop.dest));
    }
    Ok(hop)
}

fn choose(
    msg: &Message<'_>,
    ruri: Option<&SipUri<'_>>,
    cfg: &ProxyConfig,
    (from_far_side, top_is_ours): (bool, bool),
    s: &mut Splice,
) -> Result<NextHop, Problem> {
    let b = msg.bytes;
    // Every Route value once: (header index, value range). No per-value copies, and no
    // allocation for the usual one or two values.
    let mut routes: SmallVec<[(usize, Range<usize>); 4]> = SmallVec::new();
    let from = msg.first_index(Kind::Route).unwrap_or(msg.headers.len());
    for (header, h) in msg.headers.iter().enumerate().skip(from).filter(|(_, h)| h.kind == Kind::Route) {
        routes.extend(values(b, h.value.clone()).map(|r| (header, r)));
    }
    let mut removed: SmallVec<[bool; 4]> = smallvec::smallvec![false; routes.len()];
    let mut popped = false;
    let value = |i: usize| uri::inner(b.get(routes[i].1.clone()).unwrap_or_default());
    // A strict router sent us our own Record-Route as Request-URI: the real target is the
    // last Route value (§16.4).
    let strict = ruri.is_some_and(|u| is_local(cfg, u)) && !routes.is_empty();
    if strict {
        let last = routes.len() - 1;
        // It becomes the request line's URI: only a well-formed SIP URI may (fuzzing found
        // `Route: <sip:: <sip:...;lr>` written into the request line as is).
        let v = value(last);
        if uri::parse(v).is_none() || v.iter().any(|&c| c <= b' ' || matches!(c, b'<' | b'>' | b'"' | 0x7f)) {
            return Err(Problem {
                code: 400,
                reason: "Bad Request",
                warning: "the last Route value is not a SIP URI".into(),
                unsupported: None,
            });
        }
        if let StartLine::Request { uri: r, .. } = &msg.start {
            s.replace(r.clone(), v);
        }
        removed[last] = true;
    }
    // Our own values at the top: one, or two after a transport or family change (RFC 5658).
    for (i, gone) in removed.iter_mut().enumerate() {
        let ours = (i == 0 && top_is_ours) || uri::parse(value(i)).is_some_and(|u| is_local(cfg, &u));
        if *gone || !ours {
            break;
        }
        *gone = true;
        popped = true;
    }
    delete_values(msg, &routes, &removed, s);
    let hop = |(transport, dest): (Transport, SocketAddr)| NextHop { transport, dest };
    if let Some(i) = (0..routes.len()).find(|&i| !removed[i]) {
        // A Route naming a domain goes to [upstream] (an outbound proxy that resolves it).
        if let Some(t) = uri::parse(value(i)).as_ref().and_then(target) {
            return Ok(hop(t));
        }
        return upstream(cfg).map(&hop).ok_or_else(|| no_route("the Route header"));
    }
    // Back towards the customer: the Request-URI (their Contact), not the upstream.
    let to_customer = popped && from_far_side;
    if !to_customer && let Some(up) = upstream(cfg) {
        return Ok(hop(up));
    }
    let ruri_text = if strict { value(routes.len() - 1) } else { msg.request_uri() };
    // A Request-URI the checks parsed is a SIP URI already.
    let sip = (!strict && ruri.is_some())
        || uri::scheme(ruri_text).is_some_and(|s| s.eq_ignore_ascii_case(b"sip") || s.eq_ignore_ascii_case(b"sips"));
    if !sip {
        return Err(Problem {
            code: 416,
            reason: "Unsupported URI Scheme",
            warning: "cannot route a non-SIP Request-URI; configure [upstream]".into(),
            unsupported: None,
        });
    }
    let parsed = if strict { uri::parse(ruri_text) } else { ruri.cloned() };
    let u = parsed.ok_or_else(|| no_route("the Request-URI"))?;
    target(&u).map(hop).ok_or_else(|| no_route("the Request-URI"))
}

fn upstream(cfg: &ProxyConfig) -> Option<(Transport, SocketAddr)> {
    cfg.upstream.as_ref().map(|u| (u.transport, u.addr))
}

fn target(u: &SipUri<'_>) -> Option<(Transport, SocketAddr)> {
    Some((u.transport()?, u.socket_addr()?))
}

/// Remove the marked Route values: a whole header line when all its values go, else each
/// run of removed values with its separating comma, leaving the other bytes as they were.
fn delete_values(msg: &Message<'_>, routes: &[(usize, Range<usize>)], removed: &[bool], s: &mut Splice) {
    let mut i = 0;
    while i < routes.len() {
        let header = routes[i].0;
        let n = routes[i..].iter().take_while(|(h, _)| *h == header).count();
        let vals = &routes[i..i + n];
        let gone = &removed[i..i + n];
        if gone.iter().all(|&g| g) {
            s.delete(msg.headers[header].line.clone());
        } else {
            let mut k = 0;
            while k < n {
                if !gone[k] {
                    k += 1;
                    continue;
                }
                let run_end = k + gone[k..].iter().take_while(|&&g| g).count();
                if run_end < n {
                    s.delete(vals[k].1.start..vals[run_end].1.start);
                } else {
                    // The run reaches the end, so k > 0 (not every value is gone).
                    s.delete(vals[k - 1].1.end..vals[n - 1].1.end);
                }
                k = run_end;
            }
        }
        i += n;
    }
}
