#!/usr/bin/env bash
# Profile-guided build of sipguard (the production build BENCHMARKS.md measures as "PGO").
#
# Usage: bench/pgo.sh [--calls N] [--rate CPS]
#
# 1. builds sipguard instrumented (-Cprofile-generate) in target/pgo-gen;
# 2. trains it with bench/compare.sh on the shared harness: passed calls and rejected calls,
#    record-routed dialogs, the full policy with every [screening.behaviour] rule on, so the
#    profile covers the INVITE, response, ACK, BYE and refusal paths;
# 3. merges the raw profiles with llvm-profdata into target/pgo/sipguard.profdata;
# 4. builds sipguard with -Cprofile-use in target/pgo: target/pgo/release/sipguard.
#
# The hot path's code then lies together: a call runs about a fifth fewer instruction cache
# lines, which is what a busy host makes it pay for (BENCHMARKS.md). Measure the result
# side by side with SIPGUARD_BIN=target/pgo/release/sipguard bench/compare.sh ...
#
# Needs llvm-profdata (LLVM_PROFDATA=..., else the newest under /usr/lib/llvm-*/bin, else the
# one on PATH). rustc's own LLVM is newer than Debian 12's llvm-19, whose llvm-profdata read
# rustc 1.95's (LLVM 22) raw profiles here; if yours cannot, the script says so.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
calls=10000
rate=1000
while [[ $# -gt 0 ]]; do
  case "$1" in
    --calls) calls=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
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
  cargo build --release --quiet --bin sipguard --manifest-path "$ROOT/Cargo.toml" --target-dir "$gen"
# Build scripts ran instrumented too and left their own profiles: only the proxy's count.
rm -f "$raw"/*.profraw

echo "== training it: $calls passed and $calls rejected calls at $rate/s" >&2
LLVM_PROFILE_FILE="$raw/sipguard-%p-%m.profraw" SIPGUARD_BIN="$gen/release/sipguard" \
  "$ROOT/bench/compare.sh" --policy full --behaviour --dialogs --systems sipguard \
  --scenarios pass,reject --runs 1 --calls "$calls" --rate "$rate" --out "$gen/training" >&2
shopt -s nullglob
profiles=("$raw"/sipguard-*.profraw)
((${#profiles[@]} > 0)) || { echo "the training runs wrote no profile (did sipguard exit cleanly?)" >&2; exit 1; }
"$profdata" merge -o "$use/sipguard.profdata" "${profiles[@]}" ||
  { echo "$profdata could not read rustc's profiles: use an llvm-profdata as new as rustc's LLVM ($(rustc -vV | sed -n 's/^LLVM version: //p'))" >&2; exit 1; }

echo "== building sipguard with the profile ($use)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$use/sipguard.profdata" \
  cargo build --release --quiet --bin sipguard --manifest-path "$ROOT/Cargo.toml" --target-dir "$use"
echo "$use/release/sipguard"
