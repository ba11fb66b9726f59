//! PASSporT (RFC 8225) with the SHAKEN extension (RFC 8588): decode the JWS, check the
//! protected header and claims, and verify ES256 over the signing input exactly as received
//! (the first two base64url parts and the dot between them; never a re-serialisation, which
//! would fail on any other JSON layout).
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// SHAKEN attestation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Attestation {
    /// Ordered so that a stronger level compares greater: C < B < A.
    C,
    B,
    A,
}

impl Attestation {
    pub fn parse(s: &str) -> Option<Attestation> {
        match s {
            "A" => Some(Attestation::A),
            "B" => Some(Attestation::B),
            "C" => Some(Attestation::C),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Attestation::A => "A",
            Attestation::B => "B",
            Attestation::C => "C",
        }
    }
}

/// Why a PASSporT was refused, named for the check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassportError {
    #[error("protected header: {0}")]
    Header(String),
    #[error("claims: {0}")]
    Claims(String),
    #[error("signature: {0}")]
    Signature(&'static str),
}

/// The decoded, not yet verified PASSporT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passport {
    pub x5u: String,
    pub attest: Attestation,
    pub orig_tn: String,
    pub dest_tn: Vec<String>,
    pub iat: u64,
    pub origid: String,
    signing_input_len: usize,
    signature: [u8; 64],
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    typ: Option<String>,
    ppt: Option<String>,
    x5u: Option<String>,
}

#[derive(Deserialize)]
struct Tn {
    tn: serde_json::Value,
}

#[derive(Deserialize)]
struct Claims {
    attest: Option<String>,
    dest: Option<Tn>,
    iat: Option<serde_json::Value>,
    orig: Option<Tn>,
    origid: Option<String>,
}

/// Largest JWS accepted: real SHAKEN PASSporTs are about 500-700 bytes.
pub const MAX_JWS: usize = 8192;

fn decode(part: &str, what: &'static str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| format!("{what} is not base64url"))
}

/// Decode and check the header and claims of a compact JWS. `ppt` is the Identity header's
/// `ppt` parameter, which must agree with the protected header when present.
pub fn decode_passport(jws: &str, ppt_param: Option<&str>) -> Result<Passport, PassportError> {
    if jws.len() > MAX_JWS {
        return Err(PassportError::Header(format!("longer than {MAX_JWS} bytes")));
    }
    let mut parts = jws.splitn(3, '.');
    let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(PassportError::Header("not a compact JWS".into()));
    };
    let header: Header = serde_json::from_slice(&decode(h, "header").map_err(PassportError::Header)?)
        .map_err(|e| PassportError::Header(format!("not a JSON object: {e}")))?;
    if header.alg.as_deref() != Some("ES256") {
        return Err(PassportError::Header(format!("alg {:?} is not ES256", header.alg.unwrap_or_default())));
    }
    if header.typ.as_deref() != Some("passport") {
        return Err(PassportError::Header(format!("typ {:?} is not passport", header.typ.unwrap_or_default())));
    }
    if header.ppt.as_deref() != Some("shaken") {
        return Err(PassportError::Header(format!("ppt {:?} is not shaken", header.ppt.unwrap_or_default())));
    }
    if let Some(pp) = ppt_param
        && pp != "shaken"
    {
        return Err(PassportError::Header(format!("Identity ppt parameter {pp:?} is not shaken")));
    }
    let x5u = header.x5u.filter(|u| !u.is_empty()).ok_or_else(|| PassportError::Header("no x5u".into()))?;
    let claims: Claims = serde_json::from_slice(&decode(p, "payload").map_err(PassportError::Claims)?)
        .map_err(|e| PassportError::Claims(format!("not a JSON object: {e}")))?;
    let attest = claims
        .attest
        .as_deref()
        .and_then(Attestation::parse)
        .ok_or_else(|| PassportError::Claims("attest is not A, B or C".into()))?;
    // iat is a NumericDate: a JSON number, never a string.
    let iat = match claims.iat {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().ok_or_else(|| PassportError::Claims("iat is not a non-negative integer".into()))?
        }
        Some(_) => return Err(PassportError::Claims("iat is not a NumericDate (a JSON number)".into())),
        None => return Err(PassportError::Claims("no iat".into())),
    };
    let orig_tn = match claims.orig.map(|o| o.tn) {
        Some(serde_json::Value::String(s)) => s,
        _ => return Err(PassportError::Claims("orig.tn is not a string".into())),
    };
    let dest_tn = match claims.dest.map(|d| d.tn) {
        Some(serde_json::Value::Array(a)) if !a.is_empty() => a
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Ok(s),
                _ => Err(PassportError::Claims("dest.tn holds a non-string".into())),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(PassportError::Claims("dest.tn is not a non-empty array".into())),
    };
    let origid = claims.origid.filter(|o| !o.is_empty()).ok_or_else(|| PassportError::Claims("no origid".into()))?;
    let sig = decode(s, "signature").map_err(|_| PassportError::Signature("not base64url"))?;
    let signature: [u8; 64] =
        sig.as_slice().try_into().map_err(|_| PassportError::Signature("not a 64-byte R||S value"))?;
    Ok(Passport { x5u, attest, orig_tn, dest_tn, iat, origid, signing_input_len: h.len() + 1 + p.len(), signature })
}

impl Passport {
    /// Verify ES256 with a P-256 public key (an uncompressed SEC1 point) over the signing
    /// input of `jws`, the same text this PASSporT was decoded from.
    pub fn verify_signature(&self, jws: &str, public_key: &[u8]) -> Result<(), PassportError> {
        let input = jws.as_bytes().get(..self.signing_input_len).ok_or(PassportError::Signature("truncated"))?;
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, public_key)
            .verify(input, &self.signature)
            .map_err(|_| PassportError::Signature("does not verify with the certificate's key"))
    }
}

/// A telephone number canonicalised per RFC 8224 §8.3 as digits: visual separators and a
/// leading `+` removed. None when anything else remains.
pub fn canonical_tn(tn: &str) -> Option<u64> {
    let mut digits = 0usize;
    let mut v: u64 = 0;
    for (i, c) in tn.bytes().enumerate() {
        match c {
            b'0'..=b'9' => {
                digits += 1;
                if digits > 19 {
                    return None;
                }
                v = v * 10 + u64::from(c - b'0');
            }
            b'+' if i == 0 => {}
            b'-' | b'.' | b'(' | b')' | b' ' => {}
            _ => return None,
        }
    }
    (digits > 0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn jws(header: &str, claims: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(claims), URL_SAFE_NO_PAD.encode([7u8; 64]))
    }

    const H: &str = r#"{"alg":"ES256","typ":"passport","ppt":"shaken","x5u":"https://cr.example/c.pem"}"#;
    const C: &str = r#"{"attest":"A","dest":{"tn":["12155550100"]},"iat":1700000000,"orig":{"tn":"12155550123"},"origid":"123e4567-e89b-12d3-a456-426655440000"}"#;

    #[test]
    fn decodes_a_shaken_passport() {
        let p = decode_passport(&jws(H, C), Some("shaken")).unwrap();
        assert_eq!((p.attest, p.iat, p.orig_tn.as_str()), (Attestation::A, 1_700_000_000, "12155550123"));
        assert_eq!(p.dest_tn, vec!["12155550100".to_string()]);
        assert_eq!(p.x5u, "https://cr.example/c.pem");
    }

    #[test]
    fn refuses_wrong_header_and_claims() {
        let bad = |h: &str, c: &str| decode_passport(&jws(h, c), None).unwrap_err().to_string();
        assert!(bad(&H.replace("ES256", "RS256"), C).contains("alg"));
        assert!(bad(&H.replace("\"typ\":\"passport\"", "\"typ\":\"JWT\""), C).contains("typ"));
        assert!(bad(&H.replace("shaken", "div"), C).contains("ppt"));
        assert!(bad(&H.replace(",\"x5u\":\"https://cr.example/c.pem\"", ""), C).contains("x5u"));
        assert!(bad(H, &C.replace("1700000000", "\"1700000000\"")).contains("NumericDate"));
        assert!(bad(H, &C.replace("\"A\"", "\"D\"")).contains("attest"));
        assert!(bad(H, &C.replace("[\"12155550100\"]", "\"12155550100\"")).contains("dest.tn"));
        assert!(bad(H, &C.replace(",\"origid\":\"123e4567-e89b-12d3-a456-426655440000\"", "")).contains("origid"));
        assert!(bad("[1]", C).contains("JSON object"));
        assert!(decode_passport(&jws(H, C), Some("div")).is_err());
        let short = format!("{}.{}.{}", b64(H), b64(C), URL_SAFE_NO_PAD.encode([1u8; 63]));
        assert!(decode_passport(&short, None).unwrap_err().to_string().contains("64-byte"));
    }

    #[test]
    fn canonical_numbers() {
        assert_eq!(canonical_tn("+1 (215) 555-0123"), Some(12155550123));
        assert_eq!(canonical_tn("12155550123"), Some(12155550123));
        assert_eq!(canonical_tn("1215555012a"), None);
        assert_eq!(canonical_tn("1+2"), None);
        assert_eq!(canonical_tn(""), None);
        assert_eq!(canonical_tn(&"9".repeat(25)), None);
    }
}
