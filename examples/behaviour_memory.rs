//! Heap held by call behaviour tracking, counted by a global allocator that sums what is
//! allocated and not yet freed:
//!
//!     cargo run --release --example behaviour_memory -- [N]
//!
//! - per live call: N calls ringing at once from one caller ID (the tracker's entry, its
//!   deadline, the account's share);
//! - per tracked caller ID: N caller IDs of one account, each with one ended call in one
//!   window step (its figures), and in every step of the window (the worst case: 30 buckets).
use sipguard::screen::behaviour::{AccountBehaviour, Behaviour, CallEvent, CallRef, Limits};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

struct Counting;
static HELD: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        HELD.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        HELD.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        HELD.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn held() -> isize {
    HELD.load(Ordering::Relaxed)
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
}

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let ids: Vec<String> = (0..n).map(|i| format!("call-{i}@host")).collect();
    let limits = Limits { max_concurrent: Some(u32::MAX), ..Limits::default() };

    // Live calls, one caller ID.
    let base = held();
    let b = Behaviour::new(n as usize);
    let acct = Arc::new(AccountBehaviour::new(limits, n as usize));
    let empty = held();
    for (i, id) in ids.iter().enumerate() {
        let key = b.key(CallRef { call_id: id.as_bytes(), caller_tag: b"t" });
        let _ = b.start(&acct, key, (12_125_550_100, 13_125_550_000 + 37 * i as u64), at(i as u64), false);
    }
    let live = held() - empty;
    println!("{n} live calls: {} bytes each ({} bytes for the empty tracker)", live / n as isize, empty - base);
    drop((b, acct));

    // Caller IDs with one ended call each, in one step.
    for spread in [false, true] {
        let b = Behaviour::new(n as usize);
        let acct = Arc::new(AccountBehaviour::new(limits, n as usize));
        let before = held();
        let step_ms = 360 * 60_000 / 30;
        for (i, id) in ids.iter().enumerate() {
            let i = i as u64;
            let call = CallRef { call_id: id.as_bytes(), caller_tag: b"t" };
            let caller = 12_000_000_000 + i / if spread { 30 } else { 1 };
            // Spread: each caller ID calls once in each of the window's 30 steps.
            let t = if spread { (i % 30) * step_ms } else { 0 };
            let key = b.key(call);
            let _ = b.start(&acct, key, (caller, 13_125_550_000 + 37 * i), at(t), false);
            b.event(CallEvent::Final { call: key, code: 200 }, at(t + 1));
            b.event(CallEvent::Bye { call: key }, at(t + 2000));
        }
        let callers = if spread { n / 30 } else { n };
        let bytes = held() - before;
        let (c, buckets) = acct.held();
        println!(
            "{callers} caller IDs, {}: {} bytes each ({c} caller IDs, {buckets} buckets held, {} calls still tracked)",
            if spread { "a call in each of 30 steps" } else { "one call in one step" },
            bytes / callers as isize,
            b.tracker.len()
        );
    }
}
