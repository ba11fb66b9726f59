//! The SIP Identity header (RFC 8224 §4): `Identity: <JWS>;info=<URL>;alg=ES256;ppt=shaken`.
//! Several Identity header fields (or comma-separated values) may arrive; each is parsed on
//! its own, so one malformed value does not hide a good one.

/// One Identity header value, borrowed from the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityValue<'a> {
    /// The signed-identity-digest: a JWS in compact serialisation.
    pub jws: &'a str,
    /// The `info` parameter without its angle brackets.
    pub info: Option<&'a str>,
    pub alg: Option<&'a str>,
    /// The `ppt` parameter, quotes removed.
    pub ppt: Option<&'a str>,
}

/// Why an Identity value could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("Identity has no signed digest")]
    Empty,
    #[error("Identity digest is not a JWS (three base64url parts)")]
    NotJws,
    #[error("Identity uses the compact form (no claims), which is not supported")]
    Compact,
    #[error("Identity parameter is malformed")]
    BadParam,
}

/// At most this many Identity values are looked at per call: verification costs a
/// signature check each, and a hostile dialer could send hundreds.
pub const MAX_VALUES: usize = 4;

/// Split a header value (all Identity headers joined by commas) into values, at commas
/// outside `<...>` and quotes.
pub fn split(value: &str) -> impl Iterator<Item = &str> {
    split_outside(value, b',')
}

/// Pieces of `s` between `sep`s outside `<...>` and quoted strings, trimmed, empty ones
/// skipped. One pass, linear in the length.
fn split_outside(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let b = s.as_bytes();
    let (mut start, mut i, mut angle, mut quote) = (0usize, 0usize, false, false);
    std::iter::from_fn(move || {
        while i <= b.len() {
            let c = b.get(i).copied();
            i += 1;
            let end = match c {
                Some(b'"') if !angle => {
                    quote = !quote;
                    false
                }
                Some(b'\\') if quote => {
                    i = (i + 1).min(b.len());
                    false
                }
                Some(b'<') if !quote => {
                    angle = true;
                    false
                }
                Some(b'>') if !quote => {
                    angle = false;
                    false
                }
                Some(x) => x == sep && !quote && !angle,
                None => true,
            };
            if end {
                let stop = if c.is_some() { i - 1 } else { b.len() };
                let v = s.get(start..stop).unwrap_or("").trim();
                start = i.min(b.len());
                if !v.is_empty() {
                    return Some(v);
                }
            }
        }
        None
    })
}

/// Parse one Identity value.
pub fn parse(v: &str) -> Result<IdentityValue<'_>, IdentityError> {
    let (jws, params) = match v.find(';') {
        Some(i) => (v[..i].trim(), &v[i + 1..]),
        None => (v.trim(), ""),
    };
    if jws.is_empty() {
        return Err(IdentityError::Empty);
    }
    let mut parts = jws.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(IdentityError::NotJws);
    };
    let b64url = |x: &str| x.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if h.is_empty() || s.is_empty() || !b64url(h) || !b64url(p) || !b64url(s) {
        return Err(IdentityError::NotJws);
    }
    if p.is_empty() {
        return Err(IdentityError::Compact);
    }
    let mut out = IdentityValue { jws, info: None, alg: None, ppt: None };
    for param in split_params(params) {
        let (name, value) = match param.find('=') {
            Some(i) => (param[..i].trim(), param[i + 1..].trim()),
            None => (param.trim(), ""),
        };
        if name.eq_ignore_ascii_case("info") {
            let inner = value.strip_prefix('<').and_then(|x| x.strip_suffix('>')).ok_or(IdentityError::BadParam)?;
            out.info = Some(inner.trim());
        } else if name.eq_ignore_ascii_case("alg") {
            out.alg = Some(value);
        } else if name.eq_ignore_ascii_case("ppt") {
            out.ppt = Some(value.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(value));
        }
    }
    Ok(out)
}

/// Parameters separated by `;` outside `<...>` and quotes.
fn split_params(s: &str) -> impl Iterator<Item = &str> {
    split_outside(s, b';')
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWS: &str = "eyJhbGciOiJFUzI1NiJ9.eyJhdHRlc3QiOiJBIn0.c2ln";

    #[test]
    fn full_form_with_parameters() {
        let v = format!("{JWS};info=<https://cert.example.org/a.pem>;alg=ES256;ppt=\"shaken\"");
        let id = parse(&v).unwrap();
        assert_eq!(id.jws, JWS);
        assert_eq!(id.info, Some("https://cert.example.org/a.pem"));
        assert_eq!((id.alg, id.ppt), (Some("ES256"), Some("shaken")));
        let v = format!("{JWS} ; info=<https://x/y;z=1> ; ppt=shaken");
        let id = parse(&v).unwrap();
        assert_eq!((id.info, id.ppt), (Some("https://x/y;z=1"), Some("shaken")));
    }

    #[test]
    fn malformed_values_are_refused() {
        assert_eq!(parse(""), Err(IdentityError::Empty));
        assert_eq!(parse(";info=<https://x>"), Err(IdentityError::Empty));
        assert_eq!(parse("abc.def"), Err(IdentityError::NotJws));
        assert_eq!(parse("a.b.c.d"), Err(IdentityError::NotJws));
        assert_eq!(parse("a+b.c.d"), Err(IdentityError::NotJws));
        assert_eq!(parse("eyJh..c2ln;info=<https://x>"), Err(IdentityError::Compact));
        assert_eq!(parse(&format!("{JWS};info=https://x")), Err(IdentityError::BadParam));
    }

    #[test]
    fn several_values_split_outside_brackets() {
        let joined = format!("{JWS};info=<https://a/x,y>, {JWS};info=<https://b>,,");
        let v: Vec<&str> = split(&joined).collect();
        assert_eq!(v.len(), 2);
        assert_eq!(parse(v[0]).unwrap().info, Some("https://a/x,y"));
        assert_eq!(parse(v[1]).unwrap().info, Some("https://b"));
        // 10,000 commas: linear, and no empty values.
        assert_eq!(split(&",".repeat(10_000)).count(), 0);
    }
}
