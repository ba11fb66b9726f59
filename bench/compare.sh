#!/usr/bin/env bash
# Side-by-side benchmark: sipguard vs Kamailio vs the floor relay, in one run on one machine,
# so that the figures compared are ratios taken under the same conditions.
#
# Usage: bench/compare.sh [--policy pass-through|full] [--rate CPS] [--calls N] [--dnc N]
#                         [--systems sipguard,kamailio,floor] [--scenarios pass,reject]
#                         [--runs N] [--out DIR] [--workload DIR] [--udp-batch-wait US]
#                         [--udp-threads N] [--cluster local|redis|local,redis]
#                         [--wait-quiet CPUS] [--behaviour] [--dialogs] [--ops] [--pgo]
#
# --udp-batch-wait sets sipguard's server.udp_batch_wait_us (default: the built-in 500);
# --udp-threads its server.udp_threads (default: half the CPUs, at least 1);
# --cluster where sipguard keeps its quota counters (default local): with redis, a
# redis-server of this script's own on a free port and `[cluster] backend = "redis"`;
# with local,redis both, interleaved like systems ("sipguard" and "sipguard-redis").
# With redis in the list, every sipguard variant also gets `per_day = 1000000000` under
# [screening.quota] (never reached): an account without a window cap never waits for
# Redis (its calls are counted on the node and written back), so without it the redis
# variant would not make the per-call round trip this measures.
# --wait-quiet: before each run, wait (up to 10 min) until the machine was busy less than
# CPUS CPUs over 3 s (other tenants' builds), e.g. 0.3.
# The summary gives each ratio twice: of the systems' medians, and as the median of the runs'
# own ratios (each run measures the systems back to back, so a pair shares the host's state),
# and from 6 runs on an interval for the latter (sign test, about 95 %): a hold is shown met
# when that interval's top is under it.
# --behaviour (with --policy full): sipguard also tracks call behaviour with every rule of
# [screening.behaviour] on and none tripping for the workload's calls (all answered), so the
# pass figure includes tracking each INVITE and its 200. The BYE ends a tracked call only
# when it proves its dialog, which the shared scenarios never do (see --dialogs): without
# --dialogs every call stays tracked as answered.
# --dialogs: run a copy of the shared harness whose UAS copies Record-Route into its 200 and
# whose UAC sends ACK and BYE with the Route set it learnt, as user agents do (RFC 3261
# §12.1). sipguard then checks each ACK's and BYE's Record-Route MAC, and with --behaviour
# each call ends with its duration. Every system runs the same copy.
# --ops: sipguard also serves its admin API (metrics recorded, on a free loopback port) and
# writes the decision log, as a production config does.
# --pgo: measure the profile-guided build that README.md names for production
# (bench/pgo.sh: target/pgo/release/sipguard), made first unless it was built from this tree
# (`bench/pgo.sh --if-stale`).
# SIPGUARD_BIN=PATH runs that sipguard binary instead of building one.
# Uses the shared harness in ../shared/bench (override with SHARED_BENCH=...), which binds the
# fixed ports 5060 (UAC), 5070 (system under test) and 5080 (UAS) on 127.0.0.1: run one
# benchmark at a time. Nothing is written outside --out and a temporary directory (and, with
# --pgo, bench/pgo.sh's target directories).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=$(cd "${SHARED_BENCH:-$ROOT/../shared/bench}" && pwd)

policy=pass-through
rate=2000
calls=20000
dnc=100000
systems=sipguard,kamailio,floor
scenarios=pass,reject
runs=1
out=""
workload=""
batch_wait=""
udp_threads=""
cluster=local
quiet=""
behaviour=""
dialogs=""
pgo=""
ops=""
build=release

usage() { sed -n '4,44p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --policy) policy=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --calls) calls=$2; shift 2 ;;
    --dnc) dnc=$2; shift 2 ;;
    --systems) systems=$2; shift 2 ;;
    --scenarios) scenarios=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --workload) workload=$2; shift 2 ;;
    --udp-batch-wait) batch_wait=$2; shift 2 ;;
    --udp-threads) udp_threads=$2; shift 2 ;;
    --cluster) cluster=$2; shift 2 ;;
    --wait-quiet) quiet=$2; shift 2 ;;
    --behaviour) behaviour=1; shift ;;
    --dialogs) dialogs=1; shift ;;
    --pgo) pgo=1; shift ;;
    --ops) ops=1; shift ;;
    -h|--help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
case "$policy" in pass-through|full) ;; *) echo "--policy must be pass-through or full" >&2; exit 2 ;; esac
for tool in sipp python3; do
  command -v "$tool" >/dev/null || { echo "$tool not found (apt-get install sip-tester python3)" >&2; exit 1; }
done
has() { [[ ",$systems," == *",$1,"* ]]; }
IFS=, read -r -a cluster_list <<<"$cluster"
for c in "${cluster_list[@]}"; do
  case "$c" in local|redis) ;; *) echo "--cluster takes local, redis or local,redis" >&2; exit 2 ;; esac
done
redis_on() { has sipguard && [[ ",$cluster," == *",redis,"* ]]; }
if redis_on; then
  for tool in redis-server redis-cli; do
    command -v "$tool" >/dev/null || { echo "$tool not found (apt-get install redis-server)" >&2; exit 1; }
  done
fi
if has kamailio && ! command -v kamailio >/dev/null; then
  echo "kamailio not found (apt-get install kamailio)" >&2; exit 1
fi

tmp=$(mktemp -d -t sipguard-bench.XXXXXX)
redis_pid=""
cleanup() {
  if [[ -n "$redis_pid" ]]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
# --dialogs: the harness copy, with the two scenario changes made in place (and checked).
if [[ -n "$dialogs" ]]; then
  cp -r "$SHARED" "$tmp/harness"
  python3 - "$tmp/harness/sipp" <<'EOF3'
import sys
d = sys.argv[1]
def edit(name, old, new, count):
    p = f"{d}/{name}"
    s = open(p).read()
    if s.count(old) < count:
        sys.exit(f"--dialogs: {name} no longer has {old!r} {count} times")
    open(p, "w").write(s.replace(old, new))
edit("uas.xml", "[last_CSeq:]\n      Contact", "[last_CSeq:]\n      [last_Record-Route:]\n      Contact", 1)
edit("uac_pass.xml", '<recv response="200" rtd="true"/>', '<recv response="200" rtd="true" rrs="true"/>', 1)
edit("uac_pass.xml", "Max-Forwards: 70\n      Content-Length: 0", "[routes]\n      Max-Forwards: 70\n      Content-Length: 0", 2)
EOF3
  SHARED=$tmp/harness
fi
out=${out:-$ROOT/target/bench/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# (a) builds. The floor relay's target dir sits outside ../shared, which may be read-only.
if [[ -n "$pgo" ]]; then
  has sipguard || { echo "--pgo measures sipguard: add it to --systems" >&2; exit 2; }
  [[ -z "${SIPGUARD_BIN:-}" ]] || { echo "--pgo and SIPGUARD_BIN: give one of them" >&2; exit 2; }
  echo "== sipguard profile-guided (bench/pgo.sh --if-stale)" >&2
  sipguard_bin=$("$ROOT/bench/pgo.sh" --if-stale | tail -1)
  [[ -x "$sipguard_bin" ]] || { echo "bench/pgo.sh gave no binary" >&2; exit 1; }
  echo "== sipguard: $sipguard_bin (profile-guided)" >&2
  build=pgo
elif has sipguard && [[ -n "${SIPGUARD_BIN:-}" ]]; then
  sipguard_bin=$(cd "$(dirname "$SIPGUARD_BIN")" && pwd)/$(basename "$SIPGUARD_BIN")
  [[ -x "$sipguard_bin" ]] || { echo "SIPGUARD_BIN=$SIPGUARD_BIN is not an executable" >&2; exit 1; }
  echo "== sipguard: $sipguard_bin (SIPGUARD_BIN)" >&2
  build=given
elif has sipguard; then
  echo "== building sipguard (release)" >&2
  cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
  target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  sipguard_bin=$target_dir/release/sipguard
fi
if has floor; then
  echo "== building the floor relay (release)" >&2
  floor_target=${FLOOR_TARGET_DIR:-${TMPDIR:-/tmp}/sipguard-floor-target}
  cargo build --release --quiet --manifest-path "$SHARED/floor/Cargo.toml" --target-dir "$floor_target"
  floor_bin=$floor_target/release/floor-relay
fi

# (b) the workload, unless one was given.
if [[ -z "$workload" ]]; then
  workload=$tmp/wl
  echo "== generating the workload (--dnc $dnc) in $workload" >&2
  python3 "$SHARED/gen_workload.py" "$workload" --dnc "$dnc" --calls "$calls" >&2
fi
workload=$(cd "$workload" && pwd)

# (c) sipguard's configuration for the benchmark: UDP on 5070, no [upstream], so requests go
# to their Request-URI (127.0.0.1:5080, the UAS). With the full policy it runs as in
# production: Record-Route on (with its MAC) and the relay closed to loopback.
if has sipguard; then
  conf=$tmp/sipguard.toml
  decisions_line=""
  if [[ -n "$ops" ]]; then
    decisions_line="decisions = \"$tmp/decisions.log\""
  fi
  full_server=""
  if [[ "$policy" == full ]]; then
    full_server=$'record_route = true\nrelay_to = ["127.0.0.1/32"]'
  fi
  cat >"$conf" <<EOF
[server]
listen = ["udp:127.0.0.1:5070"]
${batch_wait:+udp_batch_wait_us = $batch_wait}
${udp_threads:+udp_threads = $udp_threads}
$full_server

[log]
level = "warn"
$decisions_line

[state]
dir = "$tmp/state"
EOF
  if [[ -n "$ops" ]]; then
    printf '\n[admin]\nlisten = "127.0.0.1:0"\n' >>"$conf"
  fi
  if [[ "$policy" == full ]]; then
    sed "s|@WORKLOAD@|$workload|g" "$ROOT/bench/sipguard-full.toml.in" >>"$conf"
  fi
  if [[ -n "$behaviour" ]]; then
    [[ "$policy" == full ]] || { echo "--behaviour needs --policy full" >&2; exit 2; }
    # Limits far above what the workload reaches: every rule is evaluated, none refuses.
    cat >>"$conf" <<'EOF2'

[screening.behaviour]
window_minutes = 360
min_attempts = 20
min_asr = 0.15
max_short_call_ratio = 1.0
max_concurrent = 1000000
max_sequential = 1000
max_distinct_callees_per_hour = 10000000
action = "suspend_caller_id"
EOF2
  fi
  if redis_on; then
    [[ "$policy" == full ]] || { echo "--cluster redis needs --policy full (the quota it counts)" >&2; exit 2; }
    sed -i 's/^\[screening\.quota\]$/&\nper_day = 1000000000/' "$conf"
    grep -q '^per_day = 1000000000$' "$conf" || { echo "no [screening.quota] in $conf for the day cap" >&2; exit 1; }
  fi
  "$sipguard_bin" check-config "$conf" >&2 || { echo "sipguard rejected $conf" >&2; cat "$conf" >&2; exit 1; }
  cp "$conf" "$out/sipguard.toml"
fi

# (c2) --cluster redis: a redis-server of our own on a free loopback port (no persistence),
# and the same configuration plus a [cluster] block (its own [state] dir, so that neither
# variant restores the other's saved counters). The quota of the full policy (per_minute,
# pacing) stays on the node with either backend; with redis every passed call also counts
# its hour and day windows in Redis in one script round trip, and no window has a cap, so
# neither variant refuses a call.
if redis_on; then
  redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" >"$out/redis.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 100); do
    [[ "$(redis-cli -p "$redis_port" PING 2>/dev/null)" == PONG ]] && break
    sleep 0.1
  done
  [[ "$(redis-cli -p "$redis_port" PING 2>/dev/null)" == PONG ]] || { echo "redis-server did not start" >&2; exit 1; }
  conf_redis=$tmp/sipguard-redis.toml
  sed "s|^dir = \"$tmp/state\"\$|dir = \"$tmp/state-redis\"|" "$conf" >"$conf_redis"
  printf '\n[cluster]\nbackend = "redis"\nredis = "redis://127.0.0.1:%s/0"\n' "$redis_port" >>"$conf_redis"
  "$sipguard_bin" check-config "$conf_redis" >&2 || { echo "sipguard rejected $conf_redis" >&2; exit 1; }
  cp "$conf_redis" "$out/sipguard-redis.toml"
fi
# CPU seconds (user + system) of redis-server, all its threads.
redis_cpu() { awk -v t="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / t }' "/proc/$redis_pid/stat"; }
# Calls counted in Redis: the sum of every account's day counter.
redis_day_count() {
  redis-cli -p "$redis_port" --scan --pattern 'sipguard:*:day:*' |
    while read -r k; do redis-cli -p "$redis_port" GET "$k"; done | awk '{ n += $1 } END { print n + 0 }'
}

sut_cmd() {
  case "$1" in
    sipguard) printf 'exec %q --config %q' "$sipguard_bin" "$conf" ;;
    sipguard-redis) printf 'exec %q --config %q' "$sipguard_bin" "$conf_redis" ;;
    kamailio) printf 'exec kamailio -f %q -DD -E -M 2048 -A DBURL=\\"text://%s/kamailio/db\\"' \
                "$SHARED/kamailio/kamailio.cfg" "$workload" ;;
    floor) printf 'exec %q' "$floor_bin" ;;
  esac
}

# Which system runs which scenario: the floor relay screens nothing, and sipguard only
# rejects when it has the full policy.
applies() {
  local sys=$1 scen=$2
  [[ "$scen" == pass ]] && return 0
  case "$sys" in
    kamailio) return 0 ;;
    sipguard|sipguard-redis) [[ "$policy" == full ]] ;;
    *) return 1 ;;
  esac
}

# CPU seconds the whole machine has been busy (every CPU; not idle, not iowait).
machine_busy() { awk -v t="$(getconf CLK_TCK)" '/^cpu / { print ($2 + $3 + $4 + $7 + $8 + $9) / t; exit }' /proc/stat; }
wait_quiet() {
  [[ -n "$quiet" ]] || return 0
  local deadline=$((SECONDS + 600)) a b
  while ((SECONDS < deadline)); do
    a=$(machine_busy); sleep 3; b=$(machine_busy)
    awk -v a="$a" -v b="$b" -v q="$quiet" 'BEGIN { exit !((b - a) / 3 < q) }' && return 0
  done
  echo "   the machine did not get quiet within 10 minutes; running anyway" >&2
}

# (d) the runs, systems interleaved inside each run so that drift hits them alike.
IFS=, read -r -a scen_list <<<"$scenarios"
IFS=, read -r -a given <<<"$systems"
sys_list=()
for sys in "${given[@]}"; do
  if [[ "$sys" == sipguard ]]; then
    for c in "${cluster_list[@]}"; do
      if [[ "$c" == redis ]]; then sys_list+=(sipguard-redis); else sys_list+=(sipguard); fi
    done
  else
    sys_list+=("$sys")
  fi
done
for ((run = 1; run <= runs; run++)); do
  for scen in "${scen_list[@]}"; do
    for sys in "${sys_list[@]}"; do
      applies "$sys" "$scen" || continue
      wait_quiet
      echo "== run $run/$runs: $sys, $scen, $calls calls at $rate/s (load average $(cut -d' ' -f1 /proc/loadavg))" >&2
      if redis_on; then
        redis-cli -p "$redis_port" FLUSHALL >/dev/null
        r0=$(redis_cpu)
      fi
      m0=$(machine_busy) t0=$SECONDS
      # A failed run leaves no JSON; the table reports it as missing rather than stopping here.
      python3 "$SHARED/sipp_load.py" --workload "$workload" --scenario "$scen" \
        --rate "$rate" --calls "$calls" --sut "$(sut_cmd "$sys")" \
        --json "$out/$sys-$scen-$run.json" >&2 || echo "   $sys/$scen failed" >&2
      # Beside each run: the machine's busy CPUs over it (load generator and system
      # included; another tenant shows as more) and, with redis, Redis's CPU over the whole
      # sipp_load run (start-up and stop included, a few idle seconds), which is its own
      # figure, not in the system's (idle while another system runs), and the calls it counted.
      busy=$(awk -v a="$m0" -v b="$(machine_busy)" -v s=$((SECONDS - t0)) 'BEGIN { printf "%.2f", (b - a) / (s > 0 ? s : 1) }')
      if redis_on; then
        printf '{"machine_busy_cpus": %s, "redis_cpu_s": %s, "redis_day_count": %s}\n' "$busy" \
          "$(awk -v a="$r0" -v b="$(redis_cpu)" 'BEGIN { printf "%.3f", b - a }')" "$(redis_day_count)" \
          >"$out/side-$sys-$scen-$run.json"
      else
        printf '{"machine_busy_cpus": %s}\n' "$busy" >"$out/side-$sys-$scen-$run.json"
      fi
    done
  done
done

# (e) the table (median run by CPU per call when --runs > 1) and the ratios.
cat >"$out/params.json" <<EOF
{"policy": "$policy", "cluster": "$cluster", "rate": $rate, "calls": $calls, "dnc": $dnc, "runs": $runs,
 "nproc": $(nproc), "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')",
 "sipguard_bin": "${sipguard_bin:-}", "sipguard_build": "$build"}
EOF
python3 - "$out" "$(IFS=,; echo "${sys_list[*]}")" "$scenarios" <<'PY'
import glob, json, math, os, statistics, sys
out, systems, scenarios = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
summary, best = {}, {}
print(f"{'system':<14} {'scenario':<8} {'runs':>4} {'ok':>7} {'failed':>7} {'user us':>8} {'sys us':>8} {'total us':>9} {'rss MiB':>8}  all runs (us/call; redis-server's own)")
for scen in scenarios:
    for s in systems:
        runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, f"{s}-{scen}-*.json")))]
        if not runs:
            continue
        for r in runs:
            n = max(r["ok"] + r["failed"], 1)
            r["user_us"], r["sys_us"] = r["sut_user_s"] * 1e6 / n, r["sut_sys_s"] * 1e6 / n
        # In run order, with redis-server's CPU per call (and the calls it counted) beside.
        by_run = sorted(glob.glob(os.path.join(out, f"{s}-{scen}-*.json")), key=lambda p: int(p.rsplit("-", 1)[1][:-5]))
        detail = []
        for p in by_run:
            r = json.load(open(p))
            rp = os.path.join(out, "side-" + os.path.basename(p))
            d = {"run": int(p.rsplit("-", 1)[1][:-5]), "us_per_call": r["sut_cpu_us_per_call"], "failed": r["failed"]}
            if os.path.exists(rp):
                x = json.load(open(rp))
                d["machine_busy_cpus"] = x["machine_busy_cpus"]
                if "redis_cpu_s" in x:
                    d["redis_us_per_call"] = round(x["redis_cpu_s"] * 1e6 / max(r["ok"] + r["failed"], 1), 1)
                    d["redis_day_count"] = x["redis_day_count"]
            detail.append(d)
        runs.sort(key=lambda r: r["sut_cpu_us_per_call"])
        m = runs[len(runs) // 2]
        best[(s, scen)] = m["sut_cpu_us_per_call"] if m["failed"] == 0 else None
        summary[f"{s}/{scen}"] = {"median": m, "all_us_per_call": [r["sut_cpu_us_per_call"] for r in runs], "runs": detail}
        cells = ", ".join(f"{d['us_per_call']:.1f}" + (f" ({d['redis_us_per_call']:.1f})" if "redis_us_per_call" in d else "")
                          for d in detail)
        print(f"{s:<14} {scen:<8} {len(runs):>4} {m['ok']:>7} {m['failed']:>7} {m['user_us']:>8.1f} "
              f"{m['sys_us']:>8.1f} {m['sut_cpu_us_per_call']:>9.1f} {m['sut_rss_mib']:>8.1f}  {cells}")
ratios = {}
for scen in scenarios:
    sg, ka, fl = (best.get((x, scen)) for x in ("sipguard", "kamailio", "floor"))
    if sg and fl:
        ratios[f"sipguard/floor {scen}"] = round(sg / fl, 2)
    if ka and sg:
        ratios[f"kamailio/sipguard {scen}"] = round(ka / sg, 2)
    if ka and fl:
        ratios[f"kamailio/floor {scen}"] = round(ka / fl, 2)
    sr = best.get(("sipguard-redis", scen))
    if sr and sg:
        ratios[f"sipguard-redis/sipguard {scen}"] = round(sr / sg, 2)
for k, v in ratios.items():
    print(f"{k:<26} {v:>6.2f}x  (total CPU per call; runs with failed calls are left out)")
# The same ratios run by run: the systems of one run are measured back to back, so a pair
# shares the host's state of the moment, which drifts between runs on shared machines
# (the floor relay alone has moved 2x between runs). The median of the pairs' ratios is the
# figure that drift moves least; the ratio of medians above mixes runs of different moments.
def per_run(s, scen):
    d = {}
    for p in glob.glob(os.path.join(out, f"{s}-{scen}-*.json")):
        r = json.load(open(p))
        if r["failed"] == 0:
            d[int(p.rsplit("-", 1)[1][:-5])] = r["sut_cpu_us_per_call"]
    return d
# A distribution-free interval for the median of the pairs' ratios: the k-th smallest and
# k-th largest pair, k the largest with P(Binomial(n, 1/2) < k) <= 2.5 % (needs 6 pairs).
def sign_interval(pairs):
    n, below, k = len(pairs), 0.0, 0
    for j in range(n + 1):
        p = math.comb(n, j) / 2 ** n
        if below + p > 0.025:
            break
        below, k = below + p, j + 1
    return (pairs[k - 1], pairs[n - k], round(1 - 2 * below, 3)) if k >= 1 else None
paired = {}
for k in ratios:
    name, scen = k.split(" ")
    a, b = name.split("/")
    ra, rb = per_run(a, scen), per_run(b, scen)
    pairs = sorted(round(ra[i] / rb[i], 2) for i in ra if i in rb and rb[i] > 0)
    if pairs:
        paired[k] = {"median": round(statistics.median(pairs), 2), "runs": pairs}
        print(f"{k:<26} {paired[k]['median']:>6.2f}x  (median of the {len(pairs)} runs' own ratios: {', '.join(f'{x:.2f}' for x in pairs)})")
        ci = sign_interval(pairs)
        if ci:
            paired[k]["interval"] = {"low": ci[0], "high": ci[1], "coverage": ci[2]}
            print(f"{'':<26} {ci[0]:.2f}-{ci[1]:.2f}x  ({100 * ci[2]:.1f} % interval of that median: sign test, no assumption on the noise)")
json.dump({"params": json.load(open(os.path.join(out, "params.json"))), "results": summary, "ratios": ratios, "paired": paired},
          open(os.path.join(out, "summary.json"), "w"), indent=1)
print(f"JSON: {out}/summary.json")
PY
