//! The decision log (`[log] decisions`, JSON lines) as tests read it: whole lines only, since
//! the writer (off the call path) may be half-way through one, and polled, since it lags the
//! SIP answer.
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a test waits for decision lines to appear.
pub const WAIT: Duration = Duration::from_secs(5);

/// Every complete line of the log at `path`, parsed; a line that is not JSON fails the test.
pub fn read(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    complete
        .lines()
        .map(|l| match serde_json::from_str(l) {
            Ok(v) => v,
            Err(e) => panic!("decision line `{l}` in {}: {e}", path.display()),
        })
        .collect()
}

/// The log once it holds at least `n` lines; fails the test, showing the log, after [`WAIT`].
pub fn wait(path: &Path, n: usize) -> Vec<Value> {
    let lines = until(path, |lines| lines.len() >= n);
    assert!(
        lines.len() >= n,
        "{} has {} decision lines after {WAIT:?}, expected {n}:\n{lines:#?}",
        path.display(),
        lines.len()
    );
    lines
}

/// The log once `done` holds for it, or as it stands after [`WAIT`], for the caller's own
/// assertion to show: lines are written by a thread of their own, so one may land just after
/// the call that made it.
pub fn until(path: &Path, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = read(path);
        if done(&lines) || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(super::POLL);
    }
}

/// A string field of a decision line ("" when absent).
pub fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}
