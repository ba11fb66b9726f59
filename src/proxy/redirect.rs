//! Redirect mode (`[server] mode = "redirect"`) and OPTIONS addressed to us.
//!
//! In redirect mode sipguard is a stateless redirect server (RFC 3261 §8.3) for a switch
//! that stays in the call path: an initial INVITE is screened and answered with the reject
//! response of the rule that fired, or `302 Moved Temporarily` whose Contact is the
//! Request-URI the INVITE came with, carrying the verdict as URI headers
//! (`?X-Sipguard-Verdict=pass&X-Sipguard-Account=...`) that the switch copies into the
//! INVITE it sends on. The same headers are in the 302 itself, for a switch that reads the
//! reply (and for `tel:` URIs, which cannot carry headers). The 302 is kept in the verdict
//! cache as the call's verdict, so a retransmission gets the very same bytes; only a call
//! the 302 lets through is charged (screening charges passing calls only).
//!
//! Pure functions of the message and the decision: no I/O, no clock.

use super::ProxyConfig;
use super::route;
use crate::screen::{Decision, ExtraHeader, Verdict};
use crate::sip::scan::{Kind, Message, values};
use crate::sip::uri::{self, SipUri};
use std::borrow::Cow;
use std::sync::Arc;

/// The methods a redirect server answers (the `Allow` of its 405 and of its OPTIONS 200).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, OPTIONS";

/// Verdict header names, in the 302 and as URI headers of its Contact.
pub const VERDICT_HEADER: &str = "X-Sipguard-Verdict";
pub const ACCOUNT_HEADER: &str = "X-Sipguard-Account";
pub const RULE_HEADER: &str = "X-Sipguard-Rule";
pub const VERSTAT_HEADER: &str = "X-Sipguard-Verstat";

/// Longest account id or rule name copied into a header; longer ones are cut (the ids come
/// from the config, this only bounds the reply).
const MAX_VALUE: usize = 128;

/// The verdict headers of a call the screening let through: `pass` (or `would_reject` in
/// report mode, with the rule), the account, and the STIR verstat.
pub fn verdict_headers(decision: &Decision) -> Vec<(&'static str, String)> {
    let mut out = Vec::with_capacity(4);
    match (decision.would_reject, decision.rule) {
        (true, Some(rule)) => {
            out.push((VERDICT_HEADER, "would_reject".to_string()));
            out.push((RULE_HEADER, rule.name().to_string()));
        }
        _ => out.push((VERDICT_HEADER, "pass".to_string())),
    }
    if let Some(a) = &decision.account {
        out.push((ACCOUNT_HEADER, header_text(a)));
    }
    if let Verdict::Forward { verstat: Some(v), .. } = &*decision.verdict {
        out.push((VERSTAT_HEADER, v.as_str().to_string()));
    } else if let Some(r) = &decision.stir {
        out.push((VERSTAT_HEADER, r.outcome.verstat().as_str().to_string()));
    }
    out
}

/// The verdict to answer (and cache) for a screened INVITE in redirect mode: a reject stays
/// as it is; a forward becomes the 302 to `ruri` (the effective Request-URI).
pub fn verdict(decision: &Decision, ruri: &[u8]) -> Arc<Verdict> {
    match &*decision.verdict {
        Verdict::Reject { .. } => decision.verdict.clone(),
        Verdict::Forward { headers, .. } => {
            let mut pairs: Vec<(Cow<'static, str>, String)> =
                verdict_headers(decision).into_iter().map(|(n, v)| (Cow::Borrowed(n), v)).collect();
            // Headers the proxy would have added to the forwarded INVITE travel the same way.
            pairs.extend(headers.iter().map(|h| (h.name.clone(), header_text(&h.value))));
            moved(ruri, &pairs)
        }
    }
}

/// `302 Moved Temporarily` to `ruri` with `pairs` as URI headers of the Contact (sip: and
/// sips: URIs) and as headers of the response.
pub fn moved(ruri: &[u8], pairs: &[(Cow<'static, str>, String)]) -> Arc<Verdict> {
    let mut headers = Vec::with_capacity(pairs.len() + 1);
    headers.push(ExtraHeader::new("Contact", contact(ruri, pairs)));
    headers.extend(pairs.iter().map(|(n, v)| ExtraHeader::new(n.clone(), v.clone())));
    Arc::new(Verdict::Reject { code: 302, reason: "Moved Temporarily".into(), headers })
}

/// `<URI?name=value&...>`: the Request-URI as it came, with any `X-Sipguard-*` URI header
/// of the sender's removed (only we say what the verdict is) and ours appended.
pub fn contact(ruri: &[u8], pairs: &[(Cow<'static, str>, String)]) -> String {
    let mut out = String::with_capacity(ruri.len() + 96);
    out.push('<');
    let sip = matches!(uri::scheme(ruri), Some(s) if s.eq_ignore_ascii_case(b"sip") || s.eq_ignore_ascii_case(b"sips"));
    let (base, theirs) = match ruri.iter().position(|&c| c == b'?') {
        Some(q) if sip => (&ruri[..q], &ruri[q + 1..]),
        _ => (ruri, &b""[..]),
    };
    push_uri_bytes(&mut out, base);
    if sip {
        let mut sep = '?';
        for h in theirs.split(|&c| c == b'&').filter(|h| !h.is_empty()) {
            let name = h.split(|&c| c == b'=').next().unwrap_or_default();
            if is_ours(name) {
                continue;
            }
            out.push(sep);
            sep = '&';
            push_uri_bytes(&mut out, h);
        }
        for (name, value) in pairs {
            out.push(sep);
            sep = '&';
            out.push_str(name);
            out.push('=');
            push_hvalue(&mut out, value.as_bytes());
        }
    }
    out.push('>');
    out
}

/// Is this URI header name (possibly %-escaped) one of ours?
fn is_ours(name: &[u8]) -> bool {
    const PREFIX: &[u8] = b"x-sipguard-";
    let mut decoded = Vec::with_capacity(name.len());
    let mut i = 0;
    while let Some(&c) = name.get(i) {
        let hex = |j: usize| name.get(j).and_then(|&h| (h as char).to_digit(16));
        match (c, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                decoded.push((hi * 16 + lo) as u8);
                i += 3;
            }
            _ => {
                decoded.push(c);
                i += 1;
            }
        }
    }
    decoded.len() >= PREFIX.len() && decoded[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
}

/// Copy URI text into a Contact between `<` and `>`: printable ASCII but `<`, `>`, `"`
/// and `%`-less oddities as they are, anything else %-escaped, so hostile bytes in a
/// Request-URI can neither end the header nor the angle brackets.
fn push_uri_bytes(out: &mut String, b: &[u8]) {
    for &c in b {
        if (0x21..=0x7e).contains(&c) && !matches!(c, b'<' | b'>' | b'"') {
            out.push(c as char);
        } else {
            push_escaped(out, c);
        }
    }
}

/// A URI header value (RFC 3261 `hvalue`): unreserved and hnv-unreserved as they are, the
/// rest %-escaped.
fn push_hvalue(out: &mut String, b: &[u8]) {
    for &c in b {
        let keep = c.is_ascii_alphanumeric() || b"-_.!~*'()[]/?:+$".contains(&c);
        if keep { out.push(c as char) } else { push_escaped(out, c) }
    }
}

fn push_escaped(out: &mut String, c: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(c >> 4)] as char);
    out.push(HEX[usize::from(c & 0xf)] as char);
}

/// Text for a header value: printable characters only, bounded.
fn header_text(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(MAX_VALUE).collect()
}

/// An OPTIONS for sipguard itself (a keepalive ping from an SBC or trunk): the Request-URI
/// names one of our addresses and has no user part, and no Route sends it elsewhere.
pub fn options_to_us(msg: &Message<'_>, ruri: Option<&SipUri<'_>>, cfg: &ProxyConfig) -> bool {
    if msg.method() != b"OPTIONS" {
        return false;
    }
    if !ruri.is_some_and(|u| u.user.is_none() && route::is_local(cfg, u)) {
        return false;
    }
    let b = msg.bytes;
    msg.all(Kind::Route)
        .flat_map(|h| values(b, h.value.clone()))
        .all(|r| uri::parse(uri::inner(&b[r])).is_some_and(|u| route::is_local(cfg, &u)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screen::Rule;

    #[test]
    fn contact_carries_the_verdict_as_uri_headers() {
        let pairs =
            vec![(VERDICT_HEADER.into(), "pass".to_string()), (ACCOUNT_HEADER.into(), "acme corp&x".to_string())];
        assert_eq!(
            contact(b"sip:+12125550100@10.0.0.2:5080;user=phone", &pairs),
            "<sip:+12125550100@10.0.0.2:5080;user=phone?X-Sipguard-Verdict=pass&X-Sipguard-Account=acme%20corp%26x>"
        );
        // The sender's own headers stay, its X-Sipguard-* ones (even %-escaped) go.
        assert_eq!(
            contact(b"sip:bob@h?Subject=hi&X-Sipguard-Verdict=pass&x%2Dsipguard%2Daccount=evil", &pairs[..1]),
            "<sip:bob@h?Subject=hi&X-Sipguard-Verdict=pass>"
        );
        // tel: cannot carry headers: the URI as it is.
        assert_eq!(contact(b"tel:+12125550100", &pairs), "<tel:+12125550100>");
        // Hostile bytes cannot close the brackets or the header.
        assert_eq!(contact(b"sip:a>b\"c\r\n@h", &[]), "<sip:a%3Eb%22c%0D%0A@h>");
    }

    #[test]
    fn verdict_headers_by_decision() {
        let mut d = Decision::pass();
        d.account = Some("acme".into());
        assert_eq!(
            verdict_headers(&d),
            vec![(VERDICT_HEADER, "pass".to_string()), (ACCOUNT_HEADER, "acme".to_string())]
        );
        d.rule = Some(Rule::Dnc);
        d.would_reject = true;
        d.verdict = Verdict::shared_forward_verstat(crate::screen::stir::Verstat::Passed);
        assert_eq!(
            verdict_headers(&d),
            vec![
                (VERDICT_HEADER, "would_reject".to_string()),
                (RULE_HEADER, "dnc".to_string()),
                (ACCOUNT_HEADER, "acme".to_string()),
                (VERSTAT_HEADER, "TN-Validation-Passed".to_string()),
            ]
        );
        let v = verdict(&d, b"sip:+1@h");
        let Verdict::Reject { code, reason, headers } = &*v else { panic!("{v:?}") };
        assert_eq!((*code, reason.as_str()), (302, "Moved Temporarily"));
        assert_eq!(headers[0].name, "Contact");
        assert!(headers[0].value.contains("X-Sipguard-Verstat=TN-Validation-Passed"), "{headers:?}");
        assert_eq!(headers.len(), 5);
    }

    #[test]
    fn rejects_stay_rejects() {
        let mut d = Decision::pass();
        d.verdict = Arc::new(Verdict::Reject { code: 608, reason: "Rejected".into(), headers: Vec::new() });
        assert!(Arc::ptr_eq(&verdict(&d, b"sip:x@h"), &d.verdict));
    }
}
