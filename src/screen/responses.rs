//! Reject responses per rule (`[responses.<rule>]`) and their construction as a `Verdict`.
//! Header values are rendered once at config time; a reject only clones them.
use super::{ExtraHeader, Rule, Verdict};
use std::collections::HashMap;
use std::sync::Arc;

/// How the Reason header (RFC 3326) is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonForm {
    /// `Reason: SIP;cause=<code>;text="..."`
    Sip,
    /// `Reason: Q.850;cause=21;text="..."` (call rejected), the ATIS-1000099 "603+" form.
    Q850,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    /// Reason phrase of the status line.
    pub phrase: Arc<str>,
    /// Value of the Reason header.
    pub reason_header: String,
    /// `Call-Info: <URL>;purpose=jwscard` (RFC 8688, with 608).
    pub call_info: Option<String>,
    /// The Reason text and form, for a reject that adds to the text (`reject_noting`).
    text: Arc<str>,
    form: ReasonForm,
    /// The reject verdict without Retry-After, built once: a reject then allocates nothing.
    verdict: Arc<Verdict>,
}

impl Response {
    pub fn new(code: u16, phrase: &str, text: &str, form: ReasonForm, call_info: Option<&str>) -> Response {
        let mut r = Response {
            code,
            phrase: phrase.into(),
            reason_header: reason_header(code, text, form),
            call_info: call_info.map(|u| format!("<{u}>;purpose=jwscard")),
            text: text.into(),
            form,
            verdict: Verdict::shared_forward(),
        };
        r.verdict = Arc::new(r.build(None));
        r
    }

    /// The reject verdict; `retry_after` in seconds for rules that know when to retry.
    pub fn reject(&self, retry_after: Option<u32>) -> Arc<Verdict> {
        match retry_after {
            None => self.verdict.clone(),
            Some(_) => Arc::new(self.build(retry_after)),
        }
    }

    /// The reject verdict with `note` added to the Reason text (`Calling suspended until
    /// 2026-12-03T10:00:00Z`). The note is ours (no quotes or backslashes), never a caller's.
    pub fn reject_noting(&self, note: &str) -> Arc<Verdict> {
        let text = format!("{} {note}", self.text);
        let mut v = self.build(None);
        if let Verdict::Reject { headers, .. } = &mut v
            && let Some(h) = headers.first_mut()
        {
            h.value = reason_header(self.code, &text, self.form);
        }
        Arc::new(v)
    }

    fn build(&self, retry_after: Option<u32>) -> Verdict {
        let mut headers = Vec::with_capacity(3);
        headers.push(ExtraHeader::new("Reason", self.reason_header.clone()));
        if let Some(secs) = retry_after {
            headers.push(ExtraHeader::new("Retry-After", secs.to_string()));
        }
        if let Some(ci) = &self.call_info {
            headers.push(ExtraHeader::new("Call-Info", ci.clone()));
        }
        Verdict::Reject { code: self.code, reason: self.phrase.to_string(), headers }
    }
}

fn reason_header(code: u16, text: &str, form: ReasonForm) -> String {
    match form {
        ReasonForm::Sip => format!("SIP;cause={code};text=\"{text}\""),
        ReasonForm::Q850 => format!("Q.850;cause=21;text=\"{text}\""),
    }
}

/// The standard reason phrase of a code sipguard may answer with, if it has one.
pub fn standard_phrase(code: u16) -> Option<&'static str> {
    Some(match code {
        400 => "Bad Request",
        402 => "Payment Required",
        403 => "Forbidden",
        428 => "Use Identity Header",
        436 => "Bad Identity Info",
        437 => "Unsupported Credential",
        438 => "Invalid Identity Header",
        404 => "Not Found",
        480 => "Temporarily Unavailable",
        484 => "Address Incomplete",
        486 => "Busy Here",
        488 => "Not Acceptable Here",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        607 => "Unwanted",
        608 => "Rejected",
        _ => return None,
    })
}

/// The default response of a rule: 403 for account, caller-ID and quota rules, 480 (with
/// Retry-After) for calling hours, 608 for DNC.
pub fn default_for(rule: Rule) -> Response {
    let (code, text) = default_code_text(rule);
    let phrase = match rule {
        Rule::IdentityStale => "Stale Date",
        _ => standard_phrase(code).unwrap_or("Rejected"),
    };
    Response::new(code, phrase, text, ReasonForm::Sip, None)
}

/// A rule's default status code and Reason text.
pub fn default_code_text(rule: Rule) -> (u16, &'static str) {
    match rule {
        Rule::UnknownAccount => (403, "Unknown account"),
        Rule::CallerIdInvalid => (403, "Invalid caller ID"),
        Rule::CallerIdUnowned => (403, "Caller ID not assigned to account"),
        Rule::CallerIdSpoofed => (403, "Caller ID spoofing suspected"),
        Rule::Quota => (403, "Call quota exceeded"),
        Rule::Hours => (480, "Outside permitted calling hours"),
        Rule::Dnc => (608, "Number on do-not-call list"),
        // RFC 8224 §6.2.2 responses.
        Rule::IdentityMissing => (428, "Use Identity Header"),
        Rule::IdentityInvalid => (438, "Invalid Identity Header"),
        Rule::IdentityStale => (403, "Stale Date"),
        Rule::IdentityUnavailable => (436, "Bad Identity Info"),
        Rule::IdentityUntrusted => (437, "Unsupported Credential"),
        Rule::Attestation => (403, "Attestation level too low"),
        Rule::Concurrent => (403, "Too many concurrent calls for the account"),
        Rule::Sequential => (403, "Sequential dialling of callee numbers"),
        Rule::Behaviour => (403, "Call behaviour outside the account's limits"),
        Rule::Suspended => (403, "Calling suspended"),
        // 404: no such number (RFC 3261 §21.4.4); 484 would invite the caller to dial more.
        Rule::CalleeInvalid => (404, "Invalid callee number"),
    }
}

/// Responses of the rules plus named ones that DNC lists refer to (`dnc_<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Responses {
    rules: [Response; Rule::ALL.len()],
    named: HashMap<Box<str>, Response>,
}

impl Default for Responses {
    fn default() -> Self {
        Responses { rules: Rule::ALL.map(default_for), named: HashMap::new() }
    }
}

impl Responses {
    pub fn for_rule(&self, rule: Rule) -> &Response {
        // Rule::ALL lists every variant in declaration order.
        &self.rules[rule as usize]
    }

    /// Set the response of a rule name or an extra (DNC) name.
    pub fn set(&mut self, name: &str, response: Response) {
        match Rule::from_name(name) {
            Some(rule) => self.rules[rule as usize] = response,
            None => {
                self.named.insert(name.into(), response);
            }
        }
    }

    /// The response a DNC hit names; the `dnc` rule's when the name is unknown.
    pub fn named_or_dnc(&self, name: &str) -> &Response {
        match Rule::from_name(name) {
            Some(rule) => self.for_rule(rule),
            None => self.named.get(name).unwrap_or_else(|| self.for_rule(Rule::Dnc)),
        }
    }

    /// Names of the extra (non-rule) responses, for cross-checking DNC list references.
    pub fn extra_names(&self) -> impl Iterator<Item = &str> {
        self.named.keys().map(|k| &**k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(v: &'a Verdict, name: &str) -> Option<&'a str> {
        match v {
            Verdict::Reject { headers, .. } => headers.iter().find(|h| h.name == name).map(|h| h.value.as_str()),
            Verdict::Forward { .. } => None,
        }
    }

    #[test]
    fn rule_order_matches_indexes() {
        for (i, r) in Rule::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn defaults() {
        let r = Responses::default();
        let v = r.for_rule(Rule::Quota).reject(None);
        assert!(matches!(&*v, Verdict::Reject { code: 403, reason, .. } if reason == "Forbidden"));
        assert_eq!(header(&v, "Reason"), Some("SIP;cause=403;text=\"Call quota exceeded\""));
        assert_eq!(header(&v, "Retry-After"), None);
        let v = r.for_rule(Rule::Hours).reject(Some(3600));
        assert!(matches!(&*v, Verdict::Reject { code: 480, reason, .. } if reason == "Temporarily Unavailable"));
        assert_eq!(header(&v, "Retry-After"), Some("3600"));
        let v = r.for_rule(Rule::Dnc).reject(None);
        assert!(matches!(&*v, Verdict::Reject { code: 608, reason, .. } if reason == "Rejected"));
        for rule in Rule::ALL {
            let code = r.for_rule(rule).code;
            assert!(code != 503 && code != 429, "{rule:?}");
        }
    }

    #[test]
    fn six_oh_three_plus_and_jwscard() {
        let mut r = Responses::default();
        r.set("caller_id_spoofed", Response::new(603, "Network Blocked", "Spoofed caller ID", ReasonForm::Q850, None));
        let v = r.for_rule(Rule::CallerIdSpoofed).reject(None);
        assert!(matches!(&*v, Verdict::Reject { code: 603, reason, .. } if reason == "Network Blocked"));
        assert_eq!(header(&v, "Reason"), Some("Q.850;cause=21;text=\"Spoofed caller ID\""));
        r.set(
            "dnc_internal",
            Response::new(608, "Rejected", "Blocked", ReasonForm::Sip, Some("https://x.example/jcard")),
        );
        let v = r.named_or_dnc("dnc_internal").reject(None);
        assert_eq!(header(&v, "Call-Info"), Some("<https://x.example/jcard>;purpose=jwscard"));
        assert_eq!(r.named_or_dnc("nope"), r.for_rule(Rule::Dnc));
        assert_eq!(r.extra_names().collect::<Vec<_>>(), vec!["dnc_internal"]);
    }
}
