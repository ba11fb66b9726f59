//! The SIP scanner: `scan` must never panic, every span it returns must lie inside the
//! message and be well-formed, and `split_values`/`declared_length` over each header must
//! not panic either and return spans inside the header value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sipguard::sip::scan::{self, StartLine};

fn inside(r: &std::ops::Range<usize>, len: usize) -> bool {
    r.start <= r.end && r.end <= len
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = scan::scan(data) else { return };
    let len = data.len();
    assert!(msg.start_end <= msg.headers_end && msg.headers_end <= len);
    assert!(inside(&msg.body, len) && msg.body.end == len && msg.body.start >= msg.headers_end);
    match &msg.start {
        StartLine::Request { method, uri, version } => {
            for r in [method, uri, version] {
                assert!(inside(r, msg.start_end), "start-line span {r:?} past {}", msg.start_end);
            }
            let _ = (msg.method(), msg.request_uri());
        }
        StartLine::Response { version, .. } => assert!(inside(version, msg.start_end)),
    }
    assert!(msg.headers.len() <= scan::MAX_HEADERS);
    let mut prev_end = msg.start_end;
    for h in &msg.headers {
        // Header lines are disjoint, in order, between the start line and the blank line.
        assert!(inside(&h.line, msg.headers_end) && h.line.start >= prev_end, "{h:?}");
        prev_end = h.line.end;
        assert!(h.name.start >= h.line.start && h.name.end <= h.line.end);
        assert!(h.value.start <= h.value.end && h.value.start >= h.name.end && h.value.end <= h.line.end);
        assert_eq!(scan::Kind::of(msg.text(&h.name)), h.kind);
        for v in scan::split_values(data, h.value.clone()) {
            assert!(v.start <= v.end && v.start >= h.value.start && v.end <= h.value.end, "{v:?} in {h:?}");
        }
        // A value range beyond the message must not panic either.
        let _ = scan::split_values(data, h.value.start..len + 7);
    }
    for kind in [scan::Kind::Via, scan::Kind::From, scan::Kind::To, scan::Kind::CallId, scan::Kind::CSeq] {
        if let Some(first) = msg.first(kind) {
            assert_eq!(first.kind, kind);
            assert_eq!(msg.all(kind).next(), Some(first));
        }
    }
    let _ = scan::declared_length(&msg);
});
