//! What call behaviour tracking costs when its state has gone cold between a call's
//! messages, as it has in a proxy where the kernel and other processes run in between:
//!
//!     cargo run --release --example behaviour_cold -- [CALLS] [EVICT_KB] [RUNS]
//!
//! The side-by-side workload's shape: 100 accounts of 10 caller IDs each, a call every
//! 0.5 ms (2000/s) from a random caller ID to a random callee, answered 5 ms after its INVITE
//! and ended by a BYE 200 ms after the answer, with `bench/compare.sh --behaviour`'s rules.
//! Before each message the example reads EVICT_KB of other memory (default 2048, several
//! times L2). Only the behaviour steps are timed (judge and start for the INVITE, the 2xx,
//! the BYE); prints ns per call for each run and their median.
use sipguard::screen::behaviour::{AccountBehaviour, Action, Behaviour, CallEvent, CallRef, Limits};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ACCOUNTS: u64 = 100;
const CALLERS_PER_ACCOUNT: u64 = 10;

#[derive(Clone, Copy)]
enum Step {
    Invite,
    Answer,
    Bye,
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
}

/// xorshift64*: the same calls in every run.
fn next(s: &mut u64) -> u64 {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    s.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn run(calls: u64, evict: &mut [u8]) -> [f64; 3] {
    let limits = Limits {
        min_asr: Some(0.15),
        max_short_call_ratio: Some(1.0),
        max_concurrent: Some(1_000_000),
        max_sequential: Some(1000),
        max_distinct_callees_per_hour: Some(10_000_000),
        action: Action::SuspendCallerId,
        ..Limits::default()
    };
    let b = Behaviour::new(1_000_000);
    let accounts: Vec<Arc<AccountBehaviour>> =
        (0..ACCOUNTS).map(|_| Arc::new(AccountBehaviour::new(limits, 100_000))).collect();
    let mut seed = 0x5eed_u64;
    let ids: Vec<String> = (0..calls).map(|i| format!("{i:016x}-{:08x}@dialer.example", next(&mut seed))).collect();
    let parties: Vec<(u64, u64)> = (0..calls)
        .map(|_| {
            let c = next(&mut seed) % (ACCOUNTS * CALLERS_PER_ACCOUNT);
            (c, 13_000_000_000 + next(&mut seed) % 1_000_000_000)
        })
        .collect();
    let mut steps: Vec<(u64, u64, Step)> = Vec::with_capacity(3 * calls as usize);
    for i in 0..calls {
        let t = i / 2;
        steps.extend([(t, i, Step::Invite), (t + 5, i, Step::Answer), (t + 205, i, Step::Bye)]);
    }
    steps.sort_by_key(|&(t, i, _)| (t, i));
    let mut spent = [Duration::ZERO; 3];
    let mut sink = 0u64;
    for &(t, i, step) in &steps {
        // Other work between messages: the state below is as cold as in the proxy.
        for line in evict.chunks_mut(64) {
            if let Some(b) = line.first_mut() {
                *b = b.wrapping_add(1);
                sink = sink.wrapping_add(u64::from(*b));
            }
        }
        let call = CallRef { call_id: ids[i as usize].as_bytes(), caller_tag: b"dialer-tag" };
        let (c, callee) = parties[i as usize];
        let acct = &accounts[(c / CALLERS_PER_ACCOUNT) as usize];
        let caller = 12_000_000_000 + c;
        let now = at(t);
        let t0 = Instant::now();
        // Every message hashes its call once (the proxy: its verdict cache's key).
        let key = b.key(call);
        let k = match step {
            Step::Invite => {
                // As the screening does: the account's state is fetched when the account is
                // known, the tracker's shard before the account's rules are judged.
                acct.prefetch();
                b.prefetch(key);
                black_box(acct.judge(caller, callee, now));
                black_box(b.start(acct, key, (caller, callee), now, false).ok());
                0
            }
            Step::Answer => {
                b.event(CallEvent::Final { call: key, code: 200 }, now);
                1
            }
            Step::Bye => {
                b.event(CallEvent::Bye { call: key }, now);
                2
            }
        };
        spent[k] += t0.elapsed();
    }
    black_box(sink);
    assert!(b.tracker.is_empty(), "every call ended");
    spent.map(|d| d.as_nanos() as f64 / calls as f64)
}

fn main() {
    let arg = |n: usize, d: u64| std::env::args().nth(n).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (calls, evict_kb, runs) = (arg(1, 20_000), arg(2, 2048), arg(3, 5));
    let mut evict = vec![0u8; evict_kb as usize * 1024];
    let mut v: Vec<[f64; 3]> = (0..runs)
        .map(|_| {
            let [i, a, b] = run(calls, &mut evict);
            println!(
                "{calls} calls, {evict_kb} KB read between messages: {:.0} ns per call \
                 (INVITE {i:.0}, 2xx {a:.0}, BYE {b:.0})",
                i + a + b
            );
            [i, a, b]
        })
        .collect();
    v.sort_by(|x, y| x.iter().sum::<f64>().total_cmp(&y.iter().sum::<f64>()));
    let [i, a, b] = v[v.len() / 2];
    println!("median {:.0} ns per call (INVITE {i:.0}, 2xx {a:.0}, BYE {b:.0})", i + a + b);
}
