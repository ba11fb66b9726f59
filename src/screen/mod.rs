//! Screening: the policy applied to every initial INVITE. Independent of the proxy: its input
//! is call facts (`Call`), its output a `Decision`, so the same engine can serve a redirect
//! mode or an HTTP decision API.

pub mod account;
pub mod behaviour;
pub mod caller_id;
pub mod complaints;
pub mod dnc;
pub mod hash;
pub mod hours;
pub mod number;
pub mod policy;
pub mod prefix;
pub mod quota;
pub mod responses;
pub mod stir;
pub mod suspension;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// The rules whose reject responses are configurable under `[responses.<rule>]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    UnknownAccount,
    CallerIdInvalid,
    CallerIdUnowned,
    CallerIdSpoofed,
    Quota,
    Hours,
    Dnc,
    IdentityMissing,
    IdentityInvalid,
    IdentityStale,
    IdentityUnavailable,
    IdentityUntrusted,
    Attestation,
    Concurrent,
    Sequential,
    Behaviour,
    Suspended,
    /// The callee is not a number that can exist (a 12-digit NANP number).
    CalleeInvalid,
}

impl Rule {
    pub const ALL: [Rule; 18] = [
        Rule::UnknownAccount,
        Rule::CallerIdInvalid,
        Rule::CallerIdUnowned,
        Rule::CallerIdSpoofed,
        Rule::Quota,
        Rule::Hours,
        Rule::Dnc,
        Rule::IdentityMissing,
        Rule::IdentityInvalid,
        Rule::IdentityStale,
        Rule::IdentityUnavailable,
        Rule::IdentityUntrusted,
        Rule::Attestation,
        Rule::Concurrent,
        Rule::Sequential,
        Rule::Behaviour,
        Rule::Suspended,
        Rule::CalleeInvalid,
    ];

    /// The name used in config keys, metrics labels and the decision log.
    pub fn name(self) -> &'static str {
        match self {
            Rule::UnknownAccount => "unknown_account",
            Rule::CallerIdInvalid => "caller_id_invalid",
            Rule::CallerIdUnowned => "caller_id_unowned",
            Rule::CallerIdSpoofed => "caller_id_spoofed",
            Rule::Quota => "quota",
            Rule::Hours => "hours",
            Rule::Dnc => "dnc",
            Rule::IdentityMissing => "identity_missing",
            Rule::IdentityInvalid => "identity_invalid",
            Rule::IdentityStale => "identity_stale",
            Rule::IdentityUnavailable => "identity_unavailable",
            Rule::IdentityUntrusted => "identity_untrusted",
            Rule::Attestation => "attestation",
            Rule::Concurrent => "concurrent",
            Rule::Sequential => "sequential",
            Rule::Behaviour => "behaviour",
            Rule::Suspended => "suspended",
            Rule::CalleeInvalid => "callee_invalid",
        }
    }

    pub fn from_name(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// The facts of one initial INVITE that screening needs, taken from the message by the proxy
/// (or from an API request). Header values are raw text; the rules parse what they use.
/// Borrowed from the message where it is valid UTF-8 (nearly always), so screening a call
/// copies no header.
#[derive(Debug, Clone, Default)]
pub struct Call<'a> {
    pub source: Option<IpAddr>,
    /// Value of the configured account header (`[screening] account_header`), if present.
    pub account_header: Option<Cow<'a, str>>,
    pub request_uri: Cow<'a, str>,
    pub from: Cow<'a, str>,
    pub to: Cow<'a, str>,
    pub p_asserted_identity: Option<Cow<'a, str>>,
    pub identity: Option<Cow<'a, str>>,
    pub call_id: Cow<'a, str>,
    /// The proxy's key for the call (a keyed hash of Call-ID and From tag, its verdict
    /// cache's): call behaviour tracks the call under it, and the proxy names the call's
    /// responses and BYE by it. None elsewhere: screening then derives one.
    pub key: Option<u64>,
    /// The account named by an authenticated client (the HTTP decision API, an embedding
    /// program): decides alone, like the account header from a trusted source. Never set
    /// from a SIP message.
    pub asserted_account: Option<Cow<'a, str>>,
}

impl Call<'_> {
    /// A copy that owns its text (to keep a call beyond the message it came from).
    pub fn into_owned(self) -> Call<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        Call {
            source: self.source,
            account_header: self.account_header.map(own),
            request_uri: own(self.request_uri),
            from: own(self.from),
            to: own(self.to),
            p_asserted_identity: self.p_asserted_identity.map(own),
            identity: self.identity.map(own),
            call_id: own(self.call_id),
            key: self.key,
            asserted_account: self.asserted_account.map(own),
        }
    }
}

/// A header the proxy adds to a forwarded request or a local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraHeader {
    pub name: Cow<'static, str>,
    pub value: String,
}

impl ExtraHeader {
    pub fn new(name: impl Into<Cow<'static, str>>, value: impl Into<String>) -> Self {
        ExtraHeader { name: name.into(), value: value.into() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `verstat`: the STIR outcome to tag the caller's identity with (`[stir]` on).
    Forward {
        headers: Vec<ExtraHeader>,
        verstat: Option<stir::Verstat>,
    },
    Reject {
        code: u16,
        reason: String,
        headers: Vec<ExtraHeader>,
    },
}

impl Verdict {
    pub fn forward() -> Verdict {
        Verdict::Forward { headers: Vec::new(), verstat: None }
    }
    /// The plain forward verdict, shared: most calls get it, and cloning it allocates nothing.
    pub fn shared_forward() -> Arc<Verdict> {
        static FORWARD: std::sync::LazyLock<Arc<Verdict>> = std::sync::LazyLock::new(|| Arc::new(Verdict::forward()));
        FORWARD.clone()
    }
    /// The forward verdict tagged with a verstat, shared likewise.
    pub fn shared_forward_verstat(v: stir::Verstat) -> Arc<Verdict> {
        use std::sync::LazyLock;
        fn make(v: stir::Verstat) -> Arc<Verdict> {
            Arc::new(Verdict::Forward { headers: Vec::new(), verstat: Some(v) })
        }
        static PASSED: LazyLock<Arc<Verdict>> = LazyLock::new(|| make(stir::Verstat::Passed));
        static FAILED: LazyLock<Arc<Verdict>> = LazyLock::new(|| make(stir::Verstat::Failed));
        static NONE: LazyLock<Arc<Verdict>> = LazyLock::new(|| make(stir::Verstat::None));
        match v {
            stir::Verstat::Passed => PASSED.clone(),
            stir::Verstat::Failed => FAILED.clone(),
            stir::Verstat::None => NONE.clone(),
        }
    }
    pub fn is_forward(&self) -> bool {
        matches!(self, Verdict::Forward { .. })
    }
}

/// A counter that took part in a decision, for the decision log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterReading {
    pub name: &'static str,
    pub value: u64,
    pub limit: u64,
}

/// What screening decided and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Shared: the proxy caches it per transaction and the decision log reads it.
    pub verdict: Arc<Verdict>,
    /// The rule that rejected the call (or would have, in report mode).
    pub rule: Option<Rule>,
    /// Report mode: `rule` fired but the call was forwarded.
    pub would_reject: bool,
    pub account: Option<Arc<str>>,
    /// E.164 digits (no `+`) of the caller ID and the callee, when they could be read.
    pub caller: Option<u64>,
    pub callee: Option<u64>,
    /// The DNC list that matched.
    pub list: Option<Arc<str>>,
    pub counters: Vec<CounterReading>,
    /// What this call was counted as, so that it can be taken back (`Screen::release`)
    /// when the call is not forwarded after all.
    pub charge: Option<Charge>,
    /// STIR/SHAKEN verification, when `[stir]` is on.
    pub stir: Option<Box<stir::StirReport>>,
    /// The call's key in the behaviour tracker, when it was counted there (taken back with
    /// the charge when the call is not forwarded).
    pub tracked: Option<behaviour::CallKey>,
    /// Why the rule fired, for the decision log, when the rule name and counters do not say
    /// it all (the suspension in force: its source, cause and end).
    pub detail: Option<Arc<str>>,
    /// Report mode: every rule that would have refused the call, with the code it would have
    /// answered, in screening order (the first is `rule`). Rules that count the call (quota,
    /// behaviour) or wait for a certificate (STIR) are judged only if every earlier one passed.
    pub fired: Vec<(Rule, u16)>,
    /// What the call presented that could not be used, for the decision log (cut short):
    /// the account header naming no account, caller-ID and callee text that is no number.
    pub raw: Option<Box<RawFacts>>,
    /// Where the INVITE came from (the complaint index keeps it for tracebacks).
    pub source: Option<IpAddr>,
}

/// The offending values of a call, as presented.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawFacts {
    pub account: Option<Box<str>>,
    pub caller: Option<Box<str>>,
    pub callee: Option<Box<str>>,
}

/// The counters one forwarded call took: an account's windows at screening time and the
/// numbers it was counted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub account: Arc<str>,
    pub windows: quota::Windows,
    pub caller: u64,
    pub callee: u64,
    /// Counted in the cluster store (taking it back is the shell's round trip), not here.
    pub shared: Option<Box<quota::shared::Reservation>>,
}

impl Decision {
    pub fn pass() -> Decision {
        Decision {
            verdict: Verdict::shared_forward(),
            rule: None,
            would_reject: false,
            account: None,
            caller: None,
            callee: None,
            list: None,
            counters: Vec::new(),
            charge: None,
            stir: None,
            tracked: None,
            detail: None,
            fired: Vec::new(),
            raw: None,
            source: None,
        }
    }
}

/// What a screening step needs from the outside world before it can decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The certificate chain at this x5u URL (STIR).
    Certificate { url: String },
    /// Reserve the call's counters in the cluster store; every other rule has passed.
    Counters(Box<Counting>),
}

/// A call whose screening waits for the cluster store: the decision so far, and what to
/// reserve. The shell hands it back with the store's answer to `Screen::counted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counting {
    pub reservation: quota::shared::Reservation,
    pub decision: Decision,
}

/// The result of a screening step: decided, or waiting for a lookup. The caller performs
/// the lookup: a certificate lands in the screen's shared caches and the call is screened
/// again; a counter reservation's answer goes to `Screen::counted`.
// Done is nearly every call's answer: boxing it would allocate once per call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step {
    Done(Decision),
    Need(Lookup),
}

/// The screening step the proxy calls for each initial INVITE (once per transaction: the
/// proxy caches the verdict for retransmissions). Implementations keep their own state
/// (counters, lists) behind interior mutability and swap policy atomically on reload.
pub trait Screen: Send + Sync {
    /// Name of the header that carries the account id, when the policy uses one.
    fn account_header(&self) -> Option<Arc<str>>;
    /// Screen one call. A call that passes every rule is counted against its quotas at
    /// once (so that two calls screened together cannot both take the last place), and the
    /// decision says so in `charge`.
    /// Never waits: a lookup that is not cached counts as failed (STIR: the certificate is
    /// unavailable).
    fn screen(&self, call: &Call<'_>, now: SystemTime) -> Decision;
    /// Screen one call, or say what must be looked up first (nothing is charged then).
    /// `certificates`: whether it may wait for a certificate (false when the call waited
    /// already and the certificate did not come); it may always wait for the cluster store.
    fn step(&self, call: &Call<'_>, now: SystemTime, _certificates: bool) -> Step {
        Step::Done(self.screen(call, now))
    }
    /// The STIR side of the screen, for the shell that fetches certificates.
    fn stir(&self) -> Option<&StirState> {
        None
    }
    /// The decision for a call that waited for the cluster store, given its answer.
    fn counted(
        &self,
        counting: Counting,
        _answer: Result<quota::shared::Tally, quota::shared::StoreFailure>,
        _now: SystemTime,
    ) -> Decision {
        counting.decision
    }
    /// The counts this node holds per account (`take`: and empty them), for the state
    /// file and the write-back to the cluster store.
    fn local_counts(&self, _now: SystemTime, _take: bool) -> Vec<(Arc<str>, quota::CountersSnapshot)> {
        Vec::new()
    }
    /// Add counts back (a restart, or a write-back that failed). Returns the calls added.
    fn merge_counts(&self, _counts: &[(Arc<str>, quota::CountersSnapshot)], _now: SystemTime) -> u64 {
        0
    }
    /// The quota windows at `now`, when there are quotas.
    fn windows(&self, _now: SystemTime) -> Option<quota::Windows> {
        None
    }
    /// Whether the proxy should hand in `call_event`s (call behaviour is tracked).
    fn tracks_calls(&self) -> bool {
        false
    }
    /// A final response or a BYE the proxy relayed, for the call behaviour figures.
    fn call_event(&self, _event: behaviour::CallEvent, _now: SystemTime) {}
    /// Start fetching what a `call_event` for `call` will read, so that its cache misses
    /// overlap with the proxy's work before the event (a hint).
    fn prefetch_call(&self, _call: behaviour::CallKey) {}
    /// Take back the charge of a decision whose call was not forwarded after all (no route).
    /// A charge in the cluster store comes back for the shell to release there.
    fn release(&self, decision: &Decision) -> Option<Box<quota::shared::Reservation>> {
        decision.charge.as_ref().and_then(|c| c.shared.clone())
    }
}

/// The STIR configuration and certificate cache a screen shares with the shell.
#[derive(Debug)]
pub struct StirState {
    pub config: arc_swap::ArcSwapOption<stir::StirConfig>,
    pub certs: stir::certs::CertCache,
}

/// Forwards everything: sipguard without a `[screening]` section.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough;

impl Screen for PassThrough {
    fn account_header(&self) -> Option<Arc<str>> {
        None
    }
    fn screen(&self, _call: &Call<'_>, _now: SystemTime) -> Decision {
        Decision::pass()
    }
}
