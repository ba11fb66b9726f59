//! The verstat parameter (3GPP TS 24.229 §7.2A.20): where it goes in a P-Asserted-Identity
//! or From value. A tel URI takes it as a URI parameter; a SIP URI in its user part, before
//! the `@` (`sip:+12155550123;verstat=TN-Validation-Passed@example.com`). Any verstat
//! already there is removed: only the verifier may state one.
use std::ops::Range;

/// Edits on a header value (offsets relative to the value): ranges to delete and the point
/// at which `;verstat=<value>` is inserted. None when the value holds no URI that can carry
/// one (a SIP URI without a user part, another scheme).
pub fn edits(value: &[u8]) -> Option<(Vec<Range<usize>>, usize)> {
    // The URI: inside the first <...>, or the addr-spec up to its first ';' (the header's
    // own parameters follow it there).
    let (start, end) = match memchr::memchr(b'<', value) {
        Some(lt) => (lt + 1, lt + 1 + memchr::memchr(b'>', &value[lt + 1..])?),
        None => {
            let s = value.iter().position(|b| !b.is_ascii_whitespace())?;
            let scheme_end = s + memchr::memchr(b':', &value[s..])?;
            // tel URIs carry their parameters with ';', so in an addr-spec the whole value
            // is the URI; a SIP addr-spec ends at its first ';' outside the user part.
            if value[s..scheme_end].eq_ignore_ascii_case(b"tel") {
                let e = value.iter().rposition(|b| !b.is_ascii_whitespace())? + 1;
                (s, e)
            } else {
                let at = memchr::memchr(b'@', &value[s..]).map_or(s, |a| s + a);
                (s, at + memchr::memchr(b';', &value[at..]).unwrap_or(value.len() - at))
            }
        }
    };
    let uri = &value[start..end];
    let colon = memchr::memchr(b':', uri)?;
    let scheme = &uri[..colon];
    let (part_start, part_end) = if scheme.eq_ignore_ascii_case(b"tel") {
        (start + colon + 1, end)
    } else if scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips") {
        let at = memchr::memchr(b'@', uri)?;
        (start + colon + 1, start + at)
    } else {
        return None;
    };
    let mut deletes = Vec::new();
    let part = &value[part_start..part_end];
    let mut i = 0;
    while let Some(semi) = memchr::memchr(b';', &part[i..]) {
        let p = i + semi;
        let next = memchr::memchr(b';', &part[p + 1..]).map_or(part.len(), |n| p + 1 + n);
        let name = part[p + 1..next].split(|&b| b == b'=').next().unwrap_or_default();
        if name.eq_ignore_ascii_case(b"verstat") {
            deletes.push(part_start + p..part_start + next);
        }
        i = next;
    }
    Some((deletes, part_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(v: &str) -> Option<String> {
        let (dels, at) = edits(v.as_bytes())?;
        let mut out = String::new();
        let mut pos = 0;
        let mut cuts = dels.clone();
        cuts.push(at..at);
        cuts.sort_by_key(|r| r.start);
        for r in cuts {
            out.push_str(&v[pos..r.start]);
            if r.start == at && r.end == at {
                out.push_str(";verstat=TN-Validation-Passed");
            }
            pos = r.end;
        }
        out.push_str(&v[pos..]);
        Some(out)
    }

    #[test]
    fn tel_and_sip_uris() {
        assert_eq!(tag("<tel:+12155550123>").unwrap(), "<tel:+12155550123;verstat=TN-Validation-Passed>");
        assert_eq!(tag("tel:+12155550123").unwrap(), "tel:+12155550123;verstat=TN-Validation-Passed");
        assert_eq!(
            tag("\"Alice\" <sip:+12155550123@example.com;user=phone>;tag=9").unwrap(),
            "\"Alice\" <sip:+12155550123;verstat=TN-Validation-Passed@example.com;user=phone>;tag=9"
        );
        assert_eq!(
            tag("sip:+12155550123@example.com;tag=1").unwrap(),
            "sip:+12155550123;verstat=TN-Validation-Passed@example.com;tag=1"
        );
        assert!(tag("<sip:example.com>").is_none());
        assert!(tag("<mailto:a@b>").is_none());
        assert!(tag("<sip:+1215@x").is_none());
    }

    #[test]
    fn an_existing_verstat_is_replaced() {
        assert_eq!(
            tag("<sip:+12155550123;verstat=TN-Validation-Passed@example.com>").unwrap(),
            "<sip:+12155550123;verstat=TN-Validation-Passed@example.com>"
        );
        assert_eq!(
            tag("<tel:+12155550123;VERSTAT=TN-Validation-Passed;x=1;verstat=a>").unwrap(),
            "<tel:+12155550123;x=1;verstat=TN-Validation-Passed>"
        );
    }
}
