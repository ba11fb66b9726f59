#!/usr/bin/env bash
# Profile-guided build of sipguard (the production build BENCHMARKS.md measures as "PGO").
#
# Usage: bench/pgo.sh [--calls N] [--rate CPS] [--tcp-calls N]
#
# 1. builds sipguard instrumented (-Cprofile-generate) in target/pgo-gen;
# 2. trains it with bench/compare.sh on the shared harness: passed calls and rejected calls,
#    record-routed dialogs, the full policy with every [screening.behaviour] rule on, so the
#    profile covers the INVITE, response, ACK, BYE and refusal paths; then with
#    tests/sipp's basic call over TCP (one connection each way), for the TCP shell;
# 3. merges the raw profiles with llvm-profdata into target/pgo/sipguard.profdata;
# 4. builds sipguard with -Cprofile-use in target/pgo: target/pgo/release/sipguard.
#
# The hot path's code then lies together: a call runs about a fifth fewer instruction cache
# lines, which is what a busy host makes it pay for (BENCHMARKS.md). Measure the result
# side by side with bench/compare.sh --pgo ...
# Code the training never runs (STIR verification, calling hours, the HTTP decision API, the
# Redis cluster, redirect mode) is compiled as cold: for size, not speed. If your traffic
# lives there, add a run of it to step 2.
#
# Needs llvm-profdata (LLVM_PROFDATA=..., else the newest under /usr/lib/llvm-*/bin, else the
# one on PATH). rustc's own LLVM is newer than Debian 12's llvm-19, whose llvm-profdata read
# rustc 1.95's (LLVM 22) raw profiles here; if yours cannot, the script says so.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
calls=10000
rate=1000
tcp_calls=2000
while [[ $# -gt 0 ]]; do
  case "$1" in
    --calls) calls=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --tcp-calls) tcp_calls=$2; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

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

target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
gen=$target_dir/pgo-gen
use=$target_dir/pgo
raw=$gen/profiles
rm -rf "$raw"
mkdir -p "$raw" "$use"

echo "== building sipguard instrumented ($gen)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$raw" \
  cargo build --release --locked --quiet --bin sipguard --manifest-path "$ROOT/Cargo.toml" --target-dir "$gen"
# Build scripts ran instrumented too and left their own profiles: only the proxy's count.
rm -f "$raw"/*.profraw

echo "== training it: $calls passed and $calls rejected calls at $rate/s" >&2
LLVM_PROFILE_FILE="$raw/sipguard-%p-%m.profraw" SIPGUARD_BIN="$gen/release/sipguard" \
  "$ROOT/bench/compare.sh" --policy full --behaviour --dialogs --systems sipguard \
  --scenarios pass,reject --runs 1 --calls "$calls" --rate "$rate" --out "$gen/training" >&2

# TCP: the harness speaks UDP only, so the TCP shell (framing, connections, writes) gets a run
# of its own, pass-through: tests/sipp's basic call over one connection at each end, as a
# PBX trunk sends it. Without it that code would be laid out and optimised as never run.
echo "== training it over TCP: $tcp_calls calls of tests/sipp/uac_basic.xml" >&2
tcp=$gen/tcp
rm -rf "$tcp"
mkdir -p "$tcp"
read -r sg_port uas_port uac_port uas_media uac_media < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
cat >"$tcp/sipguard.toml" <<CONF
[server]
listen = ["tcp:127.0.0.1:$sg_port"]
[upstream]
uri = "sip:127.0.0.1:$uas_port;transport=tcp"
[log]
level = "warn"
[state]
dir = "$tcp/state"
CONF
printf 'SEQUENTIAL\nacct0001;+12125550100;+13125550199\n' >"$tcp/calls.csv"
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop EXIT
LLVM_PROFILE_FILE="$raw/sipguard-%p-%m.profraw" "$gen/release/sipguard" --config "$tcp/sipguard.toml" \
  >"$tcp/sipguard.log" 2>&1 &
sg_pid=$!
pids+=("$sg_pid")
(cd "$tcp" && exec sipp -sf "$ROOT/tests/sipp/uas_basic.xml" -t t1 -i 127.0.0.1 -p "$uas_port" \
  -mp "$uas_media" -nostdin) >/dev/null 2>&1 &
pids+=("$!")
listening() { ss -Htln "sport = :$1" | grep -q .; }
for _ in $(seq 100); do
  listening "$sg_port" && listening "$uas_port" && break
  sleep 0.1
done
listening "$sg_port" && listening "$uas_port" ||
  { echo "sipguard or the sipp UAS did not listen over TCP (see $tcp)" >&2; exit 1; }
(cd "$tcp" && sipp "127.0.0.1:$sg_port" -sf "$ROOT/tests/sipp/uac_basic.xml" -t t1 -i 127.0.0.1 \
  -p "$uac_port" -mp "$uac_media" -inf calls.csv -key uas "127.0.0.1:$uas_port" \
  -m "$tcp_calls" -r 200 -nostdin -timeout 120 -timeout_error) >"$tcp/uac.log" 2>&1 ||
  { echo "the TCP training calls failed (see $tcp/uac.log)" >&2; exit 1; }
# SIGTERM: sipguard exits cleanly, which writes its profile.
kill -TERM "$sg_pid"
wait "$sg_pid" || { echo "sipguard did not exit cleanly after the TCP training" >&2; exit 1; }
stop

shopt -s nullglob
profiles=("$raw"/sipguard-*.profraw)
((${#profiles[@]} > 0)) || { echo "the training runs wrote no profile (did sipguard exit cleanly?)" >&2; exit 1; }
"$profdata" merge -o "$use/sipguard.profdata" "${profiles[@]}" ||
  { echo "$profdata could not read rustc's profiles: use an llvm-profdata as new as rustc's LLVM ($(rustc -vV | sed -n 's/^LLVM version: //p'))" >&2; exit 1; }

echo "== building sipguard with the profile ($use)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$use/sipguard.profdata" \
  cargo build --release --locked --quiet --bin sipguard --manifest-path "$ROOT/Cargo.toml" --target-dir "$use"
echo "$use/release/sipguard"
