//! Caller-ID authenticity: which number the call presents, whether it is a real number, whether
//! the account may use it, and whether it looks spoofed.
use super::hash::NumberSet;
use super::number::{self, NumberPlan, digit_count};
use super::prefix::PrefixMap;
use super::{Call, Rule};

/// The numbers an account may present: single numbers and prefix blocks (`+1212555*`).
#[derive(Debug, Clone, Default)]
pub struct OwnedNumbers {
    pub exact: NumberSet,
    pub blocks: PrefixMap<()>,
}

impl OwnedNumbers {
    pub fn contains(&self, n: u64) -> bool {
        self.exact.contains(&n) || self.blocks.longest(n).is_some()
    }
    pub fn len(&self) -> usize {
        self.exact.len() + self.blocks.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which number checks run; each can be switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    /// Reject caller IDs that cannot exist (NANP NPA/NXX rules, length).
    pub valid: bool,
    /// Reject callees that cannot exist (`callee_invalid`); defaults to `valid`.
    pub valid_callee: bool,
    /// Reject numbers the account does not own.
    pub owned: bool,
    /// Reject a caller ID equal to the callee.
    pub same_as_callee: bool,
    /// Reject when From and P-Asserted-Identity carry different numbers.
    pub from_pai_mismatch: bool,
    /// Reject a caller ID sharing the callee's first N E.164 digits (neighbour spoofing); 0 = off.
    pub neighbour_digits: u8,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            valid: true,
            valid_callee: true,
            owned: true,
            same_as_callee: true,
            from_pai_mismatch: true,
            neighbour_digits: 0,
        }
    }
}

/// The URI of a From/To/P-Asserted-Identity value: inside `<...>` for a name-addr, else the
/// addr-spec up to the header parameters. A quoted display name may contain `<`.
fn header_uri(value: &str) -> &str {
    let value = value.trim_start();
    let value = match value.strip_prefix('"') {
        Some(quoted) => after_quoted(quoted),
        None => value,
    };
    match value.find('<') {
        Some(start) => {
            let rest = value.get(start + 1..).unwrap_or("");
            rest.split('>').next().unwrap_or("")
        }
        None => value.split(';').next().unwrap_or(""),
    }
}

/// The text after the closing quote of a quoted string (RFC 3261 quoted-pair aware).
fn after_quoted(s: &str) -> &str {
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return s.get(i + 1..).unwrap_or(""),
            _ => {}
        }
    }
    ""
}

/// The number in a URI's user part (`sip:+1212...@h;user=phone`, `tel:+1-212-...`).
pub fn uri_number(uri: &str, plan: Option<&NumberPlan>) -> Option<u64> {
    number::parse(number::uri_user(uri)?, plan)
}

/// The number of a From/To header value.
pub fn header_number(value: &str, plan: Option<&NumberPlan>) -> Option<u64> {
    uri_number(header_uri(value), plan)
}

/// The number of a P-Asserted-Identity value, which may list a SIP and a tel URI (RFC 3325):
/// the first entry that carries a number.
pub fn pai_number(value: &str, plan: Option<&NumberPlan>) -> Option<u64> {
    let mut rest = value;
    while let Some(start) = rest.find('<') {
        let after = rest.get(start + 1..).unwrap_or("");
        let (uri, tail) = after.split_once('>').unwrap_or((after, ""));
        if let Some(n) = uri_number(uri, plan) {
            return Some(n);
        }
        rest = tail;
    }
    // addr-spec form without brackets.
    value.split(',').find_map(|v| header_number(v, plan))
}

/// The callee: the Request-URI user, or the To header when the Request-URI has no number.
pub fn callee_number(call: &Call, plan: Option<&NumberPlan>) -> Option<u64> {
    uri_number(&call.request_uri, plan).or_else(|| header_number(&call.to, plan))
}

/// The numbers a call presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presented {
    /// The caller ID screening uses: P-Asserted-Identity when present and trusted, else From.
    pub caller: u64,
    pub from: Option<u64>,
    pub pai: Option<u64>,
}

/// Read the caller ID. `Err` when the identity that counts cannot be read as a number.
pub fn presented(call: &Call, plan: Option<&NumberPlan>, trust_pai: bool) -> Result<Presented, Rule> {
    let from = header_number(&call.from, plan);
    let pai_present = call.p_asserted_identity.as_deref().is_some_and(|v| !v.trim().is_empty());
    let pai = call.p_asserted_identity.as_deref().and_then(|v| pai_number(v, plan));
    let caller = if trust_pai && pai_present { pai } else { from };
    match caller {
        Some(caller) => Ok(Presented { caller, from, pai }),
        None => Err(Rule::CallerIdInvalid),
    }
}

/// Validity, ownership and spoofing checks, in that order: the first that fails.
pub fn check(p: &Presented, callee: u64, owned: &OwnedNumbers, checks: &Checks) -> Result<(), Rule> {
    failures(p, callee, owned, checks).into_iter().next().map_or(Ok(()), Err)
}

/// Every rule of the caller-ID checks that fails, in check order (for report mode, which
/// lists all of them). The checks same_as_callee, from_pai_mismatch and neighbour_digits all
/// fire as caller_id_spoofed. Allocates only when one fails.
pub fn failures(p: &Presented, callee: u64, owned: &OwnedNumbers, checks: &Checks) -> Vec<Rule> {
    let mut out = Vec::new();
    if checks.valid && !number::is_valid(p.caller) {
        out.push(Rule::CallerIdInvalid);
    }
    if checks.owned && !owned.contains(p.caller) {
        out.push(Rule::CallerIdUnowned);
    }
    let mismatch = checks.from_pai_mismatch && matches!((p.from, p.pai), (Some(f), Some(a)) if f != a);
    let neighbour = checks.neighbour_digits > 0 && shares_prefix(p.caller, callee, u32::from(checks.neighbour_digits));
    if (checks.same_as_callee && p.caller == callee) || mismatch || neighbour {
        out.push(Rule::CallerIdSpoofed);
    }
    out
}

/// The caller-ID text a call presents (P-Asserted-Identity when present and trusted, else
/// From), cut to `max` bytes: logged when it cannot be read as a number.
pub fn presented_text<'a>(call: &'a Call, trust_pai: bool, max: usize) -> &'a str {
    let pai = call.p_asserted_identity.as_deref().filter(|v| !v.trim().is_empty());
    let text = match pai {
        Some(v) if trust_pai => v,
        _ => &call.from,
    };
    cut(text.trim(), max)
}

/// At most `max` bytes of `s`, ending on a character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Whether a and b (different numbers) have the same first `n` digits.
fn shares_prefix(a: u64, b: u64, n: u32) -> bool {
    let (la, lb) = (digit_count(a), digit_count(b));
    if a == b || la < n || lb < n {
        return false;
    }
    a / 10u64.pow(la - n) == b / 10u64.pow(lb - n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> NumberPlan {
        NumberPlan::for_country("US").unwrap()
    }

    fn call(from: &'static str, pai: Option<&'static str>) -> Call<'static> {
        Call {
            request_uri: "sip:+13105550199@carrier".into(),
            from: from.into(),
            to: "<sip:+13105550199@carrier>".into(),
            p_asserted_identity: pai.map(Into::into),
            ..Call::default()
        }
    }

    #[test]
    fn header_forms() {
        let p = Some(&us());
        assert_eq!(header_number("\"Acme\" <sip:+12125550100@pbx;user=phone>;tag=1", p), Some(12125550100));
        assert_eq!(header_number(r#""a<b \" c>" <sip:+12125550100@pbx>"#, p), Some(12125550100));
        assert_eq!(header_number(r#""unterminated <sip:+12125550100@pbx>"#, p), None);
        assert_eq!(header_number("sip:2125550100@pbx;tag=1", p), Some(12125550100));
        assert_eq!(header_number("<tel:+1-212-555-0100>;tag=9", p), Some(12125550100));
        assert_eq!(header_number("\"x\" <sip:anonymous@anonymous.invalid>", p), None);
        assert_eq!(header_number("garbage", p), None);
        assert_eq!(header_number("<sip:+12125550100@pbx", p), Some(12125550100), "unterminated bracket");
        assert_eq!(pai_number("<sip:alice@pbx>, <tel:+12125550100>", p), Some(12125550100));
        assert_eq!(pai_number("sip:+12125550100@pbx", p), Some(12125550100));
    }

    #[test]
    fn pai_is_used_when_trusted() {
        let c = call("<sip:+12125550100@pbx>", Some("<sip:+12125550111@pbx>"));
        assert_eq!(presented(&c, None, true).unwrap().caller, 12125550111);
        assert_eq!(presented(&c, None, false).unwrap().caller, 12125550100);
        let bad_pai = call("<sip:+12125550100@pbx>", Some("<sip:bob@pbx>"));
        assert_eq!(presented(&bad_pai, None, true), Err(Rule::CallerIdInvalid));
        let no_from = call("<sip:anonymous@anonymous.invalid>", None);
        assert_eq!(presented(&no_from, None, true), Err(Rule::CallerIdInvalid));
    }

    fn owned(nums: &[u64], blocks: &[u64]) -> OwnedNumbers {
        let mut o = OwnedNumbers::default();
        o.exact.extend(nums.iter().copied());
        for b in blocks {
            o.blocks.insert(*b, ());
        }
        o
    }

    fn pres(caller: u64, from: Option<u64>, pai: Option<u64>) -> Presented {
        Presented { caller, from, pai }
    }

    #[test]
    fn each_check_fires_and_can_be_switched_off() {
        let o = owned(&[12125550100, 12015550100], &[1646555]);
        let all = Checks::default();
        let callee = 13105550199;
        assert_eq!(check(&pres(12125550100, Some(12125550100), None), callee, &o, &all), Ok(()));
        assert_eq!(check(&pres(16465550123, None, None), callee, &o, &all), Ok(()), "prefix block");
        // Invalid: N11 NXX.
        let invalid = pres(12124110100, None, None);
        assert_eq!(check(&invalid, callee, &o, &all), Err(Rule::CallerIdInvalid));
        let no_valid = Checks { valid: false, owned: false, ..all };
        assert_eq!(check(&invalid, callee, &o, &no_valid), Ok(()));
        // Unowned.
        let stranger = pres(13125550100, None, None);
        assert_eq!(check(&stranger, callee, &o, &all), Err(Rule::CallerIdUnowned));
        assert_eq!(check(&stranger, callee, &o, &Checks { owned: false, ..all }), Ok(()));
        // Caller equals callee.
        let o2 = owned(&[callee], &[]);
        assert_eq!(check(&pres(callee, None, None), callee, &o2, &all), Err(Rule::CallerIdSpoofed));
        assert_eq!(check(&pres(callee, None, None), callee, &o2, &Checks { same_as_callee: false, ..all }), Ok(()));
        // From / PAI mismatch.
        let mismatch = pres(12125550100, Some(12015550100), Some(12125550100));
        assert_eq!(check(&mismatch, callee, &o, &all), Err(Rule::CallerIdSpoofed));
        assert_eq!(check(&mismatch, callee, &o, &Checks { from_pai_mismatch: false, ..all }), Ok(()));
        // Neighbour spoofing: off by default, then same NPA-NXX (7 digits with the country code).
        let neighbour = pres(12125550100, None, None);
        let near_callee = 12125559876;
        assert_eq!(check(&neighbour, near_callee, &o, &all), Ok(()));
        let n7 = Checks { neighbour_digits: 7, ..all };
        assert_eq!(check(&neighbour, near_callee, &o, &n7), Err(Rule::CallerIdSpoofed));
        assert_eq!(check(&neighbour, 12125560000, &o, &n7), Ok(()));
    }
}
