#!/usr/bin/env bash
# Profile-guided build of sipguard: the build README.md names for production.
#
# Usage: bench/pgo.sh [--calls N] [--rate CPS] [--tcp-calls N] [--if-stale]
#        bench/pgo.sh --fingerprint
#
# 1. builds sipguard instrumented (-Cprofile-generate) in target/pgo-gen;
# 2. trains it with bench/compare.sh on the shared harness: passed calls and rejected calls,
#    record-routed dialogs, the full policy with every [screening.behaviour] rule on, the
#    admin API and the decision log on (compare.sh --ops), so the profile covers the INVITE,
#    response, ACK, BYE and refusal paths with their metrics and log lines; then with
#    tests/sipp's basic call over TCP (one connection each way), for the TCP shell;
# 3. merges the raw profiles with llvm-profdata into target/pgo/sipguard.profdata;
# 4. builds sipguard with -Cprofile-use in target/pgo: target/pgo/release/sipguard, and
#    writes the fingerprint of what it was built from beside it (sipguard.inputs).
#
# --fingerprint prints that fingerprint for the tree as it is: a hash of the sources, the
# config example (compiled in), the training's scripts, scenarios and harness, rustc's
# version and RUSTFLAGS. --if-stale builds only when target/pgo/release/sipguard is missing
# or was built from another fingerprint (bench/compare.sh --pgo and
# contrib/debian/build-deb.sh --pgo use it). The binary's path is the last line printed.
#
# The hot path's code then lies together: a call runs about a fifth fewer instruction cache
# lines, which is what a busy host makes it pay for (BENCHMARKS.md). Measure the result
# side by side with bench/compare.sh --pgo ...
# Code the training never runs (STIR verification, calling hours, the HTTP decision API, the
# Redis cluster, redirect mode) is compiled as cold: for size, not speed. If your traffic
# lives there, add a run of it to step 2.
#
# Needs sipp, python3, ss (iproute2), the shared harness (../shared/bench, or SHARED_BENCH)
# and llvm-profdata (LLVM_PROFDATA=..., else the newest under /usr/lib/llvm-*/bin, else the
# one on PATH). rustc's own LLVM is newer than Debian 12's llvm-19, whose llvm-profdata read
# rustc 1.95's (LLVM 22) raw profiles here; if yours cannot, the script says so. Uses the
# harness's fixed ports 5060, 5070 and 5080: run it while no benchmark or sipguard has them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
calls=10000
rate=1000
tcp_calls=2000
if_stale=""
fingerprint_only=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --calls) calls=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --tcp-calls) tcp_calls=$2; shift 2 ;;
    --if-stale) if_stale=1; shift ;;
    --fingerprint) fingerprint_only=1; shift ;;
    -h|--help) sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

# What the build depends on, hashed: file contents (not times, which a copy or checkout
# changes), the compiler and its flags.
fingerprint() {
  {
    (cd "$ROOT" && find src Cargo.toml Cargo.lock config.example.toml bench/pgo.sh bench/compare.sh \
      bench/sipguard-full.toml.in tests/sipp/uac_basic.xml tests/sipp/uas_basic.xml -type f -print0 |
      sort -z | xargs -0 sha256sum)
    if [[ -d "$SHARED" ]]; then
      (cd "$SHARED" && find . -maxdepth 2 -type f \( -name '*.py' -o -name '*.xml' \) -print0 |
        sort -z | xargs -0 sha256sum)
    fi
    rustc -vV
    printf 'RUSTFLAGS=%s\n' "${RUSTFLAGS:-}"
  } | sha256sum | cut -d' ' -f1
}

want=$(fingerprint)
if [[ -n "$fingerprint_only" ]]; then
  echo "$want"
  exit 0
fi
target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
gen=$target_dir/pgo-gen
use=$target_dir/pgo
bin=$use/release/sipguard
if [[ -n "$if_stale" && -x "$bin" && "$(cat "$bin.inputs" 2>/dev/null)" == "$want" ]]; then
  echo "== $bin is built from this tree" >&2
  echo "$bin"
  exit 0
fi

# Everything the training needs, before the minutes of building.
for tool in sipp python3 ss; do
  command -v "$tool" >/dev/null || { echo "$tool not found (apt-get install sip-tester python3 iproute2)" >&2; exit 1; }
done
[[ -f "$SHARED/sipp_load.py" ]] || { echo "the shared harness is not at $SHARED (set SHARED_BENCH)" >&2; exit 1; }
[[ -z "${CARGO_ENCODED_RUSTFLAGS:-}" ]] ||
  { echo "CARGO_ENCODED_RUSTFLAGS is set: cargo would ignore the profile flags; use RUSTFLAGS" >&2; exit 2; }
[[ "$target_dir" != *[[:space:]]* ]] ||
  { echo "the target directory has a space in its path: RUSTFLAGS cannot name the profile there" >&2; exit 2; }

# The newest LLVM's: an older llvm-profdata on PATH (Debian 12 has LLVM 14's there) cannot
# read a newer rustc's raw profiles.
profdata=${LLVM_PROFDATA:-}
if [[ -z "$profdata" ]]; then
  profdata=$(ls -d /usr/lib/llvm-*/bin/llvm-profdata 2>/dev/null | sort -V | tail -1 || true)
fi
if [[ -z "$profdata" ]]; then
  profdata=$(command -v llvm-profdata || true)
fi
[[ -n "$profdata" && -x "$profdata" ]] || { echo "llvm-profdata not found (apt-get install llvm-19, or set LLVM_PROFDATA)" >&2; exit 1; }

raw=$gen/profiles
rm -rf "$raw"
mkdir -p "$raw" "$use"

echo "== building sipguard instrumented ($gen)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$raw" \
  cargo build --release --locked --quiet --bin sipguard --manifest-path "$ROOT/Cargo.toml" --target-dir "$gen"
# Build scripts ran instrumented too and left their own profiles: only the proxy's count.
rm -f "$raw"/*.profraw

echo "== training it: $calls passed and $calls rejected calls at $rate/s" >&2
rm -rf "$gen/training"
LLVM_PROFILE_FILE="$raw/sipguard-%p-%m.profraw" SIPGUARD_BIN="$gen/release/sipguard" \
  "$ROOT/bench/compare.sh" --policy full --behaviour --dialogs --ops --systems sipguard \
  --scenarios pass,reject --runs 1 --calls "$calls" --rate "$rate" --out "$gen/training" >&2
# compare.sh reports a run that failed and carries on: a profile of no calls is no training.
for scenario in pass reject; do
  python3 - "$gen/training/sipguard-$scenario-1.json" <<'PY' ||
import json, sys
r = json.load(open(sys.argv[1]))
sys.exit(0 if r.get("ok", 0) > 0 and r.get("failed", 1) == 0 else 1)
PY
    { echo "the $scenario training run did not complete its calls (see $gen/training)" >&2; exit 1; }
done

# TCP: the harness speaks UDP only, so the TCP shell (framing, connections, writes) gets a run
# of its own, pass-through: tests/sipp's basic call over one connection at each end, as a
# PBX trunk sends it. Without it that code would be laid out and optimised as never run.
echo "== training it over TCP: $tcp_calls calls of tests/sipp/uac_basic.xml" >&2
tcp=$gen/tcp
rm -rf "$tcp"
mkdir -p "$tcp"
# Three free TCP ports (sipguard, UAS, UAC) and two media ports p whose UDP p and p + 2 are
# free, as sipp binds both.
read -r sg_port uas_port uac_port uas_media uac_media < <(python3 -c '
import socket
def free(kind, port=0):
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("127.0.0.1", port))
        return s
    except OSError:
        s.close()
        return None
held, ports = [], []
for _ in range(3):
    s = free(socket.SOCK_STREAM)
    held.append(s)
    ports.append(s.getsockname()[1])
while len(ports) < 5:
    a = free(socket.SOCK_DGRAM)
    p = a.getsockname()[1]
    b = free(socket.SOCK_DGRAM, p + 2) if p < 65533 else None
    held += [a, b]
    if b is not None:
        ports.append(p)
print(*ports)')
cat >"$tcp/sipguard.toml" <<CONF
[server]
listen = ["tcp:127.0.0.1:$sg_port"]
[upstream]
uri = "sip:127.0.0.1:$uas_port;transport=tcp"
[admin]
listen = "127.0.0.1:0"
[log]
level = "warn"
[state]
dir = "$tcp/state"
CONF
printf 'SEQUENTIAL\nacct0001;+12125550100;+13125550199\n' >"$tcp/calls.csv"
LLVM_PROFILE_FILE="$raw/sipguard-%p-%m.profraw" "$gen/release/sipguard" --config "$tcp/sipguard.toml" \
  >"$tcp/sipguard.log" 2>&1 &
sg_pid=$!
(cd "$tcp" && exec sipp -sf "$ROOT/tests/sipp/uas_basic.xml" -t t1 -i 127.0.0.1 -p "$uas_port" \
  -mp "$uas_media" -nostdin -trace_err) >"$tcp/uas.log" 2>&1 &
uas_pid=$!
# On any failure below: neither is left running.
trap 'kill "$uas_pid" "$sg_pid" 2>/dev/null || true' EXIT
listening() { ss -Htln "sport = :$1" 2>/dev/null | grep -c . >/dev/null; }
for _ in $(seq 100); do
  kill -0 "$sg_pid" 2>/dev/null || { echo "sipguard exited during the TCP training (see $tcp/sipguard.log)" >&2; exit 1; }
  kill -0 "$uas_pid" 2>/dev/null || { echo "the sipp UAS exited (see $tcp/uas.log)" >&2; exit 1; }
  listening "$sg_port" && listening "$uas_port" && break
  sleep 0.1
done
listening "$sg_port" && listening "$uas_port" ||
  { echo "sipguard or the sipp UAS did not listen over TCP within 10 s (see $tcp)" >&2; exit 1; }
(cd "$tcp" && sipp "127.0.0.1:$sg_port" -sf "$ROOT/tests/sipp/uac_basic.xml" -t t1 -i 127.0.0.1 \
  -p "$uac_port" -mp "$uac_media" -inf calls.csv -key uas "127.0.0.1:$uas_port" \
  -m "$tcp_calls" -r 200 -nostdin -timeout $((tcp_calls / 200 + 60)) -timeout_error) >"$tcp/uac.log" 2>&1 ||
  { echo "the TCP training calls failed (see $tcp/uac.log)" >&2; exit 1; }
# The UAS first, so that sipguard has no connection left to drain; then SIGTERM: sipguard
# exits cleanly, which writes its profile. Waited for with a limit, so a hang cannot hang
# the build.
kill "$uas_pid" 2>/dev/null || true
wait "$uas_pid" 2>/dev/null || true
kill -TERM "$sg_pid"
for _ in $(seq 300); do
  kill -0 "$sg_pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$sg_pid" 2>/dev/null; then
  echo "sipguard did not exit within 30 s of SIGTERM after the TCP training" >&2
  exit 1
fi
wait "$sg_pid" || { echo "sipguard did not exit cleanly after the TCP training (see $tcp/sipguard.log)" >&2; exit 1; }
trap - EXIT

shopt -s nullglob
profiles=("$raw"/sipguard-*.profraw)
((${#profiles[@]} > 0)) || { echo "the training runs wrote no profile (did sipguard exit cleanly?)" >&2; exit 1; }
"$profdata" merge -o "$use/sipguard.profdata" "${profiles[@]}" ||
  { echo "$profdata could not read rustc's profiles: use an llvm-profdata as new as rustc's LLVM ($(rustc -vV | sed -n 's/^LLVM version: //p'))" >&2; exit 1; }

echo "== building sipguard with the profile ($use)" >&2
rm -f "$bin.inputs"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$use/sipguard.profdata" \
  cargo build --release --locked --quiet --bin sipguard --manifest-path "$ROOT/Cargo.toml" --target-dir "$use"
echo "$want" >"$bin.inputs"
echo "$bin"
