//! Property tests: scan -> splice -> scan. Any message built from arbitrary header lines
//! (long and compact names, folded values, LF-only line ends) scans to exactly its headers;
//! after any set of non-overlapping edits of the kinds the proxy makes (insert a header line,
//! replace a value, delete a line), the result scans to exactly the edited list, and
//! everything not edited is byte-identical.
use super::scan::{self, Kind};
use super::splice::Splice;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Line {
    name: String,
    value: String,
    /// A folded continuation after the first word of the value.
    folded: bool,
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Via".to_string()),
        Just("v".to_string()),
        Just("From".to_string()),
        Just("f".to_string()),
        Just("To".to_string()),
        Just("Call-ID".to_string()),
        Just("CSeq".to_string()),
        Just("Contact".to_string()),
        Just("Route".to_string()),
        Just("Record-Route".to_string()),
        Just("P-Asserted-Identity".to_string()),
        "X-[A-Za-z0-9-]{1,12}",
    ]
}

fn value() -> impl Strategy<Value = String> {
    // Printable, no CR/LF, not starting or ending with whitespace, commas/quotes/brackets allowed.
    "[A-Za-z0-9<>@:;=.,\"+_-]{1,20}( [A-Za-z0-9<>@:;=.,\"+_-]{1,20}){0,3}"
}

fn line() -> impl Strategy<Value = Line> {
    (name(), value(), any::<bool>()).prop_map(|(name, value, folded)| Line {
        folded: folded && value.contains(' '),
        name,
        value,
    })
}

fn render(lines: &[Line], lf_only: bool) -> (Vec<u8>, Vec<(String, String)>) {
    let eol = if lf_only { "\n" } else { "\r\n" };
    let mut out = format!("OPTIONS sip:a@192.0.2.1 SIP/2.0{eol}");
    let mut expect = Vec::new();
    for l in lines {
        let v = if l.folded { l.value.replacen(' ', &format!("{eol} "), 1) } else { l.value.clone() };
        out.push_str(&format!("{}: {v}{eol}", l.name));
        expect.push((l.name.clone(), v));
    }
    out.push_str(&format!("Content-Length: 3{eol}{eol}abc"));
    expect.push(("Content-Length".into(), "3".into()));
    (out.into_bytes(), expect)
}

fn headers(b: &[u8]) -> Vec<(String, String)> {
    let m = scan::scan(b).expect("scans");
    m.headers
        .iter()
        .map(|h| {
            (
                String::from_utf8_lossy(m.text(&h.name)).into_owned(),
                String::from_utf8_lossy(m.text(&h.value)).into_owned(),
            )
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Edit {
    Keep,
    Delete,
    Replace(String),
    InsertBefore(Line),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => Just(Edit::Keep),
        1 => Just(Edit::Delete),
        1 => value().prop_map(Edit::Replace),
        1 => line().prop_map(|l| Edit::InsertBefore(Line { folded: false, ..l })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn scan_finds_exactly_the_headers_written(lines in prop::collection::vec(line(), 0..30), lf in any::<bool>()) {
        let (bytes, expect) = render(&lines, lf);
        prop_assert_eq!(headers(&bytes), expect);
        let m = scan::scan(&bytes).unwrap();
        prop_assert_eq!(m.text(&m.body), b"abc");
        // The kind index agrees with the names.
        for h in &m.headers {
            prop_assert_eq!(Kind::of(m.text(&h.name)), h.kind);
        }
    }

    #[test]
    fn splice_then_scan_gives_the_edited_headers(
        lines in prop::collection::vec(line(), 1..25),
        edits in prop::collection::vec(edit(), 25),
        lf in any::<bool>(),
    ) {
        let eol = if lf { "\n" } else { "\r\n" };
        let (bytes, mut expect) = render(&lines, lf);
        let m = scan::scan(&bytes).unwrap();
        let mut s = Splice::new();
        let mut want = Vec::new();
        let mut untouched = Vec::new();
        for (i, h) in m.headers.iter().enumerate() {
            let e = if i + 1 == m.headers.len() { &Edit::Keep } else { &edits[i % edits.len()] };
            match e {
                Edit::Keep => {
                    want.push(expect[i].clone());
                    untouched.push(h.line.clone());
                }
                Edit::Delete => s.delete(h.line.clone()),
                Edit::Replace(v) => {
                    s.replace(h.value.clone(), v.as_bytes());
                    want.push((expect[i].0.clone(), v.clone()));
                }
                Edit::InsertBefore(l) => {
                    s.insert(h.line.start, format!("{}: {}{eol}", l.name, l.value).as_bytes());
                    want.push((l.name.clone(), l.value.clone()));
                    want.push(expect[i].clone());
                    untouched.push(h.line.clone());
                }
            }
        }
        let out = s.apply(&bytes);
        prop_assert_eq!(headers(&out), want);
        // Lines not edited appear in the output byte for byte, in order.
        let mut at = 0;
        for r in untouched {
            let needle = &bytes[r];
            let found = out[at..].windows(needle.len()).position(|w| w == needle);
            prop_assert!(found.is_some(), "line {:?} lost", String::from_utf8_lossy(needle));
            at += found.unwrap() + needle.len();
        }
        expect.clear();
    }
}

/// The value split as the grammar reads it, one byte at a time: a comma splits only outside
/// quotes and `<...>`, and a backslash inside quotes escapes the next byte.
fn split_slowly(b: &[u8]) -> Vec<std::ops::Range<usize>> {
    let (mut out, mut start, mut i) = (Vec::new(), 0, 0);
    let (mut quoted, mut angle) = (false, false);
    while i < b.len() {
        match b[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b',' if !quoted && !angle => {
                out.push(scan::trim(b, start..i));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(scan::trim(b, start..b.len()));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn values_split_as_the_byte_by_byte_reading_does(
        v in prop::collection::vec(prop::sample::select(&b",\"<>\\ a;="[..]), 0..40)
    ) {
        let got: Vec<_> = scan::values(&v, 0..v.len()).collect();
        prop_assert_eq!(got, split_slowly(&v));
    }
}
