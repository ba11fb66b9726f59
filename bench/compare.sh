#!/usr/bin/env bash
# Side-by-side benchmark: sipguard vs Kamailio vs the floor relay, in one run on one machine,
# so that the figures compared are ratios taken under the same conditions.
#
# Usage: bench/compare.sh [--policy pass-through|full] [--rate CPS] [--calls N] [--dnc N]
#                         [--systems sipguard,kamailio,floor] [--scenarios pass,reject]
#                         [--runs N] [--out DIR] [--workload DIR] [--udp-batch-wait US]
#                         [--udp-threads N]
#
# --udp-batch-wait sets sipguard's server.udp_batch_wait_us (default: the built-in 500);
# --udp-threads its server.udp_threads (default: half the CPUs, at least 1).
# Uses the shared harness in ../shared/bench (override with SHARED_BENCH=...), which binds the
# fixed ports 5060 (UAC), 5070 (system under test) and 5080 (UAS) on 127.0.0.1: run one
# benchmark at a time. Nothing is written outside --out and a temporary directory.
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

usage() { sed -n '4,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
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
    -h|--help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
case "$policy" in pass-through|full) ;; *) echo "--policy must be pass-through or full" >&2; exit 2 ;; esac
for tool in sipp python3; do
  command -v "$tool" >/dev/null || { echo "$tool not found (apt-get install sip-tester python3)" >&2; exit 1; }
done
has() { [[ ",$systems," == *",$1,"* ]]; }
if has kamailio && ! command -v kamailio >/dev/null; then
  echo "kamailio not found (apt-get install kamailio)" >&2; exit 1
fi

tmp=$(mktemp -d -t sipguard-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
out=${out:-$ROOT/target/bench/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# (a) builds. The floor relay's target dir sits outside ../shared, which may be read-only.
if has sipguard; then
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

[state]
dir = "$tmp/state"
EOF
  if [[ "$policy" == full ]]; then
    sed "s|@WORKLOAD@|$workload|g" "$ROOT/bench/sipguard-full.toml.in" >>"$conf"
  fi
  "$sipguard_bin" check-config "$conf" >&2 || { echo "sipguard rejected $conf" >&2; cat "$conf" >&2; exit 1; }
  cp "$conf" "$out/sipguard.toml"
fi

sut_cmd() {
  case "$1" in
    sipguard) printf 'exec %q --config %q' "$sipguard_bin" "$conf" ;;
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
    sipguard) [[ "$policy" == full ]] ;;
    *) return 1 ;;
  esac
}

# (d) the runs, systems interleaved inside each run so that drift hits them alike.
IFS=, read -r -a scen_list <<<"$scenarios"
IFS=, read -r -a sys_list <<<"$systems"
for ((run = 1; run <= runs; run++)); do
  for scen in "${scen_list[@]}"; do
    for sys in "${sys_list[@]}"; do
      applies "$sys" "$scen" || continue
      echo "== run $run/$runs: $sys, $scen, $calls calls at $rate/s" >&2
      # A failed run leaves no JSON; the table reports it as missing rather than stopping here.
      python3 "$SHARED/sipp_load.py" --workload "$workload" --scenario "$scen" \
        --rate "$rate" --calls "$calls" --sut "$(sut_cmd "$sys")" \
        --json "$out/$sys-$scen-$run.json" >&2 || echo "   $sys/$scen failed" >&2
    done
  done
done

# (e) the table (median run by CPU per call when --runs > 1) and the ratios.
cat >"$out/params.json" <<EOF
{"policy": "$policy", "rate": $rate, "calls": $calls, "dnc": $dnc, "runs": $runs,
 "nproc": $(nproc), "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"}
EOF
python3 - "$out" "$systems" "$scenarios" <<'PY'
import glob, json, os, sys
out, systems, scenarios = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
summary, best = {}, {}
print(f"{'system':<10} {'scenario':<8} {'runs':>4} {'ok':>7} {'failed':>7} {'user us':>8} {'sys us':>8} {'total us':>9} {'rss MiB':>8}")
for scen in scenarios:
    for s in systems:
        runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, f"{s}-{scen}-*.json")))]
        if not runs:
            continue
        for r in runs:
            n = max(r["ok"] + r["failed"], 1)
            r["user_us"], r["sys_us"] = r["sut_user_s"] * 1e6 / n, r["sut_sys_s"] * 1e6 / n
        runs.sort(key=lambda r: r["sut_cpu_us_per_call"])
        m = runs[len(runs) // 2]
        best[(s, scen)] = m["sut_cpu_us_per_call"] if m["failed"] == 0 else None
        summary[f"{s}/{scen}"] = {"median": m, "all_us_per_call": [r["sut_cpu_us_per_call"] for r in runs]}
        print(f"{s:<10} {scen:<8} {len(runs):>4} {m['ok']:>7} {m['failed']:>7} {m['user_us']:>8.1f} "
              f"{m['sys_us']:>8.1f} {m['sut_cpu_us_per_call']:>9.1f} {m['sut_rss_mib']:>8.1f}")
ratios = {}
for scen in scenarios:
    sg, ka, fl = (best.get((x, scen)) for x in ("sipguard", "kamailio", "floor"))
    if sg and fl:
        ratios[f"sipguard/floor {scen}"] = round(sg / fl, 2)
    if ka and sg:
        ratios[f"kamailio/sipguard {scen}"] = round(ka / sg, 2)
    if ka and fl:
        ratios[f"kamailio/floor {scen}"] = round(ka / fl, 2)
for k, v in ratios.items():
    print(f"{k:<26} {v:>6.2f}x  (total CPU per call; runs with failed calls are left out)")
json.dump({"params": json.load(open(os.path.join(out, "params.json"))), "results": summary, "ratios": ratios},
          open(os.path.join(out, "summary.json"), "w"), indent=1)
print(f"JSON: {out}/summary.json")
PY
