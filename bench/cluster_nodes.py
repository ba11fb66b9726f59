#!/usr/bin/env python3
"""One or two sipguard nodes on one Redis (or each on its own local counters), driven by
sipp at a total call rate split evenly between them; what each node costs per passed call
and how long a screened INVITE spends inside a node.

Usage:
  bench/cluster_nodes.py --sipguard BIN [--variants local:1,redis:1,local:2,redis:2]
                         [--rate 2000] [--calls 20000] [--runs 3] [--capture]
                         [--wait-quiet CPUS] [--stall-redis MS] [--workload DIR] [--out DIR]

Variants are BACKEND:NODES. Node i (0-based) listens on UDP 127.0.0.1:507<i> and is driven
by its own sipp UAC on 506<i> at rate/NODES calls/s (calls/NODES calls); one sipp UAS on 5080
answers for every node. Each node gets the configuration of `bench/compare.sh --policy full`
(Record-Route on, relay closed to loopback, bench/sipguard-full.toml.in), an [admin]
listener on a free TCP port (scraped once, after the load), `per_day = 1000000000` under
[screening.quota] for every variant (never reached; without a window cap an account's calls
never wait for Redis, they are counted on the node and written back) and, for the redis backend,
`[cluster] backend = "redis"` on a redis-server this script starts on a free port
(`--save "" --appendonly no`, FLUSHALL before each run). Variants are interleaved inside
each run, their order reversed every other run, so that drift hits them alike.

Per run and variant it records: calls ok/failed per UAC; CPU seconds (user + system, from
/proc) of each node's process group and of redis-server over the UAC run; the node's
/metrics (cluster reservations and failures, sipguard_cluster_reserve_seconds and
sipguard_screen_seconds histograms, UDP receive batches). With --capture, tcpdump records
the UDP datagrams on lo (kernel timestamps, ns) and the script matches each message coming
into a node with the one it sends out (same Call-ID, method/status and CSeq): the time an
INVITE spends in the node (screening, Redis included, and the forward), the same for the
messages of the call the node only relays (200, ACK, BYE, 200), and INVITE -> 200 as the
UAC sees it on the wire. sipp's own response times are whole milliseconds, too coarse for
a 1 ms target. tcpdump costs CPU on the same 2 cores, so CPU figures of --capture runs are
not comparable with runs without it.

--stall-redis MS stops redis-server (SIGSTOP) halfway through the load for MS ms, then lets
it go on (SIGCONT): the forwarding path must not wait for it (see the relayed times and the
longest INVITE), calls go by [cluster] on_failure (open: forwarded and counted on the node),
and the counts made meanwhile are written back, so that Redis's day total is the calls placed.

Uses the shared harness's scenarios and workload generator (../shared/bench, or
SHARED_BENCH). Fixed UDP ports 5060-5061, 5070-5071 and 5080: run one benchmark at a time.
Every process it starts is stopped by its pid. Nothing is written outside --out and a
temporary directory.
"""
import argparse, glob, json, os, re, shutil, signal, socket, statistics, struct, subprocess, sys, tempfile, threading, time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.abspath(os.environ.get("SHARED_BENCH", os.path.join(ROOT, "..", "shared", "bench")))
TICK = os.sysconf("SC_CLK_TCK")
UAC_BASE, NODE_BASE, UAS_PORT = 5060, 5070, 5080


def free_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def udp_bound(port):
    with open("/proc/net/udp") as f:
        next(f)
        return any(int(line.split()[1].split(":")[1], 16) == port for line in f)


def group_cpu(pgid):
    """User + system CPU seconds of every process in the process group."""
    total = 0
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(d + "/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / TICK


def switches(pid):
    """Context switches (voluntary + involuntary) of every thread of a process."""
    n = 0
    for st in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            with open(st) as f:
                n += sum(int(l.split()[1]) for l in f if "ctxt_switches" in l)
        except OSError:
            pass
    return n


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy():
    """CPU seconds the whole machine spent busy (all CPUs, not idle or iowait), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / TICK


def wait_quiet(limit):
    """Wait (up to 10 min) until the machine was busy less than `limit` CPUs over 3 s."""
    deadline = time.time() + 600
    while time.time() < deadline:
        a = machine_busy()
        time.sleep(3)
        if (machine_busy() - a) / 3 < limit:
            return
    print("   the machine did not get quiet within 10 minutes; running anyway", file=sys.stderr)


def stop(p, sig=signal.SIGTERM):
    if p is None or p.poll() is not None:
        return
    try:
        os.killpg(p.pid, sig)
        p.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def series(text, name):
    """[(labels, value)] of one metric name in Prometheus text."""
    out = []
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            m = re.match(re.escape(name) + r"(\{[^}]*\})?\s+(\S+)", line)
            if m:
                out.append((m.group(1) or "", float(m.group(2))))
    return out


def histogram(text, name):
    """(count, sum, [(le, cumulative)]) of a Prometheus histogram."""
    buckets = sorted(
        (float("inf") if re.search(r'le="\+Inf"', l) else float(re.search(r'le="([^"]+)"', l).group(1)), v)
        for l, v in series(text, name + "_bucket"))
    count = sum(v for _, v in series(text, name + "_count"))
    total = sum(v for _, v in series(text, name + "_sum"))
    return count, total, buckets


def bucket_quantile(h, q):
    """The bucket (lo, hi] that holds quantile q, and Prometheus' linear interpolation in it."""
    count, _, buckets = h
    if not count:
        return None
    rank, lo, prev = q * count, 0.0, 0.0
    for le, cum in buckets:
        if cum >= rank:
            est = le if le == float("inf") else lo + (le - lo) * (rank - prev) / max(cum - prev, 1)
            return {"lo": lo, "hi": le, "interp": est}
        lo, prev = le, cum
    return None


def quantiles(xs):
    if not xs:
        return None
    xs = sorted(xs)
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
    return {"n": len(xs), "p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "p999": pick(0.999),
            "max": xs[-1], "mean": sum(xs) / len(xs)}


def read_pcap(path, nodes):
    """Per-message times (us) through the nodes, from a tcpdump capture of lo (ns stamps)."""
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack_from("<I", data, 0)[0]
    if magic not in (0xA1B23C4D, 0xA1B2C3D4):
        raise ValueError(f"{path}: not a little-endian pcap file")
    scale = 1e-9 if magic == 0xA1B23C4D else 1e-6
    linktype = struct.unpack_from("<I", data, 20)[0]
    l2 = {1: 14, 113: 16, 276: 20, 0: 4}[linktype]
    node_ports = {NODE_BASE + i for i in range(nodes)}
    first = {}  # (callid, what, direction) -> time, first occurrence only (retransmissions ignored)
    at = 24
    cid_re = re.compile(rb"\r\n(?:Call-ID|i)\s*:\s*([^\r\n]+)", re.I)
    cseq_re = re.compile(rb"\r\nCSeq\s*:\s*\d+\s+([A-Z]+)", re.I)
    while at + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from("<IIII", data, at)
        pkt = data[at + 16:at + 16 + incl]
        at += 16 + incl
        t = sec + frac * scale
        ip = pkt[l2:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 15) * 4
        sport, dport = struct.unpack_from(">HH", ip, ihl)
        payload = ip[ihl + 8:]
        if dport in node_ports:
            node, direction = dport - NODE_BASE, "in"
        elif sport in node_ports:
            node, direction = sport - NODE_BASE, "out"
        else:
            continue
        m, c = cid_re.search(payload), cseq_re.search(payload)
        if not m or not c:
            continue
        start = payload.split(b" ", 2)
        what = start[1].decode() if start[0].startswith(b"SIP/") else start[0].decode()
        key = (m.group(1).strip(), what, c.group(1).decode().upper(), direction)
        first.setdefault(key, (t, node))
    through = {"INVITE": [], "relayed": []}
    invite_200 = []
    for (cid, what, cseq, direction), (t, node) in first.items():
        if direction != "in":
            continue
        out = first.get((cid, what, cseq, "out"))
        if out is None:
            continue
        dt = (out[0] - t) * 1e6
        through["INVITE" if what == "INVITE" else "relayed"].append(dt)
        if what == "INVITE":
            ok = first.get((cid, "200", "INVITE", "out"))
            if ok is not None:
                invite_200.append((ok[0] - t) * 1e6)
    return {"invite_in_node_us": quantiles(through["INVITE"]), "relayed_in_node_us": quantiles(through["relayed"]),
            "invite_to_200_at_uac_us": quantiles(invite_200)}


def node_config(tmp, workload, i, admin_port, redis_port, state):
    tpl = open(os.path.join(HERE, "sipguard-full.toml.in")).read().replace("@WORKLOAD@", workload)
    if "\n[screening.quota]\n" not in tpl:
        sys.exit("bench/sipguard-full.toml.in has no [screening.quota] for the day cap")
    tpl = tpl.replace("\n[screening.quota]\n", "\n[screening.quota]\nper_day = 1000000000\n", 1)
    cluster = f'\n[cluster]\nbackend = "redis"\nredis = "redis://127.0.0.1:{redis_port}/0"\n' if redis_port else ""
    path = os.path.join(tmp, f"node{i}.toml")
    with open(path, "w") as f:
        f.write(f"""[server]
listen = ["udp:127.0.0.1:{NODE_BASE + i}"]
record_route = true
relay_to = ["127.0.0.1/32"]

[log]
level = "warn"

[state]
dir = "{state}"

[admin]
listen = "127.0.0.1:{admin_port}"
{cluster}
{tpl}""")
    return path


def one_run(a, tmp, backend, nodes, redis, run_dir):
    os.makedirs(run_dir, exist_ok=True)
    for port in [UAS_PORT] + [UAC_BASE + i for i in range(nodes)] + [NODE_BASE + i for i in range(nodes)]:
        if udp_bound(port):
            sys.exit(f"UDP port {port} is in use: another benchmark running?")
    if redis:
        subprocess.run(["redis-cli", "-p", str(redis["port"]), "FLUSHALL"], check=True, stdout=subprocess.DEVNULL)
    procs, uas, cap = [], None, None
    admin = [free_tcp_port() for _ in range(nodes)]
    try:
        uas = subprocess.Popen(["sipp", "-sf", os.path.join(SHARED, "sipp", "uas.xml"), "-i", "127.0.0.1",
                                "-p", str(UAS_PORT), "-nostdin", "-trace_err"], cwd=run_dir,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for i in range(nodes):
            # A fresh [state] dir per node and run: a node restores the counters saved there,
            # and with backend = "redis" writes them back to Redis (counts of the local runs).
            state = tempfile.mkdtemp(prefix=f"state{i}.", dir=tmp)
            conf = node_config(tmp, a.workload, i, admin[i], redis and redis["port"], state)
            shutil.copy(conf, os.path.join(run_dir, f"node{i}.toml"))
            procs.append(subprocess.Popen([a.sipguard, "--config", conf], cwd=tmp,
                                          stdout=open(os.path.join(run_dir, f"node{i}.log"), "w"),
                                          stderr=subprocess.STDOUT, start_new_session=True))
        t0 = time.time()
        for i, p in enumerate(procs):
            while not udp_bound(NODE_BASE + i):
                if p.poll() is not None or time.time() - t0 > 60:
                    sys.exit(f"node {i} did not start; see {run_dir}/node{i}.log")
                time.sleep(0.05)
            if redis:  # connected to Redis before the load
                while not any(v == 1 for _, v in series(metrics(admin[i]), "sipguard_cluster_backend_up")):
                    if time.time() - t0 > 30:
                        sys.exit(f"node {i} did not connect to Redis")
                    time.sleep(0.05)
        time.sleep(1.0)
        if a.capture:
            cap = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-s", "1500", "-B", "131072", "-w",
                                    os.path.join(tmp, "cap.pcap"), "--time-stamp-precision=nano", "udp"],
                                   stdout=subprocess.DEVNULL, stderr=open(os.path.join(run_dir, "tcpdump.log"), "w"),
                                   start_new_session=True)
            time.sleep(1.0)
        cpu0 = [group_cpu(p.pid) for p in procs]
        sw0 = [switches(p.pid) for p in procs]
        r0 = proc_cpu(redis["proc"].pid) if redis else 0.0
        m0, load = machine_busy(), open("/proc/loadavg").read().split()[0]
        t1 = time.time()
        rate, calls = a.rate // nodes, a.calls // nodes
        uacs = []
        for i in range(nodes):
            d = os.path.join(run_dir, f"uac{i}")
            os.makedirs(d, exist_ok=True)
            uacs.append(subprocess.Popen(
                ["sipp", f"127.0.0.1:{NODE_BASE + i}", "-sf", os.path.join(SHARED, "sipp", "uac_pass.xml"),
                 "-inf", os.path.join(a.workload, "calls_pass.csv"), "-key", "uas", f"127.0.0.1:{UAS_PORT}",
                 "-i", "127.0.0.1", "-p", str(UAC_BASE + i), "-r", str(rate), "-m", str(calls),
                 "-l", str(max(rate * 4, 100)), "-nostdin", "-trace_err", "-trace_stat", "-stf", "stat.csv",
                 "-fd", "3600", "-timeout", str(int(calls / rate * 2 + 15)), "-timeout_error"],
                cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        stall = None
        if redis and a.stall_redis:
            def stall_redis():
                os.kill(redis["proc"].pid, signal.SIGSTOP)
                time.sleep(a.stall_redis / 1000)
                os.kill(redis["proc"].pid, signal.SIGCONT)
            stall = threading.Timer(calls / rate / 2, stall_redis)
            stall.start()
        for u in uacs:
            u.wait()
        if stall:
            stall.join()
        wall = time.time() - t1
        cpu1 = [group_cpu(p.pid) for p in procs]
        sw1 = [switches(p.pid) for p in procs]
        r1 = proc_cpu(redis["proc"].pid) if redis else 0.0
        m1 = machine_busy()
        texts = [metrics(port) for port in admin]
        for i, t in enumerate(texts):
            open(os.path.join(run_dir, f"node{i}.metrics"), "w").write(t)
        if cap:
            stop(cap, signal.SIGINT)
        res = {"backend": backend, "nodes": nodes, "rate": a.rate, "calls": a.calls, "wall_s": round(wall, 2),
               "capture": a.capture, "loadavg_before": float(load),
               "machine_busy_cpus": round((m1 - m0) / wall, 2), "per_node": []}
        if redis:
            if a.stall_redis:
                time.sleep(3)  # the nodes write back the calls they counted once Redis is back
                texts = [metrics(port) for port in admin]
                for i, t in enumerate(texts):
                    open(os.path.join(run_dir, f"node{i}.metrics"), "w").write(t)
            days = subprocess.run(["redis-cli", "-p", str(redis["port"]), "--scan", "--pattern", "sipguard:*:day:*"],
                                  capture_output=True, text=True, check=True).stdout.split()
            counted = 0
            for k in days:
                counted += int(subprocess.run(["redis-cli", "-p", str(redis["port"]), "GET", k],
                                              capture_output=True, text=True).stdout.strip() or 0)
            res["redis_cpu_s"] = round(r1 - r0, 3)
            res["redis_day_count"] = counted
        for i in range(nodes):
            rows = [l.split(";") for l in open(os.path.join(run_dir, f"uac{i}", "stat.csv")).read().splitlines()]
            col = {k: j for j, k in enumerate(rows[0])}
            ok, failed = int(rows[-1][col["SuccessfulCall(C)"]]), int(rows[-1][col["FailedCall(C)"]])
            t = texts[i]
            reserve, screen = histogram(t, "sipguard_cluster_reserve_seconds"), histogram(t, "sipguard_screen_seconds")
            msgs = sum(v for l, v in series(t, "sipguard_messages_in_total") if 'transport="udp"' in l)
            batches = sum(v for _, v in series(t, "sipguard_udp_receive_batches_total"))
            cpu = cpu1[i] - cpu0[i]
            res["per_node"].append({
                "ok": ok, "failed": failed, "cpu_s": round(cpu, 3),
                "cpu_us_per_call": round(cpu * 1e6 / max(ok + failed, 1), 1),
                "switches_per_call": round((sw1[i] - sw0[i]) / max(ok + failed, 1), 2),
                "reservations": {l: v for l, v in series(t, "sipguard_cluster_reservations_total")},
                "cluster_failures": {l: v for l, v in series(t, "sipguard_cluster_failures_total")},
                "reserve_count": reserve[0], "reserve_mean_us": reserve[0] and round(reserve[1] / reserve[0] * 1e6, 1),
                "reserve_p50": bucket_quantile(reserve, 0.5), "reserve_p99": bucket_quantile(reserve, 0.99),
                "reserve_buckets": reserve[2],
                "screen_p99": bucket_quantile(screen, 0.99),
                "udp_datagrams_per_batch": round(msgs / batches, 2) if batches else None,
            })
        calls_done = sum(n["ok"] + n["failed"] for n in res["per_node"])
        res["failed"] = sum(n["failed"] for n in res["per_node"])
        res["sipguard_cpu_us_per_call"] = round(sum(n["cpu_s"] for n in res["per_node"]) * 1e6 / max(calls_done, 1), 1)
        if redis:
            res["redis_cpu_us_per_call"] = round(res["redis_cpu_s"] * 1e6 / max(calls_done, 1), 1)
        if cap:
            res["tcpdump"] = open(os.path.join(run_dir, "tcpdump.log")).read().strip().splitlines()[-3:]
            res.update(read_pcap(os.path.join(tmp, "cap.pcap"), nodes))
            os.unlink(os.path.join(tmp, "cap.pcap"))
        return res
    finally:
        stop(cap, signal.SIGINT)
        for p in procs:
            stop(p)
        stop(uas)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sipguard", required=True, help="the sipguard binary")
    ap.add_argument("--variants", default="local:1,redis:1,local:2,redis:2")
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--capture", action="store_true", help="tcpdump lo and measure time through each node")
    ap.add_argument("--wait-quiet", type=float, help="before each run, wait until the machine is busy less than this many CPUs")
    ap.add_argument("--stall-redis", type=int, help="SIGSTOP redis-server for this many ms halfway through the load")
    ap.add_argument("--workload")
    ap.add_argument("--dnc", type=int, default=100000)
    ap.add_argument("--out")
    a = ap.parse_args()
    variants = [(b, int(n)) for b, n in (v.split(":") for v in a.variants.split(","))]
    for b, n in variants:
        if b not in ("local", "redis") or n not in (1, 2):
            sys.exit(f"variant {b}:{n}: BACKEND local|redis, NODES 1|2")
    tmp = tempfile.mkdtemp(prefix="sipguard-nodes.")
    out = os.path.abspath(a.out or os.path.join(ROOT, "target", "bench", "nodes-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())))
    os.makedirs(out, exist_ok=True)
    redis = None
    try:
        if not a.workload:
            a.workload = os.path.join(tmp, "wl")
            subprocess.run([sys.executable, os.path.join(SHARED, "gen_workload.py"), a.workload, "--dnc", str(a.dnc),
                            "--calls", str(a.calls)], check=True, stdout=subprocess.DEVNULL)
        a.workload = os.path.abspath(a.workload)
        if any(b == "redis" for b, _ in variants):
            port = free_tcp_port()
            p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", tmp], stdout=open(os.path.join(out, "redis.log"), "w"),
                                 stderr=subprocess.STDOUT, start_new_session=True)
            redis = {"port": port, "proc": p}
            for _ in range(100):
                if subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True, text=True).stdout.strip() == "PONG":
                    break
                time.sleep(0.1)
            else:
                sys.exit("redis-server did not start")
            # Redis's own idle cost (serverCron at hz 10), to set against its figures under load.
            c0 = proc_cpu(p.pid)
            time.sleep(10)
            redis["idle_cpu_s_per_10s"] = round(proc_cpu(p.pid) - c0, 3)
        results = []
        for run in range(1, a.runs + 1):
            order = variants if run % 2 else list(reversed(variants))
            for b, n in order:
                if a.wait_quiet:
                    wait_quiet(a.wait_quiet)
                print(f"== run {run}/{a.runs}: {b}, {n} node(s), {a.calls} calls at {a.rate}/s"
                      f"{' (capture)' if a.capture else ''}", file=sys.stderr)
                r = one_run(a, tmp, b, n, redis if b == "redis" else None, os.path.join(out, f"{b}-{n}-{run}"))
                r["run"] = run
                json.dump(r, open(os.path.join(out, f"{b}-{n}-{run}.json"), "w"), indent=1)
                line = {k: r.get(k) for k in ("sipguard_cpu_us_per_call", "redis_cpu_us_per_call", "failed", "machine_busy_cpus", "loadavg_before")}
                line["node_us"] = [x["cpu_us_per_call"] for x in r["per_node"]]
                line["switches_per_call"] = [x["switches_per_call"] for x in r["per_node"]]
                line["reserve_p99"] = [x["reserve_p99"] and x["reserve_p99"]["hi"] for x in r["per_node"]]
                if a.capture:
                    line["invite_in_node_p99_us"] = r["invite_in_node_us"] and round(r["invite_in_node_us"]["p99"], 1)
                print("   " + json.dumps(line), file=sys.stderr)
                results.append(r)
        summarize(results, variants, out, redis, a)
    finally:
        if redis:
            stop(redis["proc"])
        shutil.rmtree(tmp, ignore_errors=True)


def summarize(results, variants, out, redis, a):
    med = lambda xs: statistics.median(xs) if xs else None
    rng = lambda xs: f"{min(xs):.1f}-{max(xs):.1f}" if xs else "-"
    summary = {"params": {"rate": a.rate, "calls": a.calls, "runs": a.runs, "capture": a.capture, "nproc": os.cpu_count(),
                          "redis_idle_cpu_s_per_10s": redis and redis["idle_cpu_s_per_10s"]}, "variants": {}}
    print(f"{'variant':<9} {'runs':>4} {'failed':>6} {'us/call/node (median, range)':>30} {'redis us/call':>14} "
          f"{'reserve p99 bucket':>19} {'sw/call':>8}" + ("  INVITE in node p50/p99/p99.9 us   relayed p99 us" if a.capture else ""))
    for b, n in variants:
        rs = [r for r in results if r["backend"] == b and r["nodes"] == n]
        node_us = [x["cpu_us_per_call"] for r in rs for x in r["per_node"]]
        red = [r["redis_cpu_us_per_call"] for r in rs if "redis_cpu_us_per_call" in r]
        p99s = [x["reserve_p99"]["hi"] for r in rs for x in r["per_node"] if x["reserve_p99"]]
        v = {"node_us_per_call": node_us, "node_us_median": med(node_us),
             "switches_per_call": [x["switches_per_call"] for r in rs for x in r["per_node"]],
             "sipguard_us_per_call_total": [r["sipguard_cpu_us_per_call"] for r in rs],
             "redis_us_per_call": red, "redis_us_median": med(red), "reserve_p99_hi": p99s,
             "failed": sum(r["failed"] for r in rs)}
        cap = ""
        if a.capture:
            for k in ("invite_in_node_us", "relayed_in_node_us", "invite_to_200_at_uac_us"):
                v[k] = [r[k] for r in rs if r.get(k)]
            inv = v["invite_in_node_us"]
            rel = v["relayed_in_node_us"]
            cap = (f"  {med([q['p50'] for q in inv]):.0f} / {med([q['p99'] for q in inv]):.0f} / "
                   f"{med([q['p999'] for q in inv]):.0f}  (p99 {rng([q['p99'] for q in inv])})"
                   f"   {med([q['p99'] for q in rel]):.0f}") if inv else ""
        summary["variants"][f"{b}:{n}"] = v
        print(f"{b + ':' + str(n):<9} {len(rs):>4} {v['failed']:>6} {med(node_us) or 0:>15.1f} ({rng(node_us):>11}) "
              f"{(med(red) or 0):>14.1f} {(max(p99s) * 1e6 if p99s else 0):>16.0f} us"
              f" {med(v['switches_per_call']) or 0:>8.2f}" + cap)
    json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
    print(f"JSON: {out}/summary.json")


if __name__ == "__main__":
    main()
