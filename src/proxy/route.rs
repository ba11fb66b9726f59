//! Next-hop choice for a forwarded request (RFC 3261 §16.4, §16.5, §16.6 steps 6-7):
//! pop our own Route value, undo a strict router's Request-URI rewrite, then send to the
//! first remaining Route, else `[upstream]`, else the Request-URI. No DNS: a stateless proxy
//! must pick the same hop for a retransmission, so hosts must be IP literals.

use super::ProxyConfig;
use crate::config::server::Transport;
use crate::sip::check::Problem;
use crate::sip::scan::{Kind, Message, split_values};
use crate::sip::splice::Splice;
use crate::sip::uri::{self, SipUri};
use std::net::SocketAddr;
use std::ops::Range;

/// One Route value: its header index, all values of that header, and which one it is.
struct RouteValue {
    header: usize,
    values: crate::sip::scan::Values,
    index: usize,
}

impl RouteValue {
    fn range(&self) -> Range<usize> {
        self.values.get(self.index).cloned().unwrap_or(0..0)
    }
}

fn is_local(cfg: &ProxyConfig, u: &SipUri<'_>) -> bool {
    cfg.advertise.matches(u.host, u.port) || u.socket_addr().is_some_and(|a| cfg.local.contains(&a))
}

fn no_route(what: &str) -> Problem {
    Problem {
        code: 502,
        reason: "Bad Gateway",
        warning: format!("no IP next hop in {what}; configure [upstream]"),
        unsupported: None,
    }
}

/// Choose the next hop, adding the Route/Request-URI edits to `s`.
/// `ruri` is the Request-URI as parsed by the checks (None when it is not a SIP URI).
pub fn next_hop(
    msg: &Message<'_>,
    ruri: Option<&SipUri<'_>>,
    cfg: &ProxyConfig,
    s: &mut Splice,
) -> Result<(Transport, SocketAddr), Problem> {
    let b = msg.bytes;
    let mut routes: Vec<RouteValue> = Vec::new();
    for (header, h) in msg.headers.iter().enumerate().filter(|(_, h)| h.kind == Kind::Route) {
        let values = split_values(b, h.value.clone());
        for index in 0..values.len() {
            routes.push(RouteValue { header, values: values.clone(), index });
        }
    }
    let mut removed = vec![false; routes.len()];
    // A strict router sent us our own Record-Route as Request-URI: the real target is the
    // last Route value (§16.4).
    let ruri_local = ruri.is_some_and(|u| is_local(cfg, u));
    if ruri_local && !routes.is_empty() {
        let last = routes.len() - 1;
        let target = uri::inner(&b[routes[last].range()]);
        if let crate::sip::scan::StartLine::Request { uri: r, .. } = &msg.start {
            s.replace(r.clone(), target);
        }
        removed[last] = true;
    }
    if let Some(first) = routes.first()
        && uri::parse(uri::inner(&b[first.range()])).is_some_and(|u| is_local(cfg, &u))
    {
        removed[0] = true;
    }
    delete_values(msg, &routes, &removed, s);
    if let Some(next) = routes.iter().zip(&removed).find(|(_, r)| !**r).map(|(v, _)| v) {
        // A Route naming a domain goes to [upstream] (an outbound proxy that resolves it).
        let text = uri::inner(&b[next.range()]);
        if let Some(t) = uri::parse(text).as_ref().and_then(target) {
            return Ok(t);
        }
        return upstream(cfg).ok_or_else(|| no_route("the Route header"));
    }
    if let Some(up) = upstream(cfg) {
        return Ok(up);
    }
    let strict_target = ruri_local && !routes.is_empty();
    let ruri_text = if strict_target {
        routes.last().map(|v| uri::inner(&b[v.range()])).unwrap_or_default()
    } else {
        msg.request_uri()
    };
    let sip = uri::scheme(ruri_text).is_some_and(|s| s.eq_ignore_ascii_case(b"sip") || s.eq_ignore_ascii_case(b"sips"));
    if !sip {
        return Err(Problem {
            code: 416,
            reason: "Unsupported URI Scheme",
            warning: "cannot route a non-SIP Request-URI; configure [upstream]".into(),
            unsupported: None,
        });
    }
    let parsed = if strict_target { uri::parse(ruri_text) } else { ruri.cloned() };
    let u = parsed.ok_or_else(|| no_route("the Request-URI"))?;
    target(&u).ok_or_else(|| no_route("the Request-URI"))
}

fn upstream(cfg: &ProxyConfig) -> Option<(Transport, SocketAddr)> {
    cfg.upstream.as_ref().map(|u| (u.transport, u.addr))
}

fn target(u: &SipUri<'_>) -> Option<(Transport, SocketAddr)> {
    Some((u.transport()?, u.socket_addr()?))
}

/// Remove the marked Route values: a whole header line when all its values go, else only
/// the value and its separating comma, leaving the other bytes as they were.
fn delete_values(msg: &Message<'_>, routes: &[RouteValue], removed: &[bool], s: &mut Splice) {
    let mut i = 0;
    while i < routes.len() {
        let header = routes[i].header;
        let values = &routes[i].values;
        let n = values.len();
        let gone: Vec<usize> = (0..n).filter(|&k| removed.get(i + k).copied().unwrap_or(false)).collect();
        if gone.len() == n {
            s.delete(msg.headers[header].line.clone());
        } else {
            for k in gone {
                if k + 1 < n {
                    s.delete(values[k].start..values[k + 1].start);
                } else if k > 0 {
                    s.delete(values[k - 1].end..values[k].end);
                }
            }
        }
        i += n;
    }
}
