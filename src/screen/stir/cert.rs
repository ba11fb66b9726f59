//! Certificate path validation for SHAKEN (ATIS-1000080, RFC 8226): the x5u's leaf and
//! intermediates up to one of the STI-PA's trust anchors, with validity dates, the CRL,
//! basicConstraints/keyUsage, and the TNAuthList extension read for the SPC.
//!
//! Why by hand over x509-parser rather than rustls-webpki: real SHAKEN certificates carry a
//! critical certificatePolicies extension, which webpki refuses as an unsupported critical
//! extension (rustls/webpki#30); this path check knows that extension (and TNAuthList) and
//! still refuses every other critical extension it does not understand. Signatures are
//! checked by x509-parser's `verify` feature (ring).
use std::time::{SystemTime, UNIX_EPOCH};
use x509_parser::prelude::*;

/// TNAuthList, RFC 8226 §9.
pub const OID_TN_AUTH_LIST: &str = "1.3.6.1.5.5.7.1.26";

/// Extensions this check understands; any other critical one fails the path.
const KNOWN: [&str; 10] = [
    "2.5.29.19",         // basicConstraints
    "2.5.29.15",         // keyUsage
    "2.5.29.32",         // certificatePolicies
    "2.5.29.14",         // subjectKeyIdentifier
    "2.5.29.35",         // authorityKeyIdentifier
    "2.5.29.31",         // cRLDistributionPoints
    "2.5.29.37",         // extKeyUsage
    "2.5.29.17",         // subjectAltName
    "1.3.6.1.5.5.7.1.1", // authorityInfoAccess
    OID_TN_AUTH_LIST,
];

/// Longest path: leaf, up to four intermediates, anchor.
const MAX_DEPTH: usize = 5;

/// A chain that validated: what verification needs from it afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidChain {
    /// The leaf's P-256 public key, an uncompressed SEC1 point.
    pub public_key: Vec<u8>,
    /// Service Provider Code from TNAuthList.
    pub spc: Option<String>,
    /// The window (unix seconds) in which every certificate of the path is valid.
    pub not_before: i64,
    pub not_after: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("no certificate in the x5u response")]
    Empty,
    #[error("certificate does not parse: {0}")]
    Parse(String),
    #[error("certificate {0} is not valid at this time")]
    Dates(String),
    #[error("no path to a trust anchor from {0}")]
    NoPath(String),
    #[error("certificate {0} is revoked")]
    Revoked(String),
    #[error("{0}")]
    Leaf(String),
    #[error("certificate {0} has an unsupported critical extension {1}")]
    Critical(String, String),
    #[error("issuer {0} is not a CA")]
    NotCa(String),
}

/// The trust anchors and CRLs, as DER, parsed on use (validation runs once per fetched
/// chain, not per call).
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    anchors: Vec<Vec<u8>>,
    crls: Vec<Vec<u8>>,
}

/// DER blocks of every `CERTIFICATE` (or `X509 CRL`) in PEM text; a DER input is returned
/// whole.
pub fn pem_blocks(data: &[u8], label: &str) -> Result<Vec<Vec<u8>>, String> {
    if data.first() == Some(&0x30) {
        return Ok(vec![data.to_vec()]);
    }
    let mut out = Vec::new();
    for pem in Pem::iter_from_buffer(data) {
        let pem = pem.map_err(|e| format!("bad PEM: {e}"))?;
        if pem.label == label {
            out.push(pem.contents);
        }
    }
    Ok(out)
}

impl TrustStore {
    /// Anchors and CRLs as DER; each anchor must parse as a certificate and each CRL as a CRL.
    pub fn new(anchors: Vec<Vec<u8>>, crls: Vec<Vec<u8>>) -> Result<TrustStore, String> {
        for (i, a) in anchors.iter().enumerate() {
            X509Certificate::from_der(a).map_err(|e| format!("trust anchor {}: {e}", i + 1))?;
        }
        for (i, c) in crls.iter().enumerate() {
            CertificateRevocationList::from_der(c).map_err(|e| format!("CRL {}: {e}", i + 1))?;
        }
        Ok(TrustStore { anchors, crls })
    }

    pub fn anchors(&self) -> usize {
        self.anchors.len()
    }

    /// Validate `chain` (leaf first, then intermediates in any order) at `now`.
    pub fn validate(&self, chain: &[Vec<u8>], now: SystemTime) -> Result<ValidChain, ChainError> {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let at = ASN1Time::from_timestamp(secs).map_err(|e| ChainError::Parse(e.to_string()))?;
        let leaf_der = chain.first().ok_or(ChainError::Empty)?;
        let leaf = parse(leaf_der)?;
        let others: Vec<X509Certificate<'_>> = chain[1..].iter().map(|d| parse(d)).collect::<Result<_, _>>()?;
        let anchors: Vec<X509Certificate<'_>> = self.anchors.iter().filter_map(|d| parse(d).ok()).collect();
        let crls: Vec<CertificateRevocationList<'_>> =
            self.crls.iter().filter_map(|d| CertificateRevocationList::from_der(d).ok().map(|(_, c)| c)).collect();

        let spc = check_leaf(&leaf)?;
        let public_key = leaf.public_key().subject_public_key.data.to_vec();
        let (mut not_before, mut not_after) =
            (leaf.validity().not_before.timestamp(), leaf.validity().not_after.timestamp());
        let mut current = &leaf;
        for _ in 0..MAX_DEPTH {
            check_cert(current, &at)?;
            let name = current.subject().to_string();
            if let Some(anchor) = anchors.iter().find(|a| issued_by(current, a)) {
                check_cert(anchor, &at)?;
                revoked(current, anchor, &crls)?;
                not_before = not_before.max(anchor.validity().not_before.timestamp());
                not_after = not_after.min(anchor.validity().not_after.timestamp());
                return Ok(ValidChain { public_key, spc, not_before, not_after });
            }
            let Some(issuer) = others.iter().find(|c| issued_by(current, c)) else {
                return Err(ChainError::NoPath(name));
            };
            check_ca(issuer)?;
            revoked(current, issuer, &crls)?;
            not_before = not_before.max(issuer.validity().not_before.timestamp());
            not_after = not_after.min(issuer.validity().not_after.timestamp());
            current = issuer;
        }
        Err(ChainError::NoPath(current.subject().to_string()))
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, ChainError> {
    X509Certificate::from_der(der).map(|(_, c)| c).map_err(|e| ChainError::Parse(e.to_string()))
}

/// The leaf's public key and SPC, without any path check (the operator CLI checks the
/// signature and the chain separately).
pub fn leaf_key(der: &[u8]) -> Result<(Vec<u8>, Option<String>), ChainError> {
    let leaf = parse(der)?;
    let spc = check_leaf(&leaf)?;
    Ok((leaf.public_key().subject_public_key.data.to_vec(), spc))
}

/// `issuer` names and signed `cert`.
fn issued_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    cert.issuer().as_raw() == issuer.subject().as_raw()
        && check_ca(issuer).is_ok()
        && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

fn check_cert(c: &X509Certificate<'_>, at: &ASN1Time) -> Result<(), ChainError> {
    if !c.validity().is_valid_at(*at) {
        return Err(ChainError::Dates(c.subject().to_string()));
    }
    for ext in c.extensions() {
        let oid = ext.oid.to_id_string();
        if ext.critical && !KNOWN.contains(&oid.as_str()) {
            return Err(ChainError::Critical(c.subject().to_string(), oid));
        }
    }
    Ok(())
}

fn check_ca(c: &X509Certificate<'_>) -> Result<(), ChainError> {
    let ca = matches!(c.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    let signs = match c.key_usage() {
        Ok(Some(ku)) => ku.value.key_cert_sign(),
        Ok(None) => true,
        Err(_) => false,
    };
    if ca && signs { Ok(()) } else { Err(ChainError::NotCa(c.subject().to_string())) }
}

/// The leaf: a P-256 key with digitalSignature usage and a TNAuthList; its SPC.
fn check_leaf(leaf: &X509Certificate<'_>) -> Result<Option<String>, ChainError> {
    let spki = leaf.public_key();
    let ec = spki.algorithm.algorithm.to_id_string() == "1.2.840.10045.2.1";
    let p256 = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .is_some_and(|o| o.to_id_string() == "1.2.840.10045.3.1.7");
    if !ec || !p256 {
        return Err(ChainError::Leaf("leaf key is not P-256 (ES256)".into()));
    }
    match leaf.key_usage() {
        Ok(Some(ku)) if ku.value.digital_signature() => {}
        _ => return Err(ChainError::Leaf("leaf lacks the digitalSignature key usage".into())),
    }
    let ext = leaf
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == OID_TN_AUTH_LIST)
        .ok_or_else(|| ChainError::Leaf("leaf has no TNAuthList extension".into()))?;
    tn_auth_list_spc(ext.value).map_err(|e| ChainError::Leaf(format!("TNAuthList: {e}")))
}

/// Whether `issuer`'s CRL (one that names it and verifies with its key) lists `cert`.
fn revoked(
    cert: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    crls: &[CertificateRevocationList<'_>],
) -> Result<(), ChainError> {
    for crl in crls {
        if crl.issuer().as_raw() != issuer.subject().as_raw() || crl.verify_signature(issuer.public_key()).is_err() {
            continue;
        }
        if crl.iter_revoked_certificates().any(|r| r.raw_serial() == cert.raw_serial()) {
            return Err(ChainError::Revoked(cert.subject().to_string()));
        }
    }
    Ok(())
}

/// The SPC of a TNAuthList (`SEQUENCE OF TNEntry`, `spc [0] EXPLICIT IA5String`); entries
/// of the other kinds (ranges, single numbers) are skipped. None when there is no SPC entry.
pub fn tn_auth_list_spc(der: &[u8]) -> Result<Option<String>, &'static str> {
    let (tag, body, rest) = tlv(der)?;
    if tag != 0x30 || !rest.is_empty() {
        return Err("not a SEQUENCE");
    }
    let mut entries = body;
    while !entries.is_empty() {
        let (tag, value, rest) = tlv(entries)?;
        entries = rest;
        let spc = match tag {
            // [0] EXPLICIT IA5String, as RFC 8226's module tags it.
            0xa0 => match tlv(value)? {
                (0x16, s, []) => s,
                _ => return Err("spc is not an IA5String"),
            },
            // [0] IMPLICIT, as some issuers encode it.
            0x80 => value,
            _ => continue,
        };
        if !spc.iter().all(|b| b.is_ascii_graphic()) || spc.is_empty() {
            return Err("spc is not printable");
        }
        return Ok(Some(String::from_utf8_lossy(spc).into_owned()));
    }
    Ok(None)
}

/// One DER tag-length-value: (tag, value, rest).
fn tlv(b: &[u8]) -> Result<(u8, &[u8], &[u8]), &'static str> {
    let (&tag, b) = b.split_first().ok_or("truncated")?;
    let (&first, mut b) = b.split_first().ok_or("truncated")?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return Err("bad length");
        }
        let len = b[..n].iter().fold(0usize, |a, &x| (a << 8) | usize::from(x));
        b = &b[n..];
        len
    };
    if b.len() < len {
        return Err("truncated");
    }
    Ok((tag, &b[..len], &b[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spc_from_tn_auth_list() {
        // SEQUENCE { [0] { IA5String "1234" } }
        let der = [0x30, 0x08, 0xa0, 0x06, 0x16, 0x04, b'1', b'2', b'3', b'4'];
        assert_eq!(tn_auth_list_spc(&der), Ok(Some("1234".into())));
        // A range entry first, then the SPC, implicitly tagged.
        let der = [0x30, 0x08, 0xa1, 0x00, 0x80, 0x04, b'7', b'0', b'9', b'J'];
        assert_eq!(tn_auth_list_spc(&der), Ok(Some("709J".into())));
        assert_eq!(tn_auth_list_spc(&[0x30, 0x00]), Ok(None));
        assert!(tn_auth_list_spc(&[0x30, 0x05, 0xa0]).is_err());
        assert!(tn_auth_list_spc(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(tn_auth_list_spc(&[]).is_err());
    }
}
