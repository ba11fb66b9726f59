//! E.164 numbers as `u64` (the digits after `+`; E.164 never starts with 0, so the integer is
//! unambiguous). Parsing allocates nothing.

/// How national numbers are read: the configured default country.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberPlan {
    pub country: String,
    pub country_code: u16,
    /// National trunk prefix dropped before adding the country code ("0" in most of Europe
    /// and China, "1" in NANP).
    pub national_prefix: Option<String>,
}

impl NumberPlan {
    /// Plan for an ISO 3166 region code such as "US", "GB", "CN" (libphonenumber metadata).
    pub fn for_country(country: &str) -> Option<NumberPlan> {
        let meta = phonenumber::metadata::DATABASE.by_id(&country.to_ascii_uppercase())?;
        Some(NumberPlan {
            country: country.to_ascii_uppercase(),
            country_code: meta.country_code(),
            national_prefix: meta.national_prefix().map(str::to_string),
        })
    }
}

/// Number of decimal digits of n (n > 0).
pub fn digit_count(n: u64) -> u32 {
    n.checked_ilog10().map_or(1, |l| l + 1)
}

/// How many leading digits of `n` (a number or a prefix) are its country calling code;
/// None when no code of 1-3 digits starts it.
pub fn country_code_len(n: u64) -> Option<u32> {
    let len = digit_count(n);
    (1..=3u32.min(len)).find(|&k| {
        let code = n / 10u64.pow(len - k);
        u16::try_from(code).is_ok_and(|c| phonenumber::metadata::DATABASE.by_code(&c).is_some())
    })
}

/// Render as `+digits`.
pub fn format_e164(n: u64) -> String {
    format!("+{n}")
}

/// Parse a dialled string into E.164: `+CC...`, `00CC...` (international prefix), or a
/// national number under `plan`. Visual separators (`-`, `.`, space, parentheses) are
/// skipped; anything else makes it unparseable. Returns digits as u64, 7-15 digits.
pub fn parse(s: &str, plan: Option<&NumberPlan>) -> Option<u64> {
    let s = s.trim();
    let (international, body) = match s.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let mut digits: u64 = 0;
    let mut count = 0u32;
    let mut leading_zeros = 0u32;
    for b in body.bytes() {
        match b {
            b'0'..=b'9' => {
                if count == 0 && b == b'0' {
                    leading_zeros += 1;
                    if international {
                        return None;
                    }
                    continue;
                }
                count += 1;
                if count > 15 {
                    return None;
                }
                digits = digits * 10 + u64::from(b - b'0');
            }
            b'-' | b'.' | b' ' | b'(' | b')' => {}
            _ => return None,
        }
    }
    if count == 0 {
        return None;
    }
    let n = if international || leading_zeros == 2 {
        // "+CC..." or "00CC..." (the ITU international call prefix).
        digits
    } else {
        let plan = plan?;
        national(digits, count, leading_zeros, plan)?
    };
    let len = digit_count(n);
    (7..=15).contains(&len).then_some(n)
}

/// A national number under the plan: strip the trunk prefix, prepend the country code.
fn national(digits: u64, count: u32, leading_zeros: u32, plan: &NumberPlan) -> Option<u64> {
    let cc = u64::from(plan.country_code);
    let cc_len = digit_count(cc);
    match plan.national_prefix.as_deref() {
        // "0" trunk prefix: exactly one leading zero was skipped above.
        Some("0") if leading_zeros == 1 => {}
        Some("0") | None if leading_zeros > 0 => return None,
        // NANP: 10 digits, or 11 starting with the trunk prefix 1 (which is also the CC).
        Some("1") => {
            if leading_zeros > 0 {
                return None;
            }
            if count == 11 && digits / 10u64.pow(10) == 1 {
                return Some(digits);
            }
            if count != 10 {
                return None;
            }
        }
        _ => {}
    }
    digits.checked_add(cc.checked_mul(10u64.checked_pow(count)?)?).filter(|_| cc_len + count <= 15)
}

/// Whether an E.164 number can be a real one: 7-15 digits, and for +1 (NANP) 11 digits with
/// NPA and NXX starting 2-9 and neither being an N11 service code.
pub fn is_valid(n: u64) -> bool {
    let len = digit_count(n);
    if !(7..=15).contains(&len) {
        return false;
    }
    if len == 11 && n / 10u64.pow(10) == 1 {
        let npa = (n / 10_000_000) % 1000;
        let nxx = (n / 10_000) % 1000;
        let ok = |x: u64| x / 100 >= 2 && x % 100 != 11;
        return ok(npa) && ok(nxx);
    }
    // A number under +1 that is not 11 digits long is not a NANP number.
    !(n / 10u64.pow(len - 1) == 1 && len != 11)
}

/// The user part of a SIP/SIPS/TEL URI, without parameters: `sip:+1212@host;user=phone` ->
/// `+1212`, `tel:+1-212-555-0100;ext=1` -> `+1-212-555-0100`.
pub fn uri_user(uri: &str) -> Option<&str> {
    // Byte searches: every initial INVITE goes through here two or three times.
    let uri = uri.trim();
    let b = uri.as_bytes();
    let colon = b.iter().position(|&c| c == b':')?;
    let (scheme, rest) = (&b[..colon], &b[colon + 1..]);
    let user_end = if scheme.eq_ignore_ascii_case(b"tel") {
        memchr::memchr(b';', rest).unwrap_or(rest.len())
    } else if scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips") {
        let at = memchr::memchr(b'@', rest)?;
        memchr::memchr(b';', &rest[..at]).unwrap_or(at)
    } else {
        return None;
    };
    // The cut points are ASCII bytes, so both ends are char boundaries.
    uri.get(colon + 1..colon + 1 + user_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> NumberPlan {
        NumberPlan::for_country("US").unwrap()
    }

    #[test]
    fn international_forms() {
        assert_eq!(parse("+12125550100", None), Some(12125550100));
        assert_eq!(parse("+1 (212) 555-0100", None), Some(12125550100));
        assert_eq!(parse("0044 20 7946 0018", None), Some(442079460018));
        assert_eq!(parse("+0123", None), None);
        assert_eq!(parse("+123456", None), None, "6 digits is too short");
        assert_eq!(parse("+1234567890123456", None), None, "16 digits is too long");
        assert_eq!(parse("+999999999999999", None), Some(999_999_999_999_999));
        assert_eq!(parse("+1212abc", None), None);
        assert_eq!(parse("", None), None);
    }

    #[test]
    fn national_forms() {
        assert_eq!(parse("2125550100", Some(&us())), Some(12125550100));
        assert_eq!(parse("12125550100", Some(&us())), Some(12125550100));
        assert_eq!(parse("212555010", Some(&us())), None);
        let gb = NumberPlan::for_country("GB").unwrap();
        assert_eq!(parse("020 7946 0018", Some(&gb)), Some(442079460018));
        let cn = NumberPlan::for_country("cn").unwrap();
        assert_eq!(parse("13800138000", Some(&cn)), Some(8613800138000));
        assert_eq!(parse("2125550100", None), None, "national without a plan");
        assert!(NumberPlan::for_country("XX").is_none());
    }

    #[test]
    fn nanp_validity() {
        assert!(is_valid(12125550100));
        assert!(!is_valid(10125550100), "NPA starting 0");
        assert!(!is_valid(11125550100), "NPA starting 1");
        assert!(!is_valid(12121550100), "NXX starting 1");
        assert!(!is_valid(14115550100), "N11 NPA");
        assert!(!is_valid(12124110100), "N11 NXX");
        assert!(!is_valid(1212555010), "10-digit +1");
        assert!(is_valid(442079460018));
        assert!(!is_valid(123456));
    }

    #[test]
    fn uri_users() {
        assert_eq!(uri_user("sip:+12125550100@10.0.0.1;user=phone"), Some("+12125550100"));
        assert_eq!(uri_user("tel:+1-212-555-0100;ext=7"), Some("+1-212-555-0100"));
        assert_eq!(uri_user("sips:alice;x=1@h"), Some("alice"));
        assert_eq!(uri_user("sip:host.only"), None);
        assert_eq!(uri_user("mailto:a@b"), None);
    }
}
