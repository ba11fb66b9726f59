//! RESP2, the Redis protocol, on a UDP thread's own connection (`direct`): requests packed
//! into the connection's buffer without an allocation per call, and answers framed and
//! read. (The tokio connections use the redis crate's own; a test checks that both pack the
//! same bytes.) Each allocation and copy here was paid once per passed call.

/// Packs one command (an array of bulk strings) at a time, reusing its buffers.
#[derive(Debug, Default)]
pub struct Packer {
    body: Vec<u8>,
    item: Vec<u8>,
    n: usize,
}

impl Packer {
    /// Begin a command with these words.
    pub fn start(&mut self, words: &[&str]) {
        self.body.clear();
        self.n = 0;
        for w in words {
            self.bulk(w.as_bytes());
        }
    }

    pub fn bulk(&mut self, b: &[u8]) {
        self.n += 1;
        self.body.push(b'$');
        self.body.extend_from_slice(itoa::Buffer::new().format(b.len()).as_bytes());
        self.body.extend_from_slice(b"\r\n");
        self.body.extend_from_slice(b);
        self.body.extend_from_slice(b"\r\n");
    }

    /// A bulk string written by `f` (its length is known only after).
    pub fn bulk_with(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        let mut item = std::mem::take(&mut self.item);
        item.clear();
        f(&mut item);
        self.bulk(&item);
        self.item = item;
    }

    pub fn int(&mut self, v: i64) {
        let mut b = itoa::Buffer::new();
        self.bulk(b.format(v).as_bytes());
    }

    pub fn uint(&mut self, v: u64) {
        let mut b = itoa::Buffer::new();
        self.bulk(b.format(v).as_bytes());
    }

    /// Append the command to `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.push(b'*');
        out.extend_from_slice(itoa::Buffer::new().format(self.n).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }
}

/// The length of the first complete RESP2 value in `buf`: `Ok(None)` while it is still
/// incomplete, `Err` when `buf` is not RESP. Linear in the value's length.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, ()> {
    let mut at = 0usize;
    // Values still to read: an array's elements are added as its header is read.
    let mut need: u64 = 1;
    while need > 0 {
        let rest = buf.get(at..).unwrap_or_default();
        let Some(nl) = memchr::memchr(b'\n', rest) else { return Ok(None) };
        let line = rest.get(..nl).and_then(|l| l.strip_suffix(b"\r")).ok_or(())?;
        let (&kind, body) = line.split_first().ok_or(())?;
        at += nl + 1;
        need -= 1;
        match kind {
            b'+' | b'-' | b':' => {}
            b'$' => match int(body)? {
                -1 => {}
                n if n >= 0 => {
                    let n = usize::try_from(n).map_err(|_| ())?;
                    let end = at.checked_add(n).ok_or(())?;
                    match buf.get(end..end + 2) {
                        Some(b"\r\n") => at = end + 2,
                        Some(_) => return Err(()),
                        None => return Ok(None),
                    }
                }
                _ => return Err(()),
            },
            b'*' => match int(body)? {
                -1 => {}
                n if n >= 0 => need += n as u64,
                _ => return Err(()),
            },
            _ => return Err(()),
        }
    }
    Ok(Some(at))
}

fn int(b: &[u8]) -> Result<i64, ()> {
    std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or(())
}

/// A complete frame that is an array of at most `out.len()` integers (what the scripts
/// answer): the integers, in `out`, and how many. None for anything else (an error reply,
/// say), which the caller reads the long way.
pub fn ints(frame: &[u8], out: &mut [i64]) -> Option<usize> {
    fn value(line: Option<&[u8]>, kind: u8) -> Option<i64> {
        int(line?.strip_suffix(b"\r")?.strip_prefix(&[kind])?).ok()
    }
    let mut lines = frame.split(|&b| b == b'\n');
    let n = usize::try_from(value(lines.next(), b'*')?).ok()?;
    for slot in out.get_mut(..n)? {
        *slot = value(lines.next(), b':')?;
    }
    // Nothing after the last one but the end of the frame.
    (lines.next() == Some(b"") && lines.next().is_none()).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_an_array_of_bulk_strings() {
        let mut p = Packer::default();
        let mut out = b"before".to_vec();
        p.start(&["EVALSHA", "ab"]);
        p.int(-1);
        p.uint(u64::MAX);
        p.bulk_with(|b| b.extend_from_slice(b"k{x}"));
        p.finish(&mut out);
        assert_eq!(
            out,
            b"before*5\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$2\r\n-1\r\n$20\r\n18446744073709551615\r\n$4\r\nk{x}\r\n"
        );
        // The next command starts afresh.
        p.start(&["PING"]);
        let mut out = Vec::new();
        p.finish(&mut out);
        assert_eq!(out, b"*1\r\n$4\r\nPING\r\n");
    }

    #[test]
    fn reads_integer_arrays_and_nothing_else() {
        let mut v = [0i64; 7];
        assert_eq!(ints(b"*3\r\n:1\r\n:-2\r\n:30\r\n", &mut v), Some(3));
        assert_eq!(v[..3], [1, -2, 30]);
        assert_eq!(ints(b"*0\r\n", &mut v), Some(0));
        for other in [
            &b"-NOSCRIPT No matching script\r\n"[..],
            b"*2\r\n:1\r\n$1\r\nx\r\n",
            b"*8\r\n:0\r\n:0\r\n:0\r\n:0\r\n:0\r\n:0\r\n:0\r\n:0\r\n",
            b"*2\r\n:1\r\n",
            b"*1\r\n:1\r\n:2\r\n",
            b"*1\r\n:x\r\n",
            b":1\r\n",
            b"",
        ] {
            assert_eq!(ints(other, &mut v), None, "{:?}", String::from_utf8_lossy(other));
        }
    }
}
