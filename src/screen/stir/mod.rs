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

impl StirConfig {
    /// `[stir] mode = "verify"` with every other key at its documented default, over `trust`.
    pub fn verify_with(trust: TrustStore) -> StirConfig {
        StirConfig {
            mode: StirMode::Verify,
            trust: Arc::new(trust),
            freshness: Duration::from_secs(60),
            fetch_timeout: Duration::from_millis(2000),
            cert_cache: Duration::from_secs(86_400),
            on_unavailable: OnUnavailable::Forward,
            x5u_roots: Vec::new(),
            x5u_allow_private: false,
            max_pending: 10_000,
        }
    }
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

#[cfg(test)]
pub mod testpki;

#[cfg(test)]
mod tests {
    use super::testpki::{Opts, Pki, pki};
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const X5U: &str = "https://cert.example.com/sp.pem";
    const IAT: u64 = 1_780_000_000;
    const CALLER: u64 = 12155550123;
    const CALLEE: u64 = 13105550199;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn setup(p: &Pki, crls: Vec<Vec<u8>>) -> (StirConfig, CertCache) {
        let cfg = StirConfig::verify_with(TrustStore::new(vec![p.root_der.clone()], crls).unwrap());
        let certs = CertCache::default();
        let chain = vec![p.leaf_der.clone(), p.inter_der.clone()];
        certs.complete(X5U, Ok(chain), &cfg.trust, at(IAT), cfg.cert_cache);
        (cfg, certs)
    }

    fn check(cfg: &StirConfig, certs: &CertCache, identity: &str, now: u64) -> StirReport {
        verify(cfg, certs, Some(identity), Some(CALLER), Some(CALLEE), at(now), false).unwrap()
    }

    fn good(p: &Pki) -> String {
        p.identity(X5U, "A", "+12155550123", "13105550199", IAT)
    }

    #[test]
    fn a_signed_call_passes_with_its_attestation_and_spc() {
        let p = pki(Opts::default());
        let (cfg, certs) = setup(&p, vec![]);
        let r = check(&cfg, &certs, &good(&p), IAT + 5);
        assert_eq!(r.outcome, Outcome::Passed, "{r:?}");
        assert_eq!((r.attestation, r.spc.as_deref()), (Some(Attestation::A), Some("709J")));
        assert_eq!(r.outcome.verstat().as_str(), "TN-Validation-Passed");
        // ppt unquoted or quoted, and a PASSporT whose JSON is laid out differently: the
        // signature covers the bytes received, whatever their layout.
        let header = r#"{ "x5u" : "https://cert.example.com/sp.pem", "ppt":"shaken", "typ":"passport","alg":"ES256" }"#;
        let claims =
            r#"{"orig":{"tn":"12155550123"},"origid":"x","iat":1780000000,"dest":{"tn":["13105550199"]},"attest":"B"}"#;
        let v = format!("{};info=<{X5U}>;ppt=\"shaken\"", p.sign(header, claims));
        let r = check(&cfg, &certs, &v, IAT);
        assert_eq!((r.outcome, r.attestation), (Outcome::Passed, Some(Attestation::B)), "{r:?}");
    }

    #[test]
    fn tampering_and_mismatches_fail() {
        let p = pki(Opts::default());
        let (cfg, certs) = setup(&p, vec![]);
        let v = good(&p);
        // Tampered payload: the claims re-encoded with another callee, same signature.
        let mut parts: Vec<String> = v.split(';').next().unwrap().split('.').map(String::from).collect();
        let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        parts[1] = URL_SAFE_NO_PAD.encode(claims.replace("\"A\"", "\"B\""));
        let tampered = format!("{};info=<{X5U}>;ppt=shaken", parts.join("."));
        let r = check(&cfg, &certs, &tampered, IAT);
        assert_eq!(r.outcome, Outcome::Invalid);
        assert!(r.check.unwrap().contains("signature"));
        // Signed by another key than the certificate's.
        let other = pki(Opts::default());
        let r = check(&cfg, &certs, &good(&other), IAT);
        assert_eq!(r.outcome, Outcome::Invalid);
        // orig and dest that are not this call's.
        let r = check(&cfg, &certs, &p.identity(X5U, "A", "12155550124", "13105550199", IAT), IAT);
        assert!(r.check.as_deref().unwrap().contains("orig.tn"), "{r:?}");
        let r = check(&cfg, &certs, &p.identity(X5U, "A", "12155550123", "13105550198", IAT), IAT);
        assert!(r.check.as_deref().unwrap().contains("dest.tn"), "{r:?}");
        // Stale and from the future, just outside freshness_seconds both ways; inside passes.
        assert_eq!(check(&cfg, &certs, &v, IAT + 61).outcome, Outcome::Stale);
        assert_eq!(check(&cfg, &certs, &v, IAT - 61).outcome, Outcome::Stale);
        assert_eq!(check(&cfg, &certs, &v, IAT - 60).outcome, Outcome::Passed);
        // Unknown ppt, compact form, info that is not the x5u, an http x5u.
        assert_eq!(check(&cfg, &certs, &v.replace("ppt=shaken", "ppt=div"), IAT).outcome, Outcome::Invalid);
        let compact = format!("{}..{};info=<{X5U}>", parts[0], parts[2]);
        assert!(check(&cfg, &certs, &compact, IAT).check.unwrap().contains("compact"));
        let r = check(
            &cfg,
            &certs,
            &v.replace("info=<https://cert.example.com/sp.pem>", "info=<https://x.example/a>"),
            IAT,
        );
        assert_eq!(r.outcome, Outcome::Invalid);
        let http = p.identity("http://cert.example.com/sp.pem", "A", "12155550123", "13105550199", IAT);
        assert_eq!(check(&cfg, &certs, &http, IAT).outcome, Outcome::Untrusted);
        // A string iat.
        let header = format!(r#"{{"alg":"ES256","typ":"passport","ppt":"shaken","x5u":"{X5U}"}}"#);
        let claims = r#"{"attest":"A","dest":{"tn":["13105550199"]},"iat":"1780000000","orig":{"tn":"12155550123"},"origid":"x"}"#;
        let r = check(&cfg, &certs, &p.sign(&header, claims), IAT);
        assert!(r.check.unwrap().contains("NumericDate"));
    }

    #[test]
    fn one_good_identity_of_several_is_enough() {
        let p = pki(Opts::default());
        let (cfg, certs) = setup(&p, vec![]);
        let bad = p.identity(X5U, "A", "12155550999", "13105550199", IAT);
        let both = format!("{bad},{}", good(&p));
        assert_eq!(check(&cfg, &certs, &both, IAT).outcome, Outcome::Passed);
        let r = check(&cfg, &certs, &format!("{bad},garbage"), IAT);
        assert_eq!(r.outcome, Outcome::Invalid, "the first value's failure is reported");
        // Only MAX_VALUES values are looked at: a good one after 10,000 bad ones is not.
        let many = format!("{},{}", vec![bad.as_str(); 10_000].join(","), good(&p));
        assert_eq!(check(&cfg, &certs, &many, IAT).outcome, Outcome::Invalid);
    }

    #[test]
    fn chains_that_do_not_validate_are_untrusted() {
        let now = SystemTime::now();
        let validate = |p: &Pki, crls: Vec<Vec<u8>>| {
            TrustStore::new(vec![p.root_der.clone()], crls)
                .unwrap()
                .validate(&[p.leaf_der.clone(), p.inter_der.clone()], now)
        };
        // Critical certificatePolicies on leaf and intermediate, as in the real SHAKEN PKI.
        let p = pki(Opts::default());
        assert_eq!(validate(&p, vec![]).unwrap().spc.as_deref(), Some("709J"));
        let e = validate(&pki(Opts { leaf_expired: true, ..Opts::default() }), vec![]).unwrap_err();
        assert!(matches!(e, cert::ChainError::Dates(_)), "{e}");
        let e = validate(&pki(Opts { unknown_critical: true, ..Opts::default() }), vec![]).unwrap_err();
        assert!(matches!(e, cert::ChainError::Critical(..)), "{e}");
        // Revoked by the intermediate's CRL; a CRL revoking another serial does not matter.
        assert!(matches!(validate(&p, vec![p.crl(&[1001])]), Err(cert::ChainError::Revoked(_))));
        assert!(validate(&p, vec![p.crl(&[7])]).is_ok());
        // A CRL signed by someone else is not believed.
        let other = pki(Opts::default());
        let forged = other.crl(&[1001]);
        assert!(validate(&p, vec![forged]).is_ok());
        // Another root: no path. The leaf alone: no path (the intermediate is missing).
        let e = TrustStore::new(vec![other.root_der.clone()], vec![])
            .unwrap()
            .validate(&[p.leaf_der.clone(), p.inter_der.clone()], now)
            .unwrap_err();
        assert!(matches!(e, cert::ChainError::NoPath(_)), "{e}");
        let e =
            TrustStore::new(vec![p.root_der.clone()], vec![]).unwrap().validate(std::slice::from_ref(&p.leaf_der), now);
        assert!(matches!(e, Err(cert::ChainError::NoPath(_))));
        // The intermediate presented as the leaf: not a SHAKEN leaf.
        let e = TrustStore::new(vec![p.root_der.clone()], vec![])
            .unwrap()
            .validate(std::slice::from_ref(&p.inter_der), now);
        assert!(matches!(e, Err(cert::ChainError::Leaf(_))), "{e:?}");
    }

    #[test]
    fn a_missing_certificate_is_asked_for_or_unavailable() {
        let p = pki(Opts::default());
        let (cfg, _) = setup(&p, vec![]);
        let empty = CertCache::default();
        let v = good(&p);
        let need = verify(&cfg, &empty, Some(&v), Some(CALLER), Some(CALLEE), at(IAT), true).unwrap_err();
        assert_eq!(need, NeedCert(X5U.into()));
        let r = verify(&cfg, &empty, Some(&v), Some(CALLER), Some(CALLEE), at(IAT), false).unwrap();
        assert_eq!((r.outcome, r.outcome.verstat()), (Outcome::Unavailable, Verstat::None));
        // A failed fetch is remembered (no second fetch per call) for NEGATIVE_TTL.
        empty.complete(X5U, Err("timeout".into()), &cfg.trust, at(IAT), cfg.cert_cache);
        let r = verify(&cfg, &empty, Some(&v), Some(CALLER), Some(CALLEE), at(IAT + 1), true).unwrap();
        assert_eq!(r.outcome, Outcome::Unavailable);
        let later = p.identity(X5U, "A", "+12155550123", "13105550199", IAT + 61);
        assert!(verify(&cfg, &empty, Some(&later), Some(CALLER), Some(CALLEE), at(IAT + 61), true).is_err());
        // No Identity at all.
        let r = verify(&cfg, &empty, None, Some(CALLER), Some(CALLEE), at(IAT), true).unwrap();
        assert_eq!((r.outcome, r.outcome.verstat()), (Outcome::Missing, Verstat::None));
    }

    #[test]
    fn one_fetch_per_url_and_reload_revalidates() {
        let p = pki(Opts::default());
        let (cfg, certs) = setup(&p, vec![]);
        let empty = CertCache::default();
        let t = at(IAT);
        assert!(empty.begin_fetch(X5U, t, Duration::from_secs(4)));
        assert!(!empty.begin_fetch(X5U, t, Duration::from_secs(4)), "one fetch in flight per URL");
        assert!(empty.begin_fetch(X5U, at(IAT + 5), Duration::from_secs(4)), "a stuck fetch is taken over");
        // A CRL added on reload revokes a cached chain without a fetch.
        let revoking = TrustStore::new(vec![p.root_der.clone()], vec![p.crl(&[1001])]).unwrap();
        certs.revalidate(&revoking, t);
        assert!(matches!(certs.get(X5U, t), certs::Lookup::Failed(CertFailure::Untrusted(_))));
        let _ = cfg;
    }
}
