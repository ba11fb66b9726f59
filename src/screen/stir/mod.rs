//! STIR/SHAKEN verification (RFC 8224, 8225, 8588, 8226): read the Identity header, verify
//! the PASSporT against a certificate chain that validates to the STI-PA's trust anchors,
//! and report the outcome, the attestation and the SPC. Pure: the certificate is read from
//! the shared cache, and a missing one is returned as `Need` for the shell to fetch.
pub mod cert;
pub mod certs;
pub mod identity;
pub mod passport;
pub mod x5u;

use cert::TrustStore;
use certs::{CertCache, CertFailure, Lookup};
pub use passport::Attestation;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StirMode {
    #[default]
    Off,
    /// Verify and tag; reject by the identity rules and `min_attestation`.
    Verify,
    /// As verify, and a call without a valid Identity is rejected.
    Require,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnUnavailable {
    #[default]
    Forward,
    Reject,
}

/// `[stir]`, validated.
#[derive(Debug, Clone)]
pub struct StirConfig {
    pub mode: StirMode,
    pub trust: Arc<TrustStore>,
    pub freshness: Duration,
    pub fetch_timeout: Duration,
    pub cert_cache: Duration,
    pub on_unavailable: OnUnavailable,
    /// Extra TLS roots (PEM) for the x5u HTTPS fetch.
    pub x5u_roots: Vec<Vec<u8>>,
    pub x5u_allow_private: bool,
    pub max_pending: usize,
}

/// The verification outcome of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    /// No Identity header.
    Missing,
    /// Unparseable, bad signature, claims that do not match the call.
    Invalid,
    /// iat outside `freshness_seconds` of now.
    Stale,
    /// The certificate could not be fetched in time.
    Unavailable,
    /// The chain does not validate to a trust anchor (or is revoked, or out of date).
    Untrusted,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Missing => "missing",
            Outcome::Invalid => "invalid",
            Outcome::Stale => "stale",
            Outcome::Unavailable => "unavailable",
            Outcome::Untrusted => "untrusted",
        }
    }

    /// 3GPP TS 24.229 §7.2A.20 verstat value for this outcome.
    pub fn verstat(self) -> Verstat {
        match self {
            Outcome::Passed => Verstat::Passed,
            Outcome::Invalid | Outcome::Stale | Outcome::Untrusted => Verstat::Failed,
            Outcome::Missing | Outcome::Unavailable => Verstat::None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Verstat {
    Passed,
    Failed,
    None,
}

impl Verstat {
    pub fn as_str(self) -> &'static str {
        match self {
            Verstat::Passed => "TN-Validation-Passed",
            Verstat::Failed => "TN-Validation-Failed",
            Verstat::None => "No-TN-Validation",
        }
    }
}

/// What verification found, for the rules, the verstat and the decision log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StirReport {
    pub outcome: Outcome,
    pub attestation: Option<Attestation>,
    /// The check that failed, in words.
    pub check: Option<String>,
    pub spc: Option<String>,
}

impl StirReport {
    fn fail(outcome: Outcome, check: impl Into<String>) -> StirReport {
        StirReport { outcome, attestation: None, check: Some(check.into()), spc: None }
    }
}

/// The certificate of this x5u URL must be fetched before the call can be judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedCert(pub String);

/// Verify a call's Identity header(s). `caller` and `callee` are the E.164 digits the
/// policy read (caller from PAI when trusted, else From; callee from the Request-URI/To).
/// With several Identity values, one that passes is enough (RFC 8224 §6.2.2); otherwise
/// the first value's failure is reported.
pub fn verify(
    cfg: &StirConfig,
    certs: &CertCache,
    identity: Option<&str>,
    caller: Option<u64>,
    callee: Option<u64>,
    now: SystemTime,
    wait: bool,
) -> Result<StirReport, NeedCert> {
    let Some(value) = identity.filter(|v| !v.trim().is_empty()) else {
        return Ok(StirReport { outcome: Outcome::Missing, attestation: None, check: None, spc: None });
    };
    let mut first: Option<StirReport> = None;
    for v in identity::split(value).take(identity::MAX_VALUES) {
        let report = verify_one(cfg, certs, v, caller, callee, now, wait)?;
        if report.outcome == Outcome::Passed {
            return Ok(report);
        }
        first.get_or_insert(report);
    }
    Ok(first.unwrap_or_else(|| StirReport::fail(Outcome::Invalid, "Identity header is empty")))
}

fn verify_one(
    cfg: &StirConfig,
    certs: &CertCache,
    value: &str,
    caller: Option<u64>,
    callee: Option<u64>,
    now: SystemTime,
    wait: bool,
) -> Result<StirReport, NeedCert> {
    let id = match identity::parse(value) {
        Ok(id) => id,
        Err(e) => return Ok(StirReport::fail(Outcome::Invalid, e.to_string())),
    };
    if let Some(alg) = id.alg
        && alg != "ES256"
    {
        return Ok(StirReport::fail(Outcome::Untrusted, format!("Identity alg {alg} is not supported")));
    }
    let pp = match passport::decode_passport(id.jws, id.ppt) {
        Ok(p) => p,
        Err(e) => return Ok(StirReport::fail(Outcome::Invalid, e.to_string())),
    };
    let mut report = StirReport { outcome: Outcome::Invalid, attestation: Some(pp.attest), check: None, spc: None };
    let fail = |mut r: StirReport, o: Outcome, check: String| {
        r.outcome = o;
        r.check = Some(check);
        Ok(r)
    };
    if let Some(info) = id.info
        && info != pp.x5u
    {
        return fail(report, Outcome::Invalid, "Identity info does not match the PASSporT's x5u".into());
    }
    let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if now_s.abs_diff(pp.iat) > cfg.freshness.as_secs() {
        return fail(report, Outcome::Stale, format!("iat {} is {} s from now", pp.iat, now_s.abs_diff(pp.iat)));
    }
    match (passport::canonical_tn(&pp.orig_tn), caller) {
        (Some(o), Some(c)) if o == c => {}
        _ => return fail(report, Outcome::Invalid, format!("orig.tn {} is not the caller ID", pp.orig_tn)),
    }
    if !pp.dest_tn.iter().any(|d| passport::canonical_tn(d).is_some_and(|d| Some(d) == callee)) {
        return fail(report, Outcome::Invalid, "dest.tn does not contain the callee".into());
    }
    if let Err(e) = x5u::check_url(&pp.x5u, cfg.x5u_allow_private) {
        return fail(report, Outcome::Untrusted, format!("x5u refused: {e}"));
    }
    let chain = match certs.get(&pp.x5u, now) {
        Lookup::Ready(chain) => chain,
        Lookup::Failed(CertFailure::Unavailable(e)) => {
            return fail(report, Outcome::Unavailable, format!("certificate unavailable: {e}"));
        }
        Lookup::Failed(CertFailure::Untrusted(e)) => return fail(report, Outcome::Untrusted, e.to_string()),
        Lookup::Missing if wait => return Err(NeedCert(pp.x5u)),
        Lookup::Missing => return fail(report, Outcome::Unavailable, "certificate not fetched in time".into()),
    };
    report.spc = chain.spc.clone();
    if let Err(e) = pp.verify_signature(id.jws, &chain.public_key) {
        return fail(report, Outcome::Invalid, e.to_string());
    }
    report.outcome = Outcome::Passed;
    Ok(report)
}
