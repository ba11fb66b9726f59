#!/usr/bin/env bash
# Kamailio 5.6 baseline for the DNC engine: time from start until it listens, and resident
# memory of all its processes, with an N-number DNC list loaded into htable from db_text.
# Usage: bench/kamailio_dnc_start.sh N [WORKDIR] [PORT]
# Uses ../shared/bench/gen_workload.py and kamailio/kamailio.cfg; stops Kamailio by its pid.
set -euo pipefail
N=${1:?N numbers}
WORK=${2:-/tmp/kam_dnc_$N}
PORT=${3:-15070}
LIMIT=${LIMIT:-600}
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED:-$HERE/../../shared/bench}
[ -f "$WORK/kamailio/db/dnc" ] || python3 "$SHARED/gen_workload.py" "$WORK" --dnc "$N" --calls 10 >/dev/null
listening() { awk -v p="$(printf '%04X' "$PORT")" 'NR>1 { split($2, a, ":"); if (a[2] == p) f=1 } END { exit !f }' /proc/net/udp; }
rss_kib() { local t=0; for p in $(pgrep -g "$1" || true); do t=$((t + $(awk '/^VmRSS:/ {print $2}' /proc/$p/status 2>/dev/null || echo 0))); done; echo $t; }
# A Kamailio still shutting down from an earlier run would look like a ready one.
for _ in $(seq 100); do listening || break; sleep 0.1; done
if listening; then echo "port $PORT is busy" >&2; exit 1; fi
t0=$(date +%s.%N)
setsid kamailio -f "$SHARED/kamailio/kamailio.cfg" -DD -E -M 4096 \
  -A "DBURL=\"text://$WORK/kamailio/db\"" -A "LISTEN=udp:127.0.0.1:$PORT" >"$WORK/kamailio.log" 2>&1 &
pid=$!
status=listening
while ! listening; do
  if ! kill -0 $pid 2>/dev/null; then status=exited; break; fi
  if (( $(echo "$(date +%s.%N) - $t0 > $LIMIT" | bc) )); then status=timeout; break; fi
  sleep 0.2
done
t1=$(date +%s.%N)
sleep 1
echo "{\"n\": $N, \"status\": \"$status\", \"startup_s\": $(echo "$t1 - $t0" | bc), \"rss_mib\": $(( $(rss_kib $pid) / 1024 ))}"
kill -TERM -- -$pid 2>/dev/null || true
wait $pid 2>/dev/null || true
