//! Quotas shared by several sipguard processes on one Redis (`[cluster] backend = "redis"`),
//! through the real binaries and a redis-server of the test's own: exact caps across nodes
//! (sipp driving three nodes at once, and calls to one callee racing on two nodes), each
//! failure policy with Redis killed or frozen, the write-back of counts made during an
//! outage, and counts that survive a restart (local and Redis backends, SIGTERM and kill -9).
mod common;

use common::raw::sip;
use common::redis::{Redis, RedisCluster, require_redis};
use common::{NextHop, Ports, Signal, Sipguard, Sipp, UdpPeer, http, require_sipp};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);
const OWNED: &str = "account,number\nacct0001,+12125550100\nacct0001,+12125550101\n";

/// `{cluster}` becomes the `[cluster]` keys, `{quota}` the `[screening.quota]` keys.
const TEMPLATE: &str = r#"
[server]
listen = ["udp:127.0.0.1:{udp_port}"]

[upstream]
uri = "sip:127.0.0.1:{upstream_port};transport=udp"

[admin]
listen = "127.0.0.1:{admin_port}"

[log]
level = "info"
decisions = "{dir}/decisions.jsonl"

[screening]
account_header = "X-Account"
trusted_sources = ["127.0.0.1/32"]
caller_id_numbers = "owned.csv"
quota_tz = "UTC"

[screening.quota]
{quota}

[cluster]
{cluster}
"#;

fn config(cluster: &str, quota: &str) -> String {
    TEMPLATE.replace("{cluster}", cluster).replace("{quota}", quota)
}

fn redis_cluster(r: &Redis, extra: &str) -> String {
    format!("backend = \"redis\"\nredis = \"{}\"\ntimeout_ms = 50\n{extra}", r.url())
}

fn node(cfg: &str, ports: Ports) -> Sipguard {
    Sipguard::start_with(cfg, ports, &[("owned.csv", OWNED)])
}

/// Ports for another node that forwards to the same next hop as `first`.
fn same_hop(first: Ports) -> Ports {
    Ports { upstream: first.upstream, ..Ports::allocate() }
}

fn invite(peer: &UdpPeer, id: &str, callee: &str) -> Vec<u8> {
    sip(&format!(
        "INVITE sip:{callee}@127.0.0.1;user=phone SIP/2.0
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{id};rport
         From: <sip:+12125550100@127.0.0.1;user=phone>;tag=f-{id}
         To: <sip:{callee}@127.0.0.1;user=phone>
         Call-ID: {id}@cluster-test
         CSeq: 1 INVITE
         Max-Forwards: 70
         X-Account: acct0001
         Content-Length: 0
        ",
        port = peer.port()
    ))
}

fn callee(i: usize) -> String {
    format!("+1312555{:04}", 1000 + i)
}

/// Send `n` INVITEs (distinct calls and callees, from `first`) one after the other; each
/// is either forwarded to `hop` or refused back to the peer. Returns the refusal codes.
fn place(sg: &Sipguard, hop: &NextHop, tag: &str, first: usize, n: usize) -> Vec<u16> {
    let peer = UdpPeer::bind();
    let mut refused = Vec::new();
    for i in first..first + n {
        let before = hop.received().len();
        peer.send_to(&invite(&peer, &format!("{tag}-{i}"), &callee(i)), sg.udp_addr());
        let deadline = Instant::now() + WAIT;
        loop {
            if hop.received().len() > before {
                break;
            }
            if let Some(d) = peer.recv(Duration::from_millis(5)) {
                let code = d.msg().status().unwrap_or(0);
                if code >= 200 {
                    refused.push(code);
                    break;
                }
            }
            assert!(Instant::now() < deadline, "call {tag}-{i}: neither forwarded nor refused within {WAIT:?}");
        }
    }
    refused
}

fn account(sg: &Sipguard) -> serde_json::Value {
    let (code, body) = http(sg, "GET", "/accounts/acct0001", None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn metric(sg: &Sipguard, series: &str) -> f64 {
    let (_, body) = http(sg, "GET", "/metrics", None);
    body.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(common::POLL);
    }
}

fn count_lines(sg: &Sipguard, needle: &str) -> usize {
    sg.log().lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn three_nodes_driven_by_sipp_admit_exactly_the_daily_cap_between_them() {
    if !require_sipp() || !require_redis() {
        return;
    }
    let redis = Redis::start();
    let cfg = config(&redis_cluster(&redis, "nodes = 3"), "per_day = 25");
    let first = Ports::allocate();
    let nodes = [node(&cfg, first), node(&cfg, same_hop(first)), node(&cfg, same_hop(first))];
    let uas = Sipp::uas("uas_basic.xml", first.upstream);
    // 3 x 20 calls at once, to 60 different callees.
    let runs: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, sg)| {
            let rows: Vec<String> = (0..20).map(|i| format!("acct0001;+12125550100;{}", callee(n * 100 + i))).collect();
            let (target, uas) = (sg.udp_addr(), uas.addr().to_string());
            std::thread::spawn(move || {
                let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
                Sipp::uac_with_calls("uac_screened.xml", target, &rows, &["-m", "20", "-r", "40", "-key", "uas", &uas])
            })
        })
        .collect();
    let mut responses: BTreeMap<u16, u64> = BTreeMap::new();
    for r in runs {
        let stats = r.join().unwrap();
        assert_eq!((stats.successful, stats.failed), (20, 0), "{stats:#?}");
        for (code, n) in stats.responses {
            *responses.entry(code).or_default() += n;
        }
    }
    // 25 calls rang and were answered (200 to the INVITE and to the BYE); 35 refused.
    assert_eq!(responses, BTreeMap::from([(180, 25), (200, 50), (403, 35)]), "{responses:?}");
    assert_eq!(redis.sum("sipguard:{acct0001}:day:*"), 25);
    for sg in &nodes {
        let a = account(sg);
        assert_eq!((a["calls_today"].as_u64(), a["counters"].as_str()), (Some(25), Some("cluster")), "{a}");
        assert_eq!(a["remaining_today"].as_u64(), Some(0), "{a}");
    }
}

#[test]
fn one_callee_called_on_two_nodes_at_the_same_moment_is_called_once() {
    if !require_redis() {
        return;
    }
    let redis = Redis::start();
    let cfg = config(&redis_cluster(&redis, "nodes = 2"), "per_callee_per_day = 1");
    let first = Ports::allocate();
    let (a, b) = (node(&cfg, first), node(&cfg, same_hop(first)));
    let hop = NextHop::bind(first.upstream);
    let (pa, pb) = (UdpPeer::bind(), UdpPeer::bind());
    // 30 callees, each called on both nodes in the same instant (distinct calls).
    for i in 0..30 {
        let c = callee(i);
        pa.send_to(&invite(&pa, &format!("race-a-{i}"), &c), a.udp_addr());
        pb.send_to(&invite(&pb, &format!("race-b-{i}"), &c), b.udp_addr());
    }
    let mut refused = 0;
    let deadline = Instant::now() + WAIT;
    while hop.received().len() + refused < 60 {
        for p in [&pa, &pb] {
            if let Some(d) = p.recv(Duration::from_millis(5))
                && d.msg().status() == Some(403)
            {
                refused += 1;
            }
        }
        assert!(Instant::now() < deadline, "forwarded {} refused {refused}", hop.received().len());
    }
    let got = hop.received();
    let mut callees: Vec<String> =
        got.iter().filter_map(|d| d.msg().start.split(['@', ':']).nth(1).map(str::to_string)).collect();
    callees.sort();
    callees.dedup();
    assert_eq!((got.len(), callees.len(), refused), (30, 30, 30), "each callee reached exactly once");
    assert_eq!(redis.fields("sipguard:{acct0001}:callee_day:*"), 30);
}

#[test]
fn redis_down_with_on_failure_open_forwards_counts_locally_and_writes_back() {
    if !require_redis() {
        return;
    }
    let mut redis = Redis::start();
    let sg = node(&config(&redis_cluster(&redis, "on_failure = \"open\""), "per_day = 100"), Ports::allocate());
    let hop = NextHop::bind(sg.ports().upstream);
    wait_until("connected", WAIT, || metric(&sg, "sipguard_cluster_backend_up") == 1.0);
    assert!(place(&sg, &hop, "before", 0, 5).is_empty());
    assert_eq!(redis.sum("sipguard:{acct0001}:day:*"), 5);
    redis.stop();
    let started = Instant::now();
    assert!(place(&sg, &hop, "during", 10, 4).is_empty(), "open: forwarded while Redis is down");
    assert!(started.elapsed() < Duration::from_secs(2), "no call waits long for a dead Redis");
    assert_eq!(metric(&sg, "sipguard_cluster_backend_up"), 0.0);
    assert!(metric(&sg, "sipguard_cluster_failures_total") >= 1.0);
    assert_eq!(account(&sg)["counters"], "local_only");
    redis.restart();
    // The four calls counted here meanwhile reach Redis: the day's total is right.
    wait_until("write-back", Duration::from_secs(10), || redis.sum("sipguard:{acct0001}:day:*") == 9);
    wait_until("up again", WAIT, || metric(&sg, "sipguard_cluster_backend_up") == 1.0);
    assert!(place(&sg, &hop, "after", 20, 1).is_empty());
    assert_eq!(redis.sum("sipguard:{acct0001}:day:*"), 10);
    let a = account(&sg);
    assert_eq!((a["calls_today"].as_u64(), a["counters"].as_str()), (Some(10), Some("cluster")), "{a}");
    // The outage and the recovery (once Redis has stayed up a while), once each.
    wait_until("recovery logged", WAIT, || count_lines(&sg, "Redis reachable again") == 1);
    assert_eq!(count_lines(&sg, "Redis unreachable"), 1, "{}", sg.log());
}

#[test]
fn a_frozen_redis_with_on_failure_closed_refuses_with_the_quota_response_in_time() {
    if !require_redis() {
        return;
    }
    let redis = Redis::start();
    let sg = node(&config(&redis_cluster(&redis, "on_failure = \"closed\""), "per_day = 100"), Ports::allocate());
    let hop = NextHop::bind(sg.ports().upstream);
    wait_until("connected", WAIT, || metric(&sg, "sipguard_cluster_backend_up") == 1.0);
    assert!(place(&sg, &hop, "before", 0, 2).is_empty());
    redis.freeze();
    let started = Instant::now();
    assert_eq!(place(&sg, &hop, "frozen", 10, 5), vec![403; 5], "closed: the quota rule's response");
    // Three timeouts of 50 ms, then Redis counts as down and calls are refused at once.
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(hop.received().len(), 2);
    let log = sg.dir().join("decisions.jsonl");
    let unavailable = || {
        // Lines, not matches: a refusal names the counter twice (`counter` and `counters`).
        std::fs::read_to_string(&log).unwrap_or_default().lines().filter(|l| l.contains("cluster_unavailable")).count()
    };
    wait_until("5 decisions naming cluster_unavailable", WAIT, || unavailable() == 5);
    redis.resume();
    wait_until("up again", WAIT, || metric(&sg, "sipguard_cluster_backend_up") == 1.0);
    assert!(place(&sg, &hop, "after", 20, 1).is_empty());
    // The reservations that timed out ran when Redis thawed; each was taken back.
    wait_until("late reservations released", WAIT, || redis.sum("sipguard:{acct0001}:day:*") == 3);
}

#[test]
fn on_failure_local_judges_each_node_by_its_share_of_what_is_left() {
    if !require_redis() {
        return;
    }
    let mut redis = Redis::start();
    let sg =
        node(&config(&redis_cluster(&redis, "on_failure = \"local\"\nnodes = 2"), "per_day = 14"), Ports::allocate());
    let hop = NextHop::bind(sg.ports().upstream);
    wait_until("connected", WAIT, || metric(&sg, "sipguard_cluster_backend_up") == 1.0);
    assert!(place(&sg, &hop, "before", 0, 4).is_empty());
    redis.stop();
    // 10 left of 14, two nodes: this one may place 5 more on its own.
    let refused = place(&sg, &hop, "during", 10, 8);
    assert_eq!(refused, vec![403; 3]);
    assert_eq!(hop.received().len(), 9);
    redis.restart();
    wait_until("write-back", Duration::from_secs(10), || redis.sum("sipguard:{acct0001}:day:*") == 9);
    // A second outage: the share is of what is left after the write-back, (14 - 9) / 2.
    wait_until("up again", WAIT, || metric(&sg, "sipguard_cluster_backend_up") == 1.0);
    redis.stop();
    assert_eq!(place(&sg, &hop, "again", 30, 4), vec![403; 2]);
    redis.restart();
    wait_until("second write-back", Duration::from_secs(10), || redis.sum("sipguard:{acct0001}:day:*") == 11);
}

#[test]
fn a_node_restarted_mid_day_keeps_enforcing_the_cap_with_either_backend() {
    if !require_redis() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let with_state = |c: String| format!("{c}\n[state]\ndir = \"{}\"\n", state.path().display());
    // Local backend: SIGTERM saves the counts; kill -9 loses at most the last save period.
    let local = with_state(config("backend = \"local\"", "per_day = 6"));
    let ports = Ports::allocate();
    let hop = NextHop::bind(ports.upstream);
    let mut sg = node(&local, ports);
    assert!(place(&sg, &hop, "one", 0, 2).is_empty());
    sg.send_signal(Signal::Term);
    assert!(sg.wait_exit(WAIT).success());
    drop(sg);
    let sg = node(&local, ports);
    assert!(sg.wait_for_log("counters restored from the last run", WAIT), "{}", sg.log());
    assert_eq!(account(&sg)["calls_today"].as_u64(), Some(2));
    assert!(place(&sg, &hop, "two", 10, 2).is_empty());
    // Saved within the save period: then kill -9.
    let file = state.path().join("counters.json");
    wait_until("counters saved", WAIT, || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains("\"day\":[") && t.contains(",4]"))
    });
    drop(sg);
    let sg = node(&local, ports);
    assert_eq!(place(&sg, &hop, "three", 20, 4), vec![403; 2], "6 in all, across two restarts");
    drop(sg);

    // Redis backend: the counts are in Redis; a restarted node reads them there. (Its own
    // state dir: counts a local-backend run left would be written back to Redis.)
    let redis = Redis::start();
    let state2 = tempfile::tempdir().unwrap();
    let shared = format!(
        "{}\n[state]\ndir = \"{}\"\n",
        config(&redis_cluster(&redis, ""), "per_day = 3"),
        state2.path().display()
    );
    let sg = node(&shared, ports);
    wait_until("connected", WAIT, || metric(&sg, "sipguard_cluster_backend_up") == 1.0);
    assert!(place(&sg, &hop, "four", 30, 2).is_empty());
    drop(sg);
    let sg = node(&shared, ports);
    wait_until("connected", WAIT, || metric(&sg, "sipguard_cluster_backend_up") == 1.0);
    assert_eq!(place(&sg, &hop, "five", 40, 2), vec![403]);
    assert_eq!(redis.sum("sipguard:{acct0001}:day:*"), 3);
}

#[test]
fn check_config_names_bad_cluster_keys_with_their_lines() {
    let bad = config(
        "backend = \"redis\"\nredis = \"http://127.0.0.1:6379\"\ntimeout_ms = 0\non_failure = \"maybe\"",
        "per_day = 1",
    );
    let (code, out, _dir) = common::check_config(&bad, &[("owned.csv", OWNED)]);
    assert_eq!(code, Some(2), "{out}");
    for want in [
        "sipguard.toml:26: cluster.redis \"http://127.0.0.1:6379\": the scheme must be redis:// or rediss://",
        "sipguard.toml:27: cluster.timeout_ms = 0: must be between 1 and 10000",
        "sipguard.toml:28: cluster.on_failure = \"maybe\"",
    ] {
        assert!(out.contains(want), "missing `{want}` in:\n{out}");
    }
    let (code, out, _dir) =
        common::check_config(&config("backend = \"redis\"", "per_day = 1"), &[("owned.csv", OWNED)]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("needs redis = "), "{out}");
}

#[test]
fn a_redis_cluster_of_three_masters_shares_the_caps_of_two_nodes() {
    if !require_redis() {
        return;
    }
    let rc = RedisCluster::start();
    let cluster = format!("backend = \"redis\"\nredis = {}\ntimeout_ms = 200\nnodes = 2", rc.urls());
    let cfg = config(&cluster, "per_day = 7\nper_callee_per_day = 1");
    let first = Ports::allocate();
    let (a, b) = (node(&cfg, first), node(&cfg, same_hop(first)));
    let hop = NextHop::bind(first.upstream);
    for sg in [&a, &b] {
        wait_until("connected", WAIT, || metric(sg, "sipguard_cluster_backend_up") == 1.0);
    }
    // The same callee on both nodes: once. Then 10 more callees: the day cap holds.
    assert!(place(&a, &hop, "a", 0, 1).is_empty());
    assert_eq!(place(&b, &hop, "b", 0, 1), vec![403]);
    let refused = [place(&a, &hop, "a", 1, 5), place(&b, &hop, "b", 6, 5)].concat();
    assert_eq!((hop.received().len(), refused.len()), (7, 4));
    // Every counter of the account lives on one master (one hash slot).
    let holding: Vec<u64> = rc.nodes.iter().map(|n| n.sum("sipguard:{acct0001}:day:*")).collect();
    assert_eq!(holding.iter().sum::<u64>(), 7, "{holding:?}");
    assert_eq!(holding.iter().filter(|&&n| n > 0).count(), 1, "{holding:?}");
    let s = account(&b);
    assert_eq!((s["calls_today"].as_u64(), s["callees_today"].as_u64()), (Some(7), Some(7)), "{s}");
}

/// CLIENT LIST lines of the connections sipguard's UDP threads keep for themselves.
fn udp_clients(r: &Redis) -> Vec<String> {
    let list = r.command(&["CLIENT", "LIST"]).unwrap_or_default();
    list.lines().filter(|l| l.contains("name=sipguard-udp ")).map(str::to_string).collect()
}

#[test]
fn the_udp_thread_reserves_on_a_connection_of_its_own_and_opens_it_again_when_redis_drops_it() {
    if !require_redis() {
        return;
    }
    let redis = Redis::start();
    let cfg = config(&redis_cluster(&redis, ""), "per_day = 9").replace("[upstream]", "udp_threads = 1\n\n[upstream]");
    let sg = node(&cfg, Ports::allocate());
    let hop = NextHop::bind(sg.ports().upstream);
    wait_until("connected", WAIT, || metric(&sg, "sipguard_cluster_backend_up") == 1.0);
    wait_until("the UDP thread's own connection", WAIT, || udp_clients(&redis).len() == 1);
    assert!(place(&sg, &hop, "direct", 0, 4).is_empty());
    let first = udp_clients(&redis);
    assert!(first[0].contains("cmd=evalsha"), "the reservations went on it: {first:?}");
    assert_eq!(redis.sum("sipguard:{acct0001}:day:*"), 4);
    // Redis drops it (its idle `timeout`, CLIENT KILL): that is no outage and no call is
    // lost or counted twice; the next call is reserved through the other connections.
    let id = first[0].split(' ').find_map(|f| f.strip_prefix("id=")).expect("an id").to_string();
    assert_eq!(redis.command(&["CLIENT", "KILL", "ID", &id]).as_deref(), Some(":1"));
    assert!(place(&sg, &hop, "after", 10, 3).is_empty());
    assert_eq!(hop.received().len(), 7);
    assert_eq!(redis.sum("sipguard:{acct0001}:day:*"), 7);
    wait_until("a new connection of its own", WAIT, || {
        udp_clients(&redis).iter().any(|l| !l.starts_with(&format!("id={id} ")))
    });
    assert!(place(&sg, &hop, "again", 20, 2).is_empty());
    assert_eq!(redis.sum("sipguard:{acct0001}:day:*"), 9);
    assert_eq!(count_lines(&sg, "Redis unreachable"), 0, "{}", sg.log());
    // The cap holds through it: 9 a day, 9 placed.
    assert_eq!(place(&sg, &hop, "over", 30, 1), vec![403]);
    assert_eq!(account(&sg)["calls_today"].as_u64(), Some(9), "{}", account(&sg));
}
