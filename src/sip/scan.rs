//! The byte scanner: finds the start line, each header's name/value span and the body
//! without copying and without an allocation per header (one `Vec` of spans per message).
//! It accepts what RFC 3261 §7.3.1 and §25 allow (LWS before the colon, folded lines,
//! compact names, bare LF line ends) and leaves semantic checks to `check.rs`.

use std::ops::Range;

/// Headers the proxy looks at; everything else is `Other` and passes through untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    ContentLength,
    ContentType,
    Contact,
    Route,
    RecordRoute,
    ProxyRequire,
    ProxyAuthorization,
    PAssertedIdentity,
    Identity,
    Date,
    UserAgent,
    Other,
}

/// `name` equals `full` ignoring case, compared a word at a time (this runs for every
/// header). `full` is lower-case letters and '-', and `name` is token characters only
/// (checked by the scanner), for which OR-ing 0x20 into every byte lower-cases exactly.
fn eq_folded(name: &[u8], full: &[u8]) -> bool {
    const FOLD: u64 = 0x2020_2020_2020_2020;
    let n = name.len();
    if n != full.len() {
        return false;
    }
    let word = |s: &[u8], i: usize| s.get(i..i + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()).map(u64::from_le_bytes);
    let half = |s: &[u8], i: usize| s.get(i..i + 4).and_then(|c| <[u8; 4]>::try_from(c).ok()).map(u32::from_le_bytes);
    if n >= 8 {
        // Whole words, then the last eight bytes (overlapping the previous word).
        let mut i = 0;
        while i + 8 < n {
            if word(name, i).map(|w| w | FOLD) != word(full, i) {
                return false;
            }
            i += 8;
        }
        return word(name, n - 8).map(|w| w | FOLD) == word(full, n - 8);
    }
    if n >= 4 {
        let fold = |w: u32| w | FOLD as u32;
        return half(name, 0).map(fold) == half(full, 0) && half(name, n - 4).map(fold) == half(full, n - 4);
    }
    name.iter().zip(full).all(|(a, b)| a | 0x20 == *b)
}

/// Number of `Kind` variants.
const KINDS: usize = Kind::Other as usize + 1;
// `Message::repeated` has a bit per kind.
const _: () = assert!(KINDS <= 32);
/// `Message::first_of` entry for a kind the message does not have.
const ABSENT: u16 = u16::MAX;

impl Kind {
    /// Classify a header name, full or compact (RFC 3261 §7.3.3, RFC 8224 `y`). The name
    /// must consist of token characters (the scanner checks that first).
    pub fn of(name: &[u8]) -> Kind {
        if name.len() == 1 {
            return match name[0].to_ascii_lowercase() {
                b'v' => Kind::Via,
                b'f' => Kind::From,
                b't' => Kind::To,
                b'i' => Kind::CallId,
                b'm' => Kind::Contact,
                b'l' => Kind::ContentLength,
                b'c' => Kind::ContentType,
                b'y' => Kind::Identity,
                _ => Kind::Other,
            };
        }
        // Dispatch on length first: one case-insensitive compare per header at most.
        let (full, kind): (&[u8], Kind) = match name.len() {
            2 => (b"to", Kind::To),
            3 => (b"via", Kind::Via),
            4 => match name[0] | 0x20 {
                b'f' => (b"from", Kind::From),
                b'c' => (b"cseq", Kind::CSeq),
                _ => (b"date", Kind::Date),
            },
            5 => (b"route", Kind::Route),
            7 => match name[1] | 0x20 {
                b'a' => (b"call-id", Kind::CallId),
                _ => (b"contact", Kind::Contact),
            },
            8 => (b"identity", Kind::Identity),
            10 => (b"user-agent", Kind::UserAgent),
            12 => match name[0] | 0x20 {
                b'm' => (b"max-forwards", Kind::MaxForwards),
                b'c' => (b"content-type", Kind::ContentType),
                _ => (b"record-route", Kind::RecordRoute),
            },
            13 => (b"proxy-require", Kind::ProxyRequire),
            14 => (b"content-length", Kind::ContentLength),
            19 => match name[1] | 0x20 {
                b'r' => (b"proxy-authorization", Kind::ProxyAuthorization),
                _ => (b"p-asserted-identity", Kind::PAssertedIdentity),
            },
            _ => return Kind::Other,
        };
        if eq_folded(name, full) { kind } else { Kind::Other }
    }

    /// Headers that may appear at most once (RFC 3261 §7.3.1 / §20).
    pub const SINGLE_VALUED: [Kind; 7] =
        [Kind::From, Kind::To, Kind::CallId, Kind::CSeq, Kind::MaxForwards, Kind::ContentLength, Kind::ContentType];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    /// The whole header including folded continuation lines and its line end.
    pub line: Range<usize>,
    pub name: Range<usize>,
    /// The value, LWS-trimmed at both ends; may contain folded line breaks inside.
    pub value: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Range<usize>, uri: Range<usize>, version: Range<usize> },
    Response { code: u16, version: Range<usize> },
}

/// A scanned message: spans into the original bytes.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    pub bytes: &'a [u8],
    pub start: StartLine,
    /// End of the start line including its line end (where the first header begins).
    pub start_end: usize,
    pub headers: Vec<Header>,
    /// Index in `headers` of the first header of each kind: the proxy asks for From, To,
    /// Call-ID, CSeq and the top Via many times per message.
    first_of: [u16; KINDS],
    /// Bit `kind as u32` set for each kind that appears more than once.
    repeated: u32,
    /// Where the blank line that ends the headers begins.
    pub headers_end: usize,
    /// Everything after the blank line; Content-Length (checked in `check.rs`) may say
    /// the body is shorter.
    pub body: Range<usize>,
}

/// Why bytes could not be scanned as a SIP message at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("empty message")]
    Empty,
    #[error("message has no end of headers")]
    NoHeaderEnd,
    #[error("malformed start line")]
    StartLine,
    #[error("malformed status code")]
    StatusCode,
    #[error("malformed header line")]
    HeaderLine,
    #[error("too many headers")]
    TooManyHeaders,
}

/// Headers beyond this count make a message a drop: no real call needs them.
pub const MAX_HEADERS: usize = 256;

pub fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Trim LWS (incl. folding line breaks) at both ends of a range.
pub fn trim(bytes: &[u8], mut r: Range<usize>) -> Range<usize> {
    while r.start < r.end && bytes.get(r.start).is_some_and(|&b| is_lws(b)) {
        r.start += 1;
    }
    while r.end > r.start && bytes.get(r.end - 1).is_some_and(|&b| is_lws(b)) {
        r.end -= 1;
    }
    r
}

/// RFC 3261 token characters.
pub fn is_token(b: u8) -> bool {
    TOKEN[b as usize]
}

/// Lookup table for `is_token`, which runs for nearly every byte of names and parameters.
static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~');
        i += 1;
    }
    t
};

/// How many bytes at the start of `s` are parameter-value characters (`PARAM_VALUE`).
pub fn param_value_len(s: &[u8]) -> usize {
    class_len(s, &PARAM_VALUE)
}

/// How many bytes at the start of `s` may stand inside a name-addr's `<...>`: anything
/// but LWS and `<`.
pub fn angle_uri_len(s: &[u8]) -> usize {
    class_len(s, &ANGLE_URI)
}

static ANGLE_URI: [bool; 256] = {
    let mut t = [true; 256];
    t[b' ' as usize] = false;
    t[b'\t' as usize] = false;
    t[b'\r' as usize] = false;
    t[b'\n' as usize] = false;
    t[b'<' as usize] = false;
    t
};

/// The leading run of bytes in a class, tested eight at a time without a branch per byte:
/// parameter values (branches, tags) are the longest runs the parsers walk, and this halves
/// their cost (callgrind: 3.4 instead of 7.7 instructions per byte of a 50-byte branch).
/// Not for short runs such as header names: a run that ends within the first eight bytes
/// is tested twice.
fn class_len(s: &[u8], class: &[bool; 256]) -> usize {
    let mut n = 0;
    while let Some(chunk) = s.get(n..n + 8) {
        if !chunk.iter().fold(true, |all, &b| all & class[b as usize]) {
            break;
        }
        n += 8;
    }
    n + s.get(n..).unwrap_or_default().iter().position(|&b| !class[b as usize]).unwrap_or(s.len() - n)
}

/// The characters of an unquoted parameter value (`gen-value` as token or host, RFC 3261
/// §25.1: token characters, and `[`, `]`, `:` of an IPv6 reference).
static PARAM_VALUE: [bool; 256] = {
    let mut t = TOKEN;
    t[b'[' as usize] = true;
    t[b']' as usize] = true;
    t[b':' as usize] = true;
    t
};

/// The line ends of one message, found in order. The bytes are compared 64 at a time into
/// a bit mask of their '\n' bytes, and each line end is then a trailing-zero count: a
/// `memchr` call per line costs more in its set-up than in its search on 30-80 byte
/// header lines (callgrind on a 13-line INVITE: 960 instructions with `memchr` per line,
/// 670 with the masks).
struct LineEnds<'a> {
    bytes: &'a [u8],
    /// Start of the 64-byte block `mask` covers.
    base: usize,
    /// Bit i set when bytes[base + i] is '\n'.
    mask: u64,
}

impl<'a> LineEnds<'a> {
    fn new(bytes: &'a [u8]) -> LineEnds<'a> {
        LineEnds { bytes, base: 0, mask: newlines(bytes, 0) }
    }

    /// The first '\n' at or after `from`.
    fn find(&mut self, from: usize) -> Option<usize> {
        loop {
            if from >= self.base + 64 {
                self.mask = 0;
            } else if from > self.base {
                self.mask &= u64::MAX << (from - self.base);
            }
            if self.mask != 0 {
                return Some(self.base + self.mask.trailing_zeros() as usize);
            }
            self.base += 64;
            if self.base >= self.bytes.len() {
                return None;
            }
            self.mask = newlines(self.bytes, self.base);
        }
    }

    /// End of the line starting at `from`: (index of the line-end start, index after it).
    fn line_end(&mut self, from: usize) -> Option<(usize, usize)> {
        let nl = self.find(from)?;
        let content_end = if nl > from && self.bytes.get(nl - 1) == Some(&b'\r') { nl - 1 } else { nl };
        Some((content_end, nl + 1))
    }
}

/// The '\n' bytes of the 64 bytes at `base` as a bit mask (zero padding past the end).
fn newlines(bytes: &[u8], base: usize) -> u64 {
    let rest = bytes.get(base..).unwrap_or_default();
    match rest.first_chunk::<64>() {
        Some(block) => newline_mask(block),
        None => {
            let mut block = [0u8; 64];
            if let Some(head) = block.get_mut(..rest.len()) {
                head.copy_from_slice(rest);
            }
            newline_mask(&block)
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn newline_mask(block: &[u8; 64]) -> u64 {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    let mut mask = 0u64;
    for (i, chunk) in block.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is part of every x86-64 CPU; the unaligned load reads the 16 bytes
        // of `chunk`, which are in bounds.
        let bits = unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8))) as u16
        };
        mask |= u64::from(bits) << (16 * i);
    }
    mask
}

#[cfg(not(target_arch = "x86_64"))]
fn newline_mask(block: &[u8; 64]) -> u64 {
    memchr::memchr_iter(b'\n', block).fold(0, |m, i| m | 1 << i)
}

/// Scan a whole message (a UDP datagram or a TCP frame).
pub fn scan(bytes: &[u8]) -> Result<Message<'_>, ScanError> {
    if bytes.is_empty() {
        return Err(ScanError::Empty);
    }
    let mut lines = LineEnds::new(bytes);
    let (sl_end, start_end) = lines.line_end(0).ok_or(ScanError::NoHeaderEnd)?;
    let start = start_line(bytes, 0..sl_end)?;
    // 16 spans (896 bytes) cover a typical INVITE and stay within malloc's per-thread cache
    // of small blocks; a longer message grows the vector.
    let mut headers = Vec::with_capacity(16);
    let mut first_of = [ABSENT; KINDS];
    let mut repeated = 0u32;
    let mut pos = start_end;
    let headers_end;
    loop {
        let (content_end, next) = lines.line_end(pos).ok_or(ScanError::NoHeaderEnd)?;
        if content_end == pos {
            headers_end = pos;
            pos = next;
            break;
        }
        // Folded continuation lines belong to this header.
        let (mut end, mut value_end) = (next, content_end);
        while bytes.get(end).is_some_and(|&b| b == b' ' || b == b'\t') {
            (value_end, end) = lines.line_end(end).ok_or(ScanError::NoHeaderEnd)?;
        }
        // header-name = token, then LWS, then ':' (one pass over the name).
        let line = bytes.get(pos..end).unwrap_or_default();
        let name_len = line.iter().position(|&b| !is_token(b)).unwrap_or(line.len());
        let colon_rel = name_len + line[name_len..].iter().position(|&b| !is_lws(b)).unwrap_or(line.len() - name_len);
        if name_len == 0 || line.get(colon_rel) != Some(&b':') {
            return Err(ScanError::HeaderLine);
        }
        let (name, colon) = (pos..pos + name_len, pos + colon_rel);
        if headers.len() == MAX_HEADERS {
            return Err(ScanError::TooManyHeaders);
        }
        let kind = Kind::of(&bytes[name.clone()]);
        if first_of[kind as usize] == ABSENT {
            // Below MAX_HEADERS, so it fits.
            first_of[kind as usize] = headers.len() as u16;
        } else {
            repeated |= 1 << kind as u32;
        }
        // The value ends before the last line end (trim takes what LWS is left).
        let value = trim(bytes, colon + 1..value_end.max(colon + 1));
        headers.push(Header { kind, line: pos..end, name, value });
        pos = end;
    }
    Ok(Message { bytes, start, start_end, headers, first_of, repeated, headers_end, body: pos..bytes.len() })
}

fn start_line(bytes: &[u8], r: Range<usize>) -> Result<StartLine, ScanError> {
    let line = &bytes[r.clone()];
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp = line.iter().position(|&b| b == b' ').ok_or(ScanError::StartLine)?;
        let code_bytes = line.get(sp + 1..sp + 4).ok_or(ScanError::StatusCode)?;
        let after = line.get(sp + 4).copied();
        if !code_bytes.iter().all(u8::is_ascii_digit) || !matches!(after, None | Some(b' ')) {
            return Err(ScanError::StatusCode);
        }
        let code = code_bytes.iter().fold(0u16, |a, &d| a * 10 + u16::from(d - b'0'));
        if !(100..=699).contains(&code) {
            return Err(ScanError::StatusCode);
        }
        return Ok(StartLine::Response { code, version: r.start..r.start + sp });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly two single spaces.
    let mut parts = line.split(|&b| b == b' ');
    let (m, u, v) = (parts.next(), parts.next(), parts.next());
    let (Some(m), Some(u), Some(v), None) = (m, u, v, parts.next()) else {
        return Err(ScanError::StartLine);
    };
    if m.is_empty() || u.is_empty() || v.is_empty() || !m.iter().all(|&b| is_token(b)) {
        return Err(ScanError::StartLine);
    }
    let ms = r.start;
    let us = ms + m.len() + 1;
    let vs = us + u.len() + 1;
    Ok(StartLine::Request { method: ms..ms + m.len(), uri: us..us + u.len(), version: vs..vs + v.len() })
}

impl<'a> Message<'a> {
    pub fn text(&self, r: &Range<usize>) -> &'a [u8] {
        self.bytes.get(r.clone()).unwrap_or_default()
    }

    pub fn method(&self) -> &'a [u8] {
        match &self.start {
            StartLine::Request { method, .. } => self.text(method),
            StartLine::Response { .. } => b"",
        }
    }

    pub fn request_uri(&self) -> &'a [u8] {
        match &self.start {
            StartLine::Request { uri, .. } => self.text(uri),
            StartLine::Response { .. } => b"",
        }
    }

    pub fn first(&self, kind: Kind) -> Option<&Header> {
        self.headers.get(usize::from(self.first_of[kind as usize]))
    }

    /// Index in `headers` of the first header of this kind.
    pub fn first_index(&self, kind: Kind) -> Option<usize> {
        let i = usize::from(self.first_of[kind as usize]);
        (i < self.headers.len()).then_some(i)
    }

    /// Does the message have more than one header of this kind?
    pub fn repeats(&self, kind: Kind) -> bool {
        self.repeated & (1 << kind as u32) != 0
    }

    pub fn value(&self, kind: Kind) -> Option<&'a [u8]> {
        self.first(kind).map(|h| self.text(&h.value))
    }

    /// Every header of this kind, in order. Walks the headers only from the first of the
    /// kind, and only when there is more than one.
    pub fn all(&self, kind: Kind) -> impl Iterator<Item = &Header> + '_ {
        let start = self.first_index(kind).unwrap_or(self.headers.len());
        let end = if self.repeats(kind) { self.headers.len() } else { (start + 1).min(self.headers.len()) };
        self.headers.get(start..end).unwrap_or_default().iter().filter(move |h| h.kind == kind)
    }

    /// The header named `name` (case-insensitive), for configurable headers like X-Account.
    /// Names equal but for case have one kind, so the kind is compared first.
    pub fn named(&self, name: &str) -> Option<&'a [u8]> {
        let kind = Kind::of(name.as_bytes());
        self.headers
            .iter()
            .find(|h| h.kind == kind && self.text(&h.name).eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| self.text(&h.value))
    }
}

/// The values of one header line; almost always few enough to need no allocation.
pub type Values = smallvec::SmallVec<[Range<usize>; 4]>;

/// Split a header value into its comma-separated values (outside quotes and `<...>`),
/// yielding LWS-trimmed absolute ranges.
pub fn split_values(bytes: &[u8], r: Range<usize>) -> Values {
    values(bytes, r).collect()
}

/// The comma-separated values of a header value, one at a time, without collecting them:
/// for callers that look at the first few, count them or stop early.
pub fn values(bytes: &[u8], r: Range<usize>) -> ValueIter<'_> {
    let end = r.end.min(bytes.len());
    let start = r.start.min(end);
    // Most values have no comma, quote or angle bracket at all: one vector scan decides.
    let simple = memchr::memchr3(b',', b'"', b'<', &bytes[start..end]).is_none();
    ValueIter { bytes, pos: start, end, simple, done: false }
}

pub struct ValueIter<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
    simple: bool,
    done: bool,
}

impl Iterator for ValueIter<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        if self.done {
            return None;
        }
        let b = self.bytes;
        let start = self.pos;
        if self.simple {
            self.done = true;
            return Some(trim(b, start..self.end));
        }
        // Jump from one byte that can change the state to the next: inside quotes only `\`
        // and `"` matter, inside `<...>` only `"` and `>`, elsewhere `,` `"` and `<`.
        let (mut quoted, mut angle) = (false, false);
        let mut i = start;
        while let Some(rest) = b.get(i..self.end) {
            let hit = if quoted {
                memchr::memchr2(b'\\', b'"', rest)
            } else if angle {
                memchr::memchr2(b'"', b'>', rest)
            } else {
                memchr::memchr3(b',', b'"', b'<', rest)
            };
            let Some(at) = hit.map(|h| i + h) else { break };
            // Past the byte found; past the escaped one too after a backslash.
            i = at + 1;
            match b.get(at) {
                Some(b'\\') => i += 1,
                Some(b'"') => quoted = !quoted,
                Some(b'<') => angle = true,
                Some(b'>') => angle = false,
                _ => {
                    self.pos = at + 1;
                    return Some(trim(b, start..at));
                }
            }
        }
        self.done = true;
        Some(trim(b, start..self.end))
    }
}

/// Parse a non-negative decimal scalar with leading zeros allowed; `None` on anything else
/// or on overflow past `max`.
pub fn parse_uint(bytes: &[u8], max: u64) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    (v <= max).then_some(v)
}

/// Why a Content-Length cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LengthError {
    #[error("malformed Content-Length")]
    Malformed,
    #[error("more than one Content-Length header")]
    Duplicate,
}

/// The one Content-Length rule, for datagrams and streams, requests and responses: the
/// value of the only Content-Length header (full or compact name, folded or not), a
/// decimal number. None when there is none.
pub fn declared_length(msg: &Message<'_>) -> Result<Option<u64>, LengthError> {
    let Some(first) = msg.first(Kind::ContentLength) else { return Ok(None) };
    if msg.repeats(Kind::ContentLength) {
        return Err(LengthError::Duplicate);
    }
    parse_uint(msg.text(&first.value), u64::MAX).map(Some).ok_or(LengthError::Malformed)
}

/// Why a stream cannot be framed; the connection is closed after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A header block that does not scan, or a bad or duplicated Content-Length.
    Malformed,
    /// No Content-Length: mandatory on streams (RFC 3261 §18.3).
    NoLength,
    /// The message would exceed the size limit. `header_len`: the complete header block's
    /// length, when there is one (the request can still be answered 413).
    TooLarge { header_len: Option<usize> },
}

/// Frames messages on a stream by Content-Length, incrementally: bytes already searched
/// for the end of the headers are not searched again, and a header block is scanned once,
/// so the cost per connection is linear in what it receives however it is split.
#[derive(Debug, Default)]
pub struct Framer {
    /// Bytes of the buffer already searched for the blank line.
    searched: usize,
    /// Once the headers are complete: (leading CRLFs, whole message length).
    pending: Option<(usize, usize)>,
}

impl Framer {
    /// The first complete message in `buf` as (leading keep-alive bytes to skip, message
    /// length), or None when more bytes are needed. Call `consumed` after taking it.
    pub fn next(&mut self, buf: &[u8], max: usize) -> Result<Option<(usize, usize)>, FrameError> {
        if let Some((skip, len)) = self.pending {
            return Ok((buf.len() >= skip + len).then_some((skip, len)));
        }
        let skip = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
        let from = self.searched.saturating_sub(3).max(skip);
        let Some(end) = find_blank_line(buf, from) else {
            self.searched = buf.len();
            if buf.len() - skip > max {
                return Err(FrameError::TooLarge { header_len: None });
            }
            return Ok(None);
        };
        let header_len = end - skip;
        let head = scan(&buf[skip..end]).map_err(|_| FrameError::Malformed)?;
        let body = match declared_length(&head) {
            Ok(Some(n)) => n,
            Ok(None) => return Err(FrameError::NoLength),
            Err(_) => return Err(FrameError::Malformed),
        };
        if header_len as u64 + body > max as u64 {
            return Err(FrameError::TooLarge { header_len: Some(header_len) });
        }
        let len = header_len + body as usize;
        self.pending = Some((skip, len));
        Ok((buf.len() >= skip + len).then_some((skip, len)))
    }

    /// The message returned by `next` was taken off the front of the buffer.
    pub fn consumed(&mut self) {
        *self = Framer::default();
    }
}

/// Index just past the blank line (CRLFCRLF or LFLF) that ends the headers, searching from
/// `from`.
fn find_blank_line(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(rel) = b.get(i..).and_then(|s| memchr::memchr(b'\n', s)) {
        let nl = i + rel;
        match (b.get(nl + 1), b.get(nl + 2)) {
            (Some(b'\n'), _) => return Some(nl + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:+12125550100@10.0.0.2:5080 SIP/2.0\r\n\
v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: <sip:+12125550100@10.0.0.2>\r\n\
f: \"Caller\" <sip:+12125550199@10.0.0.1>;tag=1928301774\r\n\
i: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
X-Folded: one,\r\n  two\r\n\
l: 4\r\n\
\r\n\
abcd";

    #[test]
    fn scans_compact_and_folded_headers() {
        let m = scan(INVITE).unwrap();
        assert_eq!(m.method(), b"INVITE");
        assert_eq!(m.request_uri(), b"sip:+12125550100@10.0.0.2:5080");
        assert_eq!(m.value(Kind::Via), Some(&b"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds"[..]));
        assert_eq!(m.value(Kind::CallId), Some(&b"a84b4c76e66710"[..]));
        assert_eq!(m.value(Kind::ContentLength), Some(&b"4"[..]));
        assert_eq!(m.named("x-folded"), Some(&b"one,\r\n  two"[..]));
        assert_eq!(m.text(&m.body), b"abcd");
        assert_eq!(m.headers.len(), 8);
    }

    #[test]
    fn line_ends_match_a_plain_search_across_blocks() {
        for len in [0, 1, 2, 63, 64, 65, 127, 128, 129, 200] {
            for step in [1, 2, 7, 63, 64, 65, 100] {
                let bytes: Vec<u8> = (0..len).map(|i| if i % step == step - 1 { b'\n' } else { b'x' }).collect();
                let mut lines = LineEnds::new(&bytes);
                let mut from = 0;
                loop {
                    let want = bytes.iter().skip(from).position(|&b| b == b'\n').map(|p| from + p);
                    assert_eq!(lines.find(from), want, "len {len} step {step} from {from}");
                    match want {
                        Some(nl) => from = nl + 1 + (nl % 3), // also skip ahead past line ends
                        None => break,
                    }
                }
            }
        }
    }

    #[test]
    fn class_runs_match_a_byte_by_byte_count() {
        let text = b"Content-Length: 12;branch=z9hG4bK-sg0123456789abcdef;x=[2001:db8::1]:5060 end<sip:a@b>\r\n";
        for start in 0..text.len() {
            for end in start..=text.len() {
                let s = &text[start..end];
                let pv = s.iter().take_while(|&&b| is_token(b) || b"[]:".contains(&b)).count();
                assert_eq!(param_value_len(s), pv, "{start}..{end}");
                let au = s.iter().take_while(|&&b| !is_lws(b) && b != b'<').count();
                assert_eq!(angle_uri_len(s), au, "{start}..{end}");
            }
        }
    }

    #[test]
    fn all_of_a_kind_in_order() {
        let m = scan(b"OPTIONS sip:a@b SIP/2.0\r\nVia: one\r\nTo: t\r\nv: two\r\nX: x\r\nVia: three\r\n\r\n").unwrap();
        let values: Vec<&[u8]> = m.all(Kind::Via).map(|h| m.text(&h.value)).collect();
        assert_eq!(values, [&b"one"[..], b"two", b"three"]);
        assert!(m.repeats(Kind::Via) && !m.repeats(Kind::To));
        assert_eq!(m.all(Kind::To).count(), 1);
        assert_eq!(m.all(Kind::Route).count(), 0);
        assert_eq!((m.first_index(Kind::To), m.first_index(Kind::Route)), (Some(1), None));
    }

    #[test]
    fn header_kinds() {
        for (name, kind) in [
            ("Via", Kind::Via),
            ("FROM", Kind::From),
            ("to", Kind::To),
            ("Call-ID", Kind::CallId),
            ("CSeq", Kind::CSeq),
            ("Max-Forwards", Kind::MaxForwards),
            ("content-length", Kind::ContentLength),
            ("Content-Type", Kind::ContentType),
            ("Contact", Kind::Contact),
            ("Route", Kind::Route),
            ("Record-Route", Kind::RecordRoute),
            ("Proxy-Require", Kind::ProxyRequire),
            ("Proxy-Authorization", Kind::ProxyAuthorization),
            ("P-Asserted-Identity", Kind::PAssertedIdentity),
            ("Identity", Kind::Identity),
            ("Date", Kind::Date),
            ("User-Agent", Kind::UserAgent),
            ("y", Kind::Identity),
            ("v", Kind::Via),
            ("Subject", Kind::Other),
            ("Vias", Kind::Other),
            ("Call-IX", Kind::Other),
            ("x", Kind::Other),
            ("Content-Typf", Kind::Other),
            ("p-asserted-identitx", Kind::Other),
        ] {
            assert_eq!(Kind::of(name.as_bytes()), kind, "{name}");
        }
    }

    #[test]
    fn request_line_must_have_single_spaces() {
        assert_eq!(scan(b"INVITE  sip:a@b SIP/2.0\r\n\r\n").unwrap_err(), ScanError::StartLine);
        assert_eq!(scan(b"INVITE sip:a@b SIP/2.0 \r\n\r\n").unwrap_err(), ScanError::StartLine);
        assert_eq!(scan(b"INVITE sip:a@b\r\n\r\n").unwrap_err(), ScanError::StartLine);
    }

    #[test]
    fn status_codes() {
        assert!(matches!(scan(b"SIP/2.0 200 OK\r\n\r\n").unwrap().start, StartLine::Response { code: 200, .. }));
        assert!(matches!(scan(b"SIP/2.0 100 \r\n\r\n").unwrap().start, StartLine::Response { code: 100, .. }));
        assert_eq!(scan(b"SIP/2.0 4294967301 x\r\n\r\n").unwrap_err(), ScanError::StatusCode);
        assert_eq!(scan(b"SIP/2.0 099 x\r\n\r\n").unwrap_err(), ScanError::StatusCode);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for input in
            [&b""[..], b"\r\n", b"x", b"INVITE sip:a SIP/2.0\r\nNoColon\r\n\r\n", b"SIP/2.0", b"A B C\r\n: v\r\n\r\n"]
        {
            assert!(scan(input).is_err(), "{input:?}");
        }
    }

    #[test]
    fn values_split_outside_quotes_and_angles() {
        let b = b"\"a,b\" <sip:x@y;p=1,2>;q=1 , <sip:z>";
        let v = split_values(b, 0..b.len());
        assert_eq!(v.len(), 2);
        assert_eq!(&b[v[1].clone()], b"<sip:z>");
    }

    fn frame(buf: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
        Framer::default().next(buf, 1 << 16)
    }

    #[test]
    fn tcp_framing() {
        let msg = b"OPTIONS sip:a@b SIP/2.0\r\nl: 3\r\n\r\nabcNEXT";
        assert_eq!(frame(msg).unwrap(), Some((0, msg.len() - 4)));
        assert_eq!(frame(&msg[..20]).unwrap(), None);
        assert_eq!(frame(b"\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n").unwrap(), Some((4, 46)));
        assert_eq!(frame(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n"), Err(FrameError::Malformed));
        assert_eq!(
            frame(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n"),
            Err(FrameError::NoLength),
            "no Content-Length on a stream"
        );
        // The same rule as for datagrams: one Content-Length, folded allowed, duplicates refused.
        assert_eq!(frame(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length:\r\n 2\r\n\r\nab").unwrap(), Some((0, 50)));
        assert_eq!(frame(b"OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\nContent-Length: 5\r\n\r\n"), Err(FrameError::Malformed));
        // Declaring more than the limit is refused at once, with the header block's length.
        let big = b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 10000000\r\n\r\n";
        assert_eq!(frame(big), Err(FrameError::TooLarge { header_len: Some(big.len()) }));
    }

    #[test]
    fn framing_byte_by_byte_searches_each_byte_once() {
        let msg = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\nContent-Length: 4\r\n\r\nbody";
        let mut f = Framer::default();
        for n in 1..msg.len() {
            assert_eq!(f.next(&msg[..n], 1 << 16).unwrap(), None, "{n}");
            assert!(f.searched <= n);
        }
        assert_eq!(f.next(msg, 1 << 16).unwrap(), Some((0, msg.len())));
        f.consumed();
        assert_eq!(f.next(b"", 1 << 16).unwrap(), None);
        // Headers that never end: refused once past the limit.
        let mut f = Framer::default();
        let endless = vec![b'x'; 70_000];
        assert_eq!(f.next(&endless, 65_535), Err(FrameError::TooLarge { header_len: None }));
    }

    #[test]
    fn scalars() {
        assert_eq!(parse_uint(b"0068", 255), Some(68));
        assert_eq!(parse_uint(b"300", 255), None);
        assert_eq!(parse_uint(b"-1", 255), None);
        assert_eq!(parse_uint(b"36893488147419103232", u64::MAX), None);
    }
}
