//! The TCP framer. The first two bytes pick a size limit; the rest is a stream. The stream
//! is framed twice: delivered whole, and delivered in chunks cut at points derived from the
//! input (like a TCP connection would). Both deliveries must give the same messages and the
//! same final error, every (skip, len) must be inside the buffer it was computed for, the
//! message must be within the limit, and the framer must not panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sipguard::sip::scan::{FrameError, Framer};

#[derive(Debug, PartialEq)]
enum End {
    /// All input consumed or waiting for more; the bytes left over.
    NeedMore(usize),
    Error(FrameError),
}

/// Frame `stream`, appending to the connection buffer in pieces ending at `cuts`.
fn frame(stream: &[u8], cuts: &[usize], max: usize) -> (Vec<(usize, Vec<u8>)>, End) {
    let mut f = Framer::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut fed = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        let cut = cut.clamp(fed, stream.len());
        buf.extend_from_slice(&stream[fed..cut]);
        fed = cut;
        loop {
            match f.next(&buf, max) {
                Ok(Some((skip, len))) => {
                    assert!(skip.checked_add(len).is_some_and(|e| e <= buf.len()), "({skip},{len}) past {}", buf.len());
                    assert!(len <= max, "message of {len} bytes over the {max} limit");
                    assert!(len > 0, "empty message");
                    assert!(buf[..skip].iter().all(|&b| b == b'\r' || b == b'\n'), "skipped non-CRLF bytes");
                    out.push((skip, buf[skip..skip + len].to_vec()));
                    buf.drain(..skip + len);
                    f.consumed();
                }
                Ok(None) => break,
                Err(e) => return (out, End::Error(e)),
            }
        }
    }
    (out, End::NeedMore(buf.len()))
}

/// Same messages, same end. One allowed difference: a connection whose pending header
/// block passes the limit before its blank line arrives fails `TooLarge { header_len: None }`
/// at once, while the whole delivery sees the complete block and may fail otherwise
/// (Malformed, NoLength, or TooLarge with the header length): both close the connection.
fn same(whole: &(Vec<(usize, Vec<u8>)>, End), split: &(Vec<(usize, Vec<u8>)>, End), cuts: &[usize]) {
    assert_eq!(whole.0, split.0, "messages differ between whole and chunked delivery (cuts {cuts:?})");
    let early = |e: &End| matches!(e, End::Error(FrameError::TooLarge { header_len: None }));
    if early(&split.1) {
        assert!(matches!(whole.1, End::Error(_)), "chunked failed too large, whole gave {:?}", whole.1);
    } else {
        assert_eq!(whole.1, split.1, "final state differs between whole and chunked delivery (cuts {cuts:?})");
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let max = 64 + usize::from(u16::from_le_bytes([data[0], data[1]])) % 70_000;
    let ncuts = usize::from(data[2] % 16);
    let rest = &data[3..];
    let (cut_bytes, stream) = rest.split_at((ncuts * 2).min(rest.len()));
    let mut cuts: Vec<usize> = cut_bytes
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let whole = frame(stream, &[], max);
    let pieces = frame(stream, &cuts, max);
    same(&whole, &pieces, &cuts);
    // Byte-at-a-time delivery, the worst case for rescanning, on short inputs.
    if stream.len() <= 4096 {
        let all: Vec<usize> = (1..stream.len()).collect();
        same(&whole, &frame(stream, &all, max), &all);
    }
});
