#!/usr/bin/env bash
# DNC engine at scale: generate N numbers, build a snapshot, load it as the proxy does and
# time lookups. Usage: bench/dnc_scale.sh [N] [WORKDIR]   (default N = 260000000)
# Needs ~14 bytes of disk per number for the text and ~2 bytes for the snapshot; set KEEP=1
# to keep the files. Prints the figures BENCHMARKS.md quotes.
set -euo pipefail
N=${1:-260000000}
WORK=${2:-/tmp/dnc_scale}
SEED=${SEED:-42}
LOOKUPS=${LOOKUPS:-10000000}
cd "$(dirname "$0")/.."
cargo build --release --example dnc_scale
EX=target/release/examples/dnc_scale
mkdir -p "$WORK"
echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "== gen $N"
/usr/bin/time -f "gen: %e s, max RSS %M KiB" "$EX" gen "$N" "$WORK/numbers.txt" "$SEED"
ls -l "$WORK/numbers.txt"
echo "== build"
/usr/bin/time -f "build: %e s wall, %U s user, max RSS %M KiB" "$EX" build "$WORK/list.snap" "$WORK/numbers.txt"
[ "${KEEP:-0}" = 1 ] || rm -f "$WORK/numbers.txt"
echo "== serve (page cache warm: the snapshot was just written)"
/usr/bin/time -f "serve process: %e s wall, max RSS %M KiB" "$EX" serve "$WORK/list.snap" "$N" "$SEED" "$LOOKUPS"
echo "== serve (the snapshot evicted from the page cache first)"
python3 - "$WORK/list.snap" <<'PY' || true
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)
PY
/usr/bin/time -f "serve process: %e s wall, max RSS %M KiB" "$EX" serve "$WORK/list.snap" "$N" "$SEED" "$LOOKUPS"
[ "${KEEP:-0}" = 1 ] || rm -f "$WORK/list.snap"
